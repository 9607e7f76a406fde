//! The image users run (Dockerfile's final stage), built here by tests/image/build without
//! pulling anything, checked for what users rely on: small, one static binary, user 65532; it
//! starts under runc with the hardened settings of deploy/ (read-only root filesystem, no
//! capabilities, no new privileges, the default seccomp profile) and, on the host's network,
//! reconciles keys on the local control plane.
//!
//! scripts/test builds the image first and names it in `APIKEY_E2E_IMAGE`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The image under test.
fn image() -> String {
    std::env::var("APIKEY_E2E_IMAGE").expect(
        "APIKEY_E2E_IMAGE names the image: build it with tests/image/build (scripts/test does)",
    )
}

/// `podman` with `args`; (success, stdout, stderr).
fn podman(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs (apt-get install podman runc)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `podman run` with deploy/'s hardening: runc (crun refuses this host's hybrid cgroups), limits
/// no higher than the host's, read-only root, no capabilities, no new privileges, default seccomp.
fn hardened_run(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--runtime",
        "runc",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn the_image_is_one_small_static_binary_run_as_65532() {
    let image = image();
    let (ok, out, err) = podman(&["image", "inspect", &image]);
    assert!(ok, "{err}");
    let inspect: serde_json::Value = serde_json::from_str(&out).expect("json");
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/apikey-operator"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert_eq!(
        inspect[0]["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1)
    );
    let size = inspect[0]["Size"].as_u64().expect("size");
    assert!(size < 25 << 20, "{size} bytes");

    // it starts with a read-only root, no capabilities, and prints the CRD of this checkout
    let mut args = hardened_run(&["--rm", &image, "crd"]);
    args.insert(1, "--network=none".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = podman(&args);
    assert!(ok, "{err}");
    let crd = std::fs::read_to_string(root().join("crds/apikey.dev_apikeys.yaml")).expect("crd");
    assert_eq!(out, crd, "the image's binary is this checkout's");
}

#[test]
fn the_image_reconciles_keys_with_deploys_hardening() {
    install_crd();
    let ns = TempNamespace::new("image");
    // the admin kubeconfig names key files readable by root only; the container's user 65532
    // gets a copy with everything inline
    let flat = ok(&["config", "view", "--raw", "--flatten", "--minify"]);
    let kubeconfig = scratch_file(&format!("image-{}.kubeconfig", ns.name), &flat);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("addr").port()
    };
    let name = format!("apikey-{}", ns.name);
    let mount = format!("{}:/kubeconfig:ro", kubeconfig.display());
    let http = format!("127.0.0.1:{port}");
    let image = image();
    let args = hardened_run(&[
        "-d",
        "--name",
        &name,
        "--network=host",
        "-v",
        &mount,
        "-e",
        "KUBECONFIG=/kubeconfig",
        &image,
        "run",
        "--namespace",
        &ns.name,
        "--record-key-namespace",
        &ns.name,
        "--leader-elect=false",
        "--http-addr",
        &http,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok_, _, err) = podman(&args);
    assert!(ok_, "{err}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
        }
    }
    let _container = Remove(name.clone());

    ns.apply(&key_yaml("k", "alice", "", None, None));
    wait_ready(&ns, &["k"]);
    assert_consistent(&ns, "k", "k");
    eventually("/readyz", Duration::from_secs(30), || {
        let out = Command::new("curl")
            .args(["-fsS", &format!("http://{http}/readyz")])
            .output()
            .ok()?;
        out.status.success().then_some(())
    });

    // the process runs as 65532, with no capability, no new privileges, and a seccomp filter
    let (_, pid, _) = podman(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the container's process");
    let field = |f: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{f}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), "65532 65532 65532 65532");
    assert_eq!(field("Gid"), "65532 65532 65532 65532");
    assert_eq!(field("CapEff"), "0000000000000000");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "the default seccomp profile filters");
    let (_, logs, _) = podman(&["logs", &name]);
    let (_, secret) = credentials(&ns, "k");
    assert!(!logs.contains(&secret), "no secret in the log");
    let (ok_, _, err) = podman(&["stop", "--time", "20", &name]);
    assert!(ok_, "{err}");
    let (_, code, _) = podman(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "0", "SIGTERM ends it cleanly");
}
