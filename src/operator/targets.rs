//! Which ApiKeys write each Secret name, kept from the ApiKey watch, so that an event of a managed
//! Secret reaches the ApiKey that names it whatever the Secret's owner references say: a Secret
//! whose owner reference was removed or changed must still wake its key (which then reports the
//! conflict), not only the Secrets that still point at their owner.

use std::sync::{Arc, RwLock};

use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::core::crd::ApiKey;
use crate::shared::mirror::{Groups, Index, Mirror};

/// (namespace, Secret name).
type TargetRef = (String, String);

/// The names of the ApiKeys that write each (namespace, Secret name), following a watch of
/// ApiKeys. Usually one per Secret.
#[derive(Clone, Default)]
pub struct Targets {
    state: Arc<RwLock<Mirror<ByTarget>>>,
}

#[derive(Default)]
struct ByTarget(Groups<TargetRef>);

fn target_of(key: &ApiKey) -> Option<TargetRef> {
    Some((key.namespace()?, key.secret_name()))
}

impl Index for ByTarget {
    type Object = ApiKey;

    fn insert(&mut self, key: &ApiKey) {
        if let Some(target) = target_of(key) {
            self.0.add(target, key.name_any());
        }
    }

    fn remove(&mut self, key: &ApiKey) {
        if let Some(target) = target_of(key) {
            self.0.remove(&target, &key.name_any());
        }
    }
}

impl Targets {
    /// Follows one watch event of ApiKeys.
    pub fn apply(&self, event: &watcher::Event<ApiKey>) {
        if let Ok(mut state) = self.state.write() {
            state.apply(event);
        }
    }

    /// The ApiKeys that write Secret `name` in `namespace`.
    pub fn writers_of(&self, namespace: &str, name: &str) -> Vec<ObjectRef<ApiKey>> {
        self.state
            .read()
            .map(|state| {
                state
                    .live()
                    .0
                    .get(&(namespace.to_owned(), name.to_owned()))
                    .iter()
                    .map(|n| ObjectRef::new(n).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::key;

    #[test]
    fn maps_a_secret_name_to_the_keys_that_write_it() {
        let targets = Targets::default();
        let mut custom = key("b", "bob", 1);
        custom.spec.secret_name = Some("shared".into());
        targets.apply(&watcher::Event::Apply(key("a", "alice", 1)));
        targets.apply(&watcher::Event::Apply(custom.clone()));
        let names = |n: &str| -> Vec<String> {
            targets
                .writers_of("ns", n)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("a"), ["a"]);
        assert_eq!(names("shared"), ["b"]);
        assert!(
            names("b").is_empty(),
            "b writes `shared`, not a Secret named after it"
        );
        assert!(targets.writers_of("other", "a").is_empty());
        targets.apply(&watcher::Event::Delete(custom));
        assert!(names("shared").is_empty());
    }
}
