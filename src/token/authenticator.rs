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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use super::clock::Clock;
use super::directory::{Directory, KeyEntry, Lookup, PreviousSecret, SecretUsed};
use super::limits::FailureLimiter;
use super::metrics::{ByLabel, ResultLabel, TokenMetrics};
use crate::core::credentials::{self, ClientSecret};
use crate::core::hashing::{HashParams, Hasher};
use crate::error::Result;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

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

struct Remembered {
    tag: [u8; 32],
    until: Instant,
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
    /// Key of the remembered digests, from the CSPRNG at start; never leaves the process.
    remember_key: [u8; 32],
    /// Remembered successes by key UID and secret: at most two per key (its current secret, and
    /// its previous one during a grace period).
    remembered: Mutex<HashMap<(String, SecretUsed), Remembered>>,
    queue: Arc<Semaphore>,
    /// Secrets known to be wrong for the key as it is now and the hashes in effect (their tags),
    /// until when: a client that keeps presenting a secret that has been regenerated costs no
    /// hash and spends no budget, so it cannot lock out its own new secret.
    refused: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
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
            remember_key: credentials::random_bytes::<32>()?,
            remembered: Mutex::default(),
            queue: Arc::new(Semaphore::new(limits.max_verifications_queued.max(1))),
            refused: Arc::default(),
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
        let tag = self.tag(&entry, previous, secret);
        if let Some(used) = self.is_remembered(&entry.uid, &tag) {
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
        if self.is_known_wrong(&tag) {
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
            let (budgets, refused) = (self.budgets.clone(), self.refused.clone());
            let (metrics, client_id) = (self.metrics.clone(), client_id.to_owned());
            let forget_after = self.limits.remember_for;
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
                    remember_wrong(&refused, tag, forget_after);
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
        self.remember(&entry.uid, used, tag);
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
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.retain(|_, r| r.until > now);
        }
        if let Ok(mut refused) = self.refused.lock() {
            refused.retain(|_, until| *until > now);
        }
    }

    /// Whether `phc` is an argon2id hash within the ceiling, which may be verified.
    fn affordable(&self, phc: &str) -> bool {
        HashParams::of_phc(phc).is_some_and(|p| p.within(self.limits.hash_ceiling))
    }

    /// Whether `tag` is a secret known to be wrong for the key as it is now.
    fn is_known_wrong(&self, tag: &[u8; 32]) -> bool {
        self.refused
            .lock()
            .ok()
            .and_then(|refused| refused.get(tag).copied())
            .is_some_and(|until| until > Instant::now())
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

    /// HMAC-SHA256 under the process's remember key over everything a verification depends on:
    /// the key's UID, resourceVersion (any write of the ApiKey), client id, current hash and
    /// generation, the previous secret's hash, generation and end of grace if it is `previous`
    /// (in its grace period now) and a marker if not, and the presented secret. Length-prefixed,
    /// so that no two inputs share an encoding. The set of hashes in effect is bound: a tag
    /// decided during a grace period is not the tag of the same secret after it.
    fn tag(
        &self,
        entry: &KeyEntry,
        previous: Option<&PreviousSecret>,
        secret: &ClientSecret,
    ) -> [u8; 32] {
        // Keys of any length are valid for HMAC (RFC 2104 §2): this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.remember_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        let mut update = |part: &str| {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        };
        let generation = entry.generation.to_string();
        for part in [
            entry.uid.as_str(),
            entry.resource_version.as_str(),
            entry.client_id.as_str(),
            entry.secret_hash.as_str(),
            generation.as_str(),
        ] {
            update(part);
        }
        match previous {
            None => update("none"),
            Some(p) => {
                update("previous");
                update(&p.hash);
                update(&p.generation.to_string());
                update(&p.expires_at.to_string());
            }
        }
        update(secret.expose());
        mac.finalize().into_bytes().into()
    }

    /// Which secret of the key `uid` `tag` is remembered as, if any; a hit is remembered for
    /// another period (the tag binds the hashes in effect, so a regeneration, or the end of the
    /// grace period for a remembered previous secret, still ends it).
    fn is_remembered(&self, uid: &str, tag: &[u8; 32]) -> Option<SecretUsed> {
        let mut remembered = self.remembered.lock().ok()?;
        let now = Instant::now();
        [SecretUsed::Current, SecretUsed::Previous]
            .into_iter()
            .find(|used| {
                remembered
                    .get_mut(&(uid.to_owned(), *used))
                    .is_some_and(|r| {
                        let hit = r.until > now && bool::from(r.tag.ct_eq(tag));
                        if hit {
                            r.until = now + self.limits.remember_for;
                        }
                        hit
                    })
            })
    }

    /// Remembers a successful verification of the key `uid` with its secret `used`: at most
    /// two entries per key (so no more than twice as many as there are keys), expired ones
    /// dropped by [`Authenticator::sweep`].
    fn remember(&self, uid: &str, used: SecretUsed, tag: [u8; 32]) {
        if self.limits.remember_for.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.insert(
                (uid.to_owned(), used),
                Remembered {
                    tag,
                    until: now + self.limits.remember_for,
                },
            );
        }
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

/// Most secrets remembered as wrong at once; beyond, a wrong secret is hashed each time (and
/// spends its budget) until the sweep makes room.
const MAX_KNOWN_WRONG: usize = 65_536;

/// Remembers `tag` as a wrong secret for `forget_after`.
fn remember_wrong(
    refused: &Mutex<HashMap<[u8; 32], Instant>>,
    tag: [u8; 32],
    forget_after: Duration,
) {
    if forget_after.is_zero() {
        return;
    }
    if let Ok(mut refused) = refused.lock()
        && refused.len() < MAX_KNOWN_WRONG
    {
        refused.insert(tag, Instant::now() + forget_after);
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
mod tests {
    use super::*;
    use crate::core::credentials::{generate_client_id, generate_client_secret};
    use crate::core::test_support::{cheap_hash, ready_apikey};
    use crate::token::metrics::count;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::watcher;

    const CHEAP: HashParams = HashParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn limits() -> AuthLimits {
        AuthLimits {
            remember_for: Duration::from_secs(60),
            client_burst: 3,
            client_seconds_per_failure: 60,
            address_burst: 100,
            address_seconds_per_failure: 1,
            max_verifications_queued: 4,
            hash_ceiling: HashParams::default(),
        }
    }

    /// Makes the Ready key `name` (UID `uid-<name>`) hold client id `id` and `hash`, at
    /// resourceVersion `version`; returns `id`.
    fn put_key(d: &Directory, name: &str, id: &str, version: &str, hash: String) -> String {
        let k = ready_apikey(name, id, version, hash);
        d.observe(watcher::Event::Apply(k), &mut None);
        id.into()
    }

    /// A Ready key `name` with a fresh client secret: (client id, secret).
    async fn key_with_secret(d: &Directory, name: &str) -> (String, ClientSecret) {
        let secret = generate_client_secret().unwrap();
        (ready_key(d, name, cheap_hash(&secret).await), secret)
    }

    fn ready_key(d: &Directory, name: &str, hash: String) -> String {
        put_key(d, name, &generate_client_id().unwrap(), "1", hash)
    }

    fn setup(limits: AuthLimits) -> (Arc<Directory>, Authenticator, Arc<TokenMetrics>) {
        let directory = Arc::new(Directory::default());
        let metrics = Arc::new(TokenMetrics::default());
        let hasher = Hasher::new(CHEAP, 1).unwrap();
        let auth = Authenticator::new(directory.clone(), hasher, limits, metrics.clone()).unwrap();
        (directory, auth, metrics)
    }

    /// [`setup`] with a clock set by hand, at 1 000 000 s after the epoch.
    fn setup_with_clock(
        limits: AuthLimits,
    ) -> (Arc<Directory>, Authenticator, Arc<TokenMetrics>, Clock) {
        let (d, auth, m) = setup(limits);
        let clock = Clock::fixed(at(0));
        (d, auth.with_clock(clock.clone()), m, clock)
    }

    /// `seconds` after the hand-set clock's start.
    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).unwrap()
    }

    /// Makes the Ready key `name` hold client id `id` at resourceVersion `version`, rotated: the
    /// current secret of generation 2 hashed as `current`, and, if given, the previous one of
    /// generation 1 hashed as `previous.0` until `previous.1`; expiring at `expires_at`.
    fn put_rotated(
        d: &Directory,
        name: &str,
        id: &str,
        version: &str,
        current: String,
        previous: Option<(String, Timestamp)>,
        expires_at: Option<Timestamp>,
    ) {
        let mut k = ready_apikey(name, id, version, current);
        k.spec.expires_at = expires_at.map(Time);
        if let Some(s) = k.status.as_mut() {
            s.secret_generation = Some(2);
            if let Some((hash, grace_end)) = previous {
                s.previous_secret_hash = Some(hash);
                s.previous_secret_generation = Some(1);
                s.previous_secret_expires_at = Some(Time(grace_end));
            }
        }
        d.observe(watcher::Event::Apply(k), &mut None);
    }

    /// Two fresh secrets and their hashes: (current, its hash, previous, its hash).
    async fn two_secrets() -> (ClientSecret, String, ClientSecret, String) {
        let (current, previous) = (
            generate_client_secret().unwrap(),
            generate_client_secret().unwrap(),
        );
        let (current_hash, previous_hash) =
            (cheap_hash(&current).await, cheap_hash(&previous).await);
        (current, current_hash, previous, previous_hash)
    }

    const VERIFIED: &str = "apikey_token_verification_duration_seconds_count";

    #[tokio::test]
    async fn the_right_secret_authenticates_once_by_argon2id_then_from_memory() {
        let (d, auth, m) = setup(limits());
        let secret = generate_client_secret().unwrap();
        let hash = cheap_hash(&secret).await;
        let id = ready_key(&d, "a", hash.clone());
        assert_eq!(
            auth.authenticate(&id, &secret, HERE)
                .await
                .unwrap()
                .key
                .name,
            "a"
        );
        assert_eq!(
            auth.authenticate(&id, &secret, HERE)
                .await
                .unwrap()
                .key
                .name,
            "a"
        );
        assert_eq!(count(&m, VERIFIED), 1, "the second was remembered");
        assert_eq!(
            count(
                &m,
                r#"apikey_token_remembered_verifications_total{result="hit"}"#
            ),
            1
        );
        // any write of the ApiKey forgets it
        put_key(&d, "a", &id, "2", hash);
        assert_eq!(
            auth.authenticate(&id, &secret, HERE)
                .await
                .unwrap()
                .key
                .name,
            "a"
        );
        assert_eq!(count(&m, VERIFIED), 2, "verified again after the write");
    }

    #[tokio::test]
    async fn wrong_unknown_and_malformed_credentials_are_refused_and_malformed_ones_cost_no_hash() {
        let (d, auth, m) = setup(limits());
        let (id, secret) = key_with_secret(&d, "a").await;
        let other = generate_client_secret().unwrap();
        let refused = |r: Result<Authenticated, Refusal>| r.unwrap_err();
        assert_eq!(
            refused(
                auth.authenticate(&id, &ClientSecret::new("aksk_short".into()), HERE)
                    .await
            ),
            Refusal::Malformed
        );
        assert_eq!(
            refused(auth.authenticate("nope", &secret, HERE).await),
            Refusal::Malformed
        );
        assert_eq!(count(&m, VERIFIED), 0);
        assert_eq!(
            refused(
                auth.authenticate(&generate_client_id().unwrap(), &secret, HERE)
                    .await
            ),
            Refusal::UnknownClient
        );
        assert_eq!(
            refused(auth.authenticate(&id, &other, HERE).await),
            Refusal::WrongSecret
        );
        assert_eq!(count(&m, VERIFIED), 1);
    }

    #[tokio::test]
    async fn a_client_id_is_locked_out_after_its_burst_but_a_remembered_client_is_not() {
        let (d, auth, _) = setup(limits());
        let secret = generate_client_secret().unwrap();
        let hash = cheap_hash(&secret).await;
        let id = ready_key(&d, "a", hash.clone());
        auth.authenticate(&id, &secret, HERE).await.unwrap();
        let mut answers = Vec::new();
        for _ in 0..5 {
            let guess = generate_client_secret().unwrap();
            answers.push(auth.authenticate(&id, &guess, HERE).await.unwrap_err());
        }
        assert!(
            answers[..3].iter().all(|r| *r == Refusal::WrongSecret),
            "the burst: 3 failures"
        );
        assert!(
            answers[3..]
                .iter()
                .all(|r| matches!(r, Refusal::RateLimited(_))),
            "{answers:?}"
        );
        assert!(
            auth.authenticate(&id, &secret, HERE).await.is_ok(),
            "remembered: not locked out"
        );
        let other = ready_key(&d, "b", hash);
        assert!(
            auth.authenticate(&other, &secret, HERE).await.is_ok(),
            "other clients are served"
        );
    }

    #[tokio::test]
    async fn a_hash_over_the_ceiling_or_not_argon2id_matches_nothing_and_costs_nothing() {
        let (d, auth, m) = setup(limits());
        let secret = generate_client_secret().unwrap();
        let dear = "$argon2id$v=19$m=262144,t=64,p=16$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let id = ready_key(&d, "a", dear.into());
        assert_eq!(
            auth.authenticate(&id, &secret, HERE).await.unwrap_err(),
            Refusal::HashRefused
        );
        let id = ready_key(&d, "b", "$2b$12$notargon".into());
        assert_eq!(
            auth.authenticate(&id, &secret, HERE).await.unwrap_err(),
            Refusal::HashRefused
        );
        assert_eq!(count(&m, VERIFIED), 0);
    }

    #[test]
    fn an_ipv6_address_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(budget_address(a), budget_address(b));
        assert_ne!(budget_address(a), budget_address(other));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(
            budget_address(mapped),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_cancelled_verification_still_counts_its_failure() {
        let (d, auth, m) = setup(AuthLimits {
            client_burst: 1,
            ..limits()
        });
        let auth = Arc::new(auth);
        let (id, _) = key_with_secret(&d, "a").await;
        let guess = generate_client_secret().unwrap();
        let attempt = tokio::spawn({
            let (auth, id, guess) = (auth.clone(), id.clone(), guess.clone());
            async move { auth.authenticate(&id, &guess, HERE).await }
        });
        // cancel it as soon as its hash has started
        while count(
            &m,
            r#"apikey_token_remembered_verifications_total{result="miss"}"#,
        ) == 0
        {
            tokio::task::yield_now().await;
        }
        attempt.abort();
        while count(&m, VERIFIED) == 0 {
            tokio::task::yield_now().await;
        }
        // the cancelled guess spent the burst of 1: the next wrong guess is locked out
        let another = generate_client_secret().unwrap();
        let next = auth.authenticate(&id, &another, HERE).await.unwrap_err();
        assert!(matches!(next, Refusal::RateLimited(_)), "{next:?}");
    }

    #[tokio::test]
    async fn a_stale_secret_presented_again_costs_no_hash_and_does_not_lock_out_the_new_one() {
        let (d, auth, m) = setup(limits());
        let (id, secret) = key_with_secret(&d, "a").await;
        let stale = generate_client_secret().unwrap();
        for _ in 0..10 {
            let refused = auth.authenticate(&id, &stale, HERE).await.unwrap_err();
            assert_eq!(refused, Refusal::WrongSecret);
        }
        assert_eq!(
            count(&m, VERIFIED),
            1,
            "hashed once, then known to be wrong"
        );
        assert!(auth.authenticate(&id, &secret, HERE).await.is_ok());
    }

    #[tokio::test]
    async fn a_guesser_elsewhere_does_not_lock_out_a_client_at_its_own_address() {
        let (d, auth, _) = setup(limits());
        let (id, secret) = key_with_secret(&d, "a").await;
        let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
        let mut last = None;
        for _ in 0..5 {
            let guess = generate_client_secret().unwrap();
            last = Some(auth.authenticate(&id, &guess, elsewhere).await.unwrap_err());
        }
        assert!(matches!(last, Some(Refusal::RateLimited(_))), "{last:?}");
        assert!(
            auth.authenticate(&id, &secret, HERE).await.is_ok(),
            "not remembered, and still served"
        );
    }

    const PREVIOUS_USED: &str = "apikey_token_previous_secret_used_total";
    const KNOWN_WRONG: &str =
        r#"apikey_token_remembered_verifications_total{result="known_wrong"}"#;

    #[tokio::test]
    async fn the_previous_secret_is_accepted_as_the_previous_generation_until_its_grace_ends() {
        let (d, auth, m, clock) = setup_with_clock(limits());
        let (current, current_hash, previous, previous_hash) = two_secrets().await;
        let id = generate_client_id().unwrap();
        put_rotated(
            &d,
            "a",
            &id,
            "1",
            current_hash,
            Some((previous_hash, at(60))),
            None,
        );

        let old = auth.authenticate(&id, &previous, HERE).await.unwrap();
        assert_eq!((old.secret, old.generation()), (SecretUsed::Previous, 1));
        assert_eq!(
            count(&m, VERIFIED),
            2,
            "the current hash first, then the previous one"
        );
        let new = auth.authenticate(&id, &current, HERE).await.unwrap();
        assert_eq!((new.secret, new.generation()), (SecretUsed::Current, 2));
        assert_eq!(count(&m, VERIFIED), 3);
        // both remembered at once: clients of either secret cost no hash
        for _ in 0..3 {
            assert_eq!(
                auth.authenticate(&id, &previous, HERE)
                    .await
                    .unwrap()
                    .secret,
                SecretUsed::Previous
            );
            assert_eq!(
                auth.authenticate(&id, &current, HERE).await.unwrap().secret,
                SecretUsed::Current
            );
        }
        assert_eq!(count(&m, VERIFIED), 3);
        assert_eq!(
            count(&m, PREVIOUS_USED),
            4,
            "remembered successes count too"
        );

        clock.set(at(59));
        assert!(
            auth.authenticate(&id, &previous, HERE).await.is_ok(),
            "1 s before the end"
        );
        clock.set(at(60));
        assert_eq!(
            auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
            Refusal::WrongSecret,
            "a remembered success with the previous secret ends with the grace period"
        );
        assert_eq!(count(&m, VERIFIED), 4, "only the current hash ran");
        assert_eq!(
            auth.authenticate(&id, &current, HERE)
                .await
                .unwrap()
                .generation(),
            2,
            "the current secret still works"
        );
        assert_eq!(count(&m, PREVIOUS_USED), 5);
    }

    #[tokio::test]
    async fn a_remembered_previous_secret_ends_when_the_previous_hash_changes_or_goes() {
        let (d, auth, m, _) = setup_with_clock(limits());
        let (_, current_hash, previous, previous_hash) = two_secrets().await;
        let id = generate_client_id().unwrap();
        let put = |previous| {
            // the same resourceVersion each time: the digest binds the hashes themselves
            put_rotated(&d, "a", &id, "1", current_hash.clone(), previous, None);
        };
        put(Some((previous_hash.clone(), at(60))));
        assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
        assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
        assert_eq!(count(&m, VERIFIED), 2, "remembered");
        put(None);
        assert_eq!(
            auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
            Refusal::WrongSecret,
            "gone"
        );
        put(Some((previous_hash.clone(), at(60))));
        assert!(
            auth.authenticate(&id, &previous, HERE).await.is_ok(),
            "back"
        );
        let other = cheap_hash(&generate_client_secret().unwrap()).await;
        put(Some((other, at(60))));
        assert_eq!(
            auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
            Refusal::WrongSecret,
            "changed"
        );
    }

    #[tokio::test]
    async fn an_expired_key_is_refused_like_an_unknown_client_with_no_hash() {
        let (d, auth, m, clock) = setup_with_clock(limits());
        let (current, current_hash, previous, previous_hash) = two_secrets().await;
        let id = generate_client_id().unwrap();
        put_rotated(
            &d,
            "a",
            &id,
            "1",
            current_hash,
            Some((previous_hash, at(600))),
            Some(at(10)),
        );
        assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
        assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
        let hashed = count(&m, VERIFIED);
        clock.set(at(9));
        assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
        clock.set(at(10));
        for secret in [&current, &previous, &generate_client_secret().unwrap()] {
            let refused = auth.authenticate(&id, secret, HERE).await.unwrap_err();
            assert_eq!(refused, Refusal::Expired);
            assert_eq!(refused.reason(), "expired");
        }
        assert_eq!(count(&m, VERIFIED), hashed, "no hash, remembered or not");
        // moving the expiry later makes the key work again with the same secret
        put_rotated(
            &d,
            "a",
            &id,
            "2",
            cheap_hash(&current).await,
            None,
            Some(at(20)),
        );
        assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
    }

    #[tokio::test]
    async fn a_secret_wrong_under_both_hashes_is_known_wrong_but_the_previous_one_is_not() {
        let (d, auth, m, clock) = setup_with_clock(limits());
        let (current, current_hash, previous, previous_hash) = two_secrets().await;
        let id = generate_client_id().unwrap();
        put_rotated(
            &d,
            "a",
            &id,
            "1",
            current_hash,
            Some((previous_hash, at(60))),
            None,
        );
        let wrong = generate_client_secret().unwrap();
        assert_eq!(
            auth.authenticate(&id, &wrong, HERE).await.unwrap_err(),
            Refusal::WrongSecret
        );
        assert_eq!(count(&m, VERIFIED), 2, "both hashes ran");
        assert_eq!(
            auth.authenticate(&id, &wrong, HERE).await.unwrap_err(),
            Refusal::WrongSecret
        );
        assert_eq!((count(&m, VERIFIED), count(&m, KNOWN_WRONG)), (2, 1));
        // the previous secret is right during the grace period, however often it comes
        for _ in 0..3 {
            assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
        }
        assert_eq!(count(&m, KNOWN_WRONG), 1);
        // after the grace period it is wrong, and then known to be
        clock.set(at(60));
        for _ in 0..3 {
            assert_eq!(
                auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
                Refusal::WrongSecret
            );
        }
        assert_eq!((count(&m, VERIFIED), count(&m, KNOWN_WRONG)), (5, 3));
        assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_authentication_is_one_failure_whether_one_or_two_hashes_ran() {
        let (d, auth, m, _) = setup_with_clock(limits());
        let (_, current_hash, _, previous_hash) = two_secrets().await;
        let id = generate_client_id().unwrap();
        put_rotated(
            &d,
            "a",
            &id,
            "1",
            current_hash,
            Some((previous_hash, at(60))),
            None,
        );
        let mut answers = Vec::new();
        for _ in 0..4 {
            let guess = generate_client_secret().unwrap();
            answers.push(auth.authenticate(&id, &guess, HERE).await.unwrap_err());
        }
        assert_eq!(
            answers[..3],
            [
                Refusal::WrongSecret,
                Refusal::WrongSecret,
                Refusal::WrongSecret
            ],
            "the burst: 3 failures"
        );
        assert!(matches!(answers[3], Refusal::RateLimited(_)), "{answers:?}");
        assert_eq!(
            count(&m, VERIFIED),
            8,
            "four failures of two hashes each: counted per hash, the second would have locked out"
        );
    }
}
