//! The journalled executor. Progress lives in `.status.lastTransition.steps`, never only in memory:
//! each step is recorded as started (attempt counted) before it runs and as finished after, every
//! status write carries the `resourceVersion` it was computed from (a concurrent writer makes it
//! fail with 409 and we re-observe instead of overwriting), and a restarted controller resumes at the
//! first step without `finishedAt`. Steps are idempotent, so re-running a step whose "finished"
//! record was lost to a crash is harmless: one promotion, one epoch increment, one DNS change.

use std::time::Duration;

use jiff::Timestamp;
use kube::{
    api::{Patch, PatchParams},
    runtime::controller::Action,
    Api, ResourceExt,
};
use tracing::{info, warn};

use super::{
    steps::{self, StepCtx},
    Outcome, Step,
};
use crate::{
    coord::{etcd::Witness, Swap},
    crd::{
        conditions::reasons, DisasterRecoveryPair, DisasterRecoveryPairStatus, Phase, StepRecord, Transition,
    },
    reconcile::{
        decide::{set_condition, EventNote},
        guard::Trigger,
        Context, Error,
    },
};

/// Writes `status` with `resourceVersion` as precondition; returns the updated object.
pub async fn write_status(
    ctx: &Context,
    drp: &DisasterRecoveryPair,
    status: &DisasterRecoveryPairStatus,
) -> Result<DisasterRecoveryPair, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    let rv = drp.resource_version().ok_or(Error::MissingMetadata(".metadata.resourceVersion"))?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({ "metadata": { "resourceVersion": rv }, "status": status });
    api.patch_status(&drp.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
        match &e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict,
            _ => Error::UpdateStatus(crate::secrets::short_api_error(&e)),
        }
    })
}

async fn witness(drp: &DisasterRecoveryPair) -> Result<Option<Witness>, String> {
    let Some(etcd) = drp.spec.coordination.as_ref().and_then(|c| c.etcd.as_ref()) else { return Ok(None) };
    let ns = drp.namespace().unwrap_or_default();
    Witness::connect(&etcd.endpoints, &etcd.prefix, &ns, &drp.name_any(), Duration::from_secs(2))
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Starts a failover: takes the epoch (etcd swap when a witness is configured), then writes the
/// journal with `TakeEpoch` done. Losing the swap, or a 409 on the write, starts nothing.
pub async fn start(
    drp: &DisasterRecoveryPair,
    trigger: Trigger,
    from: &str,
    to: &str,
    ctx: &Context,
) -> Result<Option<DisasterRecoveryPair>, Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    let began = Timestamp::now();
    let epoch = st.epoch + 1;
    let id = format!("{}/{epoch}", drp.uid().unwrap_or_default());
    let mut note = "epoch taken by a status write with a resourceVersion precondition".to_string();
    match witness(drp).await {
        Err(e) => {
            refuse(ctx, drp, &mut st, reasons::WITNESS_UNAVAILABLE, &format!("cannot take the epoch: {e}"))
                .await?;
            return Ok(None);
        }
        Ok(Some(mut w)) => match w.swap(st.epoch, &ctx.identity, &id).await {
            Ok(Swap::Won) => note = format!("etcd epoch {} → {epoch}", st.epoch),
            Ok(Swap::Lost { epoch: held, holder }) => {
                let msg = format!(
                    "epoch {held} is held by {holder} in etcd (ours was {}): another controller acted",
                    st.epoch
                );
                refuse(ctx, drp, &mut st, reasons::LOST_EPOCH_SWAP, &msg).await?;
                return Ok(None);
            }
            Err(e) => {
                refuse(
                    ctx,
                    drp,
                    &mut st,
                    reasons::WITNESS_UNAVAILABLE,
                    &format!("cannot take the epoch: {e}"),
                )
                .await?;
                return Ok(None);
            }
        },
        Ok(None) => {}
    }
    let started_at = st
        .sites
        .iter()
        .find(|s| s.name == from)
        .and_then(|s| s.failing_since.clone())
        .unwrap_or_else(|| began.to_string());
    let mut steps: Vec<StepRecord> =
        Step::FAILOVER.iter().map(|s| StepRecord { name: s.name().into(), ..Default::default() }).collect();
    steps[0] = StepRecord {
        name: Step::TakeEpoch.name().into(),
        started_at: Some(began.to_string()),
        finished_at: Some(Timestamp::now().to_string()),
        outcome: Some("Succeeded".into()),
        message: Some(note),
        attempts: 1,
    };
    st.epoch = epoch;
    st.phase = Some(Phase::FailingOver);
    st.target_primary = Some(to.into());
    st.last_transition = Some(Transition {
        trigger: trigger.as_str().into(),
        from: from.into(),
        to: to.into(),
        epoch,
        id,
        holder: ctx.identity.clone(),
        started_at,
        steps,
        ..Default::default()
    });
    set_condition(
        &mut st.conditions,
        crate::crd::conditions::FAILOVER_BLOCKED,
        "False",
        reasons::FAILING_OVER,
        &format!("failing over from {from} to {to} (epoch {epoch})"),
        drp.metadata.generation,
        Timestamp::now(),
    );
    let updated = write_status(ctx, drp, &st).await?;
    ctx.publish(
        drp,
        EventNote {
            warning: true,
            reason: "FailoverStarted".into(),
            note: format!("{} failover from {from} to {to}, epoch {epoch}", trigger.as_str()),
        },
    )
    .await;
    info!(from, to, epoch, trigger = trigger.as_str(), "failover started");
    Ok(Some(updated))
}

async fn refuse(
    ctx: &Context,
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    reason: &'static str,
    msg: &str,
) -> Result<(), Error> {
    set_condition(
        &mut st.conditions,
        crate::crd::conditions::FAILOVER_BLOCKED,
        "True",
        reason,
        msg,
        drp.metadata.generation,
        Timestamp::now(),
    );
    write_status(ctx, drp, st).await?;
    ctx.publish(drp, EventNote { warning: true, reason: reason.into(), note: msg.into() }).await;
    warn!(reason, msg, "failover not started");
    Ok(())
}

/// Runs the journal of `drp`'s transition from its first unfinished step to the end.
pub async fn run(mut drp: DisasterRecoveryPair, ctx: &Context) -> Result<Action, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    let pair = format!("{ns}/{}", drp.name_any());
    loop {
        let st = drp.status.clone().unwrap_or_default();
        let Some(t) = st.last_transition.clone() else { return Ok(Action::await_change()) };
        let Some(idx) = t.steps.iter().position(|s| s.finished_at.is_none()) else {
            finish(&mut drp, ctx).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        let Some(step) = Step::from_name(&t.steps[idx].name) else {
            return Err(Error::Journal(format!(
                "unknown step {:?} in status.lastTransition.steps",
                t.steps[idx].name
            )));
        };

        // A stale leader's late step is refused: the witness must still hold our epoch.
        if let Ok(Some(mut w)) = witness(&drp).await {
            if let Ok((held, holder, id)) = w.epoch().await {
                if held != t.epoch || id != t.id {
                    let msg = format!(
                        "etcd holds epoch {held} ({holder}), not ours ({}): stopping before {step}",
                        t.epoch
                    );
                    let mut st = st.clone();
                    st.phase = Some(Phase::Failed);
                    set_condition(
                        &mut st.conditions,
                        crate::crd::conditions::FAILOVER_BLOCKED,
                        "True",
                        reasons::LOST_EPOCH_SWAP,
                        &msg,
                        drp.metadata.generation,
                        Timestamp::now(),
                    );
                    write_status(ctx, &drp, &st).await?;
                    ctx.publish(
                        &drp,
                        EventNote { warning: true, reason: reasons::LOST_EPOCH_SWAP.into(), note: msg },
                    )
                    .await;
                    return Ok(Action::await_change());
                }
            }
        }

        // Record "started" before acting.
        let mut st = st;
        let attempts = t.steps[idx].attempts;
        {
            let rec = &mut st.last_transition.as_mut().map(|t| &mut t.steps[idx]);
            if let Some(rec) = rec {
                rec.started_at.get_or_insert_with(|| Timestamp::now().to_string());
                rec.attempts += 1;
            }
        }
        drp = write_status(ctx, &drp, &st).await?;
        crash_point(step, "before");

        let spec = drp.spec.clone();
        let last_primary_lsn = st
            .sites
            .iter()
            .find(|s| s.name == t.from)
            .and_then(|s| s.current_lsn.as_deref())
            .and_then(|l| l.parse().ok());
        let cx = StepCtx {
            client: &ctx.client,
            http: &ctx.http,
            ns: &ns,
            pair: &pair,
            spec: &spec,
            from: &t.from,
            to: &t.to,
            epoch: t.epoch,
            timeout: spec.failover.probe_timeout.into(),
            attempts,
            last_primary_lsn,
        };
        let began = std::time::Instant::now();
        let result = steps::run(step, &cx).await;
        let took = began.elapsed();
        crash_point(step, "after");
        let mut st = drp.status.clone().unwrap_or_default();
        let Some(tr) = st.last_transition.as_mut() else {
            return Err(Error::Journal("transition vanished".into()));
        };
        match result {
            Ok(done) => {
                let (outcome, msg) = match done.outcome {
                    Outcome::Succeeded(m) => ("Succeeded", m),
                    Outcome::Skipped(m) => ("Skipped", m),
                };
                if done.lost_wal_bytes.is_some() {
                    tr.lost_wal_bytes = done.lost_wal_bytes;
                }
                let rec = &mut tr.steps[idx];
                rec.finished_at = Some(Timestamp::now().to_string());
                rec.outcome = Some(outcome.into());
                rec.message = Some(msg.clone());
                drp = write_status(ctx, &drp, &st).await?;
                info!(
                    step = step.name(),
                    outcome,
                    took_ms = took.as_millis() as u64,
                    epoch = t.epoch,
                    "{msg}"
                );
                ctx.publish(
                    &drp,
                    EventNote {
                        warning: false,
                        reason: step.name().into(),
                        note: format!("{outcome} in {} ms: {msg}", took.as_millis()),
                    },
                )
                .await;
            }
            Err(msg) => {
                let rec = &mut tr.steps[idx];
                rec.message = Some(msg.clone());
                drp = write_status(ctx, &drp, &st).await?;
                let backoff = backoff(attempts + 1);
                warn!(
                    step = step.name(),
                    attempt = attempts + 1,
                    retry_in_ms = backoff.as_millis() as u64,
                    "{msg}"
                );
                ctx.publish(
                    &drp,
                    EventNote {
                        warning: true,
                        reason: format!("{}Failed", step.name()),
                        note: format!("attempt {}: {msg}; retrying in {backoff:?}", attempts + 1),
                    },
                )
                .await;
                return Ok(Action::requeue(backoff));
            }
        }
    }
}

/// Test hook for the crash-resume tests: with `UNDERSTUDY_CRASH_POINT=<Step>:before` the process
/// dies right after journalling the step as started; with `<Step>:after`, right after the step's
/// side effect and before journalling it as finished (the worst moment). Unset in production.
fn crash_point(step: Step, when: &str) {
    if let Ok(v) = std::env::var("UNDERSTUDY_CRASH_POINT") {
        if v == format!("{}:{when}", step.name()) {
            eprintln!("UNDERSTUDY_CRASH_POINT {v}: exiting as if killed");
            std::process::exit(137);
        }
    }
}

/// Retry delay after `attempts` failures: 200 ms doubling to 10 s.
pub fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
    Duration::from_millis(200u64.saturating_mul(1 << exp)).min(Duration::from_secs(10))
}

async fn finish(drp: &mut DisasterRecoveryPair, ctx: &Context) -> Result<(), Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    let Some(t) = st.last_transition.as_mut() else { return Ok(()) };
    let now = Timestamp::now();
    let end = t.steps.last().and_then(|s| s.finished_at.clone()).unwrap_or_else(|| now.to_string());
    t.finished_at = Some(end.clone());
    if let (Ok(a), Ok(b)) = (t.started_at.parse::<Timestamp>(), end.parse::<Timestamp>()) {
        t.rto_seconds = Some((b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0);
    }
    let (from, to, epoch, rto, lost) =
        (t.from.clone(), t.to.clone(), t.epoch, t.rto_seconds, t.lost_wal_bytes);
    st.current_primary = Some(to.clone());
    st.target_primary = None;
    // Probes decide Healthy or Degraded on the next round; the old primary is likely still down.
    st.phase = Some(Phase::Degraded);
    // The counters of the old primary belong to its time as primary.
    for s in st.sites.iter_mut() {
        if s.name == from {
            s.consecutive_failures = 0;
            s.failing_since = None;
        }
    }
    *drp = write_status(ctx, drp, &st).await?;
    let note = format!(
        "{to} serves (epoch {epoch}); RTO {}s, lost WAL {} bytes",
        rto.map(|r| format!("{r:.3}")).unwrap_or_else(|| "?".into()),
        lost.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into())
    );
    info!(%note, "failover complete");
    ctx.publish(drp, EventNote { warning: false, reason: "FailoverComplete".into(), note }).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(6), Duration::from_millis(6400));
        assert_eq!(backoff(7), Duration::from_secs(10));
        assert_eq!(backoff(100), Duration::from_secs(10));
    }
}
