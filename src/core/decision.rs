//! "What must happen to this key?": pure decisions, tested without a cluster.
//!
//! The questions are asked in order, like cert-manager's issuing policies: is this ApiKey the
//! active one for its user, is its Secret name free, does the Secret exist, is the operator's
//! sealed record in it intact, does it still carry the operator's label, has a new regeneration
//! been asked for. The first that calls for action decides.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;

use crate::core::crd::ApiKey;
use crate::core::credentials;
use crate::core::issue::IssueReason;
use crate::core::rotation::{Policy, Previous};
use crate::core::secret::{self, Integrity, ManagedSecret};
use crate::core::user;

/// The ApiKey's Secret as the operator finds it.
#[derive(Clone, Debug)]
// One value per reconcile, never stored: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum SecretState {
    /// No Secret of that name exists.
    Missing,
    /// A Secret of that name exists and is not controlled by this ApiKey: never touched.
    Foreign,
    /// A Secret this ApiKey controls.
    Owned(ManagedSecret),
}

impl SecretState {
    /// Classifies `secret` (what was read of the object named by the key's `secretName`) for
    /// `key`.
    pub fn of(key: &ApiKey, secret: Option<ManagedSecret>) -> Self {
        match secret {
            None => SecretState::Missing,
            Some(s) if s.is_controlled_by(key) => SecretState::Owned(s),
            Some(_) => SecretState::Foreign,
        }
    }
}

/// What the reconciler must do for one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// An older ApiKey is the active key for this user: no Secret, Ready=False DuplicateUser.
    Duplicate {
        /// Name of the active ApiKey.
        active: String,
    },
    /// The Secret name is taken by a Secret this ApiKey does not control: Ready=False SecretConflict.
    Conflict,
    /// Write new credentials into the Secret.
    Issue {
        /// Why.
        reason: IssueReason,
        /// The client id to keep, or `None` to generate a new one (the key's first, or when the
        /// one it had cannot be verified).
        client_id: Option<String>,
        /// `resourceVersion` of the Secret this decision was taken on, the precondition of its
        /// replacement; `None` when the Secret is missing and must be created.
        replaces: Option<String>,
        /// The generation of the new client secret: one more than any the key had.
        generation: u64,
        /// The secret being replaced, kept for the grace period (see [`crate::core::rotation`]).
        previous: Option<Previous>,
    },
    /// The Secret holds well-formed credentials under a record the operator cannot judge (a
    /// release before seals, or a lost record key), and this ApiKey was never sealed with the
    /// current key: hash its secret again and seal the record, keeping the credentials. No
    /// rotation: an upgrade or a lost key must never rotate every key at once.
    Adopt {
        /// `resourceVersion` of the Secret, the precondition of the write.
        replaces: Option<String>,
        /// The generation the sealed record gets if the status publishes none: one more than the
        /// status published under the operator's seal (which, for a key to be adopted, is none:
        /// 1). The reconciler keeps the status's own once the record is adoptable.
        generation: u64,
    },
    /// The Secret is the key's own and sealed, but lost the operator's managed-by label (so the
    /// watch no longer sees it): put the label back, nothing else.
    Relabel {
        /// `resourceVersion` of the Secret, the precondition of the write.
        replaces: Option<String>,
    },
    /// The Secret is intact and answers the latest regeneration request: only the status may need
    /// to catch up with it.
    InSync(ManagedSecret),
}

impl Plan {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::Duplicate { .. } => "duplicate",
            Plan::Conflict => "conflict",
            Plan::Issue { reason, .. } => reason.metric_label(),
            Plan::Adopt { .. } => "adopted",
            Plan::Relabel { .. } => "relabelled",
            Plan::InSync(_) => "in_sync",
        }
    }
}

/// The client id an ApiKey's status publishes, as far as the operator can trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClientId<'a> {
    /// Sealed with the operator's current record key for this very ApiKey, with the generation
    /// of the client secret the status published: the operator published both, and has sealed
    /// this key before.
    Sealed {
        /// The client id.
        id: &'a str,
        /// `status.secretGeneration`.
        generation: u64,
    },
    /// Not sealed by the current key (written by a release before seals, under a lost key, or by
    /// anyone with rights on `apikeys/status`), and held by no other key the operator sees.
    Unique(&'a str),
    /// None, malformed, or held by another key: never written into a Secret.
    Untrusted,
}

impl<'a> StatusClientId<'a> {
    /// The client id to keep for a Secret written again, if any.
    pub fn keep(self) -> Option<String> {
        match self {
            StatusClientId::Sealed { id, .. } | StatusClientId::Unique(id)
                if credentials::is_well_formed_client_id(id) =>
            {
                Some(id.to_owned())
            }
            _ => None,
        }
    }

    fn sealed(self) -> bool {
        matches!(self, StatusClientId::Sealed { .. })
    }

    /// The secret generation the status published under the operator's seal (0: none).
    fn generation(self) -> u64 {
        match self {
            StatusClientId::Sealed { generation, .. } => generation,
            _ => 0,
        }
    }
}

/// Decides what must happen to `key` at `now`, given whether it is the active key for its user
/// (`Err` holds the name of the active one), the state of its Secret, how far the client id its
/// status publishes can be trusted, and its rotation policy.
pub fn decide(
    key: &ApiKey,
    active: Result<(), String>,
    secret: &SecretState,
    status_client_id: StatusClientId<'_>,
    policy: &Policy,
    now: Timestamp,
) -> Plan {
    if let Err(active) = active {
        return Plan::Duplicate { active };
    }
    let keep = status_client_id.keep();
    let published = status_client_id.generation();
    // One more than any generation the operator itself wrote (a sealed record's, or the sealed
    // status's); an unsealed record's is anyone's number and never counts.
    let next = |managed: Option<&ManagedSecret>| {
        let sealed = managed
            .filter(|m| m.integrity == Integrity::Sealed)
            .map_or(0, |m| m.generation);
        next_generation(published.max(sealed))
    };
    match secret {
        SecretState::Foreign => Plan::Conflict,
        SecretState::Missing => {
            let ever_issued = key
                .status
                .as_ref()
                .is_some_and(|s| s.client_id.is_some() || s.secret_hash.is_some());
            Plan::Issue {
                reason: if ever_issued || keep.is_some() {
                    IssueReason::SecretDeleted
                } else {
                    IssueReason::Created
                },
                client_id: keep,
                replaces: None,
                generation: next(None),
                previous: None,
            }
        }
        SecretState::Owned(managed) => {
            let altered = Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: keep.clone(),
                replaces: managed.resource_version.clone(),
                generation: next(Some(managed)),
                previous: None,
            };
            match managed.integrity {
                // Edited; or a record the operator cannot judge on a key it has already sealed with
                // its current key, which only an edit explains.
                Integrity::Altered => altered,
                Integrity::Unsealed if status_client_id.sealed() => altered,
                Integrity::Unsealed => Plan::Adopt {
                    replaces: managed.resource_version.clone(),
                    generation: next(None),
                },
                // An older sealed record put back (a copy saved before a rotation): the status
                // has published a later generation. A later one than the status is the operator's
                // own write that the status has not caught up with yet.
                Integrity::Sealed if is_replayed(key, managed, published) => altered,
                Integrity::Sealed if !managed.labelled => Plan::Relabel {
                    replaces: managed.resource_version.clone(),
                },
                Integrity::Sealed => {
                    let rotate = |reason| Plan::Issue {
                        reason,
                        client_id: managed.client_id.clone(),
                        replaces: managed.resource_version.clone(),
                        generation: next(Some(managed)),
                        previous: policy.previous_for(
                            reason,
                            managed.hash.as_deref(),
                            managed.generation,
                            now,
                        ),
                    };
                    match key.regenerate_request() {
                        Some(request)
                            if !secret::answers(managed.handled_request.as_deref(), request) =>
                        {
                            rotate(IssueReason::Regenerated)
                        }
                        _ if is_due(key, managed, policy, now) => rotate(IssueReason::Scheduled),
                        _ => Plan::InSync(managed.clone()),
                    }
                }
            }
        }
    }
}

/// Whether the schedule asks for a new secret: `spec.rotation.interval` is set, the key has not
/// expired, and the Secret's sealed `rotated-at` plus the interval and the key's spread has come.
/// A record without a time (none the operator writes) is never due.
fn is_due(key: &ApiKey, managed: &ManagedSecret, policy: &Policy, now: Timestamp) -> bool {
    if policy.is_expired(now) {
        return false;
    }
    let uid = key.metadata.uid.as_deref().unwrap_or_default();
    managed
        .rotated_at
        .as_ref()
        .and_then(|Time(at)| policy.next_rotation(*at, uid))
        .is_some_and(|due| now >= due)
}

/// The generation after `generation`, never above `i64::MAX` (the status publishes it as a
/// Kubernetes integer): at a billion rotations a second that is three hundred years away, so the
/// cap only ever stops a forged number from wrapping around.
pub fn next_generation(generation: u64) -> u64 {
    generation.saturating_add(1).min(i64::MAX as u64)
}

/// Whether a sealed record is older than what the status published under the operator's seal
/// (`published`, 0 when nothing is sealed): an earlier generation, or the same one with another
/// hash.
fn is_replayed(key: &ApiKey, managed: &ManagedSecret, published: u64) -> bool {
    let shown = key.status.as_ref().and_then(|s| s.secret_hash.as_ref());
    managed.generation < published
        || (managed.generation == published && shown.is_some() && shown != managed.hash.as_ref())
}

/// Whether a plan decided from the caches must be decided again on a fresh read of the Secret
/// before anything is written, so that a lagging cache never causes a rotation.
///
/// A Secret missing from the cache may exist (a foreign one, or one that lost the operator's
/// label, is not in the label-selected cache, or the cache is behind): only a read can tell. A
/// regeneration decided on a cached Secret that the status agrees with needs no read: the write
/// is preconditioned on that Secret's resourceVersion, so if the cache was behind, the write fails
/// and nothing rotates. When status and cached Secret disagree, the cache may be behind the
/// operator's own last rotation; reading first saves computing a hash that the precondition would
/// throw away. Adopting a record needs the plaintext, which the cache does not keep.
pub fn confirm_on_fresh_read(key: &ApiKey, plan: &Plan, cached: &SecretState) -> bool {
    match (plan, cached) {
        (_, SecretState::Missing) => true,
        (
            Plan::Issue {
                reason: IssueReason::Regenerated | IssueReason::Scheduled,
                ..
            },
            SecretState::Owned(managed),
        ) => {
            let published = key.status.as_ref().and_then(|s| s.secret_hash.as_ref());
            published.is_none() || published != managed.hash.as_ref()
        }
        (Plan::Issue { .. } | Plan::Adopt { .. } | Plan::Relabel { .. }, _) => true,
        _ => false,
    }
}

/// Whether `key` is the active key for its user among `keys` (all ApiKeys the operator sees): the
/// oldest by creation time, then by name, among live ApiKeys in its namespace for the same user
/// (compared by [`crate::core::user::canonical`]). `Err` holds the name of the active one.
pub fn active_for_user<'a>(
    key: &ApiKey,
    keys: impl IntoIterator<Item = &'a ApiKey>,
) -> Result<(), String> {
    let rank = |k: &ApiKey| {
        (
            k.metadata.creation_timestamp.clone().map(|Time(t)| t),
            k.name_any(),
        )
    };
    let mine = rank(key);
    let user = user::canonical(&key.spec.user);
    let older = keys
        .into_iter()
        .filter(|k| {
            k.namespace() == key.namespace()
                && user::canonical(&k.spec.user) == user
                && k.uid() != key.uid()
                && k.metadata.deletion_timestamp.is_none()
        })
        .map(rank)
        .filter(|r| r < &mine)
        .min();
    match older {
        Some((_, name)) => Err(name),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
