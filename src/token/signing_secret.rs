//! Where the token server keeps its signing keys ([`super::signing`]): data `keys.json` (the
//! document of [`KeySet::to_secret_data`]) of a Secret in its own namespace,
//! `apikey-token-signing-keys` unless configured otherwise, labelled
//! `app.kubernetes.io/managed-by: apikey-token-server` (not the operator's value: the operator
//! watches the Secrets labelled with its own, and this is none of its) and
//! `app.kubernetes.io/component: token-signing-keys`.
//!
//! Every replica watches that one Secret (a field selector on its name) and serves the newest
//! valid set it has seen ([`SigningKeys::current`]): a new key reaches every replica without a
//! restart. A document that does not parse is logged once per `resourceVersion` and the previous
//! set is kept; so is the set when the Secret is deleted or holds no key.
//!
//! Exactly one replica writes: the holder of the Lease `apikey-token-signing` in the same
//! namespace. Every [`TICK`] (and at once when the Secret changes) it reads the Secret, runs
//! [`KeySet::plan`] and writes the result: `create` when the Secret does not exist, `replace` with
//! the `resourceVersion` it read otherwise; a conflict or a concurrent create is retried at the
//! next tick. When the Secret was deleted, or its document is invalid or holds no key, the leader
//! writes it again from the keys it holds in memory (those it last read or wrote, merged with
//! those this replica serves), so deleting the Secret loses no key a live token needs; only when
//! it knows no key at all does it start a new set. To revoke a key, edit the document to remove
//! it: a valid Secret is the source of truth. When the lease is lost, it stops writing and
//! rejoins the election.
//!
//! RBAC in the namespace: Secrets `get`, `list`, `watch`, `update` (may be narrowed with
//! `resourceNames` to the Secret; `list` and `watch` then work because of the field selector) and
//! `create` (cannot be narrowed by name); Leases `create`, and `get`, `patch` (may be narrowed to
//! `apikey-token-signing`). `deploy/token-server/rbac.yaml` grants exactly that.
//!
//! Logs name keys by kid only; nothing here logs or returns private key material.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use super::signing::{KeySet, Schedule};
use crate::core::secret::MANAGED_BY_LABEL;
use crate::error::{Error, Result};
use crate::shared::leader::{self, Leadership};

/// Default name of the Secret holding the signing keys.
pub const DEFAULT_SECRET_NAME: &str = "apikey-token-signing-keys";
/// Data key of the key-set document in the Secret.
pub const KEYS_DATA: &str = "keys.json";
/// Name of the Lease whose holder writes the Secret.
pub const LEASE_NAME: &str = "apikey-token-signing";
/// The `app.kubernetes.io/managed-by` value of the signing-key Secret.
pub const TOKEN_SERVER: &str = "apikey-token-server";
/// Label naming the Secret's role.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT_LABEL`] on the Secret.
pub const COMPONENT: &str = "token-signing-keys";
/// How often the leader runs the schedule.
pub const TICK: Duration = Duration::from_secs(10);

/// The signing keys a replica serves: the newest valid set read from the Secret. Cheap to clone;
/// every clone sees the same updates.
#[derive(Clone)]
pub struct SigningKeys {
    current: watch::Receiver<Option<Arc<KeySet>>>,
}

impl SigningKeys {
    /// Keys that never change: for tests, and for a server run without a cluster.
    pub fn fixed(set: KeySet) -> Self {
        let (_, current) = watch::channel(Some(Arc::new(set)));
        Self { current }
    }

    /// The latest set loaded; `None` until one is.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.borrow().clone()
    }

    /// Whether a set is loaded and one of its keys signs at `now` (seconds since the epoch): what
    /// the server's readiness needs.
    pub fn is_ready(&self, now: i64) -> bool {
        self.current
            .borrow()
            .as_ref()
            .is_some_and(|set| set.signer(now).is_some())
    }
}

/// Starts the watch of Secret `namespace/secret_name` and the election of its one writer
/// (identity `identity` in the Lease [`LEASE_NAME`], lease duration `lease_duration_seconds`),
/// both running until `shutdown` resolves, and returns the keys they keep up to date (none
/// loaded yet). Errors ([`Error::Config`]) only when `schedule` or `secret_name` is invalid;
/// failures of the cluster are logged and retried.
pub async fn start(
    client: Client,
    namespace: &str,
    secret_name: &str,
    schedule: Schedule,
    identity: String,
    lease_duration_seconds: u64,
    shutdown: impl Future + Clone + Send + 'static,
) -> Result<SigningKeys> {
    schedule.validate()?;
    if secret_name.is_empty() {
        return Err(Error::Config(
            "the signing-key Secret name must not be empty".into(),
        ));
    }
    let shutdown: Shared<BoxFuture<'static, ()>> = async move {
        shutdown.await;
    }
    .boxed()
    .shared();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (sender, current) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    tokio::spawn(watch_secret(
        api.clone(),
        secret_name.to_string(),
        sender,
        wake.clone(),
        shutdown.clone(),
    ));
    let writer = Writer {
        client,
        api,
        namespace: namespace.to_string(),
        name: secret_name.to_string(),
        schedule,
        serving: current.clone(),
        memory: KeySet::default(),
        signer: None,
        stuck_at: None,
    };
    tokio::spawn(writer.run(identity, lease_duration_seconds, wake, shutdown));
    Ok(SigningKeys { current })
}

/// Seconds since the epoch.
fn now() -> i64 {
    Timestamp::now().as_second()
}

// ---------------------------------------------------------------------------------------------
// The watch: every replica.

async fn watch_secret(
    api: Api<Secret>,
    name: String,
    sender: watch::Sender<Option<Arc<KeySet>>>,
    wake: Arc<Notify>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    let mut loader = Loader::new(name);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = shutdown.clone() => return,
        };
        match event {
            None => return,
            Some(Err(e)) => warn!(error = %e, "watching the signing-key Secret failed; retrying"),
            Some(Ok(event)) => {
                let had_keys = sender.borrow().is_some();
                if let Some(set) = loader.apply(event, had_keys) {
                    sender.send_replace(Some(Arc::new(set)));
                }
                wake.notify_one();
            }
        }
    }
}

/// Turns the watch's events into the sets to serve.
struct Loader {
    name: String,
    /// The `resourceVersion` of the last set loaded.
    loaded: Option<String>,
    /// The `resourceVersion` of the last invalid document logged.
    invalid: Option<String>,
    /// The kids of the last set loaded.
    kids: Vec<String>,
    /// Whether the Secret was seen since the last (re)list began.
    seen_in_list: bool,
}

impl Loader {
    fn new(name: String) -> Self {
        Self {
            name,
            loaded: None,
            invalid: None,
            kids: Vec::new(),
            seen_in_list: false,
        }
    }

    /// The set to serve after `event`, if it changes; `had_keys` says whether one is served.
    fn apply(&mut self, event: watcher::Event<Secret>, had_keys: bool) -> Option<KeySet> {
        match event {
            watcher::Event::Init => {
                self.seen_in_list = false;
                None
            }
            watcher::Event::InitApply(secret) => {
                self.seen_in_list = true;
                self.load(&secret, had_keys)
            }
            watcher::Event::Apply(secret) => self.load(&secret, had_keys),
            watcher::Event::InitDone => {
                if !self.seen_in_list {
                    self.absent(had_keys);
                }
                None
            }
            watcher::Event::Delete(_) => {
                self.absent(had_keys);
                None
            }
        }
    }

    fn absent(&mut self, had_keys: bool) {
        self.loaded = None;
        if had_keys {
            warn!(secret = %self.name, "the signing-key Secret is gone; serving the keys loaded before until it is written again");
        } else {
            info!(secret = %self.name, "the signing-key Secret does not exist yet");
        }
    }

    fn load(&mut self, secret: &Secret, had_keys: bool) -> Option<KeySet> {
        let version = secret.metadata.resource_version.clone();
        if version.is_some() && version == self.loaded {
            return None;
        }
        let set = match key_set_of(secret) {
            Ok(set) => set,
            Err(e) => {
                if version.is_none() || version != self.invalid {
                    warn!(secret = %self.name, resource_version = ?version, error = %e, "ignoring an invalid signing-key document; serving the keys loaded before");
                    self.invalid = version;
                }
                return None;
            }
        };
        if set.is_empty() && had_keys {
            warn!(secret = %self.name, resource_version = ?version, "the signing-key Secret holds no key; serving the keys loaded before");
            return None;
        }
        self.loaded = version;
        let kids: Vec<String> = set.kids().into_iter().map(String::from).collect();
        if kids != self.kids {
            info!(secret = %self.name, kids = ?kids, signer = ?set.signer(now()).map(|k| k.kid()), "loaded the signing keys");
            self.kids = kids;
        }
        Some(set)
    }
}

/// The key set in `secret`'s data [`KEYS_DATA`]. Errors ([`Error::Config`]) when it is missing or
/// invalid; the message holds no key material.
pub fn key_set_of(secret: &Secret) -> Result<KeySet> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEYS_DATA))
        .ok_or_else(|| Error::Config(format!("the Secret has no data {KEYS_DATA}")))?;
    KeySet::from_secret_data(&data.0)
}

// ---------------------------------------------------------------------------------------------
// The writer: the Lease holder.

struct Writer {
    client: Client,
    api: Api<Secret>,
    namespace: String,
    name: String,
    schedule: Schedule,
    /// What this replica serves.
    serving: watch::Receiver<Option<Arc<KeySet>>>,
    /// The set last read valid from the Secret or written to it.
    memory: KeySet,
    /// The kid of the key signing at the last tick, to log rotations.
    signer: Option<String>,
    /// The `resourceVersion` of the invalid Secret last reported as needing a person.
    stuck_at: Option<String>,
}

impl Writer {
    async fn run(
        mut self,
        identity: String,
        lease_duration_seconds: u64,
        wake: Arc<Notify>,
        shutdown: Shared<BoxFuture<'static, ()>>,
    ) {
        loop {
            let acquired = leader::acquire_named(
                self.client.clone(),
                &self.namespace,
                LEASE_NAME,
                &identity,
                lease_duration_seconds,
                shutdown.clone(),
            )
            .await;
            let leadership = match acquired {
                Ok(Some(leadership)) => leadership,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "joining the signing-key election failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(TICK) => continue,
                        _ = shutdown.clone() => return,
                    }
                }
            };
            info!(lease = %format!("{}/{LEASE_NAME}", self.namespace), "writing the signing keys");
            let stopping = {
                // `lost` holds a receiver of the lease manager's state: it must be dropped before
                // `release`, which waits for the manager to see every receiver gone.
                let lost = leadership.lost();
                futures::pin_mut!(lost);
                loop {
                    if let Err(e) = self.tick(&leadership).await {
                        warn!(error = %e, "running the signing-key schedule failed; retrying");
                    }
                    tokio::select! {
                        _ = &mut lost => break false,
                        _ = shutdown.clone() => break true,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(TICK) => {}
                    }
                }
            };
            leadership.release().await;
            if stopping {
                return;
            }
            info!("stopped writing the signing keys; rejoining the election");
        }
    }

    /// Reads the Secret, plans, writes.
    async fn tick(&mut self, leadership: &Leadership) -> Result<()> {
        let now = now();
        let existing = self.api.get_opt(&self.name).await?;
        let stored = existing.as_ref().map(key_set_of);
        if let Some(Ok(set)) = &stored
            && !set.is_empty()
        {
            self.memory = set.clone();
        }
        let serving = self
            .serving
            .borrow()
            .as_deref()
            .cloned()
            .unwrap_or_default();
        let labelled = existing.as_ref().is_some_and(has_labels);
        let step = next_step(
            stored.as_ref(),
            labelled,
            &self.memory,
            &serving,
            now,
            &self.schedule,
        )?;
        if let Some(set) = self.memory.signer(now).map(|k| k.kid().to_string())
            && self.signer.as_ref() != Some(&set)
        {
            info!(kid = %set, "signing key active");
            self.signer = Some(set);
        }
        let before = match &step {
            Step::Restore(_) => self.memory.merge(&serving),
            _ => self.memory.clone(),
        };
        let next = match step {
            Step::Nothing => return Ok(()),
            Step::Stuck => {
                let version = existing.and_then(|s| s.metadata.resource_version);
                if self.stuck_at != version {
                    error!(secret = %format!("{}/{}", self.namespace, self.name), resource_version = ?version, "the signing-key Secret holds no valid document and this replica knows no key: restore it from a backup, or delete it to start a new key set");
                    self.stuck_at = version;
                }
                return Ok(());
            }
            Step::Write(next) => next,
            Step::Restore(next) => {
                warn!(secret = %self.name, kids = ?next.kids(), "the signing-key Secret is gone, empty or invalid; writing it again from the keys in memory");
                next
            }
        };
        // The lease may have gone while reading: only its holder writes.
        if !leadership.is_held() {
            return Ok(());
        }
        let data = next.to_secret_data()?;
        let pp = PostParams {
            field_manager: Some(TOKEN_SERVER.into()),
            ..PostParams::default()
        };
        let created = existing.is_none();
        let written = match existing {
            None => {
                let secret = new_secret(&self.namespace, &self.name, data);
                self.api.create(&pp, &secret).await
            }
            Some(secret) => {
                let secret = updated_secret(secret, data);
                self.api.replace(&self.name, &pp, &secret).await
            }
        };
        match written {
            Ok(_) => {
                if created {
                    info!(secret = %self.name, kids = ?next.kids(), "wrote the signing-key Secret");
                }
                log_changes(&before, &next, &self.name);
                self.memory = next;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                debug!(secret = %self.name, "the signing-key Secret changed meanwhile; retrying at the next tick");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What the leader does at a tick.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing to change.
    Nothing,
    /// Write this set (create or replace).
    Write(KeySet),
    /// Write this set, restored from memory: the Secret was deleted, emptied or damaged.
    Restore(KeySet),
    /// An invalid document and no key known: a person must decide.
    Stuck,
}

/// The leader's decision. `stored`: the Secret's set (`None`: no Secret); `labelled`: whether it
/// carries both labels; `memory`: the set last read or written; `serving`: the set this replica
/// serves.
fn next_step(
    stored: Option<&Result<KeySet>>,
    labelled: bool,
    memory: &KeySet,
    serving: &KeySet,
    now: i64,
    schedule: &Schedule,
) -> Result<Step> {
    let base = match stored {
        Some(Ok(set)) if !set.is_empty() => {
            return Ok(match set.plan(now, schedule)? {
                Some(next) => Step::Write(next),
                None if !labelled => Step::Write(set.clone()),
                None => Step::Nothing,
            });
        }
        // deleted, emptied or damaged: restore what is known
        _ => memory.merge(serving),
    };
    if base.is_empty() && matches!(stored, Some(Err(_))) {
        return Ok(Step::Stuck);
    }
    if base.is_empty() {
        return Ok(Step::Write(base.plan(now, schedule)?.unwrap_or(base)));
    }
    Ok(Step::Restore(base.plan(now, schedule)?.unwrap_or(base)))
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), TOKEN_SERVER.to_string()),
        (COMPONENT_LABEL.to_string(), COMPONENT.to_string()),
    ])
}

fn has_labels(secret: &Secret) -> bool {
    let have = secret.metadata.labels.as_ref();
    labels()
        .iter()
        .all(|(k, v)| have.and_then(|l| l.get(k)) == Some(v))
}

/// A new Secret `namespace/name` holding `data` under [`KEYS_DATA`], with both labels.
fn new_secret(namespace: &str, name: &str, data: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(KEYS_DATA.to_string(), ByteString(data))])),
        ..Secret::default()
    }
}

/// `existing` (keeping its `resourceVersion`, so the replace is conditional) with `data` under
/// [`KEYS_DATA`] and both labels; other data and labels are kept.
fn updated_secret(mut existing: Secret, data: Vec<u8>) -> Secret {
    existing.metadata.managed_fields = None;
    existing
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels());
    existing
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(KEYS_DATA.to_string(), ByteString(data));
    existing.string_data = None;
    existing
}

/// Logs the keys `after` adds to and drops from `before`, by kid.
fn log_changes(before: &KeySet, after: &KeySet, secret: &str) {
    for key in after.keys() {
        if before.get(key.kid()).is_none() {
            info!(
                secret,
                kid = key.kid(),
                active_from = key.active_from(),
                "published a signing key"
            );
        }
    }
    for key in before.keys() {
        if after.get(key.kid()).is_none() {
            info!(secret, kid = key.kid(), "retired a signing key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::signing::SigningKey;

    fn schedule() -> Schedule {
        Schedule {
            rotation_seconds: 100,
            publish_ahead_seconds: 30,
            retire_after_seconds: 75,
        }
    }

    fn secret_with(data: &[u8], version: &str) -> Secret {
        let mut secret = new_secret("ns", DEFAULT_SECRET_NAME, data.to_vec());
        secret.metadata.resource_version = Some(version.into());
        secret
    }

    fn a_set(now: i64) -> KeySet {
        KeySet::default()
            .plan(now, &schedule())
            .expect("plan")
            .expect("a set")
    }

    #[test]
    fn new_secret_is_labelled_and_readable() {
        let set = a_set(1000);
        let secret = new_secret("ns", "keys", set.to_secret_data().expect("data"));
        assert!(has_labels(&secret));
        assert_eq!(secret.metadata.name.as_deref(), Some("keys"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPONENT_LABEL))
                .map(String::as_str),
            Some("token-signing-keys")
        );
        assert_eq!(key_set_of(&secret).expect("set"), set);
    }

    #[test]
    fn updated_secret_keeps_the_version_and_other_data() {
        let mut secret = secret_with(b"{}", "42");
        secret.metadata.labels = Some(BTreeMap::from([("team".into(), "x".into())]));
        secret
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("other".into(), ByteString(b"kept".to_vec()));
        let set = a_set(1000);
        let updated = updated_secret(secret, set.to_secret_data().expect("data"));
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("42"));
        assert!(has_labels(&updated));
        assert_eq!(
            updated
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("x")
        );
        assert_eq!(
            updated
                .data
                .as_ref()
                .and_then(|d| d.get("other"))
                .map(|b| b.0.as_slice()),
            Some(&b"kept"[..])
        );
        assert_eq!(key_set_of(&updated).expect("set"), set);
    }

    #[test]
    fn key_set_of_refuses_a_missing_document() {
        let mut secret = secret_with(b"", "1");
        secret.data = None;
        assert!(key_set_of(&secret).is_err());
        assert!(key_set_of(&secret_with(b"nope", "1")).is_err());
    }

    #[test]
    fn next_step_creates_a_fresh_set_only_when_nothing_is_known() {
        let s = schedule();
        let empty = KeySet::default();
        let Step::Write(set) = next_step(None, false, &empty, &empty, 1000, &s).expect("step")
        else {
            panic!("expected a write");
        };
        assert_eq!(set.len(), 2);
        assert_eq!(set.signer(1000).map(SigningKey::active_from), Some(1000));
    }

    #[test]
    fn next_step_restores_a_deleted_secret_from_memory() {
        let s = schedule();
        let known = a_set(1000);
        let empty = KeySet::default();
        // deleted: the keys in memory come back, no fresh active key
        for (memory, serving) in [(&known, &empty), (&empty, &known), (&known, &known)] {
            let Step::Restore(set) =
                next_step(None, false, memory, serving, 1010, &s).expect("step")
            else {
                panic!("expected a restore");
            };
            assert_eq!(set, known);
        }
        // deleted after a rotation: restored, and the schedule applied
        let Step::Restore(set) = next_step(None, false, &known, &empty, 1100, &s).expect("step")
        else {
            panic!("expected a restore");
        };
        assert_eq!(&set.keys()[..2], known.keys());
        assert_eq!(set.len(), 3);
        // damaged or emptied: the same
        let damaged: Result<KeySet> = Err(Error::Config("damaged".into()));
        let Step::Restore(set) =
            next_step(Some(&damaged), true, &known, &empty, 1010, &s).expect("step")
        else {
            panic!("expected a restore");
        };
        assert_eq!(set, known);
        let emptied: Result<KeySet> = Ok(KeySet::default());
        let Step::Restore(set) =
            next_step(Some(&emptied), true, &empty, &known, 1010, &s).expect("step")
        else {
            panic!("expected a restore");
        };
        assert_eq!(set, known);
        // emptied and nothing known: a new set
        let Step::Write(set) =
            next_step(Some(&emptied), true, &empty, &empty, 1010, &s).expect("step")
        else {
            panic!("expected a write");
        };
        assert_eq!(set.len(), 2);
        // damaged and nothing known: a person decides
        assert_eq!(
            next_step(Some(&damaged), true, &empty, &empty, 1010, &s).expect("step"),
            Step::Stuck
        );
    }

    #[test]
    fn next_step_follows_a_valid_secret() {
        let s = schedule();
        let stored = a_set(1000);
        // a key removed by hand (revoked) is not brought back from memory
        let revoked = KeySet::new(vec![stored.keys()[1].clone()]).expect("set");
        let empty = KeySet::default();
        assert_eq!(
            next_step(Some(&Ok(stored.clone())), true, &revoked, &empty, 1010, &s).expect("step"),
            Step::Nothing
        );
        assert_eq!(
            next_step(Some(&Ok(revoked.clone())), true, &stored, &stored, 1010, &s).expect("step"),
            Step::Nothing
        );
        // labels put back
        assert_eq!(
            next_step(Some(&Ok(stored.clone())), false, &empty, &empty, 1010, &s).expect("step"),
            Step::Write(stored.clone())
        );
        // rotation
        let Step::Write(next) =
            next_step(Some(&Ok(stored.clone())), true, &empty, &empty, 1100, &s).expect("step")
        else {
            panic!("expected a write");
        };
        assert_eq!(next.len(), 3);
    }

    #[test]
    fn loader_loads_each_version_and_keeps_the_set_on_bad_input() {
        let mut loader = Loader::new(DEFAULT_SECRET_NAME.into());
        let set = a_set(1000);
        let data = set.to_secret_data().expect("data");
        assert!(loader.apply(watcher::Event::Init, false).is_none());
        assert_eq!(
            loader.apply(watcher::Event::InitApply(secret_with(&data, "1")), false),
            Some(set.clone())
        );
        assert!(loader.apply(watcher::Event::InitDone, true).is_none());
        // the same version again (a relist) changes nothing
        assert!(
            loader
                .apply(watcher::Event::Apply(secret_with(&data, "1")), true)
                .is_none()
        );
        // an invalid version is ignored (logged once)
        for _ in 0..2 {
            assert!(
                loader
                    .apply(watcher::Event::Apply(secret_with(b"{", "2")), true)
                    .is_none()
            );
        }
        // an empty set does not replace a served one
        let empty = KeySet::default().to_secret_data().expect("data");
        assert!(
            loader
                .apply(watcher::Event::Apply(secret_with(&empty, "3")), true)
                .is_none()
        );
        // a deletion keeps the set; the next version is loaded
        assert!(
            loader
                .apply(watcher::Event::Delete(secret_with(&data, "3")), true)
                .is_none()
        );
        let next = set.plan(1100, &schedule()).expect("plan").expect("set");
        let next_data = next.to_secret_data().expect("data");
        assert_eq!(
            loader.apply(watcher::Event::Apply(secret_with(&next_data, "4")), true),
            Some(next.clone())
        );
        // the Secret absent at a relist: nothing changes
        assert!(loader.apply(watcher::Event::Init, true).is_none());
        assert!(loader.apply(watcher::Event::InitDone, true).is_none());
        // recreated with the same content under a new version
        assert_eq!(
            loader.apply(watcher::Event::Apply(secret_with(&next_data, "5")), true),
            Some(next)
        );
    }

    #[test]
    fn fixed_keys_are_ready() {
        let keys = SigningKeys::fixed(a_set(1000));
        assert!(keys.is_ready(1000));
        assert!(!keys.is_ready(999));
        assert_eq!(keys.current().map(|s| s.len()), Some(2));
    }
}
