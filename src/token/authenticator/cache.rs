//! The authenticator's memory of verifications, so that a steady client costs one argon2id per
//! [`super::AuthLimits::remember_for`]: the successes remembered (at most two per key, its
//! current secret and its previous one during a grace period) and the secrets known to be wrong.
//! Both are keyed by a tag ([`VerificationCache::tag`]), an HMAC under a key from the CSPRNG
//! that binds the key as it is and the hashes then in effect, compared in constant time. Neither
//! holds a secret. The request path that asks it is [`super::Authenticator::authenticate`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

use crate::core::credentials::{self, ClientSecret};
use crate::error::Result;
use crate::token::directory::{KeyEntry, PreviousSecret, SecretUsed};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Most secrets remembered as wrong at once; beyond, a wrong secret is hashed each time (and
/// spends its budget) until the sweep makes room.
const MAX_KNOWN_WRONG: usize = 65_536;

/// A remembered success: its tag, and until when it is remembered.
struct Remembered {
    tag: [u8; 32],
    until: Instant,
}

/// Verifications remembered and secrets known to be wrong, for [`super::Authenticator`].
pub(super) struct VerificationCache {
    /// Key of the tags, from the CSPRNG at start; never leaves the process.
    key: [u8; 32],
    /// How long a success, or a secret known to be wrong, is remembered.
    remember_for: Duration,
    /// Remembered successes by key UID and secret: at most two per key (its current secret, and
    /// its previous one during a grace period).
    remembered: Mutex<HashMap<(String, SecretUsed), Remembered>>,
    /// Secrets known to be wrong for the key as it is now and the hashes in effect (their tags),
    /// until when: a client that keeps presenting a secret that has been regenerated costs no
    /// hash and spends no budget, so it cannot lock out its own new secret.
    refused: Mutex<HashMap<[u8; 32], Instant>>,
}

impl VerificationCache {
    /// An empty cache remembering for `remember_for` (zero: nothing is remembered), with a new
    /// key. Errors ([`crate::Error::Random`]) when the CSPRNG fails.
    pub(super) fn new(remember_for: Duration) -> Result<Self> {
        Ok(Self {
            key: credentials::random_bytes::<32>()?,
            remember_for,
            remembered: Mutex::default(),
            refused: Mutex::default(),
        })
    }

    /// HMAC-SHA256 under the process's remember key over everything a verification depends on:
    /// the key's UID, resourceVersion (any write of the ApiKey), client id, current hash and
    /// generation, the previous secret's hash, generation and end of grace if it is `previous`
    /// (in its grace period now) and a marker if not, and the presented secret. Length-prefixed,
    /// so that no two inputs share an encoding. The set of hashes in effect is bound: a tag
    /// decided during a grace period is not the tag of the same secret after it.
    pub(super) fn tag(
        &self,
        entry: &KeyEntry,
        previous: Option<&PreviousSecret>,
        secret: &ClientSecret,
    ) -> [u8; 32] {
        // Keys of any length are valid for HMAC (RFC 2104 §2): this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        let mut update = |part: &str| {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        };
        let generation = entry.generation.to_string();
        for part in [
            entry.uid.as_str(),
            entry.resource_version.as_str(),
            entry.client_id.as_str(),
            entry.secret_hash.as_str(),
            generation.as_str(),
        ] {
            update(part);
        }
        match previous {
            None => update("none"),
            Some(p) => {
                update("previous");
                update(&p.hash);
                update(&p.generation.to_string());
                update(&p.expires_at.to_string());
            }
        }
        update(secret.expose());
        mac.finalize().into_bytes().into()
    }

    /// Which secret of the key `uid` `tag` is remembered as, if any; a hit is remembered for
    /// another period (the tag binds the hashes in effect, so a regeneration, or the end of the
    /// grace period for a remembered previous secret, still ends it).
    pub(super) fn is_remembered(&self, uid: &str, tag: &[u8; 32]) -> Option<SecretUsed> {
        let mut remembered = self.remembered.lock().ok()?;
        let now = Instant::now();
        [SecretUsed::Current, SecretUsed::Previous]
            .into_iter()
            .find(|used| {
                remembered
                    .get_mut(&(uid.to_owned(), *used))
                    .is_some_and(|r| {
                        let hit = r.until > now && bool::from(r.tag.ct_eq(tag));
                        if hit {
                            r.until = now + self.remember_for;
                        }
                        hit
                    })
            })
    }

    /// Remembers a successful verification of the key `uid` with its secret `used`: at most
    /// two entries per key (so no more than twice as many as there are keys), expired ones
    /// dropped by [`VerificationCache::sweep`].
    pub(super) fn remember(&self, uid: &str, used: SecretUsed, tag: [u8; 32]) {
        if self.remember_for.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.insert(
                (uid.to_owned(), used),
                Remembered {
                    tag,
                    until: now + self.remember_for,
                },
            );
        }
    }

    /// Whether `tag` is a secret known to be wrong for the key as it is now.
    pub(super) fn is_known_wrong(&self, tag: &[u8; 32]) -> bool {
        self.refused
            .lock()
            .ok()
            .and_then(|refused| refused.get(tag).copied())
            .is_some_and(|until| until > Instant::now())
    }

    /// Remembers `tag` as a wrong secret for the remembering period (at most
    /// [`MAX_KNOWN_WRONG`] at once).
    pub(super) fn remember_wrong(&self, tag: [u8; 32]) {
        if self.remember_for.is_zero() {
            return;
        }
        if let Ok(mut refused) = self.refused.lock()
            && refused.len() < MAX_KNOWN_WRONG
        {
            refused.insert(tag, Instant::now() + self.remember_for);
        }
    }

    /// Forgets what is remembered no longer.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.retain(|_, r| r.until > now);
        }
        if let Ok(mut refused) = self.refused.lock() {
            refused.retain(|_, until| *until > now);
        }
    }
}
