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

/// Type of the condition that tells whether the key is usable.
pub const READY_CONDITION: &str = "Ready";

/// Type of the condition that tells whether `spec.rolloutRestart`'s workloads were restarted after
/// the current client secret.
pub const ROLLOUT_RESTART_CONDITION: &str = "RolloutRestart";

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
    printcolumn = r#"{"name":"Next Rotation","type":"string","jsonPath":".status.nextRotationAt","description":"When spec.rotation.interval rotates the secret next (RFC 3339; a date column would print a future time as <invalid>)"}"#,
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
    #[x_kube(validation = Rule::new(crate::core::user::USER_RULE).message(crate::core::user::USER_RULE_MESSAGE))]
    #[x_kube(validation = Rule::new(crate::core::user::RESERVED_USER_RULE).message(crate::core::user::RESERVED_USER_RULE_MESSAGE))]
    pub user: String,

    /// Name of the Secret that receives `client_id` and `client_secret`, in the ApiKey's namespace.
    /// Defaults to the ApiKey's own name. A DNS-1123 subdomain. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// How the client secret is rotated: a grace period for the previous secret after each
    /// rotation, and rotation on a schedule. Without it, the secret changes only on a new value of
    /// the `apikey.dev/regenerate` annotation (or a repair), and the previous secret stops
    /// working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicy>,

    /// When the key stops working (RFC 3339, e.g. `2027-01-31T00:00:00Z`). From then on the token
    /// server refuses it, its access tokens are no longer active, its status publishes no hash, and
    /// it reports Ready=False with reason Expired. Its Secret stays until the ApiKey is deleted;
    /// moving the time later (or removing it) makes the key work again with the same secret.
    /// Before the year 3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self < timestamp('3000-01-01T00:00:00Z')").message("spec.expiresAt must be before the year 3000"))]
    pub expires_at: Option<Time>,

    /// Workloads in the ApiKey's namespace that use its Secret (their pod template mounts it or
    /// references it in env or envFrom; others are not restarted) and get one rollout restart
    /// after each new client secret (a pod-template annotation, as `kubectl rollout restart`
    /// does), so that they start with the new secret. Needs the operator's optional rights of
    /// deploy/rollout-restart/; without them the condition RolloutRestart says it is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"]))]
    pub rollout_restart: Vec<RolloutTarget>,
}

/// Pattern of the durations of `spec.rotation`: whole hours, minutes and seconds, as Go's
/// `time.ParseDuration` and CEL's `duration()` read them (`90s`, `10m`, `1h30m`, `720h`).
/// At most six digits of hours, seven of minutes and nine of seconds: their sum stays within
/// what `duration()` reads (about 2.5 million hours).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$";

/// How a key's client secret is rotated.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// How long the previous client secret is still accepted after a rotation by the
    /// regenerate annotation or by the schedule, as a duration (`90s`, `10m`, `1h30m`; at most
    /// `720h`). Default `0s`: the previous secret stops working at once, which is the right
    /// answer after a leak. During the grace period the status publishes the previous secret's
    /// hash and the time it stops being accepted (`previousSecretHash`,
    /// `previousSecretExpiresAt`), and the token server accepts both secrets. There is at most
    /// one previous secret: a rotation inside the grace period ends the earlier one's grace at
    /// once. Shortening the grace period shortens a grace period under way. Repairs (a Secret
    /// deleted or altered by someone else) give no grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]{1,6}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$') || duration(self) <= duration('720h')").message("spec.rotation.gracePeriod must be at most 720h (30 days)"))]
    pub grace_period: Option<String>,

    /// Rotate the client secret once it is older than this duration (`24h`, `720h`, `2160h`; at
    /// most `87600h`). Each key's due time is spread deterministically after the interval, by
    /// up to a tenth of it and at most an hour (by its UID), so that keys created together do
    /// not all rotate in the same second; `status.nextRotationAt` shows it. The age is counted
    /// from `status.lastRotatedAt`, whatever rotated the secret last. The operator enforces a
    /// minimum (its flag --min-rotation-interval, default 1h): a shorter interval rotates at
    /// the minimum, and the Ready condition's message says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]{1,6}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$') || (duration(self) >= duration('1s') && duration(self) <= duration('87600h'))").message("spec.rotation.interval must be between 1s and 87600h (10 years)"))]
    pub interval: Option<String>,
}

/// A workload to restart after each new client secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// Kind of the workload, in API group `apps`: `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// Name of the workload, in the ApiKey's own namespace (a workload in another namespace
    /// cannot be named). A DNS-1123 subdomain.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// The workload kinds that `kubectl rollout restart` restarts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
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

    /// argon2id hash (PHC string) of the previous client secret, published only during the grace
    /// period after a rotation (`spec.rotation.gracePeriod`): servers checking keys accept a
    /// secret that matches either hash until `previousSecretExpiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_hash: Option<String>,

    /// The generation of the previous client secret (see `secretGeneration`), beside
    /// `previousSecretHash`: access tokens issued under it stay active until
    /// `previousSecretExpiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_generation: Option<i64>,

    /// When the previous client secret stops being accepted (the end of its grace period), beside
    /// `previousSecretHash`. The operator removes the three previous-secret fields at that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Time>,

    /// When the client secret is next rotated by `spec.rotation.interval` (a time in the past
    /// means: now, as soon as the operator gets to it). Absent without an interval, and while the
    /// key is not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,

    /// The `metadata.generation` of the ApiKey this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions of the key. Type `Ready` tells whether the Secret holds a usable key, and if not,
    /// why (reasons `DuplicateUser`, `SecretConflict`, `SecretRejected`, `Expired`). Type
    /// `RolloutRestart`, present when `spec.rolloutRestart` names workloads, tells whether each of
    /// them was restarted after the current client secret (reasons `Restarted`,
    /// `TargetNotFound`, `Forbidden`, `Rejected`, `SecretNotUsed`, `Retrying`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ApiKey {
    /// The namespace and name of a key read from the cluster. Errors: [`crate::Error::MissingField`]
    /// (only an object built in memory lacks them).
    pub fn namespace_and_name(&self) -> crate::Result<(&str, &str)> {
        let namespace = self.metadata.namespace.as_deref();
        let namespace = namespace.ok_or(crate::Error::MissingField("metadata.namespace"))?;
        let name = self.metadata.name.as_deref();
        let name = name.ok_or(crate::Error::MissingField("metadata.name"))?;
        Ok((namespace, name))
    }

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
        self.condition(READY_CONDITION)
    }

    /// The condition of `type_` in the status, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }
}
