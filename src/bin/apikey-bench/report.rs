//! The results: one table for people, the same as JSON for machines, each figure beside its target.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::Args;
use crate::authenticate::{Authenticate, TokenRun};
use crate::cluster::Writes;
use crate::cpu::PhaseCpu;
use crate::limits::Limits;
use crate::phases::Measured;

/// The plain client's writes, without hashing: the limit for create and delete.
const LIMIT_WRITES: &str = "plain client's writes";
/// The limit for regenerate.
const LIMIT_MAX: &str = "max(writes, hashing alone)";
/// The plain client doing the writes and the hashing together, on the same cores.
const LIMIT_WITH_HASHING: &str = "writes + hashing, same cores";

/// Largest ratio of measured to limit time the targets allow for create, regenerate and delete.
pub const RATIO_TARGET: f64 = 1.25;
/// Largest idle CPU use the target allows, in percent of one core.
pub const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;
/// Largest resident set size the target allows at 10,000 keys, in MiB.
pub const RSS_TARGET_MIB: f64 = 40.0;
/// Largest ratio of the argon2id limit to the first-token rate the target allows.
pub const FIRST_TOKEN_TARGET: f64 = 1.25;
/// Largest ratio of the ES256 limit to the repeat-token rate the target allows.
pub const REPEAT_TOKEN_TARGET: f64 = 2.0;

const MIB: f64 = 1024.0 * 1024.0;

/// Everything the benchmark found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// N: ApiKeys.
    pub keys: u32,
    /// C: requests in flight.
    pub concurrency: u16,
    /// Cores of this machine (threads the hashing limit used).
    pub cores: usize,
    /// Namespace the operator ran in.
    pub operator_namespace: String,
    /// Namespaces of the plain-client limits (writes alone, writes with hashing).
    pub limit_namespaces: [String; 2],
    /// The operator's log file.
    pub operator_log: String,
    /// create, regenerate, delete, each against the limit the issue defines and, for create and
    /// regenerate, against the plain client doing the writes and the hashing together.
    pub phases: Vec<PhaseRow>,
    /// The parts of the limits.
    pub limit_parts: LimitParts,
    /// Where the CPU went in each timed phase, for the operator and for the plain client.
    pub cpu: Vec<CpuRow>,
    /// The idle phase.
    pub idle: IdleRow,
    /// Resident memory with N keys live.
    pub memory: MemoryRow,
    /// The token server's tokens beside their limits.
    pub authenticate: AuthenticateRow,
}

/// One timed phase beside its limit.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    /// Phase name.
    pub phase: String,
    /// Time the operator took.
    pub measured_seconds: f64,
    /// What the limit is.
    pub limit: String,
    /// Time the plain client (or hashing) took.
    pub limit_seconds: f64,
    /// measured / limit.
    pub ratio: f64,
    /// Largest ratio the target allows.
    pub target_ratio: f64,
}

/// The measurements the limits are made of.
#[derive(Clone, Debug, Serialize)]
pub struct LimitParts {
    /// The plain client's create writes, without hashing.
    pub create_writes_seconds: f64,
    /// The plain client's regenerate writes, without hashing.
    pub regenerate_writes_seconds: f64,
    /// N argon2id hashes with the default parameters, alone.
    pub hashing_seconds: f64,
    /// Threads the hashes ran on.
    pub hash_threads: usize,
}

/// CPU seconds of one phase: the operator's run beside the plain client's.
#[derive(Clone, Debug, Serialize)]
pub struct CpuRow {
    /// Phase name.
    pub phase: String,
    /// With the operator.
    pub operator: PhaseCpu,
    /// With the plain client (create and regenerate: with hashing).
    pub plain_client: PhaseCpu,
}

/// What the operator did with nothing to do.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRow {
    /// Wall time of the phase.
    pub seconds: f64,
    /// Writes the API server stored (target: zero).
    pub writes: usize,
    /// The writes per kind.
    pub writes_by_kind: Writes,
    /// CPU seconds the operator used.
    pub cpu_seconds: f64,
    /// CPU use in percent of one core.
    pub cpu_percent_of_one_core: f64,
    /// Largest CPU use the target allows, in percent of one core.
    pub target_cpu_percent: f64,
}

/// Resident memory of the operator.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryRow {
    /// Peak resident set size (`VmHWM`) in MiB.
    pub peak_rss_mib: f64,
    /// Resident set size (`VmRSS`) in MiB right before the delete phase.
    pub final_rss_mib: f64,
    /// Largest resident set size the target allows at 10,000 keys, in MiB.
    pub target_mib_at_10000_keys: f64,
}

/// Token requests of one kind, beside their limit.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRow {
    /// Requests made, each answered with a token.
    pub requests: usize,
    /// Wall time of all of them.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_second: f64,
    /// Median latency of a request, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// What the limit is.
    pub limit: String,
    /// The limit, per second.
    pub limit_per_second: f64,
    /// limit per second / tokens per second.
    pub ratio: f64,
    /// Largest ratio the target allows.
    pub target_ratio: f64,
    /// Whether the ratio is within the target (reported only).
    pub met: bool,
}

/// The authenticate phase: K clients' first tokens (argon2id path) and repeat tokens
/// (remembered path) from the token server, each beside its limit.
#[derive(Clone, Debug, Serialize)]
pub struct AuthenticateRow {
    /// K: clients.
    pub clients: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The first token of each client, against argon2id verifications on all cores.
    pub first_tokens: TokenRow,
    /// Repeat tokens of the same clients, against ES256 signatures on one core.
    pub repeat_tokens: TokenRow,
    /// Threads of the argon2id limit.
    pub argon2id_threads: usize,
    /// Client authentications the token server answered by argon2id (null: unknown).
    pub verified_by_argon2id: Option<u64>,
    /// Client authentications it answered from memory (null: unknown).
    pub remembered: Option<u64>,
    /// The token server's peak resident set size (`VmHWM`) in MiB.
    pub token_server_peak_rss_mib: f64,
    /// Its resident set size (`VmRSS`) in MiB at the end of the phase.
    pub token_server_final_rss_mib: f64,
    /// The token server's log file.
    pub token_server_log: String,
}

impl AuthenticateRow {
    fn new(a: &Authenticate) -> Self {
        let row = |run: &TokenRun, limit: &str, limit_per_second: f64, target: f64| {
            let ratio = round(limit_per_second / run.per_second().max(f64::EPSILON), 3);
            TokenRow {
                requests: run.requests,
                seconds: round(run.wall.as_secs_f64(), 3),
                tokens_per_second: round(run.per_second(), 1),
                p50_ms: round(run.p50.as_secs_f64() * 1e3, 2),
                p99_ms: round(run.p99.as_secs_f64() * 1e3, 2),
                limit: limit.into(),
                limit_per_second: round(limit_per_second, 1),
                ratio,
                target_ratio: target,
                met: ratio <= target,
            }
        };
        Self {
            clients: a.clients,
            concurrency: a.concurrency,
            first_tokens: row(
                &a.first,
                &format!("argon2id verifications, {} threads", a.argon2id_threads),
                a.argon2id_per_second,
                FIRST_TOKEN_TARGET,
            ),
            repeat_tokens: row(
                &a.repeat,
                "ES256 signatures, one core",
                a.es256_per_second,
                REPEAT_TOKEN_TARGET,
            ),
            argon2id_threads: a.argon2id_threads,
            verified_by_argon2id: a.verified_by_argon2id,
            remembered: a.remembered,
            token_server_peak_rss_mib: round(a.rss.peak as f64 / MIB, 1),
            token_server_final_rss_mib: round(a.rss.current as f64 / MIB, 1),
            token_server_log: a.log.clone(),
        }
    }
}

impl Report {
    /// Puts measurements and limits side by side.
    pub fn new(
        args: &Args,
        operator_namespace: &str,
        limit_namespaces: [&str; 2],
        measured: Measured,
        limits: Limits,
    ) -> Self {
        let row = |phase: &str, limit: &str, m: Duration, l: Duration| PhaseRow {
            phase: phase.into(),
            limit: limit.into(),
            measured_seconds: round(m.as_secs_f64(), 3),
            limit_seconds: round(l.as_secs_f64(), 3),
            ratio: round(ratio(m, l), 3),
            target_ratio: RATIO_TARGET,
        };
        let authenticate = AuthenticateRow::new(&measured.authenticate);
        let idle = measured.idle;
        let wall = idle.wall.as_secs_f64();
        Self {
            keys: args.keys,
            concurrency: args.concurrency,
            cores: limits.hash_threads,
            operator_namespace: operator_namespace.into(),
            limit_namespaces: limit_namespaces.map(String::from),
            operator_log: measured.log,
            phases: vec![
                row(
                    "create",
                    LIMIT_WRITES,
                    measured.create,
                    limits.create_writes,
                ),
                row(
                    "create",
                    LIMIT_WITH_HASHING,
                    measured.create,
                    limits.create_with_hashing,
                ),
                row(
                    "regenerate",
                    LIMIT_MAX,
                    measured.regenerate,
                    limits.regenerate_max(),
                ),
                row(
                    "regenerate",
                    LIMIT_WITH_HASHING,
                    measured.regenerate,
                    limits.regenerate_with_hashing,
                ),
                row("delete", LIMIT_WRITES, measured.delete, limits.delete),
            ],
            limit_parts: LimitParts {
                create_writes_seconds: round(limits.create_writes.as_secs_f64(), 3),
                regenerate_writes_seconds: round(limits.regenerate_writes.as_secs_f64(), 3),
                hashing_seconds: round(limits.hashing.as_secs_f64(), 3),
                hash_threads: limits.hash_threads,
            },
            cpu: ["create", "regenerate", "delete"]
                .iter()
                .zip(measured.cpu.iter().zip(limits.cpu.iter()))
                .map(|(phase, (operator, plain_client))| CpuRow {
                    phase: (*phase).into(),
                    operator: *operator,
                    plain_client: *plain_client,
                })
                .collect(),
            idle: IdleRow {
                seconds: round(wall, 3),
                writes: idle.writes.total(),
                writes_by_kind: idle.writes,
                cpu_seconds: round(idle.cpu.as_secs_f64(), 3),
                cpu_percent_of_one_core: round(
                    100.0 * idle.cpu.as_secs_f64() / wall.max(f64::EPSILON),
                    3,
                ),
                target_cpu_percent: IDLE_CPU_TARGET_PERCENT,
            },
            memory: MemoryRow {
                peak_rss_mib: round(measured.rss.peak as f64 / MIB, 1),
                final_rss_mib: round(measured.rss.current as f64 / MIB, 1),
                target_mib_at_10000_keys: RSS_TARGET_MIB,
            },
            authenticate,
        }
    }

    /// The table printed on standard output.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "apikey-bench: N = {} keys, C = {} concurrency, {} cores",
            self.keys, self.concurrency, self.cores
        );
        let _ = writeln!(
            out,
            "{:<11} {:>10} {:>9} {:>7}   {:<18} limit",
            "phase", "measured s", "limit s", "ratio", "target"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<11} {:>10.2} {:>9.2} {:>6.2}x   <= {:.2}x {:<9} {}",
                p.phase,
                p.measured_seconds,
                p.limit_seconds,
                p.ratio,
                p.target_ratio,
                verdict(p.ratio <= p.target_ratio),
                p.limit
            );
        }
        let l = &self.limit_parts;
        let _ = writeln!(
            out,
            "  (plain client: create writes {:.2} s, regenerate writes {:.2} s; {} argon2id hashes alone on {} threads {:.2} s)",
            l.create_writes_seconds,
            l.regenerate_writes_seconds,
            self.keys,
            l.hash_threads,
            l.hashing_seconds
        );
        let _ = writeln!(
            out,
            "CPU s       {:>10} {:>14}   {:>12} {:>14}",
            "operator", "control plane", "plain client", "control plane"
        );
        for c in &self.cpu {
            let _ = writeln!(
                out,
                "{:<11} {:>10.2} {:>14.2}   {:>12.2} {:>14.2}",
                c.phase,
                c.operator.worker_seconds,
                c.operator.control_plane_seconds,
                c.plain_client.worker_seconds,
                c.plain_client.control_plane_seconds
            );
        }
        let i = &self.idle;
        let w = &i.writes_by_kind;
        let _ = writeln!(
            out,
            "idle {:.0} s:   {} API writes (ApiKeys {}, Secrets {}, Events {})   target 0 {}",
            i.seconds,
            i.writes,
            w.apikeys,
            w.secrets,
            w.events,
            verdict(i.writes == 0)
        );
        let _ = writeln!(
            out,
            "idle CPU:    {:.3} CPU s = {:.3}% of one core   target < {:.0}% {}",
            i.cpu_seconds,
            i.cpu_percent_of_one_core,
            i.target_cpu_percent,
            verdict(i.cpu_percent_of_one_core < i.target_cpu_percent)
        );
        let m = &self.memory;
        let _ = writeln!(
            out,
            "memory:      peak RSS {:.1} MiB, final RSS {:.1} MiB with {} keys   target < {:.0} MiB at 10,000 keys{}",
            m.peak_rss_mib,
            m.final_rss_mib,
            self.keys,
            m.target_mib_at_10000_keys,
            if self.keys == 10_000 {
                format!(" {}", verdict(m.peak_rss_mib < m.target_mib_at_10000_keys))
            } else {
                String::new()
            }
        );
        let a = &self.authenticate;
        let _ = writeln!(
            out,
            "authenticate: K = {} clients, {} requests in flight",
            a.clients, a.concurrency
        );
        let _ = writeln!(
            out,
            "{:<13} {:>8} {:>10} {:>8} {:>8} {:>10} {:>7}   {:<18} limit",
            "tokens", "requests", "tokens/s", "p50 ms", "p99 ms", "limit/s", "ratio", "target"
        );
        for (name, t) in [("first", &a.first_tokens), ("repeat", &a.repeat_tokens)] {
            let _ = writeln!(
                out,
                "{:<13} {:>8} {:>10.1} {:>8.2} {:>8.2} {:>10.1} {:>6.2}x   <= {:.2}x {:<9} {}",
                name,
                t.requests,
                t.tokens_per_second,
                t.p50_ms,
                t.p99_ms,
                t.limit_per_second,
                t.ratio,
                t.target_ratio,
                verdict(t.met),
                t.limit
            );
        }
        let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  (token server: {} by argon2id, {} remembered; peak RSS {:.1} MiB, final RSS {:.1} MiB)",
            count(a.verified_by_argon2id),
            count(a.remembered),
            a.token_server_peak_rss_mib,
            a.token_server_final_rss_mib
        );
        out
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(missed)" }
}

fn ratio(measured: Duration, limit: Duration) -> f64 {
    measured.as_secs_f64() / limit.as_secs_f64().max(f64::EPSILON)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
