//! TLS for the token server: a certificate chain and private key from PEM files (a mounted
//! Secret, e.g. cert-manager's `tls.crt`/`tls.key`), reloaded when their content changes, so that
//! a renewed certificate is served without a restart.

use std::path::PathBuf;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// How often the files are read to see whether they changed. A Secret volume is updated by the
/// kubelet within about a minute; this adds at most this much.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// Where the certificate chain and key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
        };
        Ok((
            read(self.cert.clone()).await?,
            read(self.key.clone()).await?,
        ))
    }

    /// The server configuration from the files as they are now. Errors name the file and the
    /// problem, never key material.
    pub async fn load(&self) -> Result<RustlsConfig> {
        let (cert, key) = self.read().await?;
        RustlsConfig::from_pem(cert, key).await.map_err(|e| {
            Error::Config(format!(
                "TLS certificate {} or key {}: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })
    }

    /// Reloads `config` whenever the files' content changes, until the process ends. A change
    /// that does not load (a half-written pair) is logged and retried; the previous certificate
    /// keeps being served.
    pub async fn reload_on_change(self, config: RustlsConfig) {
        let mut served = self.read().await.ok().map(|(c, k)| digest(&c, &k));
        let mut refused = None;
        let mut interval = tokio::time::interval(RELOAD_CHECK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Ok((cert, key)) = self.read().await else {
                continue;
            };
            let now = Some(digest(&cert, &key));
            if now == served || now == refused {
                continue;
            }
            match config.reload_from_pem(cert, key).await {
                Ok(()) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    served = now;
                }
                Err(e) => {
                    // logged once per content; retried when the files change again
                    tracing::warn!(cert = %self.cert.display(), error = %e, "the changed TLS certificate or key does not load; still serving the previous one");
                    refused = now;
                }
            }
        }
    }
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update((cert.len() as u64).to_be_bytes());
    d.update(cert);
    d.update(key);
    d.finalize().into()
}
