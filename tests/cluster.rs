//! The local control plane (tests/cluster) does what the operator's tests rely on: it is ready and
//! the pinned version, validates CRDs by schema and CEL, collects garbage, deletes namespaces, and
//! authenticates service-account tokens under RBAC.

mod common;

use common::*;

#[test]
fn readyz_is_ok_and_version_is_pinned() {
    assert_eq!(ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    let version: serde_json::Value =
        serde_json::from_str(&ok(&["get", "--raw", "/version"])).expect("version JSON");
    assert_eq!(version["gitVersion"], "v1.37.2", "{version}");
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.apikey.dev
spec:
  group: e2e.apikey.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "self.size <= self.max"
              message: "size must not exceed max"
            properties:
              size: {type: integer}
              max: {type: integer, default: 10}
"#;

#[test]
fn crd_is_established_and_rejects_schema_and_cel_violations() {
    ok_with(&["apply", "-f", "-"], Some(WIDGET_CRD));
    ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.e2e.apikey.dev",
        "--timeout=60s",
    ]);
    let ns = TempNamespace::new("crd");
    let widget = |spec: &str| {
        format!(
            "apiVersion: e2e.apikey.dev/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {spec}\n"
        )
    };

    let schema = ns.fails(&["apply", "-f", "-"], Some(&widget("{size: \"big\"}")));
    assert!(
        schema.contains("spec.size") && schema.contains("integer"),
        "{schema}"
    );

    let cel = ns.fails(&["apply", "-f", "-"], Some(&widget("{size: 11}")));
    assert!(cel.contains("size must not exceed max"), "{cel}");

    ns.apply(&widget("{size: 3}"));
    assert_eq!(
        ns.jsonpath("widget/w", "{.spec.max}"),
        "10",
        "schema default applied"
    );
}

#[test]
fn owned_object_is_garbage_collected_after_its_owner() {
    let ns = TempNamespace::new("gc");
    ns.ok(&["create", "configmap", "owner"]);
    let uid = ns.jsonpath("configmap/owner", "{.metadata.uid}");
    ns.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}, controller: true}}\n"
    ));
    ns.ok(&["delete", "configmap", "owner"]);
    ns.ok(&["wait", "--for=delete", "configmap/child", "--timeout=60s"]);
    assert!(
        ns.ok(&["get", "configmaps", "-o", "name"])
            .lines()
            .all(|l| l != "configmap/child")
    );
}

#[test]
fn deleted_namespace_with_objects_is_gone() {
    let ns = TempNamespace::new("nsdel");
    ns.ok(&["create", "configmap", "a"]);
    ns.ok(&["create", "secret", "generic", "b", "--from-literal=k=v"]);
    ok(&["delete", "namespace", &ns.name, "--timeout=120s"]);
    let out = run(&["get", "namespace", &ns.name], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[test]
fn service_account_token_authenticates_and_rbac_limits_it() {
    let ns = TempNamespace::new("rbac");
    ns.ok(&["create", "serviceaccount", "reader"]);
    ns.ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    ns.ok(&[
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        &format!("--serviceaccount={}:reader", ns.name),
    ]);
    ns.ok(&["create", "configmap", "visible"]);
    let token = ns.ok(&["create", "token", "reader", "--duration=10m"]);
    let token = token.trim();

    let as_sa = |args: &[&str]| {
        let mut cmd = kubectl();
        cmd.env_remove("KUBECONFIG");
        let (server, ca) = cluster_endpoint();
        let mut all = vec![
            "--kubeconfig=/dev/null".to_string(),
            format!("--server={server}"),
            format!("--certificate-authority={ca}"),
            format!("--token={token}"),
            "-n".into(),
            ns.name.clone(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_as(cmd, &refs, None)
    };

    let who = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:serviceaccount:{}:reader", ns.name)
    );
    let allowed = as_sa(&["get", "configmap", "visible", "-o", "name"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = as_sa(&["get", "secrets"]);
    assert!(!denied.status.success());
    let msg = String::from_utf8_lossy(&denied.stderr);
    assert!(
        msg.contains("Forbidden") && msg.contains("cannot list resource \"secrets\""),
        "{msg}"
    );
    let bad = as_sa(&["get", "configmaps"]);
    assert!(bad.status.success(), "list is granted");
    let tampered = {
        let mut cmd = kubectl();
        cmd.env_remove("KUBECONFIG");
        let server = cluster_endpoint().0;
        run_as(
            cmd,
            &[
                "--kubeconfig=/dev/null",
                &format!("--server={server}"),
                "--insecure-skip-tls-verify",
                "--token=not-a-token",
                "get",
                "--raw",
                "/api",
            ],
            None,
        )
    };
    assert!(!tampered.status.success());
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("Unauthorized"));
}

#[test]
fn a_failed_start_shows_the_log_and_leaves_no_process() {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("failed-cluster");
    let _ = std::fs::remove_dir_all(&state);
    let out = std::process::Command::new(root().join("tests/cluster/up"))
        .env("APIKEY_CLUSTER_STATE", &state)
        .env("APIKEY_CLUSTER_PORT_BASE", "28400")
        .env("APIKEY_CLUSTER_APISERVER_ARGS", "--no-such-flag")
        .output()
        .expect("up runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up must fail");
    assert!(
        stderr.contains("kube-apiserver failed to start"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown flag: --no-such-flag"),
        "the log tail is shown: {stderr}"
    );
    assert!(
        stderr.contains("stopped etcd"),
        "etcd, already started, was stopped: {stderr}"
    );
    assert!(!state.exists(), "state removed");
    // nothing started with that state folder is still running
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    let running = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !running
            .lines()
            .any(|l| l.contains(state.to_str().expect("utf-8"))),
        "a process of the failed start is still running"
    );
}
