//! Health, readiness and metrics over HTTP: `/healthz`, `/readyz`, `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;

use crate::core::crd::ApiKey;
use crate::error::Result;
use crate::operator::metrics::Metrics;

/// What the endpoints report, shared with the controllers.
pub struct Health {
    /// The metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
    synced: AtomicBool,
    standby: AtomicBool,
    key_stores: Mutex<Vec<Store<ApiKey>>>,
    /// Watches that fail right now, with why.
    failing: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// Not ready until [`Health::set_synced`] or [`Health::set_standby`].
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            synced: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            key_stores: Mutex::default(),
            failing: Mutex::default(),
        }
    }

    /// Records that `watch` fails, and why: not ready until it works again.
    pub fn watch_failed(&self, watch: &str, why: String) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.insert(watch.to_owned(), why);
        }
    }

    /// Records that `watch` works (again).
    pub fn watch_works(&self, watch: &str) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.remove(watch);
        }
    }

    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        if let Ok(failing) = self.failing.lock()
            && let Some((watch, why)) = failing.iter().next()
        {
            return Some(format!("watch of {watch} fails: {why}"));
        }
        (!self.is_ready()).then(|| "caches not synced".to_string())
    }

    /// Ready: the caches of every watched scope have synced.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Whether this replica waits for the lease (a healthy standby is ready).
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::SeqCst) || self.standby.load(Ordering::SeqCst)
    }

    /// Adds a cache of ApiKeys to count for the managed-keys gauge.
    pub fn watch_keys(&self, store: Store<ApiKey>) {
        if let Ok(mut stores) = self.key_stores.lock() {
            stores.push(store);
        }
    }

    fn refresh_gauges(&self) {
        let (mut ready, mut not_ready, mut unknown) = (0, 0, 0);
        if let Ok(stores) = self.key_stores.lock() {
            for key in stores.iter().flat_map(Store::state) {
                match key.ready_condition().map(|c| c.status.as_str()) {
                    Some("True") => ready += 1,
                    Some("False") => not_ready += 1,
                    _ => unknown += 1,
                }
            }
        }
        self.metrics.set_managed_keys(ready, not_ready, unknown);
    }
}

/// Binds `addr` (failing at once if it cannot) and serves the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health and metrics endpoint failed");
        }
    })
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready_because() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    health.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}
