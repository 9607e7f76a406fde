//! The token server's metrics, served at `/metrics` in the OpenMetrics text format under the
//! `apikey_token_` prefix. No label carries a client id, a secret or a token.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (see [`TokenMetrics::failures`]).
    pub reason: &'static str,
}

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `hit`, `miss` or `known_wrong` for the remembered verifications; `active`, `inactive`
    /// or `forbidden` for introspection.
    pub result: &'static str,
}

/// `by` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLabel {
    /// `client_id` or `address`.
    pub by: &'static str,
}

/// The token server's metrics.
pub struct TokenMetrics {
    registry: Registry,
    /// Access tokens issued.
    pub issued: Counter,
    /// Token requests refused, by reason: `invalid_request`, `unsupported_grant_type`,
    /// `invalid_scope`, `malformed_credentials` (answered without hashing), `unknown_client`,
    /// `ambiguous_client`, `not_ready`, `expired` (the key's `spec.expiresAt` has passed),
    /// `wrong_secret`, `hash_refused`, `rate_limited`, `saturated`, `internal`.
    pub failures: Family<ReasonLabel, Counter>,
    /// Duration of argon2id verifications of a presented client secret, in seconds.
    pub verification_seconds: Histogram,
    /// Verifications answered from memory (`hit`) or by argon2id (`miss`).
    pub remembered: Family<ResultLabel, Counter>,
    /// Client authentications (at the token and the introspection endpoint, from memory or by
    /// argon2id) that succeeded with a key's previous client secret, during the grace period
    /// after a rotation: what still uses the old secret. Which keys: the token server's log
    /// names each one (at info) when it verifies its previous secret.
    pub previous_secret_used: Counter,
    /// Requests refused with 429, by what was locked out (`client_id`, `address`).
    pub rate_limited: Family<ByLabel, Counter>,
    /// Introspection answers, by `active`/`inactive`.
    pub introspections: Family<ResultLabel, Counter>,
    /// ApiKeys known to the token server (refreshed on every scrape).
    pub keys: Gauge<i64, AtomicI64>,
    /// Of those, the Ready ones.
    pub ready_keys: Gauge<i64, AtomicI64>,
    /// Signing keys published in the JWKS.
    pub signing_keys: Gauge<i64, AtomicI64>,
}

impl Default for TokenMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("apikey_token");
        let m = Self {
            issued: Counter::default(),
            failures: Family::default(),
            verification_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            remembered: Family::default(),
            previous_secret_used: Counter::default(),
            rate_limited: Family::default(),
            introspections: Family::default(),
            keys: Gauge::default(),
            ready_keys: Gauge::default(),
            signing_keys: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("issued", "Access tokens issued", m.issued.clone());
        registry.register(
            "failures",
            "Token requests refused, by reason",
            m.failures.clone(),
        );
        registry.register(
            "verification_duration_seconds",
            "Duration of argon2id verifications of presented client secrets",
            m.verification_seconds.clone(),
        );
        registry.register(
            "remembered_verifications",
            "Client authentications answered from memory (hit) or by argon2id (miss)",
            m.remembered.clone(),
        );
        registry.register(
            "previous_secret_used",
            "Client authentications that succeeded with a key's previous client secret, during its grace period",
            m.previous_secret_used.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by what was locked out",
            m.rate_limited.clone(),
        );
        registry.register(
            "introspections",
            "Introspection answers, by result",
            m.introspections.clone(),
        );
        registry.register("keys", "ApiKeys known", m.keys.clone());
        registry.register(
            "ready_keys",
            "ApiKeys known and Ready",
            m.ready_keys.clone(),
        );
        registry.register(
            "signing_keys",
            "Signing keys published in the JWKS",
            m.signing_keys.clone(),
        );
        Self { registry, ..m }
    }
}

impl TokenMetrics {
    /// Counts a refused token request.
    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The value of the sample `series` (its name and labels as the text shows them) in `metrics`;
/// 0 when absent. For the token server's unit tests.
#[cfg(test)]
pub(crate) fn count(metrics: &TokenMetrics, series: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}
