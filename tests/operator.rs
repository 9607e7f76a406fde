//! End-to-end: the operator driven as users drive it, with kubectl, against the local control
//! plane. Each test has its own namespace and its own operator process watching only it.

mod common;

use std::process::Command;
use std::time::Duration;

use apikey_operator::core::hashing;
use common::*;

#[test]
fn create_regenerate_by_selector_restart_and_reapply() {
    install_crd();
    let ns = TempNamespace::new("life");
    let mut op = Operator::start(&ns.name);
    // `b` is created with a regenerate annotation already present: that is not a second generation.
    let manifest = [
        key_yaml("a", "alice", "team: x", None, None),
        key_yaml("b", "bob", "team: x", Some("initial"), None),
        key_yaml("c", "carol", "team: web", None, Some("carol-creds")),
    ]
    .concat();
    ns.apply(&manifest);
    wait_ready(&ns, &["a", "b", "c"]);

    let table = ns.ok(&["get", "apikeys"]);
    for column in [
        "USER",
        "CLIENT ID",
        "SECRET",
        "READY",
        "LAST ROTATED",
        "AGE",
    ] {
        assert!(table.contains(column), "missing column {column}: {table}");
    }
    assert!(table.contains("carol-creds"));

    let (a_id, a0) = assert_consistent(&ns, "a", "a");
    let (b_id, b0) = assert_consistent(&ns, "b", "b");
    let c = credentials(&ns, "carol-creds");
    assert_eq!(
        ns.jsonpath(
            "secret/a",
            "{.metadata.labels.app\\.kubernetes\\.io/managed-by}"
        ),
        "apikey-operator"
    );
    assert_eq!(
        ns.jsonpath("secret/a", "{.metadata.ownerReferences[0].kind}"),
        "ApiKey"
    );
    assert_eq!(
        ns.jsonpath("secret/a", "{.metadata.ownerReferences[0].controller}"),
        "true"
    );
    assert_eq!(events(&ns, "b", "Created"), 1);
    assert_eq!(
        events(&ns, "b", "Regenerated"),
        0,
        "an annotation present at creation is not a regeneration"
    );

    // Rotate only team=x, as a user would.
    ns.ok(&[
        "annotate",
        "apikeys",
        "-l",
        "team=x",
        "apikey.dev/regenerate=r1",
        "--overwrite",
    ]);
    wait_handled(&ns, "a", "r1");
    wait_handled(&ns, "b", "r1");
    wait_ready(&ns, &["a", "b"]);
    let (a_id1, a1) = assert_consistent(&ns, "a", "a");
    let (b_id1, b1) = assert_consistent(&ns, "b", "b");
    assert_eq!(
        (a_id1.as_str(), b_id1.as_str()),
        (a_id.as_str(), b_id.as_str()),
        "client ids stay"
    );
    assert!(a1 != a0, "(the values are secrets: not shown)");
    assert!(b1 != b0, "(the values are secrets: not shown)");
    assert!(
        credentials(&ns, "carol-creds") == c,
        "an unselected key does not rotate"
    );
    assert_eq!(events(&ns, "a", "Regenerated"), 1);

    // Restart: every key is looked at again and nothing rotates.
    let mark = op.mark();
    op.restart();
    for k in ["a", "b", "c"] {
        let rv = ns.jsonpath(&format!("apikey/{k}"), "{.metadata.resourceVersion}");
        assert_eq!(
            op.wait_reconciled(mark, k, &rv),
            "in_sync",
            "{k} after restart"
        );
    }
    assert!(
        (credentials(&ns, "a").1, credentials(&ns, "b").1) == (a1.clone(), b1.clone()),
        "(the values are secrets: not shown)"
    );
    assert!(
        credentials(&ns, "carol-creds") == c,
        "(the values are secrets: not shown)"
    );

    // A GitOps re-apply of the same manifest (here with one more label, so the object changes and
    // the operator must look at it) rotates nothing either.
    let mark = op.mark();
    ns.apply(&manifest.replace("team: x", "team: x, synced: done"));
    // Only `a` is waited for at the version read here: `b`'s re-apply changes its annotation, so
    // its reconcile at that version is the rotation below, and the rotation moves its version.
    let rv = ns.jsonpath("apikey/a", "{.metadata.resourceVersion}");
    assert_eq!(
        op.wait_reconciled(mark, "a", &rv),
        "in_sync",
        "a after re-apply"
    );
    assert!(
        credentials(&ns, "a").1 == a1,
        "(the values are secrets: not shown)"
    );
    // b's manifest says regenerate=initial while the annotate above set r1: the re-apply puts the
    // manifest's value back, which is a change of the annotation, so b rotates exactly once more.
    wait_handled(&ns, "b", "initial");
    let (_, b2) = assert_consistent(&ns, "b", "b");
    assert!(b2 != b1, "(the values are secrets: not shown)");
    assert_eq!(
        events(&ns, "b", "Regenerated"),
        2,
        "r1, then initial: two regenerations"
    );
    assert_eq!(events(&ns, "a", "Regenerated"), 1, "a rotated once in all");

    let describe = ns.ok(&["describe", "apikey", "a"]);
    for needle in ["Created", "Regenerated", "apikey-operator"] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}: {describe}"
        );
    }
    op.assert_log_free_of(&[a0, a1, b0, b1, b2, c.1]);
}

#[test]
fn duplicate_user_waits_and_takes_over() {
    install_crd();
    let ns = TempNamespace::new("dup");
    let op = Operator::start(&ns.name);
    ns.apply(&key_yaml("first", "dana", "", None, None));
    wait_ready(&ns, &["first"]);
    ns.apply(&key_yaml("second", "dana", "", None, None));
    wait_reason(&ns, "second", "DuplicateUser");
    let message = ns.jsonpath("apikey/second", "{.status.conditions[0].message}");
    assert!(message.contains("ApiKey first"), "{message}");
    assert_eq!(
        ns.jsonpath("apikey/second", "{.status.conditions[0].status}"),
        "False"
    );
    assert!(
        ns.ok(&["get", "secrets", "-o", "name"])
            .lines()
            .all(|l| l != "secret/second")
    );
    assert_eq!(events(&ns, "second", "DuplicateUser"), 1);

    ns.ok(&["delete", "apikey", "first"]);
    wait_ready(&ns, &["second"]);
    let (_, s) = assert_consistent(&ns, "second", "second");
    op.assert_log_free_of(&[s]);
}

#[test]
fn foreign_secret_is_never_touched() {
    install_crd();
    let ns = TempNamespace::new("foreign");
    let op = Operator::start(&ns.name);
    ns.ok(&[
        "create",
        "secret",
        "generic",
        "taken",
        "--from-literal=client_secret=theirs",
    ]);
    let before = ns.ok(&["get", "secret", "taken", "-o", "json"]);
    ns.apply(&key_yaml("k", "erin", "", Some("x1"), Some("taken")));
    wait_reason(&ns, "k", "SecretConflict");
    assert_eq!(events(&ns, "k", "SecretConflict"), 1);
    assert_eq!(ns.jsonpath("apikey/k", "{.status.secretHash}"), "");
    // a regeneration request changes nothing for a key whose Secret name is taken
    ns.ok(&[
        "annotate",
        "apikey",
        "k",
        "apikey.dev/regenerate=x2",
        "--overwrite",
    ]);
    let rv = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    assert_eq!(op.wait_reconciled(0, "k", &rv), "conflict");
    assert_eq!(
        ns.ok(&["get", "secret", "taken", "-o", "json"]),
        before,
        "byte for byte"
    );

    // once the name is free, the key gets its Secret
    ns.ok(&["delete", "secret", "taken"]);
    wait_ready(&ns, &["k"]);
    let (_, s) = assert_consistent(&ns, "k", "taken");
    op.assert_log_free_of(&[s]);
}

#[test]
fn api_server_rejects_invalid_keys_and_changes() {
    install_crd();
    let ns = TempNamespace::new("cel");
    let no_user =
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: nouser}\nspec: {}\n";
    let err = ns.fails(&["apply", "-f", "-"], Some(no_user));
    assert!(err.contains("spec.user: Required value"), "{err}");
    let err = ns.fails(
        &["apply", "-f", "-"],
        Some(&key_yaml("empty", "\"\"", "", None, None)),
    );
    assert!(err.contains("spec.user"), "{err}");
    let err = ns.fails(
        &["apply", "-f", "-"],
        Some(&key_yaml("badname", "u", "", None, Some("Not_A_Name"))),
    );
    assert!(err.contains("spec.secretName"), "{err}");

    ns.apply(&key_yaml("k", "frank", "", None, None));
    let err = ns.fails(
        &["apply", "-f", "-"],
        Some(&key_yaml("k", "grace", "", None, None)),
    );
    assert!(err.contains("spec.user is immutable"), "{err}");
    let err = ns.fails(
        &["apply", "-f", "-"],
        Some(&key_yaml("k", "frank", "", None, Some("elsewhere"))),
    );
    assert!(err.contains("spec.secretName is immutable"), "{err}");
    assert_eq!(ns.jsonpath("apikey/k", "{.spec.user}"), "frank");
}

#[test]
fn delete_by_selector_removes_exactly_those_secrets() {
    install_crd();
    let ns = TempNamespace::new("del");
    let op = Operator::start(&ns.name);
    ns.apply(
        &[
            key_yaml("p1", "u1", "team: payments", None, None),
            key_yaml("p2", "u2", "team: payments", None, None),
            key_yaml("o1", "u3", "team: other", None, None),
        ]
        .concat(),
    );
    wait_ready(&ns, &["p1", "p2", "o1"]);
    let kept = credentials(&ns, "o1");
    ns.ok(&["delete", "apikeys", "-l", "team=payments"]);
    ns.ok(&[
        "wait",
        "--for=delete",
        "secret/p1",
        "secret/p2",
        "--timeout=90s",
    ]);
    assert!(
        credentials(&ns, "o1") == kept,
        "(the values are secrets: not shown)"
    );
    assert_eq!(
        ns.ok(&["get", "apikeys", "-o", "name"]).trim(),
        "apikey.apikey.dev/o1"
    );
    op.assert_log_free_of(&[kept.1]);
}

#[test]
fn deleted_or_altered_secret_is_repaired_with_the_same_client_id() {
    install_crd();
    let ns = TempNamespace::new("repair");
    let op = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", "heidi", "", None, None));
    wait_ready(&ns, &["k"]);
    let (id, s0) = assert_consistent(&ns, "k", "k");

    ns.ok(&["delete", "secret", "k"]);
    ns.ok(&["wait", "--for=create", "secret/k", "--timeout=60s"]);
    let s1 = eventually(
        "a repaired, consistent key",
        Duration::from_secs(60),
        || {
            let hash = ns.jsonpath("apikey/k", "{.status.secretHash}");
            let (i, s) = credentials(&ns, "k");
            (hashing::verify(&s, &hash) && i == id).then_some(s)
        },
    );
    assert!(s1 != s0, "(the values are secrets: not shown)");
    assert_eq!(events(&ns, "k", "Repaired"), 1);

    ns.ok(&[
        "patch",
        "secret",
        "k",
        "-p",
        r#"{"stringData":{"client_secret":"typed-by-hand"}}"#,
    ]);
    let s2 = eventually("the hand edit repaired", Duration::from_secs(60), || {
        let (_, s) = credentials(&ns, "k");
        (s != "typed-by-hand").then_some(s)
    });
    wait_ready(&ns, &["k"]);
    let (id2, s2b) = eventually("status caught up", Duration::from_secs(60), || {
        let hash = ns.jsonpath("apikey/k", "{.status.secretHash}");
        hashing::verify(&s2, &hash).then(|| credentials(&ns, "k"))
    });
    assert_eq!(id2, id, "the client id survives repairs");
    assert!(s2b == s2, "(the values are secrets: not shown)");
    assert!(s2 != s1, "(the values are secrets: not shown)");
    let describe = ns.ok(&["describe", "apikey", "k"]);
    assert!(
        describe.contains("was deleted") && describe.contains("altered by someone else"),
        "{describe}"
    );
    op.assert_log_free_of(&[s0, s1, s2]);
}

#[test]
fn metrics_move_with_the_work() {
    install_crd();
    let ns = TempNamespace::new("metrics");
    let op = Operator::start(&ns.name);
    ns.apply(&key_yaml("m", "mallory", "", None, None));
    wait_ready(&ns, &["m"]);
    let scrape = op.metrics();
    for name in [
        "apikey_reconciles_total",
        "apikey_reconcile_duration_seconds",
        "apikey_keys_issued_total",
        "apikey_managed_keys",
        "apikey_leader",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric.starts_with(name)),
            "{name} missing"
        );
    }
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "created"),
        1.0
    );
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "regenerated"),
        0.0
    );
    assert_eq!(op.metric("apikey_managed_keys", "ready", "true"), 1.0);
    let before = op.metric("apikey_reconciles_total", "outcome", "regenerated");
    ns.ok(&["annotate", "apikey", "m", "apikey.dev/regenerate=1"]);
    wait_handled(&ns, "m", "1");
    let (_, s) = assert_consistent(&ns, "m", "m");
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "regenerated"),
        1.0
    );
    assert_eq!(
        op.metric("apikey_reconciles_total", "outcome", "regenerated"),
        before + 1.0
    );
    let text = op.http_get("/metrics").1;
    assert!(!text.contains(&s), "no secret in metrics");
    op.assert_log_free_of(&[s]);
}

#[test]
fn the_operator_runs_with_the_service_accounts_token_when_asked() {
    install_crd();
    let ns = TempNamespace::new("whoami");
    let op = Operator::start(&ns.name);
    let mut cmd = Command::new(kubectl_bin());
    cmd.env("KUBECONFIG", op.kubeconfig());
    let out = run_as(
        cmd,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = String::from_utf8_lossy(&out.stdout).into_owned();
    if std::env::var("APIKEY_E2E_AS_SERVICE_ACCOUNT").as_deref() == Ok("1") {
        assert_eq!(
            user, "system:serviceaccount:apikey-system:apikey-operator",
            "scripts/test's second pass runs the operator as deploy/'s ServiceAccount"
        );
    } else {
        assert_eq!(op.kubeconfig(), kubeconfig(), "otherwise as admin");
    }
}
