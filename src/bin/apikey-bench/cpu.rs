//! CPU time from `/proc`: of one process (the operator, or the benchmark itself when it plays the
//! plain client) and of the local control plane (the processes named `kube-apiserver` and `etcd`),
//! so that each phase can say where its time went.

use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::Result;

/// Process names counted as the control plane.
const CONTROL_PLANE: [&str; 2] = ["kube-apiserver", "etcd"];

/// CPU seconds used during one phase.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PhaseCpu {
    /// By the process doing the work: the operator, or the plain client.
    pub worker_seconds: f64,
    /// By kube-apiserver and etcd on this machine (0 when they run elsewhere).
    pub control_plane_seconds: f64,
}

/// CPU times at the start of a phase.
pub struct Meter {
    pid: u32,
    worker: Duration,
    control_plane: Duration,
}

impl Meter {
    /// Starts measuring `pid` and the control plane.
    pub fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            worker: cpu_time(pid)?,
            control_plane: control_plane_cpu_time(),
        })
    }

    /// CPU used since [`Meter::start`].
    pub fn stop(&self) -> Result<PhaseCpu> {
        let worker = cpu_time(self.pid)?.saturating_sub(self.worker);
        let control_plane = control_plane_cpu_time().saturating_sub(self.control_plane);
        Ok(PhaseCpu {
            worker_seconds: worker.as_secs_f64(),
            control_plane_seconds: control_plane.as_secs_f64(),
        })
    }
}

/// CPU time used so far by this machine's `kube-apiserver` and `etcd` processes.
fn control_plane_cpu_time() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| CONTROL_PLANE.contains(&comm.trim()))
        })
        .filter_map(|pid| cpu_time(pid).ok())
        .sum()
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `getconf CLK_TCK`, else 100 (Linux).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of `pid` from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse {path}"))?;
    let per_second = clock_ticks_per_second();
    Ok(Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state): field k is at index k - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn own_process_is_measured() {
        let meter = Meter::start(std::process::id()).unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = meter.stop().unwrap();
        assert!(used.worker_seconds > 0.05, "{used:?}");
        assert!(used.control_plane_seconds >= 0.0);
    }
}
