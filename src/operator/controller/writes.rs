//! The writes a reconcile makes, each under a precondition so that a decision taken on a stale
//! copy is never written: the Secret (created, replaced, adopted or relabelled, only while the
//! ApiKey still exists), the ApiKey's status, and events. What became of a Secret write is a
//! [`Written`] for the reconcile to act on.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::core::crd::{ApiKey, ApiKeyStatus};
use crate::core::credentials::{self, ClientSecret};
use crate::core::issue::IssueReason;
use crate::core::rotation;
use crate::core::secret::{self, Credentials, MANAGED_BY_LABEL, MANAGER, ManagedSecret};
use crate::error::{Error, Result};
use crate::operator::events::EventType;

use super::context::Context;

/// What became of a write the reconciler attempted.
pub(super) enum Written {
    /// Written; the Secret as the API server returned it.
    Done(Box<Secret>),
    /// The Secret changed (or appeared) since it was judged: nothing was written; decide again.
    Stale,
    /// The ApiKey is gone or being deleted: nothing was written, nothing more to do.
    Gone,
    /// The namespace is being deleted: nothing can be written there any more.
    NamespaceTerminating,
    /// The API server refused the write for a reason that will not go away by itself.
    Rejected(String),
}

/// What a new client secret is written for.
pub(super) struct New {
    pub(super) reason: IssueReason,
    /// The client id to keep, or `None` for a new one.
    pub(super) client_id: Option<String>,
    pub(super) generation: u64,
    /// The previous secret to keep for a grace period.
    pub(super) previous: Option<rotation::Previous>,
}

/// Generates credentials for `new.reason`, hashes the secret off the runtime, and writes the
/// Secret in one request (see [`write_secret`]).
pub(super) async fn issue(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    new: New,
    replaces: Option<String>,
    now: &Time,
) -> Result<Written> {
    let reason = new.reason;
    let client_id = match new.client_id {
        Some(id) => id,
        None => credentials::generate_client_id()?,
    };
    let client_secret = credentials::generate_client_secret()?;
    let hash = ctx.hasher.hash(client_secret.clone()).await?;
    let creds = Credentials {
        client_id,
        client_secret,
        hash,
        handled_request: key.regenerate_request().map(secret::handled_form),
        rotated_at: now.clone(),
        reason: reason.metric_label(),
        generation: new.generation,
        previous: new.previous,
    };
    let written = write_secret(key, ctx, secrets, &creds, replaces).await?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), client_id = %creds.client_id, generation = creds.generation, reason = reason.event_reason(), "{}", reason.describe(&key.secret_name()));
        ctx.metrics.issued(reason.metric_label());
        if let Some(trigger) = reason.trigger() {
            ctx.metrics.rotated(trigger);
        }
    }
    Ok(written)
}

/// An unsealed record and its client secret, if it may be sealed as it is: its client id is the
/// one the status publishes, and it verifies against the hash the status publishes, which whoever
/// can edit the Secret cannot change. So a record is only ever sealed with the credentials the
/// operator (or the release before it) published, never with ones an editor chose.
pub(super) async fn adoptable(
    key: &ApiKey,
    ctx: &Context,
    fresh: Option<&Secret>,
) -> Result<Option<Adoption>> {
    let (Some(secret), Some(status)) = (fresh, key.status.as_ref()) else {
        return Ok(None);
    };
    let Some(plaintext) = secret::client_secret_of(secret) else {
        return Ok(None);
    };
    let found = ManagedSecret::read(secret, &ctx.record_key);
    let (Some(hash), Some(published_id)) = (status.secret_hash.clone(), status.client_id.as_ref())
    else {
        return Ok(None);
    };
    if found.client_id.as_ref() != Some(published_id) {
        return Ok(None);
    }
    let verified = ctx.hasher.verify(plaintext.clone(), hash).await?;
    Ok(verified.then_some(Adoption {
        found,
        client_secret: plaintext,
    }))
}

/// A record that may be sealed as it is: what was read of it, and its client secret.
pub(super) struct Adoption {
    found: ManagedSecret,
    client_secret: ClientSecret,
}

/// Seals a record the operator cannot judge (a release before seals, or a lost record key) whose
/// credentials are the ones the status published (see [`adoptable`]), keeping them: the client
/// secret is hashed again, so that the hash published is one the operator computed, and nothing
/// else changes for the key's clients: the secret generation the status published is kept (so
/// tokens issued under it stay active and no workload is restarted; `generation` when it
/// published none), and so is a previous secret in its grace period, if the status published
/// exactly the one the record holds.
pub(super) async fn adopt(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    Adoption {
        found,
        client_secret,
    }: Adoption,
    replaces: Option<String>,
    generation: u64,
    now: &Time,
) -> Result<Written> {
    let Some(client_id) = found.client_id.clone() else {
        return Ok(Written::Stale);
    };
    let status = key.status.clone().unwrap_or_default();
    let generation = status
        .secret_generation
        .and_then(|g| u64::try_from(g).ok())
        .filter(|g| *g >= 1)
        .unwrap_or(generation);
    let previous = found.previous.clone().filter(|p| {
        status.previous_secret_hash.as_deref() == Some(p.hash.as_str())
            && status.previous_secret_generation == i64::try_from(p.generation).ok()
            && status.previous_secret_expires_at.as_ref().map(|Time(t)| *t) == Some(p.until)
    });
    let hash = ctx.hasher.hash(client_secret.clone()).await?;
    let creds = Credentials {
        client_id,
        client_secret,
        hash,
        handled_request: found.handled_request.clone(),
        rotated_at: found.rotated_at.clone().unwrap_or_else(|| now.clone()),
        reason: ADOPTED,
        generation,
        previous,
    };
    let written = write_secret(key, ctx, secrets, &creds, replaces).await?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), client_id = %creds.client_id, key_id = ctx.record_key.id(), "sealed the record of Secret {} without a new secret", key.secret_name());
        ctx.metrics.issued(ADOPTED);
    }
    Ok(written)
}

/// Reason recorded for a record sealed without rotation.
pub(super) const ADOPTED: &str = "adopted";

/// Writes the Secret holding `creds` for `key`: created when missing, replaced under a
/// resourceVersion precondition otherwise, and only while the ApiKey still exists.
pub(super) async fn write_secret(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    creds: &Credentials,
    replaces: Option<String>,
) -> Result<Written> {
    if !still_live(key, ctx).await? {
        return Ok(Written::Gone);
    }
    let secret = secret::build(key, creds, replaces.clone(), &ctx.record_key)?;
    let result = match replaces {
        // create, never apply: if a Secret of that name appeared meanwhile, the API server
        // refuses and the next reconcile sees it as foreign.
        None => {
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            secrets.create(&pp, &secret).await
        }
        // the precondition makes the write fail if the Secret changed since it was judged
        Some(_) => {
            secrets
                .patch(
                    &key.secret_name(),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
        }
    };
    judge_write(key, result)
}

/// Puts the operator's managed-by label back on a Secret that is the key's own and sealed, under
/// a resourceVersion precondition; nothing else changes.
pub(super) async fn relabel(
    key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    replaces: Option<String>,
) -> Result<Written> {
    if !still_live(key, ctx).await? {
        return Ok(Written::Gone);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": replaces,
            "labels": { MANAGED_BY_LABEL: MANAGER },
        }
    });
    let result = secrets
        .patch(
            &key.secret_name(),
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await;
    let written = judge_write(key, result)?;
    if let Written::Done(_) = &written {
        info!(apikey = %ObjectRef::from_obj(key), "Secret {} had lost the label {MANAGED_BY_LABEL}; put it back (no new secret)", key.secret_name());
    }
    Ok(written)
}

/// Sorts a write's result into what the reconciler does next.
pub(super) fn judge_write(key: &ApiKey, result: kube::Result<Secret>) -> Result<Written> {
    match result {
        Ok(secret) => Ok(Written::Done(Box::new(secret))),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
            debug!(apikey = %ObjectRef::from_obj(key), "Secret changed meanwhile; retrying");
            Ok(Written::Stale)
        }
        Err(kube::Error::Api(s)) if is_namespace_terminating(&s) => {
            Ok(Written::NamespaceTerminating)
        }
        // Invalid, BadRequest, Forbidden: the same write would be refused again.
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
            Ok(Written::Rejected(s.message.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the API server refused a create because the namespace is being deleted
/// (`NamespaceTerminating`, from the NamespaceLifecycle admission plugin).
pub(super) fn is_namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || status.message.contains("because it is being terminated"))
}

/// Whether `key` still exists as this very object (same UID) and is not being deleted, read from
/// the API server right before a Secret is written: the cache may still hold a key that a user
/// just deleted, and no Secret is ever written for a key that is gone.
pub(super) async fn still_live(key: &ApiKey, ctx: &Context) -> Result<bool> {
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = api.get_metadata_opt(&key.name_any()).await?;
    Ok(current.is_some_and(|k| {
        k.metadata.uid == key.metadata.uid && k.metadata.deletion_timestamp.is_none()
    }))
}

/// What became of a status write.
pub(super) enum StatusWrite {
    Done,
    /// The ApiKey changed since it was read.
    Stale,
    /// The ApiKey is gone.
    Gone,
}

/// Applies `status` under a resourceVersion precondition (the version it was decided on), so that
/// a decision taken on a stale copy is never written.
pub(super) async fn patch_status(
    key: &ApiKey,
    ctx: &Context,
    status: &ApiKeyStatus,
) -> Result<StatusWrite> {
    let namespace = key
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": { "resourceVersion": key.resource_version() },
        "status": status,
    });
    match api
        .patch_status(
            &key.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Done),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(StatusWrite::Stale),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(StatusWrite::Gone),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn publish(
    ctx: &Context,
    key: &ApiKey,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    id: Option<&str>,
) {
    if let Err(e) = ctx
        .events
        .publish(key, type_, reason, action, note, id)
        .await
    {
        warn!(apikey = %ObjectRef::from_obj(key), error = %e, "could not record event");
    }
}
