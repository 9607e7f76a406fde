//! The reconcile of one ApiKey, as controller-rs and Stackable's operators shape it: read what
//! the caches and the clock say ([`Read`]), ask the core what must happen ([`decide`]), carry it
//! out ([`carry_out`]: the Secret written by [`super::writes`]), and bring the status in line
//! ([`finish_with`]: status, events, when to look again). A key with nothing to do costs no API
//! call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};

use crate::core::crd::{ApiKey, ApiKeyStatus};
use crate::core::decision::{self, Plan, SecretState, StatusClientId};
use crate::core::issue::IssueReason;
use crate::core::record::SealCheck;
use crate::core::rotation::{self, Policy};
use crate::core::secret::ManagedSecret;
use crate::core::status::{self, Outcome};
use crate::error::{Error, Result};
use crate::operator::events::EventType;
use crate::operator::rollout;

use super::context::Context;
use super::writes::{self, Adoption, New, StatusWrite, Written, adoptable, publish};

/// How often a key in SecretConflict checks whether the foreign Secret has gone (Secrets that are
/// not ours are not watched, so nothing else would tell).
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Delay before looking again at a key whose cached copy turned out stale.
const STALE_RETRY: Duration = Duration::from_millis(200);
/// When to try again to restart workloads after a failure that may go away by itself.
const ROLLOUT_RETRY: Duration = Duration::from_secs(30);
/// First and largest delay after a failed reconcile; doubled on every consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Reconciles one ApiKey.
pub async fn reconcile(key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    match reconcile_key(&key, &ctx).await {
        Ok((action, outcome)) => {
            ctx.metrics
                .reconciled(outcome, started.elapsed().as_secs_f64());
            if let Ok(mut failures) = ctx.failures.lock() {
                failures.remove(&ObjectRef::from_obj(&*key));
            }
            ctx.outage.note_success();
            Ok(action)
        }
        Err(e) => {
            ctx.metrics
                .failed(e.metric_label(), started.elapsed().as_secs_f64());
            Err(e)
        }
    }
}

/// On failure: back off exponentially per ApiKey (1s, 2s, 4s, ... up to 5 minutes) and retry.
/// An outage of the API server is logged once for all keys (see [`crate::operator::outage`]).
pub fn error_policy(key: Arc<ApiKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from_obj(&*key)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff(failures);
    ctx.report_failure(&ObjectRef::from_obj(&*key).to_string(), error, delay);
    Action::requeue(delay)
}

pub(super) fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// One reconcile, in four steps: read what the caches and the clock say, ask the core what must
/// happen ([`decision::decide`]), write the Secret if that calls for it ([`writes`]), and bring
/// the status in line ([`finish`], [`serve`]).
async fn reconcile_key(key: &ApiKey, ctx: &Context) -> Result<(Action, &'static str)> {
    if key.metadata.deletion_timestamp.is_some() {
        return Ok((Action::await_change(), "deleting"));
    }
    if ctx.is_superseded(key) {
        return Ok((Action::await_change(), "superseded"));
    }
    let read = Read::of(key, ctx)?;
    let decided = decide(key, ctx, &read).await?;
    carry_out(key, ctx, &read, decided).await
}

/// What a reconcile knows before it decides, from the caches and the clock: no API call.
struct Read<'k> {
    /// The Secrets of the key's namespace.
    secrets: Api<Secret>,
    /// The key's Secret as the cache holds it.
    cached: SecretState,
    /// Whether the key is the active one for its user (`Err`: the name of the active one).
    active: std::result::Result<(), String>,
    /// How far the client id the status publishes can be trusted.
    status_client_id: StatusClientId<'k>,
    /// The key's rotation policy.
    policy: Policy,
    /// The time of this reconcile, to the second.
    now: Time,
}

impl<'k> Read<'k> {
    /// Reads `key`'s siblings, its Secret and the trust in its status from `ctx`'s caches.
    fn of(key: &'k ApiKey, ctx: &Context) -> Result<Self> {
        let namespace = key
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let siblings: Vec<Arc<ApiKey>> = ctx
            .siblings
            .of(&namespace, &key.spec.user)
            .into_iter()
            .filter_map(|name| ctx.keys.get(&ObjectRef::new(&name).within(&namespace)))
            .collect();
        Ok(Self {
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            cached: SecretState::of(key, ctx.secrets.get(&namespace, &key.secret_name())),
            active: decision::active_for_user(key, siblings.iter().map(|k| &**k)),
            status_client_id: status_client_id(key, ctx),
            policy: Policy::of(&key.spec, ctx.min_rotation_interval),
            // Kubernetes keeps times to the second; so do we, so that what we write compares
            // equal to what we read back and a healthy key needs no write.
            now: now_to_the_second(),
        })
    }
}

/// What must happen to a key, and what carrying it out needs.
struct Decided {
    /// The core's decision.
    plan: Plan,
    /// For [`Plan::Adopt`]: the record that may be sealed as it is.
    adoption: Option<Adoption>,
}

/// Asks the core what must happen to `key`: from the caches first, so that a key with nothing
/// to do costs no API call; the Secret is read only when the cache cannot be acted on (see
/// [`decision::confirm_on_fresh_read`]). A record is adopted (sealed as it is) only with the
/// credentials the status published ([`adoptable`]); anything else an editor put there is
/// repaired instead.
async fn decide(key: &ApiKey, ctx: &Context, read: &Read<'_>) -> Result<Decided> {
    let decide = |secret: &SecretState| {
        decision::decide(
            key,
            read.active.clone(),
            secret,
            read.status_client_id,
            &read.policy,
            read.now.0,
        )
    };
    let mut plan = decide(&read.cached);
    let mut fresh = None;
    if decision::confirm_on_fresh_read(key, &plan, &read.cached) {
        fresh = read.secrets.get_opt(&key.secret_name()).await?;
        let found = fresh
            .as_ref()
            .map(|s| ManagedSecret::read(s, &ctx.record_key));
        plan = decide(&SecretState::of(key, found));
    }
    let mut adoption = None;
    if let Plan::Adopt {
        replaces,
        generation,
    } = &plan
    {
        adoption = adoptable(key, ctx, fresh.as_ref()).await?;
        if adoption.is_none() {
            plan = Plan::Issue {
                reason: IssueReason::SecretAltered,
                client_id: read.status_client_id.keep(),
                replaces: replaces.clone(),
                generation: *generation,
                previous: None,
            };
        }
    }
    Ok(Decided { plan, adoption })
}

/// Carries out what was decided: the Secret written if the plan calls for it ([`writes`]), then
/// the status brought in line with what became of it.
async fn carry_out(
    key: &ApiKey,
    ctx: &Context,
    read: &Read<'_>,
    Decided { plan, adoption }: Decided,
) -> Result<(Action, &'static str)> {
    let finishing = Finishing {
        now: &read.now,
        plan: &plan,
        policy: &read.policy,
    };
    let secrets = &read.secrets;
    let now = &read.now;
    let written = match &plan {
        Plan::Duplicate { active } => {
            return finish(key, ctx, &Outcome::Duplicate(active), None, &finishing).await;
        }
        Plan::Conflict => {
            return finish(
                key,
                ctx,
                &Outcome::Conflict,
                Some(CONFLICT_RECHECK),
                &finishing,
            )
            .await;
        }
        Plan::InSync(managed) => return serve(key, ctx, managed, &finishing).await,
        Plan::Issue {
            reason,
            client_id,
            replaces,
            generation,
            previous,
        } => {
            let new = New {
                reason: *reason,
                client_id: client_id.clone(),
                generation: *generation,
                previous: previous.clone(),
            };
            writes::issue(key, ctx, secrets, new, replaces.clone(), now).await?
        }
        Plan::Adopt {
            replaces,
            generation,
        } => match adoption {
            Some(adoption) => {
                writes::adopt(
                    key,
                    ctx,
                    secrets,
                    adoption,
                    replaces.clone(),
                    *generation,
                    now,
                )
                .await?
            }
            None => Written::Stale,
        },
        Plan::Relabel { replaces } => writes::relabel(key, ctx, secrets, replaces.clone()).await?,
    };
    match written {
        Written::Done(secret) => {
            let managed = ManagedSecret::read(&secret, &ctx.record_key);
            serve(key, ctx, &managed, &finishing).await
        }
        Written::Stale => Ok((Action::requeue(STALE_RETRY), "stale")),
        Written::Gone => {
            debug!(apikey = %ObjectRef::from_obj(key), "the ApiKey is gone or being deleted; nothing written");
            Ok((Action::await_change(), "gone"))
        }
        Written::NamespaceTerminating => {
            debug!(apikey = %ObjectRef::from_obj(key), "the namespace is being deleted; nothing written");
            Ok((Action::await_change(), "namespace_terminating"))
        }
        Written::Rejected(why) => {
            let finished = finish(
                key,
                ctx,
                &Outcome::Rejected(&why),
                Some(BACKOFF_MAX),
                &finishing,
            )
            .await?;
            Ok((finished.0, "rejected"))
        }
    }
}

/// How far the client id `key`'s status publishes can be trusted: sealed for this very ApiKey
/// with the operator's current record key (see [`crate::core::record`]), else held by no other ApiKey
/// the operator sees nor by another key's Secret (a status from a release before seals, or under
/// a lost key; the scan costs O(keys), and runs only for keys not sealed yet).
fn status_client_id<'k>(key: &'k ApiKey, ctx: &Context) -> StatusClientId<'k> {
    let Some(status) = key.status.as_ref() else {
        return StatusClientId::Untrusted;
    };
    let (Some(client_id), Some(uid)) = (status.client_id.as_deref(), key.metadata.uid.as_deref())
    else {
        return StatusClientId::Untrusted;
    };
    let generation = status
        .secret_generation
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(0);
    if ctx
        .record_key
        .check_status(uid, client_id, generation, status.seal.as_deref())
        == SealCheck::Valid
    {
        return StatusClientId::Sealed {
            id: client_id,
            generation,
        };
    }
    let held_by_another_key = ctx.keys.state().iter().any(|other| {
        other.metadata.uid.as_deref() != Some(uid)
            && other.status.as_ref().and_then(|s| s.client_id.as_deref()) == Some(client_id)
    });
    if held_by_another_key || ctx.secrets.holds_client_id_of_another(client_id, uid) {
        StatusClientId::Untrusted
    } else {
        StatusClientId::Unique(client_id)
    }
}

/// What every way of finishing a reconcile shares.
struct Finishing<'a> {
    /// The time of this reconcile, to the second.
    now: &'a Time,
    /// What was decided.
    plan: &'a Plan,
    /// The key's rotation policy.
    policy: &'a Policy,
}

/// Finishes a key whose Secret holds `managed`, its own and sealed: Ready, or Expired; restarts
/// the workloads of `spec.rolloutRestart` that have not been restarted for this secret yet.
async fn serve(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let outcome = if finishing.policy.is_expired(finishing.now.0) {
        Outcome::Expired(managed)
    } else {
        Outcome::Ready(managed)
    };
    let (condition, recheck) = restart_workloads(key, ctx, managed, finishing.now).await?;
    finish_with(key, ctx, &outcome, recheck, condition, finishing).await
}

/// Restarts the workloads of `spec.rolloutRestart` that have not been restarted for the secret
/// `managed` holds (see [`crate::operator::rollout`]): the RolloutRestart condition to publish, and when to
/// look again if a workload is missing or may not be restarted.
async fn restart_workloads(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    now: &Time,
) -> Result<(Option<Condition>, Option<Duration>)> {
    if key.spec.rollout_restart.is_empty() {
        return Ok((None, None));
    }
    // A workload that cannot be reached now must not hold back the status (the new hash, the
    // grace period): the condition says so, and the workloads are looked at again soon; the
    // bookkeeping on each workload makes the retry restart nothing twice.
    let reports = match rollout::restart_targets(
        &ctx.client,
        key,
        managed.generation,
        managed.rotated_at.as_ref(),
    )
    .await
    {
        Ok(reports) => reports,
        Err(e) => {
            warn!(apikey = %ObjectRef::from_obj(key), error = %e, "rollout restarts failed; retrying");
            let condition = rollout_retrying(key, managed.generation, &e, now);
            return Ok((Some(condition), Some(ROLLOUT_RETRY)));
        }
    };
    for report in reports
        .iter()
        .filter(|r| r.outcome == rollout::TargetOutcome::Restarted)
    {
        let kind = format!("{:?}", report.target.kind);
        let workload = format!("{kind}/{}", report.target.name);
        ctx.metrics.rollout_restarted(&kind);
        publish(
            ctx,
            key,
            EventType::Normal,
            "RolloutRestarted",
            "RestartWorkload",
            &format!(
                "restarted {workload} for client secret generation {}",
                managed.generation
            ),
            Some(&format!(
                "restart-{}-{}-{}",
                managed.generation,
                kind.to_lowercase(),
                report.target.name
            )),
        )
        .await;
    }
    let condition = rollout::condition(key, &reports, managed.generation, now);
    Ok((condition, rollout::recheck_after(&reports)))
}

/// The RolloutRestart condition while the workloads cannot be reached: False, reason
/// `Retrying`, with the error (`lastTransitionTime` kept while it stays the same).
fn rollout_retrying(key: &ApiKey, generation: u64, error: &Error, now: &Time) -> Condition {
    let message = format!(
        "could not restart the workloads for client secret generation {generation} yet ({error}); retrying every {} s",
        ROLLOUT_RETRY.as_secs()
    );
    status::condition(
        key,
        crate::core::crd::ROLLOUT_RESTART_CONDITION,
        false,
        "Retrying",
        message,
        now,
    )
}

/// [`finish_with`] for outcomes without a Secret of the key's to serve: the RolloutRestart
/// condition stays as it was.
async fn finish(
    key: &ApiKey,
    ctx: &Context,
    outcome: &Outcome<'_>,
    recheck: Option<Duration>,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let kept = key
        .condition(crate::core::crd::ROLLOUT_RESTART_CONDITION)
        .filter(|_| !key.spec.rollout_restart.is_empty())
        .cloned();
    finish_with(key, ctx, outcome, recheck, kept, finishing).await
}

/// Brings the status in line with `outcome` (and the RolloutRestart `condition`, if any): first
/// the event of a rotation the status has not shown yet (named after the rotation, so that it is
/// written once however often this runs, also after a crash between the Secret's write and the
/// status's), then the status itself, then a Warning event when the key stops being Ready for a
/// new reason, or its workloads cannot be restarted for a new reason, and an event when a grace
/// period ended. The key is looked at again after `recheck`, or when its next rotation, the end of
/// its grace period or its expiry comes, whichever is first.
async fn finish_with(
    key: &ApiKey,
    ctx: &Context,
    outcome: &Outcome<'_>,
    recheck: Option<Duration>,
    condition: Option<Condition>,
    finishing: &Finishing<'_>,
) -> Result<(Action, &'static str)> {
    let Finishing { now, plan, policy } = *finishing;
    let mut desired = status::desired(key, outcome, now, &ctx.record_key, policy);
    desired.conditions.extend(condition);
    let wake = rotation::wake_after(
        now.0,
        [
            desired.next_rotation_at.as_ref().map(|Time(t)| *t),
            desired
                .previous_secret_expires_at
                .as_ref()
                .map(|Time(t)| *t),
            policy.expires_at,
        ]
        .into_iter()
        .flatten(),
    );
    let action = match [recheck, wake].into_iter().flatten().min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    };
    if key.status.as_ref() == Some(&desired) {
        log_reconciled(key, plan);
        return Ok((action, plan.name()));
    }
    // named after the rotation: announcing it again (an expired key shows no hash to tell
    // that it was) is a no-op
    if let Outcome::Ready(managed) | Outcome::Expired(managed) = outcome {
        announce_rotation(key, ctx, managed, &desired).await;
    }
    match writes::patch_status(key, ctx, &desired).await? {
        StatusWrite::Done => {}
        StatusWrite::Stale => {
            // Our copy of the ApiKey was stale; look again once the watch has delivered the news.
            debug!(apikey = %ObjectRef::from_obj(key), "status changed meanwhile; retrying");
            return Ok((Action::requeue(STALE_RETRY), "stale"));
        }
        StatusWrite::Gone => return Ok((Action::await_change(), "gone")),
    }
    ctx.wrote_status(key, key.resource_version());
    let current = key.status.clone().unwrap_or_default();
    for condition in desired.conditions.iter().filter(|c| c.status == "False") {
        let before = current
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_);
        if before.map(|c| c.reason.as_str()) == Some(condition.reason.as_str()) {
            continue;
        }
        warn!(apikey = %ObjectRef::from_obj(key), condition = %condition.type_, reason = %condition.reason, "{}", condition.message);
        publish(
            ctx,
            key,
            EventType::Warning,
            &condition.reason,
            "WaitForChange",
            &condition.message,
            None,
        )
        .await;
    }
    if let Some(ended) = rotation::grace_ended(&current, &desired) {
        ctx.metrics.grace_period_ended(ended.how);
        info!(apikey = %ObjectRef::from_obj(key), generation = ended.generation, how = ended.how, "{}", ended.message);
        publish(
            ctx,
            key,
            EventType::Normal,
            "GracePeriodEnded",
            "RevokePreviousSecret",
            &ended.message,
            Some(&format!("grace-{}", ended.generation)),
        )
        .await;
    }
    log_reconciled(key, plan);
    Ok((action, plan.name()))
}

fn log_reconciled(key: &ApiKey, plan: &Plan) {
    debug!(
        apikey = %ObjectRef::from_obj(key),
        resource_version = key.resource_version().unwrap_or_default(),
        outcome = plan.name(),
        "reconciled"
    );
}

/// Publishes the event of the rotation `managed` records, if the status does not show it yet, with
/// the end of the previous secret's grace period as `desired` publishes it. Records that are not
/// rotations (re-sealed ones) have none.
async fn announce_rotation(
    key: &ApiKey,
    ctx: &Context,
    managed: &ManagedSecret,
    desired: &ApiKeyStatus,
) {
    let shown = key.status.as_ref().and_then(|s| s.secret_hash.as_ref());
    if shown.is_some() && shown == managed.hash.as_ref() {
        return;
    }
    let (Some(reason), Some(rotation)) = (
        managed.reason.as_deref().and_then(IssueReason::from_label),
        managed.rotation_id.as_deref(),
    ) else {
        return;
    };
    publish(
        ctx,
        key,
        EventType::Normal,
        reason.event_reason(),
        reason.event_action(),
        &rotation::describe_rotation(reason, &managed.name, desired),
        Some(rotation),
    )
    .await;
}

fn now_to_the_second() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}
