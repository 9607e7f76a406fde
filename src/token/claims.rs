//! The claims of an access token the token server issues: a JWT access token as RFC 9068 §2.2
//! profiles it, acting for the ApiKey's user.
//!
//! | claim | value | source |
//! |---|---|---|
//! | `iss` | the token server's issuer URL | RFC 9068 §2.2, RFC 7519 §4.1.1 |
//! | `sub` | the ApiKey's `spec.user`, in Unicode NFC (see [`crate::user`]): the token acts for that user | RFC 9068 §2.2 |
//! | `aud` | the audience the server is configured with | RFC 9068 §2.2, RFC 7519 §4.1.3 |
//! | `exp`, `iat` | expiry and issue time, seconds since the epoch; `exp` = `iat` + the lifetime | RFC 7519 §4.1.4, §4.1.6 |
//! | `jti` | 128 random bits from the operating system's CSPRNG, base64url | RFC 7519 §4.1.7 |
//! | `client_id` | the key's client id | RFC 9068 §2.2, RFC 8693 §4.3 |
//! | `apikey` | `{namespace, name, uid, generation}`: the ApiKey, and the generation of the client secret the token was issued under (`status.secretGeneration`) | private claim |
//!
//! A token of a generation older than the key's current one was issued under a client secret
//! that has since been regenerated; introspection reports it inactive.

use serde::{Deserialize, Serialize};

use super::directory::KeyEntry;
use crate::credentials;
use crate::error::Result;

/// Which ApiKey, and which generation of its client secret, a token was issued under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaim {
    /// The ApiKey's namespace.
    pub namespace: String,
    /// The ApiKey's name.
    pub name: String,
    /// The ApiKey's `metadata.uid`: tells a key from a later one of the same name.
    pub uid: String,
    /// `status.secretGeneration` when the token was issued.
    pub generation: i64,
}

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// The user the token acts for: the ApiKey's `spec.user`, NFC-normalised.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Unique id of the token.
    pub jti: String,
    /// The client id it was issued to.
    pub client_id: String,
    /// The ApiKey and generation it was issued under.
    pub apikey: KeyClaim,
}

impl AccessTokenClaims {
    /// The claims of a token for the key `entry`, issued at `now` (seconds since the epoch) for
    /// `lifetime_seconds`. Errors only when the CSPRNG fails.
    pub fn issue(
        entry: &KeyEntry,
        issuer: &str,
        audience: &str,
        now: i64,
        lifetime_seconds: i64,
    ) -> Result<Self> {
        Ok(Self {
            iss: issuer.to_owned(),
            sub: entry.user.clone(),
            aud: audience.to_owned(),
            exp: now.saturating_add(lifetime_seconds),
            iat: now,
            jti: credentials::random_token_id()?,
            client_id: entry.client_id.clone(),
            apikey: KeyClaim {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                uid: entry.uid.clone(),
                generation: entry.generation,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str) -> KeyEntry {
        KeyEntry {
            uid: "u-1".into(),
            resource_version: "7".into(),
            namespace: "ns".into(),
            name: "web".into(),
            user: user.into(),
            client_id: "akid_AAAAAAAAAAAAAAAAAAAAAA".into(),
            secret_hash: String::new(),
            generation: 3,
            ready: true,
            may_introspect: false,
        }
    }

    #[test]
    fn claims_name_the_user_the_client_and_the_generation() {
        let c = AccessTokenClaims::issue(&entry("alice"), "https://t.example", "api", 1_000, 900)
            .unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!((c.iat, c.exp), (1_000, 1_900));
        assert_eq!(c.client_id, "akid_AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            c.apikey,
            KeyClaim {
                namespace: "ns".into(),
                name: "web".into(),
                uid: "u-1".into(),
                generation: 3
            }
        );
        let json = serde_json::to_value(&c).unwrap();
        for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
            assert!(json.get(claim).is_some(), "RFC 9068 §2.2 requires {claim}");
        }
        let other = AccessTokenClaims::issue(&entry("x"), "i", "a", 0, 1).unwrap();
        assert_ne!(c.jti, other.jti);
        assert_eq!(c.jti.len(), 22, "128 bits, base64url");
    }
}
