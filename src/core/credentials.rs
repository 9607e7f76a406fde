//! Client id and client secret formats: generation from the operating system's CSPRNG, the
//! checksum that lets secret scanners recognise a client secret offline, and the unkeyed
//! fingerprint of releases before sealed records.
//!
//! Formats (both URL-safe, base64url without padding):
//! - client id: `akid_` + 16 random bytes (22 characters): regex `akid_[A-Za-z0-9_-]{22}`;
//! - client secret: `aksk_` + 32 random bytes (43 characters) + CRC32 (big-endian) of everything
//!   before it (6 characters): regex `aksk_[A-Za-z0-9_-]{49}`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Prefix of every client id.
pub const CLIENT_ID_PREFIX: &str = "akid_";
/// Prefix of every client secret.
pub const CLIENT_SECRET_PREFIX: &str = "aksk_";
/// Random bytes in a client id (128 bits).
pub const CLIENT_ID_BYTES: usize = 16;
/// Random bytes in a client secret (256 bits).
pub const CLIENT_SECRET_BYTES: usize = 32;

const CHECKSUM_CHARS: usize = 6;

/// A client secret in plaintext. Its `Debug` and `Display` never show it, so that it cannot leak
/// into logs, events or panics by accident; [`ClientSecret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a value read from a Secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext, for writing it into the Secret and hashing it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret has this operator's format and a correct checksum.
    pub fn is_well_formed(&self) -> bool {
        let Some(rest) = self.0.strip_prefix(CLIENT_SECRET_PREFIX) else {
            return false;
        };
        let body_len = base64_len(CLIENT_SECRET_BYTES);
        if rest.len() != body_len + CHECKSUM_CHARS || !rest.bytes().all(is_base64url) {
            return false;
        }
        let (unchecked, checksum) = self.0.split_at(CLIENT_SECRET_PREFIX.len() + body_len);
        checksum == checksum_of(unchecked)
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// Whether `id` has this operator's client id format.
pub fn is_well_formed_client_id(id: &str) -> bool {
    id.strip_prefix(CLIENT_ID_PREFIX).is_some_and(|rest| {
        rest.len() == base64_len(CLIENT_ID_BYTES) && rest.bytes().all(is_base64url)
    })
}

/// A new client id: 128 bits from the operating system's CSPRNG.
pub fn generate_client_id() -> Result<String> {
    let bytes = random_bytes::<CLIENT_ID_BYTES>()?;
    Ok(format!(
        "{CLIENT_ID_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A new client secret: 256 bits from the operating system's CSPRNG, then a checksum.
pub fn generate_client_secret() -> Result<ClientSecret> {
    let bytes = random_bytes::<CLIENT_SECRET_BYTES>()?;
    let unchecked = format!("{CLIENT_SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let checksum = checksum_of(&unchecked);
    Ok(ClientSecret(unchecked + &checksum))
}

/// Unkeyed fingerprint of a credential pair (`sha256:` and base64url of SHA-256 over
/// `client_id`, a newline, and the secret), which releases before sealed records
/// ([`crate::core::record`]) wrote beside the credentials. Anyone can recompute it, so it proves nothing
/// about who wrote a record; it is read only to tell an intact record of such a release (re-sealed
/// without rotation on upgrade) from an edited one, and never written.
pub fn fingerprint(client_id: &str, secret: &ClientSecret) -> String {
    let mut digest = Sha256::new();
    digest.update(client_id.as_bytes());
    digest.update(b"\n");
    digest.update(secret.expose().as_bytes());
    format!("sha256:{}", URL_SAFE_NO_PAD.encode(digest.finalize()))
}

/// A random id for a token (`jti`, RFC 7519 §4.1.7): 128 bits from the operating system's
/// CSPRNG, base64url without padding (22 characters).
pub fn random_token_id() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<16>()?))
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes)
}

fn checksum_of(unchecked: &str) -> String {
    URL_SAFE_NO_PAD.encode(crc32fast::hash(unchecked.as_bytes()).to_be_bytes())
}

const fn base64_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(6)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_has_prefix_length_and_alphabet() {
        let id = generate_client_id().unwrap();
        assert!(id.starts_with(CLIENT_ID_PREFIX));
        assert_eq!(id.len(), CLIENT_ID_PREFIX.len() + 22);
        assert!(is_well_formed_client_id(&id));
        assert!(!is_well_formed_client_id("akid_short"));
        assert!(!is_well_formed_client_id(
            &id.replace(CLIENT_ID_PREFIX, "xxid_")
        ));
    }

    #[test]
    fn client_secret_has_prefix_length_and_valid_checksum() {
        let secret = generate_client_secret().unwrap();
        let s = secret.expose();
        assert!(s.starts_with(CLIENT_SECRET_PREFIX));
        assert_eq!(s.len(), CLIENT_SECRET_PREFIX.len() + 43 + 6);
        assert!(s.bytes().all(is_base64url));
        assert!(secret.is_well_formed());
    }

    #[test]
    fn checksum_catches_a_changed_character() {
        let secret = generate_client_secret().unwrap();
        let s = secret.expose();
        let i = CLIENT_SECRET_PREFIX.len() + 10;
        let flipped = if &s[i..=i] == "A" { "B" } else { "A" };
        let altered = format!("{}{}{}", &s[..i], flipped, &s[i + 1..]);
        assert!(!ClientSecret::new(altered).is_well_formed());
        assert!(!ClientSecret::new(s[..s.len() - 1].to_string()).is_well_formed());
        assert!(!ClientSecret::new(format!("xxxx_{}", &s[5..])).is_well_formed());
    }

    #[test]
    fn checksum_matches_an_independent_crc32() {
        // Python: base64.urlsafe_b64encode(zlib.crc32(b"aksk_" + b"A" * 43).to_bytes(4, "big"))
        let unchecked = format!("{CLIENT_SECRET_PREFIX}{}", "A".repeat(43));
        assert_eq!(checksum_of(&unchecked), "Ympr9w");
        assert!(ClientSecret::new(format!("{unchecked}Ympr9w")).is_well_formed());
    }

    #[test]
    fn generated_values_differ() {
        assert_ne!(generate_client_id().unwrap(), generate_client_id().unwrap());
        assert_ne!(
            generate_client_secret().unwrap(),
            generate_client_secret().unwrap()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = generate_client_secret().unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(secret.expose()));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn fingerprint_changes_with_either_value() {
        let id = generate_client_id().unwrap();
        let s1 = generate_client_secret().unwrap();
        let s2 = generate_client_secret().unwrap();
        assert_eq!(fingerprint(&id, &s1), fingerprint(&id, &s1));
        assert_ne!(fingerprint(&id, &s1), fingerprint(&id, &s2));
        assert_ne!(fingerprint(&id, &s1), fingerprint("akid_other", &s1));
    }
}
