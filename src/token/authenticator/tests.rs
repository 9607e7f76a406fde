//! Unit tests of client authentication ([`super`]): a directory filled by hand, cheap hashes, a clock set by hand.

use super::*;
use crate::core::credentials::{generate_client_id, generate_client_secret};
use crate::core::test_support::{cheap_hash, ready_apikey};
use crate::token::metrics::count;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;

const CHEAP: HashParams = HashParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};
const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn limits() -> AuthLimits {
    AuthLimits {
        remember_for: Duration::from_secs(60),
        client_burst: 3,
        client_seconds_per_failure: 60,
        address_burst: 100,
        address_seconds_per_failure: 1,
        max_verifications_queued: 4,
        hash_ceiling: HashParams::default(),
    }
}

/// Makes the Ready key `name` (UID `uid-<name>`) hold client id `id` and `hash`, at
/// resourceVersion `version`; returns `id`.
fn put_key(d: &Directory, name: &str, id: &str, version: &str, hash: String) -> String {
    let k = ready_apikey(name, id, version, hash);
    d.observe(watcher::Event::Apply(k), &mut None);
    id.into()
}

/// A Ready key `name` with a fresh client secret: (client id, secret).
async fn key_with_secret(d: &Directory, name: &str) -> (String, ClientSecret) {
    let secret = generate_client_secret().unwrap();
    (ready_key(d, name, cheap_hash(&secret).await), secret)
}

fn ready_key(d: &Directory, name: &str, hash: String) -> String {
    put_key(d, name, &generate_client_id().unwrap(), "1", hash)
}

fn setup(limits: AuthLimits) -> (Arc<Directory>, Authenticator, Arc<TokenMetrics>) {
    let directory = Arc::new(Directory::default());
    let metrics = Arc::new(TokenMetrics::default());
    let hasher = Hasher::new(CHEAP, 1).unwrap();
    let auth = Authenticator::new(directory.clone(), hasher, limits, metrics.clone()).unwrap();
    (directory, auth, metrics)
}

/// [`setup`] with a clock set by hand, at 1 000 000 s after the epoch.
fn setup_with_clock(
    limits: AuthLimits,
) -> (Arc<Directory>, Authenticator, Arc<TokenMetrics>, Clock) {
    let (d, auth, m) = setup(limits);
    let clock = Clock::fixed(at(0));
    (d, auth.with_clock(clock.clone()), m, clock)
}

/// `seconds` after the hand-set clock's start.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + seconds).unwrap()
}

/// Makes the Ready key `name` hold client id `id` at resourceVersion `version`, rotated: the
/// current secret of generation 2 hashed as `current`, and, if given, the previous one of
/// generation 1 hashed as `previous.0` until `previous.1`; expiring at `expires_at`.
fn put_rotated(
    d: &Directory,
    name: &str,
    id: &str,
    version: &str,
    current: String,
    previous: Option<(String, Timestamp)>,
    expires_at: Option<Timestamp>,
) {
    let mut k = ready_apikey(name, id, version, current);
    k.spec.expires_at = expires_at.map(Time);
    if let Some(s) = k.status.as_mut() {
        s.secret_generation = Some(2);
        if let Some((hash, grace_end)) = previous {
            s.previous_secret_hash = Some(hash);
            s.previous_secret_generation = Some(1);
            s.previous_secret_expires_at = Some(Time(grace_end));
        }
    }
    d.observe(watcher::Event::Apply(k), &mut None);
}

/// Two fresh secrets and their hashes: (current, its hash, previous, its hash).
async fn two_secrets() -> (ClientSecret, String, ClientSecret, String) {
    let (current, previous) = (
        generate_client_secret().unwrap(),
        generate_client_secret().unwrap(),
    );
    let (current_hash, previous_hash) = (cheap_hash(&current).await, cheap_hash(&previous).await);
    (current, current_hash, previous, previous_hash)
}

const VERIFIED: &str = "apikey_token_verification_duration_seconds_count";

#[tokio::test]
async fn the_right_secret_authenticates_once_by_argon2id_then_from_memory() {
    let (d, auth, m) = setup(limits());
    let secret = generate_client_secret().unwrap();
    let hash = cheap_hash(&secret).await;
    let id = ready_key(&d, "a", hash.clone());
    assert_eq!(
        auth.authenticate(&id, &secret, HERE)
            .await
            .unwrap()
            .key
            .name,
        "a"
    );
    assert_eq!(
        auth.authenticate(&id, &secret, HERE)
            .await
            .unwrap()
            .key
            .name,
        "a"
    );
    assert_eq!(count(&m, VERIFIED), 1, "the second was remembered");
    assert_eq!(
        count(
            &m,
            r#"apikey_token_remembered_verifications_total{result="hit"}"#
        ),
        1
    );
    // any write of the ApiKey forgets it
    put_key(&d, "a", &id, "2", hash);
    assert_eq!(
        auth.authenticate(&id, &secret, HERE)
            .await
            .unwrap()
            .key
            .name,
        "a"
    );
    assert_eq!(count(&m, VERIFIED), 2, "verified again after the write");
}

#[tokio::test]
async fn wrong_unknown_and_malformed_credentials_are_refused_and_malformed_ones_cost_no_hash() {
    let (d, auth, m) = setup(limits());
    let (id, secret) = key_with_secret(&d, "a").await;
    let other = generate_client_secret().unwrap();
    let refused = |r: Result<Authenticated, Refusal>| r.unwrap_err();
    assert_eq!(
        refused(
            auth.authenticate(&id, &ClientSecret::new("aksk_short".into()), HERE)
                .await
        ),
        Refusal::Malformed
    );
    assert_eq!(
        refused(auth.authenticate("nope", &secret, HERE).await),
        Refusal::Malformed
    );
    assert_eq!(count(&m, VERIFIED), 0);
    assert_eq!(
        refused(
            auth.authenticate(&generate_client_id().unwrap(), &secret, HERE)
                .await
        ),
        Refusal::UnknownClient
    );
    assert_eq!(
        refused(auth.authenticate(&id, &other, HERE).await),
        Refusal::WrongSecret
    );
    assert_eq!(count(&m, VERIFIED), 1);
}

#[tokio::test]
async fn a_client_id_is_locked_out_after_its_burst_but_a_remembered_client_is_not() {
    let (d, auth, _) = setup(limits());
    let secret = generate_client_secret().unwrap();
    let hash = cheap_hash(&secret).await;
    let id = ready_key(&d, "a", hash.clone());
    auth.authenticate(&id, &secret, HERE).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let guess = generate_client_secret().unwrap();
        answers.push(auth.authenticate(&id, &guess, HERE).await.unwrap_err());
    }
    assert!(
        answers[..3].iter().all(|r| *r == Refusal::WrongSecret),
        "the burst: 3 failures"
    );
    assert!(
        answers[3..]
            .iter()
            .all(|r| matches!(r, Refusal::RateLimited(_))),
        "{answers:?}"
    );
    assert!(
        auth.authenticate(&id, &secret, HERE).await.is_ok(),
        "remembered: not locked out"
    );
    let other = ready_key(&d, "b", hash);
    assert!(
        auth.authenticate(&other, &secret, HERE).await.is_ok(),
        "other clients are served"
    );
}

#[tokio::test]
async fn a_hash_over_the_ceiling_or_not_argon2id_matches_nothing_and_costs_nothing() {
    let (d, auth, m) = setup(limits());
    let secret = generate_client_secret().unwrap();
    let dear = "$argon2id$v=19$m=262144,t=64,p=16$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let id = ready_key(&d, "a", dear.into());
    assert_eq!(
        auth.authenticate(&id, &secret, HERE).await.unwrap_err(),
        Refusal::HashRefused
    );
    let id = ready_key(&d, "b", "$2b$12$notargon".into());
    assert_eq!(
        auth.authenticate(&id, &secret, HERE).await.unwrap_err(),
        Refusal::HashRefused
    );
    assert_eq!(count(&m, VERIFIED), 0);
}

#[test]
fn an_ipv6_address_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(budget_address(a), budget_address(b));
    assert_ne!(budget_address(a), budget_address(other));
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
    assert_eq!(
        budget_address(mapped),
        "10.0.0.7".parse::<IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn a_cancelled_verification_still_counts_its_failure() {
    let (d, auth, m) = setup(AuthLimits {
        client_burst: 1,
        ..limits()
    });
    let auth = Arc::new(auth);
    let (id, _) = key_with_secret(&d, "a").await;
    let guess = generate_client_secret().unwrap();
    let attempt = tokio::spawn({
        let (auth, id, guess) = (auth.clone(), id.clone(), guess.clone());
        async move { auth.authenticate(&id, &guess, HERE).await }
    });
    // cancel it as soon as its hash has started
    while count(
        &m,
        r#"apikey_token_remembered_verifications_total{result="miss"}"#,
    ) == 0
    {
        tokio::task::yield_now().await;
    }
    attempt.abort();
    while count(&m, VERIFIED) == 0 {
        tokio::task::yield_now().await;
    }
    // the cancelled guess spent the burst of 1: the next wrong guess is locked out
    let another = generate_client_secret().unwrap();
    let next = auth.authenticate(&id, &another, HERE).await.unwrap_err();
    assert!(matches!(next, Refusal::RateLimited(_)), "{next:?}");
}

#[tokio::test]
async fn a_stale_secret_presented_again_costs_no_hash_and_does_not_lock_out_the_new_one() {
    let (d, auth, m) = setup(limits());
    let (id, secret) = key_with_secret(&d, "a").await;
    let stale = generate_client_secret().unwrap();
    for _ in 0..10 {
        let refused = auth.authenticate(&id, &stale, HERE).await.unwrap_err();
        assert_eq!(refused, Refusal::WrongSecret);
    }
    assert_eq!(
        count(&m, VERIFIED),
        1,
        "hashed once, then known to be wrong"
    );
    assert!(auth.authenticate(&id, &secret, HERE).await.is_ok());
}

#[tokio::test]
async fn a_guesser_elsewhere_does_not_lock_out_a_client_at_its_own_address() {
    let (d, auth, _) = setup(limits());
    let (id, secret) = key_with_secret(&d, "a").await;
    let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
    let mut last = None;
    for _ in 0..5 {
        let guess = generate_client_secret().unwrap();
        last = Some(auth.authenticate(&id, &guess, elsewhere).await.unwrap_err());
    }
    assert!(matches!(last, Some(Refusal::RateLimited(_))), "{last:?}");
    assert!(
        auth.authenticate(&id, &secret, HERE).await.is_ok(),
        "not remembered, and still served"
    );
}

const PREVIOUS_USED: &str = "apikey_token_previous_secret_used_total";
const KNOWN_WRONG: &str = r#"apikey_token_remembered_verifications_total{result="known_wrong"}"#;

#[tokio::test]
async fn the_previous_secret_is_accepted_as_the_previous_generation_until_its_grace_ends() {
    let (d, auth, m, clock) = setup_with_clock(limits());
    let (current, current_hash, previous, previous_hash) = two_secrets().await;
    let id = generate_client_id().unwrap();
    put_rotated(
        &d,
        "a",
        &id,
        "1",
        current_hash,
        Some((previous_hash, at(60))),
        None,
    );

    let old = auth.authenticate(&id, &previous, HERE).await.unwrap();
    assert_eq!((old.secret, old.generation()), (SecretUsed::Previous, 1));
    assert_eq!(
        count(&m, VERIFIED),
        2,
        "the current hash first, then the previous one"
    );
    let new = auth.authenticate(&id, &current, HERE).await.unwrap();
    assert_eq!((new.secret, new.generation()), (SecretUsed::Current, 2));
    assert_eq!(count(&m, VERIFIED), 3);
    // both remembered at once: clients of either secret cost no hash
    for _ in 0..3 {
        assert_eq!(
            auth.authenticate(&id, &previous, HERE)
                .await
                .unwrap()
                .secret,
            SecretUsed::Previous
        );
        assert_eq!(
            auth.authenticate(&id, &current, HERE).await.unwrap().secret,
            SecretUsed::Current
        );
    }
    assert_eq!(count(&m, VERIFIED), 3);
    assert_eq!(
        count(&m, PREVIOUS_USED),
        4,
        "remembered successes count too"
    );

    clock.set(at(59));
    assert!(
        auth.authenticate(&id, &previous, HERE).await.is_ok(),
        "1 s before the end"
    );
    clock.set(at(60));
    assert_eq!(
        auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
        Refusal::WrongSecret,
        "a remembered success with the previous secret ends with the grace period"
    );
    assert_eq!(count(&m, VERIFIED), 4, "only the current hash ran");
    assert_eq!(
        auth.authenticate(&id, &current, HERE)
            .await
            .unwrap()
            .generation(),
        2,
        "the current secret still works"
    );
    assert_eq!(count(&m, PREVIOUS_USED), 5);
}

#[tokio::test]
async fn a_remembered_previous_secret_ends_when_the_previous_hash_changes_or_goes() {
    let (d, auth, m, _) = setup_with_clock(limits());
    let (_, current_hash, previous, previous_hash) = two_secrets().await;
    let id = generate_client_id().unwrap();
    let put = |previous| {
        // the same resourceVersion each time: the digest binds the hashes themselves
        put_rotated(&d, "a", &id, "1", current_hash.clone(), previous, None);
    };
    put(Some((previous_hash.clone(), at(60))));
    assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
    assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
    assert_eq!(count(&m, VERIFIED), 2, "remembered");
    put(None);
    assert_eq!(
        auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
        Refusal::WrongSecret,
        "gone"
    );
    put(Some((previous_hash.clone(), at(60))));
    assert!(
        auth.authenticate(&id, &previous, HERE).await.is_ok(),
        "back"
    );
    let other = cheap_hash(&generate_client_secret().unwrap()).await;
    put(Some((other, at(60))));
    assert_eq!(
        auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
        Refusal::WrongSecret,
        "changed"
    );
}

#[tokio::test]
async fn an_expired_key_is_refused_like_an_unknown_client_with_no_hash() {
    let (d, auth, m, clock) = setup_with_clock(limits());
    let (current, current_hash, previous, previous_hash) = two_secrets().await;
    let id = generate_client_id().unwrap();
    put_rotated(
        &d,
        "a",
        &id,
        "1",
        current_hash,
        Some((previous_hash, at(600))),
        Some(at(10)),
    );
    assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
    assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
    let hashed = count(&m, VERIFIED);
    clock.set(at(9));
    assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
    clock.set(at(10));
    for secret in [&current, &previous, &generate_client_secret().unwrap()] {
        let refused = auth.authenticate(&id, secret, HERE).await.unwrap_err();
        assert_eq!(refused, Refusal::Expired);
        assert_eq!(refused.reason(), "expired");
    }
    assert_eq!(count(&m, VERIFIED), hashed, "no hash, remembered or not");
    // moving the expiry later makes the key work again with the same secret
    put_rotated(
        &d,
        "a",
        &id,
        "2",
        cheap_hash(&current).await,
        None,
        Some(at(20)),
    );
    assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
}

#[tokio::test]
async fn a_secret_wrong_under_both_hashes_is_known_wrong_but_the_previous_one_is_not() {
    let (d, auth, m, clock) = setup_with_clock(limits());
    let (current, current_hash, previous, previous_hash) = two_secrets().await;
    let id = generate_client_id().unwrap();
    put_rotated(
        &d,
        "a",
        &id,
        "1",
        current_hash,
        Some((previous_hash, at(60))),
        None,
    );
    let wrong = generate_client_secret().unwrap();
    assert_eq!(
        auth.authenticate(&id, &wrong, HERE).await.unwrap_err(),
        Refusal::WrongSecret
    );
    assert_eq!(count(&m, VERIFIED), 2, "both hashes ran");
    assert_eq!(
        auth.authenticate(&id, &wrong, HERE).await.unwrap_err(),
        Refusal::WrongSecret
    );
    assert_eq!((count(&m, VERIFIED), count(&m, KNOWN_WRONG)), (2, 1));
    // the previous secret is right during the grace period, however often it comes
    for _ in 0..3 {
        assert!(auth.authenticate(&id, &previous, HERE).await.is_ok());
    }
    assert_eq!(count(&m, KNOWN_WRONG), 1);
    // after the grace period it is wrong, and then known to be
    clock.set(at(60));
    for _ in 0..3 {
        assert_eq!(
            auth.authenticate(&id, &previous, HERE).await.unwrap_err(),
            Refusal::WrongSecret
        );
    }
    assert_eq!((count(&m, VERIFIED), count(&m, KNOWN_WRONG)), (5, 3));
    assert!(auth.authenticate(&id, &current, HERE).await.is_ok());
}

#[tokio::test]
async fn a_failed_authentication_is_one_failure_whether_one_or_two_hashes_ran() {
    let (d, auth, m, _) = setup_with_clock(limits());
    let (_, current_hash, _, previous_hash) = two_secrets().await;
    let id = generate_client_id().unwrap();
    put_rotated(
        &d,
        "a",
        &id,
        "1",
        current_hash,
        Some((previous_hash, at(60))),
        None,
    );
    let mut answers = Vec::new();
    for _ in 0..4 {
        let guess = generate_client_secret().unwrap();
        answers.push(auth.authenticate(&id, &guess, HERE).await.unwrap_err());
    }
    assert_eq!(
        answers[..3],
        [
            Refusal::WrongSecret,
            Refusal::WrongSecret,
            Refusal::WrongSecret
        ],
        "the burst: 3 failures"
    );
    assert!(matches!(answers[3], Refusal::RateLimited(_)), "{answers:?}");
    assert_eq!(
        count(&m, VERIFIED),
        8,
        "four failures of two hashes each: counted per hash, the second would have locked out"
    );
}
