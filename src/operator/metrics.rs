//! Prometheus metrics, served as text at `/metrics`. No label or value ever holds key material.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What a reconcile decided (`in_sync`, `created`, `regenerated`, `repaired_deleted`,
    /// `repaired_altered`, `duplicate`, `conflict`).
    pub outcome: String,
}

/// Label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (an error kind, or why a key was issued).
    pub reason: String,
}

/// Label set with one `ready` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    /// The status of the key's Ready condition: `true`, `false` or `unknown`.
    pub ready: String,
}

/// Label set with one `trigger` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// What made a key rotate: `annotation`, `schedule` or `repair`.
    pub trigger: String,
}

/// Label set with one `how` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HowLabel {
    /// How a grace period ended: `elapsed` (its time came, or the grace period was shortened),
    /// `superseded` (a new rotation replaced the previous secret) or `revoked` (the key stopped
    /// being Ready).
    pub how: String,
}

/// Label set with one `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// A workload kind: `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles that succeeded, by outcome.
    pub reconciles: Family<OutcomeLabel, Counter>,
    /// Reconciles that failed, by error kind.
    pub failures: Family<ReasonLabel, Counter>,
    /// Duration of reconciles in seconds.
    pub duration: Histogram,
    /// Client secrets written, by reason (`created`, `regenerated`, `repaired_*`).
    pub issued: Family<ReasonLabel, Counter>,
    /// Rotations of client secrets (new secrets of existing keys), by trigger.
    pub rotations: Family<TriggerLabel, Counter>,
    /// Grace periods of previous secrets that ended, by how.
    pub grace_periods_ended: Family<HowLabel, Counter>,
    /// Rollout restarts issued to workloads, by kind.
    pub rollout_restarts: Family<KindLabel, Counter>,
    /// ApiKeys seen in the caches, by Ready status (refreshed on every scrape).
    pub managed_keys: Family<ReadyLabel, Gauge<i64, AtomicI64>>,
    /// 1 while this process holds the leader lease (or runs without leader election).
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("apikey");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let issued = Family::<ReasonLabel, Counter>::default();
        let managed_keys = Family::<ReadyLabel, Gauge<i64, AtomicI64>>::default();
        let rotations = Family::<TriggerLabel, Counter>::default();
        let grace_periods_ended = Family::<HowLabel, Counter>::default();
        let rollout_restarts = Family::<KindLabel, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconciles",
            "Reconciles that succeeded, by outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "keys_issued",
            "Client secrets written, by reason (created, regenerated, scheduled, repaired_deleted, repaired_altered)",
            issued.clone(),
        );
        registry.register(
            "rotations",
            "New client secrets of existing keys, by trigger (annotation, schedule, repair)",
            rotations.clone(),
        );
        registry.register(
            "grace_periods_ended",
            "Previous client secrets no longer accepted, by how their grace period ended (elapsed, superseded, revoked)",
            grace_periods_ended.clone(),
        );
        registry.register(
            "rollout_restarts",
            "Rollout restarts issued to workloads after a new client secret, by kind",
            rollout_restarts.clone(),
        );
        registry.register(
            "managed_keys",
            "ApiKeys watched, by Ready status",
            managed_keys.clone(),
        );
        registry.register(
            "leader",
            "1 while this process is the leader",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            issued,
            rotations,
            grace_periods_ended,
            rollout_restarts,
            managed_keys,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a successful reconcile.
    pub fn reconciled(&self, outcome: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, reason: &str, seconds: f64) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts a client secret written.
    pub fn issued(&self, reason: &str) {
        self.issued
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a rotation by `trigger` (see [`crate::core::issue::IssueReason::trigger`]).
    pub fn rotated(&self, trigger: &str) {
        self.rotations
            .get_or_create(&TriggerLabel {
                trigger: trigger.into(),
            })
            .inc();
    }

    /// Counts a grace period that ended, by `how`.
    pub fn grace_period_ended(&self, how: &str) {
        self.grace_periods_ended
            .get_or_create(&HowLabel { how: how.into() })
            .inc();
    }

    /// Counts a rollout restart of a workload of `kind`.
    pub fn rollout_restarted(&self, kind: &str) {
        self.rollout_restarts
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Sets the managed-keys gauge from counts by Ready status.
    pub fn set_managed_keys(&self, ready: i64, not_ready: i64, unknown: i64) {
        for (label, n) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
            self.managed_keys
                .get_or_create(&ReadyLabel {
                    ready: label.into(),
                })
                .set(n);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels_and_eof() {
        let m = Metrics::default();
        m.reconciled("in_sync", 0.002);
        m.issued("created");
        m.failed("kube", 0.1);
        m.set_managed_keys(2, 1, 0);
        m.leader.set(1);
        let text = m.encode();
        assert!(
            text.contains("apikey_reconciles_total{outcome=\"in_sync\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apikey_keys_issued_total{reason=\"created\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apikey_reconcile_failures_total{reason=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apikey_managed_keys{ready=\"true\"} 2"),
            "{text}"
        );
        assert!(text.contains("apikey_leader 1"), "{text}");
        assert!(
            text.contains("apikey_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
