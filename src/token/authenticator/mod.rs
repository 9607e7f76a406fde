//! Client authentication at the token endpoint: is this client secret the current one of the key
//! that holds this client id, or, during the grace period after a rotation, its previous one?
//! Built so that it cannot be turned against the server:
//!
//! 1. a malformed client id or secret (format, prefix, CRC32 checksum: [`crate::core::credentials`]) is
//!    refused at once, with no lookup and no hashing;
//! 2. a client id or source address whose budget of failures is spent is refused with a wait
//!    ([`super::limits`]);
//! 3. the key is looked up in the watch cache ([`super::directory`]), never by an API call; a key
//!    whose `spec.expiresAt` has passed is refused like an unknown one, by the token server's own
//!    clock ([`super::clock`]), whether or not the operator has marked it yet;
//! 4. a verification remembered from the last [`AuthLimits::remember_for`] is answered by
//!    comparing keyed digests in constant time: a steady client costs one argon2id per period;
//! 5. otherwise argon2id runs on the bounded blocking pool ([`crate::core::hashing::Hasher`]), with at
//!    most a fixed number of verifications queued (503 beyond); a stored hash whose parameters
//!    exceed [`crate::core::hashing::HashParams::CEILING`] matches nothing.
//!
//! Rotated secrets are checked as ory/fosite checks them: the current hash first, then, if that
//! does not match and the status publishes a previous secret whose grace period has not ended
//! (`status.previousSecretExpiresAt`), the previous hash. A client that presented the previous
//! secret authenticates as the previous generation ([`Authenticated::generation`]) and only until
//! the end of the grace period ([`KeyEntry::valid_until`]). Both hashes run in one place in the
//! queue, and a secret that matches neither is one failure, as with one hash.
//!
//! The remembered verifications and the secrets known to be wrong are bound (by a keyed digest,
//! [`Authenticator`]'s `tag`) to the key as it is, and to the set of hashes in effect when they
//! were decided: the previous hash is part of that set only while its grace period lasts. So a
//! remembered success with the previous secret ends with the grace period (or any write of the
//! ApiKey), and a secret is known to be wrong only if it matched neither hash then in effect.
//!
//! This module is the request path ([`Authenticator::authenticate`]) and the failure budgets;
//! `cache.rs` remembers the verifications and the secrets known to be wrong.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::clock::Clock;
use super::directory::{Directory, KeyEntry, Lookup, SecretUsed};
use super::limits::FailureLimiter;
use super::metrics::{ByLabel, ResultLabel, TokenMetrics};
use crate::core::credentials::{self, ClientSecret};
use crate::core::hashing::{HashParams, Hasher};
use crate::error::Result;

mod cache;

use cache::VerificationCache;

/// Why a client was not authenticated. Every variant but `RateLimited` and `Saturated` is answered
/// `invalid_client`, the same for all of them (RFC 6749 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client id or secret does not have this operator's format or checksum.
    Malformed,
    /// No key holds the client id.
    UnknownClient,
    /// More than one key holds the client id.
    AmbiguousClient,
    /// The key is not Ready.
    NotReady,
    /// The key's `spec.expiresAt` has passed.
    Expired,
    /// The secret is neither the key's current one nor its previous one in its grace period.
    WrongSecret,
    /// Too many failures for this client id or source address: try again after the wait.
    RateLimited(Duration),
    /// Too many verifications in flight: try again shortly.
    Saturated,
    /// The key's published hash is not argon2id or costs more than the token server's ceiling
    /// (anyone who can write an ApiKey's status can write any PHC string there).
    HashRefused,
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed_credentials",
            Refusal::UnknownClient => "unknown_client",
            Refusal::AmbiguousClient => "ambiguous_client",
            Refusal::NotReady => "not_ready",
            Refusal::Expired => "expired",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::Saturated => "saturated",
            Refusal::HashRefused => "hash_refused",
        }
    }
}

/// Limits of the authenticator.
#[derive(Clone, Copy, Debug)]
pub struct AuthLimits {
    /// How long a successful verification is remembered.
    pub remember_for: Duration,
    /// Failures a client id may have at once, and seconds per further one.
    pub client_burst: u32,
    /// Seconds until one more failure is allowed to a client id.
    pub client_seconds_per_failure: u64,
    /// Failures a source address may have at once.
    pub address_burst: u32,
    /// Seconds until one more failure is allowed to a source address.
    pub address_seconds_per_failure: u64,
    /// argon2id verifications running or queued at most; more are refused as saturated.
    pub max_verifications_queued: usize,
    /// The most a published hash may cost to verify; a dearer one matches nothing.
    pub hash_ceiling: HashParams,
}

/// A client that authenticated: its key, and which of the key's client secrets it presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The key.
    pub key: Arc<KeyEntry>,
    /// Which of the key's client secrets the client presented.
    pub secret: SecretUsed,
}

impl Authenticated {
    /// The secret generation the client authenticated as: the current one, or the previous one
    /// for the previous secret (what its access token's `apikey.generation` says).
    pub fn generation(&self) -> i64 {
        self.key.generation_of(self.secret)
    }
}

/// Authenticates clients against the [`Directory`].
pub struct Authenticator {
    directory: Arc<Directory>,
    hasher: Hasher,
    limits: AuthLimits,
    /// The wall clock that expiries and grace periods are decided by.
    clock: Clock,
    /// The verifications remembered, and the secrets known to be wrong.
    cache: Arc<VerificationCache>,
    queue: Arc<Semaphore>,
    budgets: Arc<Budgets>,
    typical_hash: TypicalDuration,
    metrics: Arc<TokenMetrics>,
}

impl Authenticator {
    /// An authenticator over `directory`, verifying on `hasher`'s pool, by the system's clock.
    pub fn new(
        directory: Arc<Directory>,
        hasher: Hasher,
        limits: AuthLimits,
        metrics: Arc<TokenMetrics>,
    ) -> Result<Self> {
        Ok(Self {
            directory,
            hasher,
            clock: Clock::system(),
            cache: Arc::new(VerificationCache::new(limits.remember_for)?),
            queue: Arc::new(Semaphore::new(limits.max_verifications_queued.max(1))),
            budgets: Arc::new(Budgets::new(&limits)),
            typical_hash: TypicalDuration::default(),
            limits,
            metrics,
        })
    }

    /// The same authenticator, deciding expiries and grace periods by `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// The wall clock expiries and grace periods are decided by (the token endpoints issue and
    /// check tokens by it too).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The key whose current client secret `secret` is, or whose previous one it is while that
    /// one's grace period lasts, if `client_id` names exactly one Ready key that has not
    /// expired, and which of the two it is; else why not. Failures spend the budgets of the
    /// client id and of the source address (an IPv6 address counts by its /64: one host can hold
    /// a whole /64); a secret that matches neither hash is one failure. A client whose
    /// verification is remembered is answered before either budget is looked at, so that
    /// neither guessing at its client id nor a bad neighbour behind the same address (a proxy, a
    /// NAT) locks it out. Refusals that need no hash (an expired key among them) wait about as
    /// long as one hash takes, so that the answer's timing does not tell which client ids exist.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &ClientSecret,
        source: IpAddr,
    ) -> Result<Authenticated, Refusal> {
        let source = budget_address(source);
        if !credentials::is_well_formed_client_id(client_id) || !secret.is_well_formed() {
            self.budgets.by_address.failed(&source);
            return Err(Refusal::Malformed);
        }
        let entry = match self.directory.lookup(client_id) {
            Lookup::Found(entry) => entry,
            Lookup::Unknown => {
                return Err(self
                    .refuse_unhashed(client_id, source, Refusal::UnknownClient)
                    .await);
            }
            Lookup::Ambiguous => {
                return Err(self
                    .refuse_unhashed(client_id, source, Refusal::AmbiguousClient)
                    .await);
            }
            Lookup::NotReady => {
                return Err(self
                    .refuse_unhashed(client_id, source, Refusal::NotReady)
                    .await);
            }
        };
        let now = self.clock.now();
        if entry.is_expired(now) {
            return Err(self
                .refuse_unhashed(client_id, source, Refusal::Expired)
                .await);
        }
        let previous = entry.previous_in_grace(now);
        let tag = self.cache.tag(&entry, previous, secret);
        if let Some(used) = self.cache.is_remembered(&entry.uid, &tag) {
            self.metrics
                .remembered
                .get_or_create(&ResultLabel { result: "hit" })
                .inc();
            if used == SecretUsed::Previous {
                self.metrics.previous_secret_used.inc();
            }
            return Ok(Authenticated {
                key: entry,
                secret: used,
            });
        }
        if self.cache.is_known_wrong(&tag) {
            self.metrics
                .remembered
                .get_or_create(&ResultLabel {
                    result: "known_wrong",
                })
                .inc();
            tokio::time::sleep(self.typical_hash.get()).await;
            return Err(Refusal::WrongSecret);
        }
        self.locked_out(client_id, source)?;
        if !self.affordable(&entry.secret_hash) {
            tracing::warn!(namespace = %entry.namespace, apikey = %entry.name, ceiling = ?self.limits.hash_ceiling,
                "the ApiKey's status.secretHash is not an argon2id hash within the ceiling; refusing its client");
            return Err(self
                .refuse_unhashed(client_id, source, Refusal::HashRefused)
                .await);
        }
        // a previous hash out of bounds matches nothing; the current one is still tried
        let previous_phc = previous.and_then(|p| {
            let affordable = self.affordable(&p.hash);
            if !affordable {
                tracing::warn!(namespace = %entry.namespace, apikey = %entry.name, ceiling = ?self.limits.hash_ceiling,
                    "the ApiKey's status.previousSecretHash is not an argon2id hash within the ceiling; the previous secret matches nothing");
            }
            affordable.then(|| p.hash.clone())
        });
        self.metrics
            .remembered
            .get_or_create(&ResultLabel { result: "miss" })
            .inc();
        let Ok(queued) = self.queue.clone().try_acquire_owned() else {
            return Err(Refusal::Saturated);
        };
        // The verification runs to its end and counts its failure even if the request is
        // cancelled (a reset stream, a closed connection), holding its place in the queue until
        // then: a client cannot start hashes it does not wait for.
        let verification = tokio::spawn({
            let (hasher, phc, secret) = (
                self.hasher.clone(),
                entry.secret_hash.clone(),
                secret.clone(),
            );
            let (budgets, cache) = (self.budgets.clone(), self.cache.clone());
            let (metrics, client_id) = (self.metrics.clone(), client_id.to_owned());
            async move {
                // the current hash first, then the previous one (ory/fosite's rotated secrets)
                let mut took = Vec::with_capacity(2);
                let started = Instant::now();
                let current = hasher.verify(secret.clone(), phc).await.unwrap_or(false);
                took.push(started.elapsed());
                let used = match previous_phc {
                    _ if current => Some(SecretUsed::Current),
                    Some(previous_phc) => {
                        let started = Instant::now();
                        let verified = hasher.verify(secret, previous_phc).await.unwrap_or(false);
                        took.push(started.elapsed());
                        verified.then_some(SecretUsed::Previous)
                    }
                    None => None,
                };
                drop(queued);
                // one failed authentication is one failure, whether one or two hashes ran
                let lockout = if used.is_some() {
                    None
                } else {
                    cache.remember_wrong(tag);
                    budgets.failed(&metrics, &client_id, source)
                };
                // observed last: once they show, the failure has been counted
                for took in &took {
                    metrics.verification_seconds.observe(took.as_secs_f64());
                }
                (used, took, lockout)
            }
        });
        let Ok((used, took, lockout)) = verification.await else {
            return Err(Refusal::Saturated);
        };
        // one hash at a time: what refusals that need no hash wait for
        for took in took {
            self.typical_hash.observe(took);
        }
        if let Some(wait) = lockout {
            return Err(Refusal::RateLimited(wait));
        }
        let Some(used) = used else {
            return Err(Refusal::WrongSecret);
        };
        self.cache.remember(&entry.uid, used, tag);
        if used == SecretUsed::Previous {
            self.metrics.previous_secret_used.inc();
            if let Some(p) = previous {
                tracing::info!(namespace = %entry.namespace, apikey = %entry.name, generation = p.generation, grace_ends = %p.expires_at,
                    "a client authenticated with the ApiKey's previous client secret, accepted until the end of its grace period");
            }
        }
        Ok(Authenticated {
            key: entry,
            secret: used,
        })
    }

    /// Forgets lockouts that have ended and failure budgets that are full again; run it every
    /// minute or so, so that the limiters' memory follows the attackers of the last minutes.
    pub fn sweep(&self) {
        self.budgets.sweep();
        self.cache.sweep();
    }

    /// Whether `phc` is an argon2id hash within the ceiling, which may be verified.
    fn affordable(&self, phc: &str) -> bool {
        HashParams::of_phc(phc).is_some_and(|p| p.within(self.limits.hash_ceiling))
    }

    /// `Err(RateLimited)` while the client id (from this address, or from everywhere) or the
    /// source address is locked out.
    fn locked_out(&self, client_id: &str, source: IpAddr) -> Result<(), Refusal> {
        self.budgets.check(client_id, source).map_err(|(by, wait)| {
            self.metrics
                .rate_limited
                .get_or_create(&ByLabel { by })
                .inc();
            Refusal::RateLimited(wait)
        })
    }

    /// A refusal decided without hashing: counted against both budgets (or the lockout, if one
    /// holds), answered after about the time a hash takes.
    async fn refuse_unhashed(&self, client_id: &str, source: IpAddr, why: Refusal) -> Refusal {
        let answer = match self.locked_out(client_id, source) {
            Err(locked) => locked,
            Ok(()) => self
                .budgets
                .failed(&self.metrics, client_id, source)
                .map_or(why, Refusal::RateLimited),
        };
        tokio::time::sleep(self.typical_hash.get()).await;
        answer
    }
}

/// How many times more failures a client id may have from all addresses together than from one,
/// and how many times faster they come back: guessing from many addresses stays bounded, while a
/// guesser elsewhere cannot lock out a client's own address.
const OVERALL_FACTOR: u32 = 20;

/// The failure budgets: per client id and source address, per client id overall, per source
/// address.
struct Budgets {
    by_client: FailureLimiter<(String, IpAddr)>,
    by_client_overall: FailureLimiter<String>,
    by_address: FailureLimiter<IpAddr>,
}

impl Budgets {
    fn new(limits: &AuthLimits) -> Self {
        Self {
            by_client: FailureLimiter::new(limits.client_burst, limits.client_seconds_per_failure),
            by_client_overall: FailureLimiter::new(
                limits.client_burst.saturating_mul(OVERALL_FACTOR),
                (limits.client_seconds_per_failure / u64::from(OVERALL_FACTOR)).max(1),
            ),
            by_address: FailureLimiter::new(
                limits.address_burst,
                limits.address_seconds_per_failure,
            ),
        }
    }

    /// `Err((what, wait))` while a budget that applies is spent.
    fn check(&self, client_id: &str, source: IpAddr) -> Result<(), (&'static str, Duration)> {
        let labelled = |by| move |wait| (by, wait);
        self.by_client
            .check(&(client_id.to_owned(), source))
            .map_err(labelled("client_id"))?;
        self.by_client_overall
            .check(&client_id.to_owned())
            .map_err(labelled("client_id"))?;
        self.by_address.check(&source).map_err(labelled("address"))
    }

    /// Counts a failure of `client_id` from `source`; the lockout it started, if it spent a
    /// budget (the failure that spends a budget is answered with the lockout already).
    fn failed(&self, metrics: &TokenMetrics, client_id: &str, source: IpAddr) -> Option<Duration> {
        let client = self.by_client.failed(&(client_id.to_owned(), source));
        let overall = self.by_client_overall.failed(&client_id.to_owned());
        let address = self.by_address.failed(&source);
        let (by, wait) = match (client.or(overall), address) {
            (Some(wait), _) => ("client_id", wait),
            (None, Some(wait)) => ("address", wait),
            (None, None) => return None,
        };
        metrics.rate_limited.get_or_create(&ByLabel { by }).inc();
        Some(wait)
    }

    fn sweep(&self) {
        self.by_client.sweep();
        self.by_client_overall.sweep();
        self.by_address.sweep();
    }
}

/// The address a failure budget is kept for: an IPv4 address (also when mapped into IPv6), or
/// the /64 of an IPv6 address, the smallest block one host is usually given.
fn budget_address(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

/// A running estimate of how long an argon2id verification takes (an exponentially weighted
/// average, starting at 20 ms), which refusals that need no hash wait for.
struct TypicalDuration(std::sync::atomic::AtomicU64);

impl Default for TypicalDuration {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicU64::new(20_000))
    }
}

impl TypicalDuration {
    /// Moves the estimate an eighth of the way to `took`.
    fn observe(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let took = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .min(10_000_000);
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |old| Some(old - old / 8 + took / 8));
    }

    /// The estimate.
    fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
