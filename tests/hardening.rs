//! End-to-end: the field reports of issue 12, each as a user met it, against the local control
//! plane. Whatever a user does to a managed Secret's metadata or data, afterwards the key is either
//! Ready with a Secret whose record the operator sealed and whose hash verifies its secret, or not
//! Ready with a reason.

mod common;

use std::time::Duration;

use apikey_operator::core::crd::ApiKey;
use apikey_operator::core::credentials::{self, is_well_formed_client_id};
use apikey_operator::core::hashing::{HashParams, Hasher};
use apikey_operator::core::record::RecordKey;
use apikey_operator::core::secret::{self, Credentials};
use common::*;
use k8s_openapi::api::core::v1::Secret;

/// An argon2id PHC string asking for 4 GiB of memory.
const HUGE_HASH: &str = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

/// Waits until Secret `name` holds a client secret other than `old`; returns its credentials.
fn wait_new_secret(ns: &TempNamespace, name: &str, old: &str) -> (String, String) {
    eventually(
        &format!("a new client secret in Secret {name}"),
        Duration::from_secs(60),
        || {
            let out = run(
                &[
                    "-n",
                    &ns.name,
                    "get",
                    "secret",
                    name,
                    "-o",
                    "jsonpath={.data.client_secret}",
                ],
                None,
            );
            (out.status.success() && !out.stdout.is_empty())
                .then(|| credentials(ns, name))
                .filter(|(_, s)| s != old)
        },
    )
}

#[test]
fn a_forged_record_is_repaired_and_never_published() {
    let (ns, op, (id, mut current)) = namespace_with_one_key("forge", "ivan");
    let mut seen = vec![current.clone()];
    let forgeries = [
        ("apikey.dev/secret-hash", HUGE_HASH),
        ("apikey.dev/rotated-at", "1999-01-01T00:00:00Z"),
        ("apikey.dev/handled-regenerate", "not-yet-asked"),
        ("apikey.dev/seal", "v1.AAAAAAAA.AAAA"),
    ];
    for (n, (annotation, value)) in forgeries.into_iter().enumerate() {
        ns.ok(&[
            "annotate",
            "secret",
            "k",
            &format!("{annotation}={value}"),
            "--overwrite",
        ]);
        let (repaired_id, _) = wait_new_secret(&ns, "k", &current);
        assert_eq!(repaired_id, id, "{annotation}: the client id stays");
        let (_, secret) = assert_consistent(&ns, "k", "k");
        assert_ne!(ns.jsonpath("apikey/k", "{.status.secretHash}"), HUGE_HASH);
        assert_ne!(
            ns.jsonpath("apikey/k", "{.status.lastRotatedAt}"),
            "1999-01-01T00:00:00Z"
        );
        assert_eq!(
            ns.jsonpath(
                "secret/k",
                "{.metadata.annotations.apikey\\.dev/rotation-reason}"
            ),
            "repaired_altered",
            "{annotation}"
        );
        eventually("the repair's event", Duration::from_secs(30), || {
            (events(&ns, "k", "Repaired") == n + 1).then_some(())
        });
        current = secret;
        seen.push(current.clone());
    }
    // the handled value forged above went with the repair: asking for it now rotates
    ns.ok(&[
        "annotate",
        "apikey",
        "k",
        "apikey.dev/regenerate=not-yet-asked",
        "--overwrite",
    ]);
    wait_handled(&ns, "k", "not-yet-asked");
    let (_, rotated) = assert_consistent(&ns, "k", "k");
    assert_ne!(rotated, current);
    seen.push(rotated);
    assert_eq!(events(&ns, "k", "Regenerated"), 1);
    op.assert_log_free_of(&seen);
}

#[test]
fn an_old_copy_of_the_secret_put_back_is_repaired_not_published() {
    let (ns, op, (id, s0)) = namespace_with_one_key("replay", "rita");
    // a copy saved (say, when it leaked), then the Secret deleted to get a new secret
    let saved: serde_json::Value =
        serde_json::from_str(&ns.ok(&["get", "secret", "k", "-o", "json"])).expect("json");
    ns.ok(&["delete", "secret", "k"]);
    let (_, s1) = wait_new_secret(&ns, "k", &s0);
    wait_ready(&ns, &["k"]);
    assert!(
        assert_consistent(&ns, "k", "k").1 == s1,
        "(the values are secrets: not shown)"
    );
    // the saved copy put back whole: its seal is genuine, only its generation is old
    let mut replay = saved.clone();
    let meta = replay["metadata"].as_object_mut().expect("metadata");
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(field);
    }
    ok_with(
        &["-n", &ns.name, "replace", "-f", "-"],
        Some(&replay.to_string()),
    );
    let (same_id, s2) = wait_new_secret(&ns, "k", &s0);
    let s2 = if s2 == s1 {
        wait_new_secret(&ns, "k", &s1).1
    } else {
        s2
    };
    assert_eq!(same_id, id);
    assert!(s2 != s0, "the old secret is never published again");
    assert!(s2 != s1, "(the values are secrets: not shown)");
    assert!(
        assert_consistent(&ns, "k", "k").1 == s2,
        "(the values are secrets: not shown)"
    );
    assert_eq!(
        ns.jsonpath("apikey/k", "{.status.secretGeneration}"),
        "3",
        "created, repaired after the deletion, repaired after the replay"
    );
    eventually("the repairs' events", Duration::from_secs(30), || {
        (events(&ns, "k", "Repaired") == 2).then_some(())
    });
    op.assert_log_free_of(&[s0, s1, s2]);
}

#[test]
fn a_forged_status_client_id_is_never_written_into_a_secret() {
    install_crd();
    let ns = TempNamespace::new("forgeid");
    let mut op = Operator::start(&ns.name);
    ns.apply(
        &[
            key_yaml("a", "alma", "", None, None),
            key_yaml("b", "bert", "", None, None),
        ]
        .concat(),
    );
    wait_ready(&ns, &["a", "b"]);
    let (a_id, a_secret) = assert_consistent(&ns, "a", "a");
    let (b_id, _) = assert_consistent(&ns, "b", "b");
    let a_seal = ns.jsonpath("apikey/a", "{.status.seal}");
    assert!(!a_seal.is_empty());

    // while the operator is down, b's status is given a's client id and a's seal of it, and b's
    // Secret is deleted
    op.kill();
    let forged = format!(r#"{{"status":{{"clientId":"{a_id}","seal":"{a_seal}"}}}}"#);
    ns.ok(&[
        "patch",
        "apikey",
        "b",
        "--subresource=status",
        "--type=merge",
        "-p",
        &forged,
    ]);
    ns.ok(&["delete", "secret", "b"]);
    op.restart();

    ns.ok(&["wait", "--for=create", "secret/b", "--timeout=60s"]);
    wait_ready(&ns, &["b"]);
    let (new_id, _) = assert_consistent(&ns, "b", "b");
    assert!(is_well_formed_client_id(&new_id));
    assert_ne!(new_id, a_id, "a key never takes another's client id");
    assert_ne!(
        new_id, b_id,
        "b's own id was only in the forged status and the deleted Secret"
    );
    assert!(credentials(&ns, "a") == (a_id, a_secret), "a is untouched");
    assert_eq!(events(&ns, "b", "Repaired"), 1);
}

#[test]
fn a_secret_that_leaves_the_watch_is_noticed_within_seconds() {
    let (ns, op, (id, s0)) = namespace_with_one_key("blind", "jane");
    let label_back = || {
        ns.ok(&[
            "wait",
            "--for=jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}=apikey-operator",
            "--timeout=20s",
            "secret/k",
        ])
    };

    // the label removed, or set to another value: put back, and nothing rotates
    ns.ok(&["label", "secret", "k", "app.kubernetes.io/managed-by-"]);
    label_back();
    ns.ok(&[
        "label",
        "secret",
        "k",
        "app.kubernetes.io/managed-by=someone-else",
        "--overwrite",
    ]);
    label_back();
    assert!(
        credentials(&ns, "k") == (id.clone(), s0.clone()),
        "(the values are secrets: not shown)"
    );
    assert_eq!(events(&ns, "k", "Repaired"), 0);

    // the label removed, then the Secret deleted at once: written again
    ns.ok(&["label", "secret", "k", "app.kubernetes.io/managed-by-"]);
    ns.ok(&["delete", "secret", "k"]);
    let (same_id, s1) = wait_new_secret(&ns, "k", &s0);
    assert_eq!(same_id, id);
    wait_ready(&ns, &["k"]);
    assert_consistent(&ns, "k", "k");
    label_back();

    // the owner reference removed: the Secret is no longer the key's; a conflict within seconds,
    // and the Secret is left as it is
    ns.ok(&[
        "patch",
        "secret",
        "k",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
    ]);
    let before = ns.jsonpath(
        "secret/k",
        "{.data}{.metadata.annotations}{.metadata.labels}",
    );
    ns.ok(&[
        "wait",
        "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=SecretConflict",
        "--timeout=20s",
        "apikey/k",
    ]);
    assert_eq!(
        ns.jsonpath("apikey/k", "{.status.conditions[0].status}"),
        "False"
    );
    assert_eq!(ns.jsonpath("apikey/k", "{.status.secretHash}"), "");
    assert_eq!(
        ns.jsonpath(
            "secret/k",
            "{.data}{.metadata.annotations}{.metadata.labels}"
        ),
        before,
        "a Secret that is not the key's is never written"
    );
    op.assert_log_free_of(&[s0, s1]);
}

#[test]
fn keys_deleted_together_with_their_secrets_get_nothing_written() {
    install_crd();
    let ns = TempNamespace::new("gone");
    let op = Operator::start(&ns.name);
    let keys: Vec<String> = (0..70)
        .map(|i| {
            key_yaml(
                &format!("k{i}"),
                &format!("user{i}"),
                "team: gone",
                None,
                None,
            )
        })
        .collect();
    ns.apply(&keys.concat());
    wait_all_ready(&ns, 300);
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "created"),
        70.0
    );
    let mark = op.mark();

    // a user cleaning up by selector: the keys and their Secrets at the same moment
    let name = ns.name.clone();
    let secrets = std::thread::spawn(move || {
        ok(&[
            "-n",
            &name,
            "delete",
            "secrets",
            "-l",
            "app.kubernetes.io/managed-by=apikey-operator",
            "--wait=false",
        ])
    });
    ns.ok(&["delete", "apikeys", "-l", "team=gone", "--wait=false"]);
    secrets.join().expect("kubectl delete secrets");
    ns.ok(&["wait", "--for=delete", "apikeys", "--all", "--timeout=60s"]);
    // once the operator's cache has let the keys go, no reconcile of theirs can start any more
    eventually(
        "the operator to forget the keys",
        Duration::from_secs(60),
        || (op.metric_total("apikey_managed_keys") == 0.0).then_some(()),
    );
    // whatever was written before a key went (a Secret deleted just before its key is repaired:
    // the key still existed) goes with its key
    eventually("every Secret gone", Duration::from_secs(120), || {
        ns.ok(&[
            "get",
            "secrets",
            "-l",
            "app.kubernetes.io/managed-by=apikey-operator",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
        .then_some(())
    });
    assert_eq!(
        op.metric_total("apikey_reconcile_failures_total"),
        0.0,
        "no reconcile failed for a key that is gone"
    );
    assert!(
        op.records_since(mark, "reconcile failed").is_empty(),
        "no retries for keys that are gone"
    );
    // every repair attempted checked its key first: a key found gone wrote nothing
    let repaired = op.metric("apikey_keys_issued_total", "reason", "repaired_deleted");
    let gone = op.metric("apikey_reconciles_total", "outcome", "gone");
    eprintln!(
        "repairs of keys deleted just after their Secret: {repaired}; writes skipped because the key was gone: {gone}"
    );
}

#[test]
fn a_namespace_being_deleted_costs_no_failed_writes_and_no_warnings() {
    install_crd();
    let ns = TempNamespace::new("nsdel");
    let op = Operator::start(&ns.name);
    let keys: Vec<String> = (0..10)
        .map(|i| key_yaml(&format!("k{i}"), &format!("user{i}"), "", None, None))
        .collect();
    ns.apply(&keys.concat());
    wait_all_ready(&ns, 120);
    let mark = op.mark();
    ok(&["delete", "namespace", &ns.name, "--timeout=120s"]);
    let warnings = op.warnings_since(mark);
    assert!(
        warnings.is_empty(),
        "warnings while the namespace went: {warnings:#?}"
    );
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "repaired_deleted"),
        0.0
    );
}

#[test]
fn users_with_control_or_invisible_characters_are_refused_and_users_compare_after_nfc() {
    install_crd();
    let ns = TempNamespace::new("users");
    let manifest = |name: &str, user: &str| {
        format!(
            "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\nspec: {{user: {}}}\n",
            serde_json::to_string(user).expect("json")
        )
    };
    for (i, user) in [
        "new\nline",
        "nul\u{0}char",
        "tab\tchar",
        "zero\u{200b}width",
        " leading",
        "trailing ",
        "bidi\u{202e}override",
    ]
    .into_iter()
    .enumerate()
    {
        let err = ns.fails(
            &["apply", "-f", "-"],
            Some(&manifest(&format!("bad{i}"), user)),
        );
        assert!(
            err.contains("spec.user must not contain control or invisible characters"),
            "{user:?}: {err}"
        );
    }
    // Kubernetes' own users are not for keys: a token acts for its key's user
    let err = ns.fails(
        &["apply", "-f", "-"],
        Some(&manifest("sys", "system:admin")),
    );
    assert!(err.contains("must not begin with 'system:'"), "{err}");
    let op = Operator::start(&ns.name);
    ns.apply(&manifest("composed", "jos\u{e9}"));
    wait_ready(&ns, &["composed"]);
    ns.apply(&manifest("decomposed", "jose\u{301}"));
    wait_reason(&ns, "decomposed", "DuplicateUser");
    ns.apply(
        &[
            manifest("upper", "Alice Smith"),
            "---\n".into(),
            manifest("lower", "alice smith"),
        ]
        .concat(),
    );
    wait_ready(&ns, &["upper", "lower"]);
    let (_, s) = assert_consistent(&ns, "upper", "upper");
    op.assert_log_free_of(&[s]);
}

#[test]
fn every_valid_name_and_regenerate_value_is_served() {
    install_crd();
    let ns = TempNamespace::new("sizes");
    let op = Operator::start(&ns.name);
    let long = format!("{}-end", "long-name".repeat(20));
    assert!(long.len() > 63 && long.len() <= 253);
    ns.apply(&key_yaml(&long, "kim", "", None, None));
    wait_ready(&ns, &[&long]);
    let (id, s0) = assert_consistent(&ns, &long, &long);
    assert_eq!(
        ns.jsonpath(
            &format!("secret/{long}"),
            "{.metadata.labels.apikey\\.dev/apikey}"
        ),
        "",
        "a label value is at most 63 characters: left out"
    );
    assert_eq!(events(&ns, &long, "Created"), 1);

    // a regenerate value as large as the ApiKey accepts
    let value = "v".repeat(255_000);
    let patch = scratch_file(
        &format!("{}-regenerate.json", ns.name),
        &format!(r#"{{"metadata":{{"annotations":{{"apikey.dev/regenerate":"{value}"}}}}}}"#),
    );
    ns.ok(&[
        "patch",
        "apikey",
        &long,
        "--type=merge",
        "--patch-file",
        patch.to_str().expect("utf-8 path"),
    ]);
    wait_handled(&ns, &long, &secret::handled_form(&value));
    wait_ready(&ns, &[&long]);
    let (same_id, s1) = assert_consistent(&ns, &long, &long);
    assert_eq!(same_id, id);
    assert!(s1 != s0, "(the values are secrets: not shown)");
    assert_eq!(events(&ns, &long, "Regenerated"), 1);
    op.assert_log_free_of(&[s0, s1]);
}

/// The record key of the operator that runs in `ns` (the test harness keeps it there).
fn record_key(ns: &TempNamespace) -> RecordKey {
    use base64::Engine as _;
    let encoded = ns.jsonpath("secret/apikey-operator-record-key", "{.data.key}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("base64");
    RecordKey::from_bytes(&bytes).expect("a record key")
}

#[test]
fn a_rotation_whose_event_was_lost_gets_it_when_the_status_catches_up() {
    let (ns, mut op, (id, s0)) = namespace_with_one_key("lostevent", "lena");

    // The operator is killed right after writing the Secret for request r1: done here exactly as
    // it does it (the same build and seal, its record key), and nothing after it.
    op.kill();
    ns.ok(&["annotate", "apikey", "k", "apikey.dev/regenerate=r1"]);
    let key: ApiKey =
        serde_json::from_str(&ns.ok(&["get", "apikey", "k", "-o", "json"])).expect("an ApiKey");
    let current: Secret =
        serde_json::from_str(&ns.ok(&["get", "secret", "k", "-o", "json"])).expect("a Secret");
    let client_secret = credentials::generate_client_secret().expect("random");
    let hash = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(
            Hasher::new(HashParams::default(), 1)
                .expect("hasher")
                .hash(client_secret.clone()),
        )
        .expect("hash");
    let creds = Credentials {
        client_id: id.clone(),
        client_secret: client_secret.clone(),
        hash,
        handled_request: Some(secret::handled_form("r1")),
        rotated_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(
                k8s_openapi::jiff::Timestamp::now().as_second(),
            )
            .expect("now"),
        ),
        reason: "regenerated",
        generation: 2,
        previous: None,
    };
    let written = secret::build(
        &key,
        &creds,
        current.metadata.resource_version.clone(),
        &record_key(&ns),
    )
    .expect("a Secret");
    ok_with(
        &["-n", &ns.name, "replace", "-f", "-"],
        Some(&serde_json::to_string(&written).expect("json")),
    );
    assert_eq!(
        events(&ns, "k", "Regenerated"),
        0,
        "the crash lost the event"
    );

    op.restart();
    let (same_id, s1) = assert_consistent(&ns, "k", "k");
    assert_eq!(
        (same_id.as_str(), s1.as_str()),
        (id.as_str(), client_secret.expose()),
        "the rotation stands: no second one"
    );
    eventually("the lost event", Duration::from_secs(30), || {
        (events(&ns, "k", "Regenerated") == 1).then_some(())
    });
    // once more, to be sure it is written once
    let mark = op.mark();
    op.restart();
    let rv = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    assert_eq!(op.wait_reconciled(mark, "k", &rv), "in_sync");
    assert_eq!(events(&ns, "k", "Regenerated"), 1);
    op.assert_log_free_of(&[s0, s1]);
}
