//! Unit tests of rollout restarts ([`super`]): the pure plan, and the calls against a mocked API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::plan::parse_value;
use super::*;
use crate::core::crd::RolloutTarget;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::core::test_support::{key, time};
use crate::operator::fixtures::{ApiServerVerifier, TIMEOUT, context};

const UID: &str = "uid-web";

/// A valid annotation name part: at most 63 characters of `[A-Za-z0-9_.-]`, starting and
/// ending with a letter or digit.
fn valid_name_part(part: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !part.is_empty()
        && part.len() <= NAME_PART_MAX
        && alnum(part.chars().next())
        && alnum(part.chars().last())
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[test]
fn short_names_are_the_name_part_as_they_are() {
    for name in ["web", "a", "my-key.v2", &"k".repeat(63)] {
        assert_eq!(annotation_name_part(name), name);
        assert!(valid_name_part(&annotation_name_part(name)));
    }
    assert_eq!(annotation_key("web"), "restarted.apikey.dev/web");
}

#[test]
fn long_names_are_shortened_deterministically_and_apart() {
    let long = format!("{}-end", "a".repeat(250));
    let part = annotation_name_part(&long);
    assert_eq!(part.len(), NAME_PART_MAX);
    assert!(valid_name_part(&part), "{part}");
    assert!(part.starts_with(&"a".repeat(46)), "{part}");
    assert_eq!(part, annotation_name_part(&long), "deterministic");
    let other = format!("{}-eNd", "a".repeat(250));
    assert_ne!(part, annotation_name_part(&other));
    let other = format!("{}-fin", "a".repeat(250));
    assert_ne!(part, annotation_name_part(&other), "same first 46 chars");
    assert!(part.contains('_'), "never a name used as it is: {part}");
    // 64 characters: the first that is shortened
    let sixty_four = "k".repeat(64);
    let part = annotation_name_part(&sixty_four);
    assert!(valid_name_part(&part) && part != sixty_four, "{part}");
    // a prefix ending in '-' or '.' before the underscore stays valid
    let dashes = format!("{}-{}", "b".repeat(45), "c".repeat(60));
    assert!(valid_name_part(&annotation_name_part(&dashes)));
}

#[test]
fn names_that_are_no_dns_names_still_give_valid_keys() {
    for name in [
        "",
        "-",
        "Web",
        "web-",
        ".web",
        "wéb",
        "a b",
        "_x_",
        "/",
        &"ü".repeat(40),
    ] {
        let part = annotation_name_part(name);
        assert!(valid_name_part(&part), "{name:?} gave {part:?}");
    }
    assert_ne!(annotation_name_part("Web"), annotation_name_part("web"));
}

#[test]
fn values_carry_generation_and_uid() {
    assert_eq!(annotation_value(3, UID), "3/uid-web");
    assert_eq!(parse_value("3/uid-web"), Some((3, UID)));
    for bad in [
        "",
        "3",
        "/uid",
        "x/uid",
        "-1/uid",
        "+3/uid",
        "3 /uid",
        "99999999999999999999/u",
    ] {
        assert_eq!(parse_value(bad), None, "{bad:?}");
    }
}

fn step_at(recorded: Option<&str>, generation: u64, created: i64, rotated: i64) -> Step {
    step(
        recorded,
        UID,
        generation,
        Some(&time(created)),
        Some(&time(rotated)),
    )
}

#[test]
fn a_recorded_workload_is_restarted_once_per_generation() {
    assert_eq!(step_at(Some("2/uid-web"), 3, 10, 100), Step::Restart);
    assert_eq!(step_at(Some("1/uid-web"), 3, 10, 100), Step::Restart);
    assert_eq!(step_at(Some("3/uid-web"), 3, 10, 100), Step::Nothing);
    // the creation time does not matter once recorded
    assert_eq!(step_at(Some("2/uid-web"), 3, 500, 100), Step::Restart);
    assert_eq!(step_at(Some("3/uid-web"), 3, 500, 100), Step::Nothing);
    // nor do unknown times
    assert_eq!(step(Some("2/uid-web"), UID, 3, None, None), Step::Restart);
    assert_eq!(step(Some("3/uid-web"), UID, 3, None, None), Step::Nothing);
}

#[test]
fn a_generation_that_went_back_restarts() {
    // the operator's record key was lost: the key is adopted again at generation 1 while its
    // workloads record generation 5; each generation that differs is a new secret for them
    assert_eq!(step_at(Some("5/uid-web"), 1, 10, 100), Step::Restart);
    assert_eq!(step_at(Some("4/uid-web"), 3, 10, 100), Step::Restart);
    // whatever the creation time, and with unknown times
    assert_eq!(step_at(Some("5/uid-web"), 1, 500, 100), Step::Restart);
    assert_eq!(step(Some("5/uid-web"), UID, 2, None, None), Step::Restart);
    // and once restarted for it, the new count goes on exactly once per generation
    for generation in 1..=5 {
        let recorded = annotation_value(generation, UID);
        assert_eq!(step_at(Some(&recorded), generation, 10, 100), Step::Nothing);
        assert_eq!(
            step_at(Some(&recorded), generation + 1, 10, 100),
            Step::Restart
        );
    }
}

/// A pod spec from its JSON form, with one container `app` and `extra`'s fields.
fn pod(extra: Value) -> PodSpec {
    let mut spec = json!({ "containers": [{ "name": "app", "image": "app" }] });
    for (field, value) in extra.as_object().expect("an object") {
        spec[field] = value.clone();
    }
    serde_json::from_value(spec).expect("a PodSpec")
}

/// A pod spec's `containers` (or `initContainers`) in JSON: one container `app` with `fields`.
fn container(fields: Value) -> Value {
    let mut c = json!({ "name": "app", "image": "app" });
    for (field, value) in fields.as_object().expect("an object") {
        c[field] = value.clone();
    }
    json!([c])
}

#[test]
fn each_reference_kind_uses_the_secret() {
    let cases = [
        (
            "a secret volume",
            json!({ "volumes": [{ "name": "key", "secret": { "secretName": "k" } }] }),
        ),
        (
            "a projected volume",
            json!({ "volumes": [
                { "name": "cm", "configMap": { "name": "k" } },
                { "name": "all", "projected": { "sources": [
                    { "configMap": { "name": "settings" } },
                    { "secret": { "name": "k", "items": [{ "key": "clientSecret", "path": "s" }] } },
                ] } },
            ] }),
        ),
        (
            "a container's env",
            json!({ "containers": container(json!({ "env": [
                { "name": "PLAIN", "value": "k" },
                { "name": "ID", "valueFrom": { "secretKeyRef": { "name": "k", "key": "clientId" } } },
            ] })) }),
        ),
        (
            "a container's envFrom",
            json!({ "containers": container(json!({ "envFrom": [
                { "configMapRef": { "name": "settings" } },
                { "secretRef": { "name": "k" }, "prefix": "KEY_" },
            ] })) }),
        ),
        (
            "an init container's env",
            json!({ "initContainers": container(json!({ "env": [
                { "name": "ID", "valueFrom": { "secretKeyRef": { "name": "k", "key": "clientId" } } },
            ] })) }),
        ),
        (
            "an init container's envFrom",
            json!({ "initContainers": container(json!({ "envFrom": [
                { "secretRef": { "name": "k" } },
            ] })) }),
        ),
    ];
    for (what, extra) in cases {
        let spec = pod(extra);
        assert!(uses_secret(&spec, "k"), "{what}");
        assert!(
            !uses_secret(&spec, "other"),
            "{what} of k is no use of other"
        );
        assert!(
            !uses_secret(&spec, ""),
            "{what}: an empty name is used by nothing"
        );
    }
}

#[test]
fn a_template_that_references_another_secret_or_a_config_map_does_not_use_it() {
    let other = pod(json!({
        "volumes": [
            { "name": "a", "secret": { "secretName": "other" } },
            { "name": "b", "secret": {} },
            { "name": "c", "configMap": { "name": "k" } },
            { "name": "d", "projected": { "sources": [
                { "secret": { "name": "other" } },
                { "configMap": { "name": "k" } },
            ] } },
            { "name": "e", "projected": {} },
            { "name": "f", "emptyDir": {} },
        ],
        "containers": container(json!({
            "env": [
                { "name": "A", "value": "k" },
                { "name": "B", "valueFrom": { "secretKeyRef": { "name": "other", "key": "k" } } },
                { "name": "C", "valueFrom": { "configMapKeyRef": { "name": "k", "key": "k" } } },
            ],
            "envFrom": [
                { "secretRef": { "name": "other" } },
                { "configMapRef": { "name": "k" } },
            ],
            "volumeMounts": [{ "name": "k", "mountPath": "/k" }],
        })),
        "initContainers": container(json!({ "envFrom": [{ "secretRef": { "name": "k-2" } }] })),
        "imagePullSecrets": [{ "name": "k" }],
    }));
    assert!(!uses_secret(&other, "k"));
    assert!(uses_secret(&other, "other"));
    assert!(!uses_secret(&pod(json!({})), "k"), "no reference at all");
}

#[test]
fn a_workload_without_a_pod_spec_uses_nothing() {
    let bare: Deployment =
        serde_json::from_value(json!({ "metadata": { "name": "web" } })).expect("a Deployment");
    assert!(bare.pod_spec().is_none());
    let full: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db" },
        "spec": {
            "selector": {},
            "template": { "spec": {
                "containers": [{ "name": "app" }],
                "volumes": [{ "name": "key", "secret": { "secretName": "k" } }],
            } },
        },
    }))
    .expect("a StatefulSet");
    assert!(full.pod_spec().is_some_and(|p| uses_secret(p, "k")));
}

#[test]
fn a_workload_seen_first_is_restarted_only_if_older_than_a_later_secret() {
    for recorded in [None, Some("garbage"), Some("3"), Some("")] {
        // created before the current secret, which is not the first: restart
        assert_eq!(step_at(recorded, 2, 10, 100), Step::Restart, "{recorded:?}");
        assert_eq!(step_at(recorded, 3, 99, 100), Step::Restart, "{recorded:?}");
        // created in the same second as the secret, or after it: record only
        assert_eq!(step_at(recorded, 3, 100, 100), Step::Record, "{recorded:?}");
        assert_eq!(step_at(recorded, 3, 101, 100), Step::Record, "{recorded:?}");
        // the key's first secret: record only, whenever the workload was created
        assert_eq!(step_at(recorded, 1, 10, 100), Step::Record, "{recorded:?}");
        assert_eq!(step_at(recorded, 1, 100, 100), Step::Record, "{recorded:?}");
        assert_eq!(step_at(recorded, 1, 200, 100), Step::Record, "{recorded:?}");
        // unknown times: no evidence for a restart
        assert_eq!(step(recorded, UID, 3, None, Some(&time(100))), Step::Record);
        assert_eq!(step(recorded, UID, 3, Some(&time(10)), None), Step::Record);
    }
}

#[test]
fn a_record_of_an_earlier_apikey_of_the_same_name_is_no_record_of_this_one() {
    // the earlier key had reached generation 5; this one starts again at 1
    let earlier = Some("5/uid-old");
    assert_eq!(
        step_at(earlier, 1, 10, 100),
        Step::Restart,
        "pods hold the old key's secret"
    );
    assert_eq!(step_at(earlier, 2, 10, 100), Step::Restart);
    assert_eq!(step_at(earlier, 1, 100, 100), Step::Record);
    assert_eq!(step_at(earlier, 1, 200, 100), Step::Record);
    assert_eq!(step(earlier, UID, 1, None, None), Step::Record);
}

fn target(kind: WorkloadKind, name: &str) -> RolloutTarget {
    RolloutTarget {
        kind,
        name: name.into(),
    }
}

fn report(kind: WorkloadKind, name: &str, outcome: TargetOutcome) -> TargetReport {
    TargetReport {
        target: target(kind, name),
        outcome,
    }
}

fn keyed(targets: Vec<RolloutTarget>) -> ApiKey {
    let mut k = key("web", "alice", 1);
    k.spec.rollout_restart = targets;
    k
}

/// `k` with `c` as its only condition.
fn with_condition(mut k: ApiKey, c: &Condition) -> ApiKey {
    k.status = Some(crate::core::crd::ApiKeyStatus {
        conditions: vec![c.clone()],
        ..Default::default()
    });
    k
}

#[test]
fn no_targets_no_condition() {
    assert_eq!(condition(&keyed(vec![]), &[], 3, &time(1)), None);
    assert_eq!(recheck_after(&[]), None);
}

#[test]
fn all_done_is_true_and_stable_across_reconciles() {
    let k = keyed(vec![]);
    let now_restarted = [
        report(WorkloadKind::Deployment, "web", TargetOutcome::Restarted),
        report(WorkloadKind::StatefulSet, "db", TargetOutcome::Recorded),
    ];
    let c = condition(&k, &now_restarted, 3, &time(100)).expect("a condition");
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("RolloutRestart", "True", "Restarted")
    );
    assert_eq!(
        c.message,
        "2 workloads are restarted for client secret generation 3 or started after it: Deployment/web, StatefulSet/db"
    );
    assert_eq!(c.last_transition_time, time(100));
    assert_eq!(c.observed_generation, Some(1));
    assert_eq!(recheck_after(&now_restarted), None);

    // the next reconcile finds both up to date: the same condition, nothing to write
    let k = with_condition(k, &c);
    let up_to_date = [
        report(WorkloadKind::Deployment, "web", TargetOutcome::UpToDate),
        report(WorkloadKind::StatefulSet, "db", TargetOutcome::UpToDate),
    ];
    assert_eq!(condition(&k, &up_to_date, 3, &time(500)), Some(c.clone()));

    // the next secret changes the message, and with it the transition time
    let next = condition(&k, &up_to_date, 4, &time(600)).expect("a condition");
    assert_eq!(next.last_transition_time, time(600));
    assert!(next.message.contains("generation 4"), "{}", next.message);

    let one = condition(
        &keyed(vec![]),
        &[report(
            WorkloadKind::DaemonSet,
            "agent",
            TargetOutcome::UpToDate,
        )],
        1,
        &time(1),
    )
    .expect("a condition");
    assert_eq!(
        one.message,
        "1 workload is restarted for client secret generation 1 or started after it: DaemonSet/agent"
    );
}

#[test]
fn missing_workloads_are_named_and_looked_for_again() {
    let reports = [
        report(WorkloadKind::Deployment, "web", TargetOutcome::UpToDate),
        report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
        report(WorkloadKind::DaemonSet, "agent", TargetOutcome::NotFound),
    ];
    let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "TargetNotFound")
    );
    assert_eq!(
        c.message,
        "StatefulSet/db, DaemonSet/agent not found in namespace ns; looked at again every 5 minutes"
    );
    assert_eq!(recheck_after(&reports), Some(RECHECK));
    // unchanged: the transition time stays
    let k = with_condition(keyed(vec![]), &c);
    assert_eq!(condition(&k, &reports, 3, &time(400)), Some(c));
}

#[test]
fn workloads_that_do_not_use_the_secret_are_named_before_missing_ones_and_both_told() {
    let reports = [
        report(WorkloadKind::Deployment, "web", TargetOutcome::Restarted),
        report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
        report(
            WorkloadKind::Deployment,
            "other",
            TargetOutcome::NotUsingSecret,
        ),
        report(
            WorkloadKind::DaemonSet,
            "agent",
            TargetOutcome::NotUsingSecret,
        ),
    ];
    let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "SecretNotUsed")
    );
    assert_eq!(
        c.message,
        "Deployment/other, DaemonSet/agent are not restarted: the operator only restarts workloads whose pod template mounts or references Secret web (volume, projected volume, env or envFrom); and StatefulSet/db not found in namespace ns; looked at again every 5 minutes"
    );
    assert_eq!(recheck_after(&reports[2..3]), Some(RECHECK));

    // the Secret's own name, and one workload
    let mut k = keyed(vec![]);
    k.spec.secret_name = Some("web-credentials".into());
    let c = condition(&k, &reports[2..3], 3, &time(100)).expect("a condition");
    assert_eq!(
        c.message,
        "Deployment/other is not restarted: the operator only restarts workloads whose pod template mounts or references Secret web-credentials (volume, projected volume, env or envFrom); looked at again every 5 minutes"
    );

    // forbidden and rejected come first
    let mut worse = reports.to_vec();
    worse.push(report(
        WorkloadKind::Deployment,
        "api",
        TargetOutcome::Rejected("denied".into()),
    ));
    let c = condition(&keyed(vec![]), &worse, 3, &time(100)).expect("a condition");
    assert_eq!(c.reason, "Rejected");
    worse.push(report(
        WorkloadKind::Deployment,
        "api",
        TargetOutcome::Forbidden("no".into()),
    ));
    let c = condition(&keyed(vec![]), &worse, 3, &time(100)).expect("a condition");
    assert_eq!(c.reason, "Forbidden");
}

#[test]
fn forbidden_wins_and_says_how_to_grant_or_what_to_use_instead() {
    let said = "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:apikey-system:apikey-operator\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"ns\"";
    let reports = [
        report(
            WorkloadKind::Deployment,
            "web",
            TargetOutcome::Forbidden(said.into()),
        ),
        report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
        report(
            WorkloadKind::DaemonSet,
            "agent",
            TargetOutcome::Rejected("denied".into()),
        ),
        report(
            WorkloadKind::Deployment,
            "api",
            TargetOutcome::Forbidden(said.into()),
        ),
    ];
    let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Forbidden")
    );
    for needle in [
        "may not get or patch deployments.apps in namespace ns",
        "Deployment/web, Deployment/api are not restarted",
        "deploy/rollout-restart/",
        "secret.reloader.stakater.com/reload: web",
        said,
    ] {
        assert!(
            c.message.contains(needle),
            "{needle:?} not in {}",
            c.message
        );
    }
    // the lesser problems are told too, after it
    assert!(
        c.message
            .contains("; and the API server refused the rollout restart of DaemonSet/agent")
            && c.message.contains("; and StatefulSet/db not found"),
        "{}",
        c.message
    );
    assert_eq!(recheck_after(&reports), Some(RECHECK));

    // rejected before not found
    let c = condition(&keyed(vec![]), &reports[1..3], 3, &time(100)).expect("a condition");
    assert_eq!(c.reason, "Rejected");
    assert!(
        c.message.contains("DaemonSet/agent") && c.message.contains("denied"),
        "{}",
        c.message
    );

    // from True to Forbidden: a transition
    let ok = condition(
        &keyed(vec![]),
        &[report(
            WorkloadKind::Deployment,
            "web",
            TargetOutcome::UpToDate,
        )],
        3,
        &time(50),
    )
    .expect("a condition");
    let k = with_condition(keyed(vec![]), &ok);
    let c = condition(&k, &reports[..1], 3, &time(100)).expect("a condition");
    assert_eq!(c.last_transition_time, time(100));
    // same reason, another message: a transition too
    let k = with_condition(keyed(vec![]), &c);
    let c2 = condition(&k, &reports, 3, &time(200)).expect("a condition");
    assert_eq!(c2.last_transition_time, time(200));
    let k = with_condition(keyed(vec![]), &c2);
    assert_eq!(
        condition(&k, &reports, 3, &time(300)).map(|c| c.last_transition_time),
        Some(time(200))
    );
}

// ---- the glue, against a mocked API server ----

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ns/deployments/web";
const PATCH_DEPLOYMENT: &str =
    "/apis/apps/v1/namespaces/ns/deployments/web?&fieldManager=apikey-operator";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/ns/statefulsets/db";
const PATCH_STATEFULSET: &str =
    "/apis/apps/v1/namespaces/ns/statefulsets/db?&fieldManager=apikey-operator";
const DAEMONSET: &str = "/apis/apps/v1/namespaces/ns/daemonsets/agent";
const ANNOTATION: &str = "restarted.apikey.dev/web";

/// A workload as the API server returns it: `kind` `name`, created at `created` seconds, at
/// resourceVersion `rv`, with the key's annotation `recorded` if any, and a pod template that
/// mounts the key's Secret `web`.
fn workload(kind: &str, name: &str, created: i64, rv: &str, recorded: Option<&str>) -> Value {
    let pods = json!({
        "containers": [{
            "name": "app",
            "image": "app",
            "volumeMounts": [{ "name": "key", "mountPath": "/var/run/apikey" }],
        }],
        "volumes": [{ "name": "key", "secret": { "secretName": "web" } }],
    });
    workload_running(kind, name, created, rv, recorded, pods)
}

/// [`workload`] with pod template spec `pods`.
fn workload_running(
    kind: &str,
    name: &str,
    created: i64,
    rv: &str,
    recorded: Option<&str>,
    pods: Value,
) -> Value {
    let mut meta = json!({
        "name": name,
        "namespace": "ns",
        "uid": format!("uid-{name}"),
        "resourceVersion": rv,
        "creationTimestamp": time(created),
        "annotations": { "deployment.kubernetes.io/revision": "4" },
    });
    if let Some(value) = recorded {
        meta["annotations"][ANNOTATION] = value.into();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": pods,
            },
        },
    })
}

/// `restart_targets` for `key` at generation `generation` (secret generated at 100 s) on a
/// mocked API server: the running call and the server's end.
fn start(
    key: &ApiKey,
    generation: u64,
) -> (
    tokio::task::JoinHandle<Result<Vec<TargetReport>>>,
    ApiServerVerifier,
) {
    let (ctx, server, _) = context(Vec::new(), Vec::new());
    let client = ctx.client.clone();
    drop(ctx);
    let key = key.clone();
    let running =
        tokio::spawn(
            async move { restart_targets(&client, &key, generation, Some(&time(100))).await },
        );
    (running, server)
}

async fn finished(
    running: tokio::task::JoinHandle<Result<Vec<TargetReport>>>,
    server: ApiServerVerifier,
) -> Result<Vec<TargetReport>> {
    let result = tokio::time::timeout(TIMEOUT, running)
        .await
        .expect("restart_targets finishes")
        .expect("restart_targets does not panic");
    server.expect_no_more_calls().await;
    result
}

fn outcomes(reports: &[TargetReport]) -> Vec<TargetOutcome> {
    reports.iter().map(|r| r.outcome.clone()).collect()
}

#[tokio::test]
async fn a_workload_recorded_at_the_previous_generation_is_restarted_in_one_patch() {
    let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "41",
        Some("2/uid-web"),
    ));
    let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.body,
        json!({
            "metadata": {
                "resourceVersion": "41",
                "annotations": { ANNOTATION: "3/uid-web" },
            },
            "spec": { "template": { "metadata": {
                "annotations": { ANNOTATION: "3/uid-web" },
            } } },
        })
    );
    patch.ok(&workload("Deployment", "web", 10, "42", Some("3/uid-web")));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(
        reports,
        vec![report(
            WorkloadKind::Deployment,
            "web",
            TargetOutcome::Restarted
        )]
    );
}

#[tokio::test]
async fn nothing_is_written_to_an_up_to_date_workload() {
    let k = keyed(vec![
        target(WorkloadKind::Deployment, "web"),
        target(WorkloadKind::StatefulSet, "db"),
    ]);
    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "41",
        Some("3/uid-web"),
    ));
    server.expect(Method::GET, STATEFULSET).await.ok(&workload(
        "StatefulSet",
        "db",
        10,
        "9",
        Some("3/uid-web"),
    ));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(
        outcomes(&reports),
        vec![TargetOutcome::UpToDate, TargetOutcome::UpToDate]
    );
}

#[tokio::test]
async fn a_workload_seen_first_and_created_after_the_secret_is_only_recorded() {
    let k = keyed(vec![target(WorkloadKind::StatefulSet, "db")]);
    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, STATEFULSET).await.ok(&workload(
        "StatefulSet",
        "db",
        150,
        "9",
        None,
    ));
    let patch = server.expect(Method::PATCH, PATCH_STATEFULSET).await;
    assert_eq!(
        patch.body,
        json!({ "metadata": {
            "resourceVersion": "9",
            "annotations": { ANNOTATION: "3/uid-web" },
        } }),
        "no template change"
    );
    patch.ok(&workload("StatefulSet", "db", 150, "10", Some("3/uid-web")));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(outcomes(&reports), vec![TargetOutcome::Recorded]);
}

#[tokio::test]
async fn missing_and_forbidden_workloads_are_reports_not_errors() {
    let k = keyed(vec![
        target(WorkloadKind::Deployment, "web"),
        target(WorkloadKind::DaemonSet, "agent"),
        target(WorkloadKind::StatefulSet, "db"),
    ]);
    let (running, mut server) = start(&k, 3);
    server
        .expect(Method::GET, DEPLOYMENT)
        .await
        .not_found("deployments.apps", "web");
    let denied = "daemonsets.apps \"agent\" is forbidden: User \"system:serviceaccount:apikey-system:apikey-operator\" cannot get resource \"daemonsets\" in API group \"apps\" in the namespace \"ns\"";
    server
        .expect(Method::GET, DAEMONSET)
        .await
        .fail(StatusCode::FORBIDDEN, "Forbidden", denied);
    // allowed to read, not to patch
    server.expect(Method::GET, STATEFULSET).await.ok(&workload(
        "StatefulSet",
        "db",
        10,
        "9",
        Some("2/uid-web"),
    ));
    server.expect(Method::PATCH, PATCH_STATEFULSET).await.fail(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "cannot patch",
    );
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(
        outcomes(&reports),
        vec![
            TargetOutcome::NotFound,
            TargetOutcome::Forbidden(denied.into()),
            TargetOutcome::Forbidden("cannot patch".into()),
        ]
    );
}

#[tokio::test]
async fn a_conflict_reads_again_and_decides_again() {
    let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "41",
        Some("2/uid-web"),
    ));
    server
        .expect(Method::PATCH, PATCH_DEPLOYMENT)
        .await
        .conflict("deployments.apps", "web");
    // meanwhile an earlier run of the operator had restarted it: nothing more to do
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "43",
        Some("3/uid-web"),
    ));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(outcomes(&reports), vec![TargetOutcome::UpToDate]);
}

#[tokio::test]
async fn conflicts_without_end_and_server_errors_are_errors() {
    let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
    let (running, mut server) = start(&k, 3);
    for rv in ["41", "42", "43"] {
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            rv,
            Some("2/uid-web"),
        ));
        let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
        assert_eq!(patch.body["metadata"]["resourceVersion"], rv);
        patch.conflict("deployments.apps", "web");
    }
    let err = finished(running, server).await.expect_err("a conflict");
    assert_eq!(err.metric_label(), "conflict");

    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, DEPLOYMENT).await.fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "etcd is down",
    );
    let err = finished(running, server).await.expect_err("an outage");
    assert!(crate::operator::outage::is_outage(&err), "{err}");
}

#[tokio::test]
async fn a_refused_patch_and_a_workload_gone_meanwhile_are_reports() {
    let k = keyed(vec![
        target(WorkloadKind::Deployment, "web"),
        target(WorkloadKind::StatefulSet, "db"),
    ]);
    let (running, mut server) = start(&k, 3);
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "41",
        Some("2/uid-web"),
    ));
    server.expect(Method::PATCH, PATCH_DEPLOYMENT).await.fail(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        "spec.template: Invalid value",
    );
    server.expect(Method::GET, STATEFULSET).await.ok(&workload(
        "StatefulSet",
        "db",
        10,
        "9",
        Some("2/uid-web"),
    ));
    server
        .expect(Method::PATCH, PATCH_STATEFULSET)
        .await
        .not_found("statefulsets.apps", "db");
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(
        outcomes(&reports),
        vec![
            TargetOutcome::Rejected("spec.template: Invalid value".into()),
            TargetOutcome::NotFound,
        ]
    );
}

#[tokio::test]
async fn a_workload_whose_template_does_not_use_the_secret_is_left_alone() {
    let k = keyed(vec![
        target(WorkloadKind::Deployment, "web"),
        target(WorkloadKind::StatefulSet, "db"),
    ]);
    let (running, mut server) = start(&k, 3);
    // another Secret, and the key's name only on a ConfigMap: recorded at an older
    // generation and created long before the secret, it would be restarted if it used it
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload_running(
        "Deployment",
        "web",
        10,
        "41",
        Some("2/uid-web"),
        json!({
            "containers": [{
                "name": "app",
                "image": "app",
                "envFrom": [{ "secretRef": { "name": "other" } }, { "configMapRef": { "name": "web" } }],
            }],
            "volumes": [{ "name": "key", "secret": { "secretName": "other" } }],
        }),
    ));
    // no PATCH: the next call is the next workload's read
    server.expect(Method::GET, STATEFULSET).await.ok(&workload(
        "StatefulSet",
        "db",
        10,
        "9",
        Some("3/uid-web"),
    ));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(
        outcomes(&reports),
        vec![TargetOutcome::NotUsingSecret, TargetOutcome::UpToDate]
    );
    let c = condition(&k, &reports, 3, &time(200)).expect("a condition");
    assert_eq!(c.reason, REASON_SECRET_NOT_USED);
    assert!(
        c.message.starts_with("Deployment/web is not restarted"),
        "{}",
        c.message
    );
}

#[tokio::test]
async fn a_workload_recorded_at_a_later_generation_is_restarted_in_one_patch() {
    // the key was adopted again at generation 1 after the operator's record key was lost
    let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
    let (running, mut server) = start(&k, 1);
    server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
        "Deployment",
        "web",
        10,
        "41",
        Some("5/uid-web"),
    ));
    let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
    assert_eq!(
        patch.body["spec"]["template"]["metadata"]["annotations"][ANNOTATION],
        "1/uid-web"
    );
    assert_eq!(patch.body["metadata"]["resourceVersion"], "41");
    patch.ok(&workload("Deployment", "web", 10, "42", Some("1/uid-web")));
    let reports = finished(running, server).await.expect("no error");
    assert_eq!(outcomes(&reports), vec![TargetOutcome::Restarted]);
}

#[tokio::test]
async fn no_targets_no_calls() {
    let (running, server) = start(&keyed(vec![]), 3);
    assert_eq!(finished(running, server).await.expect("no error"), vec![]);
}
