//! The operator's phases, in a namespace it alone watches: create, regenerate, idle, memory,
//! authenticate (the token server, see [`crate::authenticate`]) and delete of N ApiKeys. Every
//! operator phase ends when a watch shows the work done, never by polling.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use apikey_operator::core::crd::ApiKey;
use apikey_operator::core::secret::{HANDLED_ANNOTATION, HASH_ANNOTATION, MANAGED_SELECTOR};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};

use crate::authenticate::{self, Authenticate};
use crate::cluster::{self, BENCH_SELECTOR, Snapshot, Writes};
use crate::cpu::{Meter, PhaseCpu};
use crate::operator::{Process, Rss};
use crate::track::Tracker;
use crate::{Args, Result};

/// What the operator achieved.
#[derive(Clone, Debug)]
pub struct Measured {
    /// From the first apply until every ApiKey is Ready=True.
    pub create: Duration,
    /// From the label-selected list until every Secret answers the new regenerate value.
    pub regenerate: Duration,
    /// From the DeleteCollection until every Secret is gone.
    pub delete: Duration,
    /// CPU used during create, regenerate and delete.
    pub cpu: [PhaseCpu; 3],
    /// The idle phase.
    pub idle: Idle,
    /// Resident memory with N keys live, right before the authenticate phase.
    pub rss: Rss,
    /// The token server's phase, with the keys of the create phase, before the delete phase.
    pub authenticate: Authenticate,
    /// Where the operator logged.
    pub log: String,
}

/// What the operator did while it had nothing to do.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Wall time of the phase.
    pub wall: Duration,
    /// Writes the API server stored in the namespace meanwhile.
    pub writes: Writes,
    /// CPU time the operator used meanwhile.
    pub cpu: Duration,
}

/// Runs the operator on `namespace` and times its phases there; the authenticate phase runs the
/// token server with its signing keys in `token_namespace`. The operator is stopped at the end
/// (and killed on error).
pub async fn run(
    client: &Client,
    args: &Args,
    bin: &Path,
    namespace: &str,
    token_namespace: &str,
) -> Result<Measured> {
    let mut operator = Process::operator(bin, namespace)?;
    operator.wait_ready(args.timeout()).await?;
    eprintln!("operator ready");
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);

    let meter = Meter::start(operator.pid())?;
    let create = create(&keys, args).await?;
    let create_cpu = meter.stop()?;
    eprintln!("create: {:.2} s", create.as_secs_f64());
    let meter = Meter::start(operator.pid())?;
    let regenerate = regenerate(&keys, &secrets, args).await?;
    let regenerate_cpu = meter.stop()?;
    eprintln!("regenerate: {:.2} s", regenerate.as_secs_f64());

    settle(&keys, &secrets, args).await?;
    let idle = idle(client, namespace, &operator, args).await?;
    eprintln!(
        "idle: {} writes, {:.3} CPU s",
        idle.writes.total(),
        idle.cpu.as_secs_f64()
    );
    let rss = operator.rss()?;

    let authenticate = authenticate::run(client, args, bin, namespace, token_namespace).await?;

    let meter = Meter::start(operator.pid())?;
    let delete = delete_and_wait(&keys, &secrets, args).await?;
    let delete_cpu = meter.stop()?;
    eprintln!("delete: {:.2} s", delete.as_secs_f64());

    operator.save_metrics();
    let log = operator.log.display().to_string();
    operator.stop().await?;
    Ok(Measured {
        create,
        regenerate,
        delete,
        cpu: [create_cpu, regenerate_cpu, delete_cpu],
        idle,
        rss,
        authenticate,
        log,
    })
}

/// Whether the key reports Ready=True.
fn is_ready(key: &ApiKey) -> bool {
    key.ready_condition().is_some_and(|c| c.status == "True")
}

/// Applies N ApiKeys at concurrency C; done when the watch sees all of them Ready=True.
async fn create(keys: &Api<ApiKey>, args: &Args) -> Result<Duration> {
    let mut ready = Tracker::start(keys.clone(), BENCH_SELECTOR, "ApiKeys", is_ready);
    ready.synced(args.timeout()).await?;
    let start = Instant::now();
    cluster::for_each_concurrent(args.n(), args.c(), |i| cluster::apply_key(keys, i)).await?;
    let n = args.n();
    let done = ready
        .until("every ApiKey Ready=True", start + args.timeout(), |p| {
            p.matching >= n
        })
        .await?;
    Ok(done.at.saturating_duration_since(start))
}

/// Sets a new regenerate annotation on every key as `kubectl annotate -l bench=1 --overwrite`
/// does (list by label, then a merge patch each, at concurrency C); done when the watch sees every
/// Secret answering the new value.
async fn regenerate(keys: &Api<ApiKey>, secrets: &Api<Secret>, args: &Args) -> Result<Duration> {
    let value = cluster::fresh_regenerate_value();
    let wanted = value.clone();
    let mut answered = Tracker::start(
        secrets.clone(),
        MANAGED_SELECTOR,
        "Secrets",
        move |s: &Secret| s.annotations().get(HANDLED_ANNOTATION) == Some(&wanted),
    );
    answered.synced(args.timeout()).await?;
    let start = Instant::now();
    annotate_all(keys, &value, args.c()).await?;
    let n = args.n();
    let done = answered
        .until(
            "every Secret to answer the new regenerate value",
            start + args.timeout(),
            |p| p.matching >= n,
        )
        .await?;
    Ok(done.at.saturating_duration_since(start))
}

/// Lists the benchmark's ApiKeys by label and merge-patches the regenerate annotation on each at
/// concurrency `c`; returns them as stored after the patch.
pub async fn annotate_all(keys: &Api<ApiKey>, value: &str, c: usize) -> Result<Vec<ApiKey>> {
    let names = cluster::list_bench_keys(keys).await?;
    let patch = cluster::regenerate_patch(value);
    cluster::for_each_concurrent(names.len(), c, |i| {
        let (name, patch) = (&names[i], &patch);
        async move {
            keys.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| format!("annotating ApiKey {name}: {e}").into())
        }
    })
    .await
}

/// Waits until the operator has nothing left to do: every key Ready=True with the hash of its
/// Secret in its status. Not timed; it only makes sure the idle phase starts idle.
async fn settle(keys: &Api<ApiKey>, secrets: &Api<Secret>, args: &Args) -> Result<()> {
    let deadline = Instant::now() + args.timeout();
    loop {
        let all_keys = keys
            .list(&ListParams::default().labels(BENCH_SELECTOR))
            .await?;
        let hashes: HashMap<String, String> = secrets
            .list_metadata(&ListParams::default().labels(MANAGED_SELECTOR))
            .await?
            .items
            .iter()
            .filter_map(|s| Some((s.name_any(), s.annotations().get(HASH_ANNOTATION)?.clone())))
            .collect();
        let behind = all_keys
            .items
            .iter()
            .filter(|k| {
                let published = k.status.as_ref().and_then(|s| s.secret_hash.as_ref());
                !is_ready(k) || published.is_none() || published != hashes.get(&k.secret_name())
            })
            .count();
        if behind == 0 && all_keys.items.len() == args.n() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{behind} of {} ApiKeys never showed their Secret's hash in their status",
                all_keys.items.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// S seconds with nothing to do: the writes the API server stored in the namespace (any change of
/// an ApiKey, Secret or Event) and the operator's CPU time.
async fn idle(client: &Client, namespace: &str, operator: &Process, args: &Args) -> Result<Idle> {
    let before = Snapshot::take(client, namespace).await?;
    let cpu_before = operator.cpu_time()?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let cpu_after = operator.cpu_time()?;
    let wall = start.elapsed();
    let after = Snapshot::take(client, namespace).await?;
    Ok(Idle {
        wall,
        writes: before.writes_until(&after),
        cpu: cpu_after.saturating_sub(cpu_before),
    })
}

/// DeleteCollection of the benchmark's ApiKeys, timed until the watch of the managed Secrets
/// shows none left (garbage collection of the owned Secrets).
pub async fn delete_and_wait(
    keys: &Api<ApiKey>,
    secrets: &Api<Secret>,
    args: &Args,
) -> Result<Duration> {
    let mut remaining = Tracker::start(secrets.clone(), MANAGED_SELECTOR, "Secrets", |_| true);
    let listed = remaining.synced(args.timeout()).await?;
    if listed.total != args.n() {
        eprintln!(
            "warning: {} managed Secrets before the delete, expected {}",
            listed.total,
            args.n()
        );
    }
    let start = Instant::now();
    cluster::delete_bench_keys(keys).await?;
    let done = remaining
        .until("every Secret to be gone", start + args.timeout(), |p| {
            p.total == 0
        })
        .await?;
    Ok(done.at.saturating_duration_since(start))
}
