//! Events on ApiKeys (`events.k8s.io/v1`), which `kubectl describe apikey` shows.
//!
//! kube-runtime's `Recorder` keeps every event it publishes for six minutes, to count repeats of
//! one into a series, and scans that whole cache on every publish. With 10,000 keys created and
//! then regenerated within minutes, that is 20,000 cached events (the benchmark measured 3 MiB of
//! cache table alone at 1,000 keys) and a scan per event that grows with them. The operator's
//! events do not repeat: one per issued client secret, and warnings only when the reason changes.
//! So each is written as it comes, as one Event, and nothing is kept.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};

use crate::core::crd::ApiKey;

/// Whether an event reports normal work or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Work done as asked.
    Normal,
    /// Something the user must look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Writes Events about ApiKeys, reported by one controller instance.
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
}

impl Events {
    /// Events reported as `controller` (`reportingController`) by `instance`
    /// (`reportingInstance`, usually the pod name).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
        }
    }

    /// Creates one Event about `key`. `note` must hold no secret material. With an `id` (lowercase
    /// letters and digits), the event is named after it, and publishing it again is a no-op: an
    /// event that must be written exactly once, however often the reconciler gets there.
    pub async fn publish(
        &self,
        key: &ApiKey,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        id: Option<&str>,
    ) -> kube::Result<()> {
        let mut event = self.build(key, type_, reason, action, note, Timestamp::now());
        if let Some(id) = id {
            event.metadata.name = Some(event_name(&key.name_any(), id));
        }
        let namespace = key.namespace().unwrap_or_default();
        match Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if id.is_some() && s.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn build(
        &self,
        key: &ApiKey,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        now: Timestamp,
    ) -> Event {
        let regarding: ObjectReference = key.object_ref(&());
        Event {
            metadata: ObjectMeta {
                // as client-go and kube-runtime name them: unique per object and instant
                name: Some(event_name(
                    &key.name_any(),
                    &format!("{:x}", now.as_nanosecond()),
                )),
                namespace: key.namespace(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.as_str().into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(note.into()),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// `<object name>.<suffix>`, the object's name shortened so that the whole stays a valid object
/// name (at most 253 characters) for ApiKeys of any valid name.
fn event_name(object: &str, suffix: &str) -> String {
    const MAX: usize = 253;
    let keep = MAX.saturating_sub(suffix.len() + 1).min(object.len());
    // object names are ASCII (DNS-1123); should one not be, it is kept whole rather than cut
    // inside a character
    let prefix = object
        .get(..keep)
        .unwrap_or(object)
        .trim_end_matches(['.', '-']);
    format!("{prefix}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::key;

    #[tokio::test]
    async fn an_event_names_its_key_reporter_and_reason() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let events = Events::new(Client::new(service, "ns"), "apikey-operator", "pod-1");
        let now = Timestamp::from_second(1_000).unwrap();
        let e = events.build(
            &key("web", "alice", 1),
            EventType::Warning,
            "SecretConflict",
            "WaitForChange",
            "a note",
            now,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("web.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("SecretConflict"));
        assert_eq!(e.action.as_deref(), Some("WaitForChange"));
        assert_eq!(e.note.as_deref(), Some("a note"));
        assert_eq!(e.reporting_controller.as_deref(), Some("apikey-operator"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        let long = "k".repeat(253);
        assert_eq!(event_name(&long, "0123456789abcdef").len(), 253);
        assert_eq!(
            event_name("web", "0123456789abcdef"),
            "web.0123456789abcdef"
        );
        let regarding = e.regarding.unwrap();
        assert_eq!(regarding.kind.as_deref(), Some("ApiKey"));
        assert_eq!(regarding.name.as_deref(), Some("web"));
        assert_eq!(regarding.uid.as_deref(), Some("uid-web"));
        assert_eq!(
            regarding.api_version.as_deref(),
            Some("apikey.dev/v1alpha1")
        );
    }
}
