//! Fixtures for unit tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ApiKey, ApiKeySpec};
use crate::credentials::{generate_client_id, generate_client_secret};
use crate::record::RecordKey;
use crate::secret::{self, Credentials, ManagedSecret};

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
    }
}

/// A sealed Secret of `key`, read back, answering `handled`.
pub fn managed(key: &ApiKey, handled: Option<&str>) -> ManagedSecret {
    ManagedSecret::read(
        &secret::build(key, &creds(handled), Some("1".into()), record_key()).unwrap(),
        record_key(),
    )
}
