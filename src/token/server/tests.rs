//! Unit tests of the token server's endpoints ([`super`]), driven through the router with no socket.

use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request};
use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::watcher;
use tower::ServiceExt as _;

use super::*;
use crate::core::credentials::{ClientSecret, generate_client_id, generate_client_secret};
use crate::core::hashing::{HashParams, Hasher};
use crate::core::test_support::{cheap_hash, ready_apikey};
use crate::token::authenticator::AuthLimits;
use crate::token::clock::Clock;
use crate::token::metrics::count;
use crate::token::signing::{KeySet, SigningKey};

const ISSUER: &str = "https://auth.example";
const CHEAP: HashParams = HashParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

struct Fixture {
    app: Router,
    directory: Arc<Directory>,
    keys: KeySet,
    id: String,
    secret: String,
    /// The hash of `secret` in the key's status.
    hash: String,
    /// The server's clock, set by hand (at the second the fixture was made).
    clock: Clock,
    metrics: Arc<TokenMetrics>,
}

/// A server with one signing key and one Ready key, whose credentials it returns.
async fn fixture() -> Fixture {
    let directory = Arc::new(Directory::default());
    let hasher = Hasher::new(CHEAP, 1).unwrap();
    let secret = generate_client_secret().unwrap();
    let id = generate_client_id().unwrap();
    let hash = hasher.hash(secret.clone()).await.unwrap();
    directory.observe(
        watcher::Event::Apply(ready_apikey("web", &id, "1", hash.clone())),
        &mut None,
    );
    let clock = Clock::fixed(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
    let limits = AuthLimits {
        remember_for: Duration::from_secs(60),
        client_burst: 5,
        client_seconds_per_failure: 10,
        address_burst: 20,
        address_seconds_per_failure: 2,
        max_verifications_queued: 4,
        hash_ceiling: HashParams::default(),
    };
    let metrics = Arc::new(TokenMetrics::default());
    let keys = KeySet::new(vec![SigningKey::generate(0, 0).unwrap()]).unwrap();
    let server = Arc::new(TokenServer {
        config: IssuerConfig {
            issuer: ISSUER.into(),
            audience: "api".into(),
            lifetime_seconds: 900,
        },
        authenticator: Authenticator::new(directory.clone(), hasher, limits, metrics.clone())
            .unwrap()
            .with_clock(clock.clone()),
        directory: directory.clone(),
        signing: SigningKeys::fixed(keys.clone()),
        metrics: metrics.clone(),
    });
    let app = router(server).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    Fixture {
        app,
        directory,
        keys,
        id,
        secret: secret.expose().to_owned(),
        hash,
        clock,
        metrics,
    }
}

fn basic(id: &str, secret: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{id}:{secret}")))
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn post(path: &str, authorization: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(a) = authorization {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn a_token_is_issued_for_the_right_credentials_and_verifies_with_the_jwks_keys() {
    let f = fixture().await;
    let auth = basic(&f.id, &f.secret);
    let (status, headers, body) = call(
        &f.app,
        post(TOKEN_PATH, Some(&auth), "grant_type=client_credentials"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_i64()),
        (Some("Bearer"), Some(900))
    );
    let token = body["access_token"].as_str().unwrap();
    let claims: AccessTokenClaims = f
        .keys
        .verify(token, ISSUER, "api", f.clock.now_seconds())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.client_id.as_str()),
        ("alice", f.id.as_str())
    );
    assert_eq!(claims.exp - claims.iat, 900);

    // introspection, asked by another key: active, then inactive once the token's key's
    // secret generation moved on
    let caller_secret = generate_client_secret().unwrap();
    let caller_id = generate_client_id().unwrap();
    let hash = cheap_hash(&caller_secret).await;
    let form = format!("token={token}");
    let mut caller = ready_apikey("caller", &caller_id, "1", hash);
    f.directory
        .observe(watcher::Event::Apply(caller.clone()), &mut None);
    let auth = basic(&caller_id, caller_secret.expose());
    let (status, _, body) = call(&f.app, post(INTROSPECTION_PATH, Some(&auth), &form)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not labelled: {body}");
    assert_eq!(body["error"], "unauthorized_client");
    caller.metadata.labels = Some(
        [(
            crate::core::crd::INTROSPECT_LABEL.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    f.directory
        .observe(watcher::Event::Apply(caller), &mut None);
    let (status, headers, body) = call(&f.app, post(INTROSPECTION_PATH, Some(&auth), &form)).await;
    assert_eq!(
        (status, body["active"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let mut moved = ready_apikey(
        "web",
        &f.id,
        "2",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
    );
    if let Some(s) = moved.status.as_mut() {
        s.secret_generation = Some(2);
    }
    f.directory.observe(watcher::Event::Apply(moved), &mut None);
    let (_, _, body) = call(&f.app, post(INTROSPECTION_PATH, Some(&auth), &form)).await;
    assert_eq!(body, serde_json::json!({"active": false}), "and only that");
}

#[tokio::test]
async fn errors_are_rfc_6749_json_and_not_cached() {
    let f = fixture().await;
    let wrong = basic(&f.id, generate_client_secret().unwrap().expose());
    let (status, headers, body) = call(
        &f.app,
        post(TOKEN_PATH, Some(&wrong), "grant_type=client_credentials"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (status, headers, body) = call(
        &f.app,
        post(
            TOKEN_PATH,
            None,
            &format!(
                "grant_type=client_credentials&client_id={}&client_secret=x",
                f.id
            ),
        ),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &Value::from("invalid_client"))
    );
    assert!(
        headers.contains_key(header::WWW_AUTHENTICATE),
        "a 401 always says which scheme to use (RFC 9110 §15.5.2)"
    );
    let get = Request::builder()
        .uri(TOKEN_PATH)
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = call(&f.app, get).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let (status, _, _) = call(&f.app, post(TOKEN_PATH, None, &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_metadata_is_one_document_at_both_well_known_paths_and_the_jwks_lists_the_keys() {
    let f = fixture().await;
    let get = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
    let (_, _, rfc8414) = call(&f.app, get("/.well-known/oauth-authorization-server")).await;
    let (_, _, oidc) = call(&f.app, get("/.well-known/openid-configuration")).await;
    assert_eq!(rfc8414, oidc);
    assert_eq!(rfc8414["issuer"], ISSUER);
    assert_eq!(
        rfc8414["token_endpoint"],
        "https://auth.example/oauth2/token"
    );
    assert_eq!(rfc8414["jwks_uri"], "https://auth.example/oauth2/jwks");
    assert_eq!(
        rfc8414["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    let (status, headers, jwks) = call(&f.app, get(JWKS_PATH)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], JWKS_CACHE_CONTROL);
    assert_eq!(jwks, f.keys.jwks());
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

/// `seconds` after the fixture's start.
fn at(f: &Fixture, seconds: i64) -> Timestamp {
    Timestamp::from_second(f.clock.now_seconds() + seconds).unwrap()
}

/// Writes the fixture's key `web` again at resourceVersion `version`, rotated: a new current
/// secret (returned) of generation 2, and the fixture's secret as the previous one, of
/// generation 1, until `grace_end`; expiring at `expires_at`.
async fn rotate(
    f: &Fixture,
    version: &str,
    current: Option<ClientSecret>,
    grace_end: Timestamp,
    expires_at: Option<Timestamp>,
) -> ClientSecret {
    let current = current.unwrap_or_else(|| generate_client_secret().unwrap());
    let mut web = ready_apikey("web", &f.id, version, cheap_hash(&current).await);
    web.spec.expires_at = expires_at.map(Time);
    if let Some(s) = web.status.as_mut() {
        s.secret_generation = Some(2);
        s.previous_secret_hash = Some(f.hash.clone());
        s.previous_secret_generation = Some(1);
        s.previous_secret_expires_at = Some(Time(grace_end));
    }
    f.directory.observe(watcher::Event::Apply(web), &mut None);
    current
}

/// A key `caller` that may introspect: its `Authorization` header.
async fn introspector(f: &Fixture) -> String {
    let secret = generate_client_secret().unwrap();
    let id = generate_client_id().unwrap();
    let mut caller = ready_apikey("caller", &id, "1", cheap_hash(&secret).await);
    caller.metadata.labels = Some(
        [(
            crate::core::crd::INTROSPECT_LABEL.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    f.directory
        .observe(watcher::Event::Apply(caller), &mut None);
    basic(&id, secret.expose())
}

/// A token request with `secret`: the status, the body and the token's claims, if any.
async fn token_with(f: &Fixture, secret: &str) -> (StatusCode, Value, Option<AccessTokenClaims>) {
    let auth = basic(&f.id, secret);
    let (status, _, body) = call(
        &f.app,
        post(TOKEN_PATH, Some(&auth), "grant_type=client_credentials"),
    )
    .await;
    let claims = body["access_token"].as_str().map(|token| {
        f.keys
            .verify(token, ISSUER, "api", f.clock.now_seconds())
            .unwrap()
    });
    (status, body, claims)
}

async fn is_active(f: &Fixture, caller: &str, token: &str) -> bool {
    let form = format!("token={token}");
    let (status, _, body) = call(&f.app, post(INTROSPECTION_PATH, Some(caller), &form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["active"].as_bool().unwrap()
}

#[tokio::test]
async fn during_the_grace_period_the_previous_secret_gets_a_token_of_its_generation_until_its_end()
{
    let f = fixture().await;
    let caller = introspector(&f).await;
    let current = rotate(&f, "2", None, at(&f, 3_600), None).await;
    let (status, body, old) = token_with(&f, &f.secret).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old = old.unwrap();
    assert_eq!((old.apikey.generation, old.exp - old.iat), (1, 900));
    let old_token = body["access_token"].as_str().unwrap().to_owned();
    let (_, body, new) = token_with(&f, current.expose()).await;
    assert_eq!(
        new.unwrap().apikey.generation,
        2,
        "the current secret works"
    );
    let new_token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        count(&f.metrics, "apikey_token_previous_secret_used_total"),
        1
    );

    // the operator shortens the grace period to 600 s: the old secret's tokens end with it
    rotate(&f, "3", Some(current.clone()), at(&f, 600), None).await;
    let (_, body, capped) = token_with(&f, &f.secret).await;
    let capped = capped.unwrap();
    assert_eq!(
        (capped.exp, body["expires_in"].as_i64()),
        (at(&f, 600).as_second(), Some(600))
    );
    f.clock.advance(SignedDuration::from_secs(599));
    assert!(
        is_active(&f, &caller, &old_token).await,
        "1 s before the end"
    );
    f.clock.advance(SignedDuration::from_secs(1));
    assert!(!is_active(&f, &caller, &old_token).await, "at the end");
    assert!(is_active(&f, &caller, &new_token).await);
    let (status, body, _) = token_with(&f, &f.secret).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &Value::from("invalid_client"))
    );
    assert!(token_with(&f, current.expose()).await.2.is_some());
}

#[tokio::test]
async fn an_expired_key_gets_no_token_and_its_tokens_are_inactive_from_its_expiry() {
    let f = fixture().await;
    let caller = introspector(&f).await;
    let (_, body, _) = token_with(&f, &f.secret).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    // spec.expiresAt is set to 300 s from now; the operator has not marked the key yet
    let mut web = ready_apikey("web", &f.id, "2", f.hash.clone());
    web.spec.expires_at = Some(Time(at(&f, 300)));
    f.directory.observe(watcher::Event::Apply(web), &mut None);
    f.clock.advance(SignedDuration::from_secs(100));
    let (_, body, claims) = token_with(&f, &f.secret).await;
    assert_eq!(
        (claims.unwrap().exp, body["expires_in"].as_i64()),
        (at(&f, 200).as_second(), Some(200)),
        "capped at the expiry"
    );
    f.clock.advance(SignedDuration::from_secs(199));
    assert!(
        is_active(&f, &caller, &token).await,
        "1 s before the expiry"
    );
    f.clock.advance(SignedDuration::from_secs(1));
    assert!(!is_active(&f, &caller, &token).await, "at the expiry");
    let (status, body, _) = token_with(&f, &f.secret).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &Value::from("invalid_client")),
        "answered as an unknown client"
    );
    assert_eq!(
        count(
            &f.metrics,
            r#"apikey_token_failures_total{reason="expired"}"#
        ),
        1
    );
}
