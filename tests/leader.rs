//! Leader election between two operator processes on one cluster: exactly one reconciles; when
//! the leader is killed the other takes over within the lease duration; on SIGTERM the leader
//! finishes and releases the lease. Also: /healthz, /readyz and /metrics of leader and standby.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LEASE_SECONDS: u64 = 6;

fn key(name: &str) -> String {
    format!(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\nspec: {{user: {name}}}\n"
    )
}

fn pair(ns: &TempNamespace, lease_seconds: u64) -> (Operator, Operator) {
    let flags = [
        "--lease-namespace",
        ns.name.as_str(),
        "--lease-duration-seconds",
        &lease_seconds.to_string(),
        "--http-addr",
        "127.0.0.1:0",
    ];
    let a = Operator::start_with(&ns.name, &flags);
    let b = Operator::start_with(&ns.name, &flags);
    (a, b)
}

/// Waits until exactly one of the two is leader; returns (leader, standby).
fn leader_of(a: Operator, b: Operator) -> (Operator, Operator) {
    let a_leads = eventually("a leader", Duration::from_secs(60), || {
        let (la, lb) = (
            !a.records("became the leader").is_empty(),
            !b.records("became the leader").is_empty(),
        );
        assert!(!(la && lb), "both operators became leader");
        (la || lb).then_some(la)
    });
    if a_leads { (a, b) } else { (b, a) }
}

#[test]
fn exactly_one_leader_and_takeover_after_kill() {
    install_crd();
    let ns = TempNamespace::new("leader");
    let (a, b) = pair(&ns, LEASE_SECONDS);
    let (mut leader, standby) = leader_of(a, b);

    ns.apply(&key("k1"));
    ns.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/k1",
        "--timeout=60s",
    ]);
    assert!(standby.records("became the leader").is_empty());
    assert!(
        standby.records("reconciled").is_empty(),
        "the standby reconciles nothing"
    );
    assert!(!leader.records("reconciled").is_empty());

    // endpoints: both healthy and ready; only the leader says it leads
    for op in [&leader, &standby] {
        assert_eq!(op.http_get("/healthz"), (200, "ok".to_string()));
        assert_eq!(op.http_get("/readyz").0, 200);
    }
    assert_eq!(leader.metric("apikey_leader", "", ""), 1.0);
    assert_eq!(standby.metric("apikey_leader", "", ""), 0.0);
    assert!(leader.metric("apikey_keys_issued_total", "reason", "created") >= 1.0);
    assert_eq!(leader.metric("apikey_managed_keys", "ready", "true"), 1.0);

    let holder = ns.jsonpath("lease/apikey-operator", "{.spec.holderIdentity}");
    assert!(!holder.is_empty());

    leader.kill();
    let killed_at = Instant::now();
    ns.apply(&key("k2"));
    let limit = LEASE_SECONDS + 10;
    ns.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/k2",
        &format!("--timeout={limit}s"),
    ]);
    let took = killed_at.elapsed();
    assert!(!standby.records("became the leader").is_empty());
    assert_ne!(
        ns.jsonpath("lease/apikey-operator", "{.spec.holderIdentity}"),
        holder
    );
    eprintln!(
        "takeover after kill -9: k2 Ready {took:?} after the leader died (lease {LEASE_SECONDS}s)"
    );
}

#[test]
fn sigterm_finishes_and_releases_the_lease() {
    install_crd();
    let ns = TempNamespace::new("release");
    let (a, b) = pair(&ns, LEASE_SECONDS);
    let (mut leader, standby) = leader_of(a, b);
    assert!(
        !ns.jsonpath("lease/apikey-operator", "{.spec.holderIdentity}")
            .is_empty()
    );
    assert!(leader.terminate(), "the leader exits cleanly on SIGTERM");
    assert!(!leader.records("released the leader lease").is_empty());
    // released: the Lease names no holder any more (a killed leader would still be named)
    assert_eq!(
        ns.jsonpath("lease/apikey-operator", "{.spec.holderIdentity}"),
        ""
    );
    // the standby notices on its next look (kube-lease-manager looks at most once per duration)
    ns.apply(&key("k"));
    let limit = LEASE_SECONDS + 10;
    ns.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/k",
        &format!("--timeout={limit}s"),
    ]);
    assert!(!standby.records("became the leader").is_empty());
}
