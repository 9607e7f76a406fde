//! The token server's signing keys: ES256 key pairs (ECDSA on P-256 with SHA-256, RFC 7518 §3.4),
//! the set of them it publishes as a JWK Set (RFC 7517 §5), signing and verifying access tokens
//! (RFC 9068), and the rotation schedule that decides when a key is added and when one is dropped.
//! Nothing here talks to the cluster: [`super::signing_secret`] stores a [`KeySet`] in a Secret and
//! runs the schedule.
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

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The JWS algorithm of every token: ECDSA using P-256 and SHA-256 (RFC 7518 §3.4).
pub const ALGORITHM: &str = "ES256";
/// The `typ` header of every access token (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";
/// The `typ` values a verifier accepts (RFC 9068 §4: `at+jwt` or `application/at+jwt`, compared
/// case-insensitively as media types are, RFC 7515 §4.1.9).
const ACCEPTED_TYPES: [&str; 2] = ["at+jwt", "application/at+jwt"];
/// Version of the stored document ([`KeySet::to_secret_data`]).
pub const DOCUMENT_VERSION: u32 = 1;
/// Upper bound of every [`Schedule`] duration: ten years, in seconds.
pub const MAX_SCHEDULE_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// One ES256 signing key: a P-256 private key (RFC 7518 §3.4), its `kid`, and when it was created
/// and when it starts signing. `Debug` shows only the public parts.
#[derive(Clone)]
pub struct SigningKey {
    /// The private key as PKCS#8 DER (RFC 5208), the form `jsonwebtoken` signs with; zeroed on
    /// drop.
    encoding: EncodingKey,
    decoding: DecodingKey,
    x: String,
    y: String,
    kid: String,
    created_at: i64,
    active_from: i64,
}

impl SigningKey {
    /// A new key from the operating system's CSPRNG, created at `created_at` and signing from
    /// `active_from` (both seconds since the epoch). Errors ([`Error::Random`]) only when the
    /// CSPRNG fails.
    pub fn generate(created_at: i64, active_from: i64) -> Result<Self> {
        let secret = p256::SecretKey::try_generate_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| Error::Random(e.to_string()))?;
        Self::from_secret(&secret, created_at, active_from).map_err(|e| Error::Config(e.into()))
    }

    /// The key whose private key is `der`, a P-256 private key in PKCS#8 DER.
    fn from_pkcs8_der(
        der: &[u8],
        created_at: i64,
        active_from: i64,
    ) -> std::result::Result<Self, &'static str> {
        let secret = p256::SecretKey::from_pkcs8_der(der)
            .map_err(|_| "the private key is not a P-256 key in PKCS#8 DER")?;
        Self::from_secret(&secret, created_at, active_from)
    }

    fn from_secret(
        secret: &p256::SecretKey,
        created_at: i64,
        active_from: i64,
    ) -> std::result::Result<Self, &'static str> {
        // Always the same encoding of the key, whatever form it was read from.
        let der = secret
            .to_pkcs8_der()
            .map_err(|_| "the private key cannot be encoded as PKCS#8")?;
        let point = secret.public_key().to_sec1_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err("the public key has no affine coordinates");
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|_| "the public key cannot be used to verify")?;
        let kid = thumbprint(&x, &y);
        Ok(Self {
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            decoding,
            x,
            y,
            kid,
            created_at,
            active_from,
        })
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key (SHA-256, base64url without
    /// padding, 43 characters).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the key was created, seconds since the epoch.
    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    /// When the key starts signing, seconds since the epoch (it signs until a newer key's
    /// `active_from`).
    pub fn active_from(&self) -> i64 {
        self.active_from
    }

    /// The public key as a JWK (RFC 7517 §4, RFC 7518 §6.2.1): `kty` `EC`, `crv` `P-256`, `x`, `y`
    /// (base64url of the 32-byte big-endian coordinates), `kid`, `use` `sig`, `alg` `ES256`.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        })
    }

    /// Signs `claims` as a JWS compact serialisation with header
    /// `{"alg":"ES256","typ":"at+jwt","kid":...}` (RFC 9068 §2.1, RFC 7515 §7.1), whatever the key's
    /// `active_from`. Errors when the claims cannot be serialised.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::Config(format!("signing an access token failed: {e}")))
    }

    /// The order of keys in a set: by `active_from`, then `created_at`, then `kid`; the last key
    /// whose `active_from` has come signs.
    fn order(&self, other: &Self) -> Ordering {
        (self.active_from, self.created_at, &self.kid).cmp(&(
            other.active_from,
            other.created_at,
            &other.kid,
        ))
    }
}

/// Two keys are equal when their key pairs (their kids) and times are.
impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}

impl Eq for SigningKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 §3: SHA-256 over the required members of the EC JWK (`crv`, `kty`, `x`, `y`, RFC 7638
/// §3.2) in lexicographic order, without whitespace, base64url without padding. The coordinates
/// are base64url, so they need no JSON escaping.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

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
    /// claims:
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
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|typ| ACCEPTED_TYPES.iter().any(|t| typ.eq_ignore_ascii_case(t)));
        if !typ_ok {
            return Err(VerifyError::WrongType);
        }
        if header.alg != Algorithm::ES256 {
            return Err(VerifyError::WrongAlgorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.get(kid))
            .ok_or(VerifyError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|e| VerifyError::from_kind(e.kind()))?;
        check_times(&data.claims, now)?;
        serde_json::from_value(data.claims).map_err(|_| VerifyError::InvalidClaims)
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

/// Checks `exp` and `nbf` (RFC 7519 §4.1.4, §4.1.5; NumericDate may have a fraction, RFC 7519
/// §2) against `now`, without leeway.
fn check_times(claims: &Value, now: i64) -> Result<(), VerifyError> {
    let now = now as f64;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(VerifyError::InvalidClaims)?;
    if now >= exp {
        return Err(VerifyError::Expired);
    }
    match claims.get("nbf") {
        None => Ok(()),
        Some(nbf) => match nbf.as_f64() {
            None => Err(VerifyError::InvalidClaims),
            Some(nbf) if now < nbf => Err(VerifyError::NotYetValid),
            Some(_) => Ok(()),
        },
    }
}

/// Why [`KeySet::verify`] refused a token. No variant carries any part of the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact serialisation with a readable header and payload.
    #[error("the token is malformed")]
    Malformed,
    /// The `typ` header is not `at+jwt` (RFC 9068 §4).
    #[error("the token is not a JWT access token (typ)")]
    WrongType,
    /// The `alg` header is not `ES256`.
    #[error("the token is not signed with ES256")]
    WrongAlgorithm,
    /// No `kid` header, or not one of the set's keys (never signed here, or retired).
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The signature does not verify with the key `kid` names.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `iss` is not this issuer.
    #[error("the token has another issuer")]
    WrongIssuer,
    /// `aud` does not name this audience.
    #[error("the token is for another audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim is missing or has the wrong type.
    #[error("the token's claims are invalid")]
    InvalidClaims,
}

impl VerifyError {
    fn from_kind(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAlgorithm => Self::WrongAlgorithm,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                Self::InvalidClaims
            }
            _ => Self::Malformed,
        }
    }

    /// A short, stable label for metrics and logs (`malformed`, `wrong_type`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_type",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidClaims => "invalid_claims",
        }
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
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const ISS: &str = "https://tokens.example";
    const AUD: &str = "api";

    /// A fixed key: scalar 0x0102…20. Its public key and thumbprint were computed independently
    /// with Python's `cryptography` package (derive_private_key, then the RFC 7638 JSON by
    /// `json.dumps(sort_keys=True, separators=(",", ":"))`, SHA-256, base64url).
    const FIXED_X: &str = "UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18";
    const FIXED_Y: &str = "RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q";
    const FIXED_KID: &str = "6UoWwDCkLjV0J-pQG8c0THxbVhBcpR0AZDift1Yl5DM";
    /// The same key as PKCS#8 DER, written by Python's `cryptography` (OpenSSL).
    const FIXED_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyChRANCAARRXD1uueOWuQTT/sp/VP3NDMHpl783XcpRWtCmw7QDX0U2vjpQ8xj7+aVHWQKiIVAr7w1X4IxTsswKVvF9n5NU";

    fn fixed_key(created_at: i64, active_from: i64) -> SigningKey {
        let scalar: Vec<u8> = (1..=32).collect();
        let secret = p256::SecretKey::from_slice(&scalar).expect("a valid scalar");
        SigningKey::from_secret(&secret, created_at, active_from).expect("a valid key")
    }

    fn claims(now: i64, lifetime: i64) -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + lifetime})
    }

    fn schedule() -> Schedule {
        Schedule {
            rotation_seconds: 100,
            publish_ahead_seconds: 30,
            retire_after_seconds: 75,
        }
    }

    /// A token with this header and payload, signed by `key` (ES256 whatever `alg` says).
    fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        let der = key.encoding.as_bytes();
        let signing = p256::ecdsa::SigningKey::from_pkcs8_der(der).expect("key");
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature: p256::ecdsa::Signature = signing.sign(message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn header_of(token: &str) -> Value {
        let part = token.split('.').next().expect("header");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
    }

    #[test]
    fn thumbprint_matches_an_independent_computation() {
        let key = fixed_key(0, 0);
        assert_eq!(key.x, FIXED_X);
        assert_eq!(key.y, FIXED_Y);
        assert_eq!(key.kid(), FIXED_KID);
        assert_eq!(thumbprint(FIXED_X, FIXED_Y), FIXED_KID);
    }

    #[test]
    fn reads_a_pkcs8_key_written_by_another_implementation() {
        let data = json!({"version": 1, "keys": [{
            "kid": FIXED_KID, "created_at": 5, "active_from": 7, "private_key_pkcs8": FIXED_PKCS8,
        }]});
        let set = KeySet::from_secret_data(data.to_string().as_bytes()).expect("valid document");
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys()[0], fixed_key(5, 7));
    }

    #[test]
    fn generated_keys_differ_and_have_thumbprint_kids() {
        let a = SigningKey::generate(1, 2).expect("key");
        let b = SigningKey::generate(1, 2).expect("key");
        assert_ne!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 43);
        assert_eq!(a.kid(), thumbprint(&a.x, &a.y));
        assert_eq!((a.created_at(), a.active_from()), (1, 2));
    }

    #[test]
    fn debug_shows_no_private_material() {
        let key = fixed_key(0, 0);
        let set = KeySet::new(vec![key.clone()]).expect("set");
        let der_b64 = STANDARD.encode(key.encoding.as_bytes());
        for text in [format!("{key:?}"), format!("{set:?}"), format!("{key:#?}")] {
            assert!(text.contains(FIXED_KID), "{text}");
            assert!(!text.contains(&der_b64[..16]), "{text}");
            assert!(!text.contains("1, 2, 3, 4"), "{text}");
            assert!(!text.contains("encoding"), "{text}");
        }
    }

    #[test]
    fn jwks_lists_every_key_with_its_public_parts() {
        let set = KeySet::new(vec![fixed_key(0, 100), fixed_key_2(0, 0)]).expect("set");
        let jwks = set.jwks();
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        // ordered by active_from: the fixed key (active from 100) is second
        assert_eq!(
            keys[1],
            json!({"kty": "EC", "crv": "P-256", "x": FIXED_X, "y": FIXED_Y, "kid": FIXED_KID,
                   "use": "sig", "alg": "ES256"})
        );
        for jwk in keys {
            assert!(jwk.get("d").is_none());
            assert_eq!(jwk.as_object().map(|o| o.len()), Some(7));
        }
    }

    fn fixed_key_2(created_at: i64, active_from: i64) -> SigningKey {
        let scalar = [7u8; 32];
        let secret = p256::SecretKey::from_slice(&scalar).expect("a valid scalar");
        SigningKey::from_secret(&secret, created_at, active_from).expect("a valid key")
    }

    #[test]
    fn signer_is_the_newest_active_key() {
        let set = KeySet::new(vec![
            fixed_key(0, 200),
            fixed_key_2(0, 100),
            SigningKey::generate(0, 300).expect("key"),
        ])
        .expect("set");
        assert!(set.signer(99).is_none());
        assert_eq!(
            set.signer(100).map(SigningKey::kid),
            Some(fixed_key_2(0, 0).kid())
        );
        assert_eq!(set.signer(299).map(SigningKey::kid), Some(FIXED_KID));
        assert_eq!(set.signer(300), set.keys().last());
        assert!(set.sign(&claims(50, 60), 50).is_err());
    }

    #[test]
    fn duplicate_kids_are_refused() {
        assert!(KeySet::new(vec![fixed_key(0, 0), fixed_key(1, 1)]).is_err());
    }

    #[test]
    fn sign_then_verify() {
        let set = KeySet::new(vec![fixed_key(0, 0)]).expect("set");
        let token = set.sign(&claims(1000, 60), 1000).expect("signed");
        assert_eq!(
            header_of(&token),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": FIXED_KID})
        );
        let got: Value = set.verify(&token, ISS, AUD, 1000).expect("valid");
        assert_eq!(got, claims(1000, 60));
        let got: Value = set.verify(&token, ISS, AUD, 1059).expect("valid until exp");
        assert_eq!(got["sub"], "alice");
        // into a typed claims struct
        #[derive(Deserialize)]
        struct Sub {
            sub: String,
        }
        let typed: Sub = set.verify(&token, ISS, AUD, 1000).expect("valid");
        assert_eq!(typed.sub, "alice");
    }

    #[test]
    fn verify_refuses_what_it_must() {
        let key = fixed_key(0, 0);
        let other = fixed_key_2(0, 0);
        let set = KeySet::new(vec![key.clone()]).expect("set");
        let good_header = json!({"alg": "ES256", "typ": "at+jwt", "kid": FIXED_KID});
        let payload = claims(1000, 60);
        let verify = |token: &str| set.verify::<Value>(token, ISS, AUD, 1000);

        // the forging helper makes valid tokens, and typ compares case-insensitively
        assert!(verify(&forge(&key, &good_header, &payload)).is_ok());
        for typ in ["AT+JWT", "application/at+jwt"] {
            let header = json!({"alg": "ES256", "typ": typ, "kid": FIXED_KID});
            assert!(verify(&forge(&key, &header, &payload)).is_ok(), "{typ}");
        }

        for typ in [json!("JWT"), json!(null), json!("at+jwt2")] {
            let header = json!({"alg": "ES256", "typ": typ, "kid": FIXED_KID});
            assert_eq!(
                verify(&forge(&key, &header, &payload)),
                Err(VerifyError::WrongType),
                "{typ}"
            );
        }
        let no_typ = json!({"alg": "ES256", "kid": FIXED_KID});
        assert_eq!(
            verify(&forge(&key, &no_typ, &payload)),
            Err(VerifyError::WrongType)
        );
        for alg in ["ES384", "HS256", "RS256"] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": FIXED_KID});
            assert_eq!(
                verify(&forge(&key, &header, &payload)),
                Err(VerifyError::WrongAlgorithm),
                "{alg}"
            );
        }
        let none = json!({"alg": "none", "typ": "at+jwt", "kid": FIXED_KID});
        assert!(verify(&forge(&key, &none, &payload)).is_err());

        // a key not in the set, a missing kid, a kid of the set on another key's signature
        let by_other = other.sign(&payload).expect("signed");
        assert_eq!(verify(&by_other), Err(VerifyError::UnknownKey));
        let no_kid = json!({"alg": "ES256", "typ": "at+jwt"});
        assert_eq!(
            verify(&forge(&key, &no_kid, &payload)),
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            verify(&forge(&other, &good_header, &payload)),
            Err(VerifyError::BadSignature)
        );

        let token = key.sign(&payload).expect("signed");
        assert_eq!(
            set.verify::<Value>(&token, "https://other", AUD, 1000),
            Err(VerifyError::WrongIssuer)
        );
        assert_eq!(
            set.verify::<Value>(&token, ISS, "other", 1000),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            set.verify::<Value>(&token, ISS, AUD, 1060),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            set.verify::<Value>(&token, ISS, AUD, 5000),
            Err(VerifyError::Expired)
        );

        // aud as an array naming the audience is accepted; missing claims are not
        let listed = json!({"iss": ISS, "aud": ["x", AUD], "exp": 2000});
        assert!(verify(&forge(&key, &good_header, &listed)).is_ok());
        for missing in ["iss", "aud", "exp"] {
            let mut partial = payload.clone();
            partial.as_object_mut().map(|o| o.remove(missing));
            assert!(
                verify(&forge(&key, &good_header, &partial)).is_err(),
                "{missing}"
            );
        }
        let text_exp = json!({"iss": ISS, "aud": AUD, "exp": "2000"});
        assert_eq!(
            verify(&forge(&key, &good_header, &text_exp)),
            Err(VerifyError::InvalidClaims)
        );
        let future = json!({"iss": ISS, "aud": AUD, "exp": 2000, "nbf": 1001});
        assert_eq!(
            verify(&forge(&key, &good_header, &future)),
            Err(VerifyError::NotYetValid)
        );

        // malformed
        for bad in [
            "",
            "a.b",
            "a.b.c",
            "not a token",
            "..",
            &token[..token.len() / 2],
        ] {
            assert!(verify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let key = fixed_key(0, 0);
        let set = KeySet::new(vec![key.clone()]).expect("set");
        let token = key.sign(&claims(1000, 60)).expect("signed");
        let (message, signature) = token.rsplit_once('.').expect("three parts");

        // one character of the signature changed (still base64url of 64 bytes)
        let mut sig: Vec<char> = signature.chars().collect();
        let middle = sig.len() / 2;
        sig[middle] = if sig[middle] == 'A' { 'B' } else { 'A' };
        let tampered = format!("{message}.{}", sig.into_iter().collect::<String>());
        assert_eq!(
            set.verify::<Value>(&tampered, ISS, AUD, 1000),
            Err(VerifyError::BadSignature)
        );

        // the payload changed, signature kept
        let (header, _) = message.split_once('.').expect("two parts");
        let mut other_claims = claims(1000, 60);
        other_claims["sub"] = json!("mallory");
        let swapped = format!(
            "{header}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(other_claims.to_string())
        );
        assert_eq!(
            set.verify::<Value>(&swapped, ISS, AUD, 1000),
            Err(VerifyError::BadSignature)
        );

        // no signature
        assert!(
            set.verify::<Value>(&format!("{message}."), ISS, AUD, 1000)
                .is_err()
        );
    }

    #[test]
    fn serialisation_roundtrip() {
        let set = KeySet::new(vec![
            fixed_key(10, 20),
            SigningKey::generate(10, 120).expect("key"),
        ])
        .expect("set");
        let data = set.to_secret_data().expect("serialised");
        let back = KeySet::from_secret_data(&data).expect("read back");
        assert_eq!(back, set);
        // the keys read back sign tokens the original set verifies, and the reverse
        let token = back.sign(&claims(200, 60), 200).expect("signed");
        assert!(set.verify::<Value>(&token, ISS, AUD, 200).is_ok());
        let token = set.sign(&claims(50, 60), 50).expect("signed");
        assert!(back.verify::<Value>(&token, ISS, AUD, 50).is_ok());

        let document: Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(document["version"], 1);
        assert_eq!(document["keys"][0]["kid"], FIXED_KID);
        assert_eq!(document["keys"][0]["created_at"], 10);
        assert_eq!(document["keys"][0]["active_from"], 20);
        // the PKCS#8 DER of the key, as OpenSSL would write it
        assert_eq!(document["keys"][0]["private_key_pkcs8"], FIXED_PKCS8);

        let empty = KeySet::default().to_secret_data().expect("serialised");
        assert!(KeySet::from_secret_data(&empty).expect("read").is_empty());
    }

    #[test]
    fn a_damaged_document_is_refused_without_leaking_key_material() {
        let set = KeySet::new(vec![fixed_key(10, 20)]).expect("set");
        let data = String::from_utf8(set.to_secret_data().expect("serialised")).expect("utf8");
        let secret_part = &FIXED_PKCS8[40..];
        let damaged_body = FIXED_PKCS8.replacen('M', "*", 1);
        let cases: BTreeMap<&str, String> = BTreeMap::from([
            ("not json", "{".to_string()),
            ("truncated", data[..data.len() - 30].to_string()),
            ("not base64", data.replace(FIXED_PKCS8, &damaged_body)),
            (
                "not a key",
                data.replace(FIXED_PKCS8, &STANDARD.encode(b"hello")),
            ),
            (
                "truncated key",
                data.replace(FIXED_PKCS8, &FIXED_PKCS8[..FIXED_PKCS8.len() - 8]),
            ),
            (
                "key in a number field",
                data.replace(
                    "\"created_at\":10",
                    &format!("\"created_at\":\"{FIXED_PKCS8}\""),
                ),
            ),
            ("key as kid", data.replace(FIXED_KID, FIXED_PKCS8)),
            (
                "other kid",
                data.replace(FIXED_KID, &FIXED_KID.replace('6', "7")),
            ),
            ("version", data.replace("\"version\":1", "\"version\":2")),
            (
                "duplicate",
                format!(
                    r#"{{"version":1,"keys":[{k},{k}]}}"#,
                    k = json!({"kid": FIXED_KID, "created_at": 1, "active_from": 1, "private_key_pkcs8": FIXED_PKCS8})
                ),
            ),
        ]);
        for (case, document) in &cases {
            assert_ne!(document, &data, "{case}: the damage applied");
            let error = KeySet::from_secret_data(document.as_bytes())
                .expect_err(case)
                .to_string();
            assert!(!error.contains(secret_part), "{case}: {error}");
            assert!(!error.contains(&FIXED_PKCS8[..20]), "{case}: {error}");
            assert!(!error.contains(&damaged_body[40..]), "{case}: {error}");
        }
        // the kid mismatch names the key by its computed thumbprint
        let error = KeySet::from_secret_data(cases["other kid"].as_bytes())
            .expect_err("mismatch")
            .to_string();
        assert!(error.contains(FIXED_KID), "{error}");
    }

    #[test]
    fn schedule_validation() {
        assert!(schedule().validate().is_ok());
        let bad = [
            Schedule {
                rotation_seconds: 0,
                ..schedule()
            },
            Schedule {
                retire_after_seconds: 0,
                ..schedule()
            },
            Schedule {
                publish_ahead_seconds: 101,
                ..schedule()
            },
            Schedule {
                rotation_seconds: u64::MAX,
                publish_ahead_seconds: 1,
                retire_after_seconds: 1,
            },
        ];
        for s in bad {
            assert!(matches!(s.validate(), Err(Error::Config(_))), "{s:?}");
            assert!(KeySet::default().plan(0, &s).is_err(), "{s:?}");
        }
        let equal = Schedule {
            publish_ahead_seconds: 100,
            ..schedule()
        };
        assert!(equal.validate().is_ok());
        assert_eq!(
            Schedule::for_tokens(3600, 600, 900, 60).retire_after_seconds,
            960
        );
        assert_eq!(schedule().max_keys(), 3);
        assert_eq!(
            Schedule {
                retire_after_seconds: 250,
                ..schedule()
            }
            .max_keys(),
            5
        );
    }

    #[test]
    fn plan_from_empty_and_steady_state() {
        let s = schedule();
        let set = KeySet::default()
            .plan(1000, &s)
            .expect("plan")
            .expect("a change");
        assert_eq!(set.len(), 2);
        assert_eq!(set.keys()[0].active_from(), 1000);
        assert_eq!(set.keys()[1].active_from(), 1100);
        assert!(set.keys().iter().all(|k| k.created_at() == 1000));
        assert_eq!(set.signer(1000), set.keys().first());
        // nothing to do until the next key signs
        for now in [1000, 1050, 1099] {
            assert!(set.plan(now, &s).expect("plan").is_none(), "{now}");
        }
        // the next key signs: a new next key a rotation later, the old one kept
        let set2 = set.plan(1100, &s).expect("plan").expect("a change");
        assert_eq!(set2.len(), 3);
        assert_eq!(set2.keys()[2].active_from(), 1200);
        assert_eq!(&set2.keys()[..2], set.keys());
        // the first key is retired once its successor has signed for retire_after
        assert!(set2.plan(1174, &s).expect("plan").is_none());
        let set3 = set2.plan(1175, &s).expect("plan").expect("a change");
        assert_eq!(set3.keys(), &set2.keys()[1..]);
    }

    #[test]
    fn plan_after_a_writer_outage_still_publishes_ahead() {
        let s = schedule();
        let set = KeySet::default()
            .plan(1000, &s)
            .expect("plan")
            .expect("change");
        // nobody ran the schedule from 1000 to 1390: the second key signs since 1100
        let later = set.plan(1390, &s).expect("plan").expect("change");
        let next = later.keys().last().expect("next");
        assert_eq!(next.active_from(), 1390 + 30);
        // the first key went (its successor has signed since 1100 + 75 <= 1390); the second
        // still signs until the next key starts, which was published 30 s ahead
        assert_eq!(later.len(), 2);
        assert_eq!(later.signer(1419), set.keys().get(1));
    }

    #[test]
    fn plan_never_drops_the_signer_or_future_keys() {
        let s = schedule();
        // keys far in the past: the newest still signs and stays
        let set = KeySet::new(vec![fixed_key(0, 0), fixed_key_2(0, 10)]).expect("set");
        let next = set.plan(100_000, &s).expect("plan").expect("change");
        assert!(next.get(fixed_key_2(0, 0).kid()).is_some());
        assert!(next.get(FIXED_KID).is_none());
        assert_eq!(
            next.signer(100_000).map(SigningKey::kid),
            Some(fixed_key_2(0, 0).kid())
        );
        // only future keys: nothing is added, nothing dropped, nothing signs yet
        let future = KeySet::new(vec![fixed_key(0, 500), fixed_key_2(0, 600)]).expect("set");
        assert!(future.plan(100, &s).expect("plan").is_none());
    }

    /// Simulates the one writer running `plan` every `tick` seconds (with an outage) and a
    /// server signing a token every tick, and checks the module's invariants throughout.
    fn simulate(s: Schedule, tick: i64, outage: std::ops::Range<i64>, end: i64) {
        let lifetime: i64 = 60;
        assert!(s.retire_after_seconds as i64 >= lifetime);
        let start = 1_000_000;
        let mut set = KeySet::default();
        let mut first_seen: BTreeMap<String, i64> = BTreeMap::new();
        let mut tokens: Vec<(i64, String, String)> = Vec::new();
        let mut first_kid = None;
        let mut rotations = 0;
        let mut now = start;
        while now <= start + end {
            let offset = now - start;
            if !outage.contains(&offset)
                && let Some(next) = set.plan(now, &s).expect("plan")
            {
                set = next;
                // after a change, every live token verifies with the new set
                for (issued, kid, token) in &tokens {
                    if now < issued + lifetime {
                        let got = set.verify::<Value>(token, ISS, AUD, now);
                        assert!(
                            got.is_ok(),
                            "token by {kid} at {issued}, now {now}: {got:?}"
                        );
                    }
                }
            }
            for key in set.keys() {
                first_seen.entry(key.kid().to_string()).or_insert(now);
            }
            assert!(
                set.len() as u64 <= s.max_keys(),
                "{} keys at {now}: {set:?}",
                set.len()
            );
            let signer = set.signer(now).expect("a signer").clone();
            let first = first_kid.get_or_insert_with(|| signer.kid().to_string());
            // every key but the first was published at least publish_ahead before it signs
            for key in set.keys().iter().filter(|k| k.kid() != first.as_str()) {
                let seen = first_seen[key.kid()];
                assert!(
                    key.active_from() - seen >= s.publish_ahead_seconds as i64,
                    "{} seen at {seen}, active from {}",
                    key.kid(),
                    key.active_from()
                );
            }
            assert!(signer.active_from() <= now);
            if tokens.last().is_none_or(|(_, kid, _)| kid != signer.kid()) {
                rotations += 1;
            }
            let token = set.sign(&claims(now, lifetime), now).expect("signed");
            tokens.push((now, signer.kid().to_string(), token));
            // every live token's key is still published
            for (issued, kid, _) in &tokens {
                if now < issued + lifetime {
                    assert!(
                        set.get(kid).is_some(),
                        "{kid} of a token at {issued} gone at {now}"
                    );
                }
            }
            tokens.retain(|(issued, _, _)| now < issued + lifetime);
            now += tick;
        }
        assert!(
            rotations >= end / s.rotation_seconds as i64 / 2,
            "{rotations} rotations"
        );
    }

    #[test]
    fn schedule_invariants_over_a_timeline() {
        let s = schedule();
        simulate(s, 7, 0..0, 1_000);
        // retire_after longer than the rotation
        simulate(
            Schedule {
                retire_after_seconds: 250,
                ..s
            },
            10,
            0..0,
            1_000,
        );
        // publish ahead a whole rotation
        simulate(
            Schedule {
                publish_ahead_seconds: 100,
                ..s
            },
            9,
            0..0,
            800,
        );
        // the writer is down for a while
        simulate(s, 7, 300..560, 1_000);
    }
}
