//! Unit tests of the decision chain ([`super`]): one ApiKey, its Secret and the clock, no cluster.

use super::*;
use crate::core::crd::{ApiKeyStatus, REGENERATE_ANNOTATION};
use crate::core::test_support::{key, managed};
use StatusClientId::{Unique, Untrusted};

/// [`super::decide`] with no rotation policy, at the epoch.
fn decide(
    key: &ApiKey,
    active: Result<(), String>,
    secret: &SecretState,
    status_client_id: StatusClientId<'_>,
) -> Plan {
    super::decide(
        key,
        active,
        secret,
        status_client_id,
        &Policy::default(),
        Timestamp::UNIX_EPOCH,
    )
}

/// A client id sealed in the status, at generation 1.
fn sealed(id: &str) -> StatusClientId<'_> {
    StatusClientId::Sealed { id, generation: 1 }
}

const ID: &str = "akid_AAAAAAAAAAAAAAAAAAAAAA";

fn with_request(mut k: ApiKey, value: &str) -> ApiKey {
    k.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REGENERATE_ANNOTATION.into(), value.into());
    k
}

fn with_client_id(mut k: ApiKey, id: &str) -> ApiKey {
    k.status = Some(ApiKeyStatus {
        client_id: Some(id.into()),
        ..Default::default()
    });
    k
}

fn with_integrity(mut m: ManagedSecret, integrity: Integrity) -> ManagedSecret {
    m.integrity = integrity;
    m
}

#[test]
fn only_a_regeneration_the_status_agrees_with_skips_the_fresh_read() {
    let k = key("web", "alice", 1);
    let secret = managed(&k, Some("v1"));
    let mut k = with_request(k, "v2");
    let owned = SecretState::Owned(secret.clone());
    let regenerate = decide(&k, Ok(()), &owned, Untrusted);
    assert!(matches!(
        regenerate,
        Plan::Issue {
            reason: IssueReason::Regenerated,
            ..
        }
    ));
    // no status yet, or a status showing another hash: the cache may be behind
    assert!(confirm_on_fresh_read(&k, &regenerate, &owned));
    k.status = Some(ApiKeyStatus {
        secret_hash: Some("$argon2id$other".into()),
        ..ApiKeyStatus::default()
    });
    assert!(confirm_on_fresh_read(&k, &regenerate, &owned));
    // the status shows the cached Secret's hash: the precondition suffices
    k.status = Some(ApiKeyStatus {
        secret_hash: secret.hash.clone(),
        ..ApiKeyStatus::default()
    });
    assert!(!confirm_on_fresh_read(&k, &regenerate, &owned));

    // a missing Secret is always read; an altered, unsealed or unlabelled one too; nothing to
    // write, nothing to read
    let created = decide(&k, Ok(()), &SecretState::Missing, Untrusted);
    assert!(confirm_on_fresh_read(&k, &created, &SecretState::Missing));
    for integrity in [Integrity::Altered, Integrity::Unsealed] {
        let state = SecretState::Owned(with_integrity(secret.clone(), integrity));
        assert!(confirm_on_fresh_read(
            &k,
            &decide(&k, Ok(()), &state, Untrusted),
            &state
        ));
    }
    let mut unlabelled = secret.clone();
    unlabelled.labelled = false;
    let unlabelled = SecretState::Owned(unlabelled);
    assert!(confirm_on_fresh_read(
        &k,
        &decide(&k, Ok(()), &unlabelled, Untrusted),
        &unlabelled
    ));
    let in_sync = SecretState::Owned(managed(&k, Some("v2")));
    assert!(!confirm_on_fresh_read(
        &k,
        &decide(&k, Ok(()), &in_sync, Untrusted),
        &in_sync
    ));
    assert!(!confirm_on_fresh_read(
        &k,
        &Plan::Conflict,
        &SecretState::Foreign
    ));
}

/// A policy with `grace` and `interval` (whole seconds; 0: none).
fn policy(grace: u64, interval: u64) -> Policy {
    Policy {
        grace: std::time::Duration::from_secs(grace),
        interval: (interval > 0).then(|| std::time::Duration::from_secs(interval)),
        ..Policy::default()
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

#[test]
fn a_due_key_rotates_once_by_schedule_and_its_new_secret_is_not_due() {
    // the test Secret was generated at creds()'s rotated_at
    let k = key("a", "alice", 1);
    let m = managed(&k, None);
    let rotated = m.rotated_at.clone().unwrap().0;
    let p = policy(0, 100);
    let due = p.next_rotation(rotated, "uid-a").unwrap();
    let plan_at = |now| {
        super::decide(
            &k,
            Ok(()),
            &SecretState::Owned(m.clone()),
            Untrusted,
            &p,
            now,
        )
    };
    assert!(matches!(plan_at(at(due.as_second() - 1)), Plan::InSync(_)));
    assert_eq!(
        plan_at(due),
        Plan::Issue {
            reason: IssueReason::Scheduled,
            client_id: m.client_id.clone(),
            replaces: Some("1".into()),
            generation: 2,
            previous: None,
        }
    );
    // the schedule is counted from the Secret's own time: a new secret moves it on
    let mut rotated_now = m.clone();
    rotated_now.rotated_at = Some(Time(due));
    assert!(matches!(
        super::decide(
            &k,
            Ok(()),
            &SecretState::Owned(rotated_now),
            Untrusted,
            &p,
            due
        ),
        Plan::InSync(_)
    ));
    // an expired key is not rotated; a regeneration request comes before the schedule
    let expired = Policy {
        expires_at: Some(rotated),
        ..p.clone()
    };
    assert!(matches!(
        super::decide(
            &k,
            Ok(()),
            &SecretState::Owned(m.clone()),
            Untrusted,
            &expired,
            due
        ),
        Plan::InSync(_)
    ));
    let asked = with_request(k.clone(), "v2");
    assert!(matches!(
        super::decide(&asked, Ok(()), &SecretState::Owned(m), Untrusted, &p, due),
        Plan::Issue {
            reason: IssueReason::Regenerated,
            ..
        }
    ));
}

#[test]
fn a_rotation_with_a_grace_period_keeps_the_current_hash_as_previous_a_repair_does_not() {
    let k = with_request(key("a", "alice", 1), "v2");
    let m = managed(&k, Some("v1"));
    let p = policy(600, 0);
    let Plan::Issue { previous, .. } = super::decide(
        &k,
        Ok(()),
        &SecretState::Owned(m.clone()),
        Untrusted,
        &p,
        at(5000),
    ) else {
        panic!("a new request regenerates");
    };
    assert_eq!(
        previous,
        Some(Previous {
            hash: m.hash.clone().unwrap(),
            generation: m.generation,
            until: at(5600),
        })
    );
    let altered = with_integrity(m, Integrity::Altered);
    assert!(matches!(
        super::decide(
            &k,
            Ok(()),
            &SecretState::Owned(altered),
            Untrusted,
            &p,
            at(5000)
        ),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            previous: None,
            ..
        }
    ));
    assert!(matches!(
        super::decide(&k, Ok(()), &SecretState::Missing, Untrusted, &p, at(5000)),
        Plan::Issue { previous: None, .. }
    ));
}

#[test]
fn first_reconcile_creates() {
    let plan = decide(
        &key("a", "alice", 1),
        Ok(()),
        &SecretState::Missing,
        Untrusted,
    );
    assert_eq!(
        plan,
        Plan::Issue {
            reason: IssueReason::Created,
            client_id: None,
            replaces: None,
            generation: 1,
            previous: None,
        }
    );
}

#[test]
fn annotation_present_at_creation_does_not_regenerate_after_create() {
    // The create writes the current request as handled, so the next reconcile is in sync.
    let k = with_request(key("a", "alice", 1), "v1");
    let m = managed(&k, Some("v1"));
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::InSync(_)
    ));
}

#[test]
fn new_request_value_regenerates_keeping_client_id() {
    let k = with_request(key("a", "alice", 1), "v2");
    let m = managed(&k, Some("v1"));
    let id = m.client_id.clone();
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::Issue {
            reason: IssueReason::Regenerated,
            client_id: id,
            replaces: Some("1".into()),
            generation: 2,
            previous: None,
        }
    );
}

#[test]
fn unchanged_or_removed_request_never_regenerates() {
    let k = with_request(key("a", "alice", 1), "v1");
    let m = managed(&k, Some("v1"));
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
        Plan::InSync(_)
    ));
    let removed = key("a", "alice", 1);
    assert!(matches!(
        decide(&removed, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::InSync(_)
    ));
    let empty = with_request(key("a", "alice", 1), "");
    let m0 = managed(&empty, None);
    assert!(matches!(
        decide(&empty, Ok(()), &SecretState::Owned(m0), Untrusted),
        Plan::InSync(_)
    ));
}

#[test]
fn a_long_request_is_answered_by_its_digest_and_by_a_verbatim_copy() {
    let long = "x".repeat(262_000);
    let k = with_request(key("a", "alice", 1), &long);
    let mut m = managed(&k, None);
    m.handled_request = Some(secret::handled_form(&long));
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
        Plan::InSync(_)
    ));
    // a release before digests stored it verbatim: an upgrade does not take it for new
    m.handled_request = Some(long.clone());
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
        Plan::InSync(_)
    ));
    let k = with_request(key("a", "alice", 1), &"y".repeat(262_000));
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::Issue {
            reason: IssueReason::Regenerated,
            ..
        }
    ));
}

#[test]
fn a_deleted_secret_keeps_a_sealed_client_id_and_only_that() {
    let k = with_client_id(key("a", "alice", 1), ID);
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Missing, sealed(ID)),
        Plan::Issue {
            reason: IssueReason::SecretDeleted,
            client_id: Some(ID.into()),
            replaces: None,
            generation: 2,
            previous: None,
        }
    );
    // a client id in the status without a seal of the current key (forged, or from before
    // seals) is not taken: a new client id, so that no key ever takes another's
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Missing, Untrusted),
        Plan::Issue {
            reason: IssueReason::SecretDeleted,
            client_id: None,
            replaces: None,
            generation: 1,
            previous: None,
        }
    );
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Missing, sealed("akid_short")),
        Plan::Issue {
            reason: IssueReason::SecretDeleted,
            client_id: None,
            replaces: None,
            generation: 2,
            previous: None,
        },
        "a malformed id is never kept"
    );
}

#[test]
fn an_unsealed_client_id_held_by_no_other_key_is_kept_but_proves_no_seal() {
    // a status from before seals: its client id is kept for a deleted Secret
    let k = with_client_id(key("a", "alice", 1), ID);
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Missing, Unique(ID)),
        Plan::Issue {
            reason: IssueReason::SecretDeleted,
            client_id: Some(ID.into()),
            replaces: None,
            generation: 1,
            previous: None,
        }
    );
    // and an unsealed record beside it is adopted, not taken for an edit
    let m = with_integrity(managed(&k, None), Integrity::Unsealed);
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m), Unique(ID)),
        Plan::Adopt { .. }
    ));
}

#[test]
fn an_altered_secret_is_repaired_with_the_sealed_client_id() {
    let k = key("a", "alice", 1);
    let m = with_integrity(managed(&k, None), Integrity::Altered);
    let id = m.client_id.clone();
    assert_eq!(
        decide(
            &k,
            Ok(()),
            &SecretState::Owned(m.clone()),
            sealed(id.as_deref().unwrap())
        ),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            client_id: id,
            replaces: Some("1".into()),
            generation: 2,
            previous: None,
        }
    );
    // the Secret's own client id is not trusted: it may be another key's
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            client_id: None,
            replaces: Some("1".into()),
            generation: 1,
            previous: None,
        }
    );
}

#[test]
fn a_record_the_key_cannot_judge_is_adopted_once_and_an_edit_afterwards() {
    let k = with_request(key("a", "alice", 1), "v9");
    let m = with_integrity(managed(&k, Some("v1")), Integrity::Unsealed);
    // never sealed with the current key (an upgrade, a lost key): sealed without rotation,
    // even with a regeneration pending, which the next reconcile answers
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Owned(m.clone()), Untrusted),
        Plan::Adopt {
            replaces: Some("1".into()),
            generation: 1,
        }
    );
    // a key already sealed with the current key: an unsealed record is an edit
    let id = m.client_id.clone();
    assert_eq!(
        decide(
            &k,
            Ok(()),
            &SecretState::Owned(m),
            sealed(id.as_deref().unwrap())
        ),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            client_id: id,
            replaces: Some("1".into()),
            generation: 2,
            previous: None,
        }
    );
}

#[test]
fn an_older_sealed_record_put_back_is_an_edit_a_newer_one_is_not() {
    let mut k = key("a", "alice", 1);
    let current = managed(&k, None);
    k.status = Some(ApiKeyStatus {
        client_id: current.client_id.clone(),
        secret_hash: current.hash.clone(),
        ..Default::default()
    });
    let id = current.client_id.clone().unwrap();
    let at = |generation| StatusClientId::Sealed {
        id: &id,
        generation,
    };
    let mut old = managed(&k, None);
    old.generation = 1;
    old.hash = Some("$argon2id$v=19$m=64,t=1,p=1$b2xkc2FsdA$b2xkaGFzaA".into());
    // the status published generation 2: a sealed copy of generation 1 is a replay
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(old.clone()), at(2)),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            generation: 3,
            ..
        }
    ));
    // the same generation with another hash than the status shows: a replay too
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(old.clone()), at(1)),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            ..
        }
    ));
    // the status's own record, or a newer one (the status not caught up yet): in sync
    let mut same = current.clone();
    same.generation = 1;
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(same), at(1)),
        Plan::InSync(_)
    ));
    old.generation = 3;
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(old), at(2)),
        Plan::InSync(_)
    ));
}

#[test]
fn a_forged_generation_counts_for_nothing_and_cannot_overflow() {
    let k = key("a", "alice", 1);
    let mut m = with_integrity(managed(&k, None), Integrity::Altered);
    m.generation = u64::MAX;
    let id = m.client_id.clone().unwrap();
    let sealed_at_2 = StatusClientId::Sealed {
        id: &id,
        generation: 2,
    };
    assert!(matches!(
        decide(&k, Ok(()), &SecretState::Owned(m), sealed_at_2),
        Plan::Issue {
            reason: IssueReason::SecretAltered,
            generation: 3,
            ..
        }
    ));
    assert_eq!(next_generation(u64::MAX), i64::MAX as u64);
    assert_eq!(next_generation(i64::MAX as u64), i64::MAX as u64);
}

#[test]
fn a_sealed_secret_without_the_label_gets_it_back_without_rotation() {
    let k = with_request(key("a", "alice", 1), "v2");
    let mut m = managed(&k, Some("v1"));
    m.labelled = false;
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Owned(m), Untrusted),
        Plan::Relabel {
            replaces: Some("1".into())
        }
    );
}

#[test]
fn foreign_secret_is_a_conflict_even_with_a_pending_request() {
    let k = with_request(key("a", "alice", 1), "v9");
    assert_eq!(
        decide(&k, Ok(()), &SecretState::Foreign, sealed(ID)),
        Plan::Conflict
    );
}

#[test]
fn duplicate_comes_first() {
    let k = key("b", "alice", 2);
    assert_eq!(
        decide(&k, Err("a".into()), &SecretState::Missing, Untrusted),
        Plan::Duplicate { active: "a".into() }
    );
}

#[test]
fn reasons_round_trip_through_their_labels() {
    for reason in [
        IssueReason::Created,
        IssueReason::Regenerated,
        IssueReason::Scheduled,
        IssueReason::SecretDeleted,
        IssueReason::SecretAltered,
    ] {
        assert_eq!(IssueReason::from_label(reason.metric_label()), Some(reason));
    }
    assert_eq!(IssueReason::from_label("adopted"), None);
}

#[test]
fn oldest_key_for_a_user_is_active_then_by_name() {
    let a = key("a", "alice", 10);
    let b = key("b", "alice", 5);
    let c = key("c", "alice", 5);
    let other_user = key("z", "bob", 1);
    let all = [a.clone(), b.clone(), c.clone(), other_user.clone()];
    assert_eq!(active_for_user(&b, &all), Ok(()));
    assert_eq!(active_for_user(&c, &all), Err("b".into()));
    assert_eq!(active_for_user(&a, &all), Err("b".into()));
    assert_eq!(active_for_user(&other_user, &all), Ok(()));
    // once b is gone, c takes over
    assert_eq!(active_for_user(&c, &[a.clone(), c.clone()]), Ok(()));
    // other namespaces do not count
    let mut elsewhere = key("0", "alice", 1);
    elsewhere.metadata.namespace = Some("other".into());
    assert_eq!(active_for_user(&b, &[elsewhere, b.clone()]), Ok(()));
}

#[test]
fn users_are_the_same_after_nfc_and_differ_by_case() {
    let composed = key("a", "jos\u{e9}", 1);
    let decomposed = key("b", "jose\u{301}", 2);
    let upper = key("c", "JOS\u{c9}", 3);
    let all = [composed.clone(), decomposed.clone(), upper.clone()];
    assert_eq!(active_for_user(&decomposed, &all), Err("a".into()));
    assert_eq!(active_for_user(&upper, &all), Ok(()));
}
