//! The plugin as krew users get it: scripts/krew-package makes the archive and fills in
//! krew/apikey.yaml; krew's own validator accepts the manifest; krew (v0.4.3, built from its Go
//! module by tests/krew/build) installs the plugin from the archive, refuses an archive that does
//! not match the manifest's SHA-256, and kubectl then finds `kubectl apikey` on PATH.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest as _, Sha256};

const ARCHIVE: &str = "kubectl-apikey_linux_amd64.tar.gz";

fn krew_bin() -> PathBuf {
    PathBuf::from(stdout_of(Command::new(root().join("tests/krew/build"))).trim())
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

#[test]
fn krew_validates_the_manifest_installs_the_archive_and_kubectl_finds_the_plugin() {
    let krew = krew_bin();
    let out = fresh_dir("krew-package");
    let plugin = env!("CARGO_BIN_EXE_kubectl-apikey");
    let mut package = Command::new(root().join("scripts/krew-package"));
    package.args([
        "--binary",
        plugin,
        "--out",
        out.to_str().expect("utf-8"),
        "--base-uri",
        "https://releases.example.com/apikey-operator/v0.1.0",
        "--homepage",
        "https://example.com/apikey-operator",
    ]);
    let manifest = PathBuf::from(stdout_of(package).trim());
    let text = std::fs::read_to_string(&manifest).expect("the manifest");
    let archive = out.join(ARCHIVE);
    let sha: String = Sha256::digest(std::fs::read(&archive).expect("the archive"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(text.contains(&format!("sha256: {sha}")), "{text}");
    assert!(
        text.contains(&format!("version: v{}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "uri: https://releases.example.com/apikey-operator/v0.1.0/{ARCHIVE}"
        )),
        "{text}"
    );
    assert!(!text.contains("${"), "every placeholder filled: {text}");

    let validated = Command::new(krew.join("validate-krew-manifest"))
        .args([
            "-manifest",
            manifest.to_str().expect("utf-8"),
            "-skip-install",
        ])
        .output()
        .expect("validate-krew-manifest runs");
    let log = String::from_utf8_lossy(&validated.stderr);
    assert!(
        validated.status.success() && log.contains("structural validation OK"),
        "{log}"
    );

    // an archive that is not the one the manifest names is refused
    let krew_root = fresh_dir("krew-root");
    let tampered = out.join("tampered.tar.gz");
    let mut bytes = std::fs::read(&archive).expect("the archive");
    bytes.extend_from_slice(b"\0");
    std::fs::write(&tampered, bytes).expect("write");
    let install = |archive: &Path| {
        Command::new(krew.join("krew"))
            .args(["install", &format!("--manifest={}", manifest.display())])
            .arg(format!("--archive={}", archive.display()))
            .env("KREW_ROOT", &krew_root)
            .output()
            .expect("krew runs")
    };
    let refused = install(&tampered);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("checksum"),
        "{said}"
    );

    let installed = install(&archive);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let link = krew_root.join("bin/kubectl-apikey");
    assert_eq!(
        std::fs::read(&link).expect("krew's copy"),
        std::fs::read(plugin).expect("the binary"),
        "krew installed this binary"
    );

    // kubectl finds it on PATH through krew's bin folder, and it talks to the cluster
    install_crd();
    let ns = TempNamespace::new("krew");
    ns.apply(&key_yaml("k", "alice", "team: x", None, None));
    let path = format!(
        "{}:{}",
        krew_root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let listed = kubectl()
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .expect("kubectl plugin list");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&link.display().to_string()));
    let mut list = kubectl();
    list.args(["apikey", "list", "-n", &ns.name])
        .env("PATH", &path);
    let table = stdout_of(list);
    assert!(table.contains("alice"), "{table}");
}
