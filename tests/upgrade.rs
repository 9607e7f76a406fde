//! Upgrading: keys written by the previous release (built from this repository's history by
//! tests/previous-release/build) are taken over by this one without a single rotation, and so
//! are keys sealed with a record key that was then lost. A mass surprise rotation is the worst
//! thing an upgrade could do.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The previous release's binary, built on first use.
fn previous_release() -> PathBuf {
    PathBuf::from(stdout_of(Command::new(root().join("tests/previous-release/build"))).trim())
}

const KEYS: usize = 30;

fn names() -> Vec<String> {
    (0..KEYS).map(|i| format!("k{i}")).collect()
}

/// Every key's (client id, client secret).
fn all_credentials(ns: &TempNamespace) -> BTreeMap<String, (String, String)> {
    names()
        .into_iter()
        .map(|n| {
            let c = credentials(ns, &n);
            (n, c)
        })
        .collect()
}

/// How many events of each reason the operator recorded in the namespace.
fn event_counts(ns: &TempNamespace) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reason in ns
        .ok(&[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])
        .lines()
    {
        *counts.entry(reason.to_string()).or_insert(0) += 1;
    }
    counts
}

/// The key id of every Secret's seal (`v1.<key id>.<MAC>`), or "" when unsealed.
fn seal_key_ids(ns: &TempNamespace) -> BTreeMap<String, String> {
    names()
        .into_iter()
        .map(|n| {
            let seal = ns.jsonpath(
                &format!("secret/{n}"),
                "{.metadata.annotations.apikey\\.dev/seal}",
            );
            let id = seal.split('.').nth(1).unwrap_or_default().to_string();
            (n, id)
        })
        .collect()
}

/// Waits until every Secret is sealed with the key `key_id`.
fn wait_sealed_with(ns: &TempNamespace, key_id: &str) {
    eventually(
        &format!("every Secret sealed with record key {key_id}"),
        std::time::Duration::from_secs(180),
        || {
            seal_key_ids(ns)
                .values()
                .all(|id| id == key_id)
                .then_some(())
        },
    );
}

/// The key id the operator logged when it loaded (or created) its record key.
fn record_key_id(op: &Operator) -> String {
    eventually(
        "the operator's record key id",
        std::time::Duration::from_secs(30),
        || {
            op.records("record key loaded")
                .last()
                .and_then(|r| r["fields"]["key_id"].as_str().map(String::from))
        },
    )
}

#[test]
fn keys_of_the_previous_release_and_of_a_lost_record_key_are_taken_over_without_rotation() {
    let previous = previous_release();
    install_crd();
    let ns = TempNamespace::new("upgrade");

    // The previous release at work: keys created, one rotated.
    let mut old = Operator::start_release(&previous, &ns.name);
    let manifest: String = names()
        .iter()
        .enumerate()
        .map(|(i, n)| key_yaml(n, &format!("user{i}"), "", (i == 1).then_some("r0"), None))
        .collect();
    ns.apply(&manifest);
    wait_all_ready(&ns, 300);
    ns.ok(&["annotate", "apikey", "k2", "apikey.dev/regenerate=r1"]);
    wait_handled(&ns, "k2", "r1");
    wait_ready(&ns, &["k2"]);
    assert_consistent(&ns, "k2", "k2");
    assert!(
        seal_key_ids(&ns).values().all(String::is_empty),
        "the previous release writes no seals"
    );
    old.kill();

    // While no operator runs: a regeneration asked of k3 and a hand edit of k4's secret, which the
    // new release must answer as the previous one would have.
    ns.ok(&[
        "annotate",
        "apikey",
        "k3",
        "apikey.dev/regenerate=asked-during-upgrade",
    ]);
    ns.ok(&[
        "patch",
        "secret",
        "k4",
        "-p",
        r#"{"stringData":{"client_secret":"typed-by-hand"}}"#,
    ]);
    let before = all_credentials(&ns);
    let events_before = event_counts(&ns);

    // The upgrade.
    let mut new = Operator::start(&ns.name);
    let key_id = record_key_id(&new);
    wait_sealed_with(&ns, &key_id);
    wait_handled(&ns, "k3", "asked-during-upgrade");
    wait_all_ready(&ns, 120);
    let after = all_credentials(&ns);
    for name in names() {
        let (id, secret) = assert_consistent(&ns, &name, &name);
        assert_eq!(id, before[&name].0, "{name}: the client id stays");
        assert!(
            !ns.jsonpath(&format!("apikey/{name}"), "{.status.seal}")
                .is_empty(),
            "{name}: the status is sealed too"
        );
        match name.as_str() {
            "k3" | "k4" => assert_ne!(secret, before[&name].1, "{name}: answered"),
            _ => assert_eq!(
                after[&name], before[&name],
                "{name}: taken over without rotation"
            ),
        }
    }
    let events_after = event_counts(&ns);
    let new_events = |reason: &str| {
        events_after.get(reason).copied().unwrap_or(0)
            - events_before.get(reason).copied().unwrap_or(0)
    };
    assert_eq!(new_events("Regenerated"), 1, "k3 only: {events_after:?}");
    assert_eq!(new_events("Repaired"), 1, "k4 only: {events_after:?}");
    assert_eq!(new_events("Created"), 0, "{events_after:?}");

    // The record key is lost (its Secret deleted) and the operator restarts: it makes a new key,
    // and every record, sealed with the lost one, is sealed again without rotation.
    let before = all_credentials(&ns);
    let events_before = event_counts(&ns);
    new.kill();
    ns.ok(&["delete", "secret", "apikey-operator-record-key"]);
    new.restart();
    eventually(
        "a new record key",
        std::time::Duration::from_secs(30),
        || (new.records("created the record key").len() == 2).then_some(()),
    );
    let new_key_id = record_key_id(&new);
    assert_ne!(new_key_id, key_id);
    wait_sealed_with(&ns, &new_key_id);
    for name in names() {
        assert_consistent(&ns, &name, &name);
    }
    assert!(all_credentials(&ns) == before, "no key rotated");
    assert_eq!(event_counts(&ns), events_before, "nothing for users to see");
    let secrets: Vec<String> = before.values().map(|(_, s)| s.clone()).collect();
    new.assert_log_free_of(&secrets);
}
