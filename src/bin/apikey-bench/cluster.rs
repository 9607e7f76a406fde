//! Cluster chores of the benchmark: the CRD, namespaces, the ApiKey manifest, bulk writes at a
//! given concurrency, and snapshots of what is stored in a namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use apikey_operator::core::crd::ApiKey;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt as _, Resource as _, ResourceExt as _};
use rand::TryRng as _;
use serde_json::{Value, json};

use crate::Result;

/// Field manager of every write the benchmark makes.
pub const FIELD_MANAGER: &str = "apikey-bench";
/// Label key put on every benchmark ApiKey.
pub const BENCH_LABEL: &str = "bench";
/// Label selector of the benchmark's ApiKeys.
pub const BENCH_SELECTOR: &str = "bench=1";

/// Server-side applies `ApiKey::crd()` and waits until it is Established.
pub async fn install_crd(client: &Client, timeout: Duration) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ApiKey::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| format!("cannot apply CRD {name}: {e}"))?;
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(timeout, established)
        .await
        .map_err(|_| format!("CRD {name} not Established within {timeout:?}"))?
        .map_err(|e| format!("watching CRD {name}: {e}"))?;
    Ok(())
}

/// Six random hex digits from the operating system, for namespace names.
pub fn random_suffix() -> Result<String> {
    let salt = rand::rngs::SysRng
        .try_next_u32()
        .map_err(|e| format!("the operating system's random number generator failed: {e}"))?;
    Ok(format!("{:06x}", salt & 0xff_ffff))
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/created-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    namespaces
        .create(&pp, &ns)
        .await
        .map_err(|e| format!("cannot create namespace {name}: {e}"))?;
    eprintln!("created namespace {name}");
    Ok(())
}

/// Deletes namespace `name` without waiting for its contents to go.
pub async fn delete_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Name of the `i`th ApiKey.
pub fn key_name(i: usize) -> String {
    format!("key-{i:05}")
}

/// The manifest of the `i`th ApiKey: one user per key (so no DuplicateUser), label `bench=1`.
pub fn key_manifest(i: usize) -> Value {
    json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": {
            "name": key_name(i),
            "labels": { BENCH_LABEL: "1" },
        },
        "spec": { "user": format!("user-{i:05}") },
    })
}

/// Server-side applies the `i`th ApiKey and returns it as stored.
pub async fn apply_key(api: &Api<ApiKey>, i: usize) -> Result<ApiKey> {
    let name = key_name(i);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&key_manifest(i)),
    )
    .await
    .map_err(|e| format!("applying ApiKey {name}: {e}").into())
}

/// Runs `op(i)` for every `i` in `0..n` with at most `concurrency` in flight; stops at the first
/// error.
pub async fn for_each_concurrent<F, Fut, T>(n: usize, concurrency: usize, op: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    stream::iter((0..n).map(op))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// The names of the benchmark's ApiKeys, listed by label selector as kubectl does for `-l`.
pub async fn list_bench_keys(api: &Api<ApiKey>) -> Result<Vec<String>> {
    let list = api
        .list_metadata(&ListParams::default().labels(BENCH_SELECTOR))
        .await
        .map_err(|e| format!("listing ApiKeys -l {BENCH_SELECTOR}: {e}"))?;
    Ok(list.items.iter().map(|k| k.name_any()).collect())
}

/// A merge patch of the regenerate annotation, as `kubectl annotate --overwrite` sends it.
pub fn regenerate_patch(value: &str) -> Value {
    json!({ "metadata": { "annotations": {
        apikey_operator::core::crd::REGENERATE_ANNOTATION: value,
    } } })
}

/// A value for the regenerate annotation not used before.
pub fn fresh_regenerate_value() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench-{nanos}")
}

/// Deletes every benchmark ApiKey in one DeleteCollection call (background propagation, the
/// server's default, as `kubectl delete -l`).
pub async fn delete_bench_keys(api: &Api<ApiKey>) -> Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(BENCH_SELECTOR),
    )
    .await
    .map_err(|e| format!("DeleteCollection of ApiKeys -l {BENCH_SELECTOR}: {e}"))?;
    Ok(())
}

/// The resourceVersion of every ApiKey, Secret and Event stored in a namespace at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// ApiKey name -> resourceVersion.
    pub apikeys: BTreeMap<String, String>,
    /// Secret name -> resourceVersion.
    pub secrets: BTreeMap<String, String>,
    /// Event name -> resourceVersion.
    pub events: BTreeMap<String, String>,
}

/// Writes seen between two snapshots, per kind: objects created, changed or deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Writes {
    /// ApiKeys created, changed or deleted.
    pub apikeys: usize,
    /// Secrets created, changed or deleted.
    pub secrets: usize,
    /// Events created, changed (a series count) or deleted.
    pub events: usize,
}

impl Writes {
    /// All writes.
    pub fn total(&self) -> usize {
        self.apikeys + self.secrets + self.events
    }
}

impl Snapshot {
    /// Reads every ApiKey, Secret and Event in `namespace` (metadata only).
    pub async fn take(client: &Client, namespace: &str) -> Result<Self> {
        Ok(Self {
            apikeys: versions::<ApiKey>(client, namespace).await?,
            secrets: versions::<Secret>(client, namespace).await?,
            events: versions::<CoreEvent>(client, namespace).await?,
        })
    }

    /// The writes that turn `self` into `later`.
    pub fn writes_until(&self, later: &Snapshot) -> Writes {
        Writes {
            apikeys: changed(&self.apikeys, &later.apikeys),
            secrets: changed(&self.secrets, &later.secrets),
            events: changed(&self.events, &later.events),
        }
    }
}

async fn versions<K>(client: &Client, namespace: &str) -> Result<BTreeMap<String, String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| format!("listing {} in {namespace}: {e}", K::plural(&())))?;
    Ok(list
        .items
        .iter()
        .map(|o| (o.name_any(), o.resource_version().unwrap_or_default()))
        .collect())
}

/// Objects created, deleted or with another resourceVersion.
fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> usize {
    let changed_or_gone = before
        .iter()
        .filter(|(name, rv)| after.get(*name) != Some(*rv))
        .count();
    let created = after.keys().filter(|k| !before.contains_key(*k)).count();
    changed_or_gone + created
}

/// Number of Events in `namespace` reported by another controller than `reporter`.
pub async fn count_events_not_by(
    client: &Client,
    namespace: &str,
    reporter: &str,
) -> Result<usize> {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing events in {namespace}: {e}"))?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.reporting_component.as_deref() != Some(reporter))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn changed_counts_updates_creations_and_deletions() {
        let before = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let after = map(&[("a", "1"), ("b", "5"), ("d", "6")]);
        assert_eq!(changed(&before, &after), 3);
        assert_eq!(changed(&before, &before), 0);
    }
}
