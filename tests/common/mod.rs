//! Shared harness of the end-to-end tests: the local control plane's kubectl, a fresh namespace per
//! test (deleted afterwards), and the operator binary as a child process. One file per role:
//! [`cluster`] (kubectl, namespaces, the CRD), [`operator`] (the operator as a child process),
//! [`apikeys`] (ApiKeys and their Secrets), [`token`] (the token server and its clients).
//!
//! The cluster comes from `tests/cluster/up` (the README's test command starts it); its kubeconfig
//! is `$APIKEY_E2E_KUBECONFIG`, else `tests/cluster/.state/kubeconfig`. Without a cluster the tests
//! fail, never skip.
#![allow(dead_code)]

pub mod apikeys;
pub mod cluster;
pub mod operator;
pub mod token;
#[allow(unused_imports)]
pub use apikeys::*;
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use operator::*;
