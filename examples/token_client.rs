//! A workload's side of "Authenticate with a key": reads the client credentials that its ApiKey's
//! Secret mounts, trades them for an access token at the token server (the OAuth 2.0 client
//! credentials grant, RFC 6749 §4.4, authenticating with `client_secret_basic`, §2.3.1), and
//! prints what it got: the token type, its lifetime in seconds and its claims, never the token or
//! the secret. Exits 1 on any failure, with the server's error code (RFC 6749 §5.2) if it sent one.
//!
//! It reads the files when it runs, so a rotated secret is used as soon as the kubelet has updated
//! the mounted Secret (README: "Rotate without an outage"); a long-running client should read
//! them again before each token request, not once at start. It sends the secret only over
//! verified TLS (an `http://` URL is refused) and follows no redirect.
//!
//! Environment:
//! - `APIKEY_TOKEN_URL`: the token endpoint, e.g.
//!   `https://apikey-token-server.apikey-token-server.svc/oauth2/token`;
//! - `APIKEY_CREDENTIALS_DIR`: the mounted Secret (files `client_id`, `client_secret`),
//!   default `/var/run/apikey`;
//! - `APIKEY_CA_FILE`: PEM certificates the server's certificate must chain to (and no others).
//!
//! The end-to-end tests (tests/node.rs) run it as a pod on the local cluster's node; build it
//! static as tests/image/build does.

use std::{env, fs, process::ExitCode, sync::Arc, time::Duration};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("token-client: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let url = env::var("APIKEY_TOKEN_URL").map_err(|_| "APIKEY_TOKEN_URL is not set")?;
    let dir = env::var("APIKEY_CREDENTIALS_DIR").unwrap_or_else(|_| "/var/run/apikey".into());
    let ca_file = env::var("APIKEY_CA_FILE").map_err(|_| "APIKEY_CA_FILE is not set")?;
    let read = |name: &str| {
        fs::read_to_string(format!("{dir}/{name}"))
            .map(|s| s.trim_end().to_owned())
            .map_err(|e| format!("reading {dir}/{name}: {e}"))
    };
    let (client_id, client_secret) = (read("client_id")?, read("client_secret")?);

    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls_config(&ca_file)?)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTPS client: {e}"))?;
    // RFC 6749 §2.3.1: both are form-urlencoded before they are joined for Basic authentication
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let response = client
        .post(&url)
        .basic_auth(encode(&client_id), Some(encode(&client_secret)))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .map_err(|e| format!("POST {url}: {}", with_causes(&e)))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .map_err(|e| format!("POST {url}: {status}, a body that is not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}, error {}", body["error"]));
    }
    let token = body["access_token"]
        .as_str()
        .ok_or("no access_token in the answer")?;
    let part = |i: usize| -> Result<serde_json::Value, String> {
        let b64 = token
            .split('.')
            .nth(i)
            .ok_or("the access token is not a JWS")?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| format!("the access token is not base64url: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| format!("the access token is not JSON: {e}"))
    };
    let summary = serde_json::json!({
        "token_type": body["token_type"],
        "expires_in": body["expires_in"],
        "kid": part(0)?["kid"],
        "claims": part(1)?,
    });
    println!("{summary}");
    Ok(())
}

/// TLS trusting exactly the certificates in `ca_file` (PEM).
fn tls_config(ca_file: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{ca_file}: {e}"))? {
        let cert = cert.map_err(|e| format!("{ca_file}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{ca_file}: {e}"))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// `error` and each of its causes, so that a failed connection says why (refused, timed out,
/// a certificate not trusted).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
