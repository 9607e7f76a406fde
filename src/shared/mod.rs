//! Glue that more than one role uses, and nothing role-specific: a role's folder may use it, it
//! uses no role's folder. It uses [`crate::core`] and [`crate::error`].
//!
//! - [`mirror`]: a map kept from a watch (the operator's caches, the console's table).
//! - [`leader`]: leader election on a `coordination.k8s.io` Lease (the operator's replicas, the
//!   token server's signing-key writer); reads and writes that Lease.
//! - [`cli`]: what the subcommands' flags share (log format, namespace names).

pub mod cli;
pub mod leader;
pub mod mirror;
