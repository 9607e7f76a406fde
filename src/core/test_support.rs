//! Fixtures for unit tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::core::crd::{ApiKey, ApiKeySpec};
use crate::core::credentials::{generate_client_id, generate_client_secret};
use crate::core::record::RecordKey;
use crate::core::secret::{self, Credentials, ManagedSecret};

/// One record key for all unit tests.
pub fn record_key() -> &'static RecordKey {
    static KEY: std::sync::OnceLock<RecordKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| RecordKey::generate().unwrap())
}

/// A PHC-shaped argon2id string; unit tests do not need a real hash.
pub const FAKE_HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

/// `secs` seconds after the epoch.
pub fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

/// An ApiKey `name` in namespace `ns` for `user`, created at `created` seconds.
pub fn key(name: &str, user: &str, created: i64) -> ApiKey {
    let mut k = ApiKey::new(
        name,
        ApiKeySpec {
            user: user.into(),
            secret_name: None,
            rotation: None,
            expires_at: None,
            rollout_restart: Vec::new(),
        },
    );
    k.metadata.namespace = Some("ns".into());
    k.metadata.uid = Some(format!("uid-{name}"));
    k.metadata.generation = Some(1);
    k.metadata.creation_timestamp = Some(time(created));
    k
}

/// Fresh credentials answering `handled`.
pub fn creds(handled: Option<&str>) -> Credentials {
    Credentials {
        client_id: generate_client_id().unwrap(),
        client_secret: generate_client_secret().unwrap(),
        hash: FAKE_HASH.into(),
        handled_request: handled.map(Into::into),
        rotated_at: time(1_000),
        reason: "created",
        generation: 1,
        previous: None,
    }
}

/// A sealed Secret of `key`, read back, answering `handled`.
pub fn managed(key: &ApiKey, handled: Option<&str>) -> ManagedSecret {
    ManagedSecret::read(
        &secret::build(key, &creds(handled), Some("1".into()), record_key()).unwrap(),
        record_key(),
    )
}

/// The ApiKey `name` (UID `uid-<name>`, user `alice`) Ready at resourceVersion `version`, with
/// `client_id`, `hash` and secret generation 1 in its status: what the token server reads.
pub fn ready_apikey(name: &str, client_id: &str, version: &str, hash: String) -> ApiKey {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    let mut k = key(name, "alice", 1);
    k.metadata.resource_version = Some(version.into());
    k.status = Some(crate::core::crd::ApiKeyStatus {
        client_id: Some(client_id.into()),
        secret_hash: Some(hash),
        secret_generation: Some(1),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "SecretReady".into(),
            message: String::new(),
            last_transition_time: time(0),
            observed_generation: None,
        }],
        ..crate::core::crd::ApiKeyStatus::default()
    });
    k
}

/// A real argon2id hash of `secret` with the cheapest parameters (m 8 KiB, t 1, p 1).
pub async fn cheap_hash(secret: &crate::core::credentials::ClientSecret) -> String {
    let cheap = crate::core::hashing::HashParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    crate::core::hashing::Hasher::new(cheap, 1)
        .unwrap()
        .hash(secret.clone())
        .await
        .unwrap()
}
