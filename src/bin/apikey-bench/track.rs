//! Completion of a phase, seen through a watch: how many objects of a kind exist and how many
//! satisfy a predicate, updated on every watch event, with the instant of each update.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_stream};
use kube::{Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Result;

/// What the watch has seen so far.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Objects that exist.
    pub total: usize,
    /// Objects that satisfy the predicate.
    pub matching: usize,
    /// Whether the initial list has been received (the counts are complete).
    pub synced: bool,
    /// When the watch event that produced these counts arrived.
    pub at: Instant,
}

/// A watch on the objects of one kind selected by label, counting those that satisfy a predicate.
/// The watch stops when the tracker is dropped.
pub struct Tracker {
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
    what: String,
}

impl Tracker {
    /// Starts watching the objects of `api` with label selector `selector`; `matches` tells which
    /// count as done. Watch errors are reported and retried with backoff.
    pub fn start<K, F>(api: Api<K>, selector: &str, what: &str, matches: F) -> Self
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
        F: Fn(&K) -> bool + Send + 'static,
    {
        let (tx, progress) = watch::channel(Progress {
            total: 0,
            matching: 0,
            synced: false,
            at: Instant::now(),
        });
        let config = watcher::Config::default().labels(selector);
        let events = watch_stream(api, config).default_backoff();
        let label = what.to_string();
        let task = tokio::spawn(async move {
            let mut counts = Counts::default();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => counts.apply(event, &matches),
                    Err(e) => {
                        eprintln!("warning: watch of {label} failed, retrying: {e}");
                        continue;
                    }
                }
                tx.send_replace(Progress {
                    total: counts.state.len(),
                    matching: counts.matching,
                    synced: counts.synced,
                    at: Instant::now(),
                });
            }
        });
        Self {
            progress,
            task,
            what: what.into(),
        }
    }

    /// Waits until the initial list has arrived.
    pub async fn synced(&mut self, timeout: Duration) -> Result<Progress> {
        self.until("the initial list", Instant::now() + timeout, |p| p.synced)
            .await
    }

    /// Waits, until `deadline` at the latest, for the counts to satisfy `done`; returns them with
    /// the instant they first did.
    pub async fn until(
        &mut self,
        goal: &str,
        deadline: Instant,
        done: impl FnMut(&Progress) -> bool,
    ) -> Result<Progress> {
        // Copy the counts out, so the borrow of the channel ends with this statement.
        let waited = tokio::time::timeout_at(deadline.into(), self.progress.wait_for(done))
            .await
            .map(|seen| seen.map(|progress| *progress));
        match waited {
            Ok(Ok(progress)) => Ok(progress),
            Ok(Err(_)) => Err(format!("the watch of {} ended", self.what).into()),
            Err(_) => {
                let last = *self.progress.borrow();
                Err(format!(
                    "timed out waiting for {goal} on {}: {} exist, {} done",
                    self.what, last.total, last.matching
                )
                .into())
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch's view: name -> whether it matches, with a running count of the matching ones.
#[derive(Default)]
struct Counts {
    state: HashMap<String, bool>,
    matching: usize,
    /// Objects of a (re)list in progress; they replace `state` when it completes.
    relist: Option<HashMap<String, bool>>,
    synced: bool,
}

impl Counts {
    fn apply<K: Resource>(&mut self, event: Event<K>, matches: &impl Fn(&K) -> bool) {
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(obj) => {
                if let Some(relist) = self.relist.as_mut() {
                    relist.insert(obj.name_any(), matches(&obj));
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.matching = relist.values().filter(|m| **m).count();
                    self.state = relist;
                }
                self.synced = true;
            }
            Event::Apply(obj) => {
                let now = matches(&obj);
                let before = self.state.insert(obj.name_any(), now);
                self.count(before, Some(now));
            }
            Event::Delete(obj) => {
                let before = self.state.remove(&obj.name_any());
                self.count(before, None);
            }
        }
    }

    fn count(&mut self, before: Option<bool>, after: Option<bool>) {
        if before == Some(true) {
            self.matching -= 1;
        }
        if after == Some(true) {
            self.matching += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, done: bool) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: done.then(|| [("done".to_string(), "1".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn is_done(c: &ConfigMap) -> bool {
        c.labels().contains_key("done")
    }

    #[test]
    fn counts_follow_relists_updates_and_deletions() {
        let mut counts = Counts::default();
        counts.apply(Event::Init, &is_done);
        counts.apply(Event::InitApply(cm("a", true)), &is_done);
        counts.apply(Event::InitApply(cm("b", false)), &is_done);
        assert!(!counts.synced);
        counts.apply(Event::InitDone, &is_done);
        assert!(counts.synced);
        assert_eq!((counts.state.len(), counts.matching), (2, 1));
        counts.apply(Event::Apply(cm("b", true)), &is_done);
        counts.apply(Event::Apply(cm("b", true)), &is_done);
        assert_eq!(counts.matching, 2);
        counts.apply(Event::Apply(cm("a", false)), &is_done);
        counts.apply(Event::Delete(cm("b", true)), &is_done);
        assert_eq!((counts.state.len(), counts.matching), (1, 0));
        counts.apply(Event::Init, &is_done);
        counts.apply(Event::InitApply(cm("c", true)), &is_done);
        counts.apply(Event::InitDone, &is_done);
        assert_eq!((counts.state.len(), counts.matching), (1, 1));
    }
}
