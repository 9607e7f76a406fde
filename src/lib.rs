//! apikey-operator: turns `ApiKey` objects into client credentials in Secrets.
//!
//! The Kubernetes-free core ([`credentials`], [`decision`], [`secret`], [`status`]) decides and
//! builds; [`controller`] is the glue that reads the cluster and writes what they return.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod console;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod decision;
pub mod error;
pub mod events;
pub mod hashing;
pub mod health;
pub mod keystore;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod names;
pub mod outage;
pub mod plugin;
pub mod record;
pub mod rollout;
pub mod rotation;
pub mod secret;
pub mod secret_cache;
pub mod siblings;
pub mod status;
pub mod targets;
pub mod token;
pub mod user;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod test_support;

pub use error::{Error, Result};
