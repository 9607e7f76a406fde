//! The administrator's tools: the `kubectl apikey` plugin ([`plugin`], binary `kubectl-apikey`)
//! and its web console on 127.0.0.1 ([`console`]), and the calls and decisions both share.
//!
//! They mirror the model page's operations (create a key for a user; delete a key; regenerate its
//! client secret; each of them for many keys at once) with the caller's own kubeconfig and RBAC:
//! no endpoint in the cluster, no rights beyond the caller's. In the cluster they read ApiKeys
//! and the metadata of the operator's Secrets, and create, annotate and delete ApiKeys.
//! [`keys`] is pure (what a row shows, whether a key has answered a regeneration); [`actions`]
//! makes the API calls.
//!
//! Neither ever reads a Secret's data: the state of a regeneration is read from the Secret's
//! metadata (the operator's `apikey.dev/handled-regenerate` annotation), so the plaintext client
//! secret never reaches the plugin or the page (the `token` command is the one exception: it reads
//! one key's Secret to ask the token server for an access token, and prints only its claims).
//!
//! It uses [`crate::core`], [`crate::shared`] and [`crate::error`]; never [`crate::operator`] or
//! [`crate::token`] (the `token` command talks to the token server over HTTP, as any client does).

pub mod actions;
pub mod console;
pub mod keys;
pub mod plugin;
