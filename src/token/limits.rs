//! Limits on failed client authentication, so that guessing a client secret is slow and a flood of
//! wrong secrets cannot keep the argon2id pool busy: a GCRA budget of failures per client id and
//! per source address ([`governor`]), and a lockout while a budget is spent.
//!
//! Only failures spend the budget: a client that authenticates, however often, is never limited,
//! and a burst of wrong secrets for one client id does not stop other clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How many lockouts are remembered before expired ones are swept.
const SWEEP_AT: usize = 4096;

/// A budget of failed attempts per key (a client id, a source address): `burst` failures at once,
/// then one more every `per_failure_seconds`. While the budget is spent the key is locked out.
pub struct FailureLimiter<K: Hash + Eq + Clone> {
    budget: DefaultKeyedRateLimiter<K>,
    locked: Mutex<HashMap<K, Instant>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// `burst` failures (at least 1), replenished one per `per_failure_seconds` (at least 1).
    pub fn new(burst: u32, per_failure_seconds: u64) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(per_failure_seconds.max(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            budget: DefaultKeyedRateLimiter::keyed(quota),
            locked: Mutex::default(),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` while `key` is locked out: how long until it may try again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Ok(mut locked) = self.locked.lock() else {
            return Ok(());
        };
        match locked.get(key) {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => {
                    locked.remove(key);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    /// Records a failed attempt by `key`; when that spends its budget, locks it out until the
    /// next failure is allowed, and returns how long that is.
    pub fn failed(&self, key: &K) -> Option<Duration> {
        let not_until = self.budget.check_key(key).err()?;
        let wait = not_until.wait_time_from(self.clock.now());
        let now = Instant::now();
        if let Ok(mut locked) = self.locked.lock() {
            if locked.len() >= SWEEP_AT {
                locked.retain(|_, until| *until > now);
                self.budget.retain_recent();
            }
            locked.insert(key.clone(), now + wait);
        }
        Some(wait)
    }
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// Forgets lockouts that have ended and budgets that are full again.
    pub fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut locked) = self.locked.lock() {
            locked.retain(|_, until| *until > now);
            locked.shrink_to_fit();
        }
        self.budget.retain_recent();
        self.budget.shrink_to_fit();
    }
}

/// `Retry-After` in whole seconds (RFC 9110 §10.2.3), rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_locks_the_key_out_and_only_that_key() {
        let limiter = FailureLimiter::new(3, 60);
        for _ in 0..3 {
            assert!(limiter.check(&"a").is_ok());
            assert_eq!(limiter.failed(&"a"), None, "within the burst");
        }
        let wait = limiter
            .failed(&"a")
            .expect("the fourth failure spends the budget");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(limiter.check(&"a").is_err(), "locked out");
        assert!(limiter.check(&"b").is_ok(), "other keys are not");
        assert_eq!(limiter.failed(&"b"), None);
    }

    #[test]
    fn the_lockout_ends_when_a_failure_is_allowed_again() {
        let limiter = FailureLimiter::new(1, 1);
        assert_eq!(limiter.failed(&1), None);
        assert!(limiter.failed(&1).is_some());
        assert!(limiter.check(&1).is_err());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(limiter.check(&1).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_seconds(Duration::from_millis(5001)), 6);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
