//! `apikey-bench`: measures the operator against the cluster of the current kubeconfig and
//! compares every phase with the best a plain client could do on the same control plane.
//!
//! It installs the CRD, starts the release build of `apikey-operator` as a child process scoped to
//! a fresh namespace, and times six phases there: create, regenerate, idle, memory, authenticate
//! (the token server trading the keys' client credentials for access tokens, beside its limits:
//! argon2id verifications and ES256 signatures alone) and delete. Then, in two other fresh
//! namespaces with no operator, it times a plain client doing the same API writes: without
//! hashing, and with each key's argon2id hash computed on the same cores; and N hashes alone on
//! all cores. Those are the limits of the other phases. It also reports the CPU time of
//! the operator (or the plain client) and of the local control plane in each phase. It prints one
//! table, optionally writes it as JSON, and deletes the namespaces. It reports against the targets
//! and never fails on them: the exit code is non-zero only on errors.
//!
//! It reads the keys' client secrets only to present them to the token server; it never prints,
//! logs or writes a client secret or a token.
#![forbid(unsafe_code)]

mod authenticate;
mod cluster;
mod cpu;
mod limits;
mod operator;
mod phases;
mod report;
mod track;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;

/// Any error of the benchmark; messages never include secret material.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with the benchmark's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Benchmark of apikey-operator: create, regenerate, idle, memory, authenticate (token server) and
/// delete of N ApiKeys, each compared with its limit on the same machine and control plane.
#[derive(Debug, Parser)]
#[command(name = "apikey-bench", version)]
pub struct Args {
    /// Number of ApiKeys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,

    /// Requests in flight at once (the operator's writes are compared at the same concurrency).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Length of the idle phase in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_seconds: u64,

    /// Prefix of the namespaces created (`<prefix>-<random>`, `<prefix>-token-<random>` and
    /// `<prefix>-limit-<random>`).
    #[arg(long, default_value = "bench")]
    pub namespace_prefix: String,

    /// Longest wait for any one phase (or for the operator to become ready) before giving up.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub phase_timeout_seconds: u64,
}

impl Args {
    /// Number of keys as a `usize`.
    pub fn n(&self) -> usize {
        self.keys as usize
    }

    /// Concurrency as a `usize`.
    pub fn c(&self) -> usize {
        usize::from(self.concurrency)
    }

    /// The per-phase timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.phase_timeout_seconds)
    }
}

/// Namespaces created so far, deleted at the end whatever happens.
#[derive(Default)]
pub struct Cleanup {
    namespaces: Mutex<Vec<String>>,
}

impl Cleanup {
    /// Remembers `namespace` for deletion at the end.
    pub fn add(&self, namespace: &str) {
        if let Ok(mut all) = self.namespaces.lock() {
            all.push(namespace.to_string());
        }
    }

    fn take(&self) -> Vec<String> {
        self.namespaces
            .lock()
            .map(|mut all| std::mem::take(&mut *all))
            .unwrap_or_default()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apikey-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apikey-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(args: Args) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster: cannot build a client from the kubeconfig: {e}"))?;
    let cleanup = Cleanup::default();
    let outcome = tokio::select! {
        r = bench(&client, &args, &cleanup) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    // The operator child (if any) was killed when the benchmark future was dropped.
    for namespace in cleanup.take() {
        match cluster::delete_namespace(&client, &namespace).await {
            Ok(()) => eprintln!("deleted namespace {namespace}"),
            Err(e) => eprintln!("warning: could not delete namespace {namespace}: {e}"),
        }
    }
    let report = outcome?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The whole run: CRD, the operator's phases, then the limits.
async fn bench(client: &kube::Client, args: &Args, cleanup: &Cleanup) -> Result<report::Report> {
    let operator_bin = operator::binary_path()?;
    cluster::install_crd(client, args.timeout()).await?;
    eprintln!("CRD apikeys.apikey.dev is Established");

    let suffix = cluster::random_suffix()?;
    let operator_ns = format!("{}-{suffix}", args.namespace_prefix);
    let limit_ns = [
        format!("{}-limit-{suffix}", args.namespace_prefix),
        format!("{}-limit-hashing-{suffix}", args.namespace_prefix),
    ];

    // The token server's signing-key Secret is labelled managed-by apikey-operator: in a namespace
    // of its own, so that it is not counted among the keys' Secrets.
    let token_ns = format!("{}-token-{suffix}", args.namespace_prefix);
    for namespace in [&operator_ns, &token_ns] {
        cluster::create_namespace(client, namespace).await?;
        cleanup.add(namespace);
    }
    let measured = phases::run(client, args, &operator_bin, &operator_ns, &token_ns).await?;

    for namespace in &limit_ns {
        cluster::create_namespace(client, namespace).await?;
        cleanup.add(namespace);
    }
    let limit_ns = [limit_ns[0].as_str(), limit_ns[1].as_str()];
    let limits = limits::run(client, args, limit_ns).await?;

    Ok(report::Report::new(
        args,
        &operator_ns,
        limit_ns,
        measured,
        limits,
    ))
}
