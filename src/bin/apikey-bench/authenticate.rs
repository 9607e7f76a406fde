//! The authenticate phase: the token server (`apikey-operator token-server`, a child process like
//! the operator) trading the client credentials of the K = N Ready keys of the create phase for
//! access tokens at `POST /oauth2/token` (RFC 6749 §4.4, `client_secret_basic`), at a concurrency
//! of two requests per core:
//!
//! - first tokens: one request per client, each verified by argon2id on the server's pool;
//! - repeat tokens: [`repeat_rounds`] more rounds of the same clients, answered from the
//!   remembered verifications (a keyed digest), so their cost is the signing.
//!
//! Then, with the token server stopped so that nothing else competes for the cores, their
//! limits: argon2id verifications per second on all cores (the operator's own [`Hasher`] with
//! its default parameters, one worker per core) and ES256 signatures per second on one core
//! ([`KeySet::sign`], as the server signs).
//!
//! Each key's client secret is read from its Secret into memory to be presented to the token
//! server over loopback; it is never printed, logged or written, nor is any token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apikey_operator::core::credentials::{self, ClientSecret};
use apikey_operator::core::hashing::{HashParams, Hasher};
use apikey_operator::core::secret::{CLIENT_ID_KEY, CLIENT_SECRET_KEY, MANAGED_SELECTOR};
use apikey_operator::token::claims::AccessTokenClaims;
use apikey_operator::token::directory::{KeyEntry, SecretUsed};
use apikey_operator::token::server::TOKEN_PATH;
use apikey_operator::token::signing::{KeySet, SigningKey};
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde_json::Value;

use crate::operator::{Process, Rss};
use crate::{Args, Result};

/// Repeat tokens: at least this many rounds of all K clients...
const MIN_REPEAT_ROUNDS: usize = 5;
/// ...and at least this many requests, so that a small K still gives a measurable time.
const MIN_REPEAT_REQUESTS: usize = 1000;
/// Each limit is measured for at least this long.
const LIMIT_TIME: Duration = Duration::from_millis(1500);
/// Largest token endpoint answer read (a token is about 700 bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Log message of the token server once its token endpoint listens (field `addr`).
const TOKEN_ENDPOINT_LOGGED: &str = "serving the token endpoint";

/// Token requests of one kind: how many, how long, how fast.
#[derive(Clone, Copy, Debug)]
pub struct TokenRun {
    /// Requests made, each answered with a token.
    pub requests: usize,
    /// From the first request sent to the last answer read.
    pub wall: Duration,
    /// Median latency of one request (send to the end of the answer).
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl TokenRun {
    /// Tokens per second over the whole run.
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }
}

/// What the authenticate phase found.
#[derive(Clone, Debug)]
pub struct Authenticate {
    /// K: clients (Ready ApiKeys).
    pub clients: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The first token of each client: argon2id path.
    pub first: TokenRun,
    /// Repeat tokens of the same clients: remembered path.
    pub repeat: TokenRun,
    /// The limit of first tokens: argon2id verifications per second on all cores.
    pub argon2id_per_second: f64,
    /// Threads the argon2id limit ran on (one per core, as the token server's pool).
    pub argon2id_threads: usize,
    /// The limit of repeat tokens: ES256 signatures per second on one core.
    pub es256_per_second: f64,
    /// The token server's resident memory at the end of the phase.
    pub rss: Rss,
    /// Client authentications the token server answered by argon2id, then from memory (its
    /// `apikey_token_remembered_verifications` metric), when it could be read.
    pub verified_by_argon2id: Option<u64>,
    /// See [`Authenticate::verified_by_argon2id`].
    pub remembered: Option<u64>,
    /// Where the token server logged.
    pub log: String,
}

/// The credentials of one client, ready to present. No `Debug`: it holds a secret.
struct Credential {
    /// The ApiKey's Secret, for messages.
    name: String,
    /// `Basic base64(urlencode(client_id) ":" urlencode(client_secret))` (RFC 6749 §2.3.1),
    /// marked sensitive.
    authorization: HeaderValue,
}

type Http = HttpClient<HttpConnector, String>;

/// Rounds of repeat tokens for `k` clients: [`MIN_REPEAT_ROUNDS`], or more to make at least
/// [`MIN_REPEAT_REQUESTS`] requests.
pub fn repeat_rounds(k: usize) -> usize {
    MIN_REPEAT_ROUNDS.max(MIN_REPEAT_REQUESTS.div_ceil(k.max(1)))
}

/// Runs the phase against the Ready keys of `keys_namespace`, the token server keeping its
/// signing keys in `token_namespace`, then measures the limits. The token server is stopped
/// before the limits (and killed on error).
pub async fn run(
    client: &Client,
    args: &Args,
    bin: &Path,
    keys_namespace: &str,
    token_namespace: &str,
) -> Result<Authenticate> {
    let credentials = read_credentials(client, keys_namespace).await?;
    if credentials.len() != args.n() {
        return Err(format!(
            "{} Secrets with client credentials in {keys_namespace}, expected {}",
            credentials.len(),
            args.n()
        )
        .into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |t| t.get());
    let concurrency = 2 * cores;

    let listen = free_loopback_addr()?;
    let mut server = Process::token_server(bin, token_namespace, listen)?;
    server.wait_ready(args.timeout()).await?;
    let addr = token_endpoint(&server).await?;
    eprintln!("token server ready at {addr}");
    let uri: Uri = format!("http://{addr}{TOKEN_PATH}").parse()?;
    let http = http_client();

    let k = credentials.len();
    let first = within(
        args,
        "first tokens",
        tokens(&http, &uri, &credentials, 0..k, concurrency),
    )
    .await?;
    eprintln!(
        "authenticate, first tokens: {k} in {:.2} s, {:.1}/s",
        first.wall.as_secs_f64(),
        first.per_second()
    );
    let rounds = repeat_rounds(k);
    let order = (0..rounds).flat_map(|_| 0..k);
    let repeat = within(
        args,
        "repeat tokens",
        tokens(&http, &uri, &credentials, order, concurrency),
    )
    .await?;
    eprintln!(
        "authenticate, repeat tokens: {} in {:.2} s, {:.1}/s",
        repeat.requests,
        repeat.wall.as_secs_f64(),
        repeat.per_second()
    );
    drop(http);
    let rss = server.rss()?;
    let metrics = server.save_metrics();
    let log = server.log.display().to_string();
    server.stop().await?;

    let argon2id_per_second = argon2id_limit(cores, k).await?;
    eprintln!("limit argon2id: {argon2id_per_second:.1} verifications/s on {cores} threads");
    let es256_per_second = es256_limit().await?;
    eprintln!("limit ES256: {es256_per_second:.0} signatures/s on one core");
    let remembered = |result| metrics.as_deref().and_then(|m| remembered_count(m, result));
    Ok(Authenticate {
        clients: k,
        concurrency,
        first,
        repeat,
        argon2id_per_second,
        argon2id_threads: cores,
        es256_per_second,
        rss,
        verified_by_argon2id: remembered("miss"),
        remembered: remembered("hit"),
        log,
    })
}

/// `what` within the phase timeout.
async fn within<T>(args: &Args, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(args.timeout(), work)
        .await
        .map_err(|_| format!("{what} took longer than {:?}", args.timeout()))?
}

/// The client credentials of every managed Secret in `namespace`, as `client_secret_basic`
/// presents them.
async fn read_credentials(client: &Client, namespace: &str) -> Result<Vec<Credential>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = secrets
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .map_err(|e| format!("listing the Secrets -l {MANAGED_SELECTOR} in {namespace}: {e}"))?;
    list.items
        .iter()
        .map(|secret| {
            let name = secret.name_any();
            let field = |key: &str| -> Result<String> {
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .ok_or_else(|| format!("Secret {name} has no {key}"))?;
                String::from_utf8(value.0.clone())
                    .map_err(|_| format!("{key} of Secret {name} is not UTF-8").into())
            };
            let secret = ClientSecret::new(field(CLIENT_SECRET_KEY)?);
            let authorization = basic_authorization(&field(CLIENT_ID_KEY)?, &secret)
                .map_err(|_| format!("the credentials of Secret {name} do not fit a header"))?;
            Ok(Credential {
                name: name.clone(),
                authorization,
            })
        })
        .collect()
}

/// The `Authorization` value of `client_secret_basic`: id and secret each form-urlencoded, then
/// joined by `:` and base64-encoded (RFC 6749 §2.3.1, RFC 7617 §2). Marked sensitive.
fn basic_authorization(
    client_id: &str,
    secret: &ClientSecret,
) -> std::result::Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose()));
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(pair)))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A loopback address with a port that was free a moment ago, for the token server (its issuer
/// names the port, so it is chosen before the server starts).
fn free_loopback_addr() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    Ok(probe.local_addr()?)
}

/// The token endpoint's bound address, from the token server's log (logged once it listens,
/// which may be just after `/readyz` answers).
async fn token_endpoint(server: &Process) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = server.logged_addr(TOKEN_ENDPOINT_LOGGED) {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the token server never logged {TOKEN_ENDPOINT_LOGGED:?}; see {}",
                server.log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/1.1 client keeping its connections alive, without Nagle's delay.
fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new()).build(connector)
}

/// One token request for each client index of `order`, at most `concurrency` in flight; fails on
/// the first request not answered with a token.
async fn tokens(
    http: &Http,
    uri: &Uri,
    credentials: &[Credential],
    order: impl Iterator<Item = usize>,
    concurrency: usize,
) -> Result<TokenRun> {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(order)
        .map(|i| token(http, uri, &credentials[i]))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let wall = start.elapsed();
    latencies.sort_unstable();
    Ok(TokenRun {
        requests: latencies.len(),
        wall,
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
    })
}

/// `POST /oauth2/token` with `grant_type=client_credentials` (RFC 6749 §4.4.2) and
/// `client_secret_basic`; returns the time from sending the request to the end of the answer,
/// once the answer is seen to be a Bearer token (RFC 6749 §5.1). The token is dropped unread.
async fn token(http: &Http, uri: &Uri, credential: &Credential) -> Result<Duration> {
    let request = Request::post(uri.clone())
        .header(header::AUTHORIZATION, credential.authorization.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(String::from("grant_type=client_credentials"))?;
    let name = &credential.name;
    let start = Instant::now();
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("token request for {name}: {e}"))?;
    let status = response.status();
    let body = axum::body::to_bytes(
        axum::body::Body::new(response.into_body()),
        MAX_ANSWER_BYTES,
    )
    .await
    .map_err(|e| format!("reading the token answer for {name}: {e}"))?;
    let latency = start.elapsed();
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != StatusCode::OK {
        // RFC 6749 §5.2: the error code carries no credential.
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code");
        return Err(format!("token request for {name} answered {status}: {error}").into());
    }
    let has_token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !has_token || answer.get("token_type").and_then(Value::as_str) != Some("Bearer") {
        return Err(format!("token request for {name}: 200 without a Bearer access_token").into());
    }
    Ok(latency)
}

/// The `p`th percentile of `sorted` (nearest rank); zero when empty.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// argon2id verifications per second of a real hash with the default parameters, through the
/// operator's [`Hasher`] with `threads` workers and twice as many verifications queued, for at
/// least [`LIMIT_TIME`] and `at_least` verifications.
async fn argon2id_limit(threads: usize, at_least: usize) -> Result<f64> {
    let hasher = Hasher::new(HashParams::default(), threads)?;
    let secret = credentials::generate_client_secret()?;
    let phc = hasher.hash(secret.clone()).await?;
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let worker = || async {
        while start.elapsed() < LIMIT_TIME || done.load(Ordering::Relaxed) < at_least {
            if !hasher.verify(secret.clone(), phc.clone()).await? {
                return Err("argon2id verification of the right secret failed".into());
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, crate::Error>(())
    };
    futures::future::try_join_all((0..2 * threads).map(|_| worker())).await?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// ES256 signatures per second on one thread, of the claims the token server issues, with a key
/// set of one fresh key ([`KeySet::sign`]), for [`LIMIT_TIME`].
async fn es256_limit() -> Result<f64> {
    tokio::task::spawn_blocking(|| -> Result<f64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .try_into()?;
        let keys = KeySet::new(vec![SigningKey::generate(now, now)?])?;
        let entry = KeyEntry {
            uid: "00000000-0000-0000-0000-000000000000".into(),
            resource_version: "1".into(),
            namespace: "bench".into(),
            name: "key-00000".into(),
            user: "user-00000".into(),
            client_id: credentials::generate_client_id()?,
            secret_hash: String::new(),
            generation: 1,
            ready: true,
            may_introspect: false,
            previous: None,
            expires_at: None,
        };
        let claims = AccessTokenClaims::issue(
            &entry,
            SecretUsed::Current,
            "https://127.0.0.1:8443",
            "apikey",
            now,
            900,
        )?;
        let start = Instant::now();
        let mut signed = 0usize;
        while start.elapsed() < LIMIT_TIME {
            for _ in 0..16 {
                std::hint::black_box(keys.sign(&claims, now)?);
            }
            signed += 16;
        }
        Ok(signed as f64 / start.elapsed().as_secs_f64())
    })
    .await?
}

/// The value of `apikey_token_remembered_verifications_total{result="<result>"}` in the token
/// server's OpenMetrics text.
fn remembered_count(metrics: &str, result: &str) -> Option<u64> {
    let label = format!("result=\"{result}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("apikey_token_remembered_verifications_total{"))
        .find(|l| l.contains(&label))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let sorted: Vec<Duration> = (1..=200).map(ms).collect();
        assert_eq!(percentile(&sorted, 50), ms(100));
        assert_eq!(percentile(&sorted, 99), ms(198));
        assert_eq!(percentile(&sorted[..1], 99), ms(1));
        assert_eq!(percentile(&sorted[..10], 99), ms(10));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn repeat_rounds_make_enough_requests() {
        assert_eq!(repeat_rounds(20), 50);
        assert_eq!(repeat_rounds(50), 20);
        assert_eq!(repeat_rounds(1000), 5);
        assert_eq!(repeat_rounds(0), 1000);
    }

    #[test]
    fn basic_authorization_encodes_as_rfc_6749_says() {
        let value = basic_authorization("a b", &ClientSecret::new("s:é".into())).unwrap();
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap(), b"a+b:s%3A%C3%A9");
    }

    #[test]
    fn remembered_counts_are_read_from_the_metrics() {
        let metrics = "# TYPE apikey_token_remembered_verifications counter\n\
            apikey_token_remembered_verifications_total{result=\"miss\"} 20\n\
            apikey_token_remembered_verifications_total{result=\"hit\"} 1000\n";
        assert_eq!(remembered_count(metrics, "miss"), Some(20));
        assert_eq!(remembered_count(metrics, "hit"), Some(1000));
        assert_eq!(remembered_count("", "hit"), None);
    }
}
