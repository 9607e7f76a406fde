//! argon2id hashing of client secrets, off the async runtime on a bounded pool of blocking
//! threads, so that a burst of regenerations can neither starve the reconcilers nor exhaust memory.
//!
//! Each hash needs `m` KiB of working memory. Allocating and freeing it per hash makes glibc's
//! allocator keep most of it (the benchmark saw 850 MiB resident after 100 hashes), so the
//! working memory is allocated once per worker and kept for reuse: resident memory for hashing
//! is at most `workers x m` KiB. (Giving it back after each burst was tried and measured worse:
//! 110 MiB instead of 55 MiB after 200 keys, the allocator keeping the freed blocks.)

use std::sync::Arc;

use std::sync::Mutex;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::core::credentials::ClientSecret;
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
    /// m=7168 KiB, t=5, p=1: of the five argon2id configurations that OWASP's Password Storage
    /// Cheat Sheet lists as equally strong (m=46 MiB t=1 ... m=19 MiB t=2 ... m=7 MiB t=5), the one
    /// with the least memory. The operator holds one working memory per core, so this keeps it at
    /// 7 MiB per core instead of 19 MiB; on this project's 2-core machine a hash also took 20% less
    /// time than with m=19 MiB, t=2 (26.5 ms against 33.1 ms).
    fn default() -> Self {
        Self {
            memory_kib: 7 * 1024,
            iterations: 5,
            parallelism: 1,
        }
    }
}

impl HashParams {
    /// The most any hash the operator computes, publishes or verifies may cost: 256 MiB, 64
    /// iterations, 16 lanes. A hash with higher parameters is refused, so that nobody can make a
    /// verifier allocate gigabytes by publishing one.
    pub const CEILING: HashParams = HashParams {
        memory_kib: 256 * 1024,
        iterations: 64,
        parallelism: 16,
    };

    /// Whether every parameter is at most the [`HashParams::CEILING`].
    pub fn within_ceiling(self) -> bool {
        self.within(Self::CEILING)
    }

    /// Whether every parameter is at most `ceiling`'s.
    pub fn within(self, ceiling: HashParams) -> bool {
        self.memory_kib <= ceiling.memory_kib
            && self.iterations <= ceiling.iterations
            && self.parallelism <= ceiling.parallelism
    }

    /// The parameters of an argon2id PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), or
    /// `None` if it is not one. Reads the string only: nothing is hashed.
    pub fn of_phc(phc: &str) -> Option<HashParams> {
        let hash = argon2::PasswordHash::new(phc).ok()?;
        if hash.algorithm.as_str() != "argon2id" {
            return None;
        }
        let param = |name: &str| hash.params.get_decimal(name);
        Some(HashParams {
            memory_kib: param("m")?,
            iterations: param("t")?,
            parallelism: param("p")?,
        })
    }

    fn to_argon2(self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::Config(format!("invalid argon2id parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the parameters without hashing anything: valid for argon2id, and within the
    /// [`HashParams::CEILING`].
    pub fn validate(self) -> Result<()> {
        if !self.within_ceiling() {
            return Err(Error::Config(format!(
                "argon2id parameters {self:?} exceed the ceiling {:?}",
                Self::CEILING
            )));
        }
        self.to_argon2().map(|_| ())
    }
}

/// Salt length in bytes (the PHC recommendation).
const SALT_BYTES: usize = 16;
/// Hash output length in bytes (argon2's default).
const OUTPUT_BYTES: usize = 32;

/// Computes argon2id PHC strings on at most `workers` blocking threads at once, each with
/// working memory reused from hash to hash.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    params: HashParams,
    permits: Arc<Semaphore>,
    /// Working memory of idle workers; never more buffers than permits.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Hasher {
    /// A hasher with these parameters and at most `workers` hashes in flight (at least one).
    pub fn new(params: HashParams, workers: usize) -> Result<Self> {
        Ok(Self {
            argon2: params.to_argon2()?,
            params,
            permits: Arc::new(Semaphore::new(workers.max(1))),
            memory: Arc::default(),
        })
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt from the operating system.
    pub async fn hash(&self, secret: ClientSecret) -> Result<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Hash(e.to_string()))?;
        let blocks = self.argon2.params().block_count();
        let mut memory = self
            .memory
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_else(|| vec![Block::new(); blocks]);
        let (argon2, params) = (self.argon2.clone(), self.params);
        let (phc, memory) = tokio::task::spawn_blocking(move || {
            let phc = hash_now(&argon2, params, &secret, &mut memory);
            (phc, memory)
        })
        .await
        .map_err(|e| Error::Hash(format!("hashing worker failed: {e}")))?;
        if let Ok(mut idle) = self.memory.lock() {
            idle.push(memory);
        }
        phc
    }
}

impl Hasher {
    /// Whether `secret` matches the PHC string `phc` (see [`verify`]), computed on the same
    /// bounded pool of blocking threads as the hashes and with their reused working memory
    /// (grown, when a hash asks for more, up to the ceiling): a server verifying many secrets
    /// holds at most `workers` working memories, instead of what the allocator keeps of one
    /// allocation per verification.
    pub async fn verify(&self, secret: ClientSecret, phc: String) -> Result<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Hash(e.to_string()))?;
        let mut memory = self
            .memory
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_default();
        let (verified, memory) = tokio::task::spawn_blocking(move || {
            let verified = verify_with_memory(secret.expose(), &phc, &mut memory);
            (verified, memory)
        })
        .await
        .map_err(|e| Error::Hash(format!("hashing worker failed: {e}")))?;
        if let Ok(mut idle) = self.memory.lock() {
            idle.push(memory);
        }
        Ok(verified)
    }
}

fn hash_now(
    argon2: &Argon2<'_>,
    params: HashParams,
    secret: &ClientSecret,
    memory: &mut [Block],
) -> Result<String> {
    let salt = crate::core::credentials::random_bytes::<SALT_BYTES>()?;
    let mut out = [0u8; OUTPUT_BYTES];
    argon2
        .hash_password_into_with_memory(secret.expose().as_bytes(), &salt, &mut out, memory)
        .map_err(|e| Error::Hash(e.to_string()))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.memory_kib,
        params.iterations,
        params.parallelism,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Whether `secret` matches the argon2id PHC string `phc`: what a server checking presented keys
/// does. A hash that is not argon2id (version 19), or whose parameters exceed
/// [`HashParams::CEILING`], matches nothing and costs nothing.
pub fn verify(secret: &str, phc: &str) -> bool {
    verify_with_memory(secret, phc, &mut Vec::new())
}

/// [`verify`] in `memory`, grown if the hash needs more. The hash is recomputed with the PHC
/// string's parameters and salt and compared in constant time, as the `password-hash` crate's
/// verifier does.
fn verify_with_memory(secret: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Some(params) = HashParams::of_phc(phc).filter(|p| p.within_ceiling()) else {
        return false;
    };
    let Ok(hash) = argon2::PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    if hash.version.is_some_and(|v| v != u32::from(Version::V0x13)) {
        return false;
    }
    let Ok(argon2_params) = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(expected.len()),
    ) else {
        return false;
    };
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params);
    let blocks = argon2.params().block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut computed = vec![0u8; expected.len()];
    argon2
        .hash_password_into_with_memory(
            secret.as_bytes(),
            salt.as_ref(),
            &mut computed,
            &mut memory[..],
        )
        .is_ok()
        && bool::from(computed.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::credentials::generate_client_secret;

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
    async fn reused_working_memory_gives_correct_hashes() {
        let hasher = Hasher::new(cheap(), 1).unwrap();
        let secrets: Vec<_> = (0..4).map(|_| generate_client_secret().unwrap()).collect();
        // four at once on one worker: the memory is reused within the burst
        let hashes =
            futures::future::join_all(secrets.iter().map(|s| hasher.hash(s.clone()))).await;
        for (secret, phc) in secrets.iter().zip(hashes) {
            assert!(verify(secret.expose(), &phc.unwrap()));
        }
        assert_eq!(
            hasher.memory.lock().unwrap().len(),
            1,
            "one worker, one buffer, reused"
        );
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
                memory_kib: 7168,
                iterations: 5,
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
        let huge = HashParams {
            memory_kib: 4 * 1024 * 1024,
            ..HashParams::default()
        };
        assert!(huge.validate().unwrap_err().to_string().contains("ceiling"));
    }

    #[test]
    fn hashes_above_the_ceiling_verify_nothing_without_being_computed() {
        // 4 GiB: refused before any memory is allocated (this test would otherwise need it)
        let secret = generate_client_secret().unwrap();
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(!verify(secret.expose(), huge));
        assert!(!verify(
            secret.expose(),
            "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"
        ));
    }

    #[test]
    fn hashes_made_by_the_argon2_crates_own_hasher_verify_and_tampered_ones_do_not() {
        use argon2::PasswordHasher as _;
        let secret = generate_client_secret().unwrap();
        let params = Params::new(64, 2, 2, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let phc = argon2
            .hash_password(secret.expose().as_bytes())
            .unwrap()
            .to_string();
        assert!(verify(secret.expose(), &phc), "{phc}");
        let (head, tail) = phc.split_at(phc.len() - 4);
        let flipped = if tail.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{head}{flipped}{}", &tail[1..]);
        assert!(!verify(secret.expose(), &tampered));
        let old_version = phc.replace("$v=19$", "$v=16$");
        assert!(!verify(secret.expose(), &old_version));
    }

    #[tokio::test]
    async fn verifications_reuse_one_working_memory_grown_to_the_largest_hash() {
        let hasher = Hasher::new(cheap(), 1).unwrap();
        let secret = generate_client_secret().unwrap();
        let small = hasher.hash(secret.clone()).await.unwrap();
        let bigger = Hasher::new(
            HashParams {
                memory_kib: 256,
                ..cheap()
            },
            1,
        )
        .unwrap()
        .hash(secret.clone())
        .await
        .unwrap();
        for phc in [&small, &bigger, &small] {
            assert!(hasher.verify(secret.clone(), phc.clone()).await.unwrap());
        }
        let idle = hasher.memory.lock().unwrap();
        assert_eq!(idle.len(), 1, "one worker, one buffer");
        assert_eq!(
            idle[0].len(),
            256,
            "grown to the largest hash (256 KiB = 256 blocks)"
        );
    }
}
