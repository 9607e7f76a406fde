//! What every reconcile of one watched scope shares: the client, the caches it reads instead of
//! the API server, the metrics, and per key the failures (for backoff) and the status writes not
//! seen back yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::warn;

use crate::core::crd::ApiKey;
use crate::core::hashing::Hasher;
use crate::core::record::RecordKey;
use crate::core::rotation;
use crate::error::Error;
use crate::operator::events::Events;
use crate::operator::metrics::Metrics;
use crate::operator::outage::{self, Outage};
use crate::operator::secret_cache::SecretCache;
use crate::operator::siblings::Siblings;
use crate::operator::targets::Targets;

/// What every reconcile of one watched scope shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events on ApiKeys.
    pub events: Events,
    /// argon2id on a bounded blocking pool.
    pub hasher: Hasher,
    /// Cache of the ApiKeys in scope.
    pub keys: Store<ApiKey>,
    /// The ApiKeys of each user, beside `keys` (for the one-key-per-user rule).
    pub siblings: Siblings,
    /// What the operator keeps of the Secrets it manages (selected by label).
    pub secrets: SecretCache,
    /// The ApiKeys that write each Secret name, beside `keys` (to map Secret events to keys).
    pub targets: Targets,
    /// The key that seals the operator's records.
    pub record_key: RecordKey,
    /// Metrics shared by all scopes.
    pub metrics: Arc<Metrics>,
    /// The API server outage going on, if any, logged once for all keys.
    pub outage: Arc<Outage>,
    /// The shortest rotation interval the operator accepts (see [`crate::core::rotation::Policy::of`]).
    pub min_rotation_interval: Duration,
    /// Consecutive failures per ApiKey, for exponential backoff.
    pub(super) failures: Mutex<HashMap<ObjectRef<ApiKey>, u32>>,
    /// Per ApiKey, the resourceVersion that the operator's last status write replaced: a cached
    /// copy still at that version is stale, and the watch is about to deliver the new one.
    pub(super) superseded: Mutex<HashMap<ObjectRef<ApiKey>, String>>,
}

impl Context {
    /// A context over these parts; the record key is the Secret cache's.
    pub fn new(
        client: Client,
        events: Events,
        hasher: Hasher,
        keys: Store<ApiKey>,
        secrets: SecretCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            events,
            hasher,
            keys,
            siblings: Siblings::default(),
            record_key: secrets.record_key().clone(),
            secrets,
            targets: Targets::default(),
            metrics,
            outage: Arc::default(),
            min_rotation_interval: rotation::DEFAULT_MIN_INTERVAL,
            failures: Mutex::default(),
            superseded: Mutex::default(),
        }
    }

    /// Logs a failure of `subject` once per outage, or on its own when it is no outage.
    pub(super) fn report_failure(&self, subject: &str, error: &Error, retry_in: Duration) {
        if outage::is_outage(error) {
            self.outage.note_failure(subject, error);
        } else {
            warn!(apikey = subject, error = %error, ?retry_in, "reconcile failed");
        }
    }

    /// Whether `key` is a cached copy older than the operator's own last status write to it. The
    /// watch delivers the newer copy soon, and with it another reconcile: acting on this one
    /// would only fail its precondition. Forgets the write once a newer copy is seen.
    pub(super) fn is_superseded(&self, key: &ApiKey) -> bool {
        let Ok(mut superseded) = self.superseded.lock() else {
            return false;
        };
        let object = ObjectRef::from_obj(key);
        match superseded.get(&object) {
            Some(version) if key.metadata.resource_version.as_ref() == Some(version) => true,
            Some(_) => {
                superseded.remove(&object);
                false
            }
            None => false,
        }
    }

    /// Remembers that the status write to `key` replaced its version `replaced`.
    pub(super) fn wrote_status(&self, key: &ApiKey, replaced: Option<String>) {
        if let (Ok(mut superseded), Some(version)) = (self.superseded.lock(), replaced) {
            superseded.insert(ObjectRef::from_obj(key), version);
        }
    }

    /// Forgets what was kept about a deleted ApiKey.
    pub(super) fn forget(&self, key: &ObjectRef<ApiKey>) {
        if let Ok(mut superseded) = self.superseded.lock() {
            superseded.remove(key);
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}
