//! `kubectl apikey console`: the model page (create, delete, regenerate, one key or many) as a
//! web page on 127.0.0.1, acting with the caller's own client (kubeconfig and RBAC): no endpoint
//! in the cluster, no rights beyond the caller's.
//!
//! It is opened with a one-time random token in its URL, exchanged for a session cookie
//! ([`session`]); every request is checked for the console's own `Host` and `Origin`; it sends no
//! CORS headers. The table is live ([`live`]: watches of the ApiKeys and of the Secrets'
//! metadata, never their data); [`api`] has the handlers; the page's HTML, script, style sheet
//! and icon are served from the binary.

pub mod api;
pub mod live;
pub mod rows;
pub mod session;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Client;
use tokio::sync::watch;

use crate::Result;
use crate::console::api::AppState;
use crate::console::rows::Tracking;
use crate::console::session::{Redemption, Session, token_of};

/// How the console is served.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace the page starts with (`None`: every namespace, `-A`).
    pub namespace: Option<String>,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
}

/// Largest JSON body the API accepts, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long in-flight requests may finish after SIGINT or SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `Content-Security-Policy` of every response: the page's own files only, no inline script or
/// style, never framed.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Serves the console on 127.0.0.1:`options.port` until SIGINT or SIGTERM. Prints exactly one
/// line to stdout, `Console: http://127.0.0.1:PORT/?token=TOKEN`, and a hint to stderr.
/// Errors: the port cannot be bound, the random number generator fails, or stdout is closed.
pub async fn serve(client: Client, options: Options) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, options.port)).await?;
    let port = listener.local_addr()?.port();
    let session = Arc::new(Session::generate(port)?);
    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        client,
        namespace: options.namespace,
        session: session.clone(),
        tracking: Arc::new(watch::Sender::new(Tracking::default())),
        shutdown: stopped.clone(),
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Console: {}", session.url())?;
        out.flush()?;
    }
    eprintln!(
        "Open the link above in a browser on this machine (it works once). Press Ctrl-C to stop the console."
    );
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut grace = stopped;
    tokio::select! {
        served = server => served?,
        _ = async {
            let _ = grace.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    Ok(())
}

/// The console's routes behind [`guard`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::index))
        .route("/console.js", get(api::script))
        .route("/console.css", get(api::style))
        .route("/icon.svg", get(api::icon))
        .route("/api/context", get(api::context))
        .route("/api/events", get(api::events))
        .route("/api/keys", post(api::create))
        .route("/api/regenerate", post(api::regenerate))
        .route("/api/delete", post(api::delete))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Checks every request ([`session`]: `Host`, `Origin`, the token's redemption, the cookie) and
/// adds the security headers to every response, refusals included.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = admit(&state.session, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn admit(session: &Session, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !session.host_allowed(text(headers, header::HOST)) {
        return refuse(
            "This console answers only at its own address (127.0.0.1 or localhost and its port).",
        );
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !session.origin_allowed(safe, text(headers, header::ORIGIN)) {
        return refuse("Requests from other sites are refused.");
    }
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let authenticated = session.authenticated(cookies);
    let token = (request.uri().path() == "/")
        .then(|| token_of(request.uri().query()))
        .flatten();
    match (token, authenticated) {
        (Some(_), true) => see_other(None),
        (Some(token), false) => match session.redeem(&token) {
            Redemption::Granted(cookie) => see_other(Some(cookie)),
            Redemption::AlreadyUsed => refuse(
                "This console link was already used. Start `kubectl apikey console` again for a new link.",
            ),
            Redemption::Wrong => refuse(
                "This console link is not valid. Use the link `kubectl apikey console` printed.",
            ),
        },
        (None, true) => next.run(request).await,
        (None, false) => refuse(
            "Open the console with the link `kubectl apikey console` printed (it works once; start the console again for a new one).",
        ),
    }
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse(message: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// `303 See Other` to `/` (RFC 9110 §15.4.4), setting `cookie` if given.
fn see_other(cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
