//! The claims of an access token the token server issues: a JWT access token as RFC 9068 §2.2
//! profiles it, acting for the ApiKey's user.
//!
//! | claim | value | source |
//! |---|---|---|
//! | `iss` | the token server's issuer URL | RFC 9068 §2.2, RFC 7519 §4.1.1 |
//! | `sub` | the ApiKey's `spec.user`, in Unicode NFC (see [`crate::core::user`]): the token acts for that user | RFC 9068 §2.2 |
//! | `aud` | the audience the server is configured with | RFC 9068 §2.2, RFC 7519 §4.1.3 |
//! | `exp`, `iat` | expiry and issue time, seconds since the epoch; `exp` = `iat` + the lifetime, capped (see below) | RFC 7519 §4.1.4, §4.1.6 |
//! | `jti` | 128 random bits from the operating system's CSPRNG, base64url | RFC 7519 §4.1.7 |
//! | `client_id` | the key's client id | RFC 9068 §2.2, RFC 8693 §4.3 |
//! | `apikey` | `{namespace, name, uid, generation}`: the ApiKey, and the generation of the client secret the token was issued under (`status.secretGeneration`, or `status.previousSecretGeneration` for the previous secret during its grace period) | private claim |
//!
//! `exp` is never later than the key's `spec.expiresAt`, nor, for a token issued with the previous
//! client secret, than the end of its grace period (`status.previousSecretExpiresAt`), both
//! rounded down to the second; and never earlier than `iat` + 1 s.
//!
//! A token of a generation older than the key's current one was issued under a client secret
//! that has since been regenerated; introspection reports it inactive, unless it is the previous
//! generation and its grace period lasts.

use serde::{Deserialize, Serialize};

use super::directory::{KeyEntry, SecretUsed};
use crate::core::credentials;
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
    /// The generation of the client secret the token was issued with, when it was issued:
    /// `status.secretGeneration`, or `status.previousSecretGeneration` for the previous secret.
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
    /// Expiry, seconds since the epoch: `iat` + the lifetime, capped at the key's expiry and, for
    /// the previous secret, at the end of its grace period (never before `iat` + 1).
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
    /// The claims of a token for the key `entry`, whose client presented its secret `used`,
    /// issued at `now` (seconds since the epoch) for `lifetime_seconds`, or less: `exp` is capped
    /// at [`KeyEntry::valid_until`] (rounded down to the second), and is at least `now` + 1.
    /// Errors only when the CSPRNG fails.
    pub fn issue(
        entry: &KeyEntry,
        used: SecretUsed,
        issuer: &str,
        audience: &str,
        now: i64,
        lifetime_seconds: i64,
    ) -> Result<Self> {
        let mut exp = now.saturating_add(lifetime_seconds);
        if let Some(until) = entry.valid_until(used) {
            exp = exp.min(until.as_second()).max(now.saturating_add(1));
        }
        Ok(Self {
            iss: issuer.to_owned(),
            sub: entry.user.clone(),
            aud: audience.to_owned(),
            exp,
            iat: now,
            jti: credentials::random_token_id()?,
            client_id: entry.client_id.clone(),
            apikey: KeyClaim {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                uid: entry.uid.clone(),
                generation: entry.generation_of(used),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::directory::PreviousSecret;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

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
            previous: None,
            expires_at: None,
            ready: true,
            may_introspect: false,
        }
    }

    /// `entry("alice")` at generation 3, with generation 2 in its grace period until `grace_end`
    /// and expiring at `expires_at`.
    fn rotated(grace_end: i64, expires_at: Option<i64>) -> KeyEntry {
        KeyEntry {
            previous: Some(PreviousSecret {
                hash: String::new(),
                generation: 2,
                expires_at: at(grace_end),
            }),
            expires_at: expires_at.map(at),
            ..entry("alice")
        }
    }

    fn issue(entry: &KeyEntry, used: SecretUsed, now: i64) -> AccessTokenClaims {
        AccessTokenClaims::issue(entry, used, "i", "a", now, 900).unwrap()
    }

    #[test]
    fn claims_name_the_user_the_client_and_the_generation() {
        let c = AccessTokenClaims::issue(
            &entry("alice"),
            SecretUsed::Current,
            "https://t.example",
            "api",
            1_000,
            900,
        )
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
        let other =
            AccessTokenClaims::issue(&entry("x"), SecretUsed::Current, "i", "a", 0, 1).unwrap();
        assert_ne!(c.jti, other.jti);
        assert_eq!(c.jti.len(), 22, "128 bits, base64url");
    }

    #[test]
    fn a_token_of_the_previous_secret_carries_its_generation_and_ends_with_its_grace_period() {
        let key = rotated(1_300, None);
        let c = issue(&key, SecretUsed::Previous, 1_000);
        assert_eq!((c.apikey.generation, c.iat, c.exp), (2, 1_000, 1_300));
        let c = issue(&key, SecretUsed::Current, 1_000);
        assert_eq!(
            (c.apikey.generation, c.exp),
            (3, 1_900),
            "the current secret's tokens are not capped by the grace period"
        );
        let c = issue(&rotated(5_000, None), SecretUsed::Previous, 1_000);
        assert_eq!(
            c.exp, 1_900,
            "a long grace period does not lengthen a token"
        );
    }

    #[test]
    fn exp_is_capped_at_the_keys_expiry_and_is_at_least_one_second_after_iat() {
        let c = issue(&rotated(5_000, Some(1_200)), SecretUsed::Current, 1_000);
        assert_eq!(c.exp, 1_200);
        let c = issue(&rotated(1_300, Some(1_200)), SecretUsed::Previous, 1_000);
        assert_eq!(c.exp, 1_200, "the earlier of expiry and grace end");
        let c = issue(&rotated(1_100, Some(1_200)), SecretUsed::Previous, 1_000);
        assert_eq!(c.exp, 1_100);
        // a sub-second expiry is rounded down: never later than it
        let key = KeyEntry {
            expires_at: Some(Timestamp::new(1_200, 999_999_999).unwrap()),
            ..entry("alice")
        };
        assert_eq!(issue(&key, SecretUsed::Current, 1_000).exp, 1_200);
        // authenticated an instant before the expiry, issued in its second: iat + 1
        let key = KeyEntry {
            expires_at: Some(Timestamp::new(1_000, 500_000_000).unwrap()),
            ..entry("alice")
        };
        let c = issue(&key, SecretUsed::Current, 1_000);
        assert_eq!((c.iat, c.exp), (1_000, 1_001));
    }
}
