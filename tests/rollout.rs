//! Rollout restarts of the workloads that use a key (`spec.rolloutRestart`), end to end against
//! the local control plane: one pod-template change per new client secret per workload, also
//! when the operator is killed between the Secret's write and the restart; a workload that is
//! missing, may not be patched or does not use the key's Secret is a condition, not a failing
//! loop, and the last is never restarted; deploy/rollout-restart/ grants exactly the rights the
//! feature needs.
//!
//! The local control plane has no node and runs no workload controllers, so no pod runs; what a
//! rollout restart is, a change of the pod template, is counted on a watch of the workload.

mod common;

use std::time::Duration;

use common::*;

/// A Deployment `name` whose pods mount Secret `secret`.
fn deployment(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: client:local, volumeMounts: [{{name: key, mountPath: /var/run/apikey, readOnly: true}}]}}\n      volumes:\n      - {{name: key, secret: {{secretName: {secret}}}}}\n---\n"
    )
}

/// A StatefulSet `name` whose pods mount Secret `secret`.
fn stateful_set(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: client:local, volumeMounts: [{{name: key, mountPath: /var/run/apikey, readOnly: true}}]}}\n      volumes:\n      - {{name: key, secret: {{secretName: {secret}}}}}\n---\n"
    )
}

/// An ApiKey `name` that restarts `targets` (`Kind/name`).
fn key_restarting(name: &str, targets: &[&str]) -> String {
    let targets: String = targets
        .iter()
        .map(|t| {
            let (kind, workload) = t.split_once('/').expect("Kind/name");
            format!("\n  - {{kind: {kind}, name: {workload}}}")
        })
        .collect();
    format!(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\nspec:\n  user: user-{name}\n  rolloutRestart:{targets}\n---\n"
    )
}

/// The pod templates a workload has had, from a watch of it (every write of the workload is an
/// event; a Deployment's `metadata.generation` will not do: it also counts changes of its
/// annotations).
struct Templates {
    _watch: KillOnDrop,
    log: std::path::PathBuf,
    workload: String,
}

impl Templates {
    /// Starts watching `workload` (`deployment/x`), which exists.
    fn watch(ns: &TempNamespace, workload: &str) -> Self {
        let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "templates-{}-{}.log",
            ns.name,
            workload.replace('/', "-")
        ));
        let file = std::fs::File::create(&log).expect("watch log");
        let child = kubectl()
            .args([
                "-n",
                &ns.name,
                "get",
                workload,
                "--watch",
                "-o",
                "jsonpath={.spec.template}{\"\\n\"}",
            ])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl get --watch");
        let templates = Self {
            _watch: KillOnDrop(child),
            log,
            workload: workload.into(),
        };
        eventually("the watch to start", Duration::from_secs(30), || {
            (templates.seen() > 0).then_some(())
        });
        templates
    }

    /// How many different templates the watch has seen, one after the other.
    fn seen(&self) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        lines.dedup();
        lines.len()
    }

    /// Waits until the workload has had `n` templates, then checks it has had no more.
    fn assert_seen(&self, n: usize, why: &str) {
        let seen = eventually(
            &format!("{} to have had {n} pod templates", self.workload),
            Duration::from_secs(60),
            || Some(self.seen()).filter(|t| *t >= n),
        );
        assert_eq!(seen, n, "{}: {why}", self.workload);
    }
}

/// The operator's record of ApiKey `key` on a workload, and the pod template's annotation.
fn restart_annotations(ns: &TempNamespace, workload: &str, key: &str) -> (String, String) {
    let escaped = format!("restarted\\.apikey\\.dev/{key}");
    (
        ns.jsonpath(workload, &format!("{{.metadata.annotations.{escaped}}}")),
        ns.jsonpath(
            workload,
            &format!("{{.spec.template.metadata.annotations.{escaped}}}"),
        ),
    )
}

/// The `RolloutRestart` condition's (status, reason, message) of ApiKey `key`.
fn rollout_condition(ns: &TempNamespace, key: &str) -> (String, String, String) {
    let field = |f: &str| {
        ns.jsonpath(
            &format!("apikey/{key}"),
            &format!("{{.status.conditions[?(@.type==\"RolloutRestart\")].{f}}}"),
        )
    };
    (field("status"), field("reason"), field("message"))
}

/// Waits (by watch) until `key`'s RolloutRestart condition has `reason`.
fn wait_rollout_reason(ns: &TempNamespace, key: &str, reason: &str) {
    ns.ok(&[
        "wait",
        &format!(
            "--for=jsonpath={{.status.conditions[?(@.type==\"RolloutRestart\")].reason}}={reason}"
        ),
        "--timeout=60s",
        &format!("apikey/{key}"),
    ]);
}

/// Waits until the workload records generation `generation` of ApiKey `key`.
fn wait_recorded(ns: &TempNamespace, workload: &str, key: &str, generation: u32) {
    let uid = ns.jsonpath(&format!("apikey/{key}"), "{.metadata.uid}");
    let want = format!("{generation}/{uid}");
    eventually(
        &format!("{workload} to record generation {generation} of {key}"),
        Duration::from_secs(60),
        || (restart_annotations(ns, workload, key).0 == want).then_some(()),
    );
}

#[test]
fn each_new_secret_restarts_each_workload_exactly_once_also_across_sigkills() {
    install_crd();
    let ns = TempNamespace::new("rollout-once");
    ns.apply(&(deployment("web", "k") + &stateful_set("db", "k")));
    let watched = [
        Templates::watch(&ns, "deployment/web"),
        Templates::watch(&ns, "statefulset/db"),
    ];
    let mut op = Operator::start(&ns.name);
    ns.apply(&key_restarting("k", &["Deployment/web", "StatefulSet/db"]));
    wait_ready(&ns, &["k"]);
    wait_rollout_reason(&ns, "k", "Restarted");
    // the key's first secret: recorded, nothing restarted (the pods start with it)
    wait_recorded(&ns, "deployment/web", "k", 1);
    wait_recorded(&ns, "statefulset/db", "k", 1);
    for templates in &watched {
        templates.assert_seen(1, "not restarted for the first secret");
    }
    assert_eq!(restart_annotations(&ns, "deployment/web", "k").1, "");

    // each regeneration: the operator is killed at a spread-out moment (before the Secret's write,
    // between it and the restarts, after), started again, and each workload's template changes
    // exactly once
    let delays_ms = [0u64, 60, 150, 300, 600];
    for (i, delay) in delays_ms.iter().enumerate() {
        let generation = i as u32 + 2;
        let value = format!("r{i}");
        regenerate(&ns, "k", &value);
        std::thread::sleep(Duration::from_millis(*delay));
        op.restart();
        wait_handled(&ns, "k", &value);
        for (workload, templates) in ["deployment/web", "statefulset/db"].iter().zip(&watched) {
            wait_recorded(&ns, workload, "k", generation);
            let (record, template) = restart_annotations(&ns, workload, "k");
            assert_eq!(
                record, template,
                "{workload}: restarted for what it records"
            );
            templates.assert_seen(
                generation as usize,
                &format!("one new pod template per new secret (delay {delay} ms)"),
            );
        }
    }
    let rotations = delays_ms.len();
    // events are best effort: a SIGKILL between a restart and its event loses the event, but
    // none is ever published twice (each is named after the generation and the workload)
    let announced = events(&ns, "k", "RolloutRestarted");
    assert!(
        announced <= 2 * rotations,
        "{announced} events for {rotations} rotations"
    );
    // restarts, resyncs and re-applies restart nothing more
    op.restart();
    ns.apply(&key_restarting("k", &["Deployment/web", "StatefulSet/db"]));
    wait_ready(&ns, &["k"]);
    let mark = op.mark();
    ns.ok(&["label", "apikey", "k", "touched=1"]);
    let version = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    op.wait_reconciled(mark, "k", &version);
    for templates in &watched {
        templates.assert_seen(rotations + 1, "nothing more");
    }
    assert_eq!(
        (rollout_condition(&ns, "k").0, rollout_condition(&ns, "k").1),
        ("True".to_string(), "Restarted".to_string())
    );
}

#[test]
fn a_missing_or_forbidden_workload_is_a_condition_not_a_loop_and_the_restart_comes_once_allowed() {
    install_crd();
    let ns = TempNamespace::new("rollout-refused");
    // the operator runs as a ServiceAccount of this namespace with deploy/namespaced/'s rights
    // and none on workloads
    let role = std::fs::read_to_string(root().join("deploy/namespaced/role.yaml"))
        .expect("deploy/namespaced/role.yaml")
        .replace("namespace: apps", &format!("namespace: {}", ns.name))
        .replace(
            "namespace: apikey-system",
            &format!("namespace: {}", ns.name),
        );
    ns.apply(&role);
    ns.ok(&["create", "serviceaccount", "apikey-operator"]);
    let token = ns.ok(&["create", "token", "apikey-operator", "--duration=1h"]);
    let (server, ca) = cluster_endpoint();
    let config = scratch_file(
        &format!("rollout-sa-{}.kubeconfig", ns.name),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server}, certificate-authority: {ca}}}\nusers:\n- name: sa\n  user: {{token: {}}}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa}}\ncurrent-context: sa\n",
            token.trim()
        ),
    );
    // `other` mounts another Secret: named in the list at the end, it is never restarted
    ns.apply(&(deployment("web", "k") + &deployment("other", "elsewhere")));
    let web = Templates::watch(&ns, "deployment/web");
    let other = Templates::watch(&ns, "deployment/other");
    let mut op = Operator::start_as(&ns.name, &config);
    ns.apply(&key_restarting(
        "k",
        &["Deployment/web", "Deployment/absent"],
    ));
    wait_ready(&ns, &["k"]);
    wait_rollout_reason(&ns, "k", "Forbidden");
    let (status, _, message) = rollout_condition(&ns, "k");
    assert_eq!(status, "False");
    for part in [
        "deployments.apps",
        "deploy/rollout-restart/",
        "secret.reloader.stakater.com/reload",
    ] {
        assert!(message.contains(part), "{part} in: {message}");
    }
    assert_eq!(events(&ns, "k", "Forbidden"), 1, "one Warning event");

    // a new secret meanwhile: written, but the workload cannot be restarted
    ns.ok(&["annotate", "apikey", "k", "apikey.dev/regenerate=1"]);
    wait_handled(&ns, "k", "1");
    wait_ready(&ns, &["k"]);
    // no failing reconcile and no loop: the key is looked at again in minutes, not retried; a
    // short wait is the only way to see that nothing happens
    let reconciles = op.metric_total("apikey_reconciles_total");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(op.metric_total("apikey_reconcile_failures_total"), 0.0);
    assert!(
        op.metric_total("apikey_reconciles_total") <= reconciles + 1.0,
        "no reconcile loop"
    );
    web.assert_seen(1, "not restarted without the right");

    // the rights granted (deploy/rollout-restart/namespaced/, for this namespace), and the
    // operator killed and started again, as if it had died between the Secret's write and the
    // restart: the restart comes, once
    let grant = std::fs::read_to_string(root().join("deploy/rollout-restart/namespaced/role.yaml"))
        .expect("deploy/rollout-restart/namespaced/role.yaml")
        .replace("namespace: apps", &format!("namespace: {}", ns.name))
        .replace(
            "namespace: apikey-system",
            &format!("namespace: {}", ns.name),
        );
    ns.apply(&grant);
    op.restart();
    wait_rollout_reason(&ns, "k", "TargetNotFound");
    wait_recorded(&ns, "deployment/web", "k", 2);
    web.assert_seen(2, "restarted once");
    assert_eq!(events(&ns, "k", "RolloutRestarted"), 1);
    let (status, _, message) = rollout_condition(&ns, "k");
    assert_eq!(status, "False");
    assert!(message.contains("Deployment/absent"), "{message}");
    assert_eq!(
        ns.jsonpath(
            "apikey/k",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True",
        "a missing workload does not make the key unusable"
    );

    // the missing workload appears (after the current secret): recorded, not restarted
    ns.apply(&deployment("absent", "k"));
    let absent = Templates::watch(&ns, "deployment/absent");
    ns.ok(&["label", "apikey", "k", "look=again"]);
    wait_rollout_reason(&ns, "k", "Restarted");
    wait_recorded(&ns, "deployment/absent", "k", 2);
    absent.assert_seen(1, "created after the secret: not restarted");
    op.restart();
    wait_ready(&ns, &["k"]);
    let mark = op.mark();
    ns.ok(&["label", "apikey", "k", "look=once-more", "--overwrite"]);
    let version = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    op.wait_reconciled(mark, "k", &version);
    web.assert_seen(2, "and only once");

    // a workload whose pods do not use Secret k, named in the list: created before the current
    // secret, it would be restarted if they did; it is left alone, and the condition names it
    ns.apply(&key_restarting(
        "k",
        &["Deployment/web", "Deployment/absent", "Deployment/other"],
    ));
    wait_rollout_reason(&ns, "k", "SecretNotUsed");
    let (status, _, message) = rollout_condition(&ns, "k");
    assert_eq!(status, "False");
    for part in ["Deployment/other", "Secret k"] {
        assert!(message.contains(part), "{part} in: {message}");
    }
    assert!(!message.contains("Deployment/web"), "{message}");
    assert_eq!(
        restart_annotations(&ns, "deployment/other", "k"),
        (String::new(), String::new()),
        "nothing written to it"
    );
    other.assert_seen(1, "does not use the key's Secret: never restarted");
    web.assert_seen(2, "nothing more");
    absent.assert_seen(1, "nothing more");
    assert_eq!(op.metric_total("apikey_reconcile_failures_total"), 0.0);
}

#[test]
fn deploy_rollout_restart_grants_get_and_patch_of_workloads_and_nothing_more() {
    install_crd();
    let sa = "system:serviceaccount:apikey-system:apikey-operator";
    apply_deploy_without_workloads();
    let can = |verb: &str, resource: &str| {
        let out = run(
            &["auth", "can-i", verb, resource, "--as", sa, "-n", "default"],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(
        !can("patch", "deployments.apps"),
        "deploy/ alone does not grant it"
    );
    let component = root().join("deploy/rollout-restart");
    ok(&["apply", "-k", component.to_str().expect("utf-8")]);
    let granted: Vec<bool> = ["deployments.apps", "statefulsets.apps", "daemonsets.apps"]
        .iter()
        .flat_map(|r| [can("get", r), can("patch", r)])
        .collect();
    let refused: Vec<bool> = [
        ("list", "deployments.apps"),
        ("watch", "deployments.apps"),
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("update", "deployments.apps"),
        ("patch", "replicasets.apps"),
        ("patch", "pods"),
    ]
    .iter()
    .map(|(v, r)| can(v, r))
    .collect();
    ok(&[
        "delete",
        "-k",
        component.to_str().expect("utf-8"),
        "--wait=false",
    ]);
    assert!(granted.iter().all(|g| *g), "get and patch: {granted:?}");
    assert!(refused.iter().all(|r| !r), "nothing more: {refused:?}");
}
