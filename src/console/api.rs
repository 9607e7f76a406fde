//! The console's HTTP handlers: the page and its assets, the JSON API (camelCase) and the
//! server-sent events that keep the table live (WHATWG HTML, "Server-sent events").
//!
//! - `GET /api/events?namespace=NS&selector=SEL`: `text/event-stream`, an event `keys` holding a
//!   [`Snapshot`] whenever the table changes (`namespace` empty: the console's scope).
//! - `GET /api/context`: `{"namespace": "ns"|null, "allNamespaces": bool}`.
//! - `POST /api/keys` `{namespace?, name, user, secretName?, labels?}` (`labels`: `k=v,k2=v2`):
//!   `201` and the new [`Row`], or `{"error": "..."}` with the API server's status code (403
//!   forbidden, 409 exists, 422 invalid).
//! - `POST /api/regenerate` and `POST /api/delete` `{"keys":[{namespace,name}...]}`: `200` and
//!   `{"request"?: "...", "results":[{namespace,name,ok,error?,code?}...]}`, one result per key;
//!   a key the API server refuses does not stop the others. One regenerate value
//!   ([`new_request_value`]) serves every key of a request.
//!
//! Each handler acts with the caller's client and reports what the API server refuses in its
//! own words ([`api_message`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::admin::actions::{self, api_message};
use crate::admin::keys::{KeyRow, new_request_value};
use crate::console::live::{self, Scope};
use crate::console::rows::{Row, Snapshot, Tracking};
use crate::console::session::Session;
use crate::crd::ApiKey;
use crate::{Error, Result};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The caller's client (kubeconfig, context, RBAC).
    pub client: Client,
    /// The namespace the console was started for (`None`: every namespace).
    pub namespace: Option<String>,
    /// The token, the cookie, and the address checks.
    pub session: Arc<Session>,
    /// What this console asked of which key.
    pub tracking: Arc<watch::Sender<Tracking>>,
    /// Turns true when the console stops: open event streams end.
    pub shutdown: watch::Receiver<bool>,
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

/// Query of `GET /api/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Namespace to show; empty or absent: the console's scope.
    pub namespace: Option<String>,
    /// Label selector; empty or absent: every key.
    pub selector: Option<String>,
}

/// `GET /api/events`: the live table as server-sent events named `keys`, with keep-alive
/// comments every 15 s.
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let scope = Scope {
        namespace: non_empty(query.namespace).or(state.namespace.clone()),
        selector: query.selector.unwrap_or_default(),
    };
    let stream = live::snapshots(
        state.client.clone(),
        scope,
        state.tracking.subscribe(),
        state.shutdown.clone(),
    )
    .map(|snapshot| Ok(keys_event(&snapshot)));
    Sse::new(stream).keep_alive(KeepAlive::default())
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
    let labels =
        parse_labels(request.labels.as_deref().unwrap_or_default()).map_err(ApiError::invalid)?;
    let secret_name = non_empty(request.secret_name);
    let key = actions::create(
        &state.client,
        &namespace,
        request.name.trim(),
        request.user.trim(),
        secret_name.as_deref(),
        labels,
    )
    .await?;
    let row = Row {
        key: KeyRow::of(&key),
        action: None,
    };
    Ok((StatusCode::CREATED, Json(row)))
}

/// One key named in a bulk request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Body of `POST /api/regenerate` and `POST /api/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// The keys to act on (at least one).
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
    let results = bulk(&state, &request, |state, key| {
        let value = value.clone();
        async move {
            actions::request_regenerate(&state.client, &key, &value).await?;
            if let Some(uid) = key.metadata.uid.as_deref() {
                state.tracking.send_modify(|t| t.regenerated(uid, &value));
            }
            Ok(())
        }
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
    let results = bulk(&state, &request, |state, key| async move {
        actions::delete(&state.client, &key).await?;
        if let Some(uid) = key.metadata.uid.as_deref() {
            state.tracking.send_modify(|t| t.deleted(uid));
        }
        Ok(())
    })
    .await?;
    Ok(Json(BulkResponse {
        request: None,
        results,
    }))
}

/// Runs `act` on each key of `request` (read afresh, for its UID), all at once; one outcome each.
async fn bulk<F, Fut>(
    state: &AppState,
    request: &BulkRequest,
    act: F,
) -> Result<Vec<Outcome>, ApiError>
where
    F: Fn(AppState, ApiKey) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    if request.keys.is_empty() {
        return Err(ApiError::invalid("no keys selected"));
    }
    let calls = request.keys.iter().map(|r| {
        let act = &act;
        async move {
            let api: Api<ApiKey> = Api::namespaced(state.client.clone(), &r.namespace);
            let result = match api.get(&r.name).await {
                Ok(key) => act(state.clone(), key).await,
                Err(e) => Err(Error::Kube(e)),
            };
            let (error, code) = match &result {
                Ok(()) => (None, None),
                Err(e) => (
                    Some(api_message(e)),
                    Some(ApiError::from(e).status.as_u16()),
                ),
            };
            Outcome {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                ok: result.is_ok(),
                error,
                code,
            }
        }
    });
    Ok(futures::future::join_all(calls).await)
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

/// A refused API call: `{"error": "..."}` with a status code (the API server's, or 422 for a
/// request the console itself rejects, or 502 when the API server could not be asked).
#[derive(Debug)]
pub struct ApiError {
    /// The response's status code.
    pub status: StatusCode,
    /// The message, shown verbatim by the page.
    pub message: String,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
        }
    }
}

impl From<&Error> for ApiError {
    fn from(error: &Error) -> Self {
        let status = match error {
            Error::Kube(kube::Error::Api(s)) => StatusCode::from_u16(s.code)
                .ok()
                .filter(|c| c.is_client_error() || c.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
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
    }
}
