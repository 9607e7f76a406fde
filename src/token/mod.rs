//! The token server (`apikey-operator token-server`): the OAuth 2.0 client credentials grant
//! (RFC 6749 §4.4) that trades an ApiKey's client id and secret for a short-lived access token
//! (RFC 9068) acting for the key's user, which any server verifies offline against the published
//! keys (RFC 8414 metadata, JWKS), or online by introspection (RFC 7662).
//!
//! In the cluster it reads ApiKeys (one watch, every namespace: their status publishes each
//! key's client id and argon2id hash; never a key's Secret), and reads and writes one Secret of
//! its own, the signing keys ([`signing_secret`]), with the Lease that elects its one writer.
//! It uses [`crate::core`], [`crate::shared`] and [`crate::error`]; never [`crate::operator`] or
//! [`crate::admin`].
//!
//! "How is a token issued?": [`server`] (`POST /oauth2/token`) reads the request
//! ([`client_auth`]), authenticates the client ([`authenticator`] against [`directory`]), and
//! signs the claims ([`claims`]) with the current key ([`signing`]).
//!
//! Kubernetes-free: [`client_auth`], [`claims`], [`signing`], [`limits`], [`clock`] (the wall
//! clock expiries are decided by, set by hand in tests), [`metrics`].
//! Glue: [`directory`] (the watch of ApiKeys), [`signing_secret`] (the signing keys' Secret),
//! [`authenticator`], [`server`] (the endpoints), [`tls`], [`run`], [`cli`] (the flags).

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
