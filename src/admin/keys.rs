//! What the plugin and the console show of a key, and whether a key has answered a regeneration.
//! Pure: built from objects already read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::core::crd::ApiKey;
use crate::core::secret::{
    GENERATION_ANNOTATION, HANDLED_ANNOTATION, ROTATED_AT_ANNOTATION, answers,
};

/// One key as the table shows it (`kubectl apikey list`, the console's rows). Holds no secret:
/// the client id is the public half of the key. Serialised in camelCase for the console.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRow {
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// Name of the ApiKey.
    pub name: String,
    /// `metadata.uid` (empty if unset): which object the row is, for actions that must not touch
    /// a key created again under the same name.
    pub uid: String,
    /// `spec.user`.
    pub user: String,
    /// `status.clientId`, once the operator has written the key.
    pub client_id: Option<String>,
    /// Name of the Secret the key writes (`spec.secretName` or the ApiKey's name).
    pub secret_name: String,
    /// Status of the `Ready` condition: `True`, `False`, or `Unknown` before the operator has
    /// written one.
    pub ready: String,
    /// Reason of the `Ready` condition (`KeyReady`, `DuplicateUser`, `Expired`, ...).
    pub reason: Option<String>,
    /// Message of the `Ready` condition.
    pub message: Option<String>,
    /// `status.lastRotatedAt` (RFC 3339).
    pub last_rotated_at: Option<String>,
    /// `status.nextRotationAt` (RFC 3339), with `spec.rotation.interval`.
    pub next_rotation_at: Option<String>,
    /// `metadata.creationTimestamp` (RFC 3339).
    pub created_at: Option<String>,
    /// `status.secretGeneration`: 1 for the first client secret, one more for each new one.
    pub generation: Option<i64>,
    /// The ApiKey's labels.
    pub labels: BTreeMap<String, String>,
}

impl KeyRow {
    /// The row of `key`.
    pub fn of(key: &ApiKey) -> Self {
        let status = key.status.as_ref();
        let ready = key.ready_condition();
        let time = |t: Option<&Time>| t.map(|t| t.0.to_string());
        Self {
            namespace: key.metadata.namespace.clone().unwrap_or_default(),
            name: key.metadata.name.clone().unwrap_or_default(),
            uid: key.metadata.uid.clone().unwrap_or_default(),
            user: key.spec.user.clone(),
            client_id: status.and_then(|s| s.client_id.clone()),
            secret_name: key.secret_name(),
            ready: ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
            message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
            last_rotated_at: time(status.and_then(|s| s.last_rotated_at.as_ref())),
            next_rotation_at: time(status.and_then(|s| s.next_rotation_at.as_ref())),
            created_at: time(key.metadata.creation_timestamp.as_ref()),
            generation: status.and_then(|s| s.secret_generation),
            labels: key.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// Where a key stands on a regeneration request (a value of `apikey.dev/regenerate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum RegenerateState {
    /// The key's Secret holds a client secret made for the request.
    Rotated {
        /// Generation of the new client secret (the Secret's `apikey.dev/generation`).
        generation: Option<i64>,
        /// When it was made (the Secret's `apikey.dev/rotated-at`, RFC 3339).
        rotated_at: Option<String>,
    },
    /// Not yet answered; the key is Ready, so the operator will.
    Pending,
    /// Not answered, and the key is not Ready: the operator does not write its Secret until the
    /// reason is fixed (a duplicate user, a Secret that is not the key's, an expired key).
    Failed {
        /// Reason of the `Ready` condition.
        reason: String,
        /// Message of the `Ready` condition.
        message: String,
    },
}

impl RegenerateState {
    /// Whether this is [`RegenerateState::Rotated`].
    pub fn is_rotated(&self) -> bool {
        matches!(self, Self::Rotated { .. })
    }

    /// A short word for tables and progress lines: `rotated`, `pending`, `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Rotated { .. } => "rotated",
            Self::Pending => "pending",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Whether `key`, whose Secret's metadata is `secret` (None: not readable or not there), has
/// answered regeneration `request`. The Secret answers when the operator's handled annotation
/// names the request ([`answers`]) and the Secret is the key's (its controller ownerReference
/// names the key's UID); a Secret that is not the key's never answers.
pub fn regenerate_state(
    key: &ApiKey,
    secret: Option<&ObjectMeta>,
    request: &str,
) -> RegenerateState {
    if let Some(meta) = secret.filter(|meta| controlled_by(meta, key))
        && answers(annotation(meta, HANDLED_ANNOTATION), request)
    {
        return RegenerateState::Rotated {
            generation: annotation(meta, GENERATION_ANNOTATION).and_then(|g| g.parse().ok()),
            rotated_at: annotation(meta, ROTATED_AT_ANNOTATION).map(str::to_owned),
        };
    }
    match key.ready_condition() {
        Some(c) if c.status == "False" => RegenerateState::Failed {
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        _ => RegenerateState::Pending,
    }
}

/// The value of annotation `name` in `meta`, if set.
fn annotation<'a>(meta: &'a ObjectMeta, name: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// Whether `secret`'s controller ownerReference names `key` (by UID).
pub fn controlled_by(secret: &ObjectMeta, key: &ApiKey) -> bool {
    let Some(uid) = key.metadata.uid.as_deref() else {
        return false;
    };
    secret
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// A new value for `apikey.dev/regenerate`: the time of the request, RFC 3339 in UTC with
/// milliseconds (`2026-11-30T01:02:03.456Z`). One value is set on every key of a bulk request, so
/// that each key gets exactly one new client secret for it; the operator rotates on any value it
/// has not answered before, so values need only differ from the key's previous one.
pub fn new_request_value(now: Timestamp) -> String {
    format!("{:.3}", now)
}

/// One label written `key=value` (`team=payments`; the value may be empty). The key and value are
/// the API server's to validate. Errors: no `=`, or nothing before it.
pub fn parse_label(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("a label is key=value, not {pair:?}")),
    }
}

/// How long ago `then` (RFC 3339) was, as kubectl prints ages (`45s`, `12m`, `5h`, `3d`);
/// in the future (a next rotation) as `in 5h`. `None` when `then` is not a time.
pub fn age(then: &str, now: Timestamp) -> Option<String> {
    let then: Timestamp = then.parse().ok()?;
    let seconds = now.as_second() - then.as_second();
    let (prefix, seconds) = if seconds < 0 {
        ("in ", -seconds)
    } else {
        ("", seconds)
    };
    let short = match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    Some(format!("{prefix}{short}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::{ApiKeySpec, ApiKeyStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};

    fn key(ready: Option<(&str, &str)>) -> ApiKey {
        let mut key = ApiKey::new(
            "k",
            ApiKeySpec {
                user: "alice".into(),
                secret_name: None,
                rotation: None,
                expires_at: None,
                rollout_restart: vec![],
            },
        );
        key.metadata.namespace = Some("ns".into());
        key.metadata.uid = Some("uid-1".into());
        key.status = Some(ApiKeyStatus {
            client_id: Some("id".into()),
            secret_generation: Some(3),
            conditions: ready
                .map(|(status, reason)| Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: format!("because {reason}"),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        key
    }

    fn secret(owner_uid: &str, handled: Option<&str>) -> ObjectMeta {
        let mut annotations = BTreeMap::from([
            (GENERATION_ANNOTATION.to_owned(), "4".to_owned()),
            (
                ROTATED_AT_ANNOTATION.to_owned(),
                "2026-11-30T00:00:00Z".to_owned(),
            ),
        ]);
        if let Some(h) = handled {
            annotations.insert(HANDLED_ANNOTATION.to_owned(), h.to_owned());
        }
        ObjectMeta {
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                controller: Some(true),
                uid: owner_uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn rotated_when_the_keys_own_secret_answers_the_request() {
        let k = key(Some(("True", "Generated")));
        let state = regenerate_state(&k, Some(&secret("uid-1", Some("r2"))), "r2");
        assert_eq!(
            state,
            RegenerateState::Rotated {
                generation: Some(4),
                rotated_at: Some("2026-11-30T00:00:00Z".into())
            }
        );
    }

    #[test]
    fn an_earlier_answer_or_a_missing_secret_is_pending_while_ready() {
        let k = key(Some(("True", "Generated")));
        assert_eq!(
            regenerate_state(&k, Some(&secret("uid-1", Some("r1"))), "r2"),
            RegenerateState::Pending
        );
        assert_eq!(regenerate_state(&k, None, "r2"), RegenerateState::Pending);
        assert_eq!(
            regenerate_state(&key(None), None, "r2"),
            RegenerateState::Pending
        );
    }

    #[test]
    fn a_secret_that_is_not_the_keys_never_answers() {
        let k = key(Some(("True", "Generated")));
        assert_eq!(
            regenerate_state(&k, Some(&secret("other", Some("r2"))), "r2"),
            RegenerateState::Pending
        );
    }

    #[test]
    fn a_key_that_is_not_ready_fails_with_its_reason() {
        let k = key(Some(("False", "DuplicateUser")));
        assert_eq!(
            regenerate_state(&k, None, "r2"),
            RegenerateState::Failed {
                reason: "DuplicateUser".into(),
                message: "because DuplicateUser".into()
            }
        );
    }

    #[test]
    fn a_row_holds_the_public_fields_and_the_ready_condition() {
        let row = KeyRow::of(&key(Some(("False", "Expired"))));
        assert_eq!(
            (row.namespace.as_str(), row.name.as_str(), row.user.as_str()),
            ("ns", "k", "alice")
        );
        assert_eq!(row.uid, "uid-1");
        assert_eq!(row.client_id.as_deref(), Some("id"));
        assert_eq!(row.secret_name, "k");
        assert_eq!(
            (row.ready.as_str(), row.reason.as_deref()),
            ("False", Some("Expired"))
        );
        assert_eq!(row.generation, Some(3));
        assert_eq!(KeyRow::of(&key(None)).ready, "Unknown");
    }

    #[test]
    fn request_values_are_rfc3339_milliseconds_and_ages_read_like_kubectl() {
        let now: Timestamp = "2026-11-30T01:02:03.456789Z".parse().unwrap();
        assert_eq!(new_request_value(now), "2026-11-30T01:02:03.456Z");
        assert_eq!(age("2026-11-30T01:01:03Z", now).as_deref(), Some("60s"));
        assert_eq!(age("2026-11-29T21:02:03Z", now).as_deref(), Some("4h"));
        assert_eq!(age("2026-11-26T01:02:03Z", now).as_deref(), Some("4d"));
        assert_eq!(age("2026-11-30T06:02:03Z", now).as_deref(), Some("in 5h"));
        assert_eq!(age("not a time", now), None);
    }
}
