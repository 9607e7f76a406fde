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
    queue: Semaphore,
    by_client: FailureLimiter<String>,
    by_address: FailureLimiter<IpAddr>,
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
            queue: Semaphore::new(limits.max_verifications_queued.max(1)),
            by_client: FailureLimiter::new(limits.client_burst, limits.client_seconds_per_failure),
            by_address: FailureLimiter::new(
                limits.address_burst,
                limits.address_seconds_per_failure,
            ),
            limits,
            metrics,
        })
    }

    /// How long a successful verification is remembered.
    pub fn remember_for(&self) -> Duration {
        self.limits.remember_for
    }

    /// The key whose current client secret `secret` is, if `client_id` names exactly one Ready
    /// key; else why not. Failures spend the budgets of the client id and the source address.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &ClientSecret,
        source: IpAddr,
    ) -> Result<Arc<KeyEntry>, Refusal> {
        if let Err(wait) = self.by_address.check(&source) {
            self.metrics
                .rate_limited
                .get_or_create(&ByLabel { by: "address" })
                .inc();
            return Err(Refusal::RateLimited(wait));
        }
        if !credentials::is_well_formed_client_id(client_id) || !secret.is_well_formed() {
            self.by_address.failed(&source);
            return Err(Refusal::Malformed);
        }
        let entry = match self.directory.lookup(client_id) {
            Lookup::Found(entry) => entry,
            Lookup::Unknown => return Err(self.failed(client_id, source, Refusal::UnknownClient)),
            Lookup::Ambiguous => {
                return Err(self.failed(client_id, source, Refusal::AmbiguousClient));
            }
            Lookup::NotReady => return Err(self.failed(client_id, source, Refusal::NotReady)),
        };
        // A remembered verification is answered even while the client id is locked out, so
        // that guessing at a client's id does not lock that client out.
        let tag = self.tag(&entry, secret);
        if self.is_remembered(&entry.uid, &tag) {
            self.metrics
                .remembered
                .get_or_create(&ResultLabel { result: "hit" })
                .inc();
            return Ok(entry);
        }
        self.locked_out(client_id)?;
        self.metrics
            .remembered
            .get_or_create(&ResultLabel { result: "miss" })
            .inc();
        let affordable = HashParams::of_phc(&entry.secret_hash)
            .is_some_and(|p| p.within(self.limits.hash_ceiling));
        if !affordable {
            tracing::warn!(namespace = %entry.namespace, apikey = %entry.name, ceiling = ?self.limits.hash_ceiling,
                "the ApiKey's status.secretHash is not an argon2id hash within the ceiling; refusing its client");
            return Err(self.failed(client_id, source, Refusal::HashRefused));
        }
        let Ok(_queued) = self.queue.try_acquire() else {
            return Err(Refusal::Saturated);
        };
        let started = Instant::now();
        let verified = self
            .hasher
            .verify(secret.clone(), entry.secret_hash.clone())
            .await
            .unwrap_or(false);
        self.metrics
            .verification_seconds
            .observe(started.elapsed().as_secs_f64());
        if !verified {
            return Err(self.failed(client_id, source, Refusal::WrongSecret));
        }
        self.remember(&entry.uid, tag);
        Ok(entry)
    }

    /// `Err(RateLimited)` while `client_id` is locked out.
    fn locked_out(&self, client_id: &str) -> Result<(), Refusal> {
        self.by_client.check(&client_id.to_owned()).map_err(|wait| {
            self.metrics
                .rate_limited
                .get_or_create(&ByLabel { by: "client_id" })
                .inc();
            Refusal::RateLimited(wait)
        })
    }

    /// Counts a failure against the client id and the source address, unless the client id is
    /// locked out already (then the answer is the lockout).
    fn failed(&self, client_id: &str, source: IpAddr, why: Refusal) -> Refusal {
        if let Err(locked) = self.locked_out(client_id) {
            return locked;
        }
        // The failure that spends a budget is answered with the lockout already.
        let by_client = self.by_client.failed(&client_id.to_owned());
        let by_address = self.by_address.failed(&source);
        let (by, wait) = match (by_client, by_address) {
            (Some(wait), _) => ("client_id", wait),
            (None, Some(wait)) => ("address", wait),
            (None, None) => return why,
        };
        self.metrics
            .rate_limited
            .get_or_create(&ByLabel { by })
            .inc();
        Refusal::RateLimited(wait)
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

    fn is_remembered(&self, uid: &str, tag: &[u8; 32]) -> bool {
        let Ok(remembered) = self.remembered.lock() else {
            return false;
        };
        remembered
            .get(uid)
            .is_some_and(|r| r.until > Instant::now() && bool::from(r.tag.ct_eq(tag)))
    }

    fn remember(&self, uid: &str, tag: [u8; 32]) {
        if self.limits.remember_for.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            let (known, _) = self.directory.counts();
            if remembered.len() > known.max(1024) {
                remembered.retain(|_, r| r.until > now);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{generate_client_id, generate_client_secret};
    use crate::test_support::ready_apikey;
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
        let hash = Hasher::new(CHEAP, 1)
            .unwrap()
            .hash(secret.clone())
            .await
            .unwrap();
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
        let secret = generate_client_secret().unwrap();
        let hash = Hasher::new(CHEAP, 1)
            .unwrap()
            .hash(secret.clone())
            .await
            .unwrap();
        let id = ready_key(&d, "a", hash);
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
        let hash = Hasher::new(CHEAP, 1)
            .unwrap()
            .hash(secret.clone())
            .await
            .unwrap();
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
}
