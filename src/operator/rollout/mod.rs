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

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info};

use crate::core::crd::{ApiKey, ROLLOUT_RESTART_CONDITION, RolloutTarget, WorkloadKind};
use crate::core::secret::MANAGER;
use crate::error::{Error, Result};

/// Prefix of the annotation a key keeps on each of its workloads, in `metadata.annotations`
/// (the record) and in `spec.template.metadata.annotations` (the restart): the full name is this
/// prefix and [`annotation_name_part`] of the ApiKey's name, e.g. `restarted.apikey.dev/web`.
pub const ANNOTATION_PREFIX: &str = "restarted.apikey.dev/";

/// Longest name part of an annotation key (after the `/`), as Kubernetes validates it.
pub const NAME_PART_MAX: usize = 63;

/// Hex digits of SHA-256 in the name part of a long ApiKey name (64 bits).
const HASH_DIGITS: usize = 16;

/// How long a key with a missing workload, a missing right or a refused restart waits before it
/// looks again (nothing watches workloads, so nothing else would tell).
pub const RECHECK: Duration = Duration::from_secs(5 * 60);

/// Reads and patches per workload in one call when the workload keeps changing between the read
/// and the write (409 Conflict); after the last, the conflict is returned as an error and the
/// reconcile is retried with its backoff.
const ATTEMPTS: usize = 3;

/// `RolloutRestart=True` reason: every workload was restarted for the current client secret, or
/// started after it.
pub const REASON_RESTARTED: &str = "Restarted";
/// `RolloutRestart=False` reason: a workload named in `spec.rolloutRestart` does not exist.
pub const REASON_TARGET_NOT_FOUND: &str = "TargetNotFound";
/// `RolloutRestart=False` reason: the API server refused the operator to read or patch a
/// workload (RBAC, or an admission webhook that answers 403).
pub const REASON_FORBIDDEN: &str = "Forbidden";
/// `RolloutRestart=False` reason: the API server refused the restart patch as invalid (400, 422),
/// e.g. an admission webhook or a workload that no longer validates.
pub const REASON_REJECTED: &str = "Rejected";
/// `RolloutRestart=False` reason: a workload named in `spec.rolloutRestart` has a pod template
/// that does not use the key's Secret ([`uses_secret`]), so the operator does not restart it.
pub const REASON_SECRET_NOT_USED: &str = "SecretNotUsed";

/// Stakater Reloader's annotation that restarts a workload on each change of the named Secret:
/// the alternative to granting the operator `deploy/rollout-restart/`.
pub const RELOADER_ANNOTATION: &str = "secret.reloader.stakater.com/reload";

/// The name part (after `restarted.apikey.dev/`) of the annotation that ApiKey `apikey_name` keeps
/// on its workloads. An ApiKey name (a DNS-1123 subdomain, at most 253 characters) of at most 63
/// characters is used as it is. A longer one becomes its first 46 characters, `_`, and the first
/// 16 hex digits of the SHA-256 of the whole name (63 characters): the underscore, which no ApiKey
/// name contains, keeps the shortened forms apart from every name used as it is. Any other input
/// (not a DNS name) takes the shortened form too, with the characters a DNS name may hold, so the
/// result is always a valid annotation name part.
pub fn annotation_name_part(apikey_name: &str) -> String {
    if apikey_name.len() <= NAME_PART_MAX && is_dns_name(apikey_name) {
        return apikey_name.to_owned();
    }
    let digest = Sha256::digest(apikey_name.as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let kept: String = apikey_name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(NAME_PART_MAX - HASH_DIGITS - 1)
        .collect();
    let kept = if kept.is_empty() { "apikey" } else { &kept };
    format!("{kept}_{hash}")
}

/// Whether `name` is made of DNS-1123 characters (`a-z`, `0-9`, `-`, `.`) and starts and ends
/// with a letter or digit.
fn is_dns_name(name: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The full annotation key ApiKey `apikey_name` keeps on its workloads:
/// [`ANNOTATION_PREFIX`] and [`annotation_name_part`].
pub fn annotation_key(apikey_name: &str) -> String {
    format!("{ANNOTATION_PREFIX}{}", annotation_name_part(apikey_name))
}

/// The value of the annotation for client secret `generation` of the ApiKey of UID `uid`:
/// `<generation>/<uid>`. The UID tells an ApiKey deleted and created again under the same name
/// from the one that wrote the record (its generations start again at 1), and makes every restart
/// a change of the pod template.
pub fn annotation_value(generation: u64, uid: &str) -> String {
    format!("{generation}/{uid}")
}

/// The generation and UID of an annotation value, if it is in the form of [`annotation_value`].
fn parse_value(value: &str) -> Option<(u64, &str)> {
    let (generation, uid) = value.split_once('/')?;
    if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((generation.parse().ok()?, uid))
}

/// What to do to one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Restart it and record the generation (one patch).
    Restart,
    /// Record the generation only: its pods already read the current secret.
    Record,
    /// Nothing: it was restarted for (or seen at) this generation already.
    Nothing,
}

/// What to do to a workload whose record of this key is `recorded` (the value of
/// [`annotation_key`] on the workload, if any), for client secret `generation` of the ApiKey of
/// UID `key_uid`; pure.
///
/// - Recorded by this ApiKey at `generation`: [`Step::Nothing`]; at any other generation:
///   [`Step::Restart`], an earlier one as well as a later one (the generations went back: the
///   operator's record key was lost and the key adopted again at generation 1, and the pods were
///   not restarted for the current secret).
/// - Recorded by another ApiKey of the same name (deleted and created again): its pods hold that
///   key's credentials if the workload was created strictly before the current secret was
///   generated ([`Step::Restart`]); otherwise [`Step::Record`].
/// - Not recorded (or not in the form of [`annotation_value`]): seen for the first time.
///   [`Step::Restart`] if `generation` > 1 and the workload was created strictly before the
///   current secret was generated (its pods may hold the previous one); otherwise
///   [`Step::Record`]: a workload created at or after the current secret, or with the key's first
///   secret, or when either time is unknown, is not restarted.
pub fn step(
    recorded: Option<&str>,
    key_uid: &str,
    generation: u64,
    workload_created: Option<&Time>,
    secret_rotated_at: Option<&Time>,
) -> Step {
    let created_before = matches!(
        (workload_created, secret_rotated_at),
        (Some(created), Some(rotated)) if created < rotated
    );
    match recorded.and_then(parse_value) {
        Some((seen, uid)) if uid == key_uid => {
            if seen == generation {
                Step::Nothing
            } else {
                Step::Restart
            }
        }
        Some(_) if created_before => Step::Restart,
        None if generation > 1 && created_before => Step::Restart,
        Some(_) | None => Step::Record,
    }
}

/// What became of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetOutcome {
    /// Restarted now for the current client secret.
    Restarted,
    /// Seen for the first time and recorded, not restarted: its pods read the current secret.
    Recorded,
    /// Restarted for (or seen at) the current client secret before: nothing written.
    UpToDate,
    /// The workload does not exist (in the ApiKey's namespace).
    NotFound,
    /// The workload's pod template does not use the key's Secret ([`uses_secret`]): not
    /// restarted, nothing written.
    NotUsingSecret,
    /// The API server refused to let the operator read or patch it, with this message.
    Forbidden(String),
    /// The API server refused the patch as invalid (400 or 422), with this message.
    Rejected(String),
}

/// What became of one workload of `spec.rolloutRestart`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetReport {
    /// The workload, as the spec names it.
    pub target: RolloutTarget,
    /// What became of it.
    pub outcome: TargetOutcome,
}

impl TargetReport {
    /// Whether the workload runs (or is rolling out) with the current client secret.
    pub fn is_done(&self) -> bool {
        matches!(
            self.outcome,
            TargetOutcome::Restarted | TargetOutcome::Recorded | TargetOutcome::UpToDate
        )
    }
}

/// `Deployment/web`.
fn describe(target: &RolloutTarget) -> String {
    format!("{}/{}", kind_name(target.kind), target.name)
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

/// The resource as RBAC names it: `deployments.apps`.
fn resource_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "deployments.apps",
        WorkloadKind::StatefulSet => "statefulsets.apps",
        WorkloadKind::DaemonSet => "daemonsets.apps",
    }
}

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

/// Whether pods of spec `pod` use Secret `secret` (of their own namespace); pure. They do if a
/// volume is the Secret (`secret.secretName`) or projects it (a `projected` source's
/// `secret.name`), or a container or init container reads it into its environment
/// (`env[].valueFrom.secretKeyRef.name`, `envFrom[].secretRef.name`). Ephemeral containers are not
/// looked at: the API server refuses them in a workload's pod template. An empty name is used by
/// nothing.
pub fn uses_secret(pod: &PodSpec, secret: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mounts = |volume: &Volume| {
        volume
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            || volume
                .projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .is_some_and(|sources| {
                    sources
                        .iter()
                        .any(|source| source.secret.as_ref().is_some_and(|s| s.name == secret))
                })
    };
    let reads = |container: &Container| {
        container.env.iter().flatten().any(|var| {
            var.value_from
                .as_ref()
                .and_then(|from| from.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == secret)
        }) || container
            .env_from
            .iter()
            .flatten()
            .any(|from| from.secret_ref.as_ref().is_some_and(|r| r.name == secret))
    };
    pod.volumes.iter().flatten().any(mounts)
        || pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .any(reads)
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

/// How long to wait before calling [`restart_targets`] again on its own: [`RECHECK`] if a
/// workload is missing, does not use the Secret, is forbidden or refused, else `None` (nothing to look for until the key or
/// its Secret changes).
pub fn recheck_after(reports: &[TargetReport]) -> Option<Duration> {
    reports.iter().any(|r| !r.is_done()).then_some(RECHECK)
}

/// The `RolloutRestart` condition of `key` after `reports` for client secret `generation`, or
/// `None` when `spec.rolloutRestart` names no workload (the condition is then absent); pure.
///
/// True (reason [`REASON_RESTARTED`]) when every workload was restarted for the current secret or
/// started after it; False otherwise, with reason [`REASON_FORBIDDEN`] (first),
/// [`REASON_REJECTED`], [`REASON_SECRET_NOT_USED`] or [`REASON_TARGET_NOT_FOUND`] (last), naming
/// the workloads concerned. The
/// message does not tell workloads restarted now from those restarted before, so a reconcile that
/// changes nothing gives the same condition; `lastTransitionTime` is the previous condition's
/// while status, reason and message are unchanged (as in [`crate::core::status::desired`]), else `now`.
pub fn condition(
    key: &ApiKey,
    reports: &[TargetReport],
    generation: u64,
    now: &Time,
) -> Option<Condition> {
    if reports.is_empty() {
        return None;
    }
    let namespace = key.namespace().unwrap_or_default();
    let named = |pick: fn(&TargetOutcome) -> bool| -> Vec<&TargetReport> {
        reports.iter().filter(|r| pick(&r.outcome)).collect()
    };
    let forbidden = named(|o| matches!(o, TargetOutcome::Forbidden(_)));
    let rejected = named(|o| matches!(o, TargetOutcome::Rejected(_)));
    let unrelated = named(|o| matches!(o, TargetOutcome::NotUsingSecret));
    let missing = named(|o| matches!(o, TargetOutcome::NotFound));
    let recheck = RECHECK.as_secs() / 60;
    // every problem is told, the gravest first; it names the reason
    let mut problems: Vec<(&str, String)> = Vec::new();
    if let Some(first) = forbidden.first() {
        let resources: BTreeSet<&str> = forbidden
            .iter()
            .map(|r| resource_name(r.target.kind))
            .collect();
        let resources = resources.into_iter().collect::<Vec<_>>().join(", ");
        let (them, are) = subject(&forbidden);
        let said = match &first.outcome {
            TargetOutcome::Forbidden(m) => m.as_str(),
            _ => "",
        };
        problems.push((
            REASON_FORBIDDEN,
            format!(
                "the operator may not get or patch {resources} in namespace {namespace}, so {them} {are} not restarted after new client secrets: grant it the rights of deploy/rollout-restart/ (a Role in this namespace for a namespaced install), or annotate the workload with {RELOADER_ANNOTATION}: {secret} for Stakater Reloader instead (the API server said: {said})",
                secret = key.secret_name(),
            ),
        ));
    }
    if let Some(first) = rejected.first() {
        let (them, _) = subject(&rejected);
        let said = match &first.outcome {
            TargetOutcome::Rejected(m) => m.as_str(),
            _ => "",
        };
        problems.push((
            REASON_REJECTED,
            format!(
                "the API server refused the rollout restart of {them} for client secret generation {generation}: {said}"
            ),
        ));
    }
    if !unrelated.is_empty() {
        let (them, are) = subject(&unrelated);
        problems.push((
            REASON_SECRET_NOT_USED,
            format!(
                "{them} {are} not restarted: the operator only restarts workloads whose pod template mounts or references Secret {secret} (volume, projected volume, env or envFrom)",
                secret = key.secret_name(),
            ),
        ));
    }
    if !missing.is_empty() {
        let (them, _) = subject(&missing);
        problems.push((
            REASON_TARGET_NOT_FOUND,
            format!("{them} not found in namespace {namespace}"),
        ));
    }
    let (status, reason, message) = if let Some((reason, _)) = problems.first() {
        let told: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
        (
            false,
            *reason,
            format!(
                "{}; looked at again every {recheck} minutes",
                told.join("; and ")
            ),
        )
    } else {
        let all: Vec<&TargetReport> = reports.iter().collect();
        let (them, are) = subject(&all);
        let count = if all.len() == 1 {
            "1 workload".to_owned()
        } else {
            format!("{} workloads", all.len())
        };
        (
            true,
            REASON_RESTARTED,
            format!(
                "{count} {are} restarted for client secret generation {generation} or started after it: {them}"
            ),
        )
    };
    Some(crate::core::status::condition(
        key,
        ROLLOUT_RESTART_CONDITION,
        status,
        reason,
        message,
        now,
    ))
}

/// `Deployment/web, StatefulSet/db` and the verb's number (`is`, `are`).
fn subject(reports: &[&TargetReport]) -> (String, &'static str) {
    let names = reports
        .iter()
        .map(|r| describe(&r.target))
        .collect::<Vec<_>>()
        .join(", ");
    (names, if reports.len() == 1 { "is" } else { "are" })
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::{Method, StatusCode};
    use serde_json::Value;

    use crate::core::test_support::{key, time};
    use crate::operator::fixtures::{ApiServerVerifier, TIMEOUT, context};

    const UID: &str = "uid-web";

    /// A valid annotation name part: at most 63 characters of `[A-Za-z0-9_.-]`, starting and
    /// ending with a letter or digit.
    fn valid_name_part(part: &str) -> bool {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        !part.is_empty()
            && part.len() <= NAME_PART_MAX
            && alnum(part.chars().next())
            && alnum(part.chars().last())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    #[test]
    fn short_names_are_the_name_part_as_they_are() {
        for name in ["web", "a", "my-key.v2", &"k".repeat(63)] {
            assert_eq!(annotation_name_part(name), name);
            assert!(valid_name_part(&annotation_name_part(name)));
        }
        assert_eq!(annotation_key("web"), "restarted.apikey.dev/web");
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_apart() {
        let long = format!("{}-end", "a".repeat(250));
        let part = annotation_name_part(&long);
        assert_eq!(part.len(), NAME_PART_MAX);
        assert!(valid_name_part(&part), "{part}");
        assert!(part.starts_with(&"a".repeat(46)), "{part}");
        assert_eq!(part, annotation_name_part(&long), "deterministic");
        let other = format!("{}-eNd", "a".repeat(250));
        assert_ne!(part, annotation_name_part(&other));
        let other = format!("{}-fin", "a".repeat(250));
        assert_ne!(part, annotation_name_part(&other), "same first 46 chars");
        assert!(part.contains('_'), "never a name used as it is: {part}");
        // 64 characters: the first that is shortened
        let sixty_four = "k".repeat(64);
        let part = annotation_name_part(&sixty_four);
        assert!(valid_name_part(&part) && part != sixty_four, "{part}");
        // a prefix ending in '-' or '.' before the underscore stays valid
        let dashes = format!("{}-{}", "b".repeat(45), "c".repeat(60));
        assert!(valid_name_part(&annotation_name_part(&dashes)));
    }

    #[test]
    fn names_that_are_no_dns_names_still_give_valid_keys() {
        for name in [
            "",
            "-",
            "Web",
            "web-",
            ".web",
            "wéb",
            "a b",
            "_x_",
            "/",
            &"ü".repeat(40),
        ] {
            let part = annotation_name_part(name);
            assert!(valid_name_part(&part), "{name:?} gave {part:?}");
        }
        assert_ne!(annotation_name_part("Web"), annotation_name_part("web"));
    }

    #[test]
    fn values_carry_generation_and_uid() {
        assert_eq!(annotation_value(3, UID), "3/uid-web");
        assert_eq!(parse_value("3/uid-web"), Some((3, UID)));
        for bad in [
            "",
            "3",
            "/uid",
            "x/uid",
            "-1/uid",
            "+3/uid",
            "3 /uid",
            "99999999999999999999/u",
        ] {
            assert_eq!(parse_value(bad), None, "{bad:?}");
        }
    }

    fn step_at(recorded: Option<&str>, generation: u64, created: i64, rotated: i64) -> Step {
        step(
            recorded,
            UID,
            generation,
            Some(&time(created)),
            Some(&time(rotated)),
        )
    }

    #[test]
    fn a_recorded_workload_is_restarted_once_per_generation() {
        assert_eq!(step_at(Some("2/uid-web"), 3, 10, 100), Step::Restart);
        assert_eq!(step_at(Some("1/uid-web"), 3, 10, 100), Step::Restart);
        assert_eq!(step_at(Some("3/uid-web"), 3, 10, 100), Step::Nothing);
        // the creation time does not matter once recorded
        assert_eq!(step_at(Some("2/uid-web"), 3, 500, 100), Step::Restart);
        assert_eq!(step_at(Some("3/uid-web"), 3, 500, 100), Step::Nothing);
        // nor do unknown times
        assert_eq!(step(Some("2/uid-web"), UID, 3, None, None), Step::Restart);
        assert_eq!(step(Some("3/uid-web"), UID, 3, None, None), Step::Nothing);
    }

    #[test]
    fn a_generation_that_went_back_restarts() {
        // the operator's record key was lost: the key is adopted again at generation 1 while its
        // workloads record generation 5; each generation that differs is a new secret for them
        assert_eq!(step_at(Some("5/uid-web"), 1, 10, 100), Step::Restart);
        assert_eq!(step_at(Some("4/uid-web"), 3, 10, 100), Step::Restart);
        // whatever the creation time, and with unknown times
        assert_eq!(step_at(Some("5/uid-web"), 1, 500, 100), Step::Restart);
        assert_eq!(step(Some("5/uid-web"), UID, 2, None, None), Step::Restart);
        // and once restarted for it, the new count goes on exactly once per generation
        for generation in 1..=5 {
            let recorded = annotation_value(generation, UID);
            assert_eq!(step_at(Some(&recorded), generation, 10, 100), Step::Nothing);
            assert_eq!(
                step_at(Some(&recorded), generation + 1, 10, 100),
                Step::Restart
            );
        }
    }

    /// A pod spec from its JSON form, with one container `app` and `extra`'s fields.
    fn pod(extra: Value) -> PodSpec {
        let mut spec = json!({ "containers": [{ "name": "app", "image": "app" }] });
        for (field, value) in extra.as_object().expect("an object") {
            spec[field] = value.clone();
        }
        serde_json::from_value(spec).expect("a PodSpec")
    }

    /// A pod spec's `containers` (or `initContainers`) in JSON: one container `app` with `fields`.
    fn container(fields: Value) -> Value {
        let mut c = json!({ "name": "app", "image": "app" });
        for (field, value) in fields.as_object().expect("an object") {
            c[field] = value.clone();
        }
        json!([c])
    }

    #[test]
    fn each_reference_kind_uses_the_secret() {
        let cases = [
            (
                "a secret volume",
                json!({ "volumes": [{ "name": "key", "secret": { "secretName": "k" } }] }),
            ),
            (
                "a projected volume",
                json!({ "volumes": [
                    { "name": "cm", "configMap": { "name": "k" } },
                    { "name": "all", "projected": { "sources": [
                        { "configMap": { "name": "settings" } },
                        { "secret": { "name": "k", "items": [{ "key": "clientSecret", "path": "s" }] } },
                    ] } },
                ] }),
            ),
            (
                "a container's env",
                json!({ "containers": container(json!({ "env": [
                    { "name": "PLAIN", "value": "k" },
                    { "name": "ID", "valueFrom": { "secretKeyRef": { "name": "k", "key": "clientId" } } },
                ] })) }),
            ),
            (
                "a container's envFrom",
                json!({ "containers": container(json!({ "envFrom": [
                    { "configMapRef": { "name": "settings" } },
                    { "secretRef": { "name": "k" }, "prefix": "KEY_" },
                ] })) }),
            ),
            (
                "an init container's env",
                json!({ "initContainers": container(json!({ "env": [
                    { "name": "ID", "valueFrom": { "secretKeyRef": { "name": "k", "key": "clientId" } } },
                ] })) }),
            ),
            (
                "an init container's envFrom",
                json!({ "initContainers": container(json!({ "envFrom": [
                    { "secretRef": { "name": "k" } },
                ] })) }),
            ),
        ];
        for (what, extra) in cases {
            let spec = pod(extra);
            assert!(uses_secret(&spec, "k"), "{what}");
            assert!(
                !uses_secret(&spec, "other"),
                "{what} of k is no use of other"
            );
            assert!(
                !uses_secret(&spec, ""),
                "{what}: an empty name is used by nothing"
            );
        }
    }

    #[test]
    fn a_template_that_references_another_secret_or_a_config_map_does_not_use_it() {
        let other = pod(json!({
            "volumes": [
                { "name": "a", "secret": { "secretName": "other" } },
                { "name": "b", "secret": {} },
                { "name": "c", "configMap": { "name": "k" } },
                { "name": "d", "projected": { "sources": [
                    { "secret": { "name": "other" } },
                    { "configMap": { "name": "k" } },
                ] } },
                { "name": "e", "projected": {} },
                { "name": "f", "emptyDir": {} },
            ],
            "containers": container(json!({
                "env": [
                    { "name": "A", "value": "k" },
                    { "name": "B", "valueFrom": { "secretKeyRef": { "name": "other", "key": "k" } } },
                    { "name": "C", "valueFrom": { "configMapKeyRef": { "name": "k", "key": "k" } } },
                ],
                "envFrom": [
                    { "secretRef": { "name": "other" } },
                    { "configMapRef": { "name": "k" } },
                ],
                "volumeMounts": [{ "name": "k", "mountPath": "/k" }],
            })),
            "initContainers": container(json!({ "envFrom": [{ "secretRef": { "name": "k-2" } }] })),
            "imagePullSecrets": [{ "name": "k" }],
        }));
        assert!(!uses_secret(&other, "k"));
        assert!(uses_secret(&other, "other"));
        assert!(!uses_secret(&pod(json!({})), "k"), "no reference at all");
    }

    #[test]
    fn a_workload_without_a_pod_spec_uses_nothing() {
        let bare: Deployment =
            serde_json::from_value(json!({ "metadata": { "name": "web" } })).expect("a Deployment");
        assert!(bare.pod_spec().is_none());
        let full: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "db" },
            "spec": {
                "selector": {},
                "template": { "spec": {
                    "containers": [{ "name": "app" }],
                    "volumes": [{ "name": "key", "secret": { "secretName": "k" } }],
                } },
            },
        }))
        .expect("a StatefulSet");
        assert!(full.pod_spec().is_some_and(|p| uses_secret(p, "k")));
    }

    #[test]
    fn a_workload_seen_first_is_restarted_only_if_older_than_a_later_secret() {
        for recorded in [None, Some("garbage"), Some("3"), Some("")] {
            // created before the current secret, which is not the first: restart
            assert_eq!(step_at(recorded, 2, 10, 100), Step::Restart, "{recorded:?}");
            assert_eq!(step_at(recorded, 3, 99, 100), Step::Restart, "{recorded:?}");
            // created in the same second as the secret, or after it: record only
            assert_eq!(step_at(recorded, 3, 100, 100), Step::Record, "{recorded:?}");
            assert_eq!(step_at(recorded, 3, 101, 100), Step::Record, "{recorded:?}");
            // the key's first secret: record only, whenever the workload was created
            assert_eq!(step_at(recorded, 1, 10, 100), Step::Record, "{recorded:?}");
            assert_eq!(step_at(recorded, 1, 100, 100), Step::Record, "{recorded:?}");
            assert_eq!(step_at(recorded, 1, 200, 100), Step::Record, "{recorded:?}");
            // unknown times: no evidence for a restart
            assert_eq!(step(recorded, UID, 3, None, Some(&time(100))), Step::Record);
            assert_eq!(step(recorded, UID, 3, Some(&time(10)), None), Step::Record);
        }
    }

    #[test]
    fn a_record_of_an_earlier_apikey_of_the_same_name_is_no_record_of_this_one() {
        // the earlier key had reached generation 5; this one starts again at 1
        let earlier = Some("5/uid-old");
        assert_eq!(
            step_at(earlier, 1, 10, 100),
            Step::Restart,
            "pods hold the old key's secret"
        );
        assert_eq!(step_at(earlier, 2, 10, 100), Step::Restart);
        assert_eq!(step_at(earlier, 1, 100, 100), Step::Record);
        assert_eq!(step_at(earlier, 1, 200, 100), Step::Record);
        assert_eq!(step(earlier, UID, 1, None, None), Step::Record);
    }

    fn target(kind: WorkloadKind, name: &str) -> RolloutTarget {
        RolloutTarget {
            kind,
            name: name.into(),
        }
    }

    fn report(kind: WorkloadKind, name: &str, outcome: TargetOutcome) -> TargetReport {
        TargetReport {
            target: target(kind, name),
            outcome,
        }
    }

    fn keyed(targets: Vec<RolloutTarget>) -> ApiKey {
        let mut k = key("web", "alice", 1);
        k.spec.rollout_restart = targets;
        k
    }

    /// `k` with `c` as its only condition.
    fn with_condition(mut k: ApiKey, c: &Condition) -> ApiKey {
        k.status = Some(crate::core::crd::ApiKeyStatus {
            conditions: vec![c.clone()],
            ..Default::default()
        });
        k
    }

    #[test]
    fn no_targets_no_condition() {
        assert_eq!(condition(&keyed(vec![]), &[], 3, &time(1)), None);
        assert_eq!(recheck_after(&[]), None);
    }

    #[test]
    fn all_done_is_true_and_stable_across_reconciles() {
        let k = keyed(vec![]);
        let now_restarted = [
            report(WorkloadKind::Deployment, "web", TargetOutcome::Restarted),
            report(WorkloadKind::StatefulSet, "db", TargetOutcome::Recorded),
        ];
        let c = condition(&k, &now_restarted, 3, &time(100)).expect("a condition");
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("RolloutRestart", "True", "Restarted")
        );
        assert_eq!(
            c.message,
            "2 workloads are restarted for client secret generation 3 or started after it: Deployment/web, StatefulSet/db"
        );
        assert_eq!(c.last_transition_time, time(100));
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(recheck_after(&now_restarted), None);

        // the next reconcile finds both up to date: the same condition, nothing to write
        let k = with_condition(k, &c);
        let up_to_date = [
            report(WorkloadKind::Deployment, "web", TargetOutcome::UpToDate),
            report(WorkloadKind::StatefulSet, "db", TargetOutcome::UpToDate),
        ];
        assert_eq!(condition(&k, &up_to_date, 3, &time(500)), Some(c.clone()));

        // the next secret changes the message, and with it the transition time
        let next = condition(&k, &up_to_date, 4, &time(600)).expect("a condition");
        assert_eq!(next.last_transition_time, time(600));
        assert!(next.message.contains("generation 4"), "{}", next.message);

        let one = condition(
            &keyed(vec![]),
            &[report(
                WorkloadKind::DaemonSet,
                "agent",
                TargetOutcome::UpToDate,
            )],
            1,
            &time(1),
        )
        .expect("a condition");
        assert_eq!(
            one.message,
            "1 workload is restarted for client secret generation 1 or started after it: DaemonSet/agent"
        );
    }

    #[test]
    fn missing_workloads_are_named_and_looked_for_again() {
        let reports = [
            report(WorkloadKind::Deployment, "web", TargetOutcome::UpToDate),
            report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
            report(WorkloadKind::DaemonSet, "agent", TargetOutcome::NotFound),
        ];
        let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "TargetNotFound")
        );
        assert_eq!(
            c.message,
            "StatefulSet/db, DaemonSet/agent not found in namespace ns; looked at again every 5 minutes"
        );
        assert_eq!(recheck_after(&reports), Some(RECHECK));
        // unchanged: the transition time stays
        let k = with_condition(keyed(vec![]), &c);
        assert_eq!(condition(&k, &reports, 3, &time(400)), Some(c));
    }

    #[test]
    fn workloads_that_do_not_use_the_secret_are_named_before_missing_ones_and_both_told() {
        let reports = [
            report(WorkloadKind::Deployment, "web", TargetOutcome::Restarted),
            report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
            report(
                WorkloadKind::Deployment,
                "other",
                TargetOutcome::NotUsingSecret,
            ),
            report(
                WorkloadKind::DaemonSet,
                "agent",
                TargetOutcome::NotUsingSecret,
            ),
        ];
        let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretNotUsed")
        );
        assert_eq!(
            c.message,
            "Deployment/other, DaemonSet/agent are not restarted: the operator only restarts workloads whose pod template mounts or references Secret web (volume, projected volume, env or envFrom); and StatefulSet/db not found in namespace ns; looked at again every 5 minutes"
        );
        assert_eq!(recheck_after(&reports[2..3]), Some(RECHECK));

        // the Secret's own name, and one workload
        let mut k = keyed(vec![]);
        k.spec.secret_name = Some("web-credentials".into());
        let c = condition(&k, &reports[2..3], 3, &time(100)).expect("a condition");
        assert_eq!(
            c.message,
            "Deployment/other is not restarted: the operator only restarts workloads whose pod template mounts or references Secret web-credentials (volume, projected volume, env or envFrom); looked at again every 5 minutes"
        );

        // forbidden and rejected come first
        let mut worse = reports.to_vec();
        worse.push(report(
            WorkloadKind::Deployment,
            "api",
            TargetOutcome::Rejected("denied".into()),
        ));
        let c = condition(&keyed(vec![]), &worse, 3, &time(100)).expect("a condition");
        assert_eq!(c.reason, "Rejected");
        worse.push(report(
            WorkloadKind::Deployment,
            "api",
            TargetOutcome::Forbidden("no".into()),
        ));
        let c = condition(&keyed(vec![]), &worse, 3, &time(100)).expect("a condition");
        assert_eq!(c.reason, "Forbidden");
    }

    #[test]
    fn forbidden_wins_and_says_how_to_grant_or_what_to_use_instead() {
        let said = "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:apikey-system:apikey-operator\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"ns\"";
        let reports = [
            report(
                WorkloadKind::Deployment,
                "web",
                TargetOutcome::Forbidden(said.into()),
            ),
            report(WorkloadKind::StatefulSet, "db", TargetOutcome::NotFound),
            report(
                WorkloadKind::DaemonSet,
                "agent",
                TargetOutcome::Rejected("denied".into()),
            ),
            report(
                WorkloadKind::Deployment,
                "api",
                TargetOutcome::Forbidden(said.into()),
            ),
        ];
        let c = condition(&keyed(vec![]), &reports, 3, &time(100)).expect("a condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Forbidden")
        );
        for needle in [
            "may not get or patch deployments.apps in namespace ns",
            "Deployment/web, Deployment/api are not restarted",
            "deploy/rollout-restart/",
            "secret.reloader.stakater.com/reload: web",
            said,
        ] {
            assert!(
                c.message.contains(needle),
                "{needle:?} not in {}",
                c.message
            );
        }
        // the lesser problems are told too, after it
        assert!(
            c.message
                .contains("; and the API server refused the rollout restart of DaemonSet/agent")
                && c.message.contains("; and StatefulSet/db not found"),
            "{}",
            c.message
        );
        assert_eq!(recheck_after(&reports), Some(RECHECK));

        // rejected before not found
        let c = condition(&keyed(vec![]), &reports[1..3], 3, &time(100)).expect("a condition");
        assert_eq!(c.reason, "Rejected");
        assert!(
            c.message.contains("DaemonSet/agent") && c.message.contains("denied"),
            "{}",
            c.message
        );

        // from True to Forbidden: a transition
        let ok = condition(
            &keyed(vec![]),
            &[report(
                WorkloadKind::Deployment,
                "web",
                TargetOutcome::UpToDate,
            )],
            3,
            &time(50),
        )
        .expect("a condition");
        let k = with_condition(keyed(vec![]), &ok);
        let c = condition(&k, &reports[..1], 3, &time(100)).expect("a condition");
        assert_eq!(c.last_transition_time, time(100));
        // same reason, another message: a transition too
        let k = with_condition(keyed(vec![]), &c);
        let c2 = condition(&k, &reports, 3, &time(200)).expect("a condition");
        assert_eq!(c2.last_transition_time, time(200));
        let k = with_condition(keyed(vec![]), &c2);
        assert_eq!(
            condition(&k, &reports, 3, &time(300)).map(|c| c.last_transition_time),
            Some(time(200))
        );
    }

    // ---- the glue, against a mocked API server ----

    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ns/deployments/web";
    const PATCH_DEPLOYMENT: &str =
        "/apis/apps/v1/namespaces/ns/deployments/web?&fieldManager=apikey-operator";
    const STATEFULSET: &str = "/apis/apps/v1/namespaces/ns/statefulsets/db";
    const PATCH_STATEFULSET: &str =
        "/apis/apps/v1/namespaces/ns/statefulsets/db?&fieldManager=apikey-operator";
    const DAEMONSET: &str = "/apis/apps/v1/namespaces/ns/daemonsets/agent";
    const ANNOTATION: &str = "restarted.apikey.dev/web";

    /// A workload as the API server returns it: `kind` `name`, created at `created` seconds, at
    /// resourceVersion `rv`, with the key's annotation `recorded` if any, and a pod template that
    /// mounts the key's Secret `web`.
    fn workload(kind: &str, name: &str, created: i64, rv: &str, recorded: Option<&str>) -> Value {
        let pods = json!({
            "containers": [{
                "name": "app",
                "image": "app",
                "volumeMounts": [{ "name": "key", "mountPath": "/var/run/apikey" }],
            }],
            "volumes": [{ "name": "key", "secret": { "secretName": "web" } }],
        });
        workload_running(kind, name, created, rv, recorded, pods)
    }

    /// [`workload`] with pod template spec `pods`.
    fn workload_running(
        kind: &str,
        name: &str,
        created: i64,
        rv: &str,
        recorded: Option<&str>,
        pods: Value,
    ) -> Value {
        let mut meta = json!({
            "name": name,
            "namespace": "ns",
            "uid": format!("uid-{name}"),
            "resourceVersion": rv,
            "creationTimestamp": time(created),
            "annotations": { "deployment.kubernetes.io/revision": "4" },
        });
        if let Some(value) = recorded {
            meta["annotations"][ANNOTATION] = value.into();
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": pods,
                },
            },
        })
    }

    /// `restart_targets` for `key` at generation `generation` (secret generated at 100 s) on a
    /// mocked API server: the running call and the server's end.
    fn start(
        key: &ApiKey,
        generation: u64,
    ) -> (
        tokio::task::JoinHandle<Result<Vec<TargetReport>>>,
        ApiServerVerifier,
    ) {
        let (ctx, server, _) = context(Vec::new(), Vec::new());
        let client = ctx.client.clone();
        drop(ctx);
        let key = key.clone();
        let running = tokio::spawn(async move {
            restart_targets(&client, &key, generation, Some(&time(100))).await
        });
        (running, server)
    }

    async fn finished(
        running: tokio::task::JoinHandle<Result<Vec<TargetReport>>>,
        server: ApiServerVerifier,
    ) -> Result<Vec<TargetReport>> {
        let result = tokio::time::timeout(TIMEOUT, running)
            .await
            .expect("restart_targets finishes")
            .expect("restart_targets does not panic");
        server.expect_no_more_calls().await;
        result
    }

    fn outcomes(reports: &[TargetReport]) -> Vec<TargetOutcome> {
        reports.iter().map(|r| r.outcome.clone()).collect()
    }

    #[tokio::test]
    async fn a_workload_recorded_at_the_previous_generation_is_restarted_in_one_patch() {
        let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "41",
            Some("2/uid-web"),
        ));
        let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            patch.body,
            json!({
                "metadata": {
                    "resourceVersion": "41",
                    "annotations": { ANNOTATION: "3/uid-web" },
                },
                "spec": { "template": { "metadata": {
                    "annotations": { ANNOTATION: "3/uid-web" },
                } } },
            })
        );
        patch.ok(&workload("Deployment", "web", 10, "42", Some("3/uid-web")));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(
            reports,
            vec![report(
                WorkloadKind::Deployment,
                "web",
                TargetOutcome::Restarted
            )]
        );
    }

    #[tokio::test]
    async fn nothing_is_written_to_an_up_to_date_workload() {
        let k = keyed(vec![
            target(WorkloadKind::Deployment, "web"),
            target(WorkloadKind::StatefulSet, "db"),
        ]);
        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "41",
            Some("3/uid-web"),
        ));
        server.expect(Method::GET, STATEFULSET).await.ok(&workload(
            "StatefulSet",
            "db",
            10,
            "9",
            Some("3/uid-web"),
        ));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(
            outcomes(&reports),
            vec![TargetOutcome::UpToDate, TargetOutcome::UpToDate]
        );
    }

    #[tokio::test]
    async fn a_workload_seen_first_and_created_after_the_secret_is_only_recorded() {
        let k = keyed(vec![target(WorkloadKind::StatefulSet, "db")]);
        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, STATEFULSET).await.ok(&workload(
            "StatefulSet",
            "db",
            150,
            "9",
            None,
        ));
        let patch = server.expect(Method::PATCH, PATCH_STATEFULSET).await;
        assert_eq!(
            patch.body,
            json!({ "metadata": {
                "resourceVersion": "9",
                "annotations": { ANNOTATION: "3/uid-web" },
            } }),
            "no template change"
        );
        patch.ok(&workload("StatefulSet", "db", 150, "10", Some("3/uid-web")));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(outcomes(&reports), vec![TargetOutcome::Recorded]);
    }

    #[tokio::test]
    async fn missing_and_forbidden_workloads_are_reports_not_errors() {
        let k = keyed(vec![
            target(WorkloadKind::Deployment, "web"),
            target(WorkloadKind::DaemonSet, "agent"),
            target(WorkloadKind::StatefulSet, "db"),
        ]);
        let (running, mut server) = start(&k, 3);
        server
            .expect(Method::GET, DEPLOYMENT)
            .await
            .not_found("deployments.apps", "web");
        let denied = "daemonsets.apps \"agent\" is forbidden: User \"system:serviceaccount:apikey-system:apikey-operator\" cannot get resource \"daemonsets\" in API group \"apps\" in the namespace \"ns\"";
        server.expect(Method::GET, DAEMONSET).await.fail(
            StatusCode::FORBIDDEN,
            "Forbidden",
            denied,
        );
        // allowed to read, not to patch
        server.expect(Method::GET, STATEFULSET).await.ok(&workload(
            "StatefulSet",
            "db",
            10,
            "9",
            Some("2/uid-web"),
        ));
        server.expect(Method::PATCH, PATCH_STATEFULSET).await.fail(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "cannot patch",
        );
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(
            outcomes(&reports),
            vec![
                TargetOutcome::NotFound,
                TargetOutcome::Forbidden(denied.into()),
                TargetOutcome::Forbidden("cannot patch".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_conflict_reads_again_and_decides_again() {
        let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "41",
            Some("2/uid-web"),
        ));
        server
            .expect(Method::PATCH, PATCH_DEPLOYMENT)
            .await
            .conflict("deployments.apps", "web");
        // meanwhile an earlier run of the operator had restarted it: nothing more to do
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "43",
            Some("3/uid-web"),
        ));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(outcomes(&reports), vec![TargetOutcome::UpToDate]);
    }

    #[tokio::test]
    async fn conflicts_without_end_and_server_errors_are_errors() {
        let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
        let (running, mut server) = start(&k, 3);
        for rv in ["41", "42", "43"] {
            server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
                "Deployment",
                "web",
                10,
                rv,
                Some("2/uid-web"),
            ));
            let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
            assert_eq!(patch.body["metadata"]["resourceVersion"], rv);
            patch.conflict("deployments.apps", "web");
        }
        let err = finished(running, server).await.expect_err("a conflict");
        assert_eq!(err.metric_label(), "conflict");

        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, DEPLOYMENT).await.fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "etcd is down",
        );
        let err = finished(running, server).await.expect_err("an outage");
        assert!(crate::operator::outage::is_outage(&err), "{err}");
    }

    #[tokio::test]
    async fn a_refused_patch_and_a_workload_gone_meanwhile_are_reports() {
        let k = keyed(vec![
            target(WorkloadKind::Deployment, "web"),
            target(WorkloadKind::StatefulSet, "db"),
        ]);
        let (running, mut server) = start(&k, 3);
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "41",
            Some("2/uid-web"),
        ));
        server.expect(Method::PATCH, PATCH_DEPLOYMENT).await.fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.template: Invalid value",
        );
        server.expect(Method::GET, STATEFULSET).await.ok(&workload(
            "StatefulSet",
            "db",
            10,
            "9",
            Some("2/uid-web"),
        ));
        server
            .expect(Method::PATCH, PATCH_STATEFULSET)
            .await
            .not_found("statefulsets.apps", "db");
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(
            outcomes(&reports),
            vec![
                TargetOutcome::Rejected("spec.template: Invalid value".into()),
                TargetOutcome::NotFound,
            ]
        );
    }

    #[tokio::test]
    async fn a_workload_whose_template_does_not_use_the_secret_is_left_alone() {
        let k = keyed(vec![
            target(WorkloadKind::Deployment, "web"),
            target(WorkloadKind::StatefulSet, "db"),
        ]);
        let (running, mut server) = start(&k, 3);
        // another Secret, and the key's name only on a ConfigMap: recorded at an older
        // generation and created long before the secret, it would be restarted if it used it
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload_running(
            "Deployment",
            "web",
            10,
            "41",
            Some("2/uid-web"),
            json!({
                "containers": [{
                    "name": "app",
                    "image": "app",
                    "envFrom": [{ "secretRef": { "name": "other" } }, { "configMapRef": { "name": "web" } }],
                }],
                "volumes": [{ "name": "key", "secret": { "secretName": "other" } }],
            }),
        ));
        // no PATCH: the next call is the next workload's read
        server.expect(Method::GET, STATEFULSET).await.ok(&workload(
            "StatefulSet",
            "db",
            10,
            "9",
            Some("3/uid-web"),
        ));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(
            outcomes(&reports),
            vec![TargetOutcome::NotUsingSecret, TargetOutcome::UpToDate]
        );
        let c = condition(&k, &reports, 3, &time(200)).expect("a condition");
        assert_eq!(c.reason, REASON_SECRET_NOT_USED);
        assert!(
            c.message.starts_with("Deployment/web is not restarted"),
            "{}",
            c.message
        );
    }

    #[tokio::test]
    async fn a_workload_recorded_at_a_later_generation_is_restarted_in_one_patch() {
        // the key was adopted again at generation 1 after the operator's record key was lost
        let k = keyed(vec![target(WorkloadKind::Deployment, "web")]);
        let (running, mut server) = start(&k, 1);
        server.expect(Method::GET, DEPLOYMENT).await.ok(&workload(
            "Deployment",
            "web",
            10,
            "41",
            Some("5/uid-web"),
        ));
        let patch = server.expect(Method::PATCH, PATCH_DEPLOYMENT).await;
        assert_eq!(
            patch.body["spec"]["template"]["metadata"]["annotations"][ANNOTATION],
            "1/uid-web"
        );
        assert_eq!(patch.body["metadata"]["resourceVersion"], "41");
        patch.ok(&workload("Deployment", "web", 10, "42", Some("1/uid-web")));
        let reports = finished(running, server).await.expect("no error");
        assert_eq!(outcomes(&reports), vec![TargetOutcome::Restarted]);
    }

    #[tokio::test]
    async fn no_targets_no_calls() {
        let (running, server) = start(&keyed(vec![]), 3);
        assert_eq!(finished(running, server).await.expect("no error"), vec![]);
    }
}
