//! The `apikey-operator` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use apikey_operator::cli::{Cli, Command, LogFormat, RunArgs};
use apikey_operator::controller::{self, Settings};
use apikey_operator::crd::ApiKey;
use apikey_operator::hashing::Hasher;
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

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    let settings = Settings {
        namespaces: args.namespaces,
        concurrency: args.concurrency,
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "apikey-operator".into()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = kube::Client::try_default().await?;
            tracing::info!(namespaces = ?settings.namespaces, ?params, "starting apikey-operator");
            controller::run(
                client,
                hasher,
                Default::default(),
                settings,
                shutdown_signal().boxed().shared(),
            )
            .await;
            tracing::info!("stopped");
            Ok(())
        })
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
