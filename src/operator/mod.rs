//! The operator (`apikey-operator run`): the controller that turns each ApiKey into a Secret of
//! client credentials and publishes the key's state in its status.
//!
//! In the cluster it reads ApiKeys and the Secrets it manages (watches; a Secret is read directly
//! only when its cache cannot be acted on), and writes: the managed Secrets (created, patched,
//! owned by their ApiKey so that garbage collection removes them), the ApiKeys' `status`, Events
//! (`events.k8s.io/v1`), the record-key Secret ([`keystore`], created once), the leader-election
//! Lease, and, only for keys that ask for it, two annotations on the Deployments, StatefulSets and
//! DaemonSets named in `spec.rolloutRestart` ([`rollout`]).
//!
//! It uses [`crate::core`] (every decision), [`crate::shared`] and [`crate::error`]; never
//! [`crate::token`] or [`crate::admin`].
//!
//! - [`controller`]: the watches and their wiring, the reconcile (read, decide, write, status),
//!   and the writes it makes.
//! - [`rollout`]: which workloads need a restart for a secret generation (pure), and the restarts.
//! - [`secret_cache`], [`siblings`], [`targets`]: what the reconcile reads instead of the API.
//! - [`keystore`]: the record key's Secret.
//! - [`events`], [`metrics`], [`health`], [`outage`]: what the operator tells people.
//! - [`cli`]: the flags of `run`.

pub mod cli;
pub mod controller;
pub mod events;
pub mod health;
pub mod keystore;
pub mod metrics;
pub mod outage;
pub mod rollout;
pub mod secret_cache;
pub mod siblings;
pub mod targets;

#[cfg(test)]
mod fixtures;
