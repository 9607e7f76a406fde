//! Command line: `apikey-operator run` and `apikey-operator crd`. Every flag of `run` has an
//! environment-variable twin.

use std::net::SocketAddr;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::hashing::HashParams;

/// Kubernetes operator that turns ApiKey objects into client credentials in Secrets.
#[derive(Debug, Parser)]
#[command(name = "apikey-operator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
    /// Print the ApiKey CustomResourceDefinition as YAML.
    Crd,
    /// Serve the OAuth 2.0 token endpoint: client credentials of an ApiKey in, a signed access
    /// token for its user out (README: "Authenticate with a key").
    TokenServer(TokenServerArgs),
}

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
    #[arg(long, env = "APIKEY_RECORD_KEY_SECRET", default_value = crate::keystore::DEFAULT_SECRET_NAME)]
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

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_namespace(value: &str) -> Result<String, String> {
    crate::names::check_namespace(value)
        .map(|()| value.to_string())
        .map_err(|_| format!("{value:?} is not a valid namespace name (a DNS-1123 label)"))
}

/// Reads `--min-rotation-interval` ([`crate::rotation::parse_duration`]); at least one second.
fn parse_min_interval(text: &str) -> std::result::Result<std::time::Duration, String> {
    match crate::rotation::parse_duration(text)? {
        d if d.is_zero() => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let mut all = vec!["apikey-operator", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).map_err(|e| e.to_string())?.command {
            Command::Run(r) => Ok(r),
            _ => unreachable!("run was parsed"),
        }
    }

    fn token_server(args: &[&str]) -> Result<TokenServerArgs, String> {
        let mut all = vec!["apikey-operator", "token-server"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).map_err(|e| e.to_string())?.command {
            Command::TokenServer(t) => Ok(t),
            _ => unreachable!("token-server was parsed"),
        }
    }

    #[test]
    fn the_token_server_needs_an_https_issuer_and_tls_unless_told_otherwise() {
        let t = token_server(&[
            "--issuer",
            "https://auth.example:8443/",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
        ])
        .unwrap();
        assert_eq!(t.issuer, "https://auth.example:8443");
        assert_eq!(t.token_lifetime_seconds, 900);
        assert!(token_server(&["--issuer", "https://a.example", "--insecure-http"]).is_ok());
        for (args, needle) in [
            (
                vec!["--issuer", "http://a.example", "--insecure-http"],
                "https",
            ),
            (
                vec!["--issuer", "https://a.example/path", "--insecure-http"],
                "without path",
            ),
            (vec!["--issuer", "https://a.example"], "--tls-cert-file"),
            (
                vec![
                    "--issuer",
                    "https://a.example",
                    "--insecure-http",
                    "--token-lifetime-seconds",
                    "5",
                ],
                "--token-lifetime-seconds",
            ),
        ] {
            let err = token_server(&args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn defaults() {
        let r = parse(&[]).unwrap();
        assert!(r.namespaces.is_empty());
        assert_eq!(r.hash_params(), HashParams::default());
        assert_eq!(r.log_format, LogFormat::Text);
        assert!(r.leader_elect);
        assert_eq!(r.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(r.lease_namespace, None);
        assert_eq!(r.record_key_namespace, None);
        assert_eq!(r.record_key_secret, "apikey-operator-record-key");
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
    }

    #[test]
    fn repeatable_namespaces() {
        let r = parse(&["--namespace", "a", "--namespace", "b,c"]).unwrap();
        assert_eq!(r.namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--namespace", "Bad_NS"], "--namespace"),
            (vec!["--concurrency", "0"], "--concurrency"),
            (vec!["--argon2-memory-kib", "x"], "--argon2-memory-kib"),
            (vec!["--argon2-iterations", "0"], "--argon2-iterations"),
            (
                vec!["--argon2-memory-kib", "4194304"],
                "--argon2-memory-kib",
            ),
            (
                vec!["--record-key-namespace", "Bad"],
                "--record-key-namespace",
            ),
            (vec!["--log-format", "xml"], "--log-format"),
            (vec!["--http-addr", "nowhere"], "--http-addr"),
            (vec!["--leader-elect=maybe"], "--leader-elect"),
            (vec!["--lease-namespace", "UPPER"], "--lease-namespace"),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
