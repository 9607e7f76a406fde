//! The `apikey-operator` binary's command line: one subcommand per role, `run` (the operator,
//! [`crate::operator::cli`]), `token-server` (the token server, [`crate::token::cli`]) and `crd`.
//! Every flag has an environment-variable twin.

use clap::{Parser, Subcommand};

use crate::operator::cli::RunArgs;
use crate::token::cli::TokenServerArgs;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hashing::HashParams;
    use crate::shared::cli::LogFormat;

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
