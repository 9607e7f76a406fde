//! Client authentication at the token endpoint: is this client secret the current one of the key
//! that holds this client id? Built so that it cannot be turned against the server:
//!
//! 1. a malformed client id or secret (format, prefix, CRC32 checksum: [`crate::credentials`]) is
//!    refused at once, with no lookup and no hashing;
//! 2. a client id or source address whose budget of failures is spent is refused with a wait
//!    ([`super::limits`]);
//! 3. the key is looked up in the watch cache ([`super::directory`]), never by an API call;
//! 4. a verification remembered from the last [`Authenticator::remember_for`] is answered by
//!    comparing keyed digests in constant time: a steady client costs one argon2id per period;
//! 5. otherwise argon2id runs on the bounded blocking pool ([`crate::hashing::Hasher`]), with at
//!    most a fixed number of verifications queued (503 beyond); a stored hash whose parameters
//!    exceed [`crate::hashing::HashParams::CEILING`] matches nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use super::directory::{Directory, KeyEntry, Lookup};
use super::limits::FailureLimiter;
use super::metrics::{ByLabel, ResultLabel, TokenMetrics};
use crate::credentials::{self, ClientSecret};
use crate::error::Result;
use crate::hashing::{HashParams, Hasher};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a client was not authenticated. Every variant but the last two is answered
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
    /// The secret is not the key's current one.
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

/// Authenticates clients against the [`Directory`].
pub struct Authenticator {
    directory: Arc<Directory>,
    hasher: Hasher,
    limits: AuthLimits,
    /// Key of the remembered digests, from the CSPRNG at start; never leaves the process.
    remember_key: [u8; 32],
    remembered: Mutex<HashMap<String, Remembered>>,
    queue: Arc<Semaphore>,
    /// Secrets known to be wrong for the key as it is now (their tags), until when: a client
    /// that keeps presenting a secret that has been regenerated costs no hash and spends no
    /// budget, so it cannot lock out its own new secret.
    refused: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    budgets: Arc<Budgets>,
    typical_hash: TypicalDuration,
    metrics: Arc<TokenMetrics>,
}

impl Authenticator {
    /// An authenticator over `directory`, verifying on `hasher`'s pool.
    pub fn new(
        directory: Arc<Directory>,
        hasher: Hasher,
        limits: AuthLimits,
        metrics: Arc<TokenMetrics>,
    ) -> Result<Self> {
        Ok(Self {
            directory,
            hasher,
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

    /// The key whose current client secret `secret` is, if `client_id` names exactly one Ready
    /// key; else why not. Failures spend the budgets of the client id and of the source address
    /// (an IPv6 address counts by its /64: one host can hold a whole /64). A client whose
    /// verification is remembered is answered before either budget is looked at, so that
    /// neither guessing at its client id nor a bad neighbour behind the same address (a proxy, a
    /// NAT) locks it out. Refusals that need no hash wait about as long as a hash takes, so
    /// that the answer's timing does not tell which client ids exist.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &ClientSecret,
        source: IpAddr,
    ) -> Result<Arc<KeyEntry>, Refusal> {
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
        let tag = self.tag(&entry, secret);
        if self.is_remembered(&entry.uid, &tag) {
            self.metrics
                .remembered
                .get_or_create(&ResultLabel { result: "hit" })
                .inc();
            return Ok(entry);
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
        let affordable = HashParams::of_phc(&entry.secret_hash)
            .is_some_and(|p| p.within(self.limits.hash_ceiling));
        if !affordable {
            tracing::warn!(namespace = %entry.namespace, apikey = %entry.name, ceiling = ?self.limits.hash_ceiling,
                "the ApiKey's status.secretHash is not an argon2id hash within the ceiling; refusing its client");
            return Err(self
                .refuse_unhashed(client_id, source, Refusal::HashRefused)
                .await);
        }
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
                let started = Instant::now();
                let verified = hasher.verify(secret, phc).await.unwrap_or(false);
                let took = started.elapsed();
                drop(queued);
                let lockout = if verified {
                    None
                } else {
                    remember_wrong(&refused, tag, forget_after);
                    budgets.failed(&metrics, &client_id, source)
                };
                // observed last: once it shows, the failure has been counted
                metrics.verification_seconds.observe(took.as_secs_f64());
                (verified, took, lockout)
            }
        });
        let Ok((verified, took, lockout)) = verification.await else {
            return Err(Refusal::Saturated);
        };
        self.typical_hash.observe(took);
        if let Some(wait) = lockout {
            return Err(Refusal::RateLimited(wait));
        }
        if !verified {
            return Err(Refusal::WrongSecret);
        }
        self.remember(&entry.uid, tag);
        Ok(entry)
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
    /// the key's UID, resourceVersion (any write of the ApiKey), client id, hash and generation,
    /// and the presented secret. Length-prefixed, so that no two inputs share an encoding.
    fn tag(&self, entry: &KeyEntry, secret: &ClientSecret) -> [u8; 32] {
        // Keys of any length are valid for HMAC (RFC 2104 §2): this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.remember_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        let generation = entry.generation.to_string();
        for part in [
            entry.uid.as_str(),
            entry.resource_version.as_str(),
            entry.client_id.as_str(),
            entry.secret_hash.as_str(),
            generation.as_str(),
            secret.expose(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is remembered for `uid`; a hit is remembered for another period (the tag
    /// binds the current hash, so a regeneration still ends it).
    fn is_remembered(&self, uid: &str, tag: &[u8; 32]) -> bool {
        let Ok(mut remembered) = self.remembered.lock() else {
            return false;
        };
        let now = Instant::now();
        remembered.get_mut(uid).is_some_and(|r| {
            let hit = r.until > now && bool::from(r.tag.ct_eq(tag));
            if hit {
                r.until = now + self.limits.remember_for;
            }
            hit
        })
    }

    /// Remembers a successful verification of the key `uid`: one entry per key (so no more
    /// than there are keys), expired ones dropped by [`Authenticator::sweep`].
    fn remember(&self, uid: &str, tag: [u8; 32]) {
        if self.limits.remember_for.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.insert(
                uid.to_owned(),
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
    use crate::credentials::{generate_client_id, generate_client_secret};
    use crate::test_support::{cheap_hash, ready_apikey};
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

    fn count(metrics: &TokenMetrics, series: &str) -> u64 {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    const VERIFIED: &str = "apikey_token_verification_duration_seconds_count";

    #[tokio::test]
    async fn the_right_secret_authenticates_once_by_argon2id_then_from_memory() {
        let (d, auth, m) = setup(limits());
        let secret = generate_client_secret().unwrap();
        let hash = cheap_hash(&secret).await;
        let id = ready_key(&d, "a", hash.clone());
        assert_eq!(
            auth.authenticate(&id, &secret, HERE).await.unwrap().name,
            "a"
        );
        assert_eq!(
            auth.authenticate(&id, &secret, HERE).await.unwrap().name,
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
            auth.authenticate(&id, &secret, HERE).await.unwrap().name,
            "a"
        );
        assert_eq!(count(&m, VERIFIED), 2, "verified again after the write");
    }

    #[tokio::test]
    async fn wrong_unknown_and_malformed_credentials_are_refused_and_malformed_ones_cost_no_hash() {
        let (d, auth, m) = setup(limits());
        let (id, secret) = key_with_secret(&d, "a").await;
        let other = generate_client_secret().unwrap();
        let refused = |r: Result<Arc<KeyEntry>, Refusal>| r.unwrap_err();
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
}
