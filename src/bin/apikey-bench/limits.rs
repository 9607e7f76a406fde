//! The limits: what a plain client achieves on the same control plane, in namespaces no operator
//! watches, doing the API writes the operator's work requires for N keys at the same concurrency:
//! without hashing (the limit for create and delete), the time N argon2id hashes take on
//! all cores alone (with the writes, the limit for regenerate), and the writes with each
//! key's hash computed on the same cores as the control plane, which is all the work of a phase
//! without the operator's own machinery (watches, caches, decisions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apikey_operator::core::crd::{ApiKey, ApiKeyStatus};
use apikey_operator::core::credentials::{self, ClientSecret};
use apikey_operator::core::hashing::{HashParams, Hasher};
use apikey_operator::core::record::RecordKey;
use apikey_operator::core::secret::{self, Credentials, ManagedSecret};
use apikey_operator::core::status::{self, Outcome};
use apikey_operator::operator::events::{EventType, Events};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::cluster::{self, FIELD_MANAGER};
use crate::cpu::{Meter, PhaseCpu};
use crate::phases;
use crate::{Args, Result};

/// The limits of the phases.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per key: apply the ApiKey, create its Secret, record an Event, apply its status.
    pub create_writes: Duration,
    /// List by label, then per key: annotate the ApiKey, apply its Secret, record an Event, apply
    /// its status.
    pub regenerate_writes: Duration,
    /// N argon2id hashes with the operator's default parameters on all cores.
    pub hashing: Duration,
    /// Threads the hashes ran on.
    pub hash_threads: usize,
    /// The create writes with each key's real hash computed before its Secret is written, on the
    /// same cores as the control plane: all the work of the phase without the operator.
    pub create_with_hashing: Duration,
    /// The regenerate writes with each key's real hash, likewise.
    pub regenerate_with_hashing: Duration,
    /// DeleteCollection of the ApiKeys until garbage collection has removed every Secret.
    pub delete: Duration,
    /// CPU used during create and regenerate with hashing, and delete (the worker is this
    /// process, the plain client).
    pub cpu: [PhaseCpu; 3],
}

impl Limits {
    /// The regenerate limit as the issue defines it: the larger of its API writes and its
    /// hashing, as if they could run on separate cores.
    pub fn regenerate_max(&self) -> Duration {
        self.regenerate_writes.max(self.hashing)
    }
}

/// What the plain client does for each key.
struct Work<'a> {
    keys: Api<ApiKey>,
    secrets: Api<Secret>,
    events: Events,
    /// Hashes each key's real secret; `None`: writes a pre-computed hash of the right size.
    hasher: Option<&'a Hasher>,
    /// The pre-computed hash.
    hash: &'a str,
    /// Seals the records, as the operator's key does.
    record_key: &'a RecordKey,
}

impl Work<'_> {
    /// Credentials of the real shape answering `handled`, hashed for real when there is a hasher.
    async fn credentials(&self, handled: Option<&str>) -> Result<Credentials> {
        let client_secret = credentials::generate_client_secret()?;
        let hash = match self.hasher {
            Some(hasher) => hasher.hash(client_secret.clone()).await?,
            None => self.hash.to_owned(),
        };
        Ok(Credentials {
            client_id: credentials::generate_client_id()?,
            client_secret,
            hash,
            handled_request: handled.map(Into::into),
            rotated_at: now(),
            reason: "created",
            generation: 1,
            previous: None,
        })
    }

    /// What the operator reads right before each Secret write: that the ApiKey still exists.
    async fn confirm_live(&self, key: &ApiKey) -> Result<()> {
        self.keys
            .get_metadata(&key.name_any())
            .await
            .map(|_| ())
            .map_err(|e| format!("reading ApiKey {}: {e}", key.name_any()).into())
    }

    /// The Event the operator records for each key it issues.
    async fn record(&self, key: &ApiKey, reason: &str) -> Result<()> {
        self.events
            .publish(key, EventType::Normal, reason, reason, "benchmark", None)
            .await
            .map_err(|e| format!("recording an Event for {}: {e}", key.name_any()).into())
    }
}

/// Times the plain client in `namespaces` (which no operator watches): the writes alone and the
/// delete in the first, the hashing alone, then the writes with hashing in the second.
pub async fn run(client: &Client, args: &Args, namespaces: [&str; 2]) -> Result<Limits> {
    let me = std::process::id();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let hasher = Hasher::new(HashParams::default(), threads)?;
    // One real argon2id PHC string, so the credentials written without hashing have the real size.
    let hash = hasher.hash(credentials::generate_client_secret()?).await?;
    let events = Events::new(client.clone(), FIELD_MANAGER, FIELD_MANAGER);
    let record_key = RecordKey::generate()?;
    let plain = Work {
        keys: Api::namespaced(client.clone(), namespaces[0]),
        secrets: Api::namespaced(client.clone(), namespaces[0]),
        events: events.clone(),
        hasher: None,
        hash: &hash,
        record_key: &record_key,
    };
    let (create_writes, versions) = create(&plain, args).await?;
    eprintln!("limit create writes: {:.2} s", create_writes.as_secs_f64());
    let regenerate_writes = regenerate(&plain, &versions, args).await?;
    eprintln!(
        "limit regenerate writes: {:.2} s",
        regenerate_writes.as_secs_f64()
    );
    let meter = Meter::start(me)?;
    let delete = phases::delete_and_wait(&plain.keys, &plain.secrets, args).await?;
    let delete_cpu = meter.stop()?;
    eprintln!("limit delete: {:.2} s", delete.as_secs_f64());

    let hashing = hashing(&hasher, args.n(), threads).await?;
    eprintln!(
        "limit hashing: {} argon2id hashes on {threads} threads: {:.2} s",
        args.n(),
        hashing.as_secs_f64()
    );

    let hashed = Work {
        keys: Api::namespaced(client.clone(), namespaces[1]),
        secrets: Api::namespaced(client.clone(), namespaces[1]),
        events,
        hasher: Some(&hasher),
        hash: &hash,
        record_key: &record_key,
    };
    let meter = Meter::start(me)?;
    let (create_with_hashing, versions) = create(&hashed, args).await?;
    let create_cpu = meter.stop()?;
    eprintln!(
        "limit create writes with hashing: {:.2} s",
        create_with_hashing.as_secs_f64()
    );
    let meter = Meter::start(me)?;
    let regenerate_with_hashing = regenerate(&hashed, &versions, args).await?;
    let regenerate_cpu = meter.stop()?;
    eprintln!(
        "limit regenerate writes with hashing: {:.2} s",
        regenerate_with_hashing.as_secs_f64()
    );

    for namespace in namespaces {
        let foreign = cluster::count_events_not_by(client, namespace, FIELD_MANAGER).await?;
        if foreign > 0 {
            eprintln!(
                "warning: {foreign} Events from another controller appeared in {namespace}, where \
                 no operator should run: another operator may watch all namespaces, and the limits \
                 may be off"
            );
        }
    }
    Ok(Limits {
        create_writes,
        regenerate_writes,
        hashing,
        hash_threads: threads,
        create_with_hashing,
        regenerate_with_hashing,
        delete,
        cpu: [create_cpu, regenerate_cpu, delete_cpu],
    })
}

/// Now, to the second, as the operator writes times.
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Per key at concurrency C: apply the ApiKey, create its Secret (owned by it), record an Event,
/// apply its status. Returns the time and each Secret's resourceVersion.
async fn create(work: &Work<'_>, args: &Args) -> Result<(Duration, HashMap<String, String>)> {
    let start = Instant::now();
    let written = cluster::for_each_concurrent(args.n(), args.c(), |i| async move {
        let key = cluster::apply_key(&work.keys, i).await?;
        let secret = secret::build(&key, &work.credentials(None).await?, None, work.record_key)?;
        work.confirm_live(&key).await?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let created = work
            .secrets
            .create(&pp, &secret)
            .await
            .map_err(|e| format!("creating Secret {}: {e}", key.name_any()))?;
        work.record(&key, "Created").await?;
        let status = status::desired(
            &key,
            &Outcome::Ready(&ManagedSecret::read(&created, work.record_key)),
            &now(),
            work.record_key,
            &Default::default(),
        );
        apply_status(&work.keys, &key, &status).await?;
        Ok((
            created.name_any(),
            created.resource_version().unwrap_or_default(),
        ))
    })
    .await?;
    Ok((start.elapsed(), written.into_iter().collect()))
}

/// List the ApiKeys by label, then per key at concurrency C: merge-patch the regenerate
/// annotation, apply a new Secret under a resourceVersion precondition, record an Event, apply the
/// status.
async fn regenerate(
    work: &Work<'_>,
    versions: &HashMap<String, String>,
    args: &Args,
) -> Result<Duration> {
    let value = cluster::fresh_regenerate_value();
    let start = Instant::now();
    let names = cluster::list_bench_keys(&work.keys).await?;
    let patch = cluster::regenerate_patch(&value);
    cluster::for_each_concurrent(names.len(), args.c(), |i| {
        let (name, patch, value) = (&names[i], &patch, &value);
        async move {
            let key = work
                .keys
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| format!("annotating ApiKey {name}: {e}"))?;
            let creds = work.credentials(Some(value)).await?;
            let secret = secret::build(
                &key,
                &creds,
                versions.get(&key.secret_name()).cloned(),
                work.record_key,
            )?;
            work.confirm_live(&key).await?;
            let written = work
                .secrets
                .patch(
                    &key.secret_name(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(|e| format!("applying Secret {}: {e}", key.secret_name()))?;
            work.record(&key, "Regenerated").await?;
            let status = status::desired(
                &key,
                &Outcome::Ready(&ManagedSecret::read(&written, work.record_key)),
                &now(),
                work.record_key,
                &Default::default(),
            );
            apply_status(&work.keys, &key, &status).await
        }
    })
    .await?;
    Ok(start.elapsed())
}

/// Server-side applies `status` on the status subresource under the key's resourceVersion, as the
/// operator does.
async fn apply_status(keys: &Api<ApiKey>, key: &ApiKey, status: &ApiKeyStatus) -> Result<()> {
    let patch = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": { "resourceVersion": key.resource_version() },
        "status": status,
    });
    keys.patch_status(
        &key.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| format!("applying the status of ApiKey {}: {e}", key.name_any()))?;
    Ok(())
}

/// Time of `n` argon2id hashes with the operator's default parameters, through the operator's own
/// [`Hasher`] with one worker per core.
async fn hashing(hasher: &Hasher, n: usize, threads: usize) -> Result<Duration> {
    let secrets: Vec<ClientSecret> = (0..n)
        .map(|_| credentials::generate_client_secret())
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    stream::iter(secrets)
        .map(|s| hasher.hash(s))
        .buffer_unordered(threads * 2)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(start.elapsed())
}
