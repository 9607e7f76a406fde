//! `kubectl apikey` end to end: the plugin binary found on PATH by kubectl's plugin mechanism (the
//! kubectl built with the local control plane runs `kubectl apikey ...`), against the real API
//! server and the operator, in a namespace of its own per test.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// `kubectl apikey ARGS -n NS` with the plugin's directory first on PATH; stdin is empty (not a
/// terminal) unless `stdin` is given.
fn plugin(ns: &str, kubeconfig: &Path, args: &[&str]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-apikey"));
    let dir = bin.parent().expect("the plugin's directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("apikey")
        .args(args)
        .args(["-n", ns])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null());
    cmd.output().expect("kubectl runs")
}

/// JSONPath of an ApiKey's regenerate annotation.
const REGENERATE: &str = "{.metadata.annotations.apikey\\.dev/regenerate}";

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl apikey ARGS`, asserting success; its stdout.
fn plugin_ok(ns: &TempNamespace, args: &[&str]) -> String {
    let out = plugin(&ns.name, &kubeconfig(), args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "kubectl apikey {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// The Secret's generation annotation (the operator counts client secrets there).
fn generation(ns: &TempNamespace, secret: &str) -> u64 {
    ns.jsonpath(
        &format!("secret/{secret}"),
        "{.metadata.annotations.apikey\\.dev/generation}",
    )
    .parse()
    .expect("a generation")
}

/// Asserts that the ApiKey `name` is still there and carries no regenerate request: what a
/// refused `delete` or `regenerate` must leave.
fn assert_untouched(ns: &TempNamespace, name: &str) {
    let key = format!("apikey/{name}");
    assert!(exists(ns, &key), "{key} not deleted");
    assert_eq!(
        ns.jsonpath(&key, REGENERATE),
        "",
        "no regenerate request on {key}"
    );
}

fn exists(ns: &TempNamespace, what: &str) -> bool {
    let out = run(
        &[
            "-n",
            &ns.name,
            "get",
            what,
            "--ignore-not-found",
            "-o",
            "name",
        ],
        None,
    );
    assert!(out.status.success(), "kubectl get {what}");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[test]
fn create_list_regenerate_by_selector_and_delete_by_selector() {
    install_crd();
    let ns = TempNamespace::new("plugin");
    let _operator = Operator::start(&ns.name);

    plugin_ok(
        &ns,
        &[
            "create",
            "pay-a",
            "--user",
            "alice",
            "--label",
            "team=payments",
        ],
    );
    plugin_ok(
        &ns,
        &[
            "create",
            "pay-b",
            "--user",
            "bob",
            "-l",
            "team=payments",
            "--secret-name",
            "bob-creds",
        ],
    );
    let created = plugin_ok(
        &ns,
        &["create", "ops-c", "--user", "carol", "-l", "team=ops"],
    );
    assert!(
        created.contains("apikey.apikey.dev/ops-c created"),
        "{created}"
    );
    wait_ready(&ns, &["pay-a", "pay-b", "ops-c"]);
    assert_eq!(
        ns.jsonpath("apikey/pay-b", "{.spec.secretName}"),
        "bob-creds"
    );
    assert_eq!(
        ns.jsonpath("apikey/pay-b", "{.metadata.labels.team}"),
        "payments"
    );

    // list: a row per key with its user, client id and Ready; -l filters; -o json is a List
    let table = plugin_ok(&ns, &["list"]);
    let header = table.lines().next().expect("a header");
    for column in [
        "NAME",
        "USER",
        "CLIENT ID",
        "READY",
        "REASON",
        "LAST ROTATED",
        "NEXT ROTATION",
        "AGE",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    for (key, user) in [("pay-a", "alice"), ("pay-b", "bob"), ("ops-c", "carol")] {
        let client_id = ns.jsonpath(&format!("apikey/{key}"), "{.status.clientId}");
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} in {table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..5],
            &[key, user, client_id.as_str(), "True", "KeyReady"],
            "{row}"
        );
    }
    let listed: serde_json::Value = serde_json::from_str(&plugin_ok(
        &ns,
        &["list", "-l", "team=payments", "-o", "json"],
    ))
    .expect("JSON");
    assert_eq!(listed["kind"], "List");
    let mut names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["pay-a", "pay-b"]);
    let yaml = plugin_ok(&ns, &["list", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: ops-c"),
        "{yaml}"
    );

    // regenerate by selector with --yes: each selected key rotated exactly once, the other not
    let before: Vec<(String, u64, String)> = [
        ("pay-a", "pay-a"),
        ("pay-b", "bob-creds"),
        ("ops-c", "ops-c"),
    ]
    .iter()
    .map(|(_, secret)| {
        (
            secret.to_string(),
            generation(&ns, secret),
            credentials(&ns, secret).1,
        )
    })
    .collect();
    let out = plugin(
        &ns.name,
        &kubeconfig(),
        &[
            "regenerate",
            "-l",
            "team=payments",
            "--yes",
            "--timeout",
            "90",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "regenerate failed: {stderr}\n{stdout}"
    );
    assert!(
        stdout.contains("These 2 ApiKeys will get a new client secret"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" rotated ")).count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("2 of 2 done."), "{stdout}");
    for (secret, generation_before, secret_before) in &before {
        let rotated = secret != "ops-c";
        let expected = generation_before + u64::from(rotated);
        assert_eq!(generation(&ns, secret), expected, "generation of {secret}");
        let now = credentials(&ns, secret).1;
        assert!(
            (now != *secret_before) == rotated,
            "{secret}: the client secret changed = {rotated}"
        );
        assert!(
            !stdout.contains(secret_before.as_str()) && !stdout.contains(now.as_str()),
            "no secret in the output"
        );
        assert!(
            !stderr.contains(secret_before.as_str()) && !stderr.contains(now.as_str()),
            "no secret in the output"
        );
    }
    let value_a = ns.jsonpath("apikey/pay-a", REGENERATE);
    let value_b = ns.jsonpath("apikey/pay-b", REGENERATE);
    assert!(
        !value_a.is_empty() && value_a == value_b,
        "one value for all: {value_a:?} {value_b:?}"
    );
    assert!(
        stdout.contains(&format!("apikey.dev/regenerate={value_a}")),
        "{stdout}"
    );
    assert_eq!(
        ns.jsonpath("apikey/ops-c", REGENERATE),
        "",
        "ops-c untouched"
    );
    // it waited: the Secrets already answer the value when the command returns
    assert_eq!(
        ns.jsonpath(
            "secret/bob-creds",
            "{.metadata.annotations.apikey\\.dev/handled-regenerate}"
        ),
        value_a
    );

    // delete by selector with --yes: the keys and their Secrets are gone when it returns
    let out = plugin(
        &ns.name,
        &kubeconfig(),
        &["delete", "-l", "team=payments", "--yes"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "delete failed: {stderr}\n{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" deleted ")).count(),
        2,
        "{stdout}"
    );
    for gone in [
        "apikey/pay-a",
        "apikey/pay-b",
        "secret/pay-a",
        "secret/bob-creds",
    ] {
        assert!(!exists(&ns, gone), "{gone} is gone");
    }
    assert!(
        exists(&ns, "apikey/ops-c") && exists(&ns, "secret/ops-c"),
        "ops-c stays"
    );
}

#[test]
fn without_a_terminal_the_confirmation_refuses_and_nothing_changes() {
    install_crd();
    let ns = TempNamespace::new("plugin-tty");
    let _operator = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", "alice", "team: x", None, None));
    wait_ready(&ns, &["k"]);
    let generation_before = generation(&ns, "k");

    for args in [
        &["regenerate", "-l", "team=x"][..],
        &["delete", "k"][..],
        &["regenerate", "--all"][..],
    ] {
        let out = plugin(&ns.name, &kubeconfig(), args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("refusing to ask for confirmation without a terminal"),
            "{stderr}"
        );
        assert!(stderr.contains("--yes"), "{stderr}");
        assert!(
            stdout.contains("k ") && stdout.contains("alice"),
            "shows the keys first: {stdout}"
        );
    }
    assert_untouched(&ns, "k");
    assert_eq!(generation(&ns, "k"), generation_before);
}

#[test]
fn on_a_terminal_only_yes_goes_on() {
    install_crd();
    let ns = TempNamespace::new("plugin-ask");
    let _operator = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", "alice", "team: x", None, None));
    wait_ready(&ns, &["k"]);
    let before = generation(&ns, "k");
    // script(1) gives the plugin a terminal and types the answer into it.
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-apikey"));
    let ask = |answer: &str| {
        let command = format!(
            "{} regenerate k -n {} --kubeconfig {}",
            bin.display(),
            ns.name,
            kubeconfig().display()
        );
        run_as(
            Command::new("script"),
            &["-qec", &command, "/dev/null"],
            Some(&format!("{answer}\n")),
        )
    };
    let out = ask("n");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && all.contains("[y/N]") && all.contains("not confirmed"),
        "{all}"
    );
    assert_eq!(ns.jsonpath("apikey/k", REGENERATE), "");
    let out = ask("y");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && all.contains("1 of 1 done."),
        "{all}"
    );
    assert_eq!(generation(&ns, "k"), before + 1);
}

#[test]
fn a_caller_whose_rbac_forbids_deletes_gets_the_api_servers_message() {
    install_crd();
    let ns = TempNamespace::new("plugin-rbac");
    let _operator = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", "alice", "team: x", None, None));
    wait_ready(&ns, &["k"]);
    ns.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: auditor}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: apikey-editor}\n\
         rules:\n- {apiGroups: [apikey.dev], resources: [apikeys], verbs: [get, list, watch, create, patch]}\n\
         - {apiGroups: [''], resources: [secrets], verbs: [get]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: auditor}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: apikey-editor}\n\
         subjects: [{kind: ServiceAccount, name: auditor}]\n",
    );
    let auditor = service_account_kubeconfig_for(&ns.name, "auditor");
    let out = plugin(&ns.name, &auditor, &["delete", "k", "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "apikeys.apikey.dev \"k\" is forbidden: User \"system:serviceaccount:{}:auditor\" cannot delete resource \"apikeys\" in API group \"apikey.dev\" in the namespace \"{}\"",
        ns.name, ns.name
    );
    assert!(stdout.contains(&expected), "the server's message: {stdout}");
    assert!(
        stdout.contains("refused") && stdout.contains("0 of 1 done."),
        "{stdout}"
    );
    assert!(exists(&ns, "apikey/k"), "still there");
    // and what it may do, it can: list as the auditor
    let out = plugin(&ns.name, &auditor, &["list"]);
    assert!(
        out.status.success() && text(&out).0.contains("alice"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn token_says_what_is_missing_without_showing_the_secret() {
    install_crd();
    let ns = TempNamespace::new("plugin-token");
    ns.apply(&key_yaml("early", "erin", "", None, None));
    // no operator yet: the key has no Secret
    let out = plugin(&ns.name, &kubeconfig(), &["token", "early"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no Secret early yet"), "{stderr}");

    let _operator = Operator::start(&ns.name);
    wait_ready(&ns, &["early"]);
    let (_, secret) = credentials(&ns, "early");
    let server = format!("{}/no-token-server:https", ns.name);
    let out = plugin(
        &ns.name,
        &kubeconfig(),
        &["token", "early", "--token-server", &server],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no endpoints available for service \"no-token-server\"")
            && stderr.contains("is the token server installed"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "no secret in the output"
    );
    let out = plugin(
        &ns.name,
        &kubeconfig(),
        &["token", "early", "--token-server", "bogus"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed --token-server is a usage error"
    );
}

#[test]
fn an_empty_selector_is_refused_rather_than_selecting_every_key() {
    install_crd();
    let ns = TempNamespace::new("plugin-empty");
    ns.apply(&key_yaml("k", "alice", "team: x", None, None));
    for args in [
        &["delete", "-l", "", "--yes"][..],
        &["regenerate", "-l", " ", "--yes"][..],
    ] {
        let out = plugin(&ns.name, &kubeconfig(), args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("an empty label selector would select every key"),
            "{stderr}"
        );
    }
    assert_untouched(&ns, "k");
}
