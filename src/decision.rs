//! "What must happen to this key?": pure decisions, tested without a cluster.
//!
//! The questions are asked in order, like cert-manager's issuing policies: is this ApiKey the
//! active one for its user, is its Secret name free, does the Secret exist, is the operator's
//! sealed record in it intact, does it still carry the operator's label, has a new regeneration
//! been asked for. The first that calls for action decides.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;

use crate::crd::ApiKey;
use crate::credentials;
use crate::rotation::{Policy, Previous};
use crate::secret::{self, Integrity, ManagedSecret};
use crate::user;

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

/// Why new credentials are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// The key's first client id and secret.
    Created,
    /// A new value of the regenerate annotation.
    Regenerated,
    /// The secret was older than `spec.rotation.interval`.
    Scheduled,
    /// The Secret was deleted by someone else.
    SecretDeleted,
    /// The Secret's credentials or the operator's record in it were changed by someone else.
    SecretAltered,
}

impl IssueReason {
    /// Event reason shown by `kubectl describe`.
    pub fn event_reason(self) -> &'static str {
        match self {
            IssueReason::Created => "Created",
            IssueReason::Regenerated => "Regenerated",
            IssueReason::Scheduled => "Rotated",
            IssueReason::SecretDeleted | IssueReason::SecretAltered => "Repaired",
        }
    }

    /// Event action: what the operator did.
    pub fn event_action(self) -> &'static str {
        match self {
            IssueReason::Created => "GenerateKey",
            IssueReason::Regenerated => "RegenerateSecret",
            IssueReason::Scheduled => "RotateSecret",
            IssueReason::SecretDeleted => "RecreateSecret",
            IssueReason::SecretAltered => "RewriteSecret",
        }
    }

    /// Label for the metrics of issued keys, also written into the Secret's record
    /// ([`crate::secret::REASON_ANNOTATION`]).
    pub fn metric_label(self) -> &'static str {
        match self {
            IssueReason::Created => "created",
            IssueReason::Regenerated => "regenerated",
            IssueReason::Scheduled => "scheduled",
            IssueReason::SecretDeleted => "repaired_deleted",
            IssueReason::SecretAltered => "repaired_altered",
        }
    }

    /// The reason of a record's [`IssueReason::metric_label`]; `None` for anything else (such as
    /// `adopted`: a record re-sealed without a new secret).
    pub fn from_label(label: &str) -> Option<Self> {
        [
            IssueReason::Created,
            IssueReason::Regenerated,
            IssueReason::Scheduled,
            IssueReason::SecretDeleted,
            IssueReason::SecretAltered,
        ]
        .into_iter()
        .find(|r| r.metric_label() == label)
    }

    /// What made the key rotate, for the metric of rotations: `annotation`, `schedule` or
    /// `repair`; `None` for a key's first secret, which is no rotation.
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            IssueReason::Created => None,
            IssueReason::Regenerated => Some("annotation"),
            IssueReason::Scheduled => Some("schedule"),
            IssueReason::SecretDeleted | IssueReason::SecretAltered => Some("repair"),
        }
    }

    /// Human-readable explanation, free of secret material.
    pub fn describe(self, secret_name: &str) -> String {
        match self {
            IssueReason::Created => {
                format!("generated a client id and secret into Secret {secret_name}")
            }
            IssueReason::Regenerated => format!(
                "generated a new client secret into Secret {secret_name} for a new value of the regenerate annotation"
            ),
            IssueReason::Scheduled => format!(
                "generated a new client secret into Secret {secret_name}: the previous one was older than spec.rotation.interval"
            ),
            IssueReason::SecretDeleted => {
                format!("Secret {secret_name} was deleted; wrote it again with a new client secret")
            }
            IssueReason::SecretAltered => format!(
                "Secret {secret_name} was altered by someone else (its credentials or the operator's sealed record in it); wrote a new client secret"
            ),
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
        /// The secret being replaced, kept for the grace period (see [`crate::rotation`]).
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
/// (compared by [`crate::user::canonical`]). `Err` holds the name of the active one.
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
mod tests {
    use super::*;
    use crate::crd::{ApiKeyStatus, REGENERATE_ANNOTATION};
    use crate::test_support::{key, managed};
    use StatusClientId::{Unique, Untrusted};

    /// [`super::decide`] with no rotation policy, at the epoch.
    fn decide(
        key: &ApiKey,
        active: Result<(), String>,
        secret: &SecretState,
        status_client_id: StatusClientId<'_>,
    ) -> Plan {
        super::decide(
            key,
            active,
            secret,
            status_client_id,
            &Policy::default(),
            Timestamp::UNIX_EPOCH,
        )
    }

    /// A client id sealed in the status, at generation 1.
    fn sealed(id: &str) -> StatusClientId<'_> {
        StatusClientId::Sealed { id, generation: 1 }
    }

    const ID: &str = "akid_AAAAAAAAAAAAAAAAAAAAAA";

    fn with_request(mut k: ApiKey, value: &str) -> ApiKey {
        k.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REGENERATE_ANNOTATION.into(), value.into());
        k
    }

    fn with_client_id(mut k: ApiKey, id: &str) -> ApiKey {
        k.status = Some(ApiKeyStatus {
            client_id: Some(id.into()),
            ..Default::default()
        });
        k
    }

    fn with_integrity(mut m: ManagedSecret, integrity: Integrity) -> ManagedSecret {
        m.integrity = integrity;
        m
    }

    #[test]
    fn only_a_regeneration_the_status_agrees_with_skips_the_fresh_read() {
        let k = key("web", "alice", 1);
        let secret = managed(&k, Some("v1"));
        let mut k = with_request(k, "v2");
        let owned = SecretState::Owned(secret.clone());
        let regenerate = decide(&k, Ok(()), &owned, Untrusted);
        assert!(matches!(
            regenerate,
            Plan::Issue {
                reason: IssueReason::Regenerated,
                ..
            }
        ));
        // no status yet, or a status showing another hash: the cache may be behind
        assert!(confirm_on_fresh_read(&k, &regenerate, &owned));
        k.status = Some(ApiKeyStatus {
            secret_hash: Some("$argon2id$other".into()),
            ..ApiKeyStatus::default()
        });
        assert!(confirm_on_fresh_read(&k, &regenerate, &owned));
        // the status shows the cached Secret's hash: the precondition suffices
        k.status = Some(ApiKeyStatus {
            secret_hash: secret.hash.clone(),
            ..ApiKeyStatus::default()
        });
        assert!(!confirm_on_fresh_read(&k, &regenerate, &owned));

        // a missing Secret is always read; an altered, unsealed or unlabelled one too; nothing to
        // write, nothing to read
        let created = decide(&k, Ok(()), &SecretState::Missing, Untrusted);
        assert!(confirm_on_fresh_read(&k, &created, &SecretState::Missing));
        for integrity in [Integrity::Altered, Integrity::Unsealed] {
            let state = SecretState::Owned(with_integrity(secret.clone(), integrity));
            assert!(confirm_on_fresh_read(
                &k,
                &decide(&k, Ok(()), &state, Untrusted),
                &state
            ));
        }
        let mut unlabelled = secret.clone();
        unlabelled.labelled = false;
        let unlabelled = SecretState::Owned(unlabelled);
        assert!(confirm_on_fresh_read(
            &k,
            &decide(&k, Ok(()), &unlabelled, Untrusted),
            &unlabelled
        ));
        let in_sync = SecretState::Owned(managed(&k, Some("v2")));
        assert!(!confirm_on_fresh_read(
            &k,
            &decide(&k, Ok(()), &in_sync, Untrusted),
            &in_sync
        ));
        assert!(!confirm_on_fresh_read(
            &k,
            &Plan::Conflict,
            &SecretState::Foreign
        ));
    }

    /// A policy with `grace` and `interval` (whole seconds; 0: none).
    fn policy(grace: u64, interval: u64) -> Policy {
        Policy {
            grace: std::time::Duration::from_secs(grace),
            interval: (interval > 0).then(|| std::time::Duration::from_secs(interval)),
            ..Policy::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn a_due_key_rotates_once_by_schedule_and_its_new_secret_is_not_due() {
        // the test Secret was generated at creds()'s rotated_at
        let k = key("a", "alice", 1);
        let m = managed(&k, None);
        let rotated = m.rotated_at.clone().unwrap().0;
        let p = policy(0, 100);
        let due = p.next_rotation(rotated, "uid-a").unwrap();
        let plan_at = |now| {
            super::decide(
                &k,
                Ok(()),
                &SecretState::Owned(m.clone()),
                Untrusted,
                &p,
                now,
            )
        };
        assert!(matches!(plan_at(at(due.as_second() - 1)), Plan::InSync(_)));
        assert_eq!(
            plan_at(due),
            Plan::Issue {
                reason: IssueReason::Scheduled,
                client_id: m.client_id.clone(),
                replaces: Some("1".into()),
                generation: 2,
                previous: None,
            }
        );
        // the schedule is counted from the Secret's own time: a new secret moves it on
        let mut rotated_now = m.clone();
        rotated_now.rotated_at = Some(Time(due));
        assert!(matches!(
            super::decide(
                &k,
                Ok(()),
                &SecretState::Owned(rotated_now),
                Untrusted,
                &p,
                due
            ),
            Plan::InSync(_)
        ));
        // an expired key is not rotated; a regeneration request comes before the schedule
        let expired = Policy {
            expires_at: Some(rotated),
            ..p.clone()
        };
        assert!(matches!(
            super::decide(
                &k,
                Ok(()),
                &SecretState::Owned(m.clone()),
                Untrusted,
                &expired,
                due
            ),
            Plan::InSync(_)
        ));
        let asked = with_request(k.clone(), "v2");
        assert!(matches!(
            super::decide(&asked, Ok(()), &SecretState::Owned(m), Untrusted, &p, due),
            Plan::Issue {
                reason: IssueReason::Regenerated,
                ..
            }
        ));
    }

    #[test]
    fn a_rotation_with_a_grace_period_keeps_the_current_hash_as_previous_a_repair_does_not() {
        let k = with_request(key("a", "alice", 1), "v2");
        let m = managed(&k, Some("v1"));
        let p = policy(600, 0);
        let Plan::Issue { previous, .. } = super::decide(
            &k,
            Ok(()),
            &SecretState::Owned(m.clone()),
            Untrusted,
            &p,
            at(5000),
        ) else {
            panic!("a new request regenerates");
        };
        assert_eq!(
            previous,
            Some(Previous {
                hash: m.hash.clone().unwrap(),
                generation: m.generation,
                until: at(5600),
            })
        );
        let altered = with_integrity(m, Integrity::Altered);
        assert!(matches!(
            super::decide(
                &k,
                Ok(()),
                &SecretState::Owned(altered),
                Untrusted,
                &p,
                at(5000)
            ),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                previous: None,
                ..
            }
        ));
        assert!(matches!(
            super::decide(&k, Ok(()), &SecretState::Missing, Untrusted, &p, at(5000)),
            Plan::Issue { previous: None, .. }
        ));
    }

    #[test]
    fn first_reconcile_creates() {
        let plan = decide(
            &key("a", "alice", 1),
            Ok(()),
            &SecretState::Missing,
            Untrusted,
        );
        assert_eq!(
            plan,
            Plan::Issue {
                reason: IssueReason::Created,
                client_id: None,
                replaces: None,
                generation: 1,
                previous: None,
            }
        );
    }

    #[test]
    fn annotation_present_at_creation_does_not_regenerate_after_create() {
        // The create writes the current request as handled, so the next reconcile is in sync.
        let k = with_request(key("a", "alice", 1), "v1");
        let m = managed(&k, Some("v1"));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::InSync(_)
        ));
    }

    #[test]
    fn new_request_value_regenerates_keeping_client_id() {
        let k = with_request(key("a", "alice", 1), "v2");
        let m = managed(&k, Some("v1"));
        let id = m.client_id.clone();
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::Issue {
                reason: IssueReason::Regenerated,
                client_id: id,
                replaces: Some("1".into()),
                generation: 2,
                previous: None,
            }
        );
    }

    #[test]
    fn unchanged_or_removed_request_never_regenerates() {
        let k = with_request(key("a", "alice", 1), "v1");
        let m = managed(&k, Some("v1"));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
            Plan::InSync(_)
        ));
        let removed = key("a", "alice", 1);
        assert!(matches!(
            decide(&removed, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::InSync(_)
        ));
        let empty = with_request(key("a", "alice", 1), "");
        let m0 = managed(&empty, None);
        assert!(matches!(
            decide(&empty, Ok(()), &SecretState::Owned(m0), Untrusted),
            Plan::InSync(_)
        ));
    }

    #[test]
    fn a_long_request_is_answered_by_its_digest_and_by_a_verbatim_copy() {
        let long = "x".repeat(262_000);
        let k = with_request(key("a", "alice", 1), &long);
        let mut m = managed(&k, None);
        m.handled_request = Some(secret::handled_form(&long));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
            Plan::InSync(_)
        ));
        // a release before digests stored it verbatim: an upgrade does not take it for new
        m.handled_request = Some(long.clone());
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
            Plan::InSync(_)
        ));
        let k = with_request(key("a", "alice", 1), &"y".repeat(262_000));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::Issue {
                reason: IssueReason::Regenerated,
                ..
            }
        ));
    }

    #[test]
    fn a_deleted_secret_keeps_a_sealed_client_id_and_only_that() {
        let k = with_client_id(key("a", "alice", 1), ID);
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Missing, sealed(ID)),
            Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: Some(ID.into()),
                replaces: None,
                generation: 2,
                previous: None,
            }
        );
        // a client id in the status without a seal of the current key (forged, or from before
        // seals) is not taken: a new client id, so that no key ever takes another's
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Missing, Untrusted),
            Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: None,
                replaces: None,
                generation: 1,
                previous: None,
            }
        );
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Missing, sealed("akid_short")),
            Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: None,
                replaces: None,
                generation: 2,
                previous: None,
            },
            "a malformed id is never kept"
        );
    }

    #[test]
    fn an_unsealed_client_id_held_by_no_other_key_is_kept_but_proves_no_seal() {
        // a status from before seals: its client id is kept for a deleted Secret
        let k = with_client_id(key("a", "alice", 1), ID);
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Missing, Unique(ID)),
            Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: Some(ID.into()),
                replaces: None,
                generation: 1,
                previous: None,
            }
        );
        // and an unsealed record beside it is adopted, not taken for an edit
        let m = with_integrity(managed(&k, None), Integrity::Unsealed);
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m), Unique(ID)),
            Plan::Adopt { .. }
        ));
    }

    #[test]
    fn an_altered_secret_is_repaired_with_the_sealed_client_id() {
        let k = key("a", "alice", 1);
        let m = with_integrity(managed(&k, None), Integrity::Altered);
        let id = m.client_id.clone();
        assert_eq!(
            decide(
                &k,
                Ok(()),
                &SecretState::Owned(m.clone()),
                sealed(id.as_deref().unwrap())
            ),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: id,
                replaces: Some("1".into()),
                generation: 2,
                previous: None,
            }
        );
        // the Secret's own client id is not trusted: it may be another key's
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: None,
                replaces: Some("1".into()),
                generation: 1,
                previous: None,
            }
        );
    }

    #[test]
    fn a_record_the_key_cannot_judge_is_adopted_once_and_an_edit_afterwards() {
        let k = with_request(key("a", "alice", 1), "v9");
        let m = with_integrity(managed(&k, Some("v1")), Integrity::Unsealed);
        // never sealed with the current key (an upgrade, a lost key): sealed without rotation,
        // even with a regeneration pending, which the next reconcile answers
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
            Plan::Adopt {
                replaces: Some("1".into()),
                generation: 1,
            }
        );
        // a key already sealed with the current key: an unsealed record is an edit
        let id = m.client_id.clone();
        assert_eq!(
            decide(
                &k,
                Ok(()),
                &SecretState::Owned(m),
                sealed(id.as_deref().unwrap())
            ),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: id,
                replaces: Some("1".into()),
                generation: 2,
                previous: None,
            }
        );
    }

    #[test]
    fn an_older_sealed_record_put_back_is_an_edit_a_newer_one_is_not() {
        let mut k = key("a", "alice", 1);
        let current = managed(&k, None);
        k.status = Some(ApiKeyStatus {
            client_id: current.client_id.clone(),
            secret_hash: current.hash.clone(),
            ..Default::default()
        });
        let id = current.client_id.clone().unwrap();
        let at = |generation| StatusClientId::Sealed {
            id: &id,
            generation,
        };
        let mut old = managed(&k, None);
        old.generation = 1;
        old.hash = Some("$argon2id$v=19$m=64,t=1,p=1$b2xkc2FsdA$b2xkaGFzaA".into());
        // the status published generation 2: a sealed copy of generation 1 is a replay
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(old.clone()), at(2)),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                generation: 3,
                ..
            }
        ));
        // the same generation with another hash than the status shows: a replay too
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(old.clone()), at(1)),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                ..
            }
        ));
        // the status's own record, or a newer one (the status not caught up yet): in sync
        let mut same = current.clone();
        same.generation = 1;
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(same), at(1)),
            Plan::InSync(_)
        ));
        old.generation = 3;
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(old), at(2)),
            Plan::InSync(_)
        ));
    }

    #[test]
    fn a_forged_generation_counts_for_nothing_and_cannot_overflow() {
        let k = key("a", "alice", 1);
        let mut m = with_integrity(managed(&k, None), Integrity::Altered);
        m.generation = u64::MAX;
        let id = m.client_id.clone().unwrap();
        let sealed_at_2 = StatusClientId::Sealed {
            id: &id,
            generation: 2,
        };
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m), sealed_at_2),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                generation: 3,
                ..
            }
        ));
        assert_eq!(next_generation(u64::MAX), i64::MAX as u64);
        assert_eq!(next_generation(i64::MAX as u64), i64::MAX as u64);
    }

    #[test]
    fn a_sealed_secret_without_the_label_gets_it_back_without_rotation() {
        let k = with_request(key("a", "alice", 1), "v2");
        let mut m = managed(&k, Some("v1"));
        m.labelled = false;
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
            Plan::Relabel {
                replaces: Some("1".into())
            }
        );
    }

    #[test]
    fn foreign_secret_is_a_conflict_even_with_a_pending_request() {
        let k = with_request(key("a", "alice", 1), "v9");
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Foreign, sealed(ID)),
            Plan::Conflict
        );
    }

    #[test]
    fn duplicate_comes_first() {
        let k = key("b", "alice", 2);
        assert_eq!(
            decide(&k, Err("a".into()), &SecretState::Missing, Untrusted),
            Plan::Duplicate { active: "a".into() }
        );
    }

    #[test]
    fn reasons_round_trip_through_their_labels() {
        for reason in [
            IssueReason::Created,
            IssueReason::Regenerated,
            IssueReason::Scheduled,
            IssueReason::SecretDeleted,
            IssueReason::SecretAltered,
        ] {
            assert_eq!(IssueReason::from_label(reason.metric_label()), Some(reason));
        }
        assert_eq!(IssueReason::from_label("adopted"), None);
    }

    #[test]
    fn oldest_key_for_a_user_is_active_then_by_name() {
        let a = key("a", "alice", 10);
        let b = key("b", "alice", 5);
        let c = key("c", "alice", 5);
        let other_user = key("z", "bob", 1);
        let all = [a.clone(), b.clone(), c.clone(), other_user.clone()];
        assert_eq!(active_for_user(&b, &all), Ok(()));
        assert_eq!(active_for_user(&c, &all), Err("b".into()));
        assert_eq!(active_for_user(&a, &all), Err("b".into()));
        assert_eq!(active_for_user(&other_user, &all), Ok(()));
        // once b is gone, c takes over
        assert_eq!(active_for_user(&c, &[a.clone(), c.clone()]), Ok(()));
        // other namespaces do not count
        let mut elsewhere = key("0", "alice", 1);
        elsewhere.metadata.namespace = Some("other".into());
        assert_eq!(active_for_user(&b, &[elsewhere, b.clone()]), Ok(()));
    }

    #[test]
    fn users_are_the_same_after_nfc_and_differ_by_case() {
        let composed = key("a", "jos\u{e9}", 1);
        let decomposed = key("b", "jose\u{301}", 2);
        let upper = key("c", "JOS\u{c9}", 3);
        let all = [composed.clone(), decomposed.clone(), upper.clone()];
        assert_eq!(active_for_user(&decomposed, &all), Err("a".into()));
        assert_eq!(active_for_user(&upper, &all), Ok(()));
    }
}
