//! The Secret the operator writes for a key: its name, labels and bookkeeping annotations, how it
//! is built, and how the operator reads back what it wrote.
//!
//! The Secret carries its own bookkeeping (hash, handled regeneration request, time and reason of
//! rotation), sealed with the operator's record key ([`crate::core::record`]), and is written in one
//! request, so a crash between writing it and writing the ApiKey's status can neither lose nor
//! repeat a rotation: the status is always derivable from the Secret, and an edit by anyone else
//! is told apart from the operator's own writes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource as _, ResourceExt as _};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::core::crd::ApiKey;
use crate::core::credentials::{self, ClientSecret};
use crate::core::record::{PreviousRecord, Record, RecordKey, SealCheck};
use crate::core::rotation::Previous;
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
/// Annotation: the seal of the operator's record (see [`crate::core::record`]).
pub const SEAL_ANNOTATION: &str = "apikey.dev/seal";
/// Annotation of releases before seals: an unkeyed fingerprint of the credentials. Read only to
/// adopt their records; never written.
pub const LEGACY_FINGERPRINT_ANNOTATION: &str = "apikey.dev/fingerprint";
/// Annotation: the regenerate annotation value this client secret answers, in the form of
/// [`handled_form`].
pub const HANDLED_ANNOTATION: &str = "apikey.dev/handled-regenerate";
/// Annotation: when this client secret was generated (RFC 3339).
pub const ROTATED_AT_ANNOTATION: &str = "apikey.dev/rotated-at";
/// Annotation: why this client secret was written (`created`, `regenerated`,
/// `repaired_deleted`, `repaired_altered`, or `adopted` for a record re-sealed without rotation).
pub const REASON_ANNOTATION: &str = "apikey.dev/rotation-reason";

/// Annotation: the generation of the client secret (1, 2, ...), one more for each new secret.
pub const GENERATION_ANNOTATION: &str = "apikey.dev/generation";

/// Annotation: argon2id PHC string of the previous client secret, kept for a grace period after a
/// rotation (see [`crate::core::rotation`]); with [`PREVIOUS_GENERATION_ANNOTATION`] and
/// [`PREVIOUS_UNTIL_ANNOTATION`], sealed with the record.
pub const PREVIOUS_HASH_ANNOTATION: &str = "apikey.dev/previous-secret-hash";
/// Annotation: the generation of the previous client secret.
pub const PREVIOUS_GENERATION_ANNOTATION: &str = "apikey.dev/previous-generation";
/// Annotation: when the previous client secret stops being accepted (RFC 3339).
pub const PREVIOUS_UNTIL_ANNOTATION: &str = "apikey.dev/previous-expires-at";

/// Longest regenerate value kept as it is in [`HANDLED_ANNOTATION`], in bytes.
pub const HANDLED_VERBATIM_MAX: usize = 128;

/// How a regenerate request is stored in the Secret: verbatim up to [`HANDLED_VERBATIM_MAX`]
/// bytes (readable with kubectl), else `sha256:` and the base64url SHA-256 of the value, so that
/// any value the ApiKey accepts fits into the Secret's annotations (256 KiB in all, which a value
/// as large as the ApiKey's own limit would exceed).
pub fn handled_form(request: &str) -> String {
    if request.len() <= HANDLED_VERBATIM_MAX {
        request.to_owned()
    } else {
        format!(
            "sha256:{}",
            URL_SAFE_NO_PAD.encode(Sha256::digest(request.as_bytes()))
        )
    }
}

/// Whether a stored handled value (from [`HANDLED_ANNOTATION`]) answers regenerate `request`:
/// in [`handled_form`], or verbatim as releases before it stored values of any length (so that an
/// upgrade never takes a long handled value for a new request).
pub fn answers(stored: Option<&str>, request: &str) -> bool {
    stored.is_some_and(|s| s == request || s == handled_form(request))
}

/// Longest ApiKey name that also fits the value of [`APIKEY_LABEL`] (a label value is at most 63
/// characters); longer names, valid for ApiKeys and Secrets, leave the label out.
const LABEL_VALUE_MAX: usize = 63;

/// Whether the record in a managed Secret is the operator's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// Sealed with the operator's key, and the seal verifies the credentials and every field of
    /// the record: the operator wrote exactly this.
    Sealed,
    /// Well-formed credentials whose record the operator cannot judge: written by a release
    /// before seals (its unkeyed fingerprint matches), or sealed with a key the operator no
    /// longer has. Re-sealed without rotation when the ApiKey was never sealed with the current
    /// key; an edit otherwise.
    Unsealed,
    /// Edited by someone else: credentials missing or malformed, a seal made with the current key
    /// that does not verify, or an old-style fingerprint that does not match.
    Altered,
}

/// What the operator reads back from a Secret: whose it is, and what the decisions need of it.
/// The plaintext client secret is checked on reading and not kept, so the cache of every managed
/// Secret holds no credentials and a fraction of the Secrets' size.
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
    /// [`HANDLED_ANNOTATION`] (in [`handled_form`]); `None` when no request was ever handled.
    pub handled_request: Option<String>,
    /// [`ROTATED_AT_ANNOTATION`].
    pub rotated_at: Option<Time>,
    /// [`REASON_ANNOTATION`].
    pub reason: Option<String>,
    /// [`GENERATION_ANNOTATION`]; 0 when absent (a record of a release before generations).
    pub generation: u64,
    /// A short id of this very write of the credentials (from its seal), to name the one event
    /// that reports it; `None` unless sealed.
    pub rotation_id: Option<String>,
    /// The previous client secret kept for a grace period ([`PREVIOUS_HASH_ANNOTATION`] and the
    /// two beside it), if all three are present and well-formed.
    pub previous: Option<Previous>,
    /// Whether the record is the operator's own.
    pub integrity: Integrity,
    /// Whether it carries the operator's managed-by label (without it, the operator's watch does
    /// not see it).
    pub labelled: bool,
}

impl ManagedSecret {
    /// Reads the operator's view of `secret`, checking its record with `record_key`.
    pub fn read(secret: &Secret, record_key: &RecordKey) -> Self {
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
        let handled = annotation(HANDLED_ANNOTATION).unwrap_or_default();
        let rotated_at = annotation(ROTATED_AT_ANNOTATION).unwrap_or_default();
        let reason = annotation(REASON_ANNOTATION);
        let generation = annotation(GENERATION_ANNOTATION)
            .and_then(|g| g.parse::<u64>().ok())
            .filter(|g| *g <= i64::MAX as u64)
            .unwrap_or(0);
        let seal = annotation(SEAL_ANNOTATION);
        // written empty when there is none (see `build`)
        let present = |k: &str| annotation(k).filter(|v| !v.is_empty());
        let previous_hash = present(PREVIOUS_HASH_ANNOTATION);
        let previous_generation = present(PREVIOUS_GENERATION_ANNOTATION);
        let previous_until = present(PREVIOUS_UNTIL_ANNOTATION);
        let previous_record = match (&previous_hash, &previous_generation, &previous_until) {
            (Some(hash), Some(generation), Some(until)) => Some(PreviousRecord {
                hash,
                // an unreadable number cannot have been sealed: the seal then fails
                generation: generation.parse().unwrap_or(u64::MAX),
                until,
            }),
            _ => None,
        };
        let controller_uid = secret
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        let integrity = match (client_id, data(CLIENT_SECRET_KEY)) {
            (Some(id), Some(plaintext)) => {
                let plaintext = ClientSecret::new(plaintext.to_owned());
                if !credentials::is_well_formed_client_id(id) || !plaintext.is_well_formed() {
                    Integrity::Altered
                } else {
                    let record = Record {
                        namespace: &namespace,
                        secret_name: &name,
                        owner_uid: controller_uid.as_deref().unwrap_or_default(),
                        client_id: id,
                        client_secret: &plaintext,
                        hash: hash.as_deref().unwrap_or_default(),
                        handled: &handled,
                        rotated_at: &rotated_at,
                        reason: reason.as_deref().unwrap_or_default(),
                        generation,
                        previous: previous_record,
                    };
                    match record_key.check(&record, seal.as_deref()) {
                        SealCheck::Valid => Integrity::Sealed,
                        SealCheck::Invalid => Integrity::Altered,
                        // a seal by another key: nothing to check it with
                        SealCheck::Unknown if seal.is_some() => Integrity::Unsealed,
                        // no seal: a record of a release before seals, if its fingerprint holds
                        SealCheck::Unknown => {
                            let legacy = annotation(LEGACY_FINGERPRINT_ANNOTATION);
                            if legacy
                                .is_some_and(|fp| fp == credentials::fingerprint(id, &plaintext))
                            {
                                Integrity::Unsealed
                            } else {
                                Integrity::Altered
                            }
                        }
                    }
                }
            }
            _ => Integrity::Altered,
        };
        // 16 hex digits of the seal's digest: fit for an object name, unique per write
        let rotation_id = seal
            .as_deref()
            .filter(|_| integrity == Integrity::Sealed)
            .map(|seal| {
                Sha256::digest(seal.as_bytes())[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            });
        let previous = previous_record.and_then(|p| {
            Some(Previous {
                hash: p.hash.to_owned(),
                generation: Some(p.generation).filter(|g| *g <= i64::MAX as u64)?,
                until: p.until.parse().ok()?,
            })
        });
        Self {
            name,
            previous,
            resource_version: secret.resource_version(),
            controller_uid,
            client_id: client_id.map(str::to_owned),
            hash,
            handled_request: Some(handled).filter(|v| !v.is_empty()),
            rotated_at: Some(rotated_at)
                .filter(|t| !t.is_empty())
                .and_then(|t| t.parse().ok())
                .map(Time),
            reason,
            generation,
            rotation_id,
            integrity,
            labelled: secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER),
        }
    }

    /// Whether the Secret has a controller ownerReference to this very ApiKey (by UID). Only such
    /// Secrets are ever written.
    pub fn is_controlled_by(&self, key: &ApiKey) -> bool {
        key.metadata.uid.is_some() && self.controller_uid == key.metadata.uid
    }
}

/// The client secret in plaintext of a Secret read from the API server, if well-formed: what a
/// record re-sealed without rotation keeps.
pub fn client_secret_of(secret: &Secret) -> Option<ClientSecret> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(CLIENT_SECRET_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(ClientSecret::new)
        .filter(ClientSecret::is_well_formed)
}

/// Credentials and their bookkeeping, ready to be written.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: ClientSecret,
    /// argon2id PHC string of the client secret.
    pub hash: String,
    /// The regenerate request this secret answers, in [`handled_form`].
    pub handled_request: Option<String>,
    /// When it was generated.
    pub rotated_at: Time,
    /// Why it is written ([`REASON_ANNOTATION`]).
    pub reason: &'static str,
    /// The generation of the client secret ([`GENERATION_ANNOTATION`]).
    pub generation: u64,
    /// The previous client secret to keep for a grace period ([`PREVIOUS_HASH_ANNOTATION`]).
    pub previous: Option<Previous>,
}

/// The Secret holding `creds` for `key`, controlled by `key`, its record sealed with
/// `record_key`. `resource_version` is the write's precondition when replacing an existing Secret.
pub fn build(
    key: &ApiKey,
    creds: &Credentials,
    resource_version: Option<String>,
    record_key: &RecordKey,
) -> Result<Secret> {
    let owner = key
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = key.secret_name();
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGER.to_string())]);
    let key_name = key.name_any();
    if key_name.len() <= LABEL_VALUE_MAX {
        labels.insert(APIKEY_LABEL.to_string(), key_name);
    }
    let handled = creds.handled_request.clone().unwrap_or_default();
    let rotated_at = creds.rotated_at.0.to_string();
    let previous = creds
        .previous
        .as_ref()
        .map(|p| (p.hash.as_str(), p.generation, p.until.to_string()));
    let seal = record_key.seal(&Record {
        namespace: &namespace,
        secret_name: &name,
        owner_uid: &owner.uid,
        client_id: &creds.client_id,
        client_secret: &creds.client_secret,
        hash: &creds.hash,
        handled: &handled,
        rotated_at: &rotated_at,
        reason: creds.reason,
        generation: creds.generation,
        previous: previous
            .as_ref()
            .map(|(hash, generation, until)| PreviousRecord {
                hash,
                generation: *generation,
                until,
            }),
    });
    let mut annotations = BTreeMap::from([
        (HASH_ANNOTATION.to_string(), creds.hash.clone()),
        (SEAL_ANNOTATION.to_string(), seal),
        (HANDLED_ANNOTATION.to_string(), handled),
        (ROTATED_AT_ANNOTATION.to_string(), rotated_at),
        (REASON_ANNOTATION.to_string(), creds.reason.to_string()),
        (
            GENERATION_ANNOTATION.to_string(),
            creds.generation.to_string(),
        ),
    ]);
    // Written empty when there is no previous secret, rather than left out: the write is a
    // forced server-side apply, which removes only fields the operator owns. Left out, one
    // written by anyone else (a `kubectl annotate`, a restore) would stay, break the seal of
    // every record written after it, and have the key repaired again and again.
    let (hash, generation, until) = previous
        .map(|(hash, generation, until)| (hash.to_owned(), generation.to_string(), until))
        .unwrap_or_default();
    annotations.extend([
        (PREVIOUS_HASH_ANNOTATION.to_string(), hash),
        (PREVIOUS_GENERATION_ANNOTATION.to_string(), generation),
        (PREVIOUS_UNTIL_ANNOTATION.to_string(), until),
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
            name: Some(name),
            namespace: Some(namespace),
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
    use crate::core::test_support::{creds, key, record_key};

    fn sealed(k: &ApiKey, c: &Credentials) -> Secret {
        build(k, c, Some("42".into()), record_key()).unwrap()
    }

    fn read(s: &Secret) -> ManagedSecret {
        ManagedSecret::read(s, record_key())
    }

    #[test]
    fn built_secret_has_contract_labels_owner_data_and_a_sealed_record() {
        let k = key("web", "alice", 1);
        let c = creds(Some("r1"));
        let s = sealed(&k, &c);
        assert_eq!(s.metadata.name.as_deref(), Some("web"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            s.labels().get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGER)
        );
        assert_eq!(
            s.labels().get(APIKEY_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(s.metadata.resource_version.as_deref(), Some("42"));
        let owners = s.owner_references();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ApiKey");
        assert_eq!(owners[0].controller, Some(true));
        let read = read(&s);
        assert!(read.is_controlled_by(&k));
        assert_eq!(read.client_id.as_deref(), Some(c.client_id.as_str()));
        assert_eq!(read.hash.as_deref(), Some(c.hash.as_str()));
        assert_eq!(read.handled_request.as_deref(), Some("r1"));
        assert_eq!(read.rotated_at, Some(c.rotated_at.clone()));
        assert_eq!(read.reason.as_deref(), Some("created"));
        assert_eq!(read.integrity, Integrity::Sealed);
        assert!(read.labelled && read.rotation_id.is_some());
    }

    #[test]
    fn secret_name_defaults_to_the_apikey_name_and_long_names_drop_the_label() {
        let mut k = key("web", "alice", 1);
        assert_eq!(k.secret_name(), "web");
        k.spec.secret_name = Some("other".into());
        let s = build(&k, &creds(None), None, record_key()).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("other"));
        assert_eq!(read(&s).handled_request, None);
        let long = "k".repeat(200);
        let s = build(&key(&long, "alice", 1), &creds(None), None, record_key()).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some(long.as_str()));
        assert_eq!(
            s.labels().get(APIKEY_LABEL),
            None,
            "a label value is at most 63 characters"
        );
        assert_eq!(read(&s).integrity, Integrity::Sealed);
    }

    #[test]
    fn a_previous_secret_is_written_read_back_and_sealed() {
        let k = key("web", "alice", 1);
        let mut c = creds(None);
        c.previous = Some(Previous {
            hash: "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$b2xk".into(),
            generation: 4,
            until: crate::core::test_support::time(1_600).0,
        });
        let s = sealed(&k, &c);
        assert_eq!(
            s.annotations()
                .get(PREVIOUS_UNTIL_ANNOTATION)
                .map(String::as_str),
            Some("1970-01-01T00:26:40Z")
        );
        let r = read(&s);
        assert_eq!(r.integrity, Integrity::Sealed);
        assert_eq!(r.previous, c.previous);
        // whoever edits it (to have another secret accepted, or longer) breaks the seal
        for (annotation, value) in [
            (
                PREVIOUS_HASH_ANNOTATION,
                "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$bWluZQ",
            ),
            (PREVIOUS_GENERATION_ANNOTATION, "5"),
            (PREVIOUS_UNTIL_ANNOTATION, "2099-01-01T00:00:00Z"),
        ] {
            let mut edited = s.clone();
            edited
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(annotation.into(), value.into());
            assert_eq!(read(&edited).integrity, Integrity::Altered, "{annotation}");
        }
        let mut added = sealed(&k, &creds(None));
        added
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(
                [
                    PREVIOUS_HASH_ANNOTATION,
                    PREVIOUS_GENERATION_ANNOTATION,
                    PREVIOUS_UNTIL_ANNOTATION,
                ]
                .iter()
                .map(|a| (a.to_string(), s.annotations()[*a].clone())),
            );
        assert_eq!(
            read(&added).integrity,
            Integrity::Altered,
            "nor can one be added"
        );

        // without a previous secret the three are written empty (so that the operator's forced
        // apply owns them and removes whatever anyone else wrote there), and read as none
        let none = sealed(&k, &creds(None));
        for annotation in [
            PREVIOUS_HASH_ANNOTATION,
            PREVIOUS_GENERATION_ANNOTATION,
            PREVIOUS_UNTIL_ANNOTATION,
        ] {
            assert_eq!(
                none.annotations().get(annotation).map(String::as_str),
                Some("")
            );
        }
        let r = read(&none);
        assert_eq!((r.integrity, r.previous), (Integrity::Sealed, None));
    }

    #[test]
    fn annotations_never_hold_the_plaintext() {
        let c = creds(None);
        let s = sealed(&key("web", "alice", 1), &c);
        for v in s.annotations().values() {
            assert!(!v.contains(c.client_secret.expose()));
        }
    }

    #[test]
    fn a_secret_owned_by_another_uid_is_not_ours_and_its_seal_does_not_move() {
        let k = key("web", "alice", 1);
        let mut other = key("web", "alice", 1);
        other.metadata.uid = Some("someone-else".into());
        let mut s = sealed(&other, &creds(None));
        assert!(!read(&s).is_controlled_by(&k));
        assert!(!ManagedSecret::read(&Secret::default(), record_key()).is_controlled_by(&k));
        // pointing another key's sealed Secret at this key breaks the seal
        s.metadata.owner_references = k.controller_owner_ref(&()).map(|o| vec![o]);
        let moved = read(&s);
        assert!(moved.is_controlled_by(&k));
        assert_eq!(moved.integrity, Integrity::Altered);
    }

    fn edited(f: impl FnOnce(&mut Secret)) -> Integrity {
        let mut s = sealed(&key("web", "alice", 1), &creds(Some("r1")));
        f(&mut s);
        read(&s).integrity
    }

    fn set_annotation(s: &mut Secret, k: &str, v: &str) {
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(k.into(), v.into());
    }

    #[test]
    fn any_edit_of_credentials_or_record_is_an_alteration() {
        assert_eq!(edited(|_| {}), Integrity::Sealed);
        let other_secret = crate::core::credentials::generate_client_secret().unwrap();
        assert_eq!(
            edited(|s| {
                s.data.as_mut().unwrap().insert(
                    CLIENT_SECRET_KEY.into(),
                    ByteString(other_secret.expose().as_bytes().to_vec()),
                );
            }),
            Integrity::Altered
        );
        let other_id = crate::core::credentials::generate_client_id().unwrap();
        assert_eq!(
            edited(|s| {
                s.data
                    .as_mut()
                    .unwrap()
                    .insert(CLIENT_ID_KEY.into(), ByteString(other_id.into_bytes()));
            }),
            Integrity::Altered
        );
        assert_eq!(
            edited(|s| {
                s.data.as_mut().unwrap().remove(CLIENT_ID_KEY);
            }),
            Integrity::Altered
        );
        for (annotation, value) in [
            (
                HASH_ANNOTATION,
                "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdA$aGFzaA",
            ),
            (ROTATED_AT_ANNOTATION, "1999-01-01T00:00:00Z"),
            (HANDLED_ANNOTATION, "not-yet-asked"),
            (REASON_ANNOTATION, "regenerated"),
            (GENERATION_ANNOTATION, "99"),
            (GENERATION_ANNOTATION, "18446744073709551615"),
        ] {
            assert_eq!(
                edited(|s| set_annotation(s, annotation, value)),
                Integrity::Altered,
                "{annotation}"
            );
        }
        assert_eq!(
            edited(|s| {
                s.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .remove(HANDLED_ANNOTATION);
            }),
            Integrity::Altered,
            "a removed annotation"
        );
    }

    #[test]
    fn records_the_key_cannot_judge_are_unsealed_not_altered() {
        // sealed with a key the operator no longer has
        let lost = crate::core::record::RecordKey::generate().unwrap();
        let k = key("web", "alice", 1);
        let c = creds(Some("r1"));
        let s = build(&k, &c, None, &lost).unwrap();
        let read = read(&s);
        assert_eq!(read.integrity, Integrity::Unsealed);
        assert_eq!(read.rotation_id, None);
        // written by a release before seals: its fingerprint holds, or the record was edited
        let mut legacy = sealed(&k, &c);
        let annotations = legacy.metadata.annotations.as_mut().unwrap();
        annotations.remove(SEAL_ANNOTATION);
        annotations.remove(REASON_ANNOTATION);
        annotations.insert(
            LEGACY_FINGERPRINT_ANNOTATION.into(),
            credentials::fingerprint(&c.client_id, &c.client_secret),
        );
        assert_eq!(
            ManagedSecret::read(&legacy, record_key()).integrity,
            Integrity::Unsealed
        );
        set_annotation(&mut legacy, LEGACY_FINGERPRINT_ANNOTATION, "sha256:forged");
        assert_eq!(
            ManagedSecret::read(&legacy, record_key()).integrity,
            Integrity::Altered
        );
        legacy
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(LEGACY_FINGERPRINT_ANNOTATION);
        assert_eq!(
            ManagedSecret::read(&legacy, record_key()).integrity,
            Integrity::Altered,
            "neither seal nor fingerprint"
        );
    }

    #[test]
    fn a_removed_or_changed_label_is_noticed() {
        let mut s = sealed(&key("web", "alice", 1), &creds(None));
        s.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "someone".into());
        let read = read(&s);
        assert!(!read.labelled);
        assert_eq!(
            read.integrity,
            Integrity::Sealed,
            "labels are not part of the record"
        );
    }

    #[test]
    fn long_regenerate_values_are_stored_as_a_digest() {
        assert_eq!(handled_form("r1"), "r1");
        let long = "x".repeat(262_000);
        let stored = handled_form(&long);
        assert!(
            stored.starts_with("sha256:") && stored.len() < 64,
            "{stored}"
        );
        assert_eq!(stored, handled_form(&long));
        assert_ne!(stored, handled_form(&"y".repeat(262_000)));
        assert_eq!(
            handled_form(&"z".repeat(HANDLED_VERBATIM_MAX)).len(),
            HANDLED_VERBATIM_MAX
        );
    }
}
