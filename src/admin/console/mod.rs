//! `kubectl apikey console`: the model page (create, delete, regenerate, one key or many) as a
//! web page on 127.0.0.1, acting with the caller's own client (kubeconfig and RBAC): no endpoint
//! in the cluster, no rights beyond the caller's.
//!
//! It is opened with a one-time random token in its URL's fragment, which the page exchanges for
//! a session secret it sends as a bearer on every API call ([`session`]; no cookies); every
//! request is checked for the console's own `Host` and `Origin`; it sends no CORS headers. The
//! table is live ([`live`]: watches of the ApiKeys and of the Secrets' metadata, never their
//! data); [`api`] has the handlers; the page's HTML, script, style sheet and icon are served from
//! the binary, to anyone who may reach the port (they hold nothing secret).

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
use tokio::sync::{Semaphore, watch};

use crate::admin::console::api::{AppState, MAX_STREAMS, SESSION_ENDED};
use crate::admin::console::rows::Tracking;
use crate::admin::console::session::Session;
use crate::{Error, Result};

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
/// line to stdout, `Console: http://127.0.0.1:PORT/#token=TOKEN`, and a hint to stderr.
/// Errors: port 80 ([`check_port`]), the port cannot be bound, the random number generator
/// fails, or stdout is closed.
pub async fn serve(client: Client, options: Options) -> Result<()> {
    check_port(options.port)?;
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
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
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

/// Refuses port 80: browsers leave the default port out of `Host` and `Origin`, which would then
/// not name the console's port and be refused. Errors: `port` is 80.
pub fn check_port(port: u16) -> Result<()> {
    if port == 80 {
        return Err(Error::Config(
            "the console cannot use port 80 (browsers leave it out of Host and Origin, which the console checks): choose another --port, or 0 for any free one".into(),
        ));
    }
    Ok(())
}

/// The console's routes, each request checked first (`Host`, `Origin`, the session).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::index))
        .route("/console.js", get(api::script))
        .route("/console.css", get(api::style))
        .route("/icon.svg", get(api::icon))
        .route("/api/session", post(api::session))
        .route("/api/context", get(api::context))
        .route("/api/events", get(api::events))
        .route("/api/keys", post(api::create))
        .route("/api/regenerate", post(api::regenerate))
        .route("/api/delete", post(api::delete))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Whether a request for `path` needs the session's bearer: everything but the page's files and
/// the token's redemption.
pub fn needs_session(path: &str) -> bool {
    !matches!(
        path,
        "/" | "/console.js" | "/console.css" | "/icon.svg" | "/api/session"
    )
}

/// Checks every request ([`session`]: `Host`, `Origin`, the bearer) and adds the security
/// headers to every response, refusals included. Never a `Set-Cookie`, never a CORS header.
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
    if needs_session(request.uri().path())
        && !session.authorized(text(headers, header::AUTHORIZATION))
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": SESSION_ENDED})),
        )
            .into_response();
    }
    next.run(request).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_files_and_the_redemption_go_without_the_session() {
        for public in [
            "/",
            "/console.js",
            "/console.css",
            "/icon.svg",
            "/api/session",
        ] {
            assert!(!needs_session(public), "{public}");
        }
        for private in [
            "/api/events",
            "/api/context",
            "/api/keys",
            "/api/delete",
            "/api/regenerate",
            "/api/session/",
            "/api",
            "/other",
        ] {
            assert!(needs_session(private), "{private}");
        }
    }

    #[test]
    fn port_80_is_refused() {
        assert!(check_port(0).is_ok() && check_port(8080).is_ok());
        let error = check_port(80).unwrap_err().to_string();
        assert!(
            error.contains("port 80") && error.contains("--port"),
            "{error}"
        );
    }
}
