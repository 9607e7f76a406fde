//! `kubectl-apikey`: the kubectl plugin (`kubectl apikey ...`). Exit codes: 0 done; 1 an error,
//! or a bulk command that did not finish every key (its summary says which); 2 a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use apikey_operator::admin::actions::with_causes;
use apikey_operator::admin::plugin::args::Cli;
use apikey_operator::admin::plugin::commands;
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", with_causes(&e));
            ExitCode::FAILURE
        }
    }
}
