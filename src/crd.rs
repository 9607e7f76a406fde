//! The `ApiKey` custom resource (`apikey.dev/v1alpha1`): the public contract users write and read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the `ApiKey` resource.
pub const GROUP: &str = "apikey.dev";

/// Annotation whose every new value gives the key exactly one new client secret.
pub const REGENERATE_ANNOTATION: &str = "apikey.dev/regenerate";

/// Label (`"true"`) that lets a key's client call the token server's introspection endpoint
/// (RFC 7662 §2.1 asks for authorization there, not only authentication): give it to the keys
/// of resource servers.
pub const INTROSPECT_LABEL: &str = "apikey.dev/introspect";

/// Type of the one condition the operator maintains.
pub const READY_CONDITION: &str = "Ready";

/// What the user asks for: a key for one user, written into one Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "apikey.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    shortname = "ak",
    namespaced,
    status = "ApiKeyStatus",
    doc = "An API key for one user: the operator writes a client id and client secret into a Secret in the same namespace, publishes an argon2id hash of the secret in the status, and regenerates the secret on each new value of the apikey.dev/regenerate annotation.",
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Client ID","type":"string","jsonPath":".status.clientId"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Rotated","type":"date","jsonPath":".status.lastRotatedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.user == oldSelf.user").message("spec.user is immutable: create a new ApiKey for another user"))]
#[x_kube(validation = Rule::new("has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)").message("spec.secretName is immutable: create a new ApiKey to use another Secret"))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// The user this key acts for (an access token's subject). One active key per user per
    /// namespace: the oldest ApiKey for a user is active and any other one reports Ready=False with
    /// reason DuplicateUser. Users are compared after Unicode NFC normalisation and
    /// case-sensitively (`Alice` and `alice` are two users). No control or invisible characters,
    /// no line breaks, no leading or trailing whitespace; at most 256 characters. Immutable.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(crate::user::USER_RULE).message(crate::user::USER_RULE_MESSAGE))]
    #[x_kube(validation = Rule::new(crate::user::RESERVED_USER_RULE).message(crate::user::RESERVED_USER_RULE_MESSAGE))]
    pub user: String,

    /// Name of the Secret that receives `client_id` and `client_secret`, in the ApiKey's namespace.
    /// Defaults to the ApiKey's own name. A DNS-1123 subdomain. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

/// What the operator has done for this key. Never holds the plaintext secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The public half of the key: the client id written to the Secret as `client_id`. It never
    /// changes for the life of the ApiKey, through regenerations and repairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// Name of the Secret holding `client_id` and `client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// The generation of the current client secret: 1 for the key's first, one more for each new
    /// one (regenerations and repairs). Access tokens name the generation they were issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_generation: Option<i64>,

    /// The operator's seal of `clientId` and `secretGeneration` (HMAC-SHA256 with its record key,
    /// bound to this ApiKey's UID): lets the operator trust them when it must write a deleted
    /// Secret again, and tell an older copy of the Secret put back from the current one. Not a
    /// secret, and of no use to servers checking keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,

    /// argon2id hash of the current client secret as a PHC string
    /// (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), for servers that check presented secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,

    /// When the current client secret was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,

    /// The `metadata.generation` of the ApiKey this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions of the key; type `Ready` tells whether the Secret holds a usable key, and if not,
    /// why (reasons `DuplicateUser`, `SecretConflict`, `SecretRejected`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ApiKey {
    /// Name of the Secret this key writes: `spec.secretName`, or else the ApiKey's own name.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }

    /// The current value of the regenerate annotation, if set and non-empty.
    pub fn regenerate_request(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REGENERATE_ANNOTATION))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The `Ready` condition of the status, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY_CONDITION))
    }
}
