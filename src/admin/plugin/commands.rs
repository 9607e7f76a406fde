//! What each `kubectl apikey` command does: the API calls of [`crate::admin::actions`], the
//! confirmation, the progress bar and the output of [`super::output`].

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt as _, stream};
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::time::Instant;

use super::args::{
    Bulk, Cli, Command, ConsoleArgs, CreateArgs, DeleteArgs, ListArgs, Output, RegenerateArgs,
    TokenArgs,
};
use super::output::{self, Outcome};
use crate::admin::actions::{self, KeyRef, Selection, api_message};
use crate::admin::keys::{RegenerateState, controlled_by, new_request_value};
use crate::core::crd::ApiKey;
use crate::core::secret::{CLIENT_ID_KEY, CLIENT_SECRET_KEY};
use crate::{Error, Result};

/// How often a bulk command reads where the keys stand while it waits.
const POLL: Duration = Duration::from_secs(1);

/// How many keys a bulk command reads at once while it waits.
const PARALLEL_READS: usize = 16;

/// Longest wait for one API call of a short-lived command (a watch of the console is not one).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one key of a bulk command stands while the command waits for it.
enum Wait<T> {
    /// Not done yet; the last transient error reading it, if any.
    Open(Option<String>),
    /// Done: what the check returned.
    Done(T),
    /// The caller may not read what would tell (403), or the key is gone (404): the message.
    Unverifiable(String),
}

/// Checks every key with `check` (`Some`: done) every [`POLL`] until all are done or
/// unverifiable, or `deadline` passes; [`PARALLEL_READS`] at a time.
async fn wait_for<'k, T, F, Fut>(
    keys: &[&'k ApiKey],
    deadline: Instant,
    bar: &ProgressBar,
    check: F,
) -> Vec<Wait<T>>
where
    F: Fn(&'k ApiKey) -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let mut states: Vec<Wait<T>> = keys.iter().map(|_| Wait::Open(None)).collect();
    loop {
        let open: Vec<usize> = (0..keys.len())
            .filter(|&i| matches!(states[i], Wait::Open(_)))
            .collect();
        let results: Vec<(usize, Result<Option<T>>)> = stream::iter(open)
            .map(|i| {
                let read = check(keys[i]);
                async move { (i, read.await) }
            })
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        for (i, result) in results {
            states[i] = match result {
                Ok(Some(done)) => Wait::Done(done),
                Ok(None) => Wait::Open(None),
                Err(Error::Kube(kube::Error::Api(status)))
                    if status.is_forbidden() || status.is_not_found() =>
                {
                    Wait::Unverifiable(status.message)
                }
                Err(e) => Wait::Open(Some(api_message(&e))),
            };
        }
        let open = states.iter().filter(|s| matches!(s, Wait::Open(_))).count();
        bar.set_position((keys.len() - open) as u64);
        if open == 0 || Instant::now() >= deadline {
            return states;
        }
        bar.set_message(format!("{open} to go"));
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `cli`. `Ok(true)`: everything asked was done; `Ok(false)`: some keys were not (the
/// summary says which), exit code 1.
pub async fn run(cli: Cli) -> Result<bool> {
    let long_lived = matches!(cli.command, Command::Console(_));
    let (client, namespace) = connect(&cli.target, long_lived).await?;
    match cli.command {
        Command::Create(args) => create(&client, &namespace, args).await,
        Command::List(args) => list(&client, &namespace, args).await,
        Command::Regenerate(args) => regenerate(&client, &namespace, args).await,
        Command::Delete(args) => delete(&client, &namespace, args).await,
        Command::Token(args) => token(&client, &namespace, args).await,
        Command::Console(args) => console(client, namespace, args).await,
    }
}

/// A client for the kubeconfig, context and namespace the flags name, as kubectl picks them.
/// Calls are not retried by the client (kube's default retries 429/503/504 for minutes, and
/// would post a token request again); a short-lived command's calls give up after
/// [`READ_TIMEOUT`], the console's watches do not.
async fn connect(target: &super::args::Target, long_lived: bool) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                Error::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| Error::Config(format!("cannot load the kubeconfig: {e}")))?;
    let mut config = config;
    config.default_retry = false;
    if !long_lived {
        config.read_timeout = Some(READ_TIMEOUT);
    }
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

async fn create(client: &Client, namespace: &str, args: CreateArgs) -> Result<bool> {
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let key = actions::create(
        client,
        namespace,
        &args.name,
        &args.user,
        args.secret_name.as_deref(),
        labels,
    )
    .await
    .map_err(refused)?;
    println!(
        "apikey.apikey.dev/{} created in namespace {namespace}: the operator writes Secret {} for user {:?}",
        args.name,
        key.secret_name(),
        args.user
    );
    Ok(true)
}

async fn list(client: &Client, namespace: &str, args: ListArgs) -> Result<bool> {
    let scope = (!args.all_namespaces).then_some(namespace);
    let selection = args.selector.map_or(Selection::All, Selection::Selector);
    let keys = actions::select(client, scope, &selection)
        .await
        .map_err(refused)?;
    match args.output {
        Output::Table if keys.is_empty() => match scope {
            Some(ns) => eprintln!("No ApiKeys found in {ns} namespace."),
            None => eprintln!("No ApiKeys found."),
        },
        Output::Table => print!(
            "{}",
            output::key_table(&keys, args.all_namespaces, Timestamp::now())
        ),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output::list_document(&keys)?)?
        ),
        Output::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(&output::list_document(&keys)?)
                .map_err(|e| Error::Config(format!("cannot render YAML: {e}")))?
        ),
    }
    Ok(true)
}

async fn regenerate(client: &Client, namespace: &str, args: RegenerateArgs) -> Result<bool> {
    let selection = if args.all {
        Selection::All
    } else if let Some(selector) = args.selector {
        Selection::Selector(selector)
    } else {
        Selection::Names(args.names)
    };
    let Some(keys) = chosen(client, namespace, &selection, &args.bulk).await? else {
        return Ok(true);
    };
    println!("{} get a new client secret:", these(keys.len()));
    print!("{}", output::preview(&keys));
    confirm(
        &args.bulk,
        &format!("Regenerate the client secret of {}?", count(keys.len())),
    )?;

    let value = new_request_value(Timestamp::now());
    println!("apikey.dev/regenerate={value}");
    let mut outcomes = Vec::with_capacity(keys.len());
    let mut waiting = Vec::new();
    for key in keys {
        let before = key.status.as_ref().and_then(|s| s.secret_generation);
        let requested = match KeyRef::of(&key) {
            Ok(r) => actions::request_regenerate(client, &r, &value).await,
            Err(e) => Err(e),
        };
        match requested {
            Ok(()) => waiting.push((key, before)),
            Err(e) => outcomes.push((name_of(&key), Outcome::Refused(api_message(&e)))),
        }
    }
    let bar = progress(waiting.len(), "rotated");
    let deadline = Instant::now() + args.bulk.timeout;
    let keys: Vec<&ApiKey> = waiting.iter().map(|(key, _)| key).collect();
    let value = &value;
    let states = wait_for(&keys, deadline, &bar, |key| async move {
        let state = actions::current_regenerate_state(client, key, value).await?;
        Ok((state != RegenerateState::Pending).then_some(state))
    })
    .await;
    bar.finish_and_clear();
    for ((key, before), wait) in waiting.iter().zip(states) {
        let outcome = match wait {
            Wait::Done(state) => Outcome::Regenerate {
                before: *before,
                state,
            },
            Wait::Open(error) => Outcome::TimedOut(format!(
                "the request stands: the operator gives the key its new secret when it gets to it{}{}",
                if key.status.is_none() {
                    " (the key has no status: is an operator watching this namespace?)"
                } else {
                    ""
                },
                last_error(error)
            )),
            Wait::Unverifiable(error) => Outcome::Unverified(format!(
                "requested, but whether it was answered cannot be read: {error}"
            )),
        };
        outcomes.push((name_of(key), outcome));
    }
    Ok(report(outcomes))
}

async fn delete(client: &Client, namespace: &str, args: DeleteArgs) -> Result<bool> {
    let selection = match args.selector {
        Some(selector) => Selection::Selector(selector),
        None => Selection::Names(args.names),
    };
    let Some(keys) = chosen(client, namespace, &selection, &args.bulk).await? else {
        return Ok(true);
    };
    println!(
        "{} be deleted, and {} (the keys stop working):",
        these(keys.len()),
        if keys.len() == 1 {
            "its Secret with it"
        } else {
            "their Secrets with them"
        }
    );
    print!("{}", output::preview(&keys));
    confirm(&args.bulk, &format!("Delete {}?", count(keys.len())))?;

    let mut outcomes = Vec::with_capacity(keys.len());
    let mut waiting = Vec::new();
    for key in keys {
        let deleted = match KeyRef::of(&key) {
            Ok(r) => actions::delete(client, &r).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => waiting.push(key),
            Err(e) => outcomes.push((name_of(&key), Outcome::Refused(api_message(&e)))),
        }
    }
    let bar = progress(waiting.len(), "gone");
    let deadline = Instant::now() + args.bulk.timeout;
    let keys: Vec<&ApiKey> = waiting.iter().collect();
    let states = wait_for(&keys, deadline, &bar, |key| async move {
        Ok(actions::is_gone(client, key).await?.then_some(()))
    })
    .await;
    bar.finish_and_clear();
    for (key, wait) in waiting.iter().zip(states) {
        let outcome = match wait {
            Wait::Done(()) => Outcome::Deleted,
            Wait::Open(error) => {
                Outcome::TimedOut(format!("deleted, but still there{}", last_error(error)))
            }
            Wait::Unverifiable(error) => Outcome::Unverified(format!(
                "deleted, but whether its Secret is gone cannot be read: {error}"
            )),
        };
        outcomes.push((name_of(key), outcome));
    }
    Ok(report(outcomes))
}

/// The token request's media type (RFC 6749 §4.4.2, Appendix B).
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Gets an access token through the API server's service proxy with `client_secret_post` (the
/// API server drops the `Authorization` header of proxied requests, so `client_secret_basic`
/// cannot pass it), and prints the token's type, lifetime (seconds), header and claims as one
/// JSON object. The signature is not checked here: verifiers check it against the JWKS.
async fn token(client: &Client, namespace: &str, args: TokenArgs) -> Result<bool> {
    let (server_ns, service) = &args.token_server;
    let key = Api::<ApiKey>::namespaced(client.clone(), namespace)
        .get(&args.name)
        .await
        .map_err(|e| refused(e.into()))?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&key.secret_name())
        .await
        .map_err(|e| refused(e.into()))?
        .ok_or_else(|| {
            Error::Config(format!(
                "ApiKey {} has no Secret {} yet: is it Ready? (kubectl apikey list)",
                args.name,
                key.secret_name()
            ))
        })?;
    if !controlled_by(&secret.metadata, &key) {
        return Err(Error::Config(format!(
            "Secret {} is not ApiKey {}'s (no controller reference to it): not sending its contents",
            key.secret_name(),
            args.name
        )));
    }
    let field = |name: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| Error::Config(format!("Secret {} has no {name}", key.secret_name())))
    };
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    form.append_pair("client_id", &field(CLIENT_ID_KEY)?);
    form.append_pair("client_secret", &field(CLIENT_SECRET_KEY)?);
    if let Some(scope) = &args.scope {
        form.append_pair("scope", scope);
    }
    let path =
        format!("/api/v1/namespaces/{server_ns}/services/https:{service}/proxy/oauth2/token");
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
        .header(http::header::ACCEPT, "application/json")
        .body(form.finish().into_bytes())
        .map_err(|e| Error::Config(format!("cannot build the token request: {e}")))?;
    let response: serde_json::Value = client.request(request).await.map_err(|e| {
        let message = api_message(&Error::Kube(e));
        let hint = if message.contains("no endpoints available") || message.contains("not found") {
            " (is the token server installed and running? README: Install on a cluster, deploy/token-server)"
        } else {
            ""
        };
        Error::Config(format!(
            "the token server ({server_ns}/{service}) refused or could not be reached: {message}{hint}"
        ))
    })?;
    let access_token = response["access_token"]
        .as_str()
        .ok_or_else(|| Error::Config("the token server's answer has no access_token".into()))?;
    let part = |i: usize| -> Result<serde_json::Value> {
        let encoded = access_token
            .split('.')
            .nth(i)
            .ok_or_else(|| Error::Config("the access token is not a JWT".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| Error::Config("the access token is not a JWT".into()))?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    // The token is a bearer credential too: only what it says is printed, not the token.
    let decoded = serde_json::json!({
        "token_type": response["token_type"],
        "expires_in": response["expires_in"],
        "scope": response["scope"],
        "header": part(0)?,
        "claims": part(1)?,
    });
    println!("{}", serde_json::to_string_pretty(&decoded)?);
    Ok(true)
}

async fn console(client: Client, namespace: String, args: ConsoleArgs) -> Result<bool> {
    let options = crate::admin::console::Options {
        namespace: (!args.all_namespaces).then_some(namespace),
        port: args.port,
    };
    crate::admin::console::serve(client, options).await?;
    Ok(true)
}

/// The keys of `selection`, or `None` (after saying so) when there are none.
async fn chosen(
    client: &Client,
    namespace: &str,
    selection: &Selection,
    bulk: &Bulk,
) -> Result<Option<Vec<ApiKey>>> {
    if bulk.all_namespaces && matches!(selection, Selection::Names(_)) {
        return Err(Error::Config(
            "-A goes with -l or --all: keys named one by one are in one namespace (-n)".into(),
        ));
    }
    let scope = (!bulk.all_namespaces).then_some(namespace);
    let keys = actions::select(client, scope, selection)
        .await
        .map_err(refused)?;
    if keys.is_empty() {
        eprintln!("No ApiKeys match: nothing to do.");
        return Ok(None);
    }
    Ok(Some(keys))
}

/// Asks `question` on the terminal unless `--yes`; refuses without a terminal to ask on.
fn confirm(bulk: &Bulk, question: &str) -> Result<()> {
    if bulk.yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Config(
            "refusing to ask for confirmation without a terminal: nothing was changed; pass --yes to go on without asking"
                .into(),
        ));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Config("not confirmed: nothing was changed".into())),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(len: usize, done: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {{pos}}/{{len}} {done} {{wide_bar}} {{msg}} {{elapsed}}"
    )) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints the summary; whether every key succeeded.
fn report(outcomes: Vec<((String, String), Outcome)>) -> bool {
    let ok = outcomes.iter().filter(|(_, o)| o.succeeded()).count();
    let total = outcomes.len();
    let rows: Vec<(String, String, Outcome)> = outcomes
        .into_iter()
        .map(|((ns, name), o)| (ns, name, o))
        .collect();
    print!("{}", output::summary(&rows));
    println!("{ok} of {total} done.");
    ok == total
}

/// ` (last error: ...)` after a wait that ended with a transient error, else nothing.
fn last_error(error: Option<String>) -> String {
    error
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

/// `1 ApiKey`, `3 ApiKeys`.
fn count(n: usize) -> String {
    if n == 1 {
        "1 ApiKey".to_owned()
    } else {
        format!("{n} ApiKeys")
    }
}

/// `This ApiKey will`, `These 3 ApiKeys will`: the subject of what a command is about to do.
fn these(n: usize) -> String {
    if n == 1 {
        "This ApiKey will".to_owned()
    } else {
        format!("These {n} ApiKeys will")
    }
}

fn name_of(key: &ApiKey) -> (String, String) {
    (
        key.metadata.namespace.clone().unwrap_or_default(),
        key.metadata.name.clone().unwrap_or_default(),
    )
}

/// An error as the user should read it: the API server's own message for a refused call.
fn refused(e: Error) -> Error {
    match e {
        Error::Kube(_) => Error::Config(api_message(&e)),
        other => other,
    }
}
