//! The token server's signing keys: the set of ES256 key pairs (ECDSA on P-256 with SHA-256,
//! RFC 7518 §3.4) it publishes as a JWK Set (RFC 7517 §5), how the set is stored, and the
//! rotation schedule that decides when a key is added and when one is dropped: the key set's
//! lifecycle. One key pair, and signing and verifying access tokens with it (RFC 7515, RFC 9068),
//! are in `jws.rs` ([`SigningKey`], [`VerifyError`]); the set picks the key
//! ([`KeySet::sign`], [`KeySet::verify`]). Nothing here talks to the cluster:
//! [`super::signing_secret`] stores a [`KeySet`] in a Secret and runs the schedule.
//!
//! # Keys
//!
//! A [`SigningKey`] is a P-256 private key generated from the operating system's CSPRNG, its `kid`
//! (the RFC 7638 JWK thumbprint of its public key), `created_at` and `active_from` (seconds since
//! the epoch). Of a [`KeySet`], the key that signs at time `now` is the newest one whose
//! `active_from <= now` ([`KeySet::signer`]); every key of the set, whether it signs yet or not,
//! is published ([`KeySet::jwks`]).
//!
//! # Schedule and invariants
//!
//! [`KeySet::plan`] is run periodically by the one writer with a [`Schedule`]
//! (`rotation_seconds`, `publish_ahead_seconds`, `retire_after_seconds`) and keeps these
//! invariants:
//!
//! 1. **A key is published at least `publish_ahead_seconds` before it signs**: every key it adds
//!    to a non-empty set has `active_from >= now + publish_ahead_seconds`, so verifiers that cache
//!    the JWK Set (Istio refreshes every 20 minutes by default) know a key before they see a token
//!    signed with it. The only exception is the very first key of an empty set, which signs at
//!    once: nothing was signed before it. In steady state the next key is published a whole
//!    rotation period ahead (it is added when its predecessor starts signing).
//! 2. **A new key starts signing every `rotation_seconds`** (later only when the writer was not
//!    running when it should have added one: then `now + publish_ahead_seconds`).
//! 3. **A retired key stays published until every token it signed has expired**: key K is dropped
//!    only once the next newer key K' has been signing for `retire_after_seconds`
//!    (`K'.active_from + retire_after_seconds <= now`). K signed nothing after `K'.active_from`, so
//!    with `retire_after_seconds` = the longest token lifetime + the clock skew allowed between
//!    replicas, every token K signed has expired by then. The current signer and future keys are
//!    never dropped.
//! 4. **The set stays small**: at most `ceil(retire_after / rotation) + 2` keys after each plan
//!    (retired ones still needed, the signer, the next key).
//!
//! Exactly one writer is the caller's job ([`super::signing_secret`] elects one with a Lease): two
//! writers planning from the same set would each add a different next key.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

mod jws;

pub use jws::{ALGORITHM, SigningKey, TOKEN_TYPE, VerifyError};

/// Version of the stored document ([`KeySet::to_secret_data`]).
pub const DOCUMENT_VERSION: u32 = 1;
/// Upper bound of every [`Schedule`] duration: ten years, in seconds.
pub const MAX_SCHEDULE_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// The published signing keys, ordered by `active_from`. Cloning copies the keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

/// The document [`KeySet::to_secret_data`] writes. No `Debug`: it holds private keys.
#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: i64,
    active_from: i64,
    private_key_pkcs8: String,
}

impl KeySet {
    /// A set of `keys`. Errors ([`Error::Config`]) when two keys have the same kid.
    pub fn new(mut keys: Vec<SigningKey>) -> Result<Self> {
        keys.sort_by(SigningKey::order);
        let mut kids = BTreeSet::new();
        for key in &keys {
            if !kids.insert(key.kid()) {
                return Err(Error::Config(format!(
                    "signing key {} appears twice in the key set",
                    key.kid()
                )));
            }
        }
        Ok(Self { keys })
    }

    /// The keys, by `active_from` (then `created_at`, then kid).
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key with this kid.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The kids, in the set's order (for logs).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(SigningKey::kid).collect()
    }

    /// The keys of both sets; of a kid in both, this set's times win.
    pub fn merge(&self, other: &KeySet) -> KeySet {
        let mut keys = self.keys.clone();
        keys.extend(
            other
                .keys
                .iter()
                .filter(|k| self.get(&k.kid).is_none())
                .cloned(),
        );
        keys.sort_by(SigningKey::order);
        KeySet { keys }
    }

    /// The set as the JSON document stored under one data key of a Secret:
    /// `{"version":1,"keys":[{"kid","created_at","active_from","private_key_pkcs8"}]}` with times in
    /// seconds since the epoch and the private key as standard base64 (with padding) of its PKCS#8
    /// DER (RFC 5208, RFC 5915). Errors only when serialisation fails.
    pub fn to_secret_data(&self) -> Result<Vec<u8>> {
        let document = Document {
            version: DOCUMENT_VERSION,
            keys: self
                .keys
                .iter()
                .map(|k| StoredKey {
                    kid: k.kid.clone(),
                    created_at: k.created_at,
                    active_from: k.active_from,
                    private_key_pkcs8: STANDARD.encode(k.encoding.as_bytes()),
                })
                .collect(),
        };
        Ok(serde_json::to_vec(&document)?)
    }

    /// Reads a document written by [`KeySet::to_secret_data`]. Errors ([`Error::Config`]) when it
    /// is not JSON of that shape, has another version, holds a private key that is not P-256
    /// PKCS#8 DER in base64, a `kid` that is not its key's RFC 7638 thumbprint, or a kid twice. The
    /// messages name keys by position and computed thumbprint only, never the document's text.
    pub fn from_secret_data(data: &[u8]) -> Result<Self> {
        let document: Document = serde_json::from_slice(data).map_err(|e| {
            // serde_json's messages can quote the document's values: give only where it failed.
            let kind = match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not valid JSON",
                serde_json::error::Category::Data => "not of the expected shape",
                serde_json::error::Category::Eof => "truncated",
            };
            Error::Config(format!(
                "the signing-key document is {kind} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if document.version != DOCUMENT_VERSION {
            return Err(Error::Config(format!(
                "the signing-key document has version {}; this release reads version {DOCUMENT_VERSION}",
                document.version
            )));
        }
        let mut keys = Vec::with_capacity(document.keys.len());
        for (index, stored) in document.keys.iter().enumerate() {
            let invalid =
                |why: &str| Error::Config(format!("signing key #{index} of the document: {why}"));
            let der = STANDARD
                .decode(stored.private_key_pkcs8.as_bytes())
                .map_err(|_| invalid("private_key_pkcs8 is not base64"))?;
            let key = SigningKey::from_pkcs8_der(&der, stored.created_at, stored.active_from)
                .map_err(invalid)?;
            if stored.kid != key.kid {
                return Err(invalid(&format!(
                    "its kid is not the RFC 7638 thumbprint of its key ({})",
                    key.kid
                )));
            }
            keys.push(key);
        }
        Self::new(keys)
    }

    /// The JWK Set to publish (RFC 7517 §5): `{"keys":[...]}` with every key of the set, those not
    /// yet signing and those retired but kept included, as [`SigningKey::public_jwk`] gives them.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }

    /// The key that signs at `now` (seconds since the epoch): the newest whose `active_from <= now`;
    /// `None` when none has started.
    pub fn signer(&self, now: i64) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.active_from <= now)
    }

    /// Signs `claims` with [`KeySet::signer`] at `now` (see [`SigningKey::sign`] for the header).
    /// Errors ([`Error::Config`]) when no key signs at `now`, or the claims cannot be serialised.
    pub fn sign<T: Serialize>(&self, claims: &T, now: i64) -> Result<String> {
        self.signer(now)
            .ok_or_else(|| Error::Config("no signing key is active yet".into()))?
            .sign(claims)
    }

    /// Verifies an access token this set signed (for introspection, RFC 7662) and returns its
    /// claims (the checks are in `jws.rs`):
    /// - header (RFC 9068 §4): `typ` `at+jwt` or `application/at+jwt` (case-insensitive), `alg`
    ///   `ES256`, `kid` one of the set's;
    /// - the ES256 signature (RFC 7515 §5.2, RFC 7518 §3.4);
    /// - `iss` equal to `issuer`, `aud` equal to or containing `audience` (RFC 7519 §4.1.1, §4.1.3);
    /// - `exp` present and `now < exp`, `nbf` if present `nbf <= now` (RFC 7519 §4.1.4, §4.1.5),
    ///   `now` in seconds since the epoch, with **no leeway**: introspection is answered by the
    ///   issuer itself, whose replicas share one clock source, so a token past its `exp` is
    ///   inactive (RFC 7662 §2.2);
    /// - the claims deserialise into `T`.
    ///
    /// `jsonwebtoken` checks signature, algorithm, issuer, audience and the presence of `exp`,
    /// `iss` and `aud`; the times are checked here against `now`, since `jsonwebtoken` reads the
    /// system clock. Errors say which check failed and never include the token.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<T, VerifyError> {
        jws::verify(token, |kid| self.get(kid), issuer, audience, now)
    }

    /// What the set must become at `now` (seconds since the epoch) under `schedule`, or `None`
    /// when nothing changes:
    /// - an empty set gets a key signing at once (`active_from = now`) and the next one
    ///   (`active_from = now + rotation_seconds`);
    /// - a set without a future key (`active_from > now`) gets one, with `active_from` =
    ///   max(`now + publish_ahead_seconds`, newest `active_from + rotation_seconds`);
    /// - a key is dropped once the next newer key's `active_from + retire_after_seconds <= now`.
    ///
    /// See the module documentation for the invariants. Errors: [`Error::Config`] when the
    /// schedule is invalid ([`Schedule::validate`]), [`Error::Random`] when the CSPRNG fails.
    pub fn plan(&self, now: i64, schedule: &Schedule) -> Result<Option<KeySet>> {
        schedule.validate()?;
        let (rotation, ahead, retire) = schedule.as_i64();
        if self.keys.is_empty() {
            let current = SigningKey::generate(now, now)?;
            let next = SigningKey::generate(now, now.saturating_add(rotation))?;
            return Ok(Some(KeySet::new(vec![current, next])?));
        }
        // Keys are sorted, so each key's successor is the next newer one.
        let mut keys: Vec<SigningKey> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.keys
                    .get(i + 1)
                    .is_none_or(|newer| newer.active_from.saturating_add(retire) > now)
            })
            .map(|(_, k)| k.clone())
            .collect();
        let mut changed = keys.len() != self.keys.len();
        if !keys.iter().any(|k| k.active_from > now) {
            let newest = keys.iter().map(|k| k.active_from).max().unwrap_or(now);
            let active_from = now
                .saturating_add(ahead)
                .max(newest.saturating_add(rotation));
            keys.push(SigningKey::generate(now, active_from)?);
            changed = true;
        }
        if !changed {
            return Ok(None);
        }
        Ok(Some(KeySet::new(keys)?))
    }
}

/// When keys are added and dropped, in seconds (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// A new key starts signing every this many seconds.
    pub rotation_seconds: u64,
    /// A key is published at least this many seconds before it signs; at most
    /// `rotation_seconds`. Should exceed the longest time verifiers cache the JWK Set.
    pub publish_ahead_seconds: u64,
    /// A superseded key stays published this many seconds after its successor starts signing:
    /// the longest token lifetime plus the clock skew allowed between replicas.
    pub retire_after_seconds: u64,
}

impl Schedule {
    /// The schedule for tokens living at most `token_lifetime_seconds`, with `clock_skew_seconds`
    /// between replicas: `retire_after_seconds` = their sum.
    pub fn for_tokens(
        rotation_seconds: u64,
        publish_ahead_seconds: u64,
        token_lifetime_seconds: u64,
        clock_skew_seconds: u64,
    ) -> Self {
        Self {
            rotation_seconds,
            publish_ahead_seconds,
            retire_after_seconds: token_lifetime_seconds.saturating_add(clock_skew_seconds),
        }
    }

    /// Errors ([`Error::Config`]) unless `rotation_seconds` and `retire_after_seconds` are at
    /// least 1, `publish_ahead_seconds <= rotation_seconds`, and all are at most
    /// [`MAX_SCHEDULE_SECONDS`].
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("rotation", self.rotation_seconds),
            ("publish-ahead", self.publish_ahead_seconds),
            ("retire-after", self.retire_after_seconds),
        ];
        for (name, value) in fields {
            if value > MAX_SCHEDULE_SECONDS {
                return Err(Error::Config(format!(
                    "signing-key {name} period of {value} s exceeds {MAX_SCHEDULE_SECONDS} s"
                )));
            }
        }
        if self.rotation_seconds == 0 {
            return Err(Error::Config(
                "the signing-key rotation period must be at least 1 s".into(),
            ));
        }
        if self.retire_after_seconds == 0 {
            return Err(Error::Config(
                "the signing-key retire-after period must be at least 1 s (the longest token lifetime plus clock skew)".into(),
            ));
        }
        if self.publish_ahead_seconds > self.rotation_seconds {
            return Err(Error::Config(format!(
                "signing keys cannot be published {} s ahead when they rotate every {} s: the publish-ahead period must not exceed the rotation period",
                self.publish_ahead_seconds, self.rotation_seconds
            )));
        }
        Ok(())
    }

    /// The most keys a set holds after [`KeySet::plan`]: `ceil(retire_after / rotation) + 2`.
    pub fn max_keys(&self) -> u64 {
        self.retire_after_seconds
            .div_ceil(self.rotation_seconds.max(1))
            .saturating_add(2)
    }

    /// The durations as i64 (valid after [`Schedule::validate`]).
    fn as_i64(&self) -> (i64, i64, i64) {
        let cast = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        (
            cast(self.rotation_seconds),
            cast(self.publish_ahead_seconds),
            cast(self.retire_after_seconds),
        )
    }
}

#[cfg(test)]
mod tests;
