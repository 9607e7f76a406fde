//! The operator as the tests run it: the binary of this checkout as a child process
//! ([`Operator`]), and the kubeconfigs it runs with (the admin one, or deploy/'s ServiceAccount's).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::cluster::*;

/// The kubeconfig the operator (the binary of this checkout) runs with: the admin one, or, when
/// `APIKEY_E2E_AS_SERVICE_ACCOUNT=1`, a token of the ServiceAccount that deploy/ installs, so that
/// the suite proves the role grants everything the operator needs.
pub fn operator_kubeconfig() -> PathBuf {
    if std::env::var("APIKEY_E2E_AS_SERVICE_ACCOUNT").as_deref() == Ok("1") {
        service_account_kubeconfig()
    } else {
        kubeconfig()
    }
}

/// Applies deploy/ (CRD first), mints a token for its ServiceAccount with `kubectl create token`,
/// and writes a kubeconfig that holds only that token. Done once per test process: every later
/// call returns the same file (its token is valid for two hours, longer than any suite runs).
pub fn service_account_kubeconfig() -> PathBuf {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG
        .get_or_init(|| service_account_kubeconfig_for("apikey-system", "apikey-operator"))
        .clone()
}

/// Applies what deploy/ installs except its Deployments: namespaces, ServiceAccounts, RBAC,
/// Services. On the local cluster's node (tests/cluster/up --node) the Deployments would start
/// an operator for the whole cluster, which would reconcile every test's keys; tests/node.rs
/// installs deploy/ whole, alone.
pub fn apply_deploy_without_workloads() {
    let rendered = ok(&[
        "kustomize",
        root().join("deploy").to_str().expect("utf-8 path"),
    ]);
    let docs: Vec<&str> = rendered.split("\n---\n").collect();
    let kept: Vec<&str> = docs
        .iter()
        .copied()
        .filter(|doc| !doc.lines().any(|l| l == "kind: Deployment"))
        .collect();
    assert_eq!(
        docs.len() - kept.len(),
        2,
        "deploy/ has two Deployments to leave out"
    );
    ok_with(&["apply", "-f", "-"], Some(&kept.join("\n---\n")));
}

/// A kubeconfig holding only the token of deploy/'s ServiceAccount `namespace/account` (deploy/'s
/// RBAC applied first, without its workloads).
pub fn service_account_kubeconfig_for(namespace: &str, account: &str) -> PathBuf {
    install_crd();
    apply_deploy_without_workloads();
    let token = ok(&["-n", namespace, "create", "token", account, "--duration=2h"]);
    let (server, ca) = cluster_endpoint();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server}, certificate-authority: {ca}}}\nusers:\n- name: sa\n  user: {{token: {}}}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa}}\ncurrent-context: sa\n",
        token.trim()
    );
    let name = format!("sa-{account}-{}.kubeconfig", std::process::id());
    scratch_file(&name, &config)
}

/// The operator binary running as a child process, scoped to one namespace, logging JSON to a file.
pub struct Operator {
    child: Option<KillOnDrop>,
    log: PathBuf,
    namespace: String,
    extra: Vec<String>,
    /// The binary; `None`: the one this checkout builds.
    release: Option<PathBuf>,
    /// The kubeconfig it runs with; `None`: [`operator_kubeconfig`] (the admin one for a release).
    credentials: Option<PathBuf>,
}

impl Operator {
    /// Starts `apikey-operator run --namespace <ns>` with [`operator_kubeconfig`], without leader
    /// election (each test's operator is alone in its namespace) and on a free port.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(
            namespace,
            &["--leader-elect=false", "--http-addr", "127.0.0.1:0"],
        )
    }

    /// Starts it with extra flags.
    pub fn start_with(namespace: &str, extra: &[&str]) -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{namespace}-{n}.log"));
        let mut op = Self {
            child: None,
            log,
            namespace: namespace.into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            release: None,
            credentials: None,
        };
        let _ = std::fs::remove_file(&op.log);
        op.spawn();
        op
    }

    /// Starts it as [`Operator::start`] does, running with `kubeconfig` (a ServiceAccount's token
    /// with the rights a test chooses).
    pub fn start_as(namespace: &str, kubeconfig: &Path) -> Self {
        let mut op = Self::start_with(
            namespace,
            &["--leader-elect=false", "--http-addr", "127.0.0.1:0"],
        );
        op.credentials = Some(kubeconfig.to_path_buf());
        op.restart();
        op
    }

    /// Starts another release's binary `bin` as [`Operator::start`] does, with only the flags
    /// every release has, and always with the admin kubeconfig (why: in `spawn`).
    pub fn start_release(bin: &Path, namespace: &str) -> Self {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("operator-{namespace}-release.log"));
        let mut op = Self {
            child: None,
            log,
            namespace: namespace.into(),
            extra: ["--leader-elect=false", "--http-addr", "127.0.0.1:0"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            release: Some(bin.to_path_buf()),
            credentials: None,
        };
        let _ = std::fs::remove_file(&op.log);
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log file");
        let mut command = match &self.release {
            Some(bin) => Command::new(bin),
            None => Command::new(env!("CARGO_BIN_EXE_apikey-operator")),
        };
        command.args([
            "run",
            "--namespace",
            &self.namespace,
            "--log-format",
            "json",
        ]);
        if self.release.is_none() {
            // the record key of each test's operator lives in the test's own namespace
            command.args(["--record-key-namespace", &self.namespace]);
        }
        // The binary of this checkout runs as `operator_kubeconfig()` says (as deploy/'s
        // ServiceAccount in scripts/test's second pass). Another release keeps the admin
        // kubeconfig: what it may do is granted by its own deploy/, not by this checkout's, and
        // the upgrade test that runs it tests the data it leaves behind, not RBAC.
        let config = match (&self.release, &self.credentials) {
            (None, Some(own)) => own.clone(),
            (None, None) => operator_kubeconfig(),
            (Some(_), _) => kubeconfig(),
        };
        let child = command
            .args(&self.extra)
            .env("KUBECONFIG", config)
            .env("RUST_LOG", "apikey_operator=debug,info")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("operator starts");
        self.child = Some(KillOnDrop(child));
    }

    /// The `KUBECONFIG` the running operator process was started with, read back from
    /// `/proc/<pid>/environ` (empty for a moment after the spawn returns: the new program's
    /// environment is set up after the parent is let go).
    pub fn kubeconfig(&self) -> PathBuf {
        let child = self.child.as_ref().expect("the operator runs");
        let path = format!("/proc/{}/environ", child.0.id());
        let environ = eventually(
            "the operator's environment",
            Duration::from_secs(10),
            || {
                let environ = std::fs::read(&path).expect("the operator's environment");
                (!environ.is_empty()).then_some(environ)
            },
        );
        environ
            .split(|&b| b == 0)
            .find_map(|var| var.strip_prefix(b"KUBECONFIG="))
            .map(|path| PathBuf::from(String::from_utf8_lossy(path).into_owned()))
            .expect("the operator has KUBECONFIG")
    }

    /// Kills the operator (SIGKILL) and starts it again.
    pub fn restart(&mut self) {
        self.child = None;
        self.spawn();
    }

    /// Kills the operator with SIGKILL.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Sends SIGTERM and waits (up to a minute) for the process to exit; returns whether it
    /// exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = child.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.0.try_wait().expect("wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GETs `path` from the operator's HTTP endpoint; returns (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::Read as _;
        let addr = self.http_addr();
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect to the operator");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Scrapes `/metrics` and parses it as Prometheus text.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = self.http_get("/metrics");
        assert_eq!(code, 200);
        let lines = body.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
    }

    /// The value of metric `name` with label `label`=`value` (or no labels when `label` is empty).
    pub fn metric(&self, name: &str, label: &str, value: &str) -> f64 {
        self.metrics()
            .samples
            .iter()
            .find(|s| s.metric == name && (label.is_empty() || s.labels.get(label) == Some(value)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or(0.0)
    }

    /// The sum of metric `name` over all its labels.
    pub fn metric_total(&self, name: &str) -> f64 {
        sum_samples(&self.metrics(), name, "", "")
    }

    /// The operator's WARN and ERROR lines after log line `mark`.
    pub fn warnings_since(&self, mark: usize) -> Vec<String> {
        self.log()
            .lines()
            .skip(mark)
            .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
            .map(String::from)
            .collect()
    }

    /// Everything the operator has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Marks the log's current end: [`Operator::records_since`] counts from there.
    pub fn mark(&self) -> usize {
        self.log().lines().count()
    }

    /// The JSON log records whose message is `message`.
    pub fn records(&self, message: &str) -> Vec<serde_json::Value> {
        self.records_since(0, message)
    }

    /// The JSON log records after line `mark` whose message is `message`.
    pub fn records_since(&self, mark: usize, message: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .skip(mark)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }

    /// Waits until the operator, after log line `mark`, has reconciled ApiKey `name` as it is at
    /// `resource_version`, and returns the outcome it logged (`in_sync`, `regenerated`, ...).
    pub fn wait_reconciled(&self, mark: usize, name: &str, resource_version: &str) -> String {
        let apikey = format!("ApiKey.v1alpha1.apikey.dev/{name}.{}", self.namespace);
        eventually(
            &format!("a reconcile of {name} at resourceVersion {resource_version}"),
            Duration::from_secs(60),
            || {
                self.records_since(mark, "reconciled")
                    .into_iter()
                    .find_map(|r| {
                        let f = &r["fields"];
                        (f["apikey"] == apikey.as_str()
                            && f["resource_version"] == resource_version)
                            .then(|| f["outcome"].as_str().unwrap_or_default().to_string())
                    })
            },
        )
    }

    /// The address the health and metrics endpoint listens on (from the log).
    pub fn http_addr(&self) -> String {
        eventually(
            "the operator's HTTP address",
            Duration::from_secs(30),
            || {
                self.records("serving /healthz, /readyz and /metrics")
                    .last()
                    .and_then(|r| r["fields"]["addr"].as_str().map(String::from))
            },
        )
    }

    /// Asserts that none of `secrets` appears anywhere in the operator's log.
    pub fn assert_log_free_of(&self, secrets: &[String]) {
        let log = self.log();
        assert!(!log.is_empty(), "the operator logged nothing");
        for s in secrets {
            assert!(!s.is_empty());
            assert!(
                !log.contains(s.as_str()),
                "a client secret appears in the operator's log"
            );
        }
    }
}
