//! The limits: what a plain client achieves on the same control plane, in a namespace no operator
//! watches, doing the API writes the operator's work requires for N keys at the same concurrency,
//! without hashing; and the time N argon2id hashes take on all cores.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apikey_operator::crd::{ApiKey, ApiKeyStatus};
use apikey_operator::credentials::{self, ClientSecret};
use apikey_operator::hashing::{HashParams, Hasher};
use apikey_operator::secret::{self, Credentials, ManagedSecret};
use apikey_operator::status::{self, Outcome};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::cluster::{self, FIELD_MANAGER};
use crate::phases;
use crate::{Args, Result};

/// The limits of the phases.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per key: apply the ApiKey, create its Secret, apply its status.
    pub create: Duration,
    /// List by label, then per key: annotate the ApiKey, apply its Secret, apply its status.
    pub regenerate_writes: Duration,
    /// N argon2id hashes with the operator's default parameters on all cores.
    pub hashing: Duration,
    /// Threads the hashes ran on.
    pub hash_threads: usize,
    /// DeleteCollection of the ApiKeys until garbage collection has removed every Secret.
    pub delete: Duration,
}

impl Limits {
    /// The regenerate limit: the larger of its API writes and its hashing.
    pub fn regenerate(&self) -> Duration {
        self.regenerate_writes.max(self.hashing)
    }
}

/// Times the plain client in `namespace` (which no operator watches), then the hashing.
pub async fn run(client: &Client, args: &Args, namespace: &str) -> Result<Limits> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // One real argon2id PHC string, so the fake credentials have the real size.
    let hash = Hasher::new(HashParams::default(), 1)?
        .hash(credentials::generate_client_secret()?)
        .await?;

    let (create, versions) = create(&keys, &secrets, &hash, args).await?;
    eprintln!("limit create: {:.2} s", create.as_secs_f64());
    let regenerate_writes = regenerate(&keys, &secrets, &hash, &versions, args).await?;
    eprintln!(
        "limit regenerate writes: {:.2} s",
        regenerate_writes.as_secs_f64()
    );
    let (hashing, hash_threads) = hashing(args.n()).await?;
    eprintln!(
        "limit hashing: {} argon2id hashes on {hash_threads} threads: {:.2} s",
        args.n(),
        hashing.as_secs_f64()
    );
    let delete = phases::delete_and_wait(&keys, &secrets, args).await?;
    eprintln!("limit delete: {:.2} s", delete.as_secs_f64());

    let events = cluster::count_events(client, namespace).await?;
    if events > 0 {
        eprintln!(
            "warning: {events} Events appeared in {namespace}, where no operator should run: \
             another operator may watch all namespaces, and the limits may be off"
        );
    }
    Ok(Limits {
        create,
        regenerate_writes,
        hashing,
        hash_threads,
        delete,
    })
}

/// Fake credentials of the real shape: fresh random id and secret, and `hash` (of another
/// secret: nothing checks it).
fn fake_credentials(hash: &str, handled: Option<&str>) -> Result<Credentials> {
    Ok(Credentials {
        client_id: credentials::generate_client_id()?,
        client_secret: credentials::generate_client_secret()?,
        hash: hash.into(),
        handled_request: handled.map(Into::into),
        rotated_at: now(),
    })
}

/// Now, to the second, as the operator writes times.
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Per key at concurrency C: apply the ApiKey, create its Secret (owned by it), apply its status.
/// Returns the time and each Secret's resourceVersion.
async fn create(
    keys: &Api<ApiKey>,
    secrets: &Api<Secret>,
    hash: &str,
    args: &Args,
) -> Result<(Duration, HashMap<String, String>)> {
    let start = Instant::now();
    let written = cluster::for_each_concurrent(args.n(), args.c(), |i| async move {
        let key = cluster::apply_key(keys, i).await?;
        let secret = secret::build(&key, &fake_credentials(hash, None)?, None)?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let created = secrets
            .create(&pp, &secret)
            .await
            .map_err(|e| format!("creating Secret {}: {e}", key.name_any()))?;
        let status = status::desired(
            &key,
            &Outcome::Ready(&ManagedSecret::read(&created)),
            &now(),
        );
        apply_status(keys, &key, &status).await?;
        Ok((
            created.name_any(),
            created.resource_version().unwrap_or_default(),
        ))
    })
    .await?;
    Ok((start.elapsed(), written.into_iter().collect()))
}

/// List the ApiKeys by label, then per key at concurrency C: merge-patch the regenerate
/// annotation, apply a new Secret under a resourceVersion precondition, apply the status.
async fn regenerate(
    keys: &Api<ApiKey>,
    secrets: &Api<Secret>,
    hash: &str,
    versions: &HashMap<String, String>,
    args: &Args,
) -> Result<Duration> {
    let value = cluster::fresh_regenerate_value();
    let start = Instant::now();
    let names = cluster::list_bench_keys(keys).await?;
    let patch = cluster::regenerate_patch(&value);
    cluster::for_each_concurrent(names.len(), args.c(), |i| {
        let (name, patch, value) = (&names[i], &patch, &value);
        async move {
            let key = keys
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| format!("annotating ApiKey {name}: {e}"))?;
            let creds = fake_credentials(hash, Some(value))?;
            let secret = secret::build(&key, &creds, versions.get(&key.secret_name()).cloned())?;
            let written = secrets
                .patch(
                    &key.secret_name(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(|e| format!("applying Secret {}: {e}", key.secret_name()))?;
            let status = status::desired(
                &key,
                &Outcome::Ready(&ManagedSecret::read(&written)),
                &now(),
            );
            apply_status(keys, &key, &status).await
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
/// [`Hasher`], on as many threads as there are cores.
async fn hashing(n: usize) -> Result<(Duration, usize)> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let hasher = Hasher::new(HashParams::default(), threads)?;
    let secrets: Vec<ClientSecret> = (0..n)
        .map(|_| credentials::generate_client_secret())
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    stream::iter(secrets)
        .map(|s| hasher.hash(s))
        .buffer_unordered(threads * 2)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok((start.elapsed(), threads))
}
