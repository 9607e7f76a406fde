//! "When does this key rotate, how long is its previous secret accepted, has it expired?": the
//! rotation policy of an ApiKey (`spec.rotation`, `spec.expiresAt`) as pure functions of the
//! spec, the Secret's sealed record and the clock, tested without a cluster.
//!
//! - Grace period (after Keycloak's secret-rotation policy and ory/fosite's rotated secrets):
//!   a rotation by the regenerate annotation or by the schedule records the previous secret's
//!   hash and generation, and the end of its grace period, in the new Secret's sealed record
//!   ([`crate::core::secret`]), so the status can always be derived from the Secret, also after a crash
//!   between the two writes. Exactly one previous secret: the next rotation replaces it. Repairs
//!   (a Secret deleted or altered by someone else) give none: whoever altered it may hold it.
//! - Schedule: a key is due once its current secret is older than the interval plus a spread
//!   that depends only on its UID ([`spread`]), counted from the sealed `rotated-at` of the
//!   Secret: the new secret's `rotated-at` moves the next due time forward, so each due time
//!   gives exactly one rotation, across restarts, leader changes and resyncs.
//! - Expiry: from `spec.expiresAt` on, the key is not Ready (reason `Expired`) and publishes no
//!   hash; nothing is deleted.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::core::crd::{ApiKeySpec, ApiKeyStatus};
use crate::core::issue::IssueReason;

/// The smallest rotation interval the operator accepts by default (its flag
/// `--min-rotation-interval`): a shorter `spec.rotation.interval` rotates at this interval.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(3600);

/// The widest spread of due times: a tenth of the interval, but never more than this.
pub const MAX_SPREAD: Duration = Duration::from_secs(3600);

/// A key's rotation policy, read from its spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// How long the previous secret is accepted after a rotation (`spec.rotation.gracePeriod`;
    /// zero: not at all).
    pub grace: Duration,
    /// How old a secret may get before it is rotated (`spec.rotation.interval`, raised to the
    /// operator's minimum), if any.
    pub interval: Option<Duration>,
    /// The interval the spec asked for when it was below the operator's minimum (and so raised).
    pub raised_from: Option<Duration>,
    /// When the key stops working (`spec.expiresAt`), if ever.
    pub expires_at: Option<Timestamp>,
    /// What of `spec.rotation` could not be read (only possible past the schema's checks, e.g.
    /// on an API server that does not enforce them): it is ignored, and the status says so.
    pub problem: Option<String>,
}

impl Policy {
    /// The policy of `spec`, with intervals below `min_interval` raised to it.
    pub fn of(spec: &ApiKeySpec, min_interval: Duration) -> Self {
        let mut policy = Policy {
            expires_at: spec.expires_at.as_ref().map(|Time(t)| *t),
            ..Policy::default()
        };
        let Some(rotation) = spec.rotation.as_ref() else {
            return policy;
        };
        let mut problems = Vec::new();
        if let Some(grace) = rotation.grace_period.as_deref() {
            match parse_duration(grace) {
                Ok(d) => policy.grace = d,
                Err(e) => problems.push(format!("spec.rotation.gracePeriod: {e}")),
            }
        }
        if let Some(interval) = rotation.interval.as_deref() {
            match parse_duration(interval) {
                Ok(d) if d.is_zero() => {
                    problems.push("spec.rotation.interval: must not be zero".to_string())
                }
                Ok(d) if d < min_interval => {
                    policy.interval = Some(min_interval);
                    policy.raised_from = Some(d);
                }
                Ok(d) => policy.interval = Some(d),
                Err(e) => problems.push(format!("spec.rotation.interval: {e}")),
            }
        }
        if !problems.is_empty() {
            policy.problem = Some(problems.join("; "));
        }
        policy
    }

    /// Whether the key has expired at `now` (`now >= spec.expiresAt`).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// When the secret generated at `rotated_at` is due for rotation under this policy, for the
    /// key with `uid`: `rotated_at + interval + spread(uid, interval)`. `None` without an
    /// interval.
    pub fn next_rotation(&self, rotated_at: Timestamp, uid: &str) -> Option<Timestamp> {
        let interval = self.interval?;
        let after = interval.saturating_add(spread(uid, interval));
        Some(add(rotated_at, after))
    }

    /// The previous secret a rotation for `reason` at `now` keeps for the grace period: the
    /// current one's hash and generation, accepted until `now + grace`. `None` for a zero grace
    /// period, for reasons that give none (repairs, a key's first secret), and when there is no
    /// current hash.
    pub fn previous_for(
        &self,
        reason: IssueReason,
        current_hash: Option<&str>,
        current_generation: u64,
        now: Timestamp,
    ) -> Option<Previous> {
        let grants_grace = matches!(reason, IssueReason::Regenerated | IssueReason::Scheduled);
        if !grants_grace || self.grace.is_zero() {
            return None;
        }
        Some(Previous {
            hash: current_hash?.to_owned(),
            generation: current_generation,
            until: add(now, self.grace),
        })
    }

    /// Until when `previous`, recorded with the secret generated at `rotated_at`, is accepted
    /// under this policy: its recorded end, or sooner if the grace period was shortened since
    /// (`rotated_at + grace`). `None` once that time has come.
    pub fn previous_until(
        &self,
        previous: &Previous,
        rotated_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let shortened = rotated_at.map_or(previous.until, |at| add(at, self.grace));
        let until = previous.until.min(shortened);
        (now < until).then_some(until)
    }
}

/// The previous client secret of a key during a grace period. Never its plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    /// argon2id PHC string of the previous client secret.
    pub hash: String,
    /// Its generation.
    pub generation: u64,
    /// When it stops being accepted.
    pub until: Timestamp,
}

/// A grace period that a status write ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraceEnded {
    /// The generation of the previous secret no longer accepted.
    pub generation: i64,
    /// How it ended (the `how` label of the metric): `elapsed`, `superseded` or `revoked`.
    pub how: &'static str,
    /// What to tell a user, free of secret material.
    pub message: String,
}

/// Whether replacing the status `current` by `desired` ends the grace period of the previous
/// secret `current` publishes: `elapsed` when the current secret stays (its time came, or the
/// grace period was shortened), `superseded` when a new rotation replaces it, `revoked` when the
/// key stops publishing a hash (not Ready).
pub fn grace_ended(current: &ApiKeyStatus, desired: &ApiKeyStatus) -> Option<GraceEnded> {
    let hash = current.previous_secret_hash.as_ref()?;
    if desired.previous_secret_hash.as_ref() == Some(hash) {
        return None;
    }
    let generation = current.previous_secret_generation.unwrap_or_default();
    let ready = desired
        .conditions
        .iter()
        .any(|c| c.type_ == crate::core::crd::READY_CONDITION && c.status == "True");
    let (how, why) = if desired.secret_hash.is_none() || !ready {
        ("revoked", "the key is not Ready")
    } else if desired.secret_hash == current.secret_hash {
        ("elapsed", "its grace period ended")
    } else {
        ("superseded", "a new rotation replaced it")
    };
    Some(GraceEnded {
        generation,
        how,
        message: format!(
            "the previous client secret (generation {generation}) is no longer accepted: {why}"
        ),
    })
}

/// The message of the event of a rotation for `reason` into Secret `secret_name`, with the end of
/// the previous secret's grace period that the status `desired` publishes, if any.
pub fn describe_rotation(reason: IssueReason, secret_name: &str, desired: &ApiKeyStatus) -> String {
    let mut message = reason.describe(secret_name);
    match &desired.previous_secret_expires_at {
        Some(Time(until)) => message.push_str(&format!(
            "; the previous client secret is accepted until {until} (spec.rotation.gracePeriod)"
        )),
        None if reason != IssueReason::Created => {
            message.push_str("; the previous client secret is no longer accepted")
        }
        None => {}
    }
    message
}

/// How far after the interval the key with `uid` is due: SHA-256 of the UID, modulo a window of
/// a tenth of the interval (at most [`MAX_SPREAD`]), in whole seconds. The same UID always gets
/// the same offset, so a restart never moves a due time; different keys created together are
/// spread evenly over the window.
pub fn spread(uid: &str, interval: Duration) -> Duration {
    let window = (interval / 10).min(MAX_SPREAD).as_secs();
    if window == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Duration::from_secs(u64::from_be_bytes(first) % window)
}

/// The earliest of `times` that is after `now`, as a delay from `now`: when a key must be looked
/// at again by itself (a due rotation, the end of a grace period, expiry).
pub fn wake_after(now: Timestamp, times: impl IntoIterator<Item = Timestamp>) -> Option<Duration> {
    times
        .into_iter()
        .filter(|t| *t > now)
        .min()
        .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
}

/// `at + d`, saturating at the largest timestamp.
fn add(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Reads a duration of `spec.rotation` ([`crate::core::crd::DURATION_PATTERN`]): whole hours, minutes
/// and seconds in that order, each at most once (`90s`, `10m`, `1h30m`, `0s`), as Go's
/// `time.ParseDuration` reads them. Errors name what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total: u64 = 0;
    let mut rest = text;
    let mut last_unit = 0usize;
    if text.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 90s, 10m or 1h30m"));
        }
        let (number, tail) = rest.split_at(digits);
        let unit = tail.chars().next();
        let (rank, seconds) = match unit {
            Some('h') => (1, 3600),
            Some('m') => (2, 60),
            Some('s') => (3, 1),
            _ => return Err(format!("{text:?}: units are h, m and s (e.g. 1h30m)")),
        };
        if rank <= last_unit {
            return Err(format!(
                "{text:?}: give h, m and s at most once, in that order"
            ));
        }
        last_unit = rank;
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        total = value
            .checked_mul(seconds)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        rest = &tail[1..];
    }
    Ok(Duration::from_secs(total))
}

/// Writes `d` as a duration of `spec.rotation` (`1h30m`, `45s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::RotationPolicy;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn spec(grace: Option<&str>, interval: Option<&str>, expires: Option<i64>) -> ApiKeySpec {
        ApiKeySpec {
            user: "alice".into(),
            secret_name: None,
            rotation: Some(RotationPolicy {
                grace_period: grace.map(Into::into),
                interval: interval.map(Into::into),
            }),
            expires_at: expires.map(|s| Time(at(s))),
            rollout_restart: Vec::new(),
        }
    }

    #[test]
    fn durations_read_as_go_reads_whole_hours_minutes_seconds() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("10m"), Ok(600));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("1h0m5s"), Ok(3605));
        assert_eq!(d("87600h"), Ok(87600 * 3600));
        for bad in [
            "",
            "5",
            "h",
            "1d",
            "1m1h",
            "1h1h",
            "1.5h",
            "-1s",
            "1s ",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        for d in [0, 45, 60, 3600, 5400, 3605, 90061] {
            let text = format_duration(Duration::from_secs(d));
            assert_eq!(parse_duration(&text), Ok(Duration::from_secs(d)), "{text}");
        }
    }

    #[test]
    fn the_policy_raises_a_short_interval_to_the_minimum_and_says_so() {
        let p = Policy::of(
            &spec(Some("5m"), Some("30s"), None),
            Duration::from_secs(60),
        );
        assert_eq!(p.grace, Duration::from_secs(300));
        assert_eq!(p.interval, Some(Duration::from_secs(60)));
        assert_eq!(p.raised_from, Some(Duration::from_secs(30)));
        let p = Policy::of(&spec(None, Some("2h"), None), Duration::from_secs(60));
        assert_eq!(
            (p.grace, p.interval, p.raised_from),
            (Duration::ZERO, Some(Duration::from_secs(7200)), None)
        );
        let p = Policy::of(&spec(Some("1x"), Some("0s"), None), Duration::from_secs(1));
        assert_eq!((p.grace, p.interval), (Duration::ZERO, None));
        let problem = p.problem.unwrap();
        assert!(
            problem.contains("gracePeriod") && problem.contains("interval"),
            "{problem}"
        );
        let none = Policy::of(
            &ApiKeySpec {
                rotation: None,
                ..spec(None, None, None)
            },
            DEFAULT_MIN_INTERVAL,
        );
        assert_eq!(none, Policy::default());
    }

    #[test]
    fn expiry_starts_at_expires_at() {
        let p = Policy::of(&spec(None, None, Some(100)), DEFAULT_MIN_INTERVAL);
        assert!(!p.is_expired(at(99)));
        assert!(p.is_expired(at(100)));
        assert!(!Policy::default().is_expired(at(i32::MAX as i64)));
    }

    #[test]
    fn due_times_are_the_interval_plus_a_spread_fixed_by_the_uid() {
        let p = Policy::of(&spec(None, Some("100s"), None), Duration::from_secs(1));
        let due = p.next_rotation(at(1000), "uid-a").unwrap();
        let offset = spread("uid-a", Duration::from_secs(100)).as_secs() as i64;
        assert!(offset < 10, "at most a tenth of the interval");
        assert_eq!(due, at(1100 + offset));
        assert_eq!(
            p.next_rotation(at(1000), "uid-a"),
            Some(due),
            "deterministic"
        );
        assert_eq!(Policy::default().next_rotation(at(1000), "uid-a"), None);

        // a thousand keys created together spread over the whole window, at most an hour wide
        let interval = Duration::from_secs(30 * 24 * 3600);
        let offsets: std::collections::BTreeSet<u64> = (0..1000)
            .map(|i| spread(&format!("uid-{i}"), interval).as_secs())
            .collect();
        assert!(offsets.iter().all(|o| *o < 3600));
        assert!(
            offsets.len() > 800,
            "spread evenly: {} distinct seconds",
            offsets.len()
        );
        assert!(offsets.first().unwrap() < &200 && offsets.last().unwrap() > &3400);
        assert_eq!(spread("uid-a", Duration::from_secs(9)), Duration::ZERO);
    }

    #[test]
    fn only_rotations_by_annotation_or_schedule_keep_the_previous_secret() {
        let p = Policy::of(&spec(Some("10m"), None, None), DEFAULT_MIN_INTERVAL);
        let kept = p.previous_for(IssueReason::Regenerated, Some("$h1"), 3, at(1000));
        assert_eq!(
            kept,
            Some(Previous {
                hash: "$h1".into(),
                generation: 3,
                until: at(1600)
            })
        );
        assert!(
            p.previous_for(IssueReason::Scheduled, Some("$h1"), 3, at(1000))
                .is_some()
        );
        for reason in [
            IssueReason::Created,
            IssueReason::SecretDeleted,
            IssueReason::SecretAltered,
        ] {
            assert_eq!(p.previous_for(reason, Some("$h1"), 3, at(1000)), None);
        }
        assert_eq!(
            p.previous_for(IssueReason::Regenerated, None, 3, at(1000)),
            None
        );
        let no_grace = Policy::default();
        assert_eq!(
            no_grace.previous_for(IssueReason::Regenerated, Some("$h1"), 3, at(1000)),
            None
        );
    }

    #[test]
    fn a_previous_secret_ends_at_its_time_or_sooner_when_the_grace_is_shortened() {
        let previous = Previous {
            hash: "$h1".into(),
            generation: 3,
            until: at(1600),
        };
        let ten_minutes = Policy::of(&spec(Some("10m"), None, None), DEFAULT_MIN_INTERVAL);
        assert_eq!(
            ten_minutes.previous_until(&previous, Some(at(1000)), at(1599)),
            Some(at(1600))
        );
        assert_eq!(
            ten_minutes.previous_until(&previous, Some(at(1000)), at(1600)),
            None
        );
        // lengthening it later does not extend a grace period under way
        let an_hour = Policy::of(&spec(Some("1h"), None, None), DEFAULT_MIN_INTERVAL);
        assert_eq!(
            an_hour.previous_until(&previous, Some(at(1000)), at(1000)),
            Some(at(1600))
        );
        // shortening it (to zero, after a leak) ends it at once
        let one_minute = Policy::of(&spec(Some("1m"), None, None), DEFAULT_MIN_INTERVAL);
        assert_eq!(
            one_minute.previous_until(&previous, Some(at(1000)), at(1030)),
            Some(at(1060))
        );
        assert_eq!(
            Policy::default().previous_until(&previous, Some(at(1000)), at(1000)),
            None
        );
    }

    /// A Ready condition of `status` (`True` or `False`).
    fn ready_condition(
        status: &str,
    ) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: String::new(),
            message: String::new(),
            last_transition_time: Time(at(0)),
            observed_generation: None,
        }]
    }

    #[test]
    fn a_grace_period_ends_by_time_by_a_new_rotation_or_with_the_key() {
        let during = ApiKeyStatus {
            secret_hash: Some("$new".into()),
            previous_secret_hash: Some("$old".into()),
            previous_secret_generation: Some(4),
            previous_secret_expires_at: Some(Time(at(1600))),
            ..ApiKeyStatus::default()
        };
        assert_eq!(grace_ended(&during, &during), None);
        let ready = ready_condition("True");
        let after = ApiKeyStatus {
            secret_hash: Some("$new".into()),
            conditions: ready.clone(),
            ..ApiKeyStatus::default()
        };
        let ended = grace_ended(&during, &after).unwrap();
        assert_eq!((ended.generation, ended.how), (4, "elapsed"));
        assert!(ended.message.contains("generation 4"), "{}", ended.message);
        let next = ApiKeyStatus {
            secret_hash: Some("$newer".into()),
            previous_secret_hash: Some("$new".into()),
            conditions: ready,
            ..ApiKeyStatus::default()
        };
        assert_eq!(grace_ended(&during, &next).unwrap().how, "superseded");
        assert_eq!(
            grace_ended(&during, &ApiKeyStatus::default()).unwrap().how,
            "revoked"
        );
        // the Secret rejected: the hash stays, but the key is not Ready
        let rejected = ApiKeyStatus {
            secret_hash: Some("$new".into()),
            conditions: ready_condition("False"),
            ..ApiKeyStatus::default()
        };
        assert_eq!(grace_ended(&during, &rejected).unwrap().how, "revoked");
        assert_eq!(grace_ended(&after, &during), None, "none to end");
    }

    #[test]
    fn a_rotation_event_tells_until_when_the_previous_secret_works() {
        let during = ApiKeyStatus {
            previous_secret_expires_at: Some(Time(at(1600))),
            ..ApiKeyStatus::default()
        };
        let m = describe_rotation(IssueReason::Regenerated, "web", &during);
        assert!(m.contains("accepted until 1970-01-01T00:26:40Z"), "{m}");
        let m = describe_rotation(IssueReason::Scheduled, "web", &ApiKeyStatus::default());
        assert!(
            m.contains("older than spec.rotation.interval") && m.contains("no longer accepted"),
            "{m}"
        );
        let m = describe_rotation(IssueReason::Created, "web", &ApiKeyStatus::default());
        assert!(!m.contains("previous"), "{m}");
    }

    #[test]
    fn a_key_wakes_at_its_earliest_future_time() {
        assert_eq!(
            wake_after(at(100), [at(90), at(160), at(130)]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(wake_after(at(100), [at(100), at(50)]), None);
        assert_eq!(wake_after(at(100), []), None);
    }
}
