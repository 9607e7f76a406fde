//! The wall clock the token server decides times by: a key's `spec.expiresAt`, the end of a
//! previous client secret's grace period, an access token's `iat` and `exp`, and the expiry
//! checked at introspection. The system's clock in production; in tests, one set by hand, so
//! that the boundaries can be tested exactly. (The caches' own lifetimes, the failure budgets and
//! the lockouts run on the monotonic clock, [`std::time::Instant`], and are not affected.)

use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A wall clock: the system's ([`Clock::system`], the default) or a hand-set one
/// ([`Clock::fixed`]) shared by its clones.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that shows `at` until it is [`Clock::set`] or [`Clock::advance`]d; its clones
    /// show the same time.
    pub fn fixed(at: Timestamp) -> Self {
        Self(Some(Arc::new(Mutex::new(at))))
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(at) => at.lock().map_or_else(|e| *e.into_inner(), |at| *at),
        }
    }

    /// The time now in whole seconds since the epoch (rounded down), as JWT claims count it.
    pub fn now_seconds(&self) -> i64 {
        self.now().as_second()
    }

    /// Sets a hand-set clock to `at`; does nothing to the system's clock.
    pub fn set(&self, at: Timestamp) {
        if let Some(now) = &self.0 {
            match now.lock() {
                Ok(mut now) => *now = at,
                Err(e) => *e.into_inner() = at,
            }
        }
    }

    /// Moves a hand-set clock by `by` (saturating); does nothing to the system's clock.
    pub fn advance(&self, by: SignedDuration) {
        let now = self.now();
        self.set(now.saturating_add(by).unwrap_or(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_shows_what_it_was_set_to_in_all_its_clones() {
        let clock = Clock::fixed(Timestamp::from_second(1_000).unwrap());
        let clone = clock.clone();
        clock.advance(SignedDuration::from_secs(5));
        assert_eq!(clone.now_seconds(), 1_005);
        clone.set(Timestamp::from_second(7).unwrap());
        assert_eq!(clock.now_seconds(), 7);
        let system = Clock::system();
        system.set(Timestamp::UNIX_EPOCH);
        assert!(system.now_seconds() > 1_600_000_000);
    }
}
