//! The Kubernetes-free core: what an ApiKey is, what its credentials look like, how they are
//! hashed and sealed, what the managed Secret holds, and what must happen to a key. Every role
//! uses it.
//!
//! Nothing here calls the cluster: no `kube::Client`, no `Api` (the types of k8s-openapi and
//! kube's `CustomResource` derive are used as data). Every decision takes the time it is made at
//! as an argument, so each is tested without a cluster or a clock. It uses only
//! [`crate::error`]; nothing here imports a role's folder or [`crate::shared`].
//!
//! - [`crd`]: the `ApiKey` custom resource (`apikey.dev/v1alpha1`), its spec and status.
//! - [`user`]: what `spec.user` accepts and how two users compare.
//! - [`names`]: Kubernetes object names (DNS-1123).
//! - [`credentials`]: client id and client secret formats, from the operating system's CSPRNG.
//! - [`hashing`]: argon2id hashes of client secrets, on a bounded blocking pool.
//! - [`record`]: the operator's sealed record of what it wrote.
//! - [`secret`]: the managed Secret, built and read.
//! - [`issue`]: why new credentials are written.
//! - [`rotation`]: rotation policy ("should this key rotate?"), grace periods, expiry.
//! - [`decision`]: the decision chain, "what must happen to this key?".
//! - [`status`]: the status the operator publishes for a decision.

pub mod crd;
pub mod credentials;
pub mod decision;
pub mod hashing;
pub mod issue;
pub mod names;
pub mod record;
pub mod rotation;
pub mod secret;
pub mod status;
pub mod user;

#[cfg(test)]
pub(crate) mod test_support;
