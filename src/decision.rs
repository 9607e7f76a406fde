//! "What must happen to this key?": pure decisions, tested without a cluster.
//!
//! The questions are asked in order, like cert-manager's issuing policies: is this ApiKey the
//! active one for its user, is its Secret name free, does the Secret exist, is it intact, has a new
//! regeneration been asked for. The first that calls for action decides.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;

use crate::crd::ApiKey;
use crate::credentials;
use crate::secret::ManagedSecret;

/// The ApiKey's Secret as the operator finds it.
#[derive(Clone, Debug)]
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
    /// The Secret was deleted by someone else.
    SecretDeleted,
    /// The Secret's credentials were changed or removed by someone else.
    SecretAltered,
}

impl IssueReason {
    /// Event reason shown by `kubectl describe`.
    pub fn event_reason(self) -> &'static str {
        match self {
            IssueReason::Created => "Created",
            IssueReason::Regenerated => "Regenerated",
            IssueReason::SecretDeleted | IssueReason::SecretAltered => "Repaired",
        }
    }

    /// Event action: what the operator did.
    pub fn event_action(self) -> &'static str {
        match self {
            IssueReason::Created => "GenerateKey",
            IssueReason::Regenerated => "RegenerateSecret",
            IssueReason::SecretDeleted => "RecreateSecret",
            IssueReason::SecretAltered => "RewriteSecret",
        }
    }

    /// Label for the metrics of issued keys.
    pub fn metric_label(self) -> &'static str {
        match self {
            IssueReason::Created => "created",
            IssueReason::Regenerated => "regenerated",
            IssueReason::SecretDeleted => "repaired_deleted",
            IssueReason::SecretAltered => "repaired_altered",
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
            IssueReason::SecretDeleted => format!(
                "Secret {secret_name} was deleted; wrote it again with a new client secret and the same client id"
            ),
            IssueReason::SecretAltered => format!(
                "Secret {secret_name} was altered by hand; wrote a new client secret and the same client id"
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
        /// The client id to keep, or `None` to generate the key's first one.
        client_id: Option<String>,
        /// `resourceVersion` of the Secret this decision was taken on, the precondition of its
        /// replacement; `None` when the Secret is missing and must be created.
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
            Plan::InSync(_) => "in_sync",
        }
    }
}

/// Decides what must happen to `key`, given whether it is the active key for its user (`Err` holds
/// the name of the active one) and the state of its Secret.
pub fn decide(key: &ApiKey, active: Result<(), String>, secret: &SecretState) -> Plan {
    if let Err(active) = active {
        return Plan::Duplicate { active };
    }
    let status_client_id = key
        .status
        .as_ref()
        .and_then(|s| s.client_id.clone())
        .filter(|id| credentials::is_well_formed_client_id(id));
    match secret {
        SecretState::Foreign => Plan::Conflict,
        SecretState::Missing => match status_client_id {
            Some(id) => Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: Some(id),
                replaces: None,
            },
            None => Plan::Issue {
                reason: IssueReason::Created,
                client_id: None,
                replaces: None,
            },
        },
        SecretState::Owned(managed) if !managed.intact => Plan::Issue {
            reason: IssueReason::SecretAltered,
            client_id: status_client_id.or_else(|| {
                managed
                    .client_id
                    .clone()
                    .filter(|id| credentials::is_well_formed_client_id(id))
            }),
            replaces: managed.resource_version.clone(),
        },
        SecretState::Owned(managed) => match key.regenerate_request() {
            Some(request) if managed.handled_request.as_deref() != Some(request) => Plan::Issue {
                reason: IssueReason::Regenerated,
                client_id: managed.client_id.clone(),
                replaces: managed.resource_version.clone(),
            },
            _ => Plan::InSync(managed.clone()),
        },
    }
}

/// Whether a plan decided from the caches must be decided again on a fresh read of the Secret
/// before anything is written, so that a lagging cache never causes a rotation.
///
/// A Secret missing from the cache may exist (a foreign one is not in the label-selected cache,
/// or the cache is behind): only a read can tell. A regeneration decided on a cached Secret that
/// the status agrees with needs no read: the write is preconditioned on that Secret's
/// resourceVersion, so if the cache was behind, the write fails and nothing rotates. When status
/// and cached Secret disagree, the cache may be behind the operator's own last rotation; reading
/// first saves computing a hash that the precondition would throw away.
pub fn confirm_on_fresh_read(key: &ApiKey, plan: &Plan, cached: &SecretState) -> bool {
    match (plan, cached) {
        (_, SecretState::Missing) => true,
        (
            Plan::Issue {
                reason: IssueReason::Regenerated,
                ..
            },
            SecretState::Owned(managed),
        ) => {
            let published = key.status.as_ref().and_then(|s| s.secret_hash.as_ref());
            published.is_none() || published != managed.hash.as_ref()
        }
        (Plan::Issue { .. }, _) => true,
        _ => false,
    }
}

/// Whether `key` is the active key for its user among `keys` (all ApiKeys the operator sees): the
/// oldest by creation time, then by name, among live ApiKeys in its namespace for the same user.
/// `Err` holds the name of the active one.
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
    let older = keys
        .into_iter()
        .filter(|k| {
            k.namespace() == key.namespace()
                && k.spec.user == key.spec.user
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

    #[test]
    fn only_a_regeneration_the_status_agrees_with_skips_the_fresh_read() {
        let k = key("web", "alice", 1);
        let secret = managed(&k, Some("v1"));
        let mut k = with_request(k, "v2");
        let owned = SecretState::Owned(secret.clone());
        let regenerate = decide(&k, Ok(()), &owned);
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

        // a missing Secret is always read; an altered one too; nothing to write, nothing to read
        let created = decide(&k, Ok(()), &SecretState::Missing);
        assert!(confirm_on_fresh_read(&k, &created, &SecretState::Missing));
        let mut altered = secret.clone();
        altered.intact = false;
        let altered = SecretState::Owned(altered);
        assert!(confirm_on_fresh_read(
            &k,
            &decide(&k, Ok(()), &altered),
            &altered
        ));
        let in_sync = SecretState::Owned(managed(&k, Some("v2")));
        assert!(!confirm_on_fresh_read(
            &k,
            &decide(&k, Ok(()), &in_sync),
            &in_sync
        ));
        assert!(!confirm_on_fresh_read(
            &k,
            &Plan::Conflict,
            &SecretState::Foreign
        ));
    }

    #[test]
    fn first_reconcile_creates() {
        let plan = decide(&key("a", "alice", 1), Ok(()), &SecretState::Missing);
        assert_eq!(
            plan,
            Plan::Issue {
                reason: IssueReason::Created,
                client_id: None,
                replaces: None
            }
        );
    }

    #[test]
    fn annotation_present_at_creation_does_not_regenerate_after_create() {
        // The create writes the current request as handled, so the next reconcile is in sync.
        let k = with_request(key("a", "alice", 1), "v1");
        let m = managed(&k, Some("v1"));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m)),
            Plan::InSync(_)
        ));
    }

    #[test]
    fn new_request_value_regenerates_keeping_client_id() {
        let k = with_request(key("a", "alice", 1), "v2");
        let m = managed(&k, Some("v1"));
        let id = m.client_id.clone();
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m)),
            Plan::Issue {
                reason: IssueReason::Regenerated,
                client_id: id,
                replaces: Some("1".into())
            }
        );
    }

    #[test]
    fn unchanged_or_removed_request_never_regenerates() {
        let k = with_request(key("a", "alice", 1), "v1");
        let m = managed(&k, Some("v1"));
        assert!(matches!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone())),
            Plan::InSync(_)
        ));
        let removed = key("a", "alice", 1);
        assert!(matches!(
            decide(&removed, Ok(()), &SecretState::Owned(m)),
            Plan::InSync(_)
        ));
        let empty = with_request(key("a", "alice", 1), "");
        let m0 = managed(&empty, None);
        assert!(matches!(
            decide(&empty, Ok(()), &SecretState::Owned(m0)),
            Plan::InSync(_)
        ));
    }

    #[test]
    fn deleted_secret_is_repaired_with_the_same_client_id() {
        let k = with_client_id(key("a", "alice", 1), "akid_AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Missing),
            Plan::Issue {
                reason: IssueReason::SecretDeleted,
                client_id: Some("akid_AAAAAAAAAAAAAAAAAAAAAA".into()),
                replaces: None
            }
        );
    }

    #[test]
    fn altered_secret_is_repaired_with_the_status_client_id() {
        let k = key("a", "alice", 1);
        let mut m = managed(&k, None);
        let k = with_client_id(k, m.client_id.as_deref().unwrap());
        let id = m.client_id.clone();
        m.intact = false;
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m.clone())),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: id.clone(),
                replaces: Some("1".into())
            }
        );
        // a changed client id is also an alteration (see secret.rs), and the status's id wins
        let mut m2 = managed(&k, None);
        m2.client_id = Some("akid_BBBBBBBBBBBBBBBBBBBBBB".into());
        m2.intact = false;
        assert_eq!(
            decide(&k, Ok(()), &SecretState::Owned(m2)),
            Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: id,
                replaces: Some("1".into())
            }
        );
    }

    #[test]
    fn foreign_secret_is_a_conflict_even_with_a_pending_request() {
        let k = with_request(key("a", "alice", 1), "v9");
        assert_eq!(decide(&k, Ok(()), &SecretState::Foreign), Plan::Conflict);
    }

    #[test]
    fn duplicate_comes_first() {
        let k = key("b", "alice", 2);
        assert_eq!(
            decide(&k, Err("a".into()), &SecretState::Missing),
            Plan::Duplicate { active: "a".into() }
        );
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
}
