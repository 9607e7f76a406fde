//! The operator under test: the release build next to this executable, run as a child process
//! scoped to one namespace, and what `/proc` tells about it (CPU time, resident memory).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
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

/// The running operator; killed (SIGKILL) when dropped unless stopped before.
pub struct Operator {
    child: Child,
    /// Where its JSON log goes.
    pub log: PathBuf,
    http_addr: Option<String>,
}

impl Operator {
    /// Starts `apikey-operator run --namespace <namespace> --leader-elect=false --http-addr
    /// 127.0.0.1:0 --log-format json`, logging to a file in the temporary directory. It inherits
    /// the environment, so it uses the same kubeconfig as the benchmark.
    pub fn start(bin: &Path, namespace: &str) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("apikey-bench-{namespace}-operator.log"));
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(bin)
            .args([
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
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        eprintln!(
            "started {} (pid {}) for namespace {namespace}, log {}",
            bin.display(),
            child.id(),
            log.display()
        );
        Ok(Self {
            child,
            log,
            http_addr: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200 (its caches have synced). The address of the endpoint
    /// comes from the operator's log, since it binds port 0.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "the operator exited ({status}) before becoming ready; see {}",
                    self.log.display()
                )
                .into());
            }
            if self.http_addr.is_none() {
                self.http_addr = http_addr_from_log(&self.log);
            }
            if let Some(addr) = &self.http_addr
                && http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the operator was not ready within {timeout:?}; see {}",
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's `/metrics` text, if it can be fetched.
    pub fn metrics(&self) -> Option<String> {
        let addr = self.http_addr.as_deref()?;
        match http_get(addr, "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
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
            eprintln!("warning: the operator did not exit within 30 s of SIGTERM; killing it");
        }
        Ok(())
    }
}

impl Drop for Operator {
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

/// Finds the `addr` field of the operator's "serving /healthz ..." JSON log line.
fn http_addr_from_log(log: &Path) -> Option<String> {
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            let fields = value.get("fields")?;
            let message = fields.get("message")?.as_str()?;
            if !message.starts_with("serving /healthz") {
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
