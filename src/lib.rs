//! apikey-operator: turns `ApiKey` objects into client credentials in Secrets, and trades those
//! credentials for access tokens.
//!
//! The crate is one folder per role, beside a Kubernetes-free core they all use:
//!
//! - [`core`]: the ApiKey types, credentials, hashing, the sealed record, the managed Secret, the
//!   decision chain, rotation policy, status derivation, user rules and names. Pure: no API calls.
//! - [`operator`]: `apikey-operator run`, the controller that writes Secrets and statuses.
//! - [`token`]: `apikey-operator token-server`, the OAuth 2.0 token endpoint and its JWKS.
//! - [`admin`]: the administrator's tools, the `kubectl apikey` plugin and its web console.
//! - [`shared`]: glue more than one role uses (watch mirrors, leader election, common flags).
//! - [`cli`]: the `apikey-operator` binary's command line, one subcommand per role.
//! - [`error`]: the one error type.
//!
//! A role's folder uses [`core`], [`shared`] and [`error`], never another role's folder; [`core`]
//! uses only [`error`]; [`shared`] uses [`core`] and [`error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod core;
pub mod error;
pub mod operator;
pub mod shared;
pub mod token;

pub use error::{Error, Result};
