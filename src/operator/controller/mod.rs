//! The controller: one kube-runtime `Controller` per watched scope (a namespace, or the whole
//! cluster), fed by a watch of ApiKeys and a watch of the Secrets the operator manages, with the
//! caches the reconcile reads instead of the API server (this module: [`run`]).
//!
//! - `context.rs`: [`Context`], what every reconcile of one scope shares (client, caches,
//!   metrics, backoff state).
//! - `reconcile.rs`: [`reconcile`], one key read, decided by the core ([`crate::core::decision`]),
//!   written, and its status brought in line; [`error_policy`], the backoff after a failure.
//! - `writes.rs`: the writes a reconcile makes (the Secret, the status, events).
//! - `watches.rs`: how the watches behave (backoff, re-lists, readiness, what is cached).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use tracing::{debug, info, warn};

use crate::core::crd::ApiKey;
use crate::core::hashing::Hasher;
use crate::core::record::RecordKey;
use crate::core::secret::{MANAGED_SELECTOR, MANAGER};
use crate::operator::events::Events;
use crate::operator::health::Health;
use crate::operator::outage::Outage;
use crate::operator::secret_cache::SecretCache;

mod context;
mod reconcile;
mod watches;
mod writes;

pub use context::Context;
pub use reconcile::{error_policy, reconcile};
use watches::{
    WatchBackoff, WatchProbe, every, note_relist, only_events, probe_failing_watches, slim, synced,
    watch_config,
};

/// How often every key is looked at again without any change (from the caches: no API call). One
/// timer for all keys, as controller-runtime's resync period, rather than a scheduled requeue per
/// key, which kept an entry per key in kube-runtime's scheduler (about 0.3 KiB each, for ever).
const RESYNC: Duration = Duration::from_secs(3600);
/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Reconciles run at once (0 = unbounded).
    pub concurrency: u16,
    /// Identity in events (`reportingInstance`), usually the pod name.
    pub instance: String,
    /// The shortest `spec.rotation.interval` honoured; shorter ones rotate at this interval.
    pub min_rotation_interval: Duration,
}

/// Runs the controllers (one per watched namespace, or one for the whole cluster) until `shutdown`
/// resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    hasher: Hasher,
    record_key: RecordKey,
    health: Arc<Health>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let pending = Arc::new(AtomicUsize::new(scopes.len()));
    let controllers = scopes.into_iter().map(|ns| {
        controller_for(
            client.clone(),
            hasher.clone(),
            record_key.clone(),
            Scope {
                health: health.clone(),
                pending: pending.clone(),
                namespace: ns,
            },
            &settings,
            shutdown.clone(),
        )
    });
    future::join_all(controllers).await;
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One watched scope (a namespace, or the whole cluster) and how it reports readiness.
struct Scope {
    health: Arc<Health>,
    /// Scopes whose caches have not synced yet; the last one to sync marks the process ready.
    pending: Arc<AtomicUsize>,
    namespace: Option<String>,
}

async fn controller_for(
    client: Client,
    hasher: Hasher,
    record_key: RecordKey,
    scope: Scope,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = scope.namespace.as_deref();
    let keys_api: Api<ApiKey> = api(&client, ns);
    let secrets_api: Api<Secret> = api(&client, ns);

    // Only the Secrets we manage, selected by label: the cluster's other Secrets are never listed.
    // A Secret that stops matching the selector (its label removed or changed) arrives as a
    // deletion: its key is woken, reads it, and puts the label back (see decision::decide).
    let secrets = SecretCache::new(record_key);
    let outage = Arc::new(Outage::default());
    let in_scope = ns.map(|n| format!(" in namespace {n}")).unwrap_or_default();
    let secret_watch = Arc::new(WatchProbe::new(
        format!("Secrets{in_scope}"),
        scope.health.clone(),
        outage.clone(),
    ));
    let key_watch = Arc::new(WatchProbe::new(
        format!("ApiKeys{in_scope}"),
        scope.health.clone(),
        outage.clone(),
    ));
    let probes = tokio::spawn(probe_failing_watches(
        keys_api.clone(),
        secrets_api.clone(),
        key_watch.clone(),
        secret_watch.clone(),
    ));
    // After a re-list (a watch that expired or failed), every key is looked at again, from the
    // caches: kube-runtime's controller reconciles a key from its store, which keeps the old
    // objects until the re-list is complete, so the keys of the first pages would be reconciled
    // from what they were before, and nothing else would wake them once the new objects are in.
    // After a 20 s API server restart this left 100 of 200 regeneration requests unanswered.
    let (relisted, relists) = futures::channel::mpsc::unbounded::<()>();
    let secret_events = watcher(secrets_api, watch_config().labels(MANAGED_SELECTOR))
        .backoff(WatchBackoff::default())
        .map_ok({
            let secrets = secrets.clone();
            let relisted = relisted.clone();
            let mut lists = 0u64;
            move |event| {
                secrets.apply(&event);
                note_relist(&event, &mut lists, &relisted);
                event
            }
        })
        .inspect({
            let probe = secret_watch.clone();
            move |result| probe.observe(result)
        })
        .filter(only_events)
        .touched_objects();

    let (keys, key_writer) = reflector::store();
    let events = Events::new(client.clone(), MANAGER, &settings.instance);
    scope.health.watch_keys(keys.clone());
    {
        let (keys, secrets, health, pending) = (
            keys.clone(),
            secrets.clone(),
            scope.health.clone(),
            scope.pending.clone(),
        );
        tokio::spawn(async move {
            secrets.synced().await;
            if synced(&keys).await && pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                info!("caches synced");
                health.set_synced();
            }
        });
    }
    let metrics = scope.health.metrics.clone();
    let mut ctx = Context::new(client, events, hasher, keys.clone(), secrets, metrics);
    ctx.outage = outage.clone();
    ctx.min_rotation_interval = settings.min_rotation_interval;
    let ctx = Arc::new(ctx);

    // One watch of ApiKeys feeds the cache, the index of keys per user and the controller. When a
    // key appears, changes or goes, the other keys of its user may change state (the next oldest
    // becomes active when the active one is deleted): they are reconciled too.
    let (wake_siblings, siblings_to_wake) = futures::channel::mpsc::unbounded();
    let key_events = watcher(keys_api, watch_config())
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect(key_writer)
        .map_ok({
            let ctx = ctx.clone();
            let mut lists = 0u64;
            move |event| {
                note_relist(&event, &mut lists, &relisted);
                if let watcher::Event::Delete(key) = &event {
                    ctx.forget(&ObjectRef::from_obj(key));
                }
                ctx.targets.apply(&event);
                for sibling in ctx.siblings.apply(&event) {
                    // Fails only once the controller is gone, when nothing is left to wake.
                    let _ = wake_siblings.unbounded_send(sibling);
                }
                event
            }
        })
        .inspect({
            let probe = key_watch.clone();
            move |result| probe.observe(result)
        })
        .filter(only_events)
        .applied_objects();
    // A Secret's event wakes the keys that write a Secret of that name, whatever its owner
    // references say: one whose owner reference was removed must still reach its key.
    let targets = ctx.targets.clone();
    Controller::for_stream(key_events, keys)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .watches_stream(secret_events, move |secret: Secret| {
            match (secret.namespace(), secret.metadata.name.as_deref()) {
                (Some(ns), Some(name)) => targets.writers_of(&ns, name),
                _ => Vec::new(),
            }
        })
        .reconcile_on(siblings_to_wake)
        .reconcile_all_on(futures::stream::select(every(RESYNC), relists))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                // Already logged by error_policy, or by WatchProbe for the watches.
                Err(ControllerError::ReconcilerFailed(..) | ControllerError::QueueError(_))
                | Ok(_) => {}
                // A Secret's or a sibling's event for an ApiKey deleted meanwhile: nothing to do.
                Err(ControllerError::ObjectNotFound(key)) => {
                    debug!(apikey = %key, "gone before its reconcile");
                }
                Err(e) => warn!(error = %e, "controller error"),
            }
            future::ready(())
        })
        .await;
    probes.abort();
}

#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod tests;
