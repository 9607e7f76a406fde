//! Where the operator keeps its record key ([`crate::core::record`]): data `key` (32 bytes) of a Secret
//! in its own namespace, `apikey-operator-record-key` unless configured otherwise.
//!
//! On start the operator reads it, or creates it when it does not exist (first install). Create,
//! never overwrite: of two replicas starting at once, one creates it and the other reads it. A
//! Secret that exists but holds no valid key stops the operator with a message instead of being
//! replaced: replacing the key is a decision for a person (see README, Security model).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::core::record::RecordKey;
use crate::core::secret::MANAGER;
use crate::error::{Error, Result};

/// Default name of the Secret holding the record key.
pub const DEFAULT_SECRET_NAME: &str = "apikey-operator-record-key";
/// Data key of the record key in its Secret.
pub const KEY_DATA: &str = "key";

/// Reads the record key from Secret `namespace/name`, creating it with a new key if it does not
/// exist. Errors name the Secret and say what to do.
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> Result<RecordKey> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let context = |e: kube::Error| {
        Error::Config(format!(
            "cannot read or create the record key Secret {namespace}/{name}: {e}"
        ))
    };
    if let Some(existing) = api.get_opt(name).await.map_err(context)? {
        return key_of(&existing, namespace, name);
    }
    let key = RecordKey::generate()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY_DATA.to_string(),
            ByteString(key.expose().to_vec()),
        )])),
        ..Secret::default()
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&pp, &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), key_id = key.id(), "created the record key");
            Ok(key)
        }
        // another replica created it first: use theirs
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = api.get(name).await.map_err(context)?;
            key_of(&existing, namespace, name)
        }
        Err(e) => Err(context(e)),
    }
}

fn key_of(secret: &Secret, namespace: &str, name: &str) -> Result<RecordKey> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_DATA))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    RecordKey::from_bytes(bytes).map_err(|e| {
        Error::Config(format!(
            "Secret {namespace}/{name} holds no valid record key ({e}): restore it from a backup, or delete it to start with a new key (records sealed with the old one are then re-sealed without rotation; see README, Security model)"
        ))
    })
}
