//! Logging an API server outage once, instead of every failed call of every key.
//!
//! During an outage every reconcile and both watches fail, each key again after its backoff: a
//! 20-second restart of kube-apiserver with 200 keys gave about 700 WARN and ERROR lines. Here
//! the first failure that looks like an outage (the server unreachable, a 5xx, 429, a timeout) is
//! logged once; later ones are only counted; the first success afterwards logs how long it lasted
//! and how many calls of how many keys failed meanwhile (they are retried with their per-key
//! backoff, unchanged). Failures that are not outages (a refused write, a forbidden call) are
//! logged per key as before.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Whether `error` says the API server is unavailable rather than that this one call was wrong.
pub fn is_outage(error: &Error) -> bool {
    match error {
        Error::Kube(e) => kube_outage(e),
        _ => false,
    }
}

/// [`is_outage`] for a Kubernetes client error.
pub fn kube_outage(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// What an outage tracker says to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// An outage starts: log it.
    Started,
    /// Part of an outage already reported: log nothing.
    Ongoing,
    /// The outage is over.
    Ended {
        /// How long it lasted.
        lasted: Duration,
        /// Failed calls counted meanwhile.
        failures: u64,
        /// Distinct keys (or watches) that failed.
        subjects: usize,
    },
    /// Nothing to say.
    Quiet,
}

#[derive(Default)]
struct State {
    since: Option<Instant>,
    failures: u64,
    subjects: HashSet<String>,
}

/// Tracks one outage at a time; the clock is passed in so that it can be tested.
#[derive(Default)]
pub struct Outage {
    state: Mutex<State>,
}

impl Outage {
    /// Records a failure of `subject` (a key or a watch) at `now`.
    pub fn failed(&self, subject: &str, now: Instant) -> Report {
        let Ok(mut state) = self.state.lock() else {
            return Report::Started;
        };
        state.failures += 1;
        if state.subjects.len() < 100_000 {
            state.subjects.insert(subject.to_owned());
        }
        if state.since.is_some() {
            Report::Ongoing
        } else {
            state.since = Some(now);
            Report::Started
        }
    }

    /// Records a success at `now`.
    pub fn succeeded(&self, now: Instant) -> Report {
        let Ok(mut state) = self.state.lock() else {
            return Report::Quiet;
        };
        match state.since.take() {
            Some(since) => {
                let report = Report::Ended {
                    lasted: now.saturating_duration_since(since),
                    failures: state.failures,
                    subjects: state.subjects.len(),
                };
                *state = State::default();
                report
            }
            None => Report::Quiet,
        }
    }

    /// Records a failure of `subject` because of `error`, and logs it if it starts an outage.
    pub fn note_failure(&self, subject: &str, error: &dyn std::fmt::Display) {
        if self.failed(subject, Instant::now()) == Report::Started {
            tracing::warn!(
                error = %error,
                "the Kubernetes API server is unavailable; keys are retried with backoff, and failures are counted until it answers again"
            );
        } else {
            tracing::debug!(subject, error = %error, "failed during an outage");
        }
    }

    /// Records a success, and logs the end of an outage with its summary.
    pub fn note_success(&self) {
        if let Report::Ended {
            lasted,
            failures,
            subjects,
        } = self.succeeded(Instant::now())
        {
            tracing::info!(
                lasted_seconds = lasted.as_secs(),
                failed_calls = failures,
                keys_and_watches = subjects,
                "the Kubernetes API server answers again; what failed meanwhile is being retried"
            );
        }
    }

    /// Whether an outage is going on.
    pub fn ongoing(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.since.is_some())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_then_summed_up() {
        let outage = Outage::default();
        let t0 = Instant::now();
        assert_eq!(outage.succeeded(t0), Report::Quiet);
        assert_eq!(outage.failed("ns/a", t0), Report::Started);
        assert!(outage.ongoing());
        for i in 0..50 {
            let key = format!("ns/k{}", i % 10);
            assert_eq!(
                outage.failed(&key, t0 + Duration::from_secs(1)),
                Report::Ongoing
            );
        }
        assert_eq!(
            outage.succeeded(t0 + Duration::from_secs(20)),
            Report::Ended {
                lasted: Duration::from_secs(20),
                failures: 51,
                subjects: 11
            }
        );
        assert!(!outage.ongoing());
        assert_eq!(
            outage.succeeded(t0 + Duration::from_secs(21)),
            Report::Quiet
        );
        assert_eq!(
            outage.failed("ns/a", t0 + Duration::from_secs(30)),
            Report::Started
        );
    }

    #[test]
    fn only_unavailability_counts_as_an_outage() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(kube_outage(&status(503)));
        assert!(kube_outage(&status(429)));
        assert!(!kube_outage(&status(422)));
        assert!(!kube_outage(&status(403)));
        assert!(!is_outage(&Error::Hash("x".into())));
    }
}
