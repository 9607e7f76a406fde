//! How the controller's watches behave: they retry quickly ([`WatchBackoff`]), report their
//! failures to `/readyz` and the log ([`WatchProbe`]), ask for every key again after a re-list
//! ([`note_relist`]), list in small pages ([`watch_config`]), and cache ApiKeys slimmed to what
//! the operator reads ([`slim`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use crate::core::crd::ApiKey;
use crate::core::secret::MANAGED_SELECTOR;
use crate::operator::health::Health;
use crate::operator::outage::{self, Outage};

/// Counts the complete lists of a watch, and asks for every key to be reconciled once more after
/// each one but the first (at start, every key is reconciled anyway).
pub(super) fn note_relist<K>(
    event: &watcher::Event<K>,
    lists: &mut u64,
    relisted: &futures::channel::mpsc::UnboundedSender<()>,
) {
    if let watcher::Event::InitDone = event {
        *lists += 1;
        if *lists > 1 {
            // Fails only once the controller is gone, when nothing is left to reconcile.
            let _ = relisted.unbounded_send(());
        }
    }
}

/// Lets watch events through to the controller, and not watch errors: they are reported (see
/// [`WatchProbe`]) and retried by the watch's own backoff. An error reaching kube-runtime's
/// controller makes it back off all its triggers once more, growing to a minute: after a 20 s
/// API server restart, 100 of 200 regeneration requests waited minutes for that.
pub(super) fn only_events<K>(
    result: &std::result::Result<watcher::Event<K>, watcher::Error>,
) -> future::Ready<bool> {
    future::ready(result.is_ok())
}

/// Watches retry after 0.5 s, doubling up to 5 s (kube-runtime's default grows to 30 s, so a
/// watch failing for a minute, such as while the CRD is missing, took about a minute more to
/// recover). One list or watch request per 5 s per watch is no load for an API server.
pub(super) struct WatchBackoff {
    builder: backon::ExponentialBuilder,
    current: backon::ExponentialBackoff,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            current: backon::BackoffBuilder::build(builder),
            builder,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.current.next()
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.current = backon::BackoffBuilder::build(self.builder);
    }
}

/// Keeps `/readyz` and the log truthful about one watch: a failing watch makes the process not
/// ready, with a message that names what fails (the CRD by name when it is missing), logged when
/// it starts failing and when it works again; an outage is logged once for all watches and keys.
pub(super) struct WatchProbe {
    name: String,
    failing: std::sync::atomic::AtomicBool,
    health: Arc<Health>,
    outage: Arc<Outage>,
}

impl WatchProbe {
    pub(super) fn new(name: String, health: Arc<Health>, outage: Arc<Outage>) -> Self {
        Self {
            name,
            failing: false.into(),
            health,
            outage,
        }
    }

    pub(super) fn observe<K>(
        &self,
        result: &std::result::Result<watcher::Event<K>, watcher::Error>,
    ) {
        match result {
            Ok(_) => self.works(),
            Err(e) => self.fails(e),
        }
    }

    pub(super) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    pub(super) fn works(&self) {
        if self.failing.swap(false, Ordering::SeqCst) {
            self.health.watch_works(&self.name);
            info!(watch = %self.name, "watch works again");
        }
        self.outage.note_success();
    }

    pub(super) fn fails(&self, e: &watcher::Error) {
        // "too old resource version": the watch lists again by itself; nothing is wrong
        if let watcher::Error::WatchError(s) = e
            && s.code == 410
        {
            debug!(watch = %self.name, error = %e, "watch expired; listing again");
            return;
        }
        let why = describe_watch_error(&self.name, e);
        self.health.watch_failed(&self.name, why.clone());
        let was_failing = self.failing.swap(true, Ordering::SeqCst);
        if watch_error_is_outage(e) {
            self.outage.note_failure(&self.name, &why);
        } else if !was_failing {
            warn!(watch = %self.name, error = %why, "watch fails; retrying every few seconds, not ready meanwhile");
        }
    }
}

/// How often a failing watch's resource is probed.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A watch that resumes after a failure delivers nothing until an object changes, so nothing
/// would tell that it works again: while a watch fails, list one object of what it watches every
/// [`PROBE_INTERVAL`]; once that succeeds, the watch's own retry (at most 5 s apart) does too.
pub(super) async fn probe_failing_watches(
    keys: Api<ApiKey>,
    secrets: Api<Secret>,
    key_watch: Arc<WatchProbe>,
    secret_watch: Arc<WatchProbe>,
) {
    let one = kube::api::ListParams::default().limit(1);
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if key_watch.is_failing() && keys.list_metadata(&one).await.is_ok() {
            key_watch.works();
        }
        if secret_watch.is_failing()
            && secrets
                .list_metadata(&one.clone().labels(MANAGED_SELECTOR))
                .await
                .is_ok()
        {
            secret_watch.works();
        }
    }
}

pub(super) fn watch_error_is_outage(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => outage::kube_outage(e),
        watcher::Error::WatchError(s) => s.code >= 500 || s.code == 429,
        watcher::Error::NoResourceVersion => false,
    }
}

/// What a user needs to read about a failing watch; the missing CRD by its name.
pub(super) fn describe_watch_error(watch: &str, e: &watcher::Error) -> String {
    match crate::error::watch_status(e) {
        Some(s) if s.code == 404 && watch.starts_with("ApiKeys") => format!(
            "the ApiKey CustomResourceDefinition apikeys.{} is not installed (kubectl apply -f crds/): {e}",
            crate::core::crd::GROUP
        ),
        Some(s) if s.code == 403 => format!("forbidden by RBAC (see deploy/): {e}"),
        _ => e.to_string(),
    }
}

/// Ticks once per `period`, the first time one `period` from now.
pub(super) fn every(period: Duration) -> impl futures::Stream<Item = ()> + Send + Sync + 'static {
    futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}

/// Lists in pages of [`LIST_PAGE`] objects: a page is held whole while its objects are applied,
/// so with kube-runtime's default of 500 the first list of 10,000 keys was the operator's peak
/// (7.5 MB of pages for the two watches, measured with heaptrack). Smaller pages cost more list
/// requests (100 for 10,000 keys), at start-up and after a watch expires.
pub(super) fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// Objects per list page of the watches.
pub(super) const LIST_PAGE: u32 = 100;

/// Drops from cached ApiKeys what the operator never reads: managed fields, labels and every
/// annotation but the operator's own (`apikey.dev/...`: kubectl's last-applied copy alone is as
/// large as the rest of an ApiKey). Each map left non-empty costs a B-tree node of about half a
/// KiB per object.
pub(super) fn slim(key: &mut ApiKey) {
    let meta = &mut key.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(OWN_ANNOTATION_PREFIX));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Prefix of every annotation the operator reads.
pub(super) const OWN_ANNOTATION_PREFIX: &str = "apikey.dev/";

/// Resolves once `store` holds its initial list (`false` if its writer is gone). kube-runtime's
/// readiness signal wakes only the last of several waiters, and the controller waits on the same
/// store, so look again every so often instead of waiting once.
pub(super) async fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}
