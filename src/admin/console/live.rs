//! The watches that feed the table: ApiKeys (full objects: their status is the table) and the
//! metadata of the operator's Secrets (`Api<PartialObjectMeta<Secret>>`: metadata-only lists
//! and watches, never their data), in one namespace or all, as a stream of
//! [`Snapshot`]s for the page's server-sent events.
//!
//! The label selector goes to the API server with the watch, so the server validates it: an
//! invalid selector, like a forbidden list, becomes the snapshot's `error` with the server's
//! message. A failed Secret watch only sets `secretsError`: the table stays, and regeneration
//! states fall back to what the ApiKey alone tells. Failed watches are retried with kube's
//! default backoff (0.8 s doubling to 30 s).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::console::rows::{Snapshot, Store, Tracking, follow, snapshot};
use crate::core::crd::ApiKey;
use crate::core::secret::MANAGED_SELECTOR;

/// How long changes are gathered before a snapshot is sent: a list of many keys, or a bulk
/// action, is one update of the page, not one per key.
pub const COALESCE: Duration = Duration::from_millis(60);

/// What the page asked to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// A label selector in the API server's syntax (`team=x,tier!=dev`); empty: every key.
    pub selector: String,
}

/// Snapshots of the keys in `scope` with this console's actions (`tracking`), one whenever what
/// the table shows changes. A scope without a label selector sees every key of its namespace
/// (or of all), so it also drops from `tracking` the keys that are gone. Ends when `shutdown`
/// turns true (or its sender is gone), so that a graceful shutdown does not wait for the page to
/// close its stream.
pub fn snapshots(
    client: Client,
    scope: Scope,
    tracking: Arc<watch::Sender<Tracking>>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Snapshot> + Send + 'static {
    let keys: Api<ApiKey> = api(&client, scope.namespace.as_deref());
    let secrets: Api<PartialObjectMeta<Secret>> = api(&client, scope.namespace.as_deref());
    let mut key_config = watcher::Config::default();
    if !scope.selector.trim().is_empty() {
        key_config = key_config.labels(scope.selector.trim());
    }
    let live = Live {
        keys: watcher(keys, key_config).default_backoff().boxed(),
        secrets: watcher(secrets, watcher::Config::default().labels(MANAGED_SELECTOR))
            .default_backoff()
            .boxed(),
        key_store: Store::default(),
        secret_store: Store::default(),
        error: None,
        secrets_error: None,
        tracking: tracking.subscribe(),
        tracker: tracking,
        prunes: scope.selector.trim().is_empty().then_some(scope.namespace),
        shutdown,
        sent: None,
    };
    futures::stream::unfold(live, |mut live| async move {
        let next = live.next().await?;
        Some((next, live))
    })
}

fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

struct Live {
    keys: BoxStream<'static, watcher::Result<Event<ApiKey>>>,
    secrets: BoxStream<'static, watcher::Result<Event<PartialObjectMeta<Secret>>>>,
    key_store: Store<ApiKey>,
    secret_store: Store<PartialObjectMeta<Secret>>,
    error: Option<String>,
    secrets_error: Option<String>,
    tracking: watch::Receiver<Tracking>,
    tracker: Arc<watch::Sender<Tracking>>,
    /// The namespace (`None`: all) whose gone keys this stream drops from the tracking, when it
    /// watches without a label selector.
    prunes: Option<Option<String>>,
    shutdown: watch::Receiver<bool>,
    /// The last snapshot sent: an identical one is not sent again.
    sent: Option<Snapshot>,
}

impl Live {
    /// The next snapshot, once something changed and the keys are listed (or cannot be).
    async fn next(&mut self) -> Option<Snapshot> {
        if *self.shutdown.borrow() {
            return None;
        }
        let mut due: Option<Instant> = None;
        loop {
            let changed = tokio::select! {
                event = self.keys.next() => match event? {
                    Ok(event) => {
                        let cleared = settles(&event) && self.error.take().is_some();
                        follow(&mut self.key_store, &event) || cleared
                    }
                    Err(e) => replace(&mut self.error, watch_message(&e)),
                },
                event = self.secrets.next() => match event? {
                    Ok(event) => {
                        let cleared = settles(&event) && self.secrets_error.take().is_some();
                        follow(&mut self.secret_store, &event) || cleared
                    }
                    Err(e) => replace(&mut self.secrets_error, watch_message(&e)),
                },
                changed = self.tracking.changed() => {
                    changed.ok()?;
                    true
                }
                _ = self.shutdown.changed() => return None,
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    self.prune();
                    if self.key_store.is_synced() || self.error.is_some() {
                        let next = snapshot(
                            &self.key_store,
                            &self.secret_store,
                            &self.tracking.borrow_and_update(),
                            self.error.as_deref(),
                            self.secrets_error.as_deref(),
                        );
                        if self.sent.as_ref() != Some(&next) {
                            self.sent = Some(next.clone());
                            return Some(next);
                        }
                    }
                    false
                }
            };
            if changed && due.is_none() {
                due = Some(Instant::now() + COALESCE);
            }
        }
    }
}

impl Live {
    /// Drops from the tracking the keys this stream's complete, unfiltered and working watch no
    /// longer has.
    fn prune(&self) {
        let Some(namespace) = &self.prunes else {
            return;
        };
        if !self.key_store.is_synced() || self.error.is_some() {
            return;
        }
        let present: HashSet<&str> = (self.key_store.live().iter())
            .filter_map(|k| k.metadata.uid.as_deref())
            .collect();
        self.tracker
            .send_if_modified(|t| t.forget_missing(namespace.as_deref(), &present));
    }
}

/// Whether `event` shows a watch working again (a completed list, or a change), which clears its
/// error; a restart (`Init`, `InitApply`) does not: a retry that fails again would flap.
fn settles<K>(event: &Event<K>) -> bool {
    matches!(event, Event::InitDone | Event::Apply(_) | Event::Delete(_))
}

/// Sets `slot` to `message`; whether that changed it.
fn replace(slot: &mut Option<String>, message: String) -> bool {
    if slot.as_deref() == Some(message.as_str()) {
        return false;
    }
    *slot = Some(message);
    true
}

/// The API server's own message for a failed watch (`apikeys.apikey.dev is forbidden: ...`,
/// `unable to parse requirement: ...`), else the error as it prints.
pub fn watch_message(error: &watcher::Error) -> String {
    match crate::error::watch_status(error) {
        Some(s) if !s.message.is_empty() => s.message.clone(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_retry_does_not_flap_the_error() {
        assert!(!settles::<ApiKey>(&Event::Init));
        assert!(settles::<ApiKey>(&Event::InitDone));
        let mut slot = None;
        assert!(replace(&mut slot, "forbidden".into()));
        assert!(!replace(&mut slot, "forbidden".into()));
        assert!(replace(&mut slot, "other".into()));
    }

    #[test]
    fn the_api_servers_message_is_shown_as_it_is() {
        let status = kube::core::Status::failure("unable to parse requirement", "BadRequest");
        let error = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        assert_eq!(watch_message(&error), "unable to parse requirement");
        assert!(!watch_message(&watcher::Error::NoResourceVersion).is_empty());
    }
}
