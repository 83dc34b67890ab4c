//! Act: the side effects a round may have, each behind a decision already made. A transition in
//! progress goes straight to the journalled executor; a steady round tends the former primary's
//! rejoin and the leader key, reads the witness and runs the readiness checks every
//! `READINESS_EVERY` (or on a dry-run), and finally starts the one transition the round decided.

use jiff::Timestamp;
use kube::{runtime::controller::Action, Api};

use super::{
    commands, guard, keeper_tend, readiness, record::Round, rejoin, site_lock, Pair, READINESS_EVERY,
};
use crate::{
    context::{Context, Error},
    crd::{conditions, ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus, DryRun, Trigger},
    events::{upsert, EventNote},
    failover,
};

/// Whether the round goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Go on to the guard and the status write.
    Continue,
    /// The status was rewritten under this round (the witness's epoch adopted): start over.
    Again,
}

/// Whether `drp` has a transition that has not finished.
pub fn in_transition(drp: &DisasterRecoveryPair) -> bool {
    drp.status.as_ref().and_then(|s| s.last_transition.as_ref()).is_some_and(|t| t.finished_at.is_none())
}

/// The pair to act on. Steady pairs act on the watch cache (a read per probe round would cost a
/// thousand API reads a second at a thousand pairs). A stale copy makes the status write fail with
/// 409; the next round then reads the pair from the API server, once — a watch that lags (an API
/// server catching up after a thousand pairs were created) must not turn every round of every
/// pair into a 409 against the same stale copy, 50 ms apart. A pair mid-transition reads the latest
/// journal first: transitions are rare, and every step decision should start from the last write.
/// `None`: gone.
pub async fn latest(
    drp: std::sync::Arc<DisasterRecoveryPair>,
    pair: &Pair,
    ctx: &Context,
) -> Result<Option<DisasterRecoveryPair>, Error> {
    let stale = ctx.memory.with(&pair.key, |m| std::mem::take(&mut m.stale));
    if !in_transition(&drp) && !stale {
        return Ok(Some((*drp).clone()));
    }
    let api: Api<DisasterRecoveryPair> = Api::namespaced(ctx.client.clone(), &pair.ns);
    let latest = api
        .get_opt(&pair.name)
        .await
        .map_err(|e| Error::UpdateStatus(crate::secrets::short_api_error(&e)))?;
    if latest.is_none() {
        ctx.keepers.stop(&pair.key);
    }
    Ok(latest)
}

/// A transition runs: the commands' refusals are recorded (a command arriving now is refused
/// with a Warning, not left waiting) and the executor goes on from the first unfinished step.
pub async fn continue_transition(
    drp: DisasterRecoveryPair,
    cmds: &commands::Commands,
    ctx: &Context,
) -> Result<Action, Error> {
    let drp = if cmds.handled.is_empty() {
        drp
    } else {
        let mut st = drp.status.clone().unwrap_or_default();
        commands::record(&mut st, &cmds.handled);
        super::record::last_command(&mut st, cmds, drp.metadata.generation);
        crate::store::write_status(ctx, &drp, &st).await?
    };
    super::publish_all(ctx, &drp, cmds.events.clone()).await;
    failover::executor::run(drp, ctx).await
}

/// The round's side effects before the guard: the former primary's rejoin, the leader key's
/// keeper, and, when due, the witness (its epoch adopted when ahead; this site's registration)
/// and the readiness checks with a dry-run's plan.
pub async fn round_effects(
    drp: &DisasterRecoveryPair,
    pair: &Pair,
    cmds: &commands::Commands,
    round: &mut Round,
    ctx: &Context,
    now: Timestamp,
) -> Result<Next, Error> {
    // A controller whose site is not in the spec does nothing for the pair (SpecValid says why).
    if ctx.site.as_deref().is_some_and(|s| drp.spec.site(s).is_err()) {
        return Ok(Next::Continue);
    }
    // The witness first: a round decides nothing from a status the witness has overtaken.
    if mirror_witness(drp, pair, &mut round.status, ctx).await? == Next::Again {
        return Ok(Next::Again);
    }
    let attempts = |st: &DisasterRecoveryPairStatus| st.former_primary.as_ref().map(|f| f.rejoin_attempts);
    let before = attempts(&round.status);
    round.events.extend(rejoin::step(drp, &mut round.status, ctx).await);
    if attempts(&round.status) != before {
        // A claimed rejoin hook run wrote the status itself: this round's copy is stale, and the
        // effects below would be done again after its write met a 409. Start over on the new one.
        return Ok(Next::Again);
    }
    keeper_tend::tend(drp, &pair.ns, &pair.name, &mut round.status, &mut round.events, ctx, now).await;
    round.events.extend(super::local_objects::converge(drp, &pair.key, &mut round.status, ctx).await);
    round.events.extend(super::activation::converge(drp, &pair.key, &mut round.status, ctx).await);
    round.events.extend(super::sync_rep::converge(drp, &pair.key, &mut round.status, ctx, now).await);
    tend_drill(drp, pair, cmds, round, ctx, now).await;

    let dry_run = match &cmds.run {
        Some(commands::Command::DryRun { token }) => Some(token.clone()),
        _ => None,
    };
    if dry_run.is_some() {
        // A dry run is asked for now: it reads every Secret afresh.
        crate::secrets::Secrets::new(ctx.client.clone(), &pair.ns).invalidate_all();
    }
    if !ctx.memory.readiness_due(&pair.key, READINESS_EVERY) && dry_run.is_none() {
        return Ok(Next::Continue);
    }
    // One witness connection and one epoch read serve the whole round. The witness is the
    // authority on the epoch: a record ahead of this status (a pair created again under an old
    // name) is adopted before anything is decided from the stale one.
    let (mut witness, epoch) = match crate::coord::witness(drp, &ctx.client).await {
        Ok(Some(mut w)) => {
            let epoch = w.epoch().await.map_err(|e| e.to_string());
            (Some(w), Some(epoch))
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(Err(e.to_string()))),
    };
    if let Some(Ok(record)) = &epoch {
        if failover::executor::adopt_witness_epoch(ctx, drp, &mut round.status, record, None).await? {
            return Ok(Next::Again);
        }
    }
    if let Some(w) = witness.as_mut() {
        round.events.extend(site_lock::check(drp, ctx, w).await);
    }
    let (to, mut plan, blockers) = readiness::assess(drp, &round.status, epoch.as_ref(), ctx).await;
    let keyed = ctx.site.is_some() && epoch.is_some();
    let risks = crate::objectives::at_risk(&drp.spec, &round.status, keyed);
    if drp.spec.objectives.is_some() {
        plan.push(if risks.is_empty() {
            "Objectives: a failover now could meet spec.objectives".to_string()
        } else {
            format!("Objectives at risk: {}", risks.join("; "))
        });
    }
    ctx.metrics
        .objectives_at_risk
        .get_or_create(&crate::metrics::PairLabels { pair: pair.key.clone() })
        .set(i64::from(!risks.is_empty()));
    record_readiness(drp, &mut round.status, &mut round.events, &to, &blockers, &risks, now);
    if let Some(token) = dry_run {
        round.events.push(EventNote {
            warning: !blockers.is_empty(),
            reason: "DryRun".into(),
            note: format!(
                "dry-run {token}: {} blockers{}",
                blockers.len(),
                if blockers.is_empty() { String::new() } else { format!(": {}", blockers.join("; ")) }
            ),
        });
        round.status.dry_run = Some(DryRun {
            token,
            at: now.to_string(),
            to,
            steps: plan,
            lag_bytes: round.status.replication_lag_bytes,
            blockers,
        });
    }
    Ok(Next::Continue)
}

/// Advances the pair's drill (`drill::tend`): a drill asked for this round is claimed in the witness
/// first (with a controller per site, the same token on both copies runs once), and a finished
/// drill is counted in the metrics once its report is stored (`count_finished_drill`).
async fn tend_drill(
    drp: &DisasterRecoveryPair,
    pair: &Pair,
    cmds: &commands::Commands,
    round: &mut Round,
    ctx: &Context,
    now: Timestamp,
) {
    let mut token = match &cmds.run {
        Some(commands::Command::Drill { token }) => Some(token.as_str()),
        _ => None,
    };
    if let (Some(cmd), Some(_)) = (&cmds.run, token) {
        if let Err(note) = claim(drp, cmds, cmd, ctx).await {
            tracing::warn!(%note, "drill not run here");
            round.events.push(EventNote { warning: true, reason: "CommandHandledElsewhere".into(), note });
            token = None;
        }
    }
    let paused = kube::ResourceExt::annotations(drp).get(crate::crd::annotations::PAUSED).map(String::as_str)
        == Some("true")
        || ctx.site.as_deref().is_some_and(|here| {
            ctx.views.state(&pair.key).is_some_and(|v| v.paused.iter().any(|s| s != here))
        });
    let ask = super::drill::Ask { token, paused, site: ctx.site.as_deref() };
    round.drill = super::drill::tend(&drp.spec, &mut round.status, &ask, now, &mut round.events);
}

/// Counts a drill that finished in this round, once its report is stored: `before` is the stored
/// status the round started from, `after` the status just written. Counted after the write, not
/// when the round decides, so a round that meets a 409 and runs again does not count it twice.
pub(super) fn count_finished_drill(
    ctx: &Context,
    pair: &Pair,
    before: Option<&DisasterRecoveryPairStatus>,
    after: &DisasterRecoveryPairStatus,
) {
    let key = |r: &crate::crd::DrillReport| (r.token.clone(), r.finished_at.clone());
    let was = before.and_then(|s| s.drills.first()).map(key);
    let Some(r) = after.drills.first().filter(|r| Some(key(r)) != was) else { return };
    let labels = crate::metrics::VerdictLabels {
        pair: pair.key.clone(),
        objective: "drill".into(),
        verdict: r.outcome.as_str().into(),
    };
    ctx.metrics.drills.get_or_create(&labels).inc();
    if let Some(held) = r.legs.iter().filter_map(|l| l.writes_held_seconds).reduce(f64::max) {
        ctx.metrics
            .drill_writes_held
            .get_or_create(&crate::metrics::PairLabels { pair: pair.key.clone() })
            .set(held);
    }
}

/// Mirrors the witness into this cluster's status: the pair's view (`coord::view`) holds the epoch
/// record the witness last answered; a record ahead of the status — a transition the other site's
/// controller ran in its own cluster, maybe while this one's API server or controller was down — is
/// adopted (epoch, current primary, the former primary to rejoin) and the round starts over on it.
/// A controller's first round of a pair waits up to `probeTimeout` for the view's first answer:
/// a controller that comes back on a site that lost the epoch reads that before anything else.
async fn mirror_witness(
    drp: &DisasterRecoveryPair,
    pair: &Pair,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Result<Next, Error> {
    let Some(etcd) = drp.spec.coordination.as_ref().and_then(|c| c.etcd.as_ref()) else {
        return Ok(Next::Continue);
    };
    // The access errors are the readiness checks' to report (they name the field).
    let secrets = crate::secrets::Secrets::new(ctx.client.clone(), &pair.ns);
    let Ok(access) = crate::coord::witness_access(etcd, &secrets).await else { return Ok(Next::Continue) };
    let timeout = drp.spec.failover.probe_timeout();
    let cfg = crate::coord::view::Config {
        endpoints: etcd.endpoints.clone(),
        access,
        prefix: etcd.prefix.clone(),
        namespace: pair.ns.clone(),
        name: pair.name.clone(),
        every: drp.spec.failover.probe_interval.into(),
        timeout,
        publish: ctx
            .site
            .as_ref()
            .filter(|s| drp.spec.site(s).is_ok())
            .and_then(|s| serde_json::to_string(&drp.spec).ok().map(|j| (s.clone(), j))),
        paused: kube::ResourceExt::annotations(drp).get(crate::crd::annotations::PAUSED).map(String::as_str)
            == Some("true"),
    };
    let mut view = ctx.views.ensure(&pair.key, cfg);
    if view.record.is_none() && view.error.is_none() {
        view = ctx.views.first_answer(&pair.key, timeout).await;
    }
    let Some((record, _)) = &view.record else { return Ok(Next::Continue) };
    if failover::executor::adopt_witness_epoch(ctx, drp, st, record, view.journal.as_deref()).await? {
        return Ok(Next::Again);
    }
    Ok(Next::Continue)
}

/// The `ReadyForFailover` condition from the readiness checks' blockers.
fn record_readiness(
    drp: &DisasterRecoveryPair,
    status: &mut DisasterRecoveryPairStatus,
    events: &mut Vec<EventNote>,
    to: &str,
    blockers: &[String],
    risks: &[String],
    now: Timestamp,
) {
    // Whether a failover can run decides the status; objectives it could not meet are named in
    // the message (reason `ObjectivesAtRisk` when nothing else blocks it).
    let (st, reason, mut msg) = match (blockers.is_empty(), risks.is_empty()) {
        (true, true) => (ConditionStatus::True, "Ready", format!("a failover to {to} could run now")),
        (true, false) => (
            ConditionStatus::True,
            conditions::reasons::OBJECTIVES_AT_RISK,
            format!("a failover to {to} could run now, but not within spec.objectives"),
        ),
        (false, _) => (ConditionStatus::False, "Blocked", blockers.join("; ")),
    };
    if !risks.is_empty() {
        msg = format!("{msg}; objectives at risk: {}", risks.join("; "));
    }
    upsert(
        &mut status.conditions,
        events,
        conditions::READY_FOR_FAILOVER,
        st,
        reason,
        &msg,
        drp.metadata.generation,
        now,
        false,
    );
}

/// When the next round starts: `probeInterval` after this one *began*, so that probes keep a fixed
/// cadence — a round whose probe waited out `probeTimeout` (a black-holed primary) does not push
/// the next one back (a primary that stops answering is decided within
/// `failureThreshold × probeInterval + probeTimeout`).
pub fn next_round(interval: std::time::Duration, began: std::time::Instant) -> std::time::Duration {
    interval.saturating_sub(began.elapsed()).max(std::time::Duration::from_millis(10))
}

/// Starts what the round decided — a commanded switchover or failover, or the guard's failover —
/// and runs its journal; otherwise the pair comes back `probeInterval` after the round began.
pub async fn start(
    drp: DisasterRecoveryPair,
    cmds: &commands::Commands,
    decision: guard::Decision,
    drill: Option<String>,
    status: &DisasterRecoveryPairStatus,
    ctx: &Context,
    began: std::time::Instant,
) -> Result<Action, Error> {
    let every = next_round(drp.spec.failover.probe_interval.into(), began);
    let command = cmds.run.clone();
    use failover::{executor, Kind};
    let from = crate::authority::primary(&drp.spec, Some(status)).site.to_string();
    // Nothing starts on a pair whose copies differ, or from a controller whose site it does not name.
    let refusal = status.conditions.iter().find(|c| {
        c.type_ == conditions::SPEC_VALID
            && c.status == ConditionStatus::False
            && (c.reason == conditions::reasons::SPEC_DRIFT || c.message.contains("--site"))
    });
    if let (Some(c), Some(cmd)) = (refusal, &command) {
        let note = format!("{cmd:?} refused: {}", c.message);
        tracing::warn!(%note, "command refused");
        ctx.publish(&drp, EventNote { warning: true, reason: "CommandRefused".into(), note }).await;
        return Ok(Action::requeue(every));
    }
    if refusal.is_some() {
        return Ok(Action::requeue(every));
    }
    // A drill's own token was claimed when the drill was accepted (`tend_drill`).
    if let Some(cmd) = command
        .as_ref()
        .filter(|c| !matches!(c, commands::Command::DryRun { .. } | commands::Command::Drill { .. }))
    {
        if let Err(note) = claim(&drp, cmds, cmd, ctx).await {
            tracing::warn!(%note, "command not run here");
            ctx.publish(&drp, EventNote { warning: true, reason: "CommandHandledElsewhere".into(), note })
                .await;
            return Ok(Action::requeue(every));
        }
    }
    let started = match (command, decision) {
        (Some(commands::Command::Switchover { to }), _) => {
            executor::start(&drp, Kind::Switchover, Trigger::Switchover, &from, &to, ctx).await?
        }
        (Some(commands::Command::ForcedFailover { to }), _) => {
            executor::start(&drp, Kind::Failover, Trigger::Forced, &from, &to, ctx).await?
        }
        (_, guard::Decision::Failover { trigger, from, to }) => {
            executor::start(&drp, Kind::Failover, trigger, &from, &to, ctx).await?
        }
        (_, guard::Decision::Steady) if drill.is_some() => {
            let to = drill.unwrap_or_default();
            executor::start(&drp, Kind::Switchover, Trigger::Switchover, &from, &to, ctx).await?
        }
        _ => (None, None),
    };
    match started {
        (Some(drp), _) => executor::run(drp, ctx).await,
        // The old primary's key is about to expire: try again then, not a probe round later (or
        // as soon as the witness view sees it deleted).
        (None, Some(retry)) => Ok(Action::requeue(retry.min(every))),
        (None, None) => Ok(Action::requeue(every)),
    }
}

/// How long a command's claim stays in the witness (two copies annotated within it act once).
const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// With a controller per site and a witness, a commanded transition is claimed in the witness
/// first, so that the same annotation on both clusters' copies of the pair runs once: the other
/// copy's controller finds the claim and records the command as handled there. `Err` says who runs
/// it (or why it cannot be claimed: a command is never run unclaimed).
async fn claim(
    drp: &DisasterRecoveryPair,
    cmds: &commands::Commands,
    cmd: &commands::Command,
    ctx: &Context,
) -> Result<(), String> {
    let Some(site) = ctx.site.as_deref() else { return Ok(()) };
    use crate::crd::annotations;
    let Some((annotation, token)) = cmds.handled.iter().find(|(a, _)| {
        [annotations::SWITCHOVER, annotations::FAILOVER, annotations::DRILL].contains(&a.as_str())
    }) else {
        return Ok(());
    };
    let w = match crate::coord::witness(drp, &ctx.client).await {
        Ok(Some(w)) => Some(w),
        Ok(None) => None,
        Err(e) => {
            return Err(format!(
                "{cmd:?} ({annotation}={token}) not run: the witness cannot be reached to claim it: {e}"
            ))
        }
    };
    let Some(mut w) = w else { return Ok(()) };
    let id = crate::events::action_for(&format!("{annotation}={token}"));
    let me = format!("{site} {annotation}={token}");
    match w.claim_command(&id, &me, CLAIM_TTL).await {
        Ok(None) => Ok(()),
        Ok(Some(other)) => Err(format!(
            "{cmd:?} ({annotation}={token}) is handled by another controller: the witness holds its claim by {}",
            other.split(' ').next().unwrap_or_default()
        )),
        Err(e) => Err(format!("{cmd:?} ({annotation}={token}) not run: claiming it in the witness failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn the_next_round_is_counted_from_the_start_of_this_one() {
        let every = Duration::from_secs(1);
        let began = Instant::now() - Duration::from_millis(600);
        let next = super::next_round(every, began);
        assert!(next <= Duration::from_millis(400) && next >= Duration::from_millis(300), "{next:?}");
        // A round longer than the interval: the next one at once.
        assert_eq!(
            super::next_round(every, Instant::now() - Duration::from_secs(2)),
            Duration::from_millis(10)
        );
    }
}
