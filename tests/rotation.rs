//! Rotation without an outage, end to end against the local control plane: clients that re-read
//! their Secret late see no failure across a bulk regeneration when the grace period covers their
//! delay (and do without one); the grace bookkeeping survives SIGKILLs of the operator; a grace
//! period ends on time, or at once with the next rotation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use apikey_operator::core::hashing;
use common::token::*;
use common::*;

/// An ApiKey manifest with `labels` and a grace period (`spec.rotation.gracePeriod`).
fn key_with_grace(name: &str, labels: &str, grace: &str) -> String {
    format!(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  user: user-{name}\n  rotation:\n    gracePeriod: {grace}\n---\n"
    )
}

/// `status.<field>` of ApiKey `key`.
fn status(ns: &TempNamespace, key: &str, field: &str) -> String {
    ns.jsonpath(&format!("apikey/{key}"), &format!("{{.status.{field}}}"))
}

/// What the clients of one run saw.
struct Seen {
    /// Token requests answered 200.
    issued: u32,
    /// Token requests refused (any other answer).
    failed: u32,
    /// Times a client found new credentials in its Secret.
    picked_up: u32,
}

/// Runs one client per key: each keeps asking `ts` for tokens (every 100 ms) with the credentials
/// it last read from its Secret, and reads the Secret again only every `reread` (a stand-in for
/// the kubelet's delay in updating a mounted Secret, or a process that reads its secret rarely).
/// Meanwhile every key labelled `team=<team>` is regenerated with one `kubectl annotate -l`; the
/// clients stop once every one of them has picked up its new secret and used it a while.
fn bulk_regeneration_under_load(
    ns: &TempNamespace,
    ts: &TokenServer,
    team: &str,
    keys: &[&str],
    reread: Duration,
) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let (issued, failed, picked_up) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let before: Vec<(String, String)> = keys.iter().map(|k| credentials(ns, k)).collect();
    std::thread::scope(|scope| {
        for (key, first) in keys.iter().zip(&before) {
            let (stop, issued, failed, picked_up) = (&stop, &issued, &failed, &picked_up);
            scope.spawn(move || {
                let mut creds = first.clone();
                let mut read_at = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if read_at.elapsed() >= reread {
                        let now = credentials(ns, key);
                        if now != creds {
                            picked_up.fetch_add(1, Ordering::SeqCst);
                            creds = now;
                        }
                        read_at = Instant::now();
                    }
                    let answer = ts.token_basic(&creds.0, &creds.1);
                    if answer.status == 200 {
                        issued.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // let every client get tokens with its first secret, then rotate them all at once
        eventually(
            "every client to get a token",
            Duration::from_secs(30),
            || (issued.load(Ordering::SeqCst) >= keys.len() as u32).then_some(()),
        );
        ns.ok(&[
            "annotate",
            "apikeys",
            "-l",
            &format!("team={team}"),
            "apikey.dev/regenerate=bulk-1",
            "--overwrite",
        ]);
        for key in keys {
            wait_handled(ns, key, "bulk-1");
        }
        eventually(
            "every client to pick up its new secret",
            reread * 2 + Duration::from_secs(30),
            || (picked_up.load(Ordering::SeqCst) >= keys.len() as u32).then_some(()),
        );
        // and use it for a moment
        let mark = issued.load(Ordering::SeqCst);
        eventually(
            "tokens with the new secrets",
            Duration::from_secs(30),
            || (issued.load(Ordering::SeqCst) >= mark + 2 * keys.len() as u32).then_some(()),
        );
        stop.store(true, Ordering::SeqCst);
    });
    for (key, old) in keys.iter().zip(&before) {
        assert!(credentials(ns, key).1 != old.1, "{key} got a new secret");
    }
    Seen {
        issued: issued.load(Ordering::SeqCst),
        failed: failed.load(Ordering::SeqCst),
        picked_up: picked_up.load(Ordering::SeqCst),
    }
}

#[test]
fn a_grace_period_covering_the_clients_delay_gives_zero_failed_requests_and_none_gives_failures() {
    install_crd();
    let ns = TempNamespace::new("grace-zero");
    let _op = Operator::start(&ns.name);
    let ts = TokenServer::start_without_budgets(&ns.name);
    // clients re-read their Secret every 6 s; team a has a 30 s grace period, team b none
    let reread = Duration::from_secs(6);
    let with_grace = ["a1", "a2", "a3"];
    let without = ["b1", "b2", "b3"];
    let yaml: String = with_grace
        .iter()
        .map(|k| key_with_grace(k, "team: a", "30s"))
        .chain(without.iter().map(|k| key_with_grace(k, "team: b", "0s")))
        .collect();
    ns.apply(&yaml);
    wait_all_ready(&ns, 60);

    let graced = bulk_regeneration_under_load(&ns, &ts, "a", &with_grace, reread);
    assert_eq!(
        graced.failed, 0,
        "with a grace period covering the delay, no request fails ({} issued, {} picked up)",
        graced.issued, graced.picked_up
    );
    assert!(
        ts.metric("apikey_token_previous_secret_used_total", "", "") > 0.0,
        "the old secrets were used during the grace period"
    );
    for key in with_grace {
        let previous = status(&ns, key, "previousSecretHash");
        assert!(previous.starts_with("$argon2id$"), "{key}: {previous}");
        assert_eq!(status(&ns, key, "previousSecretGeneration"), "1");
    }

    let ungraced = bulk_regeneration_under_load(&ns, &ts, "b", &without, reread);
    assert!(
        ungraced.failed > 0,
        "without a grace period the same clients fail until they re-read ({} issued)",
        ungraced.issued
    );
    for key in without {
        assert_eq!(status(&ns, key, "previousSecretHash"), "", "{key}");
    }
}

#[test]
fn grace_bookkeeping_survives_sigkills_of_the_operator_at_any_point_of_a_rotation() {
    install_crd();
    let ns = TempNamespace::new("grace-kill");
    let mut op = Operator::start(&ns.name);
    ns.apply(&key_with_grace("k", "", "10m"));
    wait_ready(&ns, &["k"]);
    let mut hash = status(&ns, "k", "secretHash");
    // kill the operator at spread-out moments after each request: before it reads it, while it
    // hashes, between the Secret's write and the status's, after
    let delays_ms = [0u64, 40, 90, 150, 250, 400, 700];
    for (i, delay) in delays_ms.iter().enumerate() {
        let generation = i as i64 + 1;
        let value = format!("kill-{i}");
        regenerate(&ns, "k", &value);
        std::thread::sleep(Duration::from_millis(*delay));
        op.restart();
        wait_handled(&ns, "k", &value);
        // the status catches up with the Secret: one new secret for the request, whose previous
        // is the secret before it
        let (_, secret) = credentials(&ns, "k");
        let current = eventually(
            "the status to show the new secret",
            Duration::from_secs(60),
            || {
                let now = status(&ns, "k", "secretHash");
                hashing::verify(&secret, &now).then_some(now)
            },
        );
        assert_eq!(
            status(&ns, "k", "secretGeneration"),
            (generation + 1).to_string(),
            "exactly one rotation per request (delay {delay} ms)"
        );
        assert_eq!(
            status(&ns, "k", "previousSecretHash"),
            hash,
            "the previous hash is the one published before (delay {delay} ms)"
        );
        assert_eq!(
            status(&ns, "k", "previousSecretGeneration"),
            generation.to_string()
        );
        let rotated: k8s_openapi::jiff::Timestamp =
            status(&ns, "k", "lastRotatedAt").parse().expect("time");
        let until: k8s_openapi::jiff::Timestamp = status(&ns, "k", "previousSecretExpiresAt")
            .parse()
            .expect("time");
        assert_eq!(until.duration_since(rotated).as_secs(), 600);
        hash = current;
    }
    assert_eq!(
        events(&ns, "k", "Regenerated"),
        delays_ms.len(),
        "one event per rotation"
    );
}

#[test]
fn a_grace_period_ends_on_time_and_a_second_rotation_ends_the_first_at_once() {
    install_crd();
    let ns = TempNamespace::new("grace-end");
    let op = Operator::start(&ns.name);
    let ts = TokenServer::start_without_budgets(&ns.name);
    ns.apply(&(key_with_grace("short", "", "8s") + &key_with_grace("long", "", "10m")));
    wait_ready(&ns, &["short", "long"]);

    // short: the previous secret works for 8 s, then the status drops it and the token server
    // refuses it
    let (id, first) = credentials(&ns, "short");
    ns.ok(&["annotate", "apikey", "short", "apikey.dev/regenerate=1"]);
    wait_handled(&ns, "short", "1");
    let (_, second) = credentials(&ns, "short");
    let until: k8s_openapi::jiff::Timestamp = eventually(
        "the previous secret in the status",
        Duration::from_secs(30),
        || status(&ns, "short", "previousSecretExpiresAt").parse().ok(),
    );
    assert_eq!(ts.token_basic(&id, &first).status, 200, "previous accepted");
    assert_eq!(ts.token_basic(&id, &second).status, 200, "current accepted");
    eventually(
        "the previous hash to leave the status",
        Duration::from_secs(30),
        || {
            status(&ns, "short", "previousSecretHash")
                .is_empty()
                .then_some(())
        },
    );
    let gone_at = k8s_openapi::jiff::Timestamp::now();
    assert!(
        gone_at >= until,
        "removed at {gone_at}, not before the end of the grace period {until}"
    );
    assert_eq!(status(&ns, "short", "previousSecretExpiresAt"), "");
    assert_eq!(ts.token_basic(&id, &first).status, 401, "previous refused");
    assert_eq!(ts.token_basic(&id, &second).status, 200);
    assert_eq!(events(&ns, "short", "GracePeriodEnded"), 1);
    assert_eq!(
        op.metric("apikey_grace_periods_ended_total", "how", "elapsed"),
        1.0
    );

    // long: a second rotation inside the grace period ends the first one's at once
    let (id, g1) = credentials(&ns, "long");
    ns.ok(&["annotate", "apikey", "long", "apikey.dev/regenerate=1"]);
    wait_handled(&ns, "long", "1");
    let (_, g2) = credentials(&ns, "long");
    eventually("generation 1 as previous", Duration::from_secs(30), || {
        (status(&ns, "long", "previousSecretGeneration") == "1").then_some(())
    });
    ns.ok(&[
        "annotate",
        "apikey",
        "long",
        "apikey.dev/regenerate=2",
        "--overwrite",
    ]);
    wait_handled(&ns, "long", "2");
    let (_, g3) = credentials(&ns, "long");
    eventually("generation 2 as previous", Duration::from_secs(30), || {
        (status(&ns, "long", "previousSecretGeneration") == "2").then_some(())
    });
    assert!(hashing::verify(
        &g2,
        &status(&ns, "long", "previousSecretHash")
    ));
    eventually(
        "the token server to see the second rotation",
        Duration::from_secs(30),
        || (ts.token_basic(&id, &g1).status == 401).then_some(()),
    );
    assert_eq!(
        ts.token_basic(&id, &g2).status,
        200,
        "the previous one works"
    );
    assert_eq!(
        ts.token_basic(&id, &g3).status,
        200,
        "the current one works"
    );
    assert_eq!(
        op.metric("apikey_grace_periods_ended_total", "how", "superseded"),
        1.0
    );
    assert_eq!(
        op.metric("apikey_rotations_total", "trigger", "annotation"),
        3.0
    );
    ts.assert_log_free_of(&[first, second, g1, g2, g3]);
}

#[test]
fn kubectl_explain_describes_the_rotation_fields() {
    install_crd();
    for (field, says) in [
        (
            "apikey.spec.rotation",
            "grace period for the previous secret",
        ),
        (
            "apikey.spec.rotation.gracePeriod",
            "previous client secret is still accepted",
        ),
        ("apikey.spec.rotation.interval", "--min-rotation-interval"),
        ("apikey.spec.expiresAt", "Ready=False with reason Expired"),
        ("apikey.spec.rolloutRestart", "deploy/rollout-restart/"),
        ("apikey.status.previousSecretHash", "grace period"),
        (
            "apikey.status.previousSecretExpiresAt",
            "stops being accepted",
        ),
        ("apikey.status.nextRotationAt", "spec.rotation.interval"),
    ] {
        let text = ok(&["explain", field])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains(says), "kubectl explain {field}: {text}");
    }
}

#[test]
fn a_previous_secret_written_into_the_secret_by_hand_is_repaired_once_and_never_accepted() {
    install_crd();
    let ns = TempNamespace::new("grace-forged");
    let op = Operator::start(&ns.name);
    let ts = TokenServer::start_without_budgets(&ns.name);
    ns.apply(&key_with_grace("k", "", "10m"));
    wait_ready(&ns, &["k"]);
    let (id, first) = credentials(&ns, "k");
    // someone who may edit the Secret, not the operator's record key, tries to have a secret of
    // their own accepted as the previous one (kubectl is another field manager than the operator)
    let forged = apikey_operator::core::credentials::generate_client_secret().expect("csprng");
    let forged_hash = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(
            apikey_operator::core::hashing::Hasher::new(
                apikey_operator::core::hashing::HashParams::default(),
                1,
            )
            .expect("hasher")
            .hash(forged.clone()),
        )
        .expect("hash");
    ns.ok(&[
        "annotate",
        "secret",
        "k",
        &format!("apikey.dev/previous-secret-hash={forged_hash}"),
        "apikey.dev/previous-generation=1",
        "apikey.dev/previous-expires-at=2099-01-01T00:00:00Z",
        "--overwrite",
    ]);
    // the seal breaks: the key is repaired once (a new secret, no grace), and the operator's
    // write takes the annotations over, so the repair does not repeat
    let (_, repaired) = eventually("the repair", Duration::from_secs(60), || {
        let now = credentials(&ns, "k");
        (now.1 != first).then_some(now)
    });
    assert_consistent(&ns, "k", "k");
    assert_eq!(
        ns.jsonpath(
            "secret/k",
            "{.metadata.annotations.apikey\\.dev/previous-secret-hash}"
        ),
        ""
    );
    assert_eq!(status(&ns, "k", "previousSecretHash"), "");
    let mark = op.mark();
    ns.ok(&["label", "apikey", "k", "look=again"]);
    let version = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    op.wait_reconciled(mark, "k", &version);
    assert!(
        credentials(&ns, "k").1 == repaired,
        "repaired once, not in a loop"
    );
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "repaired_altered"),
        1.0
    );
    assert_eq!(ts.token_basic(&id, forged.expose()).status, 401);
    assert_eq!(
        ts.token_basic(&id, &first).status,
        401,
        "a repair gives no grace"
    );
    assert_eq!(ts.token_basic(&id, &repaired).status, 200);
}

#[test]
fn a_lost_record_key_keeps_the_generation_and_the_grace_period_under_way() {
    install_crd();
    let ns = TempNamespace::new("grace-lost-key");
    let mut op = Operator::start(&ns.name);
    let ts = TokenServer::start_without_budgets(&ns.name);
    ns.apply(&key_with_grace("k", "", "10m"));
    wait_ready(&ns, &["k"]);
    let (id, first) = credentials(&ns, "k");
    regenerate(&ns, "k", "1");
    wait_handled(&ns, "k", "1");
    let (_, second) = credentials(&ns, "k");
    eventually(
        "the previous secret published",
        Duration::from_secs(30),
        || (status(&ns, "k", "previousSecretGeneration") == "1").then_some(()),
    );
    let until = status(&ns, "k", "previousSecretExpiresAt");

    // the operator's record key is lost: every record is re-sealed without rotation
    ns.ok(&["delete", "secret", "apikey-operator-record-key"]);
    op.restart();
    eventually("the record re-sealed", Duration::from_secs(60), || {
        let reason = ns.jsonpath(
            "secret/k",
            "{.metadata.annotations.apikey\\.dev/rotation-reason}",
        );
        (reason == "adopted").then_some(())
    });
    assert_consistent(&ns, "k", "k");
    assert!(credentials(&ns, "k").1 == second, "no new secret");
    eventually("the status sealed again", Duration::from_secs(30), || {
        (status(&ns, "k", "secretGeneration") == "2").then_some(())
    });
    assert_eq!(status(&ns, "k", "previousSecretGeneration"), "1");
    assert_eq!(status(&ns, "k", "previousSecretExpiresAt"), until);
    assert!(hashing::verify(
        &first,
        &status(&ns, "k", "previousSecretHash")
    ));
    assert_eq!(
        op.metric("apikey_grace_periods_ended_total", "", ""),
        0.0,
        "no grace period ended"
    );
    // both secrets still work, and tokens name the same generation (so those issued before stay
    // active)
    eventually(
        "the token server to see the re-sealed key",
        Duration::from_secs(30),
        || {
            let (_, claims) = decode_jwt(&ts.access_token(&id, &second));
            (claims["apikey"]["generation"] == 2).then_some(())
        },
    );
    assert_eq!(ts.token_basic(&id, &first).status, 200, "previous");
    assert_eq!(ts.token_basic(&id, &second).status, 200, "current");
}
