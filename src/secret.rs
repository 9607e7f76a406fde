//! The Secret the operator writes for a key: its name, labels and bookkeeping annotations, how it
//! is built, and how the operator reads back what it wrote.
//!
//! The Secret carries its own bookkeeping (hash, fingerprint, handled regeneration request, time of
//! rotation) and is written in one request, so a crash between writing it and writing the ApiKey's
//! status can neither lose nor repeat a rotation: the status is always derivable from the Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource as _, ResourceExt as _};

use crate::crd::ApiKey;
use crate::credentials::{self, ClientSecret};
use crate::error::{Error, Result};

/// Label on every Secret the operator manages; it watches Secrets by this label only.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`], also the operator's field manager.
pub const MANAGER: &str = "apikey-operator";
/// Label selector for the Secrets the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=apikey-operator";
/// Label naming the ApiKey a Secret belongs to.
pub const APIKEY_LABEL: &str = "apikey.dev/apikey";

/// Data key of the client id.
pub const CLIENT_ID_KEY: &str = "client_id";
/// Data key of the client secret.
pub const CLIENT_SECRET_KEY: &str = "client_secret";

/// Annotation: argon2id PHC string of the client secret (the value published in status).
pub const HASH_ANNOTATION: &str = "apikey.dev/secret-hash";
/// Annotation: fingerprint of the credentials, to notice hand edits without hashing.
pub const FINGERPRINT_ANNOTATION: &str = "apikey.dev/fingerprint";
/// Annotation: the regenerate annotation value this client secret answers.
pub const HANDLED_ANNOTATION: &str = "apikey.dev/handled-regenerate";
/// Annotation: when this client secret was generated (RFC 3339).
pub const ROTATED_AT_ANNOTATION: &str = "apikey.dev/rotated-at";

/// What the operator reads back from a Secret carrying its label: whose it is, and what the
/// decisions need of it. The plaintext client secret is checked on reading and not kept, so the
/// cache of every managed Secret holds no credentials and a fraction of the Secrets' size.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedSecret {
    /// Secret name.
    pub name: String,
    /// `resourceVersion` it was read at, the precondition of the next write.
    pub resource_version: Option<String>,
    /// UID of the object its controller ownerReference names, if it has one.
    pub controller_uid: Option<String>,
    /// `client_id` data, if present and UTF-8.
    pub client_id: Option<String>,
    /// [`HASH_ANNOTATION`].
    pub hash: Option<String>,
    /// [`HANDLED_ANNOTATION`]; `None` when no request was ever handled.
    pub handled_request: Option<String>,
    /// [`ROTATED_AT_ANNOTATION`].
    pub rotated_at: Option<Time>,
    /// Whether the credentials are as the operator wrote them: both present, well-formed, matching
    /// the fingerprint written beside them, and with an argon2id hash to publish.
    pub intact: bool,
}

impl ManagedSecret {
    /// Reads the operator's view of `secret`.
    pub fn read(secret: &Secret) -> Self {
        let data = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
        };
        let annotation = |k: &str| secret.annotations().get(k).cloned();
        let client_id = data(CLIENT_ID_KEY);
        let hash = annotation(HASH_ANNOTATION);
        let intact = match (client_id, data(CLIENT_SECRET_KEY)) {
            (Some(id), Some(plaintext)) => {
                let plaintext = ClientSecret::new(plaintext.to_owned());
                credentials::is_well_formed_client_id(id)
                    && plaintext.is_well_formed()
                    && annotation(FINGERPRINT_ANNOTATION)
                        .is_some_and(|fp| fp == credentials::fingerprint(id, &plaintext))
                    && hash.as_deref().is_some_and(|h| h.starts_with("$argon2id$"))
            }
            _ => false,
        };
        Self {
            name: secret.name_any(),
            resource_version: secret.resource_version(),
            controller_uid: secret
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            client_id: client_id.map(str::to_owned),
            hash,
            handled_request: annotation(HANDLED_ANNOTATION).filter(|v| !v.is_empty()),
            rotated_at: annotation(ROTATED_AT_ANNOTATION)
                .and_then(|t| t.parse().ok())
                .map(Time),
            intact,
        }
    }

    /// Whether the Secret has a controller ownerReference to this very ApiKey (by UID). Only such
    /// Secrets are ever written.
    pub fn is_controlled_by(&self, key: &ApiKey) -> bool {
        key.metadata.uid.is_some() && self.controller_uid == key.metadata.uid
    }
}

/// New credentials and their bookkeeping, ready to be written.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: ClientSecret,
    /// argon2id PHC string of the client secret.
    pub hash: String,
    /// The regenerate request this secret answers.
    pub handled_request: Option<String>,
    /// When it was generated.
    pub rotated_at: Time,
}

/// The Secret holding `creds` for `key`, controlled by `key`. `resource_version` is the write's
/// precondition when replacing an existing Secret.
pub fn build(
    key: &ApiKey,
    creds: &Credentials,
    resource_version: Option<String>,
) -> Result<Secret> {
    let owner = key
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (APIKEY_LABEL.to_string(), key.name_any()),
    ]);
    let annotations = BTreeMap::from([
        (HASH_ANNOTATION.to_string(), creds.hash.clone()),
        (
            FINGERPRINT_ANNOTATION.to_string(),
            credentials::fingerprint(&creds.client_id, &creds.client_secret),
        ),
        (
            HANDLED_ANNOTATION.to_string(),
            creds.handled_request.clone().unwrap_or_default(),
        ),
        (
            ROTATED_AT_ANNOTATION.to_string(),
            creds.rotated_at.0.to_string(),
        ),
    ]);
    let data = BTreeMap::from([
        (
            CLIENT_ID_KEY.to_string(),
            ByteString(creds.client_id.clone().into_bytes()),
        ),
        (
            CLIENT_SECRET_KEY.to_string(),
            ByteString(creds.client_secret.expose().as_bytes().to_vec()),
        ),
    ]);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key.secret_name()),
            namespace: key.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{creds, key};

    #[test]
    fn built_secret_has_contract_labels_owner_and_data() {
        let k = key("web", "alice", 1);
        let c = creds(Some("r1"));
        let s = build(&k, &c, Some("42".into())).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("web"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            s.labels().get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGER)
        );
        assert_eq!(s.metadata.resource_version.as_deref(), Some("42"));
        let owners = s.owner_references();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ApiKey");
        assert_eq!(owners[0].controller, Some(true));
        let read = ManagedSecret::read(&s);
        assert!(read.is_controlled_by(&k));
        assert_eq!(read.client_id.as_deref(), Some(c.client_id.as_str()));
        assert_eq!(read.hash.as_deref(), Some(c.hash.as_str()));
        assert_eq!(read.handled_request.as_deref(), Some("r1"));
        assert_eq!(read.rotated_at, Some(c.rotated_at.clone()));
        assert!(read.intact);
    }

    #[test]
    fn secret_name_defaults_to_the_apikey_name() {
        let mut k = key("web", "alice", 1);
        assert_eq!(k.secret_name(), "web");
        k.spec.secret_name = Some("other".into());
        let s = build(&k, &creds(None), None).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("other"));
        assert_eq!(ManagedSecret::read(&s).handled_request, None);
    }

    #[test]
    fn annotations_never_hold_the_plaintext() {
        let c = creds(None);
        let s = build(&key("web", "alice", 1), &c, None).unwrap();
        for v in s.annotations().values() {
            assert!(!v.contains(c.client_secret.expose()));
        }
    }

    #[test]
    fn a_secret_owned_by_another_uid_is_not_ours() {
        let k = key("web", "alice", 1);
        let mut other = key("web", "alice", 1);
        other.metadata.uid = Some("someone-else".into());
        let s = build(&other, &creds(None), None).unwrap();
        assert!(!ManagedSecret::read(&s).is_controlled_by(&k));
        assert!(!ManagedSecret::read(&Secret::default()).is_controlled_by(&k));
    }

    #[test]
    fn hand_edits_break_intactness() {
        let k = key("web", "alice", 1);
        let mut s = build(&k, &creds(None), None).unwrap();
        let data = s.data.as_mut().unwrap();
        let other = crate::credentials::generate_client_secret().unwrap();
        data.insert(
            CLIENT_SECRET_KEY.into(),
            ByteString(other.expose().as_bytes().to_vec()),
        );
        assert!(!ManagedSecret::read(&s).intact);

        let mut s = build(&k, &creds(None), None).unwrap();
        let other = crate::credentials::generate_client_id().unwrap();
        s.data
            .as_mut()
            .unwrap()
            .insert(CLIENT_ID_KEY.into(), ByteString(other.as_bytes().to_vec()));
        assert!(!ManagedSecret::read(&s).intact, "a changed client id");
        s.data.as_mut().unwrap().remove(CLIENT_ID_KEY);
        assert!(!ManagedSecret::read(&s).intact, "a removed value");
    }
}
