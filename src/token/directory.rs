//! The token server's view of the keys: every ApiKey's published credentials (client id, argon2id
//! hash, secret generation; during a grace period after a rotation, the previous secret's hash,
//! generation and end of grace), and its expiry (`spec.expiresAt`), kept current by a watch and
//! indexed by client id, so that a token request costs no API call.
//!
//! Only a key that is `Ready=True` and has a client id, a hash and a secret generation in its
//! status can authenticate. A client id that two ApiKeys hold (a copied or forged status: anyone
//! who can write an ApiKey's status can write any client id there) authenticates neither.
//!
//! The directory keeps times as published and decides nothing by the clock: whether a key has
//! expired ([`KeyEntry::is_expired`]) or its previous secret is still in its grace period
//! ([`KeyEntry::previous_in_grace`]) is asked with the time of the request, so that neither
//! waits for the operator to update the status.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::core::crd::ApiKey;
use crate::core::user;

/// What the token server knows of one ApiKey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`: changes with every write of the ApiKey.
    pub resource_version: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.user` in Unicode NFC ([`crate::core::user::canonical`]).
    pub user: String,
    /// `status.clientId`.
    pub client_id: String,
    /// `status.secretHash`: the argon2id PHC string of the current client secret.
    pub secret_hash: String,
    /// `status.secretGeneration`: the generation of the current client secret (1 for the key's
    /// first, one more for each new one).
    pub generation: i64,
    /// The previous client secret, still accepted until the end of its grace period; `None` when
    /// the status publishes none (or only part of one, or one of a generation not older than the
    /// current one).
    pub previous: Option<PreviousSecret>,
    /// `spec.expiresAt`: the instant (RFC 3339 in the ApiKey) from which the key is refused and
    /// its tokens are inactive, whatever its status says; `None`: it does not expire.
    pub expires_at: Option<Timestamp>,
    /// Whether the Ready condition is `True`.
    pub ready: bool,
    /// Whether the key is labelled `apikey.dev/introspect: "true"`: its client may introspect.
    pub may_introspect: bool,
}

/// A key's previous client secret during the grace period after a rotation (`status.previous*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousSecret {
    /// `status.previousSecretHash`: the argon2id PHC string of the previous client secret.
    pub hash: String,
    /// `status.previousSecretGeneration`: the generation of the previous client secret, which the
    /// access tokens issued with it carry.
    pub generation: i64,
    /// `status.previousSecretExpiresAt`: the end of the grace period (RFC 3339 in the ApiKey).
    /// The previous secret is accepted, and its tokens are active, while the time is before it.
    pub expires_at: Timestamp,
}

/// Which of a key's client secrets a client authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretUsed {
    /// The current one (`status.secretHash`).
    Current,
    /// The previous one, during its grace period (`status.previousSecretHash`).
    Previous,
}

impl KeyEntry {
    /// The entry of `key`, or `None` when it has no client id in its status (it never got
    /// credentials, so no client can name it). A key without hash or generation is kept as not
    /// Ready, so that its client id still counts for uniqueness.
    pub fn of(key: &ApiKey) -> Option<Self> {
        let status = key.status.as_ref()?;
        let client_id = status.client_id.clone()?;
        let (hash, generation) = (status.secret_hash.clone(), status.secret_generation);
        let previous = match (
            &status.previous_secret_hash,
            status.previous_secret_generation,
            &status.previous_secret_expires_at,
        ) {
            // all three or none; and older than the current secret, so that a token's generation
            // tells which secret it was issued under
            (Some(hash), Some(previous), Some(expires_at))
                if generation.is_some_and(|current| previous < current) =>
            {
                Some(PreviousSecret {
                    hash: hash.clone(),
                    generation: previous,
                    expires_at: expires_at.0,
                })
            }
            _ => None,
        };
        let ready = key.ready_condition().is_some_and(|c| c.status == "True");
        let may_introspect = key
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::core::crd::INTROSPECT_LABEL))
            .is_some_and(|v| v == "true");
        Some(Self {
            uid: key.metadata.uid.clone()?,
            resource_version: key.metadata.resource_version.clone().unwrap_or_default(),
            namespace: key.metadata.namespace.clone()?,
            name: key.metadata.name.clone()?,
            user: user::canonical(&key.spec.user).into_owned(),
            client_id,
            ready: ready && hash.is_some() && generation.is_some(),
            may_introspect,
            secret_hash: hash.unwrap_or_default(),
            generation: generation.unwrap_or_default(),
            previous,
            expires_at: key.spec.expires_at.as_ref().map(|t| t.0),
        })
    }

    /// Whether the key has expired at `now` (`now` >= `spec.expiresAt`).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The previous client secret, if there is one and `now` is before the end of its grace
    /// period.
    pub fn previous_in_grace(&self, now: Timestamp) -> Option<&PreviousSecret> {
        self.previous.as_ref().filter(|p| now < p.expires_at)
    }

    /// The generation of the secret `used`: `status.secretGeneration`, or
    /// `status.previousSecretGeneration` (0 if there is none, which no key has).
    pub fn generation_of(&self, used: SecretUsed) -> i64 {
        match used {
            SecretUsed::Current => self.generation,
            SecretUsed::Previous => self.previous.as_ref().map_or(0, |p| p.generation),
        }
    }

    /// Until when a client that authenticated with the secret `used` may act: the key's expiry,
    /// and for the previous secret also the end of its grace period, whichever comes first;
    /// `None`: no limit.
    pub fn valid_until(&self, used: SecretUsed) -> Option<Timestamp> {
        let grace_end = match used {
            SecretUsed::Current => None,
            SecretUsed::Previous => self.previous.as_ref().map(|p| p.expires_at),
        };
        match (self.expires_at, grace_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an access token of secret generation `generation` is still good at `now`: the key
    /// has not expired, and the generation is the current one, or the previous one while its
    /// grace period lasts. (Readiness and the client id are the caller's to check.)
    pub fn accepts_generation(&self, generation: i64, now: Timestamp) -> bool {
        !self.is_expired(now)
            && (generation == self.generation
                || self
                    .previous_in_grace(now)
                    .is_some_and(|p| p.generation == generation))
    }
}

/// The answer to "which key holds this client id?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Exactly one key holds it, and it is Ready.
    Found(Arc<KeyEntry>),
    /// No key holds it.
    Unknown,
    /// More than one key holds it: none of them authenticates.
    Ambiguous,
    /// One key holds it, but it is not Ready.
    NotReady,
}

/// The index proper; also a re-list in progress (see [`Directory::observe`]).
#[derive(Default)]
pub struct Index {
    by_uid: HashMap<String, Arc<KeyEntry>>,
    by_client_id: HashMap<String, BTreeSet<String>>,
}

impl Index {
    fn insert(&mut self, entry: KeyEntry) {
        self.remove(&entry.uid);
        self.by_client_id
            .entry(entry.client_id.clone())
            .or_default()
            .insert(entry.uid.clone());
        self.by_uid.insert(entry.uid.clone(), Arc::new(entry));
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else {
            return;
        };
        if let Some(holders) = self.by_client_id.get_mut(&old.client_id) {
            holders.remove(uid);
            if holders.is_empty() {
                self.by_client_id.remove(&old.client_id);
            }
        }
    }

    fn apply(&mut self, key: &ApiKey) {
        match KeyEntry::of(key) {
            Some(entry) => self.insert(entry),
            None => {
                if let Some(uid) = &key.metadata.uid {
                    self.remove(uid);
                }
            }
        }
    }
}

/// The keys, indexed by client id and by UID. Cheap to read from many requests at once.
#[derive(Default)]
pub struct Directory {
    index: RwLock<Index>,
    synced: AtomicBool,
    /// Since when the watch has been failing, if it is.
    failing_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Directory {
    /// Which key holds `client_id`.
    pub fn lookup(&self, client_id: &str) -> Lookup {
        let Ok(index) = self.index.read() else {
            return Lookup::Unknown;
        };
        let Some(holders) = index.by_client_id.get(client_id) else {
            return Lookup::Unknown;
        };
        if holders.len() > 1 {
            return Lookup::Ambiguous;
        }
        match holders.iter().next().and_then(|uid| index.by_uid.get(uid)) {
            Some(entry) if entry.ready => Lookup::Found(entry.clone()),
            Some(_) => Lookup::NotReady,
            None => Lookup::Unknown,
        }
    }

    /// The key with this UID, if it exists and its client id is held by it alone.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<KeyEntry>> {
        let index = self.index.read().ok()?;
        let entry = index.by_uid.get(uid)?;
        let unique = index
            .by_client_id
            .get(&entry.client_id)
            .is_some_and(|holders| holders.len() == 1);
        unique.then(|| entry.clone())
    }

    /// Whether the first complete list of ApiKeys has been read.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// How long the watch has been failing (the keys served may be out of date: a deleted or
    /// regenerated key may still authenticate), or `None` while it works.
    pub fn failing_for(&self) -> Option<std::time::Duration> {
        let since = *self.failing_since.lock().ok()?;
        since.map(|t| t.elapsed())
    }

    fn set_failing(&self, failing: bool) {
        if let Ok(mut since) = self.failing_since.lock() {
            match (failing, *since) {
                (true, None) => *since = Some(std::time::Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
    }

    /// How many keys are known, and how many of them are Ready.
    pub fn counts(&self) -> (usize, usize) {
        self.index.read().map_or((0, 0), |index| {
            let ready = index.by_uid.values().filter(|e| e.ready).count();
            (index.by_uid.len(), ready)
        })
    }

    /// Applies one watch event. A re-list (`Init` .. `InitDone`) replaces the index at its end,
    /// so that a key deleted while the watch was down is forgotten.
    pub fn observe(&self, event: watcher::Event<ApiKey>, relist: &mut Option<Index>) {
        let Ok(mut index) = self.index.write() else {
            return;
        };
        match event {
            watcher::Event::Init => *relist = Some(Index::default()),
            watcher::Event::InitApply(key) => relist.get_or_insert_with(Index::default).apply(&key),
            watcher::Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    *index = fresh;
                }
                self.synced.store(true, Ordering::Relaxed);
            }
            watcher::Event::Apply(key) => index.apply(&key),
            watcher::Event::Delete(key) => {
                if let Some(uid) = &key.metadata.uid {
                    index.remove(uid);
                }
            }
        }
    }

    /// Keeps the directory current from a watch of every ApiKey the client may list, until the
    /// process ends. Watch errors are retried with backoff and logged.
    pub async fn run(self: Arc<Self>, api: Api<ApiKey>) {
        let mut relist = None;
        let mut events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if self.failing_for().is_some() {
                        tracing::info!("the watch of ApiKeys works again");
                        self.set_failing(false);
                    }
                    self.observe(event, &mut relist);
                }
                Err(e) => {
                    if self.failing_for().is_none() {
                        tracing::warn!(error = %e, "the watch of ApiKeys failed; serving the keys last seen and retrying");
                        self.set_failing(true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::ApiKeyStatus;
    use crate::core::test_support::key;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn ready(name: &str, uid: &str, client_id: &str) -> ApiKey {
        let mut k = key(name, "alice", 1);
        k.metadata.uid = Some(uid.into());
        k.status = Some(ApiKeyStatus {
            client_id: Some(client_id.into()),
            secret_hash: Some("$argon2id$...".into()),
            secret_generation: Some(2),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "SecretReady".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..ApiKeyStatus::default()
        });
        k
    }

    fn apply(d: &Directory, k: ApiKey) {
        d.observe(watcher::Event::Apply(k), &mut None);
    }

    #[test]
    fn a_ready_key_is_found_by_its_client_id_and_forgotten_when_deleted() {
        let d = Directory::default();
        let k = ready("a", "u1", "akid_a");
        apply(&d, k.clone());
        let Lookup::Found(e) = d.lookup("akid_a") else {
            panic!("not found")
        };
        assert_eq!((e.name.as_str(), e.generation), ("a", 2));
        assert_eq!(d.lookup("akid_b"), Lookup::Unknown);
        d.observe(watcher::Event::Delete(k), &mut None);
        assert_eq!(d.lookup("akid_a"), Lookup::Unknown);
    }

    #[test]
    fn the_user_is_kept_in_nfc() {
        let mut k = ready("a", "u1", "akid_a");
        k.spec.user = "jose\u{301}".into();
        assert_eq!(KeyEntry::of(&k).map(|e| e.user), Some("jos\u{e9}".into()));
    }

    #[test]
    fn a_client_id_held_twice_authenticates_neither() {
        let d = Directory::default();
        apply(&d, ready("a", "u1", "akid_x"));
        apply(&d, ready("b", "u2", "akid_x"));
        assert_eq!(d.lookup("akid_x"), Lookup::Ambiguous);
        assert!(d.by_uid("u1").is_none());
        // the copy goes away: the original authenticates again
        apply(&d, ready("b", "u2", "akid_y"));
        assert!(matches!(d.lookup("akid_x"), Lookup::Found(_)));
    }

    #[test]
    fn a_key_that_is_not_ready_does_not_authenticate_but_holds_its_client_id() {
        let d = Directory::default();
        let mut k = ready("a", "u1", "akid_a");
        if let Some(s) = k.status.as_mut() {
            s.conditions[0].status = "False".into();
        }
        apply(&d, k);
        assert_eq!(d.lookup("akid_a"), Lookup::NotReady);
        apply(&d, ready("b", "u2", "akid_a"));
        assert_eq!(d.lookup("akid_a"), Lookup::Ambiguous);
    }

    #[test]
    fn a_relist_forgets_keys_deleted_while_the_watch_was_down() {
        let d = Directory::default();
        apply(&d, ready("a", "u1", "akid_a"));
        let mut relist = None;
        d.observe(watcher::Event::Init, &mut relist);
        d.observe(
            watcher::Event::InitApply(ready("b", "u2", "akid_b")),
            &mut relist,
        );
        assert!(
            matches!(d.lookup("akid_a"), Lookup::Found(_)),
            "served until the list is complete"
        );
        assert!(!d.is_synced());
        d.observe(watcher::Event::InitDone, &mut relist);
        assert!(d.is_synced());
        assert_eq!(d.lookup("akid_a"), Lookup::Unknown);
        assert!(matches!(d.lookup("akid_b"), Lookup::Found(_)));
        assert_eq!(d.counts(), (1, 1));
    }

    fn at(second: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(second).unwrap()
    }

    /// `ready(..)` at generation 2, with generation 1 as the previous secret until `grace_end`
    /// and `spec.expiresAt` at `expires_at`.
    fn rotated(grace_end: i64, expires_at: Option<i64>) -> ApiKey {
        let mut k = ready("a", "u1", "akid_a");
        k.spec.expires_at = expires_at.map(|s| Time(at(s)));
        if let Some(s) = k.status.as_mut() {
            s.previous_secret_hash = Some("$argon2id$previous".into());
            s.previous_secret_generation = Some(1);
            s.previous_secret_expires_at = Some(Time(at(grace_end)));
        }
        k
    }

    #[test]
    fn the_previous_secret_and_the_expiry_are_read_from_the_apikey() {
        let e = KeyEntry::of(&rotated(100, Some(500))).unwrap();
        assert_eq!(
            e.previous,
            Some(PreviousSecret {
                hash: "$argon2id$previous".into(),
                generation: 1,
                expires_at: at(100),
            })
        );
        assert_eq!(e.expires_at, Some(at(500)));
        assert!(e.ready);
        let plain = KeyEntry::of(&ready("a", "u1", "akid_a")).unwrap();
        assert_eq!((plain.previous, plain.expires_at), (None, None));
    }

    #[test]
    fn a_partial_or_incoherent_previous_secret_is_none() {
        type Edit = fn(&mut ApiKeyStatus);
        let edits: [Edit; 4] = [
            |s| s.previous_secret_hash = None,
            |s| s.previous_secret_generation = None,
            |s| s.previous_secret_expires_at = None,
            // not older than the current generation (2)
            |s| s.previous_secret_generation = Some(2),
        ];
        for edit in edits {
            let mut k = rotated(100, None);
            if let Some(s) = k.status.as_mut() {
                edit(s);
            }
            let e = KeyEntry::of(&k).unwrap();
            assert_eq!(e.previous, None);
            assert!(e.ready, "the current secret still works");
        }
    }

    #[test]
    fn expiry_and_grace_are_decided_at_the_instant_given() {
        let e = KeyEntry::of(&rotated(100, Some(500))).unwrap();
        assert!(e.previous_in_grace(at(99)).is_some());
        assert!(
            e.previous_in_grace(at(100)).is_none(),
            "the end is excluded"
        );
        assert!(!e.is_expired(at(499)));
        assert!(e.is_expired(at(500)), "the expiry is included");
        assert!(e.accepts_generation(1, at(99)) && e.accepts_generation(2, at(99)));
        assert!(!e.accepts_generation(1, at(100)) && e.accepts_generation(2, at(100)));
        assert!(!e.accepts_generation(2, at(500)));
        assert!(
            !e.accepts_generation(3, at(0)),
            "not a generation of the key"
        );
        assert_eq!(
            (
                e.generation_of(SecretUsed::Current),
                e.generation_of(SecretUsed::Previous)
            ),
            (2, 1)
        );
        assert_eq!(e.valid_until(SecretUsed::Current), Some(at(500)));
        assert_eq!(e.valid_until(SecretUsed::Previous), Some(at(100)));
        let e = KeyEntry::of(&rotated(900, None)).unwrap();
        assert_eq!(
            (
                e.valid_until(SecretUsed::Current),
                e.valid_until(SecretUsed::Previous)
            ),
            (None, Some(at(900)))
        );
    }
}
