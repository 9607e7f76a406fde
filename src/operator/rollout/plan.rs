//! Which workloads of `spec.rolloutRestart` a new client secret restarts, and what the key's
//! `RolloutRestart` condition says about them: pure ([`step`], [`uses_secret`], [`condition`]),
//! tested without a cluster. The reads and patches that carry a plan out are [`super`]'s.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt as _;
use sha2::{Digest as _, Sha256};

use crate::core::crd::{ApiKey, ROLLOUT_RESTART_CONDITION, RolloutTarget, WorkloadKind};

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
pub(super) fn parse_value(value: &str) -> Option<(u64, &str)> {
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
pub(super) fn describe(target: &RolloutTarget) -> String {
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

/// How long to wait before calling [`super::restart_targets`] again on its own: [`RECHECK`] if a
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
