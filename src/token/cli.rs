//! Flags of `apikey-operator token-server` (see [`crate::cli`]). Every flag has an
//! environment-variable twin.

use std::net::SocketAddr;

use crate::core::hashing::HashParams;
use crate::shared::cli::{LogFormat, parse_namespace};

/// Flags of `token-server`.
#[derive(Debug, clap::Args)]
pub struct TokenServerArgs {
    /// The issuer URL (`iss` of every token; RFC 8414 §2): `https://host[:port]`, no path. The
    /// endpoints are served under it (`/oauth2/token`, `/.well-known/...`).
    #[arg(long, env = "APIKEY_TOKEN_ISSUER", value_parser = parse_issuer)]
    pub issuer: String,

    /// The audience (`aud`) of every token: what verifiers check tokens were meant for.
    #[arg(long, env = "APIKEY_TOKEN_AUDIENCE", default_value = "apikey")]
    pub audience: String,

    /// Access token lifetime in seconds (60 to 86400).
    #[arg(long, env = "APIKEY_TOKEN_LIFETIME_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub token_lifetime_seconds: u32,

    /// Address of the OAuth endpoints (TLS unless --insecure-http).
    #[arg(long, env = "APIKEY_TOKEN_LISTEN_ADDR", default_value = "0.0.0.0:8443")]
    pub listen_addr: SocketAddr,

    /// PEM certificate chain for TLS; reloaded when the file changes.
    #[arg(
        long,
        env = "APIKEY_TOKEN_TLS_CERT_FILE",
        required_unless_present = "insecure_http"
    )]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// PEM private key for TLS; reloaded when the file changes.
    #[arg(
        long,
        env = "APIKEY_TOKEN_TLS_KEY_FILE",
        required_unless_present = "insecure_http"
    )]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Serve the OAuth endpoints over plain HTTP, for a TLS-terminating proxy in front; the
    /// issuer stays https.
    #[arg(long, env = "APIKEY_TOKEN_INSECURE_HTTP", conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub insecure_http: bool,

    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "APIKEY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Namespace of the signing-key Secret and its Lease. Default: the pod's own namespace, else
    /// `apikey-system`.
    #[arg(long, env = "APIKEY_TOKEN_SIGNING_NAMESPACE", value_parser = parse_namespace)]
    pub signing_key_namespace: Option<String>,

    /// Name of the Secret holding the signing keys; created if missing.
    #[arg(
        long,
        env = "APIKEY_TOKEN_SIGNING_SECRET",
        default_value = "apikey-token-signing-keys"
    )]
    pub signing_key_secret: String,

    /// Seconds between signing-key rotations (a new key signs every this often).
    #[arg(long, env = "APIKEY_TOKEN_SIGNING_KEY_ROTATION_SECONDS", default_value_t = 7 * 86_400, value_parser = clap::value_parser!(u64).range(10..))]
    pub signing_key_rotation_seconds: u64,

    /// Seconds a new signing key is published in the JWKS before it signs anything: longer than
    /// any verifier caches the key set (Istio: 20 minutes). At most the rotation period.
    #[arg(long, env = "APIKEY_TOKEN_SIGNING_KEY_PUBLISH_AHEAD_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub signing_key_publish_ahead_seconds: u64,

    /// Seconds a successful client authentication is remembered (0: never), so that a steady
    /// client costs one argon2id per period.
    #[arg(long, env = "APIKEY_TOKEN_REMEMBER_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub remember_seconds: u64,

    /// Failed authentications a client id may have at once from one address before it is
    /// locked out there (from all addresses together: 20 times as many).
    #[arg(long, env = "APIKEY_TOKEN_CLIENT_FAILURE_BURST", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_failure_burst: u32,

    /// Seconds until a locked-out client id may fail once more from that address (from all
    /// addresses together: a twentieth of this, at least one second).
    #[arg(long, env = "APIKEY_TOKEN_CLIENT_SECONDS_PER_FAILURE", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_seconds_per_failure: u64,

    /// Failed authentications a source address may have at once before it is locked out.
    #[arg(long, env = "APIKEY_TOKEN_ADDRESS_FAILURE_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub address_failure_burst: u32,

    /// Seconds until a locked-out source address may fail once more.
    #[arg(long, env = "APIKEY_TOKEN_ADDRESS_SECONDS_PER_FAILURE", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub address_seconds_per_failure: u64,

    /// argon2id verifications running or queued at most; beyond, 503 with Retry-After.
    /// Default: 8 per core.
    #[arg(long, env = "APIKEY_TOKEN_MAX_VERIFICATIONS_QUEUED")]
    pub max_verifications_queued: Option<usize>,

    /// The most memory (KiB) a published argon2id hash may take to verify; a dearer hash (in a
    /// forged or misconfigured status) matches nothing. At least the operator's
    /// `--argon2-memory-kib`. Default 46 MiB, the most of OWASP's argon2id configurations.
    #[arg(long, env = "APIKEY_TOKEN_MAX_HASH_MEMORY_KIB", default_value_t = 47_104, value_parser = clap::value_parser!(u32).range(8..=HashParams::CEILING.memory_kib as i64))]
    pub max_hash_memory_kib: u32,

    /// The most iterations a published argon2id hash may have (at least the operator's).
    #[arg(long, env = "APIKEY_TOKEN_MAX_HASH_ITERATIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=HashParams::CEILING.iterations as i64))]
    pub max_hash_iterations: u32,

    /// The most lanes a published argon2id hash may have (at least the operator's).
    #[arg(long, env = "APIKEY_TOKEN_MAX_HASH_PARALLELISM", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=HashParams::CEILING.parallelism as i64))]
    pub max_hash_parallelism: u32,

    /// Lease duration in seconds of the signing-key writer's election.
    #[arg(long, env = "APIKEY_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    pub lease_duration_seconds: u64,

    /// Log format; `RUST_LOG` filters (default `info`).
    #[arg(long, env = "APIKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// An https URL with a host, without path, query or fragment (a trailing `/` is dropped): the
/// form this server's issuer takes, so that `{issuer}/.well-known/...` is both the RFC 8414 and
/// the OpenID Connect location.
fn parse_issuer(value: &str) -> Result<String, String> {
    let trimmed = value.strip_suffix('/').unwrap_or(value);
    let rest = trimmed
        .strip_prefix("https://")
        .ok_or_else(|| format!("{value:?}: the issuer must be an https:// URL (RFC 8414 §2)"))?;
    let ok = !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' ']) && rest.is_ascii();
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(format!(
            "{value:?}: the issuer must be https://host[:port] without path, query, fragment or user"
        ))
    }
}
