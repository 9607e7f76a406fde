//! A map kept from a watch, the way kube-runtime's reflector keeps its store: events apply to it
//! as they come, and a re-list builds a new map that replaces the old one when the list is
//! complete, so objects deleted while the watch was down do not linger.
//!
//! The operator keeps its own maps instead of reflector stores where it needs far less than the
//! whole object: a few hundred bytes per key instead of a few KiB (see README, Benchmarks).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use kube::Resource;
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

/// Whole objects by namespace and name, ordered by both: the [`Index`] of a small watch whose
/// every field is shown (the console's table), where the operator's indexes keep only a little.
#[derive(Debug)]
pub struct ByName<K>(BTreeMap<(String, String), K>);

impl<K> Default for ByName<K> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Resource + Clone> Index for ByName<K> {
    type Object = K;
    fn insert(&mut self, object: &K) {
        self.0.insert(name_of(object), object.clone());
    }
    fn remove(&mut self, object: &K) {
        self.0.remove(&name_of(object));
    }
}

impl<K> ByName<K> {
    /// The object `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&K> {
        self.0.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Every object, ordered by namespace, then name.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.values()
    }
}

/// (namespace, name) of `object`.
fn name_of<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Object names grouped by a key (the ApiKeys of a user, the ApiKeys that write a Secret name):
/// a short sorted list per key, which costs less than a set (a B-tree node is about 300 bytes),
/// as a group rarely holds more than one or two names.
#[derive(Debug)]
pub struct Groups<K>(HashMap<K, Vec<String>>);

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Eq + Hash> Groups<K> {
    /// Adds `name` to the group of `key`.
    pub fn add(&mut self, key: K, name: String) {
        let names = self.0.entry(key).or_default();
        if let Err(at) = names.binary_search(&name) {
            names.insert(at, name);
        }
    }

    /// Removes `name` from the group of `key`, and the group once empty.
    pub fn remove(&mut self, key: &K, name: &str) {
        if let Some(names) = self.0.get_mut(key) {
            if let Ok(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
                names.remove(at);
            }
            if names.is_empty() {
                self.0.remove(key);
            }
        }
    }

    /// The names in the group of `key`, sorted.
    pub fn get(&self, key: &K) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or_default()
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
