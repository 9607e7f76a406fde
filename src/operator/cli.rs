//! Flags of `apikey-operator run` (see [`crate::cli`]). Every flag has an environment-variable
//! twin.

use std::net::SocketAddr;

use clap::ArgAction;

use crate::core::hashing::HashParams;
use crate::shared::cli::{LogFormat, parse_namespace};

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace to watch; repeat for several. Default: all namespaces.
    #[arg(long = "namespace", env = "APIKEY_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    /// How many ApiKeys are reconciled at once.
    #[arg(long, env = "APIKEY_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// argon2id memory cost in KiB (at most 262144, 256 MiB: a verifier must afford it).
    #[arg(long, env = "APIKEY_ARGON2_MEMORY_KIB", default_value_t = HashParams::default().memory_kib, value_parser = clap::value_parser!(u32).range(8..=HashParams::CEILING.memory_kib as i64))]
    pub argon2_memory_kib: u32,

    /// argon2id iterations (at most 64).
    #[arg(long, env = "APIKEY_ARGON2_ITERATIONS", default_value_t = HashParams::default().iterations, value_parser = clap::value_parser!(u32).range(1..=HashParams::CEILING.iterations as i64))]
    pub argon2_iterations: u32,

    /// argon2id parallelism (lanes, at most 16).
    #[arg(long, env = "APIKEY_ARGON2_PARALLELISM", default_value_t = HashParams::default().parallelism, value_parser = clap::value_parser!(u32).range(1..=HashParams::CEILING.parallelism as i64))]
    pub argon2_parallelism: u32,

    /// Namespace of the Secret holding the operator's record key (see README, Security model).
    /// Default: the pod's own namespace, else `apikey-system`.
    #[arg(long, env = "APIKEY_RECORD_KEY_NAMESPACE", value_parser = parse_namespace)]
    pub record_key_namespace: Option<String>,

    /// Name of the Secret holding the operator's record key; created with a new key if missing.
    #[arg(long, env = "APIKEY_RECORD_KEY_SECRET", default_value = crate::operator::keystore::DEFAULT_SECRET_NAME)]
    pub record_key_secret: String,

    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "APIKEY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Elect a leader on a coordination.k8s.io Lease so that of several replicas exactly one
    /// reconciles; `--leader-elect=false` turns it off.
    #[arg(long, env = "APIKEY_LEADER_ELECT", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease. Default: the pod's own namespace, else
    /// `apikey-system`.
    #[arg(long, env = "APIKEY_LEASE_NAMESPACE", value_parser = parse_namespace)]
    pub lease_namespace: Option<String>,

    /// Lease duration in seconds: how long a killed leader blocks the others.
    #[arg(long, env = "APIKEY_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    pub lease_duration_seconds: u64,

    /// The shortest `spec.rotation.interval` honoured, as a duration (`1h`, `30m`, `10s`): keys
    /// asking for a shorter one rotate at this interval, and their Ready message says so. Lower it
    /// only for tests: every rotation costs an argon2id hash and, with `spec.rolloutRestart`, a
    /// rollout.
    #[arg(long, env = "APIKEY_MIN_ROTATION_INTERVAL", default_value = "1h", value_parser = parse_min_interval)]
    pub min_rotation_interval: std::time::Duration,

    /// Log format; `RUST_LOG` filters (default `info`).
    #[arg(long, env = "APIKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The argon2id parameters given.
    pub fn hash_params(&self) -> HashParams {
        HashParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }
}

/// Reads `--min-rotation-interval` ([`crate::core::rotation::parse_duration`]); at least one second.
fn parse_min_interval(text: &str) -> std::result::Result<std::time::Duration, String> {
    match crate::core::rotation::parse_duration(text)? {
        d if d.is_zero() => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}
