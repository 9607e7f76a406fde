//! The Secrets the operator manages, as the decisions read them: one [`ManagedSecret`] per Secret
//! carrying the operator's label, kept from a watch.
//!
//! A reflector store would keep every whole Secret (metadata, ownerReferences, annotations, the
//! credentials themselves): about 2 KiB per key, and every client secret in the operator's memory
//! for as long as it runs. What is kept here is what [`crate::core::decision`] needs, with intactness
//! judged once on arrival and the plaintext dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::core::record::RecordKey;
use crate::core::secret::ManagedSecret;
use crate::shared::mirror::{Index, Mirror};

/// The managed Secrets of a watched scope, by namespace and name.
#[derive(Clone)]
pub struct SecretCache {
    state: Arc<RwLock<Mirror<ByName>>>,
    synced: Arc<watch::Sender<bool>>,
    record_key: RecordKey,
}

/// (namespace, name) of a Secret.
type SecretRef = (String, String);

#[derive(Default)]
struct ByName(HashMap<SecretRef, ManagedSecret>);

/// A Secret as the cache keeps it: where it is, and what the operator read of it.
type Entry = (SecretRef, ManagedSecret);

impl Index for ByName {
    type Object = Entry;

    fn insert(&mut self, (at, secret): &Entry) {
        self.0.insert(at.clone(), secret.clone());
    }

    fn remove(&mut self, (at, _): &Entry) {
        self.0.remove(at);
    }
}

impl SecretCache {
    /// An empty cache whose Secrets' records are checked with `record_key`.
    pub fn new(record_key: RecordKey) -> Self {
        Self {
            state: Arc::default(),
            synced: Arc::new(watch::channel(false).0),
            record_key,
        }
    }

    fn entry(&self, secret: &Secret) -> Option<Entry> {
        let at = (secret.namespace()?, secret.metadata.name.clone()?);
        Some((at, ManagedSecret::read(secret, &self.record_key)))
    }

    /// Follows one watch event of the managed Secrets.
    pub fn apply(&self, event: &watcher::Event<Secret>) {
        let event = match event {
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
            watcher::Event::InitApply(s) => match self.entry(s) {
                Some(e) => watcher::Event::InitApply(e),
                None => return,
            },
            watcher::Event::Apply(s) => match self.entry(s) {
                Some(e) => watcher::Event::Apply(e),
                None => return,
            },
            watcher::Event::Delete(s) => match self.entry(s) {
                Some(e) => watcher::Event::Delete(e),
                None => return,
            },
        };
        if let Ok(mut state) = self.state.write() {
            state.apply(&event);
            if state.is_synced() {
                self.synced
                    .send_if_modified(|synced| !std::mem::replace(synced, true));
            }
        }
    }

    /// What was last seen of the Secret `name` in `namespace`, if it carries the operator's label.
    pub fn get(&self, namespace: &str, name: &str) -> Option<ManagedSecret> {
        let state = self.state.read().ok()?;
        state
            .live()
            .0
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether a managed Secret not controlled by the ApiKey with UID `uid` holds `client_id`.
    /// Scans every cached Secret: for rare checks only.
    pub fn holds_client_id_of_another(&self, client_id: &str, uid: &str) -> bool {
        self.state.read().is_ok_and(|state| {
            state.live().0.values().any(|s| {
                s.client_id.as_deref() == Some(client_id)
                    && s.controller_uid.as_deref() != Some(uid)
            })
        })
    }

    /// The key the cached records are checked with.
    pub fn record_key(&self) -> &RecordKey {
        &self.record_key
    }

    /// Resolves once the first list of Secrets is in.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        // Fails only if the sender is gone, which `self` prevents.
        let _ = synced.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::build;
    use crate::core::test_support::{creds, key, record_key};

    #[test]
    fn keeps_what_the_decisions_read_and_no_plaintext() {
        let cache = SecretCache::new(record_key().clone());
        let k = key("web", "alice", 1);
        let c = creds(None);
        let secret = build(&k, &c, Some("7".into()), record_key()).unwrap();
        cache.apply(&watcher::Event::Apply(secret.clone()));

        let cached = cache.get("ns", "web").expect("cached");
        assert_eq!(cached, ManagedSecret::read(&secret, record_key()));
        assert!(
            cached.integrity == crate::core::secret::Integrity::Sealed
                && cached.is_controlled_by(&k)
        );
        assert!(!format!("{cached:?}").contains(c.client_secret.expose()));
        assert_eq!(cache.get("other", "web"), None);

        cache.apply(&watcher::Event::Delete(secret));
        assert_eq!(cache.get("ns", "web"), None);
    }

    #[tokio::test]
    async fn is_synced_once_the_first_list_is_in() {
        let cache = SecretCache::new(record_key().clone());
        let wait = |ms| tokio::time::timeout(std::time::Duration::from_millis(ms), cache.synced());
        cache.apply(&watcher::Event::Init);
        assert!(wait(50).await.is_err(), "not synced before the list is in");
        cache.apply(&watcher::Event::InitDone);
        assert!(wait(5000).await.is_ok(), "synced after it");
    }
}
