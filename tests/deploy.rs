//! deploy/ on the local control plane: it applies, and its ServiceAccount's token is granted what
//! the operator uses and refused the rest. (scripts/test also runs the whole operator suite with
//! that token: APIKEY_E2E_AS_SERVICE_ACCOUNT=1.)

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn as_operator(args: &[&str]) -> (bool, String) {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    let mut cmd = Command::new(kubectl_bin());
    cmd.env(
        "KUBECONFIG",
        KUBECONFIG.get_or_init(service_account_kubeconfig),
    );
    let out = run_as(cmd, args, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn service_account_has_exactly_what_the_operator_uses() {
    install_crd();
    let ns = TempNamespace::new("rbac-op");
    ns.apply(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: k}\nspec: {user: u}\n",
    );

    let (ok_, who) = as_operator(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert!(ok_, "{who}");
    assert_eq!(who, "system:serviceaccount:apikey-system:apikey-operator");

    for allowed in [
        vec!["get", "apikeys", "-A"],
        vec![
            "get",
            "secrets",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=apikey-operator",
        ],
        vec![
            "-n",
            "apikey-system",
            "auth",
            "can-i",
            "patch",
            "leases/apikey-operator",
        ],
        vec![
            "-n",
            "apikey-system",
            "auth",
            "can-i",
            "get",
            "secrets/apikey-operator-record-key",
        ],
        vec![
            "-n",
            &ns.name,
            "auth",
            "can-i",
            "patch",
            "apikeys/k",
            "--subresource=status",
        ],
        vec![
            "-n",
            &ns.name,
            "auth",
            "can-i",
            "create",
            "events.events.k8s.io",
        ],
    ] {
        let (ok_, out) = as_operator(&allowed);
        assert!(ok_, "should be allowed: {allowed:?}: {out}");
    }

    for (refused, message) in [
        (
            vec!["-n", ns.name.as_str(), "get", "configmaps"],
            "cannot list resource \"configmaps\"",
        ),
        (
            vec!["-n", ns.name.as_str(), "delete", "apikey", "k"],
            "cannot delete resource \"apikeys\"",
        ),
        (
            vec!["-n", ns.name.as_str(), "get", "leases"],
            "cannot list resource \"leases\"",
        ),
        (
            vec!["-n", "kube-system", "get", "lease", "apikey-operator"],
            "cannot get resource \"leases\"",
        ),
        (
            vec![
                "-n",
                ns.name.as_str(),
                "create",
                "secret",
                "generic",
                "x",
                "--from-literal=a=b",
                "--dry-run=server",
            ],
            "",
        ),
    ] {
        let (ok_, out) = as_operator(&refused);
        if message.is_empty() {
            // creating Secrets is granted (the operator creates its own); deleting is not
            assert!(ok_, "{out}");
            continue;
        }
        assert!(!ok_, "should be refused: {refused:?}");
        assert!(
            out.contains("Forbidden") && out.contains(message),
            "{refused:?}: {out}"
        );
    }
    let (ok_, out) = as_operator(&["-n", &ns.name, "auth", "can-i", "delete", "secrets"]);
    assert!(
        !ok_ && out.trim() == "no",
        "the operator never deletes Secrets: {out}"
    );
    let (ok_, out) = as_operator(&[
        "-n",
        &ns.name,
        "auth",
        "can-i",
        "patch",
        "events.events.k8s.io",
    ]);
    assert!(
        !ok_ && out.trim() == "no",
        "events are only created, never patched: {out}"
    );
    assert_eq!(
        ns.ok(&["get", "apikey", "k", "-o", "name"]).trim(),
        "apikey.apikey.dev/k"
    );
}

#[test]
fn namespaced_variant_renders_a_role_and_a_namespace_flag() {
    let rendered = ok(&[
        "kustomize",
        root().join("deploy/namespaced").to_str().expect("path"),
    ]);
    assert!(!rendered.contains("kind: ClusterRole"), "{rendered}");
    assert!(rendered.contains("--namespace=apps"));
    assert!(
        rendered.contains("name: apikey-operator-record-key"),
        "the namespaced variant can read its record key: {rendered}"
    );
    let cluster = ok(&["kustomize", root().join("deploy").to_str().expect("path")]);
    for needle in [
        "kind: ClusterRole",
        "replicas: 2",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "type: RuntimeDefault",
        "drop:",
        "readinessProbe",
        "livenessProbe",
        "kind: Service",
        "name: apikey-token-server",
        "args:\n        - token-server",
        "secretName: apikey-token-server-tls",
        "kind: PodDisruptionBudget",
    ] {
        assert!(cluster.contains(needle), "deploy/ lacks {needle}");
    }
}

/// `kubectl auth can-i` as deploy/'s token server ServiceAccount: whether it is allowed.
fn token_server_can(args: &[&str]) -> bool {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    let mut cmd = Command::new(kubectl_bin());
    cmd.env(
        "KUBECONFIG",
        KUBECONFIG.get_or_init(|| {
            service_account_kubeconfig_for("apikey-token-server", "apikey-token-server")
        }),
    );
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = run_as(cmd, &all, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "{args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

#[test]
fn token_server_account_reads_keys_and_only_its_own_secret() {
    install_crd();
    let sys = ["-n", "apikey-token-server"];
    let operator_ns = ["-n", "apikey-system"];
    for allowed in [
        vec!["list", "apikeys.apikey.dev", "-A"],
        vec!["watch", "apikeys.apikey.dev", "-A"],
        [&sys[..], &["create", "secrets"]].concat(),
        [&sys[..], &["get", "secrets/apikey-token-signing-keys"]].concat(),
        [&sys[..], &["watch", "secrets/apikey-token-signing-keys"]].concat(),
        [&sys[..], &["update", "secrets/apikey-token-signing-keys"]].concat(),
        [&sys[..], &["create", "leases.coordination.k8s.io"]].concat(),
        [
            &sys[..],
            &["patch", "leases.coordination.k8s.io/apikey-token-signing"],
        ]
        .concat(),
    ] {
        assert!(token_server_can(&allowed), "should be allowed: {allowed:?}");
    }
    for refused in [
        [
            &operator_ns[..],
            &["get", "secrets/apikey-operator-record-key"],
        ]
        .concat(),
        [&operator_ns[..], &["create", "secrets"]].concat(),
        [&sys[..], &["list", "secrets"]].concat(),
        [&sys[..], &["delete", "secrets/apikey-token-signing-keys"]].concat(),
        vec!["get", "secrets", "-A"],
        vec!["-n", "default", "create", "secrets"],
        vec!["patch", "apikeys.apikey.dev", "--subresource=status", "-A"],
        vec!["create", "apikeys.apikey.dev", "-A"],
        [
            &sys[..],
            &["patch", "leases.coordination.k8s.io/apikey-operator"],
        ]
        .concat(),
    ] {
        assert!(
            !token_server_can(&refused),
            "should be refused: {refused:?}"
        );
    }
}
