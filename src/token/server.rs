//! The token server's HTTP endpoints:
//!
//! | endpoint | what | follows |
//! |---|---|---|
//! | `POST /oauth2/token` | client credentials grant: an access token for the key's user | RFC 6749 §4.4, RFC 9068 |
//! | `POST /oauth2/introspect` | is this token still good? | RFC 7662 |
//! | `GET /oauth2/jwks` | the public signing keys | RFC 7517, RFC 7638 |
//! | `GET /.well-known/oauth-authorization-server` | server metadata | RFC 8414 §3 |
//! | `GET /.well-known/openid-configuration` | the same document, where OpenID Connect verifiers look | OpenID Connect Discovery 1.0 §4 |
//!
//! Requests are bounded: bodies to [`MAX_BODY_BYTES`], headers to [`MAX_HEADER_BYTES`], the time
//! to send a head to [`HEADER_READ_TIMEOUT`] and a whole request to [`REQUEST_TIMEOUT`]. Answers
//! that carry a token or a decision about one are `Cache-Control: no-store` (RFC 6749 §5.1).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::authenticator::{Authenticator, Refusal};
use super::claims::AccessTokenClaims;
use super::client_auth::{self, OAuthError};
use super::directory::Directory;
use super::limits::retry_after_seconds;
use super::metrics::{ResultLabel, TokenMetrics};
use super::signing_secret::SigningKeys;

/// Largest request body accepted, in bytes (a token request is a few hundred).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Largest request head (request line and headers) accepted, in bytes; hyper answers 431 beyond.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long verifiers may cache the JWKS, in seconds.
pub const JWKS_MAX_AGE_SECONDS: u32 = 60;
const JWKS_CACHE_CONTROL: &str = "public, max-age=60";

/// Longest a request may take from its head being read to its answer, body included.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a client may take to send a request's head (and its first request on a new
/// connection); then the connection is closed.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Token endpoint path.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Introspection endpoint path.
pub const INTROSPECTION_PATH: &str = "/oauth2/introspect";
/// JWKS path.
pub const JWKS_PATH: &str = "/oauth2/jwks";

/// What the tokens say about their issuer.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// The issuer URL (`iss`): `https://host[:port]`, no path, no trailing slash.
    pub issuer: String,
    /// The audience (`aud`) of every token.
    pub audience: String,
    /// Token lifetime in seconds.
    pub lifetime_seconds: i64,
}

/// Everything the endpoints share.
pub struct TokenServer {
    /// Issuer, audience, lifetime.
    pub config: IssuerConfig,
    /// Client authentication.
    pub authenticator: Authenticator,
    /// The keys.
    pub directory: Arc<Directory>,
    /// The signing keys.
    pub signing: SigningKeys,
    /// Metrics.
    pub metrics: Arc<TokenMetrics>,
}

/// The router of the OAuth endpoints.
pub fn router(server: Arc<TokenServer>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECTION_PATH, post(introspect))
        .route(JWKS_PATH, get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // a slow body or a stuck handler ends in 408, not in a connection held forever
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(server)
}

/// The time now, in seconds since the epoch, by the authenticator's clock: tokens are issued
/// and checked by the clock that decides expiries and grace periods.
fn now(server: &TokenServer) -> i64 {
    server.authenticator.clock().now_seconds()
}

/// The `Authorization` header (raw bytes) and `Content-Type` (if text) of a form request.
fn form_headers(headers: &HeaderMap) -> (Option<&[u8]>, Option<&str>) {
    (
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A JSON answer that must not be cached (RFC 6749 §5.1, RFC 7662 §2.2).
fn no_store(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// The RFC 6749 §5.2 error answer, with `WWW-Authenticate` after failed Basic authentication.
fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = no_store(status, e.body());
    if let Some(challenge) = e.www_authenticate() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// 429 or 503 with `Retry-After` (RFC 6585 §4, RFC 9110 §10.2.3).
fn try_later(status: StatusCode, seconds: u64, why: &str) -> Response {
    let mut response = no_store(
        status,
        json!({ "error": "temporarily_unavailable", "error_description": why }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The answer to a failed client authentication: `invalid_client` for every kind of wrong
/// credential alike (RFC 6749 §5.2), 429 when locked out, 503 when saturated.
fn refused(server: &TokenServer, refusal: &Refusal) -> Response {
    server.metrics.failed(refusal.reason());
    match refusal {
        Refusal::RateLimited(wait) => try_later(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after_seconds(*wait),
            "too many failed client authentications; retry later",
        ),
        Refusal::Saturated => try_later(
            StatusCode::SERVICE_UNAVAILABLE,
            1,
            "too many client authentications in flight; retry later",
        ),
        _ => oauth_error(&OAuthError::InvalidClient),
    }
}

/// `POST /oauth2/token` (RFC 6749 §4.4.2, §4.4.3, §5.1, §5.2).
async fn token(
    State(server): State<Arc<TokenServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (authorization, content_type) = form_headers(&headers);
    let request = match client_auth::parse(authorization, content_type, &body) {
        Ok(request) => request,
        Err(e) => {
            server.metrics.failed(e.code());
            return oauth_error(&e);
        }
    };
    // RFC 6749 §3.3: the server may refuse a scope; these tokens carry none. Refused before the
    // client is authenticated, which costs a hash.
    if request.scope.is_some() {
        server.metrics.failed("invalid_scope");
        return oauth_error(&OAuthError::InvalidScope);
    }
    let client = match server
        .authenticator
        .authenticate(&request.client_id, &request.client_secret, peer.ip())
        .await
    {
        Ok(client) => client,
        Err(refusal) => return refused(&server, &refusal),
    };
    let Some(keys) = server.signing.current() else {
        server.metrics.failed("internal");
        return try_later(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            "no signing key loaded yet",
        );
    };
    let config = &server.config;
    let now = now(&server);
    // The key's expiry and the previous secret's grace were checked before the verification,
    // which may have waited in the queue: a token is never issued at or after either.
    if client
        .key
        .valid_until(client.secret)
        .is_some_and(|until| until.as_second() <= now)
    {
        return refused(&server, &Refusal::Expired);
    }
    // the lifetime, or less near the key's expiry or the end of the previous secret's grace
    let signed = AccessTokenClaims::issue(
        &client.key,
        client.secret,
        &config.issuer,
        &config.audience,
        now,
        config.lifetime_seconds,
    )
    .and_then(|claims| Ok((keys.sign(&claims, now)?, claims.exp - claims.iat)));
    match signed {
        Ok((access_token, expires_in)) => {
            server.metrics.issued.inc();
            // RFC 6749 §5.1; RFC 6750 §4 (token_type Bearer).
            no_store(
                StatusCode::OK,
                json!({
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "signing an access token failed");
            server.metrics.failed("internal");
            try_later(StatusCode::SERVICE_UNAVAILABLE, 5, "signing failed")
        }
    }
}

/// `POST /oauth2/introspect` (RFC 7662 §2). The caller authenticates as a client, with the
/// credentials of a Ready ApiKey labelled `apikey.dev/introspect: "true"` (a resource server
/// gets a key of its own), by `client_secret_basic` or `client_secret_post`; failures count
/// against the same budgets as at the token endpoint; another key's client gets 403. A token is
/// active when its signature, issuer, audience and expiry verify, and its ApiKey still exists
/// (same UID), is Ready, holds the same client id, has not expired (`spec.expiresAt`, by this
/// server's clock) and is still at the secret generation the token was issued under, or has it
/// as its previous generation while the grace period lasts (`status.previousSecretExpiresAt`): a
/// token of a deleted, expired or regenerated key is inactive at once, and a token of the
/// previous secret at the end of the grace period.
async fn introspect(
    State(server): State<Arc<TokenServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (authorization, content_type) = form_headers(&headers);
    let request = match client_auth::parse_introspection(authorization, content_type, &body) {
        Ok(request) => request,
        Err(e) => return oauth_error(&e),
    };
    let caller = match server
        .authenticator
        .authenticate(&request.client_id, &request.client_secret, peer.ip())
        .await
    {
        Ok(caller) => caller,
        Err(refusal) => return refused(&server, &refusal),
    };
    // RFC 7662 §2.1, §4: authorization as well as authentication, against token scanning.
    if !caller.key.may_introspect {
        server
            .metrics
            .introspections
            .get_or_create(&ResultLabel {
                result: "forbidden",
            })
            .inc();
        return no_store(
            StatusCode::FORBIDDEN,
            json!({
                "error": "unauthorized_client",
                "error_description": "this client may not introspect tokens: label its ApiKey apikey.dev/introspect=true",
            }),
        );
    }
    let answer = active_claims(&server, &request.token);
    let result = if answer.is_some() {
        "active"
    } else {
        "inactive"
    };
    server
        .metrics
        .introspections
        .get_or_create(&ResultLabel { result })
        .inc();
    match answer {
        // RFC 7662 §2.2
        Some(c) => no_store(
            StatusCode::OK,
            json!({
                "active": true,
                "client_id": c.client_id,
                "username": c.sub,
                "token_type": "Bearer",
                "exp": c.exp,
                "iat": c.iat,
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "jti": c.jti,
                "apikey": c.apikey,
            }),
        ),
        // RFC 7662 §2.2: an inactive token gets `active: false` and nothing else.
        None => no_store(StatusCode::OK, json!({ "active": false })),
    }
}

/// The claims of `token` if it is active (see [`introspect`]).
fn active_claims(server: &TokenServer, token: &str) -> Option<AccessTokenClaims> {
    let keys = server.signing.current()?;
    let config = &server.config;
    let now = server.authenticator.clock().now();
    let claims: AccessTokenClaims =
        match keys.verify(token, &config.issuer, &config.audience, now.as_second()) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(why = e.label(), "introspection: the token does not verify");
                return None;
            }
        };
    let Some(key) = server.directory.by_uid(&claims.apikey.uid) else {
        tracing::debug!(apikey = %claims.apikey.name, "introspection: the token's ApiKey is gone");
        return None;
    };
    let current = key.ready
        && key.client_id == claims.client_id
        && key.accepts_generation(claims.apikey.generation, now);
    if !current {
        tracing::debug!(apikey = %claims.apikey.name, ready = key.ready, generation = key.generation, expired = key.is_expired(now), "introspection: the token's ApiKey has moved on");
    }
    current.then_some(claims)
}

/// `GET /oauth2/jwks`: every published key, including the next one before it signs and retired
/// ones until their tokens have expired. `Cache-Control: max-age` is [`JWKS_MAX_AGE_SECONDS`]:
/// verifiers that honour it (the Kubernetes API server's go-oidc does: it refetches on an
/// unknown `kid` only once that has passed) pick up a key set restored or replaced by hand within
/// a minute; scheduled keys are published far longer ahead.
async fn jwks(State(server): State<Arc<TokenServer>>) -> Response {
    match server.signing.current() {
        Some(keys) => (
            [(header::CACHE_CONTROL, JWKS_CACHE_CONTROL)],
            axum::Json(keys.jwks()),
        )
            .into_response(),
        None => try_later(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            "no signing key loaded yet",
        ),
    }
}

/// The authorization server metadata (RFC 8414 §2), also served as an OpenID Connect discovery
/// document: `id_token_signing_alg_values_supported` and `subject_types_supported` are there for
/// verifiers built on OpenID Connect libraries (go-oidc: the Kubernetes API server,
/// oauth2-proxy), which read them.
pub fn metadata_document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "introspection_endpoint": format!("{issuer}{INTROSPECTION_PATH}"),
        "grant_types_supported": ["client_credentials"],
        // RFC 8414 §2: required; there is no authorization endpoint, so no response type.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
    })
}

async fn metadata(State(server): State<Arc<TokenServer>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(metadata_document(&server.config.issuer)),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
