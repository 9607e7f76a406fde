//! The token server (`apikey-operator token-server`): the OAuth 2.0 client credentials grant
//! (RFC 6749 §4.4) that trades an ApiKey's client id and secret for a short-lived access token
//! (RFC 9068) acting for the key's user, which any server verifies offline against the published
//! keys (RFC 8414 metadata, JWKS), or online by introspection (RFC 7662).
//!
//! Kubernetes-free: [`client_auth`] (reading requests), [`claims`], [`signing`], [`limits`],
//! [`clock`] (the wall clock expiries are decided by, set by hand in tests).
//! Glue: [`directory`] (the watch of ApiKeys), [`signing_secret`] (the signing keys' Secret),
//! [`authenticator`], [`server`] (the endpoints), [`tls`], [`run`].

pub mod authenticator;
pub mod claims;
pub mod cli;
pub mod client_auth;
pub mod clock;
pub mod directory;
pub mod limits;
pub mod metrics;
pub mod run;
pub mod server;
pub mod signing;
pub mod signing_secret;
pub mod tls;
