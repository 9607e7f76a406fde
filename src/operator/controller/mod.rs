//! The reconciler: reads an ApiKey, its siblings and its Secret, asks [`decision`] what must
//! happen, and carries it out: write the Secret, update the status, record an event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::core::crd::{ApiKey, ApiKeyStatus};
use crate::core::credentials::{self, ClientSecret};
use crate::core::decision::{self, Plan, SecretState, StatusClientId};
use crate::core::hashing::Hasher;
use crate::core::issue::IssueReason;
use crate::core::record::{RecordKey, SealCheck};
use crate::core::rotation::{self, Policy};
use crate::core::secret::{
    self, Credentials, MANAGED_BY_LABEL, MANAGED_SELECTOR, MANAGER, ManagedSecret,
};
use crate::core::status::{self, Outcome};
use crate::error::{Error, Result};
use crate::operator::events::{EventType, Events};
use crate::operator::health::Health;
use crate::operator::metrics::Metrics;
use crate::operator::outage::{self, Outage};
use crate::operator::rollout;
use crate::operator::secret_cache::SecretCache;
use crate::operator::siblings::Siblings;
use crate::operator::targets::Targets;

/// How often every key is looked at again without any change (from the caches: no API call). One
/// timer for all keys, as controller-runtime's resync period, rather than a scheduled requeue per
/// key, which kept an entry per key in kube-runtime's scheduler (about 0.3 KiB each, for ever).
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a key in SecretConflict checks whether the foreign Secret has gone (Secrets that are
/// not ours are not watched, so nothing else would tell).
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Delay before looking again at a key whose cached copy turned out stale.
const STALE_RETRY: Duration = Duration::from_millis(200);
/// When to try again to restart workloads after a failure that may go away by itself.
const ROLLOUT_RETRY: Duration = Duration::from_secs(30);
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
    failures: Mutex<HashMap<ObjectRef<ApiKey>, u32>>,
    /// Per ApiKey, the resourceVersion that the operator's last status write replaced: a cached
    /// copy still at that version is stale, and the watch is about to deliver the new one.
    superseded: Mutex<HashMap<ObjectRef<ApiKey>, String>>,
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
    fn report_failure(&self, subject: &str, error: &Error, retry_in: Duration) {
        if outage::is_outage(error) {
            self.outage.note_failure(subject, error);
        } else {
            warn!(apikey = subject, error = %error, ?retry_in, "reconcile failed");
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

/// Counts the complete lists of a watch, and asks for every key to be reconciled once more after
/// each one but the first (at start, every key is reconciled anyway).
fn note_relist<K>(
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
fn only_events<K>(
    result: &std::result::Result<watcher::Event<K>, watcher::Error>,
) -> future::Ready<bool> {
    future::ready(result.is_ok())
}

/// Watches retry after 0.5 s, doubling up to 5 s (kube-runtime's default grows to 30 s, so a
/// watch failing for a minute, such as while the CRD is missing, took about a minute more to
/// recover). One list or watch request per 5 s per watch is no load for an API server.
struct WatchBackoff {
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
struct WatchProbe {
    name: String,
    failing: std::sync::atomic::AtomicBool,
    health: Arc<Health>,
    outage: Arc<Outage>,
}

impl WatchProbe {
    fn new(name: String, health: Arc<Health>, outage: Arc<Outage>) -> Self {
        Self {
            name,
            failing: false.into(),
            health,
            outage,
        }
    }

    fn observe<K>(&self, result: &std::result::Result<watcher::Event<K>, watcher::Error>) {
        match result {
            Ok(_) => self.works(),
            Err(e) => self.fails(e),
        }
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    fn works(&self) {
        if self.failing.swap(false, Ordering::SeqCst) {
            self.health.watch_works(&self.name);
            info!(watch = %self.name, "watch works again");
        }
        self.outage.note_success();
    }

    fn fails(&self, e: &watcher::Error) {
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
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A watch that resumes after a failure delivers nothing until an object changes, so nothing
/// would tell that it works again: while a watch fails, list one object of what it watches every
/// [`PROBE_INTERVAL`]; once that succeeds, the watch's own retry (at most 5 s apart) does too.
async fn probe_failing_watches(
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

fn watch_error_is_outage(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => outage::kube_outage(e),
        watcher::Error::WatchError(s) => s.code >= 500 || s.code == 429,
        watcher::Error::NoResourceVersion => false,
    }
}

/// What a user needs to read about a failing watch; the missing CRD by its name.
fn describe_watch_error(watch: &str, e: &watcher::Error) -> String {
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
            ctx.outage.note_success();
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
/// An outage of the API server is logged once for all keys (see [`crate::operator::outage`]).
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
    ctx.report_failure(&ObjectRef::from_obj(&*key).to_string(), error, delay);
    Action::requeue(delay)
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// What became of a write the reconciler attempted.
enum Written {
    /// Written; the Secret as the API server returned it.
    Done(Box<Secret>),
    /// The Secret changed (or appeared) since it was judged: nothing was written; decide again.
    Stale,
    /// The ApiKey is gone or being deleted: nothing was written, nothing more to do.
    Gone,
    /// The namespace is being deleted: nothing can be written there any more.
    NamespaceTerminating,
    /// The API server refused the write for a reason that will not go away by itself.
    Rejected(String),
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
    let status_client_id = status_client_id(key, ctx);
    let policy = Policy::of(&key.spec, ctx.min_rotation_interval);
    // Kubernetes keeps times to the second; so do we, so that what we write compares equal to
    // what we read back and a healthy key needs no write.
    let now = now_to_the_second();

    // Decide from the caches first: a key with nothing to do costs no API call, and the Secret is
    // read only when the cache cannot be acted on (see decision::confirm_on_fresh_read).
    let cached = SecretState::of(key, ctx.secrets.get(&namespace, &key.secret_name()));
    let decide = |secret: &SecretState, active| {
        decision::decide(key, active, secret, status_client_id, &policy, now.0)
    };
    let mut plan = decide(&cached, active.clone());
    let mut fresh = None;
    if decision::confirm_on_fresh_read(key, &plan, &cached) {
        fresh = secrets.get_opt(&key.secret_name()).await?;
        let read = fresh
            .as_ref()
            .map(|s| ManagedSecret::read(s, &ctx.record_key));
        plan = decide(&SecretState::of(key, read), active);
    }

    // A record is sealed as it is only with the credentials the status published; anything else
    // an editor put there is repaired instead.
    let mut adoption = None;
    if let Plan::Adopt {
        replaces,
        generation,
    } = &plan
    {
        adoption = adoptable(key, ctx, fresh.as_ref()).await?;
        if adoption.is_none() {
            plan = Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: status_client_id.keep(),
                replaces: replaces.clone(),
                generation: *generation,
                previous: None,
            };
        }
    }

    let finishing = Finishing {
        now: &now,
        plan: &plan,
        policy: &policy,
    };
    let written = match &plan {
        Plan::Duplicate { active } => {
            return finish(key, ctx, &Outcome::Duplicate(active), None, &finishing).await;
        }
        Plan::Conflict => {
            return finish(
                key,
                ctx,
                &Outcome::Conflict,
                Some(CONFLICT_RECHECK),
                &finishing,
            )
            .await;
        }
        Plan::InSync(managed) => return serve(key, ctx, managed, &finishing).await,
        Plan::Issue {
            reason,
            client_id,
            replaces,
            generation,
            previous,
        } => {
            let new = New {
                reason: *reason,
                client_id: client_id.clone(),
                generation: *generation,
                previous: previous.clone(),
            };
            issue(key, ctx, &secrets, new, replaces.clone(), &now).await?
        }
        Plan::Adopt {
            replaces,
            generation,
        } => match adoption.take() {
            Some(adoption) => {
                adopt(
                    key,
                    ctx,
                    &secrets,
                    adoption,
                    replaces.clone(),
                    *generation,
                    &now,
                )
                .await?
            }
            None => Written::Stale,
        },
        Plan::Relabel { replaces } => relabel(key, ctx, &secrets, replaces.clone()).await?,
    };
    match written {
        Written::Done(secret) => {
            let managed = ManagedSecret::read(&secret, &ctx.record_key);
            serve(key, ctx, &managed, &finishing).await
        }
        Written::Stale => Ok((Action::requeue(STALE_RETRY), "stale")),
        Written::Gone => {
            debug!(apikey = %ObjectRef::from_obj(key), "the ApiKey is gone or being deleted; nothing written");
            Ok((Action::await_change(), "gone"))
        }
        Written::NamespaceTerminating => {
            debug!(apikey = %ObjectRef::from_obj(key), "the namespace is being deleted; nothing written");
            Ok((Action::await_change(), "namespace_terminating"))
        }
        Written::Rejected(why) => {
            let finished = finish(
                key,
                ctx,
                &Outcome::Rejected(&why),
                Some(BACKOFF_MAX),
                &finishing,
            )
            .await?;
            Ok((finished.0, "rejected"))
        }
    }
}

/// How far the client id `key`'s status publishes can be trusted: sealed for this very ApiKey
/// with the operator's current record key (see [`crate::core::record`]), else held by no other ApiKey
/// the operator sees nor by another key's Secret (a status from a release before seals, or under
/// a lost key; the scan costs O(keys), and runs only for keys not sealed yet).
fn status_client_id<'k>(key: &'k ApiKey, ctx: &Context) -> StatusClientId<'k> {
    let Some(status) = key.status.as_ref() else {
        return StatusClientId::Untrusted;
    };
    let (Some(client_id), Some(uid)) = (status.client_id.as_deref(), key.metadata.uid.as_deref())
    else {
        return StatusClientId::Untrusted;
    };
    let generation = status
        .secret_generation
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(0);
    if ctx
        .record_key
        .check_status(uid, client_id, generation, status.seal.as_deref())
        == SealCheck::Valid
    {
        return StatusClientId::Sealed {
            id: client_id,
            generation,
        };
    }
    let held_by_another_key = ctx.keys.state().iter().any(|other| {
        other.metadata.uid.as_deref() != Some(uid)
            && other.status.as_ref().and_then(|s| s.client_id.as_deref()) == Some(client_id)
    });
    if held_by_another_key || ctx.secrets.holds_client_id_of_another(client_id, uid) {
        StatusClientId::Untrusted
    } else {
        StatusClientId::Unique(client_id)
    }
}

/// What every way of finishing a reconcile shares.
struct Finishing<'a> {
    /// The time of this reconcile, to the second.
    now: &'a Time,
    /// What was decided.
    plan: &'a Plan,
    /// The key's rotation policy.
    policy: &'a Policy,
}

/// Finishes a key whose Secret holds `managed`, its own and sealed: Ready, or Expired; restarts
/// the workloads of `spec.rolloutRestart` that have not been restarted for this secret yet.
async fn serve(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let outcome = if finishing.policy.is_expired(finishing.now.0) {
        Outcome::Expired(managed)
    } else {
        Outcome::Ready(managed)
    };
    let (condition, recheck) = restart_workloads(key, ctx, managed, finishing.now).await?;
    finish_with(key, ctx, &outcome, recheck, condition, finishing).await
}

/// Restarts the workloads of `spec.rolloutRestart` that have not been restarted for the secret
/// `managed` holds (see [`crate::operator::rollout`]): the RolloutRestart condition to publish, and when to
/// look again if a workload is missing or may not be restarted.
async fn restart_workloads(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    now: &Time,
) -> Result<(Option<Condition>, Option<Duration>)> {
    if key.spec.rollout_restart.is_empty() {
        return Ok((None, None));
    }
    // A workload that cannot be reached now must not hold back the status (the new hash, the
    // grace period): the condition says so, and the workloads are looked at again soon; the
    // bookkeeping on each workload makes the retry restart nothing twice.
    let reports = match rollout::restart_targets(
        &ctx.client,
        key,
        managed.generation,
        managed.rotated_at.as_ref(),
    )
    .await
    {
        Ok(reports) => reports,
        Err(e) => {
            warn!(apikey = %ObjectRef::from_obj(key), error = %e, "rollout restarts failed; retrying");
            let condition = rollout_retrying(key, managed.generation, &e, now);
            return Ok((Some(condition), Some(ROLLOUT_RETRY)));
        }
    };
    for report in reports
        .iter()
        .filter(|r| r.outcome == rollout::TargetOutcome::Restarted)
    {
        let kind = format!("{:?}", report.target.kind);
        let workload = format!("{kind}/{}", report.target.name);
        ctx.metrics.rollout_restarted(&kind);
        publish(
            ctx,
            key,
            EventType::Normal,
            "RolloutRestarted",
            "RestartWorkload",
            &format!(
                "restarted {workload} for client secret generation {}",
                managed.generation
            ),
            Some(&format!(
                "restart-{}-{}-{}",
                managed.generation,
                kind.to_lowercase(),
                report.target.name
            )),
        )
        .await;
    }
    let condition = rollout::condition(key, &reports, managed.generation, now);
    Ok((condition, rollout::recheck_after(&reports)))
}

/// The RolloutRestart condition while the workloads cannot be reached: False, reason
/// `Retrying`, with the error (`lastTransitionTime` kept while it stays the same).
fn rollout_retrying(key: &ApiKey, generation: u64, error: &Error, now: &Time) -> Condition {
    let message = format!(
        "could not restart the workloads for client secret generation {generation} yet ({error}); retrying every {} s",
        ROLLOUT_RETRY.as_secs()
    );
    status::condition(
        key,
        crate::core::crd::ROLLOUT_RESTART_CONDITION,
        false,
        "Retrying",
        message,
        now,
    )
}

/// [`finish_with`] for outcomes without a Secret of the key's to serve: the RolloutRestart
/// condition stays as it was.
async fn finish(
    key: &ApiKey,
    ctx: &Context,
    outcome: &Outcome<'_>,
    recheck: Option<Duration>,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let kept = key
        .condition(crate::core::crd::ROLLOUT_RESTART_CONDITION)
        .filter(|_| !key.spec.rollout_restart.is_empty())
        .cloned();
    finish_with(key, ctx, outcome, recheck, kept, finishing).await
}

/// Brings the status in line with `outcome` (and the RolloutRestart `condition`, if any): first
/// the event of a rotation the status has not shown yet (named after the rotation, so that it is
/// written once however often this runs, also after a crash between the Secret's write and the
/// status's), then the status itself, then a Warning event when the key stops being Ready for a
/// new reason, or its workloads cannot be restarted for a new reason, and an event when a grace
/// period ended. The key is looked at again after `recheck`, or when its next rotation, the end of
/// its grace period or its expiry comes, whichever is first.
async fn finish_with(
    key: &ApiKey,
    ctx: &Context,
    outcome: &Outcome<'_>,
    recheck: Option<Duration>,
    condition: Option<Condition>,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let Finishing { now, plan, policy } = *finishing;
    let mut desired = status::desired(key, outcome, now, &ctx.record_key, policy);
    desired.conditions.extend(condition);
    let wake = rotation::wake_after(
        now.0,
        [
            desired.next_rotation_at.as_ref().map(|Time(t)| *t),
            desired
                .previous_secret_expires_at
                .as_ref()
                .map(|Time(t)| *t),
            policy.expires_at,
        ]
        .into_iter()
        .flatten(),
    );
    let action = match [recheck, wake].into_iter().flatten().min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    };
    if key.status.as_ref() == Some(&desired) {
        log_reconciled(key, plan);
        return Ok((action, plan.name()));
    }
    // named after the rotation: announcing it again (an expired key shows no hash to tell
    // that it was) is a no-op
    if let Outcome::Ready(managed) | Outcome::Expired(managed) = outcome {
        announce_rotation(key, ctx, managed, &desired).await;
    }
    match patch_status(key, ctx, &desired).await? {
        StatusWrite::Done => {}
        StatusWrite::Stale => {
            // Our copy of the ApiKey was stale; look again once the watch has delivered the news.
            debug!(apikey = %ObjectRef::from_obj(key), "status changed meanwhile; retrying");
            return Ok((Action::requeue(STALE_RETRY), "stale"));
        }
        StatusWrite::Gone => return Ok((Action::await_change(), "gone")),
    }
    ctx.wrote_status(key, key.resource_version());
    let current = key.status.clone().unwrap_or_default();
    for condition in desired.conditions.iter().filter(|c| c.status == "False") {
        let before = current
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_);
        if before.map(|c| c.reason.as_str()) == Some(condition.reason.as_str()) {
            continue;
        }
        warn!(apikey = %ObjectRef::from_obj(key), condition = %condition.type_, reason = %condition.reason, "{}", condition.message);
        publish(
            ctx,
            key,
            EventType::Warning,
            &condition.reason,
            "WaitForChange",
            &condition.message,
            None,
        )
        .await;
    }
    if let Some(ended) = rotation::grace_ended(&current, &desired) {
        ctx.metrics.grace_period_ended(ended.how);
        info!(apikey = %ObjectRef::from_obj(key), generation = ended.generation, how = ended.how, "{}", ended.message);
        publish(
            ctx,
            key,
            EventType::Normal,
            "GracePeriodEnded",
            "RevokePreviousSecret",
            &ended.message,
            Some(&format!("grace-{}", ended.generation)),
        )
        .await;
    }
    log_reconciled(key, plan);
    Ok((action, plan.name()))
}

fn log_reconciled(key: &ApiKey, plan: &Plan) {
    debug!(
        apikey = %ObjectRef::from_obj(key),
        resource_version = key.resource_version().unwrap_or_default(),
        outcome = plan.name(),
        "reconciled"
    );
}

/// Publishes the event of the rotation `managed` records, if the status does not show it yet, with
/// the end of the previous secret's grace period as `desired` publishes it. Records that are not
/// rotations (re-sealed ones) have none.
async fn announce_rotation(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    desired: &ApiKeyStatus,
) {
    let shown = key.status.as_ref().and_then(|s| s.secret_hash.as_ref());
    if shown.is_some() && shown == managed.hash.as_ref() {
        return;
    }
    let (Some(reason), Some(rotation)) = (
        managed.reason.as_deref().and_then(IssueReason::from_label),
        managed.rotation_id.as_deref(),
    ) else {
        return;
    };
    publish(
        ctx,
        key,
        EventType::Normal,
        reason.event_reason(),
        reason.event_action(),
        &rotation::describe_rotation(reason, &managed.name, desired),
        Some(rotation),
    )
    .await;
}

fn now_to_the_second() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// What a new client secret is written for.
struct New {
    reason: IssueReason,
    /// The client id to keep, or `None` for a new one.
    client_id: Option<String>,
    generation: u64,
    /// The previous secret to keep for a grace period.
    previous: Option<rotation::Previous>,
}

/// Generates credentials for `new.reason`, hashes the secret off the runtime, and writes the
/// Secret in one request (see [`write_secret`]).
async fn issue(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    new: New,
    replaces: Option<String>,
    now: &Time,
) -> Result<Written> {
    let reason = new.reason;
    let client_id = match new.client_id {
        Some(id) => id,
        None => credentials::generate_client_id()?,
    };
    let client_secret = credentials::generate_client_secret()?;
    let hash = ctx.hasher.hash(client_secret.clone()).await?;
    let creds = Credentials {
        client_id,
        client_secret,
        hash,
        handled_request: key.regenerate_request().map(secret::handled_form),
        rotated_at: now.clone(),
        reason: reason.metric_label(),
        generation: new.generation,
        previous: new.previous,
    };
    let written = write_secret(key, ctx, secrets, &creds, replaces).await?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), client_id = %creds.client_id, generation = creds.generation, reason = reason.event_reason(), "{}", reason.describe(&key.secret_name()));
        ctx.metrics.issued(reason.metric_label());
        if let Some(trigger) = reason.trigger() {
            ctx.metrics.rotated(trigger);
        }
    }
    Ok(written)
}

/// An unsealed record and its client secret, if it may be sealed as it is: its client id is the
/// one the status publishes, and it verifies against the hash the status publishes, which whoever
/// can edit the Secret cannot change. So a record is only ever sealed with the credentials the
/// operator (or the release before it) published, never with ones an editor chose.
async fn adoptable(
    key: &ApiKey,
    ctx: &Context,
    fresh: Option<&Secret>,
) -> Result<Option<Adoption>> {
    let (Some(secret), Some(status)) = (fresh, key.status.as_ref()) else {
        return Ok(None);
    };
    let Some(plaintext) = secret::client_secret_of(secret) else {
        return Ok(None);
    };
    let found = ManagedSecret::read(secret, &ctx.record_key);
    let (Some(hash), Some(published_id)) = (status.secret_hash.clone(), status.client_id.as_ref())
    else {
        return Ok(None);
    };
    if found.client_id.as_ref() != Some(published_id) {
        return Ok(None);
    }
    let verified = ctx.hasher.verify(plaintext.clone(), hash).await?;
    Ok(verified.then_some(Adoption {
        found,
        client_secret: plaintext,
    }))
}

/// A record that may be sealed as it is: what was read of it, and its client secret.
struct Adoption {
    found: ManagedSecret,
    client_secret: ClientSecret,
}

/// Seals a record the operator cannot judge (a release before seals, or a lost record key) whose
/// credentials are the ones the status published (see [`adoptable`]), keeping them: the client
/// secret is hashed again, so that the hash published is one the operator computed, and nothing
/// else changes for the key's clients: the secret generation the status published is kept (so
/// tokens issued under it stay active and no workload is restarted; `generation` when it
/// published none), and so is a previous secret in its grace period, if the status published
/// exactly the one the record holds.
async fn adopt(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    Adoption {
        found,
        client_secret,
    }: Adoption,
    replaces: Option<String>,
    generation: u64,
    now: &Time,
) -> Result<Written> {
    let Some(client_id) = found.client_id.clone() else {
        return Ok(Written::Stale);
    };
    let status = key.status.clone().unwrap_or_default();
    let generation = status
        .secret_generation
        .and_then(|g| u64::try_from(g).ok())
        .filter(|g| *g >= 1)
        .unwrap_or(generation);
    let previous = found.previous.clone().filter(|p| {
        status.previous_secret_hash.as_deref() == Some(p.hash.as_str())
            && status.previous_secret_generation == i64::try_from(p.generation).ok()
            && status.previous_secret_expires_at.as_ref().map(|Time(t)| *t) == Some(p.until)
    });
    let hash = ctx.hasher.hash(client_secret.clone()).await?;
    let creds = Credentials {
        client_id,
        client_secret,
        hash,
        handled_request: found.handled_request.clone(),
        rotated_at: found.rotated_at.clone().unwrap_or_else(|| now.clone()),
        reason: ADOPTED,
        generation,
        previous,
    };
    let written = write_secret(key, ctx, secrets, &creds, replaces).await?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), client_id = %creds.client_id, key_id = ctx.record_key.id(), "sealed the record of Secret {} without a new secret", key.secret_name());
        ctx.metrics.issued(ADOPTED);
    }
    Ok(written)
}

/// Reason recorded for a record sealed without rotation.
const ADOPTED: &str = "adopted";

/// Writes the Secret holding `creds` for `key`: created when missing, replaced under a
/// resourceVersion precondition otherwise, and only while the ApiKey still exists.
async fn write_secret(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    creds: &Credentials,
    replaces: Option<String>,
) -> Result<Written> {
    if !still_live(key, ctx).await? {
        return Ok(Written::Gone);
    }
    let secret = secret::build(key, creds, replaces.clone(), &ctx.record_key)?;
    let result = match replaces {
        // create, never apply: if a Secret of that name appeared meanwhile, the API server
        // refuses and the next reconcile sees it as foreign.
        None => {
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            secrets.create(&pp, &secret).await
        }
        // the precondition makes the write fail if the Secret changed since it was judged
        Some(_) => {
            secrets
                .patch(
                    &key.secret_name(),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
        }
    };
    judge_write(key, result)
}

/// Puts the operator's managed-by label back on a Secret that is the key's own and sealed, under
/// a resourceVersion precondition; nothing else changes.
async fn relabel(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    replaces: Option<String>,
) -> Result<Written> {
    if !still_live(key, ctx).await? {
        return Ok(Written::Gone);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": replaces,
            "labels": { MANAGED_BY_LABEL: MANAGER },
        }
    });
    let result = secrets
        .patch(
            &key.secret_name(),
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await;
    let written = judge_write(key, result)?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), "Secret {} had lost the label {MANAGED_BY_LABEL}; put it back (no new secret)", key.secret_name());
    }
    Ok(written)
}

/// Sorts a write's result into what the reconciler does next.
fn judge_write(key: &ApiKey, result: kube::Result<Secret>) -> Result<Written> {
    match result {
        Ok(secret) => Ok(Written::Done(Box::new(secret))),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
            debug!(apikey = %ObjectRef::from_obj(key), "Secret changed meanwhile; retrying");
            Ok(Written::Stale)
        }
        Err(kube::Error::Api(s)) if is_namespace_terminating(&s) => {
            Ok(Written::NamespaceTerminating)
        }
        // Invalid, BadRequest, Forbidden: the same write would be refused again.
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
            Ok(Written::Rejected(s.message.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the API server refused a create because the namespace is being deleted
/// (`NamespaceTerminating`, from the NamespaceLifecycle admission plugin).
fn is_namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || status.message.contains("because it is being terminated"))
}

/// Whether `key` still exists as this very object (same UID) and is not being deleted, read from
/// the API server right before a Secret is written: the cache may still hold a key that a user
/// just deleted, and no Secret is ever written for a key that is gone.
async fn still_live(key: &ApiKey, ctx: &Context) -> Result<bool> {
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = api.get_metadata_opt(&key.name_any()).await?;
    Ok(current.is_some_and(|k| {
        k.metadata.uid == key.metadata.uid && k.metadata.deletion_timestamp.is_none()
    }))
}

/// What became of a status write.
enum StatusWrite {
    Done,
    /// The ApiKey changed since it was read.
    Stale,
    /// The ApiKey is gone.
    Gone,
}

/// Applies `status` under a resourceVersion precondition (the version it was decided on), so that
/// a decision taken on a stale copy is never written.
async fn patch_status(key: &ApiKey, ctx: &Context, status: &ApiKeyStatus) -> Result<StatusWrite> {
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
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
        Ok(_) => Ok(StatusWrite::Done),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(StatusWrite::Stale),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(StatusWrite::Gone),
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
    id: Option<&str>,
) {
    if let Err(e) = ctx
        .events
        .publish(key, type_, reason, action, note, id)
        .await
    {
        warn!(apikey = %ObjectRef::from_obj(key), error = %e, "could not record event");
    }
}

#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_objects_keep_only_what_the_operator_reads() {
        let mut key = crate::core::test_support::key("web", "alice", 1);
        key.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        key.metadata.annotations = Some(
            [
                (
                    crate::core::crd::REGENERATE_ANNOTATION.to_string(),
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

        let mut other = crate::core::test_support::key("db", "bob", 2);
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
