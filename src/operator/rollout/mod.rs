//! Rollout restarts of `spec.rolloutRestart`'s workloads after each new client secret, exactly
//! once per secret.
//!
//! A workload that reads the key's Secret as environment variables (or caches it at start) keeps
//! the old client secret until its pods are replaced. For each Deployment, StatefulSet or
//! DaemonSet (`apps/v1`) that an ApiKey names in its own namespace and whose pod template uses the
//! key's Secret, the operator does what `kubectl rollout restart` does, a change of a pod-template
//! annotation, once per new client secret.
//!
//! - **Only workloads that use the key's Secret.** A workload is restarted (or recorded) only if
//!   its pod template references Secret [`ApiKey::secret_name`] ([`uses_secret`]): a `secret`
//!   volume, a `projected` volume's `secret` source, or in a container or init container an
//!   `env[].valueFrom.secretKeyRef` or an `envFrom[].secretRef`. Any other workload named in the
//!   list is left alone, nothing is written to it, and the `RolloutRestart` condition names it
//!   (reason [`REASON_SECRET_NOT_USED`]). So the list can only choose among the workloads a new
//!   secret concerns anyway, not point the operator's rights at any workload of the namespace.
//! - **Bookkeeping on the workload.** What a key has done to a workload is written on the workload
//!   itself, in the same merge patch as the restart, under the precondition of the
//!   `resourceVersion` it was decided on: `metadata.annotations["restarted.apikey.dev/<key>"]` is
//!   [`annotation_value`] (`<generation>/<ApiKey UID>`), the secret generation the workload was
//!   restarted for (or seen at), and a restart sets `spec.template.metadata.annotations` under the
//!   same name to the same value. The restart and its record are one write, so nothing the
//!   operator keeps in memory, and no crash, can lose or repeat one: killed after the Secret write
//!   and before the restart, the operator finds the workload recorded at the previous generation
//!   and restarts it; killed after the restart, it finds it recorded at the current one and does
//!   nothing. A conflict (someone else changed the workload) reads it again and decides again.
//!   The key name part is [`annotation_name_part`]: the ApiKey's name, or a hashed form of names
//!   longer than 63 characters.
//! - **Exactly once per generation.** A workload recorded at the current generation of this very
//!   ApiKey (same UID) is left alone, and nothing is written when nothing is to be done. One
//!   recorded at any other generation of it is restarted: an older one, and also a later one, as
//!   after the operator's record key is lost and its keys are adopted again at generation 1
//!   (skipping those would leave the workload unrestarted until the generations caught up).
//! - **A workload seen for the first time** (no record of this key, e.g. just added to the list,
//!   or the feature just enabled) has no history to go by, and its creation time decides ([`step`]):
//!   created strictly before the current secret was generated, its pods may hold the previous one,
//!   and it is restarted, unless the current secret is the key's first (generation 1: there was
//!   no previous secret, and a workload applied together with its ApiKey is not restarted right
//!   after it starts). Created at or after the current secret, its pods read the current one, and
//!   the workload is only recorded. A record left by an earlier ApiKey of the same name (deleted
//!   and created again: another UID, new credentials) counts as evidence that the pods hold that
//!   key's credentials: a workload created before the current secret is restarted, even at
//!   generation 1. Whoever removes the record (a `kubectl replace`, a tool that owns every
//!   annotation) makes the workload one seen for the first time again.
//! - **Missing workloads, workloads that do not use the Secret, and rights** are no failure of
//!   the reconcile: the `RolloutRestart` condition says what is missing ([`condition`]), and the
//!   key is looked at again every [`RECHECK`]. A workload that appears later was created after the
//!   current secret and is only recorded. Reading and patching workloads needs the operator's
//!   optional rights of `deploy/rollout-restart/` (`get` and `patch`; opt-in: whoever may patch a
//!   Deployment can change what it runs). Without them,
//!   [Stakater Reloader](https://github.com/stakater/Reloader)'s annotation
//!   `secret.reloader.stakater.com/reload: <secret name>` ([`RELOADER_ANNOTATION`]) on the
//!   workload restarts it on every change of the Secret instead, with Reloader's rights rather
//!   than the operator's.
//!
//! As with `kubectl rollout restart`, a paused Deployment rolls once it is resumed, and a
//! StatefulSet or DaemonSet with `updateStrategy: OnDelete` replaces its pods only as they are
//! deleted. Anyone who may edit an ApiKey can have the operator restart, once per new secret, the
//! workloads of the ApiKey's namespace whose pod template uses the key's Secret (those whose pods
//! a new secret concerns anyway), never a workload of another namespace or one that does not use
//! the Secret, and never change them otherwise: the operator writes only its two annotations.
//!
//! `plan.rs` decides, pure ([`step`], [`uses_secret`], [`condition`]); this module reads and patches
//! the workloads ([`restart_targets`]).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::core::crd::{ApiKey, WorkloadKind};
use crate::core::secret::MANAGER;
use crate::error::{Error, Result};

mod plan;

use plan::describe;
pub use plan::{
    ANNOTATION_PREFIX, NAME_PART_MAX, REASON_FORBIDDEN, REASON_REJECTED, REASON_RESTARTED,
    REASON_SECRET_NOT_USED, REASON_TARGET_NOT_FOUND, RECHECK, RELOADER_ANNOTATION, Step,
    TargetOutcome, TargetReport, annotation_key, annotation_name_part, annotation_value, condition,
    recheck_after, step, uses_secret,
};

/// Reads and patches per workload in one call when the workload keeps changing between the read
/// and the write (409 Conflict); after the last, the conflict is returned as an error and the
/// reconcile is retried with its backoff.
const ATTEMPTS: usize = 3;

/// What a restart is done for: the key's Secret and annotation, and the current secret.
struct Bookkeeping<'a> {
    secret: String,
    key_uid: &'a str,
    annotation: String,
    value: String,
    generation: u64,
    rotated_at: Option<&'a Time>,
}

/// Restarts each workload of `key`'s `spec.rolloutRestart` that has not been restarted for client
/// secret `generation` yet (generated at `rotated_at`, both from the Secret's sealed record), as
/// [`step`] decides, in the ApiKey's own namespace only, and only if its pod template uses the
/// key's Secret ([`uses_secret`]). Call it after the Secret holding that secret is written (or
/// read back), on every reconcile of a Ready key: a workload that is up to date costs one read and
/// no write.
///
/// Returns one report per workload, in the order of the spec. A missing workload, one that does
/// not use the Secret, a 403 and a refused patch are reports, not errors ([`condition`] turns them into the `RolloutRestart`
/// condition; look again after [`recheck_after`]). Errors are the transient ones (5xx, the
/// connection) and a workload that kept changing between read and patch: the caller backs off
/// and calls again, which restarts nothing twice.
pub async fn restart_targets(
    client: &Client,
    key: &ApiKey,
    generation: u64,
    rotated_at: Option<&Time>,
) -> Result<Vec<TargetReport>> {
    if key.spec.rollout_restart.is_empty() {
        return Ok(Vec::new());
    }
    let (namespace, name) = key.namespace_and_name()?;
    let key_uid = key
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingField("metadata.uid"))?;
    let book = Bookkeeping {
        secret: key.secret_name(),
        key_uid,
        annotation: annotation_key(name),
        value: annotation_value(generation, key_uid),
        generation,
        rotated_at,
    };
    let mut reports = Vec::with_capacity(key.spec.rollout_restart.len());
    for target in &key.spec.rollout_restart {
        let workload = &target.name;
        let outcome = match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                restart_one(&api, workload, &book).await?
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                restart_one(&api, workload, &book).await?
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
                restart_one(&api, workload, &book).await?
            }
        };
        let what = describe(target);
        match &outcome {
            TargetOutcome::Restarted => {
                info!(apikey = %format!("{namespace}/{name}"), workload = %what, generation, "rollout restart for the new client secret");
            }
            other => {
                debug!(apikey = %format!("{namespace}/{name}"), workload = %what, generation, outcome = ?other, "rollout restart target");
            }
        }
        reports.push(TargetReport {
            target: target.clone(),
            outcome,
        });
    }
    Ok(reports)
}

/// A workload kind that a rollout restart applies to: where its pod template's spec is.
trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned
{
    /// `spec.template.spec`, if the object has it.
    fn pod_spec(&self) -> Option<&PodSpec>;
}

impl Workload for Deployment {
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Workload for StatefulSet {
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Workload for DaemonSet {
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

/// Reads workload `name`, checks that its pod template uses the key's Secret ([`uses_secret`]),
/// decides with [`step`], and writes the record (and the restart) in one merge patch under the
/// read's `resourceVersion`; reads again on a conflict.
async fn restart_one<K: Workload>(
    api: &Api<K>,
    name: &str,
    book: &Bookkeeping<'_>,
) -> Result<TargetOutcome> {
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let workload = match api.get_opt(name).await {
            Ok(Some(workload)) => workload,
            Ok(None) => return Ok(TargetOutcome::NotFound),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Ok(TargetOutcome::Forbidden(s.message.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        if !workload
            .pod_spec()
            .is_some_and(|pod| uses_secret(pod, &book.secret))
        {
            return Ok(TargetOutcome::NotUsingSecret);
        }
        let meta = workload.meta();
        let recorded = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&book.annotation))
            .map(String::as_str);
        let decided = step(
            recorded,
            book.key_uid,
            book.generation,
            meta.creation_timestamp.as_ref(),
            book.rotated_at,
        );
        let Some(version) = meta.resource_version.as_deref() else {
            return Err(Error::MissingField("metadata.resourceVersion"));
        };
        let patch = match decided {
            Step::Nothing => return Ok(TargetOutcome::UpToDate),
            Step::Record => record_patch(book, version),
            Step::Restart => restart_patch(book, version),
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) if decided == Step::Restart => return Ok(TargetOutcome::Restarted),
            Ok(_) => return Ok(TargetOutcome::Recorded),
            Err(kube::Error::Api(s)) if s.is_conflict() && attempt < ATTEMPTS => {
                debug!(workload = name, "changed since it was read; deciding again");
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(TargetOutcome::NotFound),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Ok(TargetOutcome::Forbidden(s.message.clone()));
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 422) => {
                return Ok(TargetOutcome::Rejected(s.message.clone()));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The merge patch that records `book`'s generation on a workload read at `version`.
fn record_patch(book: &Bookkeeping<'_>, version: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": version,
            "annotations": { &book.annotation: &book.value },
        }
    })
}

/// The merge patch that restarts a workload read at `version` and records `book`'s generation:
/// one write, so the restart and its record happen together or not at all.
fn restart_patch(book: &Bookkeeping<'_>, version: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": version,
            "annotations": { &book.annotation: &book.value },
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": { &book.annotation: &book.value },
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
