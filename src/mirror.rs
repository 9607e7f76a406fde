//! A map kept from a watch, the way kube-runtime's reflector keeps its store: events apply to it
//! as they come, and a re-list builds a new map that replaces the old one when the list is
//! complete, so objects deleted while the watch was down do not linger.
//!
//! The operator keeps its own maps instead of reflector stores where it needs far less than the
//! whole object: a few hundred bytes per key instead of a few KiB (see README, Benchmarks).

use kube::runtime::watcher;

/// What a [`Mirror`] keeps of each watched object.
pub trait Index: Default {
    /// The watched kind.
    type Object;
    /// Records `object`, added or changed.
    fn insert(&mut self, object: &Self::Object);
    /// Forgets `object`, deleted.
    fn remove(&mut self, object: &Self::Object);
}

/// An [`Index`] following a watch.
#[derive(Default)]
pub struct Mirror<I> {
    live: I,
    /// The index being built by a re-list, swapped in at its end.
    relist: I,
    synced: bool,
}

impl<I: Index> Mirror<I> {
    /// Follows one watch event.
    pub fn apply(&mut self, event: &watcher::Event<I::Object>) {
        match event {
            watcher::Event::Init => self.relist = I::default(),
            watcher::Event::InitApply(object) => self.relist.insert(object),
            watcher::Event::InitDone => {
                self.live = std::mem::take(&mut self.relist);
                self.synced = true;
            }
            watcher::Event::Apply(object) => self.live.insert(object),
            watcher::Event::Delete(object) => self.live.remove(object),
        }
    }

    /// The index as of the last event.
    pub fn live(&self) -> &I {
        &self.live
    }

    /// Whether a first list has completed.
    pub fn is_synced(&self) -> bool {
        self.synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[derive(Default)]
    struct Names(BTreeSet<&'static str>);

    impl Index for Names {
        type Object = &'static str;
        fn insert(&mut self, object: &Self::Object) {
            self.0.insert(object);
        }
        fn remove(&mut self, object: &Self::Object) {
            self.0.remove(object);
        }
    }

    fn names(m: &Mirror<Names>) -> Vec<&'static str> {
        m.live().0.iter().copied().collect()
    }

    #[test]
    fn a_relist_replaces_the_index_when_complete() {
        let mut m = Mirror::<Names>::default();
        assert!(!m.is_synced());
        m.apply(&watcher::Event::Init);
        m.apply(&watcher::Event::InitApply("a"));
        m.apply(&watcher::Event::InitApply("b"));
        assert!(
            names(&m).is_empty(),
            "nothing shows before the list is complete"
        );
        m.apply(&watcher::Event::InitDone);
        assert!(m.is_synced());
        assert_eq!(names(&m), ["a", "b"]);

        m.apply(&watcher::Event::Apply("c"));
        m.apply(&watcher::Event::Delete("a"));
        assert_eq!(names(&m), ["b", "c"]);

        // "b" was deleted while the watch was down: the re-list drops it, at its end only
        m.apply(&watcher::Event::Init);
        m.apply(&watcher::Event::InitApply("c"));
        assert_eq!(names(&m), ["b", "c"]);
        m.apply(&watcher::Event::InitDone);
        assert_eq!(names(&m), ["c"]);
    }
}
