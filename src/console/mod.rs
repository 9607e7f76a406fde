//! `kubectl apikey console`: the model page as a local web page (placeholder until it is built).

use kube::Client;

use crate::Result;

/// How the console is served.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace the page starts with (`None`: every namespace, `-A`).
    pub namespace: Option<String>,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
}

/// Serves the console until interrupted.
pub async fn serve(_client: Client, _options: Options) -> Result<()> {
    Err(crate::Error::Config("the console is not built yet".into()))
}
