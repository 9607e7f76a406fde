//! End-to-end tests that disrupt the shared local control plane itself: the ApiKey CRD deleted
//! while the operator runs, and a 20-second kube-apiserver restart. Every other test would feel
//! them, so they are ignored in the parallel run and scripts/test runs them alone, last:
//! `cargo test --test disruption -- --ignored --test-threads 1`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn wait_readyz(op: &Operator, code: u16, body_contains: &str, within: Duration) -> String {
    eventually(
        &format!("/readyz to answer {code} with {body_contains:?}"),
        within,
        || {
            let (got, body) = op.http_get("/readyz");
            (got == code && body.contains(body_contains)).then_some(body)
        },
    )
}

#[test]
#[ignore = "deletes the CRD of the shared cluster: scripts/test runs it alone"]
fn a_missing_crd_shows_in_readyz_and_the_log_and_is_recovered_from_within_seconds() {
    install_crd();
    let ns = TempNamespace::new("nocrd");
    let op = Operator::start(&ns.name);
    ns.apply(&key_yaml("k", "nina", "", None, None));
    wait_ready(&ns, &["k"]);
    wait_readyz(&op, 200, "ok", Duration::from_secs(30));
    let mark = op.mark();

    ok(&[
        "delete",
        "crd",
        "apikeys.apikey.dev",
        "--wait=true",
        "--timeout=120s",
    ]);
    let body = wait_readyz(&op, 503, "apikeys.apikey.dev", Duration::from_secs(30));
    assert!(body.contains("kubectl apply -f crds/"), "{body}");
    let warnings = op.warnings_since(mark);
    assert!(
        warnings.iter().any(|l| l.contains("apikeys.apikey.dev")),
        "the log names the CRD: {warnings:#?}"
    );

    install_crd();
    // the watch retries every 5 s at most: ready again well within 30 s
    wait_readyz(&op, 200, "ok", Duration::from_secs(30));
    assert!(
        !op.records_since(mark, "watch works again").is_empty(),
        "the recovery is logged"
    );
    let warnings = op.warnings_since(mark);
    assert!(
        warnings.len() <= 3,
        "a failing watch is logged when it starts failing, not on every retry: {warnings:#?}"
    );
    ns.apply(&key_yaml("k2", "otto", "", None, None));
    wait_ready(&ns, &["k2"]);
}

#[test]
#[ignore = "restarts the shared kube-apiserver: scripts/test runs it alone"]
fn a_kube_apiserver_restart_is_logged_as_one_outage_not_per_key() {
    install_crd();
    let ns = TempNamespace::new("outage");
    let op = Operator::start(&ns.name);
    let keys: String = (0..200)
        .map(|i| {
            key_yaml(
                &format!("k{i}"),
                &format!("user{i}"),
                "team: outage",
                None,
                None,
            )
        })
        .collect();
    ns.apply(&keys);
    wait_all_ready(&ns, 300);
    let mark = op.mark();

    let restart = Command::new(root().join("tests/cluster/restart-apiserver"))
        .arg("20")
        .status()
        .expect("restart-apiserver runs");
    assert!(restart.success(), "the API server came back");
    eventually(
        "the end of the outage in the log",
        Duration::from_secs(60),
        || {
            op.records_since(
                mark,
                "the Kubernetes API server answers again; what failed meanwhile is being retried",
            )
            .last()
            .cloned()
        },
    );
    // the keys work as before: a bulk rotation goes through
    ns.ok(&[
        "annotate",
        "apikeys",
        "-l",
        "team=outage",
        "apikey.dev/regenerate=after-outage",
    ]);
    ns.ok(&[
        "wait",
        "--for=jsonpath={.metadata.annotations.apikey\\.dev/handled-regenerate}=after-outage",
        "secrets",
        "-l",
        "app.kubernetes.io/managed-by=apikey-operator",
        "--timeout=300s",
    ]);
    let warnings = op.warnings_since(mark);
    assert!(
        warnings.len() <= 6,
        "an outage is logged once, not per key and retry ({} lines): {warnings:#?}",
        warnings.len()
    );
}
