//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): of several replicas
//! exactly one reconciles; a killed leader's lease expires after its duration; a leader shutting
//! down releases it at once.

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Name of the Lease.
pub const LEASE_NAME: &str = "apikey-operator";

/// A held lease: resolves [`Leadership::lost`] when it is lost; [`Leadership::release`] gives it
/// up.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Waits until this process holds the Lease `LEASE_NAME` in `namespace`, or `shutdown` resolves
/// first (then `None`).
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
    duration_seconds: u64,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> Result<Option<Leadership>> {
    acquire_named(
        client,
        namespace,
        LEASE_NAME,
        identity,
        duration_seconds,
        shutdown,
    )
    .await
}

/// Waits until this process holds the Lease `lease_name` in `namespace`, or `shutdown` resolves
/// first (then `None`).
pub async fn acquire_named(
    client: Client,
    namespace: &str,
    lease_name: &str,
    identity: &str,
    duration_seconds: u64,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> Result<Option<Leadership>> {
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration_seconds)
        .with_grace((duration_seconds / 3).max(2))
        .with_field_manager(format!("apikey-operator-lease-{identity}"))
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut state, task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{lease_name}"), identity, "waiting for the leader lease");
    let mut shutdown = shutdown;
    while !*state.borrow_and_update() {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(Error::Lease("the lease manager stopped".into()));
                }
            }
            _ = &mut shutdown => {
                drop(state);
                let _ = task.await;
                return Ok(None);
            }
        }
    }
    info!(lease = lease_name, identity, "became the leader");
    Ok(Some(Leadership { state, task }))
}

impl Leadership {
    /// A future that resolves when the lease is lost, and the receiver it watches.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.state.clone();
        async move {
            loop {
                if !*state.borrow_and_update() {
                    warn!("lost the leader lease");
                    return;
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        }
        .boxed()
    }

    /// Whether the lease is still held.
    pub fn is_held(&self) -> bool {
        *self.state.borrow()
    }

    /// Releases the lease so that another replica takes over at once.
    pub async fn release(self) {
        let Leadership { state, task } = self;
        drop(state);
        match task.await {
            Ok(Ok(_)) => info!("released the leader lease"),
            Ok(Err(e)) => warn!(error = %e, "could not release the leader lease"),
            Err(e) => warn!(error = %e, "lease manager task failed"),
        }
    }
}
