//! ApiKeys as the end-to-end tests drive them: manifests, waits on their conditions and Secrets,
//! and checks of what the operator published.

use std::time::Duration;

use apikey_operator::core::credentials::{ClientSecret, is_well_formed_client_id};
use apikey_operator::core::hashing;

use super::{Operator, TempNamespace, b64decode, eventually, install_crd};

/// An ApiKey manifest (ending in `---`) with `labels` (flow-style pairs), an optional regenerate
/// annotation and an optional `spec.secretName`.
pub fn key_yaml(
    name: &str,
    user: &str,
    labels: &str,
    regenerate: Option<&str>,
    secret_name: Option<&str>,
) -> String {
    let annotations = regenerate
        .map(|v| format!("\n  annotations: {{apikey.dev/regenerate: \"{v}\"}}"))
        .unwrap_or_default();
    let secret = secret_name
        .map(|s| format!("\n  secretName: {s}"))
        .unwrap_or_default();
    format!(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: {name}\n  labels: {{{labels}}}{annotations}\nspec:\n  user: {user}{secret}\n---\n"
    )
}

/// (client_id, client_secret) from the Secret.
pub fn credentials(ns: &TempNamespace, secret: &str) -> (String, String) {
    let id = b64decode(&ns.jsonpath(&format!("secret/{secret}"), "{.data.client_id}"));
    let s = b64decode(&ns.jsonpath(&format!("secret/{secret}"), "{.data.client_secret}"));
    (id, s)
}

pub fn wait_ready(ns: &TempNamespace, keys: &[&str]) {
    let mut args = vec!["wait", "--for=condition=Ready", "--timeout=90s"];
    let refs: Vec<String> = keys.iter().map(|k| format!("apikey/{k}")).collect();
    args.extend(refs.iter().map(String::as_str));
    ns.ok(&args);
}

pub fn wait_reason(ns: &TempNamespace, key: &str, reason: &str) {
    ns.ok(&[
        "wait",
        &format!("--for=jsonpath={{.status.conditions[?(@.type==\"Ready\")].reason}}={reason}"),
        "--timeout=60s",
        &format!("apikey/{key}"),
    ]);
}

/// Asks for a new client secret of ApiKey `key`: sets its regenerate annotation to `value`.
pub fn regenerate(ns: &TempNamespace, key: &str, value: &str) {
    ns.ok(&[
        "annotate",
        "apikey",
        key,
        &format!("apikey.dev/regenerate={value}"),
        "--overwrite",
    ]);
}

/// Waits (by watch) until the Secret answers regenerate request `value`.
pub fn wait_handled(ns: &TempNamespace, secret: &str, value: &str) {
    ns.ok(&[
        "wait",
        &format!(
            "--for=jsonpath={{.metadata.annotations.apikey\\.dev/handled-regenerate}}={value}"
        ),
        "--timeout=90s",
        &format!("secret/{secret}"),
    ]);
}

/// Waits until the ApiKey's status describes what its Secret holds (same client id, a hash that
/// verifies the client secret), then checks formats and that no plaintext is in the ApiKey.
/// Returns (client_id, client_secret).
pub fn assert_consistent(ns: &TempNamespace, key: &str, secret: &str) -> (String, String) {
    let (id, value, hash) = eventually(
        &format!("the status of {key} to describe Secret {secret}"),
        Duration::from_secs(60),
        || {
            let (id, value) = credentials(ns, secret);
            let status_id = ns.jsonpath(&format!("apikey/{key}"), "{.status.clientId}");
            let hash = ns.jsonpath(&format!("apikey/{key}"), "{.status.secretHash}");
            (status_id == id && hashing::verify(&value, &hash)).then_some((id, value, hash))
        },
    );
    assert!(is_well_formed_client_id(&id), "client id {id}");
    assert!(
        ClientSecret::new(value.clone()).is_well_formed(),
        "client secret format"
    );
    assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
    let object = ns.ok(&["get", "apikey", key, "-o", "json"]);
    assert!(
        !object.contains(&value),
        "the plaintext must not be in the ApiKey"
    );
    (id, value)
}

/// How many Event objects with `reason` are about ApiKey `key` (a series counts once).
pub fn events(ns: &TempNamespace, key: &str, reason: &str) -> usize {
    ns.ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name}/{.reason}{\"\\n\"}{end}",
    ])
    .lines()
    .filter(|l| *l == format!("ApiKey/{key}/{reason}"))
    .count()
}

/// Waits (by watch) until every ApiKey in the namespace is Ready.
pub fn wait_all_ready(ns: &TempNamespace, timeout_seconds: u32) {
    ns.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikeys",
        "--all",
        &format!("--timeout={timeout_seconds}s"),
    ]);
}

/// A fresh namespace `e2e-<prefix>-...` with an operator of its own and one Ready ApiKey `k` for
/// `user`, checked consistent; returns them with k's (client id, client secret).
pub fn namespace_with_one_key(
    prefix: &str,
    user: &str,
) -> (TempNamespace, Operator, (String, String)) {
    install_crd();
    let ns = TempNamespace::new(prefix);
    let op = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", user, "", None, None));
    wait_ready(&ns, &["k"]);
    let credentials = assert_consistent(&ns, "k", "k");
    (ns, op, credentials)
}
