//! `apikey-operator token-server`: wires the watch of ApiKeys, the signing keys, client
//! authentication and the endpoints together, and serves them until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt as _;
use kube::api::Api;

use super::authenticator::{AuthLimits, Authenticator};
use super::cli::TokenServerArgs;
use super::directory::Directory;
use super::metrics::TokenMetrics;
use super::server::{self, HEADER_READ_TIMEOUT, IssuerConfig, MAX_HEADER_BYTES, TokenServer};
use super::signing::Schedule;
use super::signing_secret;
use super::tls::TlsFiles;
use crate::core::crd::ApiKey;
use crate::core::hashing::Hasher;
use crate::error::{Error, Result};

/// Seconds of clock skew between this server and verifiers that a retired signing key is kept
/// published beyond the last token it signed.
const CLOCK_SKEW_SECONDS: u64 = 300;

/// argon2id verifications running at once, at most (fewer on fewer cores).
const MAX_WORKERS: usize = 4;

/// How long the watch of ApiKeys may fail before the replica reports not ready: past that, a
/// deleted or regenerated key could authenticate for as long as the failure lasts.
const STALE_AFTER: Duration = Duration::from_secs(300);

/// How often the failure budgets forget what is over.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Serves the token server until `shutdown` resolves. `namespace` is where its signing-key
/// Secret and Lease live; `identity` names this replica in the Lease.
pub async fn run(
    args: TokenServerArgs,
    namespace: String,
    identity: String,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> Result<()> {
    if args.signing_key_publish_ahead_seconds > args.signing_key_rotation_seconds {
        return Err(Error::Config(format!(
            "--signing-key-publish-ahead-seconds ({}) must not exceed --signing-key-rotation-seconds ({})",
            args.signing_key_publish_ahead_seconds, args.signing_key_rotation_seconds
        )));
    }
    // One TLS provider for the process: ring, as the Kubernetes client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let config = files.load().await?;
            Some((files, config))
        }
        _ => None,
    };
    let metrics = Arc::new(TokenMetrics::default());
    let client = kube::Client::try_default().await?;
    let directory = Arc::new(Directory::default());
    tokio::spawn(directory.clone().run(Api::<ApiKey>::all(client.clone())));

    let lifetime = u64::from(args.token_lifetime_seconds);
    let schedule = Schedule {
        rotation_seconds: args.signing_key_rotation_seconds,
        publish_ahead_seconds: args.signing_key_publish_ahead_seconds,
        retire_after_seconds: lifetime + CLOCK_SKEW_SECONDS,
    };
    let signing = signing_secret::start(
        client,
        &namespace,
        &args.signing_key_secret,
        schedule,
        identity,
        args.lease_duration_seconds,
        shutdown.clone(),
    )
    .await?;

    // Each verification holds the hash's `m` KiB while it runs: at most this many at once, so
    // that memory stays bounded (4 x the default 46 MiB ceiling) even without a CPU limit.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    let hasher = Hasher::new(crate::core::hashing::HashParams::default(), workers)?;
    let limits = AuthLimits {
        remember_for: Duration::from_secs(args.remember_seconds),
        client_burst: args.client_failure_burst,
        client_seconds_per_failure: args.client_seconds_per_failure,
        address_burst: args.address_failure_burst,
        address_seconds_per_failure: args.address_seconds_per_failure,
        max_verifications_queued: args.max_verifications_queued.unwrap_or(8 * workers),
        hash_ceiling: crate::core::hashing::HashParams {
            memory_kib: args.max_hash_memory_kib,
            iterations: args.max_hash_iterations,
            parallelism: args.max_hash_parallelism,
        },
    };
    let server = Arc::new(TokenServer {
        config: IssuerConfig {
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            lifetime_seconds: i64::from(args.token_lifetime_seconds),
        },
        authenticator: Authenticator::new(directory.clone(), hasher, limits, metrics.clone())?,
        directory,
        signing,
        metrics,
    });

    let sweeper = server.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            sweeper.authenticator.sweep();
        }
    });

    let admin = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| Error::Config(format!("--http-addr {}: {e}", args.http_addr)))?;
    tracing::info!(addr = %admin.local_addr()?, "serving /healthz, /readyz and /metrics");
    tokio::spawn(serve_admin(admin, server.clone()));

    let app = server::router(server.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let graceful = handle.clone();
    tokio::spawn(shutdown.clone().map(move |()| {
        graceful.graceful_shutdown(Some(Duration::from_secs(10)));
    }));
    let listening = handle.clone();
    let (issuer, audience, tls_on) = (args.issuer.clone(), args.audience.clone(), tls.is_some());
    tokio::spawn(async move {
        if let Some(addr) = listening.listening().await {
            tracing::info!(%issuer, %addr, tls = tls_on, %audience, lifetime_seconds = lifetime, "serving the token endpoint");
        }
    });
    let served = match tls {
        Some((files, config)) => {
            tokio::spawn(files.reload_on_change(config.clone()));
            let mut server = axum_server::bind_rustls(args.listen_addr, config)
                .handle(handle)
                .first_request_timeout(HEADER_READ_TIMEOUT);
            bound_http(server.http_builder());
            server.serve(app).await
        }
        None => {
            let mut server = axum_server::bind(args.listen_addr)
                .handle(handle)
                .first_request_timeout(HEADER_READ_TIMEOUT);
            bound_http(server.http_builder());
            server.serve(app).await
        }
    };
    served.map_err(|e| Error::Config(format!("--listen-addr {}: {e}", args.listen_addr)))?;
    tracing::info!("stopped");
    Ok(())
}

/// Bounds the request head: hyper answers 431 beyond [`MAX_HEADER_BYTES`] or 64 headers, and
/// closes a connection whose head takes longer than [`HEADER_READ_TIMEOUT`]; idle HTTP/2
/// connections are pinged and closed when they stop answering.
fn bound_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(64);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(HEADER_READ_TIMEOUT)
        .keep_alive_timeout(HEADER_READ_TIMEOUT)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
}

/// `/healthz`, `/readyz` (ready once the ApiKeys are listed and a signing key that may sign is
/// loaded, and not while the watch of ApiKeys has failed for more than [`STALE_AFTER`]) and
/// `/metrics`, over plain HTTP.
async fn serve_admin(listener: tokio::net::TcpListener, server: Arc<TokenServer>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            server::REQUEST_TIMEOUT,
        ))
        .with_state(server);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health and metrics endpoint failed");
    }
}

async fn readyz(State(server): State<Arc<TokenServer>>) -> (StatusCode, String) {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why);
    if !server.directory.is_synced() {
        return unavailable("the ApiKeys have not been listed yet".into());
    }
    if let Some(failing) = server.directory.failing_for()
        && failing > STALE_AFTER
    {
        return unavailable(format!(
            "the watch of ApiKeys has failed for {} s: deleted or regenerated keys may still authenticate here",
            failing.as_secs()
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if !server.signing.is_ready(now) {
        return unavailable("no signing key loaded that may sign now".into());
    }
    (StatusCode::OK, "ok".into())
}

async fn metrics(State(server): State<Arc<TokenServer>>) -> impl IntoResponse {
    let (known, ready) = server.directory.counts();
    let m = &server.metrics;
    m.keys.set(i64::try_from(known).unwrap_or(i64::MAX));
    m.ready_keys.set(i64::try_from(ready).unwrap_or(i64::MAX));
    if let Some(keys) = server.signing.current() {
        m.signing_keys
            .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}
