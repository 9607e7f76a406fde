//! A mocked API server for reconcile tests, after kube-rs/controller-rs `src/fixtures.rs`.
//!
//! The reconciler talks to a [`kube::Client`] built on a `tower_test` mock service; the test holds
//! the other end, an [`ApiServerVerifier`], and checks every request the reconcile makes, in
//! order (method, URI and body), before answering it. Every wait is bounded by [`TIMEOUT`], so a
//! missing or extra call fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tower_test::mock::{self, SendResponse};

use crate::core::crd::ApiKey;
use crate::core::hashing::{HashParams, Hasher};
use crate::core::secret::MANAGER;
use crate::core::test_support::record_key;
use crate::operator::controller::Context;
use crate::operator::events::Events;
use crate::operator::metrics::Metrics;
use crate::operator::secret_cache::SecretCache;

/// How long the verifier waits for the reconciler's next request.
pub const TIMEOUT: Duration = Duration::from_secs(1);

type ApiServerHandle = mock::Handle<Request<Body>, Response<Body>>;

/// The test's end of the mocked API server.
pub struct ApiServerVerifier(ApiServerHandle);

/// One request the reconciler made, waiting for its answer.
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path and query, as sent.
    pub uri: String,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The request body as JSON (`Value::Null` when empty).
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and `body` as JSON.
    pub fn respond(self, status: StatusCode, body: &impl Serialize) {
        let bytes = serde_json::to_vec(body).expect("response serialises");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("valid response");
        self.send.send_response(response);
    }

    /// Answers `201 Created` with the request body, as the API server does for a create.
    pub fn created(self) {
        let body = self.body.clone();
        self.respond(StatusCode::CREATED, &body);
    }

    /// Answers `200 OK` with `body`.
    pub fn ok(self, body: &impl Serialize) {
        self.respond(StatusCode::OK, body);
    }

    /// Answers a `Status` failure with `code`, `reason` and `message`, as the API server does.
    pub fn fail(self, code: StatusCode, reason: &str, message: &str) {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        });
        self.respond(code, &status);
    }

    /// Answers `404 NotFound` for `resource` (plural, e.g. `secrets`) `name`.
    pub fn not_found(self, resource: &str, name: &str) {
        self.fail(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{resource} \"{name}\" not found"),
        );
    }

    /// Answers `409 Conflict` for `resource` `name`, as for a failed resourceVersion precondition.
    pub fn conflict(self, resource: &str, name: &str) {
        self.fail(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }

    /// Answers a server-side apply of the status of `key` as the API server does: `200 OK` with
    /// `key` holding the applied status, at a new resourceVersion.
    pub fn status_applied(self, key: &ApiKey) {
        let applied = with_applied_status(key, &self.body);
        self.ok(&applied);
    }

    /// The body deserialised as `T`.
    pub fn body_as<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone()).unwrap_or_else(|e| {
            panic!(
                "{} {}: unexpected body ({e}): {}",
                self.method, self.uri, self.body
            )
        })
    }
}

impl ApiServerVerifier {
    /// The next request, or `None` once every client is gone (the reconcile has finished and
    /// dropped its context). Panics if neither happens within [`TIMEOUT`].
    pub async fn next_call(&mut self) -> Option<Call> {
        let next = tokio::time::timeout(TIMEOUT, self.0.next_request())
            .await
            .expect("timed out waiting for the reconciler's next API call");
        let (request, send) = next?;
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(Into::into);
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body can be read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        Some(Call {
            method,
            uri,
            content_type,
            body,
            send,
        })
    }

    /// The next request, which must be `method` on `uri` (path and query).
    pub async fn expect(&mut self, method: Method, uri: &str) -> Call {
        let call = self.next_call().await.unwrap_or_else(|| {
            panic!("expected {method} {uri}, but the reconcile made no more calls")
        });
        assert_eq!(
            (&call.method, call.uri.as_str()),
            (&method, uri),
            "unexpected API call; body: {}",
            call.body
        );
        call
    }

    /// The next request must record an event of `type_` (`Normal`, `Warning`) and `reason` in
    /// namespace `ns`; it is answered `201 Created`. Returns the event.
    pub async fn expect_event(&mut self, ns: &str, type_: &str, reason: &str) -> Value {
        let call = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events?"),
            )
            .await;
        let event = call.body.clone();
        assert_eq!(event["type"], type_, "event: {event}");
        assert_eq!(event["reason"], reason, "event: {event}");
        assert_eq!(event["reportingController"], MANAGER, "event: {event}");
        call.created();
        event
    }

    /// The next request must read ApiKey `key` (as the reconciler does right before writing a
    /// Secret); answered with `key`, or `404` when `None`.
    pub async fn expect_key_read(&mut self, ns: &str, name: &str, key: Option<&ApiKey>) {
        let call = self
            .expect(
                Method::GET,
                &format!("/apis/apikey.dev/v1alpha1/namespaces/{ns}/apikeys/{name}"),
            )
            .await;
        match key {
            Some(key) => call.ok(key),
            None => call.not_found("apikeys.apikey.dev", name),
        }
    }

    /// The reconcile makes no (more) call: the mocked server closes without another request once
    /// the reconcile has dropped its context.
    pub async fn expect_no_more_calls(mut self) {
        if let Some(call) = self.next_call().await {
            panic!(
                "unexpected API call {} {}: {}",
                call.method, call.uri, call.body
            );
        }
    }
}

/// Cheap argon2id parameters, so that tests hash in microseconds.
pub fn cheap_hasher() -> Hasher {
    Hasher::new(
        HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        1,
    )
    .expect("valid parameters")
}

/// A reconcile context on a mocked API server whose caches hold `keys` and `secrets`, the
/// verifier at the server's end, and the metrics the reconcile reports to.
pub fn context(
    keys: Vec<ApiKey>,
    secrets: Vec<Secret>,
) -> (Arc<Context>, ApiServerVerifier, Arc<Metrics>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let events = Events::new(client.clone(), MANAGER, "test");
    let (keys_store, mut keys_writer) = reflector::store();
    let secrets_cache = SecretCache::new(record_key().clone());
    for s in secrets {
        secrets_cache.apply(&watcher::Event::Apply(s));
    }
    let metrics = Arc::new(Metrics::default());
    let ctx = Context::new(
        client,
        events,
        cheap_hasher(),
        keys_store,
        secrets_cache,
        metrics.clone(),
    );
    for k in keys {
        let event = watcher::Event::Apply(k);
        keys_writer.apply_watcher_event(&event);
        ctx.siblings.apply(&event);
        ctx.targets.apply(&event);
    }
    (Arc::new(ctx), ApiServerVerifier(handle), metrics)
}

/// What the API server returns for a server-side apply of `patch` to the status of `key`: `key`
/// with the applied status and a new resourceVersion.
pub fn with_applied_status(key: &ApiKey, patch: &Value) -> ApiKey {
    let mut applied = key.clone();
    applied.status = Some(
        serde_json::from_value(patch["status"].clone()).expect("the patch holds an ApiKey status"),
    );
    let rv: u64 = key
        .resource_version()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    applied.metadata.resource_version = Some((rv + 1).to_string());
    applied
}
