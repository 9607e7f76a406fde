//! The ApiKeys of each user, kept beside the ApiKey cache, so that the one-key-per-user rule costs
//! a lookup instead of a scan of every cached key.
//!
//! At 10,000 keys a scan of the cache per reconcile and per watch event was most of the operator's
//! own CPU; the index is fed by the same watch events as the cache, so it needs no API call.

use std::sync::{Arc, RwLock};

use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::core::crd::ApiKey;
use crate::core::user;
use crate::shared::mirror::{Groups, Index, Mirror};

/// (namespace, user) of an ApiKey.
type UserRef = (String, String);

/// The names of the ApiKeys of each (namespace, user), following a watch of ApiKeys.
#[derive(Clone, Default)]
pub struct Siblings {
    state: Arc<RwLock<Mirror<Users>>>,
}

/// The index itself.
#[derive(Default)]
struct Users(Groups<UserRef>);

fn user_of(key: &ApiKey) -> Option<UserRef> {
    Some((
        key.namespace()?,
        user::canonical(&key.spec.user).into_owned(),
    ))
}

impl Index for Users {
    type Object = ApiKey;

    fn insert(&mut self, key: &ApiKey) {
        if let Some(user) = user_of(key) {
            self.0.add(user, key.name_any());
        }
    }

    fn remove(&mut self, key: &ApiKey) {
        if let Some(user) = user_of(key) {
            self.0.remove(&user, &key.name_any());
        }
    }
}

impl Siblings {
    /// Follows one watch event. Returns the other ApiKeys of the user of an added, changed or
    /// deleted key: their state may depend on it (the next oldest becomes active when the active
    /// one goes). Re-list events return nothing: every key is reconciled after a re-list anyway.
    pub fn apply(&self, event: &watcher::Event<ApiKey>) -> Vec<ObjectRef<ApiKey>> {
        let Ok(mut state) = self.state.write() else {
            return Vec::new();
        };
        state.apply(event);
        let changed = match event {
            watcher::Event::Apply(key) | watcher::Event::Delete(key) => key,
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                return Vec::new();
            }
        };
        let name = changed.name_any();
        match user_of(changed) {
            Some((namespace, user)) => state
                .live()
                .0
                .get(&(namespace.clone(), user))
                .iter()
                .filter(|n| **n != name)
                .map(|n| ObjectRef::new(n).within(&namespace))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The names of the ApiKeys of `user` in `namespace` (including the asking key itself), users
    /// compared by [`user::canonical`].
    pub fn of(&self, namespace: &str, user: &str) -> Vec<String> {
        let user = user::canonical(user);
        self.state
            .read()
            .map(|state| {
                state
                    .live()
                    .0
                    .get(&(namespace.to_owned(), user.into_owned()))
                    .to_vec()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::key;

    fn names(refs: Vec<ObjectRef<ApiKey>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn changes_wake_the_other_keys_of_the_same_user_only() {
        let index = Siblings::default();
        assert!(
            index
                .apply(&watcher::Event::Apply(key("a", "alice", 1)))
                .is_empty()
        );
        assert_eq!(
            names(index.apply(&watcher::Event::Apply(key("b", "alice", 2)))),
            ["a"]
        );
        assert!(
            index
                .apply(&watcher::Event::Apply(key("c", "bob", 3)))
                .is_empty()
        );
        assert_eq!(
            names(index.apply(&watcher::Event::Apply(key("d", "alice", 4)))),
            ["a", "b"]
        );
        assert_eq!(
            names(index.apply(&watcher::Event::Delete(key("a", "alice", 5)))),
            ["b", "d"]
        );
        assert_eq!(index.of("ns", "alice"), ["b", "d"]);
        assert_eq!(index.of("ns", "bob"), ["c"]);
        assert!(index.of("other", "alice").is_empty());
    }

    #[test]
    fn users_are_indexed_in_their_canonical_form() {
        let index = Siblings::default();
        index.apply(&watcher::Event::Apply(key("a", "jos\u{e9}", 1)));
        assert_eq!(
            names(index.apply(&watcher::Event::Apply(key("b", "jose\u{301}", 2)))),
            ["a"]
        );
        assert_eq!(index.of("ns", "jose\u{301}"), ["a", "b"]);
        assert!(index.of("ns", "JOS\u{c9}").is_empty(), "case matters");
    }

    #[test]
    fn a_relist_replaces_the_index_when_complete() {
        let index = Siblings::default();
        index.apply(&watcher::Event::Apply(key("a", "alice", 6)));
        index.apply(&watcher::Event::Apply(key("b", "alice", 7)));
        // "a" was deleted while the watch was down: the re-list no longer has it.
        index.apply(&watcher::Event::Init);
        assert!(
            index
                .apply(&watcher::Event::InitApply(key("b", "alice", 8)))
                .is_empty()
        );
        assert_eq!(
            index.of("ns", "alice"),
            ["a", "b"],
            "until the list is done"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.of("ns", "alice"), ["b"]);
    }
}
