//! The command line of `kubectl apikey` (binary `kubectl-apikey`, found on PATH by kubectl's
//! plugin mechanism: <https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/>).
//!
//! kubectl passes its arguments after the plugin's name through unchanged and does not accept its
//! own flags before a plugin's name, so the plugin reads `--kubeconfig`, `--context` and
//! `-n/--namespace` itself, as kubectl does; `KUBECONFIG` works as usual.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Manage ApiKeys (apikey.dev/v1alpha1) like the API Keys page: create, list, regenerate and
/// delete keys, one by one or by label selector, with a confirmation before bulk changes.
#[derive(Debug, Parser)]
#[command(name = "kubectl apikey", bin_name = "kubectl apikey", version)]
pub struct Cli {
    /// Cluster and namespace.
    #[command(flatten)]
    pub target: Target,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster, as whom, and where: kubectl's own flags.
#[derive(Debug, Args)]
pub struct Target {
    /// Path to the kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an ApiKey for a user; the operator writes its Secret.
    Create(CreateArgs),
    /// List ApiKeys: user, client id, Ready and reason, last and next rotation, age.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Give keys a new client secret (one new `apikey.dev/regenerate` value for all of them),
    /// after a confirmation, and wait until every Secret holds it.
    Regenerate(RegenerateArgs),
    /// Delete keys, after a confirmation, and wait until their Secrets are gone.
    Delete(DeleteArgs),
    /// Get an access token from the token server with a key's credentials and print its header
    /// and claims as JSON (never the client secret, nor the token itself).
    Token(TokenArgs),
    /// Serve the API Keys page on 127.0.0.1, acting with your kubeconfig.
    Console(ConsoleArgs),
}

/// `create NAME --user U [--secret-name S] [--label k=v]...`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the ApiKey (a DNS-1123 subdomain).
    pub name: String,
    /// The user the key acts for (`spec.user`).
    #[arg(long)]
    pub user: String,
    /// The Secret to write (`spec.secretName`; default: the ApiKey's name).
    #[arg(long)]
    pub secret_name: Option<String>,
    /// A label of the ApiKey, `key=value`; repeat for more.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = crate::admin::keys::parse_label)]
    pub labels: Vec<(String, String)>,
}

/// `list [-l SELECTOR] [-A] [-o table|json|yaml]`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys matching this label selector (kubectl's syntax: `team=x,tier!=dev`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Keys of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: a table, or the ApiKeys as a kubectl `List` in JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output formats of `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns, as `kubectl get` prints them.
    Table,
    /// A `v1` `List` of the ApiKeys, as `kubectl get -o json`.
    Json,
    /// A `v1` `List` of the ApiKeys, as `kubectl get -o yaml`.
    Yaml,
}

/// Which keys a bulk command acts on, and how it confirms.
#[derive(Debug, Args)]
pub struct Bulk {
    /// Keys of every namespace (with -l, or regenerate's --all; not with names).
    #[arg(short = 'A', long, conflicts_with = "names")]
    pub all_namespaces: bool,
    /// Go on without asking for confirmation. Without it the command asks on the terminal,
    /// and refuses (changing nothing) when there is no terminal to ask on.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// How long to wait for the operator (and garbage collection) to finish, in seconds (at most
    /// 86400); the exit code is 1 if any key is not done by then.
    #[arg(long, value_name = "SECONDS", default_value = "120", value_parser = parse_seconds)]
    pub timeout: Duration,
}

/// `regenerate (NAME... | -l SELECTOR | --all)`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["names", "selector", "all"]))]
pub struct RegenerateArgs {
    /// ApiKeys by name.
    pub names: Vec<String>,
    /// The ApiKeys matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Every ApiKey in the namespace (with -A: in every namespace).
    #[arg(long)]
    pub all: bool,
    /// Scope, confirmation and timeout.
    #[command(flatten)]
    pub bulk: Bulk,
}

/// `delete (NAME... | -l SELECTOR)`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["names", "selector"]))]
pub struct DeleteArgs {
    /// ApiKeys by name.
    pub names: Vec<String>,
    /// The ApiKeys matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Scope, confirmation and timeout.
    #[command(flatten)]
    pub bulk: Bulk,
}

/// `token NAME [--token-server NAMESPACE/SERVICE:PORT] [--scope S]`
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The ApiKey whose credentials to use (read from its Secret; needs `get` on Secrets).
    pub name: String,
    /// The token server's Service, reached over HTTPS through the API server's service proxy
    /// (`create` on `services/proxy` in its namespace): `NAMESPACE/NAME:PORT`, the port (its
    /// HTTPS one) by name or number.
    #[arg(long, default_value = "apikey-token-server/apikey-token-server:https", value_parser = parse_service)]
    pub token_server: (String, String),
    /// The `scope` parameter of the request (RFC 6749 §3.3), if any.
    #[arg(long)]
    pub scope: Option<String>,
}

/// `console [--port N] [-A]`
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Start with the keys of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// Longest `--timeout`: a day.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// Whole seconds, optionally with an `s` suffix (`120`, `120s`), at most a day.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let digits = s.strip_suffix('s').unwrap_or(s);
    match digits.parse::<u64>() {
        Ok(n) if n <= MAX_TIMEOUT_SECONDS => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "a timeout is whole seconds up to {MAX_TIMEOUT_SECONDS} (120 or 120s), not {s:?}"
        )),
    }
}

/// `NAMESPACE/NAME:PORT` of a Service: (namespace, `NAME:PORT`).
fn parse_service(s: &str) -> Result<(String, String), String> {
    let valid = |ns: &str, svc: &str| {
        !ns.is_empty()
            && svc
                .split_once(':')
                .is_some_and(|(n, p)| !n.is_empty() && !p.is_empty())
    };
    match s.split_once('/') {
        Some((ns, svc)) if valid(ns, svc) => Ok((ns.to_owned(), svc.to_owned())),
        _ => Err(format!("a Service is NAMESPACE/NAME:PORT, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bulk_commands_need_names_a_selector_or_all_and_flags_work_after_the_subcommand() {
        assert!(Cli::try_parse_from(["kubectl-apikey", "regenerate"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-apikey", "delete", "--yes"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-apikey", "delete", "-A", "k", "--yes"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-apikey", "regenerate", "-A", "-l", "a=b"]).is_ok());
        assert!(
            Cli::try_parse_from(["kubectl-apikey", "delete", "--all"]).is_err(),
            "delete has no --all"
        );
        let cli = Cli::try_parse_from([
            "kubectl-apikey",
            "regenerate",
            "-l",
            "team=x",
            "-n",
            "ns",
            "--yes",
            "--timeout",
            "30s",
        ])
        .unwrap();
        assert_eq!(cli.target.namespace.as_deref(), Some("ns"));
        let Command::Regenerate(args) = cli.command else {
            panic!("regenerate")
        };
        assert_eq!(
            (args.selector.as_deref(), args.bulk.yes, args.bulk.timeout),
            (Some("team=x"), true, Duration::from_secs(30))
        );
    }

    #[test]
    fn timeouts_are_whole_seconds_up_to_a_day_and_services_namespace_name_port() {
        assert_eq!(parse_seconds("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_seconds("86400"), Ok(Duration::from_secs(86_400)));
        for bad in ["10ss", "86401", "18446744073709551615", "-1", "1.5", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_service("a/b:https"),
            Ok(("a".into(), "b:https".into()))
        );
        for bad in ["bogus", "a/b", "/b:1", "a/:1", "a/b:"] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_key_value() {
        use crate::admin::keys::parse_label;
        assert_eq!(parse_label("team=x"), Ok(("team".into(), "x".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("team").is_err());
        assert!(parse_label("=x").is_err());
    }
}
