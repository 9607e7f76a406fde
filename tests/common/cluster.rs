//! The local control plane as the tests use it: its kubectl and kubeconfig, a fresh namespace
//! per test (deleted afterwards), polling for what no watch or `kubectl wait` can tell, and the
//! CRD installed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Root of the repository.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The admin kubeconfig of the local control plane.
pub fn kubeconfig() -> PathBuf {
    let path = std::env::var_os("APIKEY_E2E_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/cluster/.state/kubeconfig"));
    assert!(
        path.exists(),
        "no cluster: {} is missing; start it with tests/cluster/up (the README's test command does)",
        path.display()
    );
    path
}

/// The kubectl built with the control plane, so client and server versions match.
pub fn kubectl_bin() -> PathBuf {
    let bin = root().join("tests/cluster/.bin/kubectl");
    assert!(
        bin.exists(),
        "{} is missing; run tests/cluster/up",
        bin.display()
    );
    bin
}

/// A kubectl invocation against the local cluster.
pub fn kubectl() -> Command {
    let mut c = Command::new(kubectl_bin());
    c.env("KUBECONFIG", kubeconfig());
    c
}

/// Runs kubectl with `args`, optionally feeding `stdin`.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_as(kubectl(), args, stdin)
}

/// Runs a prepared kubectl command with `args`.
pub fn run_as(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Output {
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("kubectl finishes")
}

/// Runs kubectl and returns stdout, failing the test with stderr if it fails.
pub fn ok(args: &[&str]) -> String {
    ok_with(args, None)
}

/// [`ok`] with stdin.
pub fn ok_with(args: &[&str], stdin: Option<&str>) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kubectl expecting failure and returns stderr.
pub fn fails(args: &[&str], stdin: Option<&str>) -> String {
    let out = run(args, stdin);
    assert!(
        !out.status.success(),
        "kubectl {} should have failed, printed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A namespace of its own for one test, deleted (without waiting) when dropped.
pub struct TempNamespace {
    /// Its name.
    pub name: String,
}

impl TempNamespace {
    /// Creates `e2e-<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        use rand::TryRng as _;
        let salt = rand::rngs::SysRng.try_next_u32().expect("random");
        let name = format!("e2e-{prefix}-{:06x}", salt & 0xff_ffff);
        ok(&["create", "namespace", &name]);
        Self { name }
    }

    /// Runs kubectl in this namespace.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ok(&all)
    }

    /// Runs kubectl in this namespace with stdin.
    pub fn apply(&self, yaml: &str) -> String {
        ok_with(&["-n", &self.name, "apply", "-f", "-"], Some(yaml))
    }

    /// Runs kubectl in this namespace expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        fails(&all, stdin)
    }

    /// `kubectl get <what> -o jsonpath=<path>`.
    pub fn jsonpath(&self, what: &str, path: &str) -> String {
        self.ok(&["get", what, "-o", &format!("jsonpath={path}")])
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let _ = run(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// Polls `f` until it returns `Some`, for state only a poll can observe (such as a value changing
/// inside a Secret); panics after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `cmd` (one of the repository's scripts) to completion; panics with its stderr if it
/// fails, else returns its stdout.
pub fn stdout_of(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `contents` to a file under the target directory and returns its path.
pub fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

/// Kills the child when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Decodes base64 (standard alphabet) as kubectl prints Secret data.
pub fn b64decode(s: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .expect("valid base64");
    String::from_utf8(bytes).expect("utf-8")
}

/// The sum of the samples of `name` in `scrape` whose labels include `label`=`value` (all of
/// them if `label` is empty); histograms and summaries count 0.
pub fn sum_samples(scrape: &prometheus_parse::Scrape, name: &str, label: &str, value: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_empty() || s.labels.get(label) == Some(value))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The local cluster's API server URL and CA file, from the admin kubeconfig.
pub fn cluster_endpoint() -> (String, String) {
    let field = |f: &str| {
        ok(&[
            "config",
            "view",
            "--minify",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{f}}}"),
        ])
    };
    (field("server"), field("certificate-authority"))
}

/// Makes sure the ApiKey CRD from crds/ is installed and Established.
pub fn install_crd() {
    let crd = root().join("crds/apikey.dev_apikeys.yaml");
    ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crd.to_str().expect("utf-8 path"),
    ]);
    ok(&[
        "wait",
        "--for=condition=Established",
        "crd/apikeys.apikey.dev",
        "--timeout=60s",
    ]);
}
