//! The processes under test: the release build of `apikey-operator` next to this executable, run
//! as a child process scoped to one namespace, either as the operator or as its token server, and
//! what `/proc` tells about them (CPU time, resident memory).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// `apikey-operator` in the directory of the running executable (`target/release`).
pub fn binary_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the benchmark's own executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("the benchmark's executable has no parent directory")?;
    let bin = dir.join("apikey-operator");
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --bins`",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// A running child process of `apikey-operator` (the operator, or its token server); killed
/// (SIGKILL) when dropped unless stopped before.
pub struct Process {
    child: Child,
    /// What it is, for messages: "the operator", "the token server".
    what: &'static str,
    /// Where its JSON log goes.
    pub log: PathBuf,
    http_addr: Option<String>,
}

impl Process {
    /// Starts `apikey-operator run --namespace <namespace> --leader-elect=false --http-addr
    /// 127.0.0.1:0 --log-format json`, logging to a file in the temporary directory. It inherits
    /// the environment, so it uses the same kubeconfig as the benchmark.
    pub fn operator(bin: &Path, namespace: &str) -> Result<Self> {
        let args = [
            "run",
            "--namespace",
            namespace,
            "--record-key-namespace",
            namespace,
            "--leader-elect=false",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        Self::spawn(bin, "the operator", &args, namespace, "operator")
    }

    /// Starts `apikey-operator token-server` serving plain HTTP on `listen` (TLS is not what the
    /// benchmark measures; the issuer stays an https URL), with its signing keys and Lease in
    /// `namespace`, budgets of failures and verifications in flight too large to refuse anything,
    /// and its health endpoint on a port of its choosing, logging JSON to a file in the
    /// temporary directory.
    pub fn token_server(bin: &Path, namespace: &str, listen: SocketAddr) -> Result<Self> {
        let (issuer, listen) = (format!("https://{listen}"), listen.to_string());
        let args = [
            "token-server",
            "--issuer",
            &issuer,
            "--insecure-http",
            "--listen-addr",
            &listen,
            "--http-addr",
            "127.0.0.1:0",
            "--signing-key-namespace",
            namespace,
            "--lease-duration-seconds",
            "5",
            "--client-failure-burst",
            "1000000",
            "--address-failure-burst",
            "1000000",
            "--max-verifications-queued",
            "1000000",
            "--log-format",
            "json",
        ];
        Self::spawn(bin, "the token server", &args, namespace, "token-server")
    }

    fn spawn(
        bin: &Path,
        what: &'static str,
        args: &[&str],
        namespace: &str,
        name: &str,
    ) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("apikey-bench-{namespace}-{name}.log"));
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        eprintln!(
            "started {} {} (pid {}) for namespace {namespace}, log {}",
            bin.display(),
            args[0],
            child.id(),
            log.display()
        );
        Ok(Self {
            child,
            what,
            log,
            http_addr: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200 (its caches have synced). The address of the endpoint
    /// comes from the process's log, since it binds port 0.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "{} exited ({status}) before becoming ready; see {}",
                    self.what,
                    self.log.display()
                )
                .into());
            }
            if self.http_addr.is_none() {
                self.http_addr = self.logged_addr("serving /healthz");
            }
            if let Some(addr) = &self.http_addr
                && http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {timeout:?}; see {}",
                    self.what,
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `addr` field of the first JSON log line whose message starts with `message`.
    pub fn logged_addr(&self, message: &str) -> Option<String> {
        addr_from_log(&self.log, message)
    }

    /// The process's `/metrics` text, if it can be fetched.
    pub fn metrics(&self) -> Option<String> {
        let addr = self.http_addr.as_deref()?;
        match http_get(addr, "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Saves the final `/metrics` beside the log, for looking into a result, and returns them.
    pub fn save_metrics(&self) -> Option<String> {
        let Some(metrics) = self.metrics() else {
            eprintln!("warning: could not read the /metrics of {}", self.what);
            return None;
        };
        let path = self.log.with_extension("metrics.txt");
        match std::fs::write(&path, &metrics) {
            Ok(()) => eprintln!("metrics of {}: {}", self.what, path.display()),
            Err(e) => eprintln!("warning: cannot write {}: {e}", path.display()),
        }
        Some(metrics)
    }

    /// User plus system CPU time consumed so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        crate::cpu::cpu_time(self.pid())
    }

    /// Peak (`VmHWM`) and current (`VmRSS`) resident set size in bytes.
    pub fn rss(&self) -> Result<Rss> {
        rss(self.pid())
    }

    /// Sends SIGTERM and waits (up to 30 s) for a graceful exit; kills it otherwise.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if sent.is_ok_and(|s| s.success()) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if self.child.try_wait()?.is_some() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "warning: {} did not exit within 30 s of SIGTERM; killing it",
                self.what
            );
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Resident set sizes of a process, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    /// Peak (`VmHWM`).
    pub peak: u64,
    /// Current (`VmRSS`).
    pub current: u64,
}

/// Finds the `addr` field of the first JSON log line whose message starts with `prefix` (the
/// `tracing-subscriber` JSON format: `{"fields":{"message":...,"addr":...},...}`).
fn addr_from_log(log: &Path, prefix: &str) -> Option<String> {
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            let fields = value.get("fields")?;
            let message = fields.get("message")?.as_str()?;
            if !message.starts_with(prefix) {
                return None;
            }
            fields.get("addr")?.as_str().map(str::to_string)
        })
}

/// A bare HTTP/1.1 GET: (status code, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// `VmHWM` and `VmRSS` of `pid` from `/proc/<pid>/status`.
fn rss(pid: u32) -> Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_rss(&status).ok_or_else(|| format!("no VmHWM/VmRSS in {path}").into())
}

fn parse_rss(status: &str) -> Option<Rss> {
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    Some(Rss {
        peak: kib("VmHWM:")? * 1024,
        current: kib("VmRSS:")? * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(
            parse_rss(status),
            Some(Rss {
                peak: 2 << 20,
                current: 1 << 20
            })
        );
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(rss(me).is_ok_and(|r| r.peak >= r.current && r.current > 0));
    }
}
