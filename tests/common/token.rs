//! The token server as the end-to-end tests run it: a child process serving TLS on loopback with
//! the certificate tests/cluster/up made (`pki/token-server.crt`, for 127.0.0.1), and an HTTPS
//! client that trusts the cluster's CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::{KillOnDrop, eventually, kubeconfig};

/// The cluster's PKI folder (tests/cluster/up writes it beside the kubeconfig).
pub fn pki() -> PathBuf {
    kubeconfig()
        .parent()
        .expect("the kubeconfig is in the state folder")
        .join("pki")
}

/// The port tests/cluster/up reserved for the token server the API server trusts (base + 5).
pub fn trusted_issuer_port() -> u16 {
    let base: u16 = std::env::var("APIKEY_CLUSTER_PORT_BASE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(26400);
    base + 5
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `apikey-operator token-server` as a child process, logging JSON to a file.
pub struct TokenServer {
    child: Option<KillOnDrop>,
    log: PathBuf,
    args: Vec<String>,
    kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>` of the first replica: replicas share one issuer.
    pub issuer: String,
    /// Where this one listens: `https://127.0.0.1:<port>`.
    pub base: String,
}

impl TokenServer {
    /// Starts one with the admin kubeconfig, its signing keys in `namespace`, on a free port,
    /// audience `apikey-e2e`, with `extra` flags.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_on(free_port(), &kubeconfig(), namespace, extra)
    }

    /// Starts one as [`TokenServer::start`] does, with failure budgets too large to matter, so
    /// that refusals stay 401s however often a test polls (brute force has a test of its own).
    pub fn start_without_budgets(namespace: &str) -> Self {
        Self::start(
            namespace,
            &[
                "--client-failure-burst",
                "100000",
                "--address-failure-burst",
                "100000",
            ],
        )
    }

    /// Starts one on `port` with `kubeconfig`.
    pub fn start_on(port: u16, kubeconfig: &Path, namespace: &str, extra: &[&str]) -> Self {
        Self::start_replica(
            &format!("https://127.0.0.1:{port}"),
            port,
            kubeconfig,
            namespace,
            extra,
        )
    }

    /// Another replica of `of`: the same issuer, its own port.
    pub fn replica(of: &TokenServer, namespace: &str, extra: &[&str]) -> Self {
        Self::start_replica(&of.issuer, free_port(), &of.kubeconfig, namespace, extra)
    }

    /// One serving the certificate and key in `dir` (`tls.crt`, `tls.key`), as a mounted TLS
    /// Secret holds them.
    pub fn start_with_tls(namespace: &str, dir: &Path) -> Self {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let extra = [
            "--tls-cert-file",
            cert.to_str().expect("utf-8"),
            "--tls-key-file",
            key.to_str().expect("utf-8"),
        ];
        Self::start(namespace, &extra)
    }

    fn start_replica(
        issuer: &str,
        port: u16,
        kubeconfig: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("token-server-{namespace}-{n}.log"));
        let _ = std::fs::remove_file(&log);
        let pki = pki();
        let mut args: Vec<String> = [
            "token-server",
            "--issuer",
            issuer,
            "--audience",
            "apikey-e2e",
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            "127.0.0.1:0",
            "--signing-key-namespace",
            namespace,
            "--lease-duration-seconds",
            "5",
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--tls-cert-file") {
            for (flag, file) in [
                ("--tls-cert-file", "token-server.crt"),
                ("--tls-key-file", "token-server.key"),
            ] {
                args.push(flag.into());
                args.push(pki.join(file).to_str().expect("utf-8").into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self {
            child: None,
            log,
            args,
            kubeconfig: kubeconfig.to_path_buf(),
            issuer: issuer.to_string(),
            base: format!("https://127.0.0.1:{port}"),
        };
        server.spawn();
        server.wait_ready();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("token server log file");
        let child = Command::new(env!("CARGO_BIN_EXE_apikey-operator"))
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "apikey_operator=debug,info")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("the token server starts");
        self.child = Some(KillOnDrop(child));
    }

    /// Kills it (SIGKILL) and starts it again, then waits until it is ready.
    pub fn restart(&mut self) {
        self.child = None;
        self.spawn();
        self.wait_ready();
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.0.try_wait().ok().flatten().is_none())
    }

    /// Waits until `/readyz` answers 200 (ApiKeys listed, a signing key loaded).
    pub fn wait_ready(&self) {
        eventually("the token server ready", Duration::from_secs(60), || {
            let admin = self.admin_addr()?;
            let r = https_client(None)
                .get(format!("http://{admin}/readyz"))
                .send()
                .ok()?;
            r.status().is_success().then_some(())
        });
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn admin_addr(&self) -> Option<String> {
        let log = self.log();
        log.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["fields"]["message"] == "serving /healthz, /readyz and /metrics")
            .and_then(|r| r["fields"]["addr"].as_str().map(String::from))
    }

    /// `/metrics` as text.
    pub fn metrics_text(&self) -> String {
        let admin = self.admin_addr().expect("the admin address is logged");
        https_client(None)
            .get(format!("http://{admin}/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// `/metrics`, parsed.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let body = self.metrics_text();
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("metrics parse")
    }

    /// The sum of the samples of `name` whose labels include `label=value` (all if `label` is
    /// empty).
    pub fn metric(&self, name: &str, label: &str, value: &str) -> f64 {
        super::sum_samples(&self.metrics(), name, label, value)
    }

    /// An HTTPS client that trusts the cluster's CA, from `source` if given.
    pub fn client(&self, source: Option<&str>) -> reqwest::blocking::Client {
        https_client(source)
    }

    /// `{base}{path}`: this replica's endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A token with `client_secret_basic`: (status, JSON body, headers).
    pub fn token_basic(&self, id: &str, secret: &str) -> Answer {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
        let r = self
            .client(None)
            .post(self.url("/oauth2/token"))
            .header("Authorization", format!("Basic {basic}"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .expect("token request");
        Answer::of(r)
    }

    /// An access token for (id, secret), which must be issued.
    pub fn access_token(&self, id: &str, secret: &str) -> String {
        let a = self.token_basic(id, secret);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// Introspects `token`, authenticating as (id, secret).
    pub fn introspect(&self, token: &str, id: &str, secret: &str) -> Answer {
        let r = self
            .client(None)
            .post(self.url("/oauth2/introspect"))
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .expect("introspection request");
        Answer::of(r)
    }

    /// The `kid`s of the JWKS now.
    pub fn jwks_kids(&self) -> Vec<String> {
        let jwks: serde_json::Value = self
            .client(None)
            .get(self.url("/oauth2/jwks"))
            .send()
            .and_then(|r| r.json())
            .expect("jwks");
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_string())
            .collect()
    }

    /// The subject and serial of the certificate it serves now (`openssl s_client`).
    pub fn served_certificate(&self) -> String {
        let addr = self.base.trim_start_matches("https://").to_string();
        let script = format!(
            "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject -serial"
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("openssl runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Asserts that none of `values` (secrets, tokens) appears in the log or the metrics.
    pub fn assert_log_free_of(&self, values: &[String]) {
        let metrics = self.metrics_text();
        for v in values {
            assert!(
                !metrics.contains(v.as_str()),
                "a client secret or token appears in the token server's metrics"
            );
        }
        let log = self.log();
        assert!(!log.is_empty(), "the token server logged nothing");
        assert!(!log.contains("panicked"), "the token server panicked");
        for v in values {
            assert!(v.len() >= 16, "a value worth looking for");
            assert!(
                !log.contains(v.as_str()),
                "a client secret or token appears in the token server's log"
            );
        }
    }
}

/// An HTTPS client trusting the local cluster's CA (and no other), bound to `source` if given.
pub fn https_client(source: Option<&str>) -> reqwest::blocking::Client {
    let pem = std::fs::read(pki().join("ca.crt")).expect("the cluster's CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30));
    if let Some(addr) = source {
        builder = builder.local_address(addr.parse::<std::net::IpAddr>().expect("an IP"));
    }
    builder.build().expect("HTTPS client")
}

/// An HTTP answer: status, JSON body (null if none), headers.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Reads `r`.
    pub fn of(r: reqwest::blocking::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json().unwrap_or(serde_json::Value::Null);
        Self {
            status,
            body,
            headers,
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

/// The header and claims of a JWT, decoded without verification (to look at them).
pub fn decode_jwt(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let b = URL_SAFE_NO_PAD
            .decode(parts.next().expect("a JWT part"))
            .expect("base64url");
        serde_json::from_slice(&b).expect("JSON")
    };
    (part(), part())
}
