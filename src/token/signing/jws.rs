//! JWS signing and verification of access tokens (RFC 7515, RFC 9068): one ES256 key pair
//! ([`SigningKey`]: its `kid`, its public JWK, a token signed with it), and a token verified
//! against the key its `kid` names ([`verify`], [`VerifyError`]). The set of keys, which keys it
//! holds and when, is [`super`]'s; it knows nothing of this module but [`SigningKey`].

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
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
/// One ES256 signing key: a P-256 private key (RFC 7518 §3.4), its `kid`, and when it was created
/// and when it starts signing. `Debug` shows only the public parts.
#[derive(Clone)]
pub struct SigningKey {
    /// The private key as PKCS#8 DER (RFC 5208), the form `jsonwebtoken` signs with; zeroed on
    /// drop.
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    pub(super) x: String,
    pub(super) y: String,
    pub(super) kid: String,
    pub(super) created_at: i64,
    pub(super) active_from: i64,
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
    pub(super) fn from_pkcs8_der(
        der: &[u8],
        created_at: i64,
        active_from: i64,
    ) -> std::result::Result<Self, &'static str> {
        let secret = p256::SecretKey::from_pkcs8_der(der)
            .map_err(|_| "the private key is not a P-256 key in PKCS#8 DER")?;
        Self::from_secret(&secret, created_at, active_from)
    }

    pub(super) fn from_secret(
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
    pub(super) fn order(&self, other: &Self) -> Ordering {
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
pub(super) fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Verifies `token` with the key `key_of` gives for its `kid` header, and returns its claims;
/// the checks and their sources are those of [`super::KeySet::verify`], which calls it with the set's
/// keys. Errors say which check failed and never include the token.
pub(super) fn verify<'k, T: DeserializeOwned>(
    token: &str,
    key_of: impl FnOnce(&str) -> Option<&'k SigningKey>,
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
        .and_then(key_of)
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

/// Why [`super::KeySet::verify`] refused a token. No variant carries any part of the token.
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
