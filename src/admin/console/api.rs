//! The console's HTTP handlers: the page and its assets, the JSON API (camelCase) and the
//! server-sent events that keep the table live (WHATWG HTML, "Server-sent events").
//!
//! - `POST /api/session` `{"token":"..."}`: `{"session":"..."}`, once
//!   ([`crate::admin::console::session`]); every other `/api` call needs `Authorization: Bearer SESSION`.
//! - `GET /api/events?namespace=NS&selector=SEL`: `text/event-stream`, an event `keys` holding a
//!   [`Snapshot`] whenever the table changes (`namespace` empty: the console's scope); at most
//!   [`MAX_STREAMS`] at once (`429` beyond).
//! - `GET /api/context`: `{"namespace": "ns"|null, "allNamespaces": bool}`.
//! - `POST /api/keys` `{namespace?, name, user, secretName?, labels?}` (`labels`: `k=v,k2=v2`):
//!   `201` and the new [`Row`], or `{"error": "..."}` with the API server's status code (403
//!   forbidden, 409 exists, 422 invalid).
//! - `POST /api/regenerate` and `POST /api/delete` `{"keys":[{namespace,name,uid}...]}` (1 to
//!   [`MAX_KEYS`]): `200` and
//!   `{"request"?: "...", "results":[{namespace,name,ok,error?,code?}...]}`, one result per key,
//!   in the request's order; a key the API server refuses does not stop the others. The UID is
//!   the one the page showed: a key created again under the name since is not touched (the API
//!   server refuses: 409 for a delete, 422 for a regeneration). One regenerate value
//!   ([`new_request_value`]) serves every key of a request.
//!
//! Namespaces and names are checked ([`crate::core::names`]) before any API call (`422`).
//! Each handler acts with the caller's client, each call bounded by [`CALL_TIMEOUT`] (`504`), and
//! reports what the API server refuses in its own words ([`api_message`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::admin::actions::{self, KeyRef, api_message};
use crate::admin::console::live::{self, Scope};
use crate::admin::console::rows::{Row, Snapshot, Tracking};
use crate::admin::console::session::Session;
use crate::admin::keys::{KeyRow, new_request_value};
use crate::core::names::{check_name, check_namespace};
use crate::{Error, Result};

/// Most event streams open at once (each runs two watches).
pub const MAX_STREAMS: usize = 8;

/// Most keys in one bulk request.
pub const MAX_KEYS: usize = 500;

/// Most API calls of one bulk request in flight at once.
pub const PARALLEL_CALLS: usize = 16;

/// Longest wait for one API call that is not a watch (create, regenerate, delete): the console's
/// client has no read timeout, for its watches.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle event stream sends a keep-alive comment: a page gone is noticed (and its
/// stream's slot freed) when one cannot be written.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a request without the session's bearer reads (`401`).
pub const SESSION_ENDED: &str =
    "This console session has ended: start `kubectl apikey console` again.";

/// What a wrong token and a token already redeemed both read (`403`).
pub const LINK_REFUSED: &str = "This console link is not valid or was already used: start `kubectl apikey console` again for a new one.";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The caller's client (kubeconfig, context, RBAC).
    pub client: Client,
    /// The namespace the console was started for (`None`: every namespace).
    pub namespace: Option<String>,
    /// The token, the session secret, and the address checks.
    pub session: Arc<Session>,
    /// What this console asked of which key.
    pub tracking: Arc<watch::Sender<Tracking>>,
    /// Turns true when the console stops: open event streams end.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open event stream ([`MAX_STREAMS`]).
    pub streams: Arc<Semaphore>,
}

/// The page.
pub async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

/// The page's script.
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

/// The page's style sheet.
pub async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

/// The page's icon.
pub async fn icon() -> Response {
    asset("image/svg+xml", include_str!("assets/icon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Where the console acts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The namespace it was started for (`-n`), `None` with `-A`.
    pub namespace: Option<String>,
    /// Whether it was started for every namespace.
    pub all_namespaces: bool,
}

/// `GET /api/context`.
pub async fn context(State(state): State<AppState>) -> Json<Context> {
    Json(Context {
        all_namespaces: state.namespace.is_none(),
        namespace: state.namespace,
    })
}

/// Body of `POST /api/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    /// The token of the printed URL's fragment.
    pub token: String,
}

/// Answer of `POST /api/session`.
#[derive(Debug, Serialize)]
pub struct Granted {
    /// The session secret, for `Authorization: Bearer ...` (base64url, 43 characters).
    pub session: String,
}

/// `POST /api/session`: trades the URL's token for the session secret, once; [`LINK_REFUSED`]
/// (`403`) for a wrong token and a used one alike.
pub async fn session(
    State(state): State<AppState>,
    Json(request): Json<Redeem>,
) -> Result<Json<Granted>, ApiError> {
    match state.session.redeem(&request.token) {
        Some(secret) => Ok(Json(Granted {
            session: secret.to_owned(),
        })),
        None => Err(ApiError::new(StatusCode::FORBIDDEN, LINK_REFUSED)),
    }
}

/// Query of `GET /api/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Namespace to show; empty or absent: the console's scope.
    pub namespace: Option<String>,
    /// Label selector; empty or absent: every key.
    pub selector: Option<String>,
}

/// `GET /api/events`: the live table as server-sent events named `keys`, with keep-alive
/// comments every [`KEEP_ALIVE`]. `422` for a namespace that is not one, `429` when
/// [`MAX_STREAMS`] are open.
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let namespace = non_empty(query.namespace);
    if let Some(ns) = &namespace {
        check_namespace(ns).map_err(ApiError::invalid)?;
    }
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("This console serves at most {MAX_STREAMS} live tables at once: close another tab of it."),
        )
    })?;
    let scope = Scope {
        namespace: namespace.or(state.namespace.clone()),
        selector: query.selector.unwrap_or_default(),
    };
    let stream = live::snapshots(
        state.client.clone(),
        scope,
        state.tracking.clone(),
        state.shutdown.clone(),
    )
    .map(move |snapshot| {
        let _held = &permit;
        Ok(keys_event(&snapshot))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn keys_event(snapshot: &Snapshot) -> Event {
    let event = Event::default().event("keys");
    match serde_json::to_string(snapshot) {
        Ok(json) => event.data(json),
        Err(e) => event.data(
            serde_json::json!({"keys": [], "error": e.to_string(), "secretsError": null})
                .to_string(),
        ),
    }
}

/// Body of `POST /api/keys`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// Namespace of the new key; empty or absent: the console's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name of the ApiKey.
    pub name: String,
    /// `spec.user`.
    pub user: String,
    /// `spec.secretName`; empty or absent: the key's name.
    #[serde(default)]
    pub secret_name: Option<String>,
    /// Labels, `k=v` pairs separated by commas.
    #[serde(default)]
    pub labels: Option<String>,
}

/// `POST /api/keys`: creates a key; `201` and its row.
pub async fn create(
    State(state): State<AppState>,
    Json(request): Json<CreateRequest>,
) -> Result<(StatusCode, Json<Row>), ApiError> {
    let namespace = non_empty(request.namespace)
        .or(state.namespace.clone())
        .ok_or_else(|| ApiError::invalid("choose a namespace for the key"))?;
    let name = request.name.trim();
    check_namespace(&namespace).map_err(ApiError::invalid)?;
    check_name(name).map_err(ApiError::invalid)?;
    let labels =
        parse_labels(request.labels.as_deref().unwrap_or_default()).map_err(ApiError::invalid)?;
    let secret_name = non_empty(request.secret_name);
    let key = bounded(
        CALL_TIMEOUT,
        actions::create(
            &state.client,
            &namespace,
            name,
            request.user.trim(),
            secret_name.as_deref(),
            labels,
        ),
    )
    .await?;
    let row = Row {
        key: KeyRow::of(&key),
        action: None,
    };
    Ok((StatusCode::CREATED, Json(row)))
}

/// Body of `POST /api/regenerate` and `POST /api/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// The keys to act on (1 to [`MAX_KEYS`]), each with the UID the page showed.
    pub keys: Vec<KeyRef>,
}

/// How a bulk action went for one key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The key's namespace.
    pub namespace: String,
    /// The key's name.
    pub name: String,
    /// Whether the API server accepted the call.
    pub ok: bool,
    /// Why it did not (the API server's message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The API server's status code, when it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// Answer of a bulk action.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResponse {
    /// The regenerate value set on every key (regenerations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One outcome per key, in the request's order.
    pub results: Vec<Outcome>,
}

/// `POST /api/regenerate`: sets one new regenerate value on every key named.
pub async fn regenerate(
    State(state): State<AppState>,
    Json(request): Json<BulkRequest>,
) -> Result<Json<BulkResponse>, ApiError> {
    let value = new_request_value(Timestamp::now());
    let (state, request_value) = (&state, value.as_str());
    let results = bulk(&request, |key| async move {
        actions::request_regenerate(&state.client, &key, request_value).await?;
        state
            .tracking
            .send_modify(|t| t.regenerated(&key, request_value));
        Ok(())
    })
    .await?;
    Ok(Json(BulkResponse {
        request: Some(value),
        results,
    }))
}

/// `POST /api/delete`: deletes every key named (their Secrets follow by garbage collection).
pub async fn delete(
    State(state): State<AppState>,
    Json(request): Json<BulkRequest>,
) -> Result<Json<BulkResponse>, ApiError> {
    let state = &state;
    let results = bulk(&request, |key| async move {
        actions::delete(&state.client, &key).await?;
        state.tracking.send_modify(|t| t.deleted(&key));
        Ok(())
    })
    .await?;
    Ok(Json(BulkResponse {
        request: None,
        results,
    }))
}

/// Checks `request` ([`check_bulk`]), then runs `act` on each of its keys, [`PARALLEL_CALLS`] at
/// a time and each within [`CALL_TIMEOUT`]; one outcome per key, in the request's order.
async fn bulk<F, Fut>(request: &BulkRequest, act: F) -> Result<Vec<Outcome>, ApiError>
where
    F: Fn(KeyRef) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    check_bulk(&request.keys).map_err(ApiError::invalid)?;
    let calls = futures::stream::iter(request.keys.iter().cloned()).map(|r| {
        let call = act(r.clone());
        async move {
            let result = bounded(CALL_TIMEOUT, call).await;
            Outcome {
                namespace: r.namespace,
                name: r.name,
                ok: result.is_ok(),
                code: result.as_ref().err().map(|e| e.status.as_u16()),
                error: result.err().map(|e| e.message),
            }
        }
    });
    Ok(calls.buffered(PARALLEL_CALLS).collect().await)
}

/// Checks the keys of a bulk request before any call: 1 to [`MAX_KEYS`] of them, each with a
/// namespace, a name ([`crate::core::names`]) and a UID. Errors: what is wrong, naming the key.
pub fn check_bulk(keys: &[KeyRef]) -> Result<(), String> {
    if keys.is_empty() {
        return Err("no keys selected".into());
    }
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys selected: at most {MAX_KEYS} at once",
            keys.len()
        ));
    }
    for key in keys {
        check_namespace(&key.namespace)?;
        check_name(&key.name)?;
        if key.uid.trim().is_empty() {
            return Err(format!("{}/{}: no uid", key.namespace, key.name));
        }
    }
    Ok(())
}

/// `call`'s result, or `504` when it takes longer than `limit`.
pub async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the API server did not answer within {} s", limit.as_secs()),
        )),
    }
}

/// Parses labels written `k=v, k2=v2` (spaces around pairs ignored, empty input: none). Keys and
/// values are the API server's to validate. Errors: a pair without `=`, or a key given twice.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = crate::admin::keys::parse_label(pair)?;
        if labels.contains_key(&key) {
            return Err(format!("label \"{key}\" is given twice"));
        }
        labels.insert(key, value);
    }
    Ok(labels)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A refused API call: `{"error": "..."}` with a status code: the API server's; 422 for a request
/// the console itself rejects (or cannot turn into an API call); 401, 403, 429 for the console's
/// own refusals; 504 when the API server did not answer in time; 502 when it could not be asked.
#[derive(Debug)]
pub struct ApiError {
    /// The response's status code.
    pub status: StatusCode,
    /// The message, shown verbatim by the page.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<&Error> for ApiError {
    fn from(error: &Error) -> Self {
        let status = match error {
            Error::Kube(kube::Error::Api(s)) => StatusCode::from_u16(s.code)
                .ok()
                .filter(|c| c.is_client_error() || c.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            Error::Kube(kube::Error::BuildRequest(_) | kube::Error::HttpError(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        Self {
            status,
            message: api_message(error),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"error": self.message})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_comma_separated_pairs() {
        assert_eq!(parse_labels(""), Ok(BTreeMap::new()));
        assert_eq!(
            parse_labels(" team=x , tier=prod,"),
            Ok(BTreeMap::from([
                ("team".to_owned(), "x".to_owned()),
                ("tier".to_owned(), "prod".to_owned())
            ]))
        );
        assert_eq!(
            parse_labels("empty="),
            Ok(BTreeMap::from([("empty".to_owned(), String::new())]))
        );
        assert!(parse_labels("team").unwrap_err().contains("key=value"));
        assert!(parse_labels("a=1,a=2").unwrap_err().contains("twice"));
    }

    #[test]
    fn the_api_servers_status_code_and_message_pass_through() {
        let status = kube::core::Status::failure("nope is forbidden", "Forbidden").with_code(403);
        let error = ApiError::from(Error::Kube(kube::Error::Api(Box::new(status))));
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert_eq!(error.message, "nope is forbidden");
        let other = ApiError::from(Error::Config("x".into()));
        assert_eq!(other.status, StatusCode::BAD_GATEWAY);
        let uri = "http://a b".parse::<axum::http::Uri>().unwrap_err();
        let built = ApiError::from(Error::Kube(kube::Error::HttpError(uri.into())));
        assert_eq!(built.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    fn key(namespace: &str, name: &str, uid: &str) -> KeyRef {
        KeyRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn bulk_requests_name_1_to_500_valid_keys_with_uids() {
        assert_eq!(check_bulk(&[key("ns", "k", "u")]), Ok(()));
        assert_eq!(check_bulk(&vec![key("ns", "k", "u"); MAX_KEYS]), Ok(()));
        assert!(check_bulk(&[]).unwrap_err().contains("no keys"));
        let too_many = check_bulk(&vec![key("ns", "k", "u"); MAX_KEYS + 1]).unwrap_err();
        assert!(too_many.contains("at most 500"), "{too_many}");
        assert!(
            check_bulk(&[key("ns", "k", "")])
                .unwrap_err()
                .contains("no uid")
        );
        assert!(check_bulk(&[key("ns", "k", " ")]).is_err());
        for (namespace, name) in [
            ("..%2F..%2Fapi", "k"),
            ("ns", "htmlkey/status"),
            ("ns", "?labelSelector=x"),
            ("", "k"),
        ] {
            assert!(check_bulk(&[key(namespace, name, "u")]).is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_ends_in_504_after_the_timeout() {
        let never = futures::future::pending::<Result<()>>();
        let error = bounded(CALL_TIMEOUT, never).await.unwrap_err();
        assert_eq!(error.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(error.message.contains("30 s"), "{}", error.message);
        let refused = bounded(CALL_TIMEOUT, async {
            Err::<(), _>(Error::Kube(kube::Error::Api(Box::new(
                kube::core::Status::failure("the UID differs", "Conflict").with_code(409),
            ))))
        })
        .await
        .unwrap_err();
        assert_eq!(
            (refused.status, refused.message.as_str()),
            (StatusCode::CONFLICT, "the UID differs")
        );
    }
}
