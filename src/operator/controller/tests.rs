//! Unit tests of the controller's pure helpers ([`super`]); the reconcile's calls are tested in `reconcile_tests.rs`.

use std::time::Duration;

use futures::StreamExt as _;
use kube::ResourceExt as _;

use super::RESYNC;
use super::reconcile::{BACKOFF_MAX, backoff};
use super::watches::{every, slim};

#[test]
fn cached_objects_keep_only_what_the_operator_reads() {
    let mut key = crate::core::test_support::key("web", "alice", 1);
    key.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
    key.metadata.annotations = Some(
        [
            (
                crate::core::crd::REGENERATE_ANNOTATION.to_string(),
                "1".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]
        .into(),
    );
    key.metadata.managed_fields = Some(vec![Default::default()]);
    let before = key.clone();
    slim(&mut key);
    assert_eq!(key.metadata.labels, None);
    assert_eq!(key.metadata.managed_fields, None);
    assert_eq!(key.regenerate_request(), Some("1"));
    assert_eq!(key.annotations().len(), 1);
    assert_eq!((&key.spec, &key.status), (&before.spec, &before.status));

    let mut other = crate::core::test_support::key("db", "bob", 2);
    other.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
    slim(&mut other);
    assert_eq!(other.metadata.annotations, None, "no empty map is kept");
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(30), BACKOFF_MAX);
}

#[tokio::test(start_paused = true)]
async fn resync_ticks_once_per_period_not_at_start() {
    let start = tokio::time::Instant::now();
    let mut ticks = std::pin::pin!(every(RESYNC));
    assert!(
        futures::poll!(ticks.next()).is_pending(),
        "no tick at start"
    );
    ticks.next().await;
    assert_eq!(start.elapsed(), RESYNC);
    ticks.next().await;
    assert_eq!(start.elapsed(), 2 * RESYNC);
}
