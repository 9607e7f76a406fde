//! The operator's record, sealed: a keyed MAC over what the operator wrote into a managed Secret
//! (and over the client id it published in an ApiKey's status), with a key only the operator
//! holds, so that an edit by anyone else is told apart from the operator's own writes.
//!
//! Whoever can edit a Secret can change its annotations and data; without the record key they
//! cannot compute a seal that verifies (HMAC-SHA256, RFC 2104; the comparison is constant-time).
//! This is how Vault Secrets Operator tells drift of the Secrets it writes: an HMAC with a key of
//! its own.
//!
//! Seal format: `v1.<key id>.<MAC>`, where the key id is 8 base64url characters of SHA-256 of the
//! key (it names the key, it does not reveal it) and the MAC is base64url of HMAC-SHA256 over
//! every field of the record, each prefixed with its length (so no two records encode alike).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use sha2::{Digest as _, Sha256};

use crate::core::credentials::{self, ClientSecret};
use crate::error::{Error, Result};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Length of the record key in bytes (256 bits, from the operating system's CSPRNG).
pub const KEY_BYTES: usize = 32;
/// Version tag of the seal format.
const VERSION: &str = "v1";

/// Everything the operator wrote into a managed Secret that it later trusts. A seal covers all
/// of it: changing any one field, or moving the Secret to another ApiKey, breaks the seal.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Namespace of the Secret.
    pub namespace: &'a str,
    /// Name of the Secret.
    pub secret_name: &'a str,
    /// UID of the ApiKey that controls the Secret (its controller ownerReference).
    pub owner_uid: &'a str,
    /// `client_id` data.
    pub client_id: &'a str,
    /// `client_secret` data.
    pub client_secret: &'a ClientSecret,
    /// argon2id PHC string of the client secret.
    pub hash: &'a str,
    /// The regenerate request this secret answers, in its stored form (empty: none).
    pub handled: &'a str,
    /// When the secret was generated (RFC 3339).
    pub rotated_at: &'a str,
    /// Why it was written (`created`, `regenerated`, `repaired_deleted`, `repaired_altered`,
    /// `adopted`).
    pub reason: &'a str,
    /// The generation of the client secret: 1 for the key's first, one more for each write of a
    /// new one. The status publishes it, sealed, so that an older sealed record put back is told
    /// apart from the current one.
    pub generation: u64,
    /// The previous client secret kept for a grace period, if any. A record without one seals
    /// exactly as records did before grace periods existed.
    pub previous: Option<PreviousRecord<'a>>,
}

/// The previous client secret in a record (see [`crate::core::rotation`]): whoever could edit it could
/// make the token server accept a secret of their choosing, so it is sealed with the rest.
#[derive(Clone, Copy, Debug)]
pub struct PreviousRecord<'a> {
    /// argon2id PHC string of the previous client secret.
    pub hash: &'a str,
    /// Its generation.
    pub generation: u64,
    /// When it stops being accepted (RFC 3339).
    pub until: &'a str,
}

impl Record<'_> {
    fn mac(&self, key: &RecordKey) -> HmacSha256 {
        let generation = self.generation.to_be_bytes();
        let previous_generation = self.previous.map(|p| p.generation.to_be_bytes());
        let mut fields: Vec<&[u8]> = vec![
            self.namespace.as_bytes(),
            self.secret_name.as_bytes(),
            self.owner_uid.as_bytes(),
            self.client_id.as_bytes(),
            self.client_secret.expose().as_bytes(),
            self.hash.as_bytes(),
            self.handled.as_bytes(),
            self.rotated_at.as_bytes(),
            self.reason.as_bytes(),
            &generation,
        ];
        // Appended only when present: each field is length-prefixed, so a record with a
        // previous secret never encodes like one without.
        if let (Some(previous), Some(previous_generation)) = (self.previous, &previous_generation) {
            fields.extend([
                previous.hash.as_bytes(),
                previous_generation.as_slice(),
                previous.until.as_bytes(),
            ]);
        }
        key.mac(SECRET_DOMAIN, &fields)
    }
}

/// What a seal says about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealCheck {
    /// Sealed with the current key, and the seal verifies: the operator wrote exactly this.
    Valid,
    /// Sealed with the current key (or claiming to be) and the seal does not verify: edited.
    Invalid,
    /// No seal, a malformed one, or one made with another key: the operator cannot tell who wrote
    /// it (a release before seals, or a key that was lost or replaced).
    Unknown,
}

/// The operator's record key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct RecordKey {
    id: String,
    key: [u8; KEY_BYTES],
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey(id={}, <redacted>)", self.id)
    }
}

impl RecordKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_array(credentials::random_bytes::<KEY_BYTES>()?))
    }

    /// The key stored as `bytes`. Errors unless it is exactly [`KEY_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
            Error::Config(format!(
                "the record key must be {KEY_BYTES} bytes, found {}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_array(key))
    }

    fn from_array(key: [u8; KEY_BYTES]) -> Self {
        let digest = Sha256::new_with_prefix(b"apikey-operator record key id\n")
            .chain_update(key)
            .finalize();
        let id = URL_SAFE_NO_PAD.encode(digest)[..8].to_string();
        Self { id, key }
    }

    /// The key's bytes, to store it.
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// The key's id (8 base64url characters), shown in seals and logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, domain: &str, fields: &[&[u8]]) -> HmacSha256 {
        // Keys of any length are valid for HMAC (RFC 2104 §2): this cannot fail.
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        mac.update(domain.as_bytes());
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    fn seal_of(&self, mac: HmacSha256) -> String {
        let tag = mac.finalize().into_bytes();
        format!("{VERSION}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(tag))
    }

    fn check_of(&self, mac: HmacSha256, seal: Option<&str>) -> SealCheck {
        let Some((id, tag)) = seal.and_then(|s| {
            let mut parts = s.splitn(3, '.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(VERSION), Some(id), Some(tag)) => Some((id, tag)),
                _ => None,
            }
        }) else {
            return SealCheck::Unknown;
        };
        if id != self.id {
            return SealCheck::Unknown;
        }
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return SealCheck::Invalid;
        };
        match mac.verify_slice(&tag) {
            Ok(()) => SealCheck::Valid,
            Err(_) => SealCheck::Invalid,
        }
    }

    /// The seal of a Secret's record.
    pub fn seal(&self, record: &Record<'_>) -> String {
        self.seal_of(record.mac(self))
    }

    /// Checks the seal found beside a Secret's record.
    pub fn check(&self, record: &Record<'_>, seal: Option<&str>) -> SealCheck {
        self.check_of(record.mac(self), seal)
    }

    fn status_mac(&self, owner_uid: &str, client_id: &str, generation: u64) -> HmacSha256 {
        self.mac(
            STATUS_DOMAIN,
            &[
                owner_uid.as_bytes(),
                client_id.as_bytes(),
                &generation.to_be_bytes(),
            ],
        )
    }

    /// The seal of the client id and secret generation published in the status of the ApiKey
    /// with UID `owner_uid`.
    pub fn seal_status(&self, owner_uid: &str, client_id: &str, generation: u64) -> String {
        self.seal_of(self.status_mac(owner_uid, client_id, generation))
    }

    /// Checks the seal of the client id and secret generation published in an ApiKey's status.
    pub fn check_status(
        &self,
        owner_uid: &str,
        client_id: &str,
        generation: u64,
        seal: Option<&str>,
    ) -> SealCheck {
        self.check_of(self.status_mac(owner_uid, client_id, generation), seal)
    }
}

/// Domain separation: a seal of one kind is never valid as the other.
const SECRET_DOMAIN: &str = "apikey-operator secret record v1\n";
const STATUS_DOMAIN: &str = "apikey-operator status v1\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::credentials::generate_client_secret;

    fn with<'a>(secret: &'a ClientSecret, f: impl FnOnce(&mut Record<'a>)) -> Record<'a> {
        let mut r = Record {
            namespace: "ns",
            secret_name: "web",
            owner_uid: "uid-web",
            client_id: "akid_AAAAAAAAAAAAAAAAAAAAAA",
            client_secret: secret,
            hash: "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$aGFzaA",
            handled: "r1",
            rotated_at: "2026-11-29T10:00:00Z",
            reason: "created",
            generation: 3,
            previous: None,
        };
        f(&mut r);
        r
    }

    #[test]
    fn a_seal_verifies_its_record_and_no_edit_of_it() {
        let key = RecordKey::generate().unwrap();
        let secret = generate_client_secret().unwrap();
        let other = generate_client_secret().unwrap();
        let record = with(&secret, |_| {});
        let seal = key.seal(&record);
        assert!(seal.starts_with(&format!("v1.{}.", key.id())), "{seal}");
        assert_eq!(key.check(&record, Some(&seal)), SealCheck::Valid);
        let edits: [fn(&mut Record<'_>); 10] = [
            |r| r.namespace = "other",
            |r| r.secret_name = "other",
            |r| r.owner_uid = "uid-other",
            |r| r.client_id = "akid_BBBBBBBBBBBBBBBBBBBBBB",
            |r| r.hash = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdA$aGFzaA",
            |r| r.handled = "r2",
            |r| r.rotated_at = "1999-01-01T00:00:00Z",
            |r| r.reason = "regenerated",
            |r| r.generation = 2,
            |r| {
                r.previous = Some(PreviousRecord {
                    hash: "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$b2xk",
                    generation: 2,
                    until: "2026-11-29T10:10:00Z",
                })
            },
        ];
        for edit in edits {
            let edited = with(&secret, |r| edit(r));
            assert_eq!(key.check(&edited, Some(&seal)), SealCheck::Invalid);
        }
        let edited = with(&other, |_| {});
        assert_eq!(key.check(&edited, Some(&seal)), SealCheck::Invalid);
        // field boundaries count: moving a character from one field to the next breaks it
        let shifted = with(&secret, |r| {
            r.namespace = "nsw";
            r.secret_name = "eb";
        });
        assert_eq!(key.check(&shifted, Some(&seal)), SealCheck::Invalid);

        // a previous secret is sealed too: none of its fields can be changed or taken away
        let previous = PreviousRecord {
            hash: "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$b2xk",
            generation: 2,
            until: "2026-11-29T10:10:00Z",
        };
        let with_previous = with(&secret, |r| r.previous = Some(previous));
        let seal = key.seal(&with_previous);
        assert_eq!(key.check(&with_previous, Some(&seal)), SealCheck::Valid);
        let edits: [fn(&mut PreviousRecord<'_>); 3] = [
            |p| p.hash = "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$bWluZQ",
            |p| p.generation = 1,
            |p| p.until = "2099-01-01T00:00:00Z",
        ];
        for edit in edits {
            let mut edited = previous;
            edit(&mut edited);
            let record = with(&secret, |r| r.previous = Some(edited));
            assert_eq!(key.check(&record, Some(&seal)), SealCheck::Invalid);
        }
        assert_eq!(
            key.check(&with(&secret, |_| {}), Some(&seal)),
            SealCheck::Invalid
        );
    }

    #[test]
    fn another_key_missing_or_garbled_seals_are_unknown_not_valid() {
        let key = RecordKey::generate().unwrap();
        let other = RecordKey::generate().unwrap();
        let secret = generate_client_secret().unwrap();
        let record = with(&secret, |_| {});
        assert_eq!(
            key.check(&record, Some(&other.seal(&record))),
            SealCheck::Unknown
        );
        assert_eq!(key.check(&record, None), SealCheck::Unknown);
        assert_eq!(key.check(&record, Some("garbage")), SealCheck::Unknown);
        let forged = format!("v1.{}.AAAA", key.id());
        assert_eq!(key.check(&record, Some(&forged)), SealCheck::Invalid);
        let forged = format!("v1.{}.not base64!", key.id());
        assert_eq!(key.check(&record, Some(&forged)), SealCheck::Invalid);
    }

    #[test]
    fn status_seals_bind_id_and_generation_to_their_key() {
        let key = RecordKey::generate().unwrap();
        let id = "akid_AAAAAAAAAAAAAAAAAAAAAA";
        let seal = key.seal_status("uid-a", id, 4);
        assert_eq!(
            key.check_status("uid-a", id, 4, Some(&seal)),
            SealCheck::Valid
        );
        assert_eq!(
            key.check_status("uid-b", id, 4, Some(&seal)),
            SealCheck::Invalid
        );
        assert_eq!(
            key.check_status("uid-a", "akid_BBBBBBBBBBBBBBBBBBBBBB", 4, Some(&seal)),
            SealCheck::Invalid
        );
        assert_eq!(
            key.check_status("uid-a", id, 5, Some(&seal)),
            SealCheck::Invalid
        );
    }

    #[test]
    fn the_key_survives_a_round_trip_and_is_never_shown() {
        let key = RecordKey::generate().unwrap();
        let again = RecordKey::from_bytes(key.expose()).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(RecordKey::from_bytes(&[0; 16]).is_err());
        let shown = format!("{key:?}");
        assert!(shown.contains(key.id()) && shown.contains("redacted"));
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(key.expose())));
    }
}
