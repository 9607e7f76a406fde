//! argon2id hashing of client secrets, off the async runtime on a bounded pool of blocking
//! threads, so that a burst of regenerations can neither starve the reconcilers nor exhaust memory.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

use crate::credentials::ClientSecret;
use crate::error::{Error, Result};

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Iterations (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id recommendation, also argon2's own default: m=19456 KiB, t=2, p=1.
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl HashParams {
    fn to_argon2(self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::Config(format!("invalid argon2id parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the parameters without hashing anything.
    pub fn validate(self) -> Result<()> {
        self.to_argon2().map(|_| ())
    }
}

/// Computes argon2id PHC strings on at most `workers` blocking threads at once.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher with these parameters and at most `workers` hashes in flight (at least one).
    pub fn new(params: HashParams, workers: usize) -> Result<Self> {
        Ok(Self {
            argon2: params.to_argon2()?,
            permits: Arc::new(Semaphore::new(workers.max(1))),
        })
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt from the operating system.
    pub async fn hash(&self, secret: ClientSecret) -> Result<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Hash(e.to_string()))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || hash_now(&argon2, &secret))
            .await
            .map_err(|e| Error::Hash(format!("hashing worker failed: {e}")))?
    }
}

fn hash_now(argon2: &Argon2<'_>, secret: &ClientSecret) -> Result<String> {
    argon2
        .hash_password(secret.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `secret` matches the PHC string `phc`: what a server checking presented keys does.
pub fn verify(secret: &str, phc: &str) -> bool {
    argon2::PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::generate_client_secret;

    fn cheap() -> HashParams {
        HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hash_is_argon2id_phc_that_verifies_only_its_secret() {
        let hasher = Hasher::new(cheap(), 2).unwrap();
        let secret = generate_client_secret().unwrap();
        let other = generate_client_secret().unwrap();
        let phc = hasher.hash(secret.clone()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(!phc.contains(secret.expose()));
        assert!(verify(secret.expose(), &phc));
        assert!(!verify(other.expose(), &phc));
    }

    #[tokio::test]
    async fn same_secret_hashes_differently_because_of_the_salt() {
        let hasher = Hasher::new(cheap(), 1).unwrap();
        let secret = generate_client_secret().unwrap();
        let a = hasher.hash(secret.clone()).await.unwrap();
        let b = hasher.hash(secret).await.unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn defaults_are_owasp_and_bad_parameters_are_rejected() {
        assert_eq!(
            HashParams::default(),
            HashParams {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
        let bad = HashParams {
            memory_kib: 1,
            ..HashParams::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("argon2id"), "{err}");
        assert!(Hasher::new(bad, 1).is_err());
    }
}
