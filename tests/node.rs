//! The operator as users run it: `kubectl apply -f crds/ && kubectl apply -k deploy/` with the image
//! built here, as pods on the local cluster's node (tests/cluster/up --node, tests/cluster/node):
//! two Ready replicas and one leader that hands over when its pod goes; the hardened pod settings
//! of deploy/ in force on the real processes; a workload's mounted Secret following a rotation;
//! a client pod getting a token through the token server's Service.
//!
//! Needs the node and, loaded into it, the operator's image as `apikey-operator:0.1.0` and the
//! example client as `apikey-token-client:test` (scripts/test builds and loads both). Ignored in
//! the parallel run, because deploy/ installs an operator for the whole cluster that would
//! reconcile every other test's keys: scripts/test runs them alone, after the others:
//! `cargo test --test node -- --ignored --test-threads 1`. Each test installs deploy/ and
//! uninstalls it when it ends, passed or failed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const OPERATOR_NS: &str = "apikey-system";
const TOKEN_NS: &str = "apikey-token-server";
/// deploy/token-server/deployment.yaml's APIKEY_TOKEN_ISSUER, and so the `iss` of its tokens.
const ISSUER: &str = "https://apikey-token-server.apikey-token-server.svc";
/// The operator's default --lease-duration-seconds, which deploy/ keeps.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// deploy/ installed on the node's cluster (with the TLS Secret the token server needs),
/// uninstalled on drop.
struct Deployed;

impl Deployed {
    fn install() -> Self {
        let nodes = ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert!(
            !nodes.trim().is_empty(),
            "the cluster has no node: start it with tests/cluster/up --node (scripts/test does)"
        );
        let installed = Deployed;
        ok(&["apply", "--server-side", "-f", "crds/"]);
        ok(&[
            "wait",
            "--for=condition=Established",
            "crd/apikeys.apikey.dev",
        ]);
        ok(&["apply", "-k", "deploy/"]);
        token_server_tls();
        for (ns, name) in [
            (OPERATOR_NS, "apikey-operator"),
            (TOKEN_NS, "apikey-token-server"),
        ] {
            let rollout = run(
                &[
                    "-n",
                    ns,
                    "rollout",
                    "status",
                    &format!("deployment/{name}"),
                    "--timeout=180s",
                ],
                None,
            );
            assert!(
                rollout.status.success(),
                "deployment/{name} in {ns} did not roll out: {}\n{}",
                String::from_utf8_lossy(&rollout.stderr),
                why_not_ready(ns)
            );
        }
        installed
    }
}

/// What explains pods of `ns` that are not Ready: their phases and container states, the
/// namespace's events, the node's conditions and the last lines of the node's kubelet and
/// containerd logs (tests/cluster/node writes them beside the cluster's state).
fn why_not_ready(ns: &str) -> String {
    let mut report = String::new();
    for args in [
        &["-n", ns, "get", "pods", "-o", "wide"][..],
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{\"\\n\"}{.status.containerStatuses}{\"\\n\"}{end}",
        ],
        &["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}: {.spec.taints} {.status.conditions}{\"\\n\"}{end}",
        ],
    ] {
        let out = run(args, None);
        report.push_str(&format!(
            "--- kubectl {}\n{}{}\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for log in ["kubelet.log", "containerd.log"] {
        let path = state_dir().join("node").join(log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        report.push_str(&format!("--- last lines of {}\n", path.display()));
        for line in tail.into_iter().rev() {
            report.push_str(line);
            report.push('\n');
        }
    }
    report
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = run(
            &[
                "delete",
                "-k",
                "deploy/",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        );
    }
}

/// The Secret `apikey-token-server-tls` that deploy/token-server documents as the installer's to
/// make (tests/cluster/token-server-tls: signed by the cluster's CA, so that pods trust it through
/// the `kube-root-ca.crt` ConfigMap of their namespace).
fn token_server_tls() {
    let mut cmd = Command::new(root().join("tests/cluster/token-server-tls"));
    cmd.env("APIKEY_CLUSTER_STATE", state_dir());
    stdout_of(cmd);
}

/// The cluster's state folder (beside its kubeconfig), which tests/cluster's scripts read.
fn state_dir() -> PathBuf {
    kubeconfig()
        .parent()
        .expect("the state folder")
        .to_path_buf()
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(&all)).expect("kubectl's JSON")
}

/// The pods of `ns` with label `app.kubernetes.io/name=<name>` that are not being deleted.
fn pods(ns: &str, name: &str) -> Vec<Value> {
    let list = json(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/name={name}"),
    ]);
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .expect("a pod's name")
        .to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// `apikey_leader` as the pod's /metrics answers it, through the API server's pod proxy.
fn leader_gauge(pod: &str) -> f64 {
    let text = ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}:8080/proxy/metrics"),
    ]);
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics");
    sum_samples(&scrape, "apikey_leader", "", "")
}

fn lease_holder() -> String {
    ok(&[
        "-n",
        OPERATOR_NS,
        "get",
        "lease",
        "apikey-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

#[test]
#[ignore = "installs deploy/ for the whole cluster: scripts/test runs it alone, on the node"]
fn deploy_runs_two_ready_replicas_one_leader_and_the_other_takes_over_when_its_pod_goes() {
    let _deployed = Deployed::install();
    let operators = eventually("two Ready operator pods", Duration::from_secs(60), || {
        let p = pods(OPERATOR_NS, "apikey-operator");
        (p.len() == 2 && p.iter().all(is_ready)).then_some(p)
    });
    let servers = pods(TOKEN_NS, "apikey-token-server");
    assert_eq!(servers.len(), 2, "two token server pods");
    assert!(
        servers.iter().all(is_ready),
        "every token server pod is Ready"
    );

    // exactly one leader: the Lease names it, and only its gauge says so
    let names: Vec<String> = operators.iter().map(name_of).collect();
    let leader = eventually(
        "the Lease held by one of the pods",
        Duration::from_secs(30),
        || {
            let holder = lease_holder();
            names
                .iter()
                .find(|n| holder.starts_with(n.as_str()))
                .cloned()
        },
    );
    let gauges: Vec<f64> = names.iter().map(|n| leader_gauge(n)).collect();
    assert_eq!(
        gauges.iter().filter(|g| **g == 1.0).count(),
        1,
        "one leader among {names:?}: {gauges:?}"
    );
    assert_eq!(
        gauges[names.iter().position(|n| *n == leader).expect("leader")],
        1.0
    );

    let ns = TempNamespace::new("node-leader");
    ns.apply(&key_yaml("before", "nina", "", None, None));
    wait_ready(&ns, &["before"]);

    // the leader's pod goes (as a node drain or a rollout takes it): once it is gone, a new key is
    // reconciled by the other replica, within the lease duration plus a few seconds of the delete
    let start = Instant::now();
    ok(&["-n", OPERATOR_NS, "delete", "pod", &leader, "--wait=false"]);
    ok(&[
        "-n",
        OPERATOR_NS,
        "wait",
        "--for=delete",
        &format!("pod/{leader}"),
        "--timeout=60s",
    ]);
    let gone = start.elapsed();
    ns.apply(&key_yaml("after", "otto", "", None, None));
    let budget = (LEASE_DURATION + Duration::from_secs(10)).saturating_sub(gone);
    ns.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/after",
        &format!("--timeout={}s", budget.as_secs().max(1)),
    ]);
    let took = start.elapsed();
    // the one that took over: the other replica, or the pod the Deployment started in the
    // deleted one's place if it asked first (the leader releases the Lease when it stops)
    let holder = lease_holder();
    let live: Vec<String> = pods(OPERATOR_NS, "apikey-operator")
        .iter()
        .map(name_of)
        .collect();
    assert!(
        !holder.starts_with(&leader) && live.iter().any(|p| holder.starts_with(p.as_str())),
        "a live pod other than {leader} holds the Lease ({holder}; live: {live:?})"
    );
    println!(
        "takeover: the leader's pod was gone {:.1} s after its delete; {holder} reconciled a new ApiKey {:.1} s after the delete",
        gone.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        !ns.jsonpath("secret/after", "{.data.client_secret}")
            .is_empty(),
        "the new key has its Secret"
    );

    // a leader that stops answering (its process frozen with SIGSTOP, as a hung process or a
    // partitioned node would be) cannot renew: another replica takes the Lease once it expires and
    // reconciles a new key within the lease duration plus a few seconds; thawed, the old leader
    // finds the Lease gone and exits (the kubelet restarts it) instead of reconciling beside it.
    // (A SIGKILL would not show this: the kubelet restarts the container within a second, and the
    // new process, PID 1 of the same pod, has the same identity and carries on the Lease at once.)
    let frozen_pod = eventually("the new leader's pod", Duration::from_secs(30), || {
        let holder = lease_holder();
        pods(OPERATOR_NS, "apikey-operator")
            .into_iter()
            .find(|p| is_ready(p) && holder.starts_with(name_of(p).as_str()))
    });
    let frozen_name = name_of(&frozen_pod);
    let restarts = |name: &str| {
        json(&["-n", OPERATOR_NS, "get", "pod", name])["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .expect("restartCount")
    };
    let restarts_before = restarts(&frozen_name);
    let pid = container_pid(&frozen_pod).to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} the leader's process");
    };
    signal("-STOP");
    let stopped = Instant::now();
    ns.apply(&key_yaml("after-freeze", "olga", "", None, None));
    let budget = LEASE_DURATION + Duration::from_secs(10);
    let waited = run(
        &[
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            "apikey/after-freeze",
            &format!("--timeout={}s", budget.as_secs()),
        ],
        None,
    );
    let took = stopped.elapsed();
    let holder = lease_holder();
    signal("-CONT");
    assert!(
        waited.status.success(),
        "a new key reconciled within {budget:?} of the leader's freeze"
    );
    assert!(
        !holder.starts_with(&frozen_name),
        "another pod took the Lease from the frozen {frozen_name} ({holder})"
    );
    println!(
        "freeze: {holder} took over and reconciled a new ApiKey {:.1} s after the leader's process was stopped",
        took.as_secs_f64()
    );
    eventually(
        "the thawed leader to exit and be restarted",
        Duration::from_secs(60),
        || (restarts(&frozen_name) > restarts_before).then_some(()),
    );

    // and the Deployment is whole again
    eventually(
        "two Ready operator pods again",
        Duration::from_secs(90),
        || {
            let p = pods(OPERATOR_NS, "apikey-operator");
            (p.len() == 2 && p.iter().all(is_ready)).then_some(())
        },
    );
}

/// The containerd task of a pod's first container, as the node's `ctr` lists it: its host PID.
fn container_pid(pod: &Value) -> u32 {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("a containerd container id")
        .to_owned();
    let mut ctr = Command::new(root().join("tests/cluster/node"));
    ctr.args(["ctr", "tasks", "ls"])
        .env("APIKEY_CLUSTER_STATE", state_dir());
    let tasks = stdout_of(ctr);
    tasks
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id.as_str())).then(|| f[1].parse().expect("a pid"))
        })
        .unwrap_or_else(|| panic!("no task for container {id}"))
}

#[test]
#[ignore = "installs deploy/ for the whole cluster: scripts/test runs it alone, on the node"]
fn the_pods_run_non_root_read_only_without_capabilities_under_seccomp_as_deploy_says() {
    let _deployed = Deployed::install();
    let all: Vec<Value> = pods(OPERATOR_NS, "apikey-operator")
        .into_iter()
        .chain(pods(TOKEN_NS, "apikey-token-server"))
        .collect();
    assert_eq!(all.len(), 4);
    for pod in &all {
        let name = name_of(pod);
        // the settings come from deploy/ unchanged ...
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let sc = &spec["containers"][0]["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        // ... and hold for the process the runtime started (read from the host's /proc)
        let pid = container_pid(pod);
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{k}:"))
                        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .unwrap_or_default()
        };
        assert_eq!(field("Uid"), "65532 65532 65532 65532", "{name}: user");
        assert_eq!(field("Gid"), "65532 65532 65532 65532", "{name}: group");
        for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            assert_eq!(field(caps), "0000000000000000", "{name}: {caps}");
        }
        assert_eq!(field("NoNewPrivs"), "1", "{name}: no new privileges");
        assert_eq!(
            field("Seccomp"),
            "2",
            "{name}: a seccomp filter (RuntimeDefault)"
        );
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root_options = mountinfo
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(4) == Some(&"/"))
            .map(|f| f[5].to_owned())
            .expect("the root mount");
        assert!(
            root_options.split(',').any(|o| o == "ro"),
            "{name}: the root filesystem is read-only ({root_options})"
        );
    }
}

/// Reads a file in a pod's container without printing it.
fn file_in_pod(ns: &TempNamespace, pod: &str, path: &str) -> String {
    ns.ok(&["exec", pod, "--", "cat", path])
}

#[test]
#[ignore = "installs deploy/ for the whole cluster: scripts/test runs it alone, on the node"]
fn a_workload_sees_the_new_secret_in_its_mounted_file_after_a_regeneration_by_label_selector() {
    let _deployed = Deployed::install();
    let ns = TempNamespace::new("node-mount");
    ns.ok(&[
        "apply",
        "-f",
        "deploy/examples/apikeys.yaml",
        "-f",
        "deploy/examples/client-deployment.yaml",
    ]);
    wait_ready(&ns, &["checkout", "refunds", "indexer"]);
    ns.ok(&["rollout", "status", "deployment/checkout", "--timeout=120s"]);
    let pod = ns.ok(&[
        "get",
        "pods",
        "-l",
        "app=checkout",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let (_, first) = credentials(&ns, "checkout");
    assert!(
        file_in_pod(&ns, &pod, "/var/run/apikey/client_secret") == first,
        "the pod reads the Secret's client secret"
    );
    // the example's own output: it can read the file as its non-root user
    let logs = eventually("the example's first line", Duration::from_secs(30), || {
        let l = ns.ok(&["logs", &pod]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(
        logs.trim(),
        format!("{} /var/run/apikey/client_secret", first.len())
    );

    let annotated = Instant::now();
    ns.ok(&[
        "annotate",
        "apikeys",
        "-l",
        "team=payments",
        "apikey.dev/regenerate=node-test",
        "--overwrite",
    ]);
    let second = eventually(
        "the Secret's new client secret",
        Duration::from_secs(30),
        || {
            let (_, s) = credentials(&ns, "checkout");
            (s != first).then_some(s)
        },
    );
    let written = Instant::now();
    // no watch reaches into a pod's files: read the file once a second (kubelet refreshes mounted
    // Secrets on its pod sync, every syncFrequency (60 s) plus jitter)
    eventually(
        "the mounted file to hold the new secret",
        Duration::from_secs(150),
        || {
            let now = file_in_pod(&ns, &pod, "/var/run/apikey/client_secret");
            assert!(
                now == first || now == second,
                "the file holds either secret, never anything else"
            );
            if now == second {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(800));
            None
        },
    );
    println!(
        "mounted Secret: the file changed {:.1} s after the Secret did ({:.1} s after the annotation)",
        written.elapsed().as_secs_f64(),
        annotated.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "installs deploy/ for the whole cluster: scripts/test runs it alone, on the node"]
fn a_client_pod_gets_a_token_through_the_token_servers_service_with_its_mounted_credentials() {
    let _deployed = Deployed::install();
    let ns = TempNamespace::new("node-token");
    ns.apply(&key_yaml("shop", "shop-frontend", "", None, None));
    wait_ready(&ns, &["shop"]);
    let (client_id, _) = credentials(&ns, "shop");
    // This cluster runs no DNS server: the pod resolves the Service's name (the issuer's host)
    // to its cluster IP through /etc/hosts. The cluster IP reaches the pods through kube-proxy.
    let cluster_ip = ok(&[
        "-n",
        TOKEN_NS,
        "get",
        "service",
        "apikey-token-server",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let host = ISSUER.trim_start_matches("https://");
    // The Service answers once its EndpointSlice lists a ready pod and kube-proxy has written
    // its rules; the second cannot be read from the API, so the client, like a Job's pod,
    // is restarted on failure (the kubelet's back-off) and the test waits for its success.
    eventually(
        "the token server's Service to list a ready endpoint",
        Duration::from_secs(60),
        || {
            let ready = ok(&[
                "-n",
                TOKEN_NS,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=apikey-token-server",
                "-o",
                "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
            ]);
            (!ready.trim().is_empty()).then_some(())
        },
    );
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  restartPolicy: OnFailure
  hostAliases: [{{ip: "{cluster_ip}", hostnames: ["{host}"]}}]
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
    - name: client
      image: apikey-token-client:test
      env:
        - {{name: APIKEY_TOKEN_URL, value: "{ISSUER}/oauth2/token"}}
        - {{name: APIKEY_CA_FILE, value: /etc/cluster-ca/ca.crt}}
      securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
      volumeMounts:
        - {{name: apikey, mountPath: /var/run/apikey, readOnly: true}}
        - {{name: ca, mountPath: /etc/cluster-ca, readOnly: true}}
  volumes:
    - {{name: apikey, secret: {{secretName: shop, defaultMode: 0400}}}}
    - {{name: ca, configMap: {{name: kube-root-ca.crt}}}}
"#
    ));
    // Succeeded, or three failed attempts (the kubelet restarts it after 10, 20, 40 s)
    let (phase, restarts) = eventually(
        "the client pod to succeed or fail three times",
        Duration::from_secs(120),
        || {
            let p = ns.jsonpath("pod/client", "{.status.phase}");
            let restarts: u32 = ns
                .jsonpath("pod/client", "{.status.containerStatuses[0].restartCount}")
                .parse()
                .unwrap_or(0);
            (p == "Succeeded" || restarts >= 3).then_some((p, restarts))
        },
    );
    if phase != "Succeeded" {
        let last = run(&["-n", &ns.name, "logs", "client", "--previous"], None);
        panic!(
            "the client got no token in {} attempts: {}",
            restarts + 1,
            String::from_utf8_lossy(&last.stdout)
        );
    }
    if restarts > 0 {
        eprintln!("token client: succeeded after {restarts} failed attempt(s)");
    }
    let out = ns.ok(&["logs", "client"]);
    let got: Value = serde_json::from_str(out.trim()).expect("the client's JSON line");
    assert_eq!(got["token_type"], "Bearer");
    let claims = &got["claims"];
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "shop-frontend");
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["apikey"]["namespace"], ns.name.as_str());
    assert_eq!(claims["apikey"]["name"], "shop");
    // The client verified the server's certificate for the issuer's name against the cluster's
    // CA, so the token came from the token server; its kid names a key the server publishes (read
    // through the API server's service proxy).
    let jwks: Value = serde_json::from_str(&ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{TOKEN_NS}/services/https:apikey-token-server:https/proxy/oauth2/jwks"),
    ]))
    .expect("JWKS");
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        kids.contains(&&got["kid"]),
        "the token's kid {} is one of the JWKS's {kids:?}",
        got["kid"]
    );
    // `kubectl apikey token` gets one the same way from the administrator's side, through the API
    // server's service proxy, and prints its claims but neither the secret nor the token.
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-apikey"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl_bin())
        .args(["apikey", "token", "shop", "-n", &ns.name])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl apikey token runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl apikey token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, client_secret) = credentials(&ns, "shop");
    assert!(
        !stdout.contains(&client_secret),
        "no client secret in the output"
    );
    let decoded: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(decoded["token_type"], "Bearer");
    assert_eq!(decoded["claims"]["sub"], "shop-frontend");
    assert_eq!(decoded["claims"]["client_id"], client_id.as_str());
    assert_eq!(decoded["claims"]["iss"], ISSUER);
    assert!(kids.contains(&&decoded["header"]["kid"]), "{decoded}");
}
