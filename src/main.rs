//! The `apikey-operator` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use apikey_operator::cli::{Cli, Command};
use apikey_operator::core::crd::ApiKey;
use apikey_operator::operator::cli::RunArgs;
use apikey_operator::operator::controller::{self, Settings};
use apikey_operator::shared::cli::LogFormat;
use apikey_operator::token::cli::TokenServerArgs;
use std::sync::Arc;

use apikey_operator::core::hashing::Hasher;
use apikey_operator::operator::health::{self, Health};
use apikey_operator::operator::keystore;
use apikey_operator::operator::metrics::Metrics;
use apikey_operator::shared::leader;
use apikey_operator::{Error, Result};
use clap::Parser as _;
use futures::FutureExt as _;
use kube::CustomResourceExt as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => print_crd(),
        Command::Run(args) => run(args),
        Command::TokenServer(args) => token_server(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apikey-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_crd() -> Result<()> {
    let yaml = serde_yaml_ng::to_string(&ApiKey::crd())
        .map_err(|e| Error::Config(format!("cannot render the CRD: {e}")))?;
    print!("{yaml}");
    Ok(())
}

/// `RUST_LOG`, else `info`. The Kubernetes client libraries log failed calls themselves (an
/// ERROR line per failed connection), which the operator reports too (an outage once, see
/// outage.rs): they are silent unless `RUST_LOG` names them.
fn init_logging(format: LogFormat) {
    let configured = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let directives = if configured.contains("kube") {
        configured
    } else {
        format!("{configured},kube_client=off,kube_runtime=off")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(args: RunArgs) -> Result<()> {
    let params = args.hash_params();
    params.validate()?;
    init_logging(args.log_format);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hasher = Hasher::new(params, workers)?;
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "apikey-operator".into());
    let settings = Settings {
        namespaces: args.namespaces.clone(),
        concurrency: args.concurrency,
        instance: instance.clone(),
        min_rotation_interval: args.min_rotation_interval,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let health = Arc::new(Health::new(Arc::new(Metrics::default())));
            let endpoint = health::serve(args.http_addr, health.clone())
                .await
                .map_err(|e| Error::Config(format!("--http-addr {}: {e}", args.http_addr)))?;
            tokio::spawn(endpoint);
            let client = kube::Client::try_default().await?;
            let record_key_namespace = args.record_key_namespace.clone().unwrap_or_else(own_namespace);
            let record_key = keystore::load_or_create(client.clone(), &record_key_namespace, &args.record_key_secret).await?;
            tracing::info!(secret = %format!("{record_key_namespace}/{}", args.record_key_secret), key_id = record_key.id(), "record key loaded");
            let shutdown = shutdown_signal().boxed().shared();
            tracing::info!(namespaces = ?settings.namespaces, ?params, http = %args.http_addr, leader_elect = args.leader_elect, "starting apikey-operator");
            if !args.leader_elect {
                health.metrics.leader.set(1);
                controller::run(client, hasher, record_key, health, settings, shutdown).await;
                tracing::info!("stopped");
                return Ok(());
            }
            let namespace = args.lease_namespace.clone().unwrap_or_else(own_namespace);
            let identity = format!("{instance}-{}", std::process::id());
            health.set_standby(true);
            let Some(leadership) = leader::acquire(
                client.clone(),
                &namespace,
                &identity,
                args.lease_duration_seconds,
                shutdown.clone(),
            )
            .await?
            else {
                tracing::info!("stopped before becoming the leader");
                return Ok(());
            };
            health.set_standby(false);
            health.metrics.leader.set(1);
            // Stop reconciling on SIGTERM or as soon as the lease is lost; in-flight reconciles
            // finish first, then the lease is released.
            let stop = futures::future::select(shutdown, leadership.lost())
                .map(|_| ())
                .boxed()
                .shared();
            controller::run(client, hasher, record_key, health.clone(), settings, stop).await;
            health.metrics.leader.set(0);
            let lost = !leadership.is_held();
            leadership.release().await;
            if lost {
                return Err(Error::Lease("lost the leader lease; exiting so that a restart rejoins the election".into()));
            }
            tracing::info!("stopped");
            Ok(())
        })
}

fn token_server(args: TokenServerArgs) -> Result<()> {
    init_logging(args.log_format);
    let namespace = args
        .signing_key_namespace
        .clone()
        .unwrap_or_else(own_namespace);
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "apikey-token-server".into());
    let identity = format!("{instance}-{}", std::process::id());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(apikey_operator::token::run::run(
            args,
            namespace,
            identity,
            shutdown_signal().boxed().shared(),
        ))
}

/// The pod's own namespace (from its service-account mount or `POD_NAMESPACE`), else
/// `apikey-system`.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "apikey-system".into())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
