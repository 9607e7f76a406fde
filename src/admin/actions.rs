//! The API calls of the administrator's tools, made with the caller's own client (kubeconfig and
//! RBAC): choosing keys, creating, regenerating and deleting them, and reading where a
//! regeneration stands. What the API server refuses comes back as its own message
//! ([`api_message`]), so a caller whose RBAC forbids an action reads exactly why.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;

use crate::admin::keys::{RegenerateState, controlled_by, regenerate_state};
use crate::core::crd::{ApiKey, ApiKeySpec, REGENERATE_ANNOTATION};
use crate::{Error, Result};

/// Field manager of the plugin's and the console's writes (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-apikey";

/// Which keys a bulk command acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These ApiKeys by name, in one namespace.
    Names(Vec<String>),
    /// The ApiKeys matching a label selector (kubectl's syntax: `team=x,tier!=dev`).
    Selector(String),
    /// Every ApiKey in the namespace (or in every namespace).
    All,
}

/// The ApiKeys `selection` names in `namespace` (`None`: every namespace; names need one), each
/// once. Errors: an empty selector (it would select everything, which `--all` does on purpose);
/// a named key that does not exist (`apikeys.apikey.dev "x" not found`), a selector the API
/// server refuses, or a list the caller may not make, each with the server's message.
pub async fn select(
    client: &Client,
    namespace: Option<&str>,
    selection: &Selection,
) -> Result<Vec<ApiKey>> {
    let api: Api<ApiKey> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut keys = match selection {
        Selection::Names(names) => {
            let Some(ns) = namespace else {
                return Err(Error::Config(
                    "keys named one by one need a namespace (-n), not -A".into(),
                ));
            };
            let api: Api<ApiKey> = Api::namespaced(client.clone(), ns);
            let mut keys: Vec<ApiKey> = Vec::with_capacity(names.len());
            for name in names {
                if !keys
                    .iter()
                    .any(|k| k.metadata.name.as_deref() == Some(name.as_str()))
                {
                    keys.push(api.get(name).await?);
                }
            }
            return Ok(keys);
        }
        Selection::Selector(selector) if selector.trim().is_empty() => {
            // The API server reads an empty selector as "everything"; kubectl refuses it too.
            return Err(Error::Config(
                "an empty label selector would select every key: give a selector, or names".into(),
            ));
        }
        Selection::Selector(selector) => {
            api.list(&ListParams::default().labels(selector))
                .await?
                .items
        }
        Selection::All => api.list(&ListParams::default()).await?.items,
    };
    keys.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(keys)
}

/// Creates ApiKey `name` in `namespace` for `user`, writing Secret `secret_name` (default: the
/// key's name), with `labels`. The API server checks the spec (CEL, patterns) and answers
/// `AlreadyExists` for a taken name; the operator judges duplicate users (condition
/// `DuplicateUser`).
pub async fn create(
    client: &Client,
    namespace: &str,
    name: &str,
    user: &str,
    secret_name: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Result<ApiKey> {
    let mut key = ApiKey::new(
        name,
        ApiKeySpec {
            user: user.to_owned(),
            secret_name: secret_name.map(str::to_owned),
            rotation: None,
            expires_at: None,
            rollout_restart: vec![],
        },
    );
    key.metadata.namespace = Some(namespace.to_owned());
    if !labels.is_empty() {
        key.metadata.labels = Some(labels);
    }
    let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    Ok(api.create(&params, &key).await?)
}

/// One ApiKey as an action names it: where it is and which object it is. The UID makes the
/// action conditional: a key deleted and created again under the same name is another object,
/// and the API server refuses the call instead of touching it. JSON (the console's requests):
/// `{"namespace":"ns","name":"k","uid":"..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, as the caller saw the key.
    pub uid: String,
}

impl KeyRef {
    /// The reference of `key`, read from the cluster. Errors: a missing namespace, name or UID.
    pub fn of(key: &ApiKey) -> Result<Self> {
        let (namespace, name) = key.namespace_and_name()?;
        let uid = key.metadata.uid.as_deref();
        let uid = uid.ok_or(Error::MissingField("metadata.uid"))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }
}

/// Sets `apikey.dev/regenerate` to `value` on `key` (a JSON merge patch naming the key's UID: when
/// the key of that name is another object now, the API server refuses it, 422 `metadata.uid:
/// Invalid value: "UID": field is immutable`). One call per key: the API server has no bulk
/// patch; a failure of one key does not stop the others.
pub async fn request_regenerate(client: &Client, key: &KeyRef, value: &str) -> Result<()> {
    let api: Api<ApiKey> = Api::namespaced(client.clone(), &key.namespace);
    let patch = json!({"metadata": {
        "uid": key.uid,
        "annotations": {REGENERATE_ANNOTATION: value},
    }});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(&key.name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Deletes `key` (only this object: a precondition on its UID, 409 Conflict `Precondition failed:
/// UID in precondition: ..., UID in object meta: ...` when the key of that name is another object
/// now), leaving its Secret to garbage collection through the Secret's
/// ownerReference, as `kubectl delete` does.
pub async fn delete(client: &Client, key: &KeyRef) -> Result<()> {
    let api: Api<ApiKey> = Api::namespaced(client.clone(), &key.namespace);
    let params = DeleteParams::background().preconditions(Preconditions {
        uid: Some(key.uid.clone()),
        resource_version: None,
    });
    api.delete(&key.name, &params).await?;
    Ok(())
}

/// The metadata of `key`'s Secret (never its data: a metadata-only GET), or `None` when there is
/// none. Needs `get` on Secrets in the key's namespace.
pub async fn secret_metadata(client: &Client, key: &ApiKey) -> Result<Option<ObjectMeta>> {
    let namespace = key.namespace_and_name()?.0;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_metadata_opt(&key.secret_name())
        .await?
        .map(|p| p.metadata))
}

/// Where `key` stands on regeneration `request`, read afresh: the ApiKey (for its Ready
/// condition) and its Secret's metadata. A key deleted meanwhile is an error (`NotFound`).
pub async fn current_regenerate_state(
    client: &Client,
    key: &ApiKey,
    request: &str,
) -> Result<RegenerateState> {
    let (namespace, name) = key.namespace_and_name()?;
    let fresh = Api::<ApiKey>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let secret = secret_metadata(client, &fresh).await?;
    Ok(regenerate_state(&fresh, secret.as_ref(), request))
}

/// Whether `key` is gone: the ApiKey with its UID no longer exists, nor a Secret it controlled
/// (garbage collection removes it after the key). A Secret that was never the key's (condition
/// `SecretConflict`) is not waited for.
pub async fn is_gone(client: &Client, key: &ApiKey) -> Result<bool> {
    let (namespace, name) = key.namespace_and_name()?;
    let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    if let Some(current) = api.get_metadata_opt(name).await?
        && current.metadata.uid == key.metadata.uid
    {
        return Ok(false);
    }
    Ok(match secret_metadata(client, key).await? {
        Some(secret) => !controlled_by(&secret, key),
        None => true,
    })
}

/// The API server's own message for a refused call (`apikeys.apikey.dev "k" is forbidden: User
/// "u" cannot delete resource ...`), else the error with its causes (`...: client error
/// (Connect): invalid peer certificate: UnknownIssuer`), so that a TLS or network failure says
/// what failed.
pub fn api_message(error: &Error) -> String {
    match error {
        Error::Kube(kube::Error::Api(status)) if !status.message.is_empty() => {
            status.message.clone()
        }
        other => with_causes(other),
    }
}

/// `error` followed by each of its sources that adds something, separated by `: `.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_ref_names_the_object_by_its_uid() {
        let mut key = ApiKey::new(
            "k",
            ApiKeySpec {
                user: "u".into(),
                secret_name: None,
                rotation: None,
                expires_at: None,
                rollout_restart: vec![],
            },
        );
        key.metadata.namespace = Some("ns".into());
        assert!(matches!(
            KeyRef::of(&key),
            Err(Error::MissingField("metadata.uid"))
        ));
        key.metadata.uid = Some("uid-1".into());
        let expected: KeyRef =
            serde_json::from_str(r#"{"namespace":"ns","name":"k","uid":"uid-1"}"#).unwrap();
        assert_eq!(KeyRef::of(&key).unwrap(), expected);
        assert!(serde_json::from_str::<KeyRef>(r#"{"namespace":"ns","name":"k"}"#).is_err());
    }
}
