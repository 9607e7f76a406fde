//! What the console's table shows: the watched objects ([`Store`]), what this console did to
//! which key ([`Tracking`]), and the rows built from both ([`snapshot`]). Pure.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher::Event;
use serde::Serialize;

use crate::admin::actions::KeyRef;
use crate::admin::keys::{KeyRow, RegenerateState, regenerate_state};
use crate::core::crd::ApiKey;
use crate::shared::mirror::{ByName, Mirror};

/// The objects of one watch, by (namespace, name): a relist (`Init` … `InitDone`) replaces the
/// whole set at once ([`Mirror`]).
pub type Store<K> = Mirror<ByName<K>>;

/// Applies one watch event to `store`; returns whether what the table shows may have changed
/// (every event but `Init` and `InitApply`, whose objects wait for `InitDone`).
pub fn follow<K: Resource + Clone>(store: &mut Store<K>, event: &Event<K>) -> bool {
    store.apply(event);
    !matches!(event, Event::Init | Event::InitApply(_))
}

/// What this console asked of which key, by the key's UID (so that a key deleted and created
/// again under its name starts clean), with the key's namespace. An entry is dropped once a
/// watch of its namespace no longer has the key ([`Tracking::forget_missing`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    /// UID → (namespace, regenerate value).
    regenerate: HashMap<String, (String, String)>,
    /// UID → namespace.
    deleting: HashMap<String, String>,
}

impl Tracking {
    /// Records that `key` was asked for a new client secret with regenerate value `request`.
    pub fn regenerated(&mut self, key: &KeyRef, request: &str) {
        self.regenerate
            .insert(key.uid.clone(), (key.namespace.clone(), request.to_owned()));
    }

    /// Records that `key` was deleted (it shows as deleting until it is gone).
    pub fn deleted(&mut self, key: &KeyRef) {
        self.deleting.insert(key.uid.clone(), key.namespace.clone());
    }

    /// Forgets the keys of `namespace` (`None`: every namespace) whose UIDs are not in `present`,
    /// the UIDs a complete, unfiltered watch of that namespace holds: those keys are gone.
    /// Returns whether anything was forgotten.
    pub fn forget_missing(&mut self, namespace: Option<&str>, present: &HashSet<&str>) -> bool {
        let before = self.regenerate.len() + self.deleting.len();
        let keep = |uid: &String, ns: &String| {
            present.contains(uid.as_str()) || namespace.is_some_and(|n| n != ns)
        };
        self.regenerate.retain(|uid, (ns, _)| keep(uid, ns));
        self.deleting.retain(|uid, ns| keep(uid, ns));
        before != self.regenerate.len() + self.deleting.len()
    }

    /// The state of this console's last action on `key`, whose Secret's metadata is `secret`
    /// (`None`: not there, or not readable).
    pub fn action(&self, key: &ApiKey, secret: Option<&ObjectMeta>) -> Option<Action> {
        let uid = key.metadata.uid.as_deref()?;
        if self.deleting.contains_key(uid) {
            return Some(Action::deleting());
        }
        let (_, request) = self.regenerate.get(uid)?;
        Some(Action::regenerate(regenerate_state(key, secret, request)))
    }
}

/// The state of an action taken in this console, as a row shows it. JSON (camelCase):
/// `{"kind":"regenerate","state":"rotated","generation":4,"rotatedAt":"..."}`,
/// `{"kind":"regenerate","state":"pending"}`,
/// `{"kind":"regenerate","state":"failed","reason":"DuplicateUser","message":"..."}`,
/// `{"kind":"delete","state":"deleting"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// `regenerate` or `delete`.
    pub kind: &'static str,
    /// `rotated`, `pending` or `failed` for a regeneration; `deleting` for a deletion.
    pub state: &'static str,
    /// Reason of the key's `Ready` condition, when the regeneration failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Message of the key's `Ready` condition, when the regeneration failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Generation of the new client secret, once rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the new client secret was made (RFC 3339), once rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
}

impl Action {
    fn deleting() -> Self {
        Self {
            kind: "delete",
            state: "deleting",
            reason: None,
            message: None,
            generation: None,
            rotated_at: None,
        }
    }

    fn regenerate(state: RegenerateState) -> Self {
        let word = state.word();
        let mut action = Self {
            kind: "regenerate",
            state: word,
            ..Self::deleting()
        };
        match state {
            RegenerateState::Rotated {
                generation,
                rotated_at,
            } => {
                action.generation = generation;
                action.rotated_at = rotated_at;
            }
            RegenerateState::Failed { reason, message } => {
                action.reason = Some(reason);
                action.message = Some(message);
            }
            RegenerateState::Pending => {}
        }
        action
    }
}

/// One row of the table: the key's [`KeyRow`] fields and `action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The key as `kubectl apikey list` shows it.
    #[serde(flatten)]
    pub key: KeyRow,
    /// This console's last action on the key, if any.
    pub action: Option<Action>,
}

/// What the page receives in each `keys` event (JSON, camelCase):
/// `{"keys":[row...],"error":null|"...","secretsError":null|"..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The rows, ordered by namespace, then name.
    pub keys: Vec<Row>,
    /// Why the ApiKeys cannot be listed or watched (the API server's message: a forbidden list,
    /// an invalid label selector), if they cannot.
    pub error: Option<String>,
    /// Why the Secrets' metadata cannot be watched, if it cannot; regeneration states then come
    /// from the ApiKey alone (pending or failed, never rotated).
    pub secrets_error: Option<String>,
}

/// The rows of `keys`, with this console's actions on them, whose Secrets' metadata is in
/// `secrets`.
pub fn snapshot(
    keys: &Store<ApiKey>,
    secrets: &Store<impl Resource + Clone>,
    tracking: &Tracking,
    error: Option<&str>,
    secrets_error: Option<&str>,
) -> Snapshot {
    let rows = keys
        .live()
        .iter()
        .map(|key| {
            let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
            let secret = secrets
                .live()
                .get(namespace, &key.secret_name())
                .map(Resource::meta);
            Row {
                key: KeyRow::of(key),
                action: tracking.action(key, secret),
            }
        })
        .collect();
    Snapshot {
        keys: rows,
        error: error.map(str::to_owned),
        secrets_error: secrets_error.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::{ApiKeySpec, ApiKeyStatus};
    use crate::core::secret::HANDLED_ANNOTATION;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::core::PartialObjectMeta;
    use std::collections::BTreeMap;

    fn key(name: &str, uid: &str, ready: &str) -> ApiKey {
        let mut key = ApiKey::new(
            name,
            ApiKeySpec {
                user: format!("user-{name}"),
                secret_name: None,
                rotation: None,
                expires_at: None,
                rollout_restart: vec![],
            },
        );
        key.metadata.namespace = Some("ns".into());
        key.metadata.uid = Some(uid.into());
        key.status = Some(ApiKeyStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: if ready == "True" {
                    "Generated".into()
                } else {
                    "DuplicateUser".into()
                },
                message: "m".into(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        key
    }

    fn key_ref(namespace: &str, uid: &str) -> KeyRef {
        KeyRef {
            namespace: namespace.into(),
            name: format!("name-{uid}"),
            uid: uid.into(),
        }
    }

    fn secret(name: &str, owner: &str, handled: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                annotations: Some(BTreeMap::from([(
                    HANDLED_ANNOTATION.to_owned(),
                    handled.to_owned(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    controller: Some(true),
                    uid: owner.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn a_relist_replaces_the_set_at_init_done() {
        let mut store = Store::default();
        assert!(!follow(&mut store, &Event::Init));
        assert!(!follow(
            &mut store,
            &Event::InitApply(key("a", "1", "True"))
        ));
        assert!(!store.is_synced());
        assert_eq!(store.live().iter().count(), 0);
        assert!(follow(&mut store, &Event::InitDone));
        assert!(store.is_synced());
        assert!(follow(&mut store, &Event::Apply(key("b", "2", "True"))));
        assert_eq!(store.live().iter().count(), 2);
        follow(&mut store, &Event::Init);
        follow(&mut store, &Event::InitApply(key("b", "2", "True")));
        assert_eq!(
            store.live().iter().count(),
            2,
            "kept until the relist is done"
        );
        follow(&mut store, &Event::InitDone);
        let names: Vec<_> = store
            .live()
            .iter()
            .map(|k| k.metadata.name.clone())
            .collect();
        assert_eq!(names, [Some("b".to_owned())]);
        assert!(follow(&mut store, &Event::Delete(key("b", "2", "True"))));
        assert!(store.live().get("ns", "b").is_none());
    }

    #[test]
    fn rows_show_this_consoles_actions_by_uid() {
        let mut keys = Store::default();
        for k in [
            key("a", "1", "True"),
            key("b", "2", "True"),
            key("c", "3", "False"),
            key("d", "4", "True"),
            key("e", "5", "True"),
        ] {
            follow(&mut keys, &Event::Apply(k));
        }
        let mut secrets = Store::default();
        follow(&mut secrets, &Event::Apply(secret("a", "1", "r1")));
        follow(&mut secrets, &Event::Apply(secret("b", "2", "r0")));
        follow(&mut secrets, &Event::Apply(secret("e", "other-uid", "r1")));
        let mut tracking = Tracking::default();
        for uid in ["1", "2", "3", "5", "6"] {
            tracking.regenerated(&key_ref("ns", uid), "r1");
        }
        tracking.deleted(&key_ref("ns", "4"));

        let snap = snapshot(&keys, &secrets, &tracking, None, Some("forbidden"));
        let states: Vec<_> = snap
            .keys
            .iter()
            .map(|r| {
                (
                    r.key.name.as_str(),
                    r.action.as_ref().map(|a| (a.kind, a.state)),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("a", Some(("regenerate", "rotated"))),
                ("b", Some(("regenerate", "pending"))),
                ("c", Some(("regenerate", "failed"))),
                ("d", Some(("delete", "deleting"))),
                ("e", Some(("regenerate", "pending"))),
            ]
        );
        let failed = snap.keys[2].action.as_ref().unwrap();
        assert_eq!(
            (failed.reason.as_deref(), failed.message.as_deref()),
            (Some("DuplicateUser"), Some("m"))
        );
        assert_eq!(snap.secrets_error.as_deref(), Some("forbidden"));

        let untouched = snapshot(&keys, &secrets, &Tracking::default(), None, None);
        assert!(untouched.keys.iter().all(|r| r.action.is_none()));
    }

    #[test]
    fn rows_serialise_as_the_page_reads_them() {
        let mut keys = Store::default();
        follow(&mut keys, &Event::Apply(key("a", "1", "True")));
        let mut secrets = Store::<PartialObjectMeta<Secret>>::default();
        follow(&mut secrets, &Event::Apply(secret("a", "1", "r1")));
        let mut tracking = Tracking::default();
        tracking.regenerated(&key_ref("ns", "1"), "r1");
        let json = serde_json::to_value(snapshot(&keys, &secrets, &tracking, None, None)).unwrap();
        let row = &json["keys"][0];
        assert_eq!(row["namespace"], "ns");
        assert_eq!(row["name"], "a");
        assert_eq!(row["uid"], "1");
        assert_eq!(row["labels"], serde_json::json!({}));
        assert_eq!(row["secretName"], "a");
        assert_eq!(row["action"]["kind"], "regenerate");
        assert_eq!(row["action"]["state"], "rotated");
        assert!(row["action"].get("reason").is_none());
        assert!(json["error"].is_null());
        assert!(json["secretsError"].is_null());
    }

    #[test]
    fn keys_gone_from_their_namespace_are_forgotten() {
        let mut tracking = Tracking::default();
        tracking.regenerated(&key_ref("ns", "1"), "r1");
        tracking.regenerated(&key_ref("ns", "2"), "r1");
        tracking.deleted(&key_ref("ns", "3"));
        tracking.deleted(&key_ref("other", "4"));
        let present = HashSet::from(["1"]);
        assert!(tracking.forget_missing(Some("ns"), &present));
        assert!(
            !tracking.forget_missing(Some("ns"), &present),
            "nothing more"
        );
        let mut expected = Tracking::default();
        expected.regenerated(&key_ref("ns", "1"), "r1");
        expected.deleted(&key_ref("other", "4"));
        assert_eq!(tracking, expected, "another namespace's keys stay");
        assert!(tracking.forget_missing(None, &HashSet::new()));
        assert_eq!(tracking, Tracking::default());
    }
}
