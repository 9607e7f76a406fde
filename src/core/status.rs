//! The ApiKey status the operator publishes, derived from a decision and the Secret; pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::core::crd::{ApiKey, ApiKeyStatus, READY_CONDITION};
use crate::core::record::RecordKey;
use crate::core::rotation::{self, Policy};
use crate::core::secret::ManagedSecret;

/// Ready=True reason.
pub const REASON_READY: &str = "KeyReady";
/// Ready=False reason: another, older ApiKey is the active key for the same user.
pub const REASON_DUPLICATE_USER: &str = "DuplicateUser";
/// Ready=False reason: a Secret of the target name exists and is not controlled by this ApiKey.
pub const REASON_SECRET_CONFLICT: &str = "SecretConflict";
/// Ready=False reason: the API server refused to write the Secret, for a reason that will not go
/// away by itself (its message says which).
pub const REASON_SECRET_REJECTED: &str = "SecretRejected";
/// Ready=False reason: `spec.expiresAt` has passed.
pub const REASON_EXPIRED: &str = "Expired";

/// The outcome the status must show.
#[derive(Clone, Debug)]
pub enum Outcome<'a> {
    /// The Secret holds these credentials.
    Ready(&'a ManagedSecret),
    /// The Secret holds these credentials, and the key has expired (`spec.expiresAt`).
    Expired(&'a ManagedSecret),
    /// Another ApiKey (named) is active for the user.
    Duplicate(&'a str),
    /// The Secret name is taken by a Secret that is not ours.
    Conflict,
    /// The API server refused to write the Secret, with this message.
    Rejected(&'a str),
}

/// The status `key` should have for `outcome` at `now` under its rotation `policy`. The `Ready`
/// condition keeps its `lastTransitionTime` while its status, reason and message are unchanged,
/// so a reconcile that changes nothing produces exactly the current status and writes nothing
/// (times that pass, such as the end of a grace period, change it only when they come). The
/// client id is published with its seal by `record_key` (see [`crate::core::record`]).
pub fn desired(
    key: &ApiKey,
    outcome: &Outcome<'_>,
    now: &Time,
    record_key: &RecordKey,
    policy: &Policy,
) -> ApiKeyStatus {
    let current = key.status.clone().unwrap_or_default();
    let secret_name = key.secret_name();
    let generation = key.metadata.generation;
    let (ready, reason, message, client_id, hash, rotated) = match outcome {
        Outcome::Ready(m) => (
            true,
            REASON_READY,
            ready_message(&secret_name, policy),
            m.client_id.clone(),
            m.hash.clone(),
            m.rotated_at.clone(),
        ),
        // The Secret stays, and so do the client id and its seal; no hash: the key is refused.
        Outcome::Expired(m) => (
            false,
            REASON_EXPIRED,
            format!(
                "the key expired at {} (spec.expiresAt): the token server refuses it and no hash is published; its Secret {secret_name} stays. Move spec.expiresAt later or remove it to use the key again",
                policy.expires_at.map(|t| t.to_string()).unwrap_or_default()
            ),
            m.client_id.clone(),
            None,
            m.rotated_at.clone(),
        ),
        // The Secret keeps what it had: so does the status, but the key is not Ready.
        Outcome::Rejected(why) => (
            false,
            REASON_SECRET_REJECTED,
            format!("the API server refused to write Secret {secret_name}: {why}"),
            current.client_id.clone(),
            current.secret_hash.clone(),
            current.last_rotated_at.clone(),
        ),
        // Keep the client id (and its seal and generation), as for a conflict; the key is revoked.
        Outcome::Duplicate(active) => (
            false,
            REASON_DUPLICATE_USER,
            format!(
                "ApiKey {active} is the active key for user {:?} in this namespace; this one gets no Secret while it exists",
                key.spec.user
            ),
            current.client_id.clone(),
            None,
            None,
        ),
        // Keep the client id, so that the key keeps it once the name is free again; drop the hash:
        // the Secret that held the secret is not ours, the key is revoked.
        Outcome::Conflict => (
            false,
            REASON_SECRET_CONFLICT,
            format!(
                "Secret {secret_name} exists and is not controlled by this ApiKey; it is left untouched: delete it, or create a new ApiKey with another spec.secretName"
            ),
            current.client_id.clone(),
            None,
            None,
        ),
    };
    let (secret_generation, seal) = match (outcome, &client_id, key.metadata.uid.as_deref()) {
        (Outcome::Ready(m) | Outcome::Expired(m), Some(id), Some(uid)) => (
            Some(i64::try_from(m.generation).unwrap_or(i64::MAX)),
            Some(record_key.seal_status(uid, id, m.generation)),
        ),
        (Outcome::Ready(_) | Outcome::Expired(_), _, _) => (None, None),
        // not re-sealed: the operator did not read them from a sealed record; kept, so that when
        // the key is served again an older copy of its Secret is still told from the current one
        (Outcome::Conflict | Outcome::Rejected(_) | Outcome::Duplicate(_), _, _) => {
            (current.secret_generation, current.seal.clone())
        }
    };
    let ready = condition(key, READY_CONDITION, ready, reason, message, now);
    // Only a Ready key accepts its previous secret, and only until the end of its grace period;
    // only a Ready key has a next rotation.
    let served = match outcome {
        Outcome::Ready(m) => Some(*m),
        _ => None,
    };
    let rotated_at = served.and_then(|m| m.rotated_at.as_ref()).map(|Time(t)| *t);
    // Once published, the end of a grace period only ever comes sooner: a grace period cut short
    // (a gracePeriod of 0s after a leak) stays cut when it is lengthened again, and a previous
    // secret the status has dropped for the current one never comes back.
    let previous = served.and_then(|m| {
        let previous = m.previous.as_ref()?;
        let mut until = policy.previous_until(previous, rotated_at, now.0)?;
        // the status has published this very secret (its generation), Ready or not
        let shows_current = current
            .secret_generation
            .is_some_and(|g| u64::try_from(g).ok() == Some(m.generation));
        match (
            &current.previous_secret_hash,
            &current.previous_secret_expires_at,
        ) {
            (Some(hash), Some(Time(shown))) if *hash == previous.hash => until = until.min(*shown),
            _ if shows_current => return None,
            _ => {}
        }
        (now.0 < until).then_some((previous, until))
    });
    let next_rotation_at = rotated_at
        .and_then(|at| policy.next_rotation(at, key.metadata.uid.as_deref().unwrap_or_default()))
        .map(Time);
    ApiKeyStatus {
        previous_secret_hash: previous.map(|(p, _)| p.hash.clone()),
        previous_secret_generation: previous
            .map(|(p, _)| i64::try_from(p.generation).unwrap_or(i64::MAX)),
        previous_secret_expires_at: previous.map(|(_, until)| Time(until)),
        next_rotation_at,
        client_id,
        secret_generation,
        seal,
        secret_name: Some(secret_name),
        secret_hash: hash,
        last_rotated_at: rotated,
        observed_generation: generation,
        conditions: vec![ready],
    }
}

/// The condition of `type_` that `key` should have: `status` (true: `"True"`), `reason` and
/// `message`, observed at the ApiKey's generation. It keeps the `lastTransitionTime` of the
/// condition the status shows while status, reason and message are unchanged, else `now`: a
/// reconcile that changes nothing produces exactly the current condition.
pub fn condition(
    key: &ApiKey,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = key
        .condition(type_)
        .filter(|c| c.status == status && c.reason == reason && c.message == message)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: key.metadata.generation,
    }
}

/// The Ready=True message: where the credentials are, and what of the rotation policy the operator
/// did not take as written.
fn ready_message(secret_name: &str, policy: &Policy) -> String {
    let mut message = format!("client credentials are in Secret {secret_name}");
    if let (Some(asked), Some(interval)) = (policy.raised_from, policy.interval) {
        message.push_str(&format!(
            "; spec.rotation.interval {} is below the operator's minimum: rotating every {}",
            rotation::format_duration(asked),
            rotation::format_duration(interval)
        ));
    }
    if let Some(problem) = &policy.problem {
        message.push_str(&format!("; ignored what cannot be read: {problem}"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{creds, key, managed, record_key, time};

    #[test]
    fn ready_status_mirrors_the_secret_and_has_no_plaintext() {
        let k = key("web", "alice", 1);
        let m = managed(&k, None);
        let s = desired(
            &k,
            &Outcome::Ready(&m),
            &time(100),
            record_key(),
            &Policy::default(),
        );
        assert_eq!(s.client_id, m.client_id);
        assert_eq!(s.secret_hash, m.hash);
        assert_eq!(s.secret_name.as_deref(), Some("web"));
        assert_eq!(s.last_rotated_at, m.rotated_at);
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.secret_generation, Some(1));
        assert_eq!(
            record_key().check_status(
                "uid-web",
                m.client_id.as_deref().unwrap(),
                1,
                s.seal.as_deref()
            ),
            crate::core::record::SealCheck::Valid
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "KeyReady")
        );
        // neither the status nor what the operator keeps of its Secret holds the plaintext
        let c = creds(None);
        let m = ManagedSecret::read(
            &crate::core::secret::build(&k, &c, None, record_key()).unwrap(),
            record_key(),
        );
        let s = desired(
            &k,
            &Outcome::Ready(&m),
            &time(100),
            record_key(),
            &Policy::default(),
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains(c.client_secret.expose()));
        assert!(!format!("{m:?}").contains(c.client_secret.expose()));
    }

    #[test]
    fn a_previous_secret_is_published_until_its_grace_ends_and_a_due_time_while_ready() {
        use crate::core::rotation::Previous;
        let k = key("web", "alice", 1);
        let mut m = managed(&k, None);
        let rotated = m.rotated_at.clone().unwrap().0.as_second();
        m.previous = Some(Previous {
            hash: "$argon2id$old".into(),
            generation: 4,
            until: time(rotated + 600).0,
        });
        let policy = Policy {
            grace: std::time::Duration::from_secs(600),
            interval: Some(std::time::Duration::from_secs(3600)),
            ..Policy::default()
        };
        let during = desired(
            &k,
            &Outcome::Ready(&m),
            &time(rotated + 599),
            record_key(),
            &policy,
        );
        assert_eq!(
            during.previous_secret_hash.as_deref(),
            Some("$argon2id$old")
        );
        assert_eq!(during.previous_secret_generation, Some(4));
        assert_eq!(during.previous_secret_expires_at, Some(time(rotated + 600)));
        let due = policy.next_rotation(time(rotated).0, "uid-web").map(Time);
        assert_eq!(during.next_rotation_at, due);
        let after = desired(
            &k,
            &Outcome::Ready(&m),
            &time(rotated + 600),
            record_key(),
            &policy,
        );
        assert_eq!(
            (
                &after.previous_secret_hash,
                after.previous_secret_generation,
                &after.previous_secret_expires_at
            ),
            (&None, None, &None)
        );
        assert_eq!(after.next_rotation_at, due);
        assert_eq!(after.secret_hash, m.hash, "the current secret stays");
    }

    #[test]
    fn a_grace_period_cut_short_stays_cut_when_the_grace_period_is_lengthened_again() {
        use crate::core::rotation::Previous;
        let mut k = key("web", "alice", 1);
        let mut m = managed(&k, None);
        let rotated = m.rotated_at.clone().unwrap().0.as_second();
        m.previous = Some(Previous {
            hash: "$argon2id$old".into(),
            generation: 1,
            until: time(rotated + 3600).0,
        });
        let grace = |secs| Policy {
            grace: std::time::Duration::from_secs(secs),
            ..Policy::default()
        };
        let at = |secs| time(rotated + secs);
        // published for an hour at first
        let first = desired(&k, &Outcome::Ready(&m), &at(10), record_key(), &grace(3600));
        assert_eq!(first.previous_secret_expires_at, Some(at(3600)));
        k.status = Some(first);
        // cut to 20 minutes: published until then
        let cut = desired(&k, &Outcome::Ready(&m), &at(20), record_key(), &grace(1200));
        assert_eq!(cut.previous_secret_expires_at, Some(at(1200)));
        k.status = Some(cut);
        // lengthened again (Git puts the old value back): still 20 minutes
        let again = desired(&k, &Outcome::Ready(&m), &at(30), record_key(), &grace(3600));
        assert_eq!(again.previous_secret_expires_at, Some(at(1200)));
        // cut to nothing (a leak): dropped, and it never comes back
        k.status = Some(desired(
            &k,
            &Outcome::Ready(&m),
            &at(40),
            record_key(),
            &grace(0),
        ));
        assert_eq!(k.status.as_ref().unwrap().previous_secret_hash, None);
        let restored = desired(&k, &Outcome::Ready(&m), &at(50), record_key(), &grace(3600));
        assert_eq!(restored.previous_secret_hash, None);

        // nor after the key was not Ready for a while (expired, then moved later)
        let mut k = key("web", "alice", 1);
        k.status = Some(desired(
            &k,
            &Outcome::Ready(&m),
            &at(10),
            record_key(),
            &grace(3600),
        ));
        assert!(k.status.as_ref().unwrap().previous_secret_hash.is_some());
        k.status = Some(desired(
            &k,
            &Outcome::Expired(&m),
            &at(20),
            record_key(),
            &grace(3600),
        ));
        let back = desired(&k, &Outcome::Ready(&m), &at(30), record_key(), &grace(3600));
        assert_eq!(back.previous_secret_hash, None, "revoked stays revoked");
    }

    #[test]
    fn an_expired_key_is_not_ready_publishes_no_hash_and_keeps_its_client_id() {
        use crate::core::rotation::Previous;
        let k = key("web", "alice", 1);
        let mut m = managed(&k, None);
        m.previous = Some(Previous {
            hash: "$argon2id$old".into(),
            generation: 4,
            until: time(i32::MAX as i64).0,
        });
        let policy = Policy {
            grace: std::time::Duration::from_secs(600),
            interval: Some(std::time::Duration::from_secs(3600)),
            expires_at: Some(time(50).0),
            ..Policy::default()
        };
        let s = desired(&k, &Outcome::Expired(&m), &time(100), record_key(), &policy);
        let c = &s.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Expired"));
        assert!(c.message.contains("1970-01-01T00:00:50Z"), "{}", c.message);
        assert_eq!(
            (&s.secret_hash, &s.previous_secret_hash, &s.next_rotation_at),
            (&None, &None, &None)
        );
        assert_eq!(s.client_id, m.client_id);
        assert!(s.seal.is_some());
    }

    #[test]
    fn a_raised_interval_is_said_in_the_ready_message() {
        let k = key("web", "alice", 1);
        let m = managed(&k, None);
        let policy = Policy {
            interval: Some(std::time::Duration::from_secs(3600)),
            raised_from: Some(std::time::Duration::from_secs(5)),
            ..Policy::default()
        };
        let s = desired(&k, &Outcome::Ready(&m), &time(100), record_key(), &policy);
        let c = &s.conditions[0];
        assert_eq!(c.status, "True");
        assert!(
            c.message
                .contains("interval 5s is below the operator's minimum: rotating every 1h"),
            "{}",
            c.message
        );
    }

    #[test]
    fn unchanged_outcome_gives_identical_status() {
        let mut k = key("web", "alice", 1);
        let m = managed(&k, None);
        let first = desired(
            &k,
            &Outcome::Ready(&m),
            &time(100),
            record_key(),
            &Policy::default(),
        );
        k.status = Some(first.clone());
        let again = desired(
            &k,
            &Outcome::Ready(&m),
            &time(500),
            record_key(),
            &Policy::default(),
        );
        assert_eq!(
            first, again,
            "same outcome later must not change the status"
        );
    }

    #[test]
    fn transition_moves_last_transition_time() {
        let mut k = key("web", "alice", 1);
        let m = managed(&k, None);
        k.status = Some(desired(
            &k,
            &Outcome::Ready(&m),
            &time(100),
            record_key(),
            &Policy::default(),
        ));
        let conflict = desired(
            &k,
            &Outcome::Conflict,
            &time(200),
            record_key(),
            &Policy::default(),
        );
        let c = &conflict.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretConflict")
        );
        assert_eq!(c.last_transition_time, time(200));
        assert_eq!(
            conflict.secret_hash, None,
            "a conflicted key publishes no hash"
        );
        assert_eq!(conflict.client_id, m.client_id, "but keeps its client id");
        assert_eq!(conflict.seal, k.status.as_ref().unwrap().seal);

        let rejected = desired(
            &k,
            &Outcome::Rejected("too large"),
            &time(300),
            record_key(),
            &Policy::default(),
        );
        let c = &rejected.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretRejected")
        );
        assert!(c.message.contains("too large"), "{}", c.message);
    }

    #[test]
    fn a_key_that_becomes_a_duplicate_keeps_its_sealed_client_id_and_generation() {
        let mut k = key("b", "alice", 1);
        let m = managed(&k, None);
        k.status = Some(desired(
            &k,
            &Outcome::Ready(&m),
            &time(100),
            record_key(),
            &Policy::default(),
        ));
        let s = desired(
            &k,
            &Outcome::Duplicate("a"),
            &time(200),
            record_key(),
            &Policy::default(),
        );
        let ready = k.status.as_ref().unwrap();
        assert_eq!(
            (&s.client_id, &s.secret_generation, &s.seal),
            (&ready.client_id, &ready.secret_generation, &ready.seal)
        );
        assert_eq!(s.secret_hash, None, "revoked: no hash");
    }

    #[test]
    fn duplicate_names_the_active_key() {
        let k = key("b", "alice", 1);
        let s = desired(
            &k,
            &Outcome::Duplicate("a"),
            &time(1),
            record_key(),
            &Policy::default(),
        );
        let c = &s.conditions[0];
        assert_eq!(c.reason, "DuplicateUser");
        assert!(c.message.contains("ApiKey a"), "{}", c.message);
        assert_eq!(s.client_id, None);
        assert_eq!(s.secret_hash, None);
    }
}
