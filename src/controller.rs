//! The reconciler: reads an ApiKey, its siblings and its Secret, asks [`decision`] what must
//! happen, and carries it out: write the Secret, update the status, record an event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::{ApiKey, ApiKeyStatus};
use crate::credentials;
use crate::decision::{self, IssueReason, Plan, SecretState};
use crate::error::{Error, Result};
use crate::events::{EventType, Events};
use crate::hashing::Hasher;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::secret::{self, Credentials, MANAGED_SELECTOR, MANAGER, ManagedSecret};
use crate::secret_cache::SecretCache;
use crate::siblings::Siblings;
use crate::status::{self, Outcome};

/// How often every key is looked at again without any change (from the caches: no API call). One
/// timer for all keys, as controller-runtime's resync period, rather than a scheduled requeue per
/// key, which kept an entry per key in kube-runtime's scheduler (about 0.3 KiB each, for ever).
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a key in SecretConflict checks whether the foreign Secret has gone (Secrets that are
/// not ours are not watched, so nothing else would tell).
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Delay before looking again at a key whose cached copy turned out stale.
const STALE_RETRY: Duration = Duration::from_millis(200);
/// First and largest delay after a failed reconcile; doubled on every consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
    /// Metrics shared by all scopes.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per ApiKey, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ApiKey>, u32>>,
    /// Per ApiKey, the resourceVersion that the operator's last status write replaced: a cached
    /// copy still at that version is stale, and the watch is about to deliver the new one.
    superseded: Mutex<HashMap<ObjectRef<ApiKey>, String>>,
}

impl Context {
    /// A context over these parts.
    pub fn new(
        client: Client,
        events: Events,
        hasher: Hasher,
        keys: Store<ApiKey>,
        siblings: Siblings,
        secrets: SecretCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            events,
            hasher,
            keys,
            siblings,
            secrets,
            metrics,
            failures: Mutex::default(),
            superseded: Mutex::default(),
        }
    }

    /// Whether `key` is a cached copy older than the operator's own last status write to it. The
    /// watch delivers the newer copy soon, and with it another reconcile: acting on this one
    /// would only fail its precondition. Forgets the write once a newer copy is seen.
    fn is_superseded(&self, key: &ApiKey) -> bool {
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
    fn wrote_status(&self, key: &ApiKey, replaced: Option<String>) {
        if let (Ok(mut superseded), Some(version)) = (self.superseded.lock(), replaced) {
            superseded.insert(ObjectRef::from_obj(key), version);
        }
    }

    /// Forgets what was kept about a deleted ApiKey.
    fn forget(&self, key: &ObjectRef<ApiKey>) {
        if let Ok(mut superseded) = self.superseded.lock() {
            superseded.remove(key);
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Reconciles run at once (0 = unbounded).
    pub concurrency: u16,
    /// Identity in events (`reportingInstance`), usually the pod name.
    pub instance: String,
}

/// Runs the controllers (one per watched namespace, or one for the whole cluster) until `shutdown`
/// resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    hasher: Hasher,
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
    scope: Scope,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = scope.namespace.as_deref();
    let keys_api: Api<ApiKey> = api(&client, ns);
    let secrets_api: Api<Secret> = api(&client, ns);

    // Only the Secrets we manage, selected by label: the cluster's other Secrets are never listed.
    let secrets = SecretCache::default();
    let secret_events = watcher(secrets_api, watch_config().labels(MANAGED_SELECTOR))
        .default_backoff()
        .map_ok({
            let secrets = secrets.clone();
            move |event| {
                secrets.apply(&event);
                event
            }
        })
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
    let ctx = Arc::new(Context::new(
        client,
        events,
        hasher,
        keys.clone(),
        Siblings::default(),
        secrets,
        metrics,
    ));

    // One watch of ApiKeys feeds the cache, the index of keys per user and the controller. When a
    // key appears, changes or goes, the other keys of its user may change state (the next oldest
    // becomes active when the active one is deleted): they are reconciled too.
    let (wake_siblings, siblings_to_wake) = futures::channel::mpsc::unbounded();
    let key_events = watcher(keys_api, watch_config())
        .default_backoff()
        .modify(slim)
        .reflect(key_writer)
        .map_ok({
            let ctx = ctx.clone();
            move |event| {
                if let watcher::Event::Delete(key) = &event {
                    ctx.forget(&ObjectRef::from_obj(key));
                }
                for sibling in ctx.siblings.apply(&event) {
                    // Fails only once the controller is gone, when nothing is left to wake.
                    let _ = wake_siblings.unbounded_send(sibling);
                }
                event
            }
        })
        .applied_objects();
    Controller::for_stream(key_events, keys)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .owns_stream(secret_events)
        .reconcile_on(siblings_to_wake)
        .reconcile_all_on(every(RESYNC))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                // Already logged by error_policy.
                Err(ControllerError::ReconcilerFailed(..)) | Ok(_) => {}
                // A Secret's or a sibling's event for an ApiKey deleted meanwhile: nothing to do.
                Err(ControllerError::ObjectNotFound(key)) => {
                    debug!(apikey = %key, "gone before its reconcile");
                }
                Err(e) => warn!(error = %e, "controller error"),
            }
            future::ready(())
        })
        .await;
}

/// Ticks once per `period`, the first time one `period` from now.
fn every(period: Duration) -> impl futures::Stream<Item = ()> + Send + Sync + 'static {
    futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}

/// Lists in pages of [`LIST_PAGE`] objects: a page is held whole while its objects are applied,
/// so with kube-runtime's default of 500 the first list of 10,000 keys was the operator's peak
/// (7.5 MB of pages for the two watches, measured with heaptrack). Smaller pages cost more list
/// requests (100 for 10,000 keys), at start-up and after a watch expires.
fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// Objects per list page of the watches.
const LIST_PAGE: u32 = 100;

/// Drops from cached ApiKeys what the operator never reads: managed fields, labels and every
/// annotation but the operator's own (`apikey.dev/...`: kubectl's last-applied copy alone is as
/// large as the rest of an ApiKey). Each map left non-empty costs a B-tree node of about half a
/// KiB per object.
fn slim(key: &mut ApiKey) {
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
const OWN_ANNOTATION_PREFIX: &str = "apikey.dev/";

/// Resolves once `store` holds its initial list (`false` if its writer is gone). kube-runtime's
/// readiness signal wakes only the last of several waiters, and the controller waits on the same
/// store, so look again every so often instead of waiting once.
async fn synced<K>(store: &Store<K>) -> bool
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

/// Reconciles one ApiKey.
pub async fn reconcile(key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    match reconcile_key(&key, &ctx).await {
        Ok((action, outcome)) => {
            ctx.metrics
                .reconciled(outcome, started.elapsed().as_secs_f64());
            if let Ok(mut failures) = ctx.failures.lock() {
                failures.remove(&ObjectRef::from_obj(&*key));
            }
            Ok(action)
        }
        Err(e) => {
            ctx.metrics
                .failed(e.metric_label(), started.elapsed().as_secs_f64());
            Err(e)
        }
    }
}

/// On failure: back off exponentially per ApiKey (1s, 2s, 4s, ... up to 5 minutes) and retry.
pub fn error_policy(key: Arc<ApiKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from_obj(&*key)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff(failures);
    warn!(apikey = %ObjectRef::from_obj(&*key), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

async fn reconcile_key(key: &ApiKey, ctx: &Context) -> Result<(Action, &'static str)> {
    if key.metadata.deletion_timestamp.is_some() {
        return Ok((Action::await_change(), "deleting"));
    }
    if ctx.is_superseded(key) {
        return Ok((Action::await_change(), "superseded"));
    }
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let siblings: Vec<Arc<ApiKey>> = ctx
        .siblings
        .of(&namespace, &key.spec.user)
        .into_iter()
        .filter_map(|name| ctx.keys.get(&ObjectRef::new(&name).within(&namespace)))
        .collect();
    let active = decision::active_for_user(key, siblings.iter().map(|k| &**k));

    // Decide from the caches first: a key with nothing to do costs no API call, and the Secret is
    // read only when the cache cannot be acted on (see decision::confirm_on_fresh_read).
    let cached = SecretState::of(key, ctx.secrets.get(&namespace, &key.secret_name()));
    let mut plan = decision::decide(key, active.clone(), &cached);
    if decision::confirm_on_fresh_read(key, &plan, &cached) {
        let fresh = secrets.get_opt(&key.secret_name()).await?;
        let fresh = fresh.as_ref().map(ManagedSecret::read);
        plan = decision::decide(key, active, &SecretState::of(key, fresh));
    }

    // Kubernetes keeps times to the second; so do we, so that what we write compares equal to
    // what we read back and a healthy key needs no write.
    let now = now_to_the_second();
    let (outcome_status, action) = match &plan {
        Plan::Duplicate { active } => (
            status::desired(key, &Outcome::Duplicate(active), &now),
            Action::await_change(),
        ),
        Plan::Conflict => (
            status::desired(key, &Outcome::Conflict, &now),
            Action::requeue(CONFLICT_RECHECK),
        ),
        Plan::InSync(managed) => (
            status::desired(key, &Outcome::Ready(managed), &now),
            Action::await_change(),
        ),
        Plan::Issue {
            reason,
            client_id,
            replaces,
        } => {
            let issued = issue(
                key,
                ctx,
                &secrets,
                *reason,
                client_id.clone(),
                replaces.clone(),
                &now,
            )
            .await?;
            let Some(managed) = issued else {
                return Ok((Action::requeue(STALE_RETRY), "stale"));
            };
            (
                status::desired(key, &Outcome::Ready(&managed), &now),
                Action::await_change(),
            )
        }
    };
    if key.status.as_ref() == Some(&outcome_status) {
        debug!(
            apikey = %ObjectRef::from_obj(key),
            resource_version = key.resource_version().unwrap_or_default(),
            outcome = plan.name(),
            "reconciled"
        );
        return Ok((action, plan.name()));
    }
    if !patch_status(key, ctx, &namespace, &outcome_status).await? {
        // Our copy of the ApiKey was stale; look again once the watch has delivered the news.
        debug!(apikey = %ObjectRef::from_obj(key), "status changed meanwhile; retrying");
        return Ok((Action::requeue(STALE_RETRY), "stale"));
    }
    ctx.wrote_status(key, key.resource_version());
    let previous_reason = key.ready_condition().map(|c| c.reason.as_str());
    if let Some(condition) = outcome_status.conditions.first()
        && condition.status == "False"
        && previous_reason != Some(condition.reason.as_str())
    {
        warn!(apikey = %ObjectRef::from_obj(key), reason = %condition.reason, "{}", condition.message);
        publish(
            ctx,
            key,
            EventType::Warning,
            &condition.reason,
            "WaitForChange",
            &condition.message,
        )
        .await;
    }
    debug!(
        apikey = %ObjectRef::from_obj(key),
        resource_version = key.resource_version().unwrap_or_default(),
        outcome = plan.name(),
        "reconciled"
    );
    Ok((action, plan.name()))
}

fn now_to_the_second() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Generates credentials for `reason`, hashes the secret off the runtime, and writes the Secret in
/// one request: created when missing, replaced under a resourceVersion precondition otherwise.
async fn issue(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    reason: IssueReason,
    client_id: Option<String>,
    replaces: Option<String>,
    now: &Time,
) -> Result<Option<ManagedSecret>> {
    let client_id = match client_id {
        Some(id) => id,
        None => credentials::generate_client_id()?,
    };
    let client_secret = credentials::generate_client_secret()?;
    let hash = ctx.hasher.hash(client_secret.clone()).await?;
    let creds = Credentials {
        client_id,
        client_secret,
        hash,
        handled_request: key.regenerate_request().map(Into::into),
        rotated_at: now.clone(),
    };
    let name = key.secret_name();
    let written = match replaces {
        None => {
            // create, never apply: if a Secret of that name appeared meanwhile, the API server
            // refuses and the next reconcile sees it as foreign.
            let secret = secret::build(key, &creds, None)?;
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            secrets.create(&pp, &secret).await
        }
        // the precondition makes the write fail if the Secret changed since it was judged
        Some(rv) => {
            let secret = secret::build(key, &creds, Some(rv))?;
            secrets
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
        }
    };
    let written = match written {
        Ok(secret) => secret,
        // The Secret changed (or appeared) since it was judged: nothing was written; decide again.
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
            debug!(apikey = %ObjectRef::from_obj(key), "Secret changed meanwhile; retrying");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let message = reason.describe(&name);
    info!(apikey = %ObjectRef::from_obj(key), client_id = %creds.client_id, reason = reason.event_reason(), "{message}");
    publish(
        ctx,
        key,
        EventType::Normal,
        reason.event_reason(),
        reason.event_action(),
        &message,
    )
    .await;
    ctx.metrics.issued(reason.metric_label());
    Ok(Some(ManagedSecret::read(&written)))
}

/// Applies `status` under a resourceVersion precondition (the version it was decided on), so that
/// a decision taken on a stale copy is never written. `Ok(false)`: the precondition failed.
async fn patch_status(
    key: &ApiKey,
    ctx: &Context,
    namespace: &str,
    status: &ApiKeyStatus,
) -> Result<bool> {
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": { "resourceVersion": key.resource_version() },
        "status": status,
    });
    match api
        .patch_status(
            &key.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn publish(
    ctx: &Context,
    key: &ApiKey,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    if let Err(e) = ctx.events.publish(key, type_, reason, action, note).await {
        warn!(apikey = %ObjectRef::from_obj(key), error = %e, "could not record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_objects_keep_only_what_the_operator_reads() {
        let mut key = crate::test_support::key("web", "alice", 1);
        key.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        key.metadata.annotations = Some(
            [
                (
                    crate::crd::REGENERATE_ANNOTATION.to_string(),
                    "1".to_string(),
                ),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
            ]
            .into(),
        );
        key.metadata.managed_fields = Some(vec![Default::default()]);
        let before = key.clone();
        slim(&mut key);
        assert_eq!(key.metadata.labels, None);
        assert_eq!(key.metadata.managed_fields, None);
        assert_eq!(key.regenerate_request(), Some("1"));
        assert_eq!(key.annotations().len(), 1);
        assert_eq!((&key.spec, &key.status), (&before.spec, &before.status));

        let mut other = crate::test_support::key("db", "bob", 2);
        other.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        slim(&mut other);
        assert_eq!(other.metadata.annotations, None, "no empty map is kept");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn resync_ticks_once_per_period_not_at_start() {
        let start = tokio::time::Instant::now();
        let mut ticks = std::pin::pin!(every(RESYNC));
        assert!(
            futures::poll!(ticks.next()).is_pending(),
            "no tick at start"
        );
        ticks.next().await;
        assert_eq!(start.elapsed(), RESYNC);
        ticks.next().await;
        assert_eq!(start.elapsed(), 2 * RESYNC);
    }
}
