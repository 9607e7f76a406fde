//! The administrator's tools: what the `kubectl apikey` plugin and its web console share.
//!
//! They mirror the model page's operations (create a key for a user; delete a key; regenerate its
//! client secret; each of them for many keys at once) with the caller's own kubeconfig and RBAC:
//! no endpoint in the cluster, no rights beyond the caller's. [`keys`] is pure (what a row shows,
//! whether a key has answered a regeneration); [`actions`] makes the API calls.
//!
//! Neither ever reads a Secret's data: the state of a regeneration is read from the Secret's
//! metadata (the operator's `apikey.dev/handled-regenerate` annotation), so the plaintext client
//! secret never reaches the plugin or the page (the `token` command is the one exception, and it
//! prints only the access token's claims).

pub mod actions;
pub mod keys;
