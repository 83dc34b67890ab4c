//! The journalled executor. Progress lives in `.status.lastTransition.steps`, never only in memory:
//! each step is recorded as started (attempt counted) before it runs and as finished after, every
//! status write carries the `resourceVersion` it was computed from (a concurrent writer makes it
//! fail with 409 and we re-observe instead of overwriting), and a restarted controller resumes at the
//! first step without `finishedAt`. Steps are idempotent, so re-running a step whose "finished"
//! record was lost to a crash is harmless: one promotion, one epoch increment, one DNS change.
//!
//! A switchover that fails before `TakeEpoch` is rolled back (old primary writable, PgBouncer
//! resumed) and ends as `RolledBack`; after `TakeEpoch` the only way is forward.

use std::time::Duration;

use jiff::Timestamp;
use kube::{runtime::controller::Action, ResourceExt};
use tracing::{info, warn};

use super::{
    ports::Ports,
    steps::{self, StepCtx},
    Category, EpochRefusal, Kind, Outcome, Step, StepError,
};
use crate::{
    context::{Context, Error},
    coord::{etcd::LeaderKey, Swap},
    crd::{
        conditions::{self, reasons, set_condition},
        Assessment, ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus, Epoch, FormerPrimary,
        LossBound, Phase, StepOutcome, StepRecord, Transition, TransitionOutcome, Trigger, Verdict,
    },
    events::EventNote,
};

/// Starts a transition through the real ports (see `start_with`).
/// Starts a transition through the real ports (see `start_with`). With it, when a refused start
/// should be tried again before the next probe round, and when.
pub async fn start(
    drp: &DisasterRecoveryPair,
    kind: Kind,
    trigger: Trigger,
    from: &str,
    to: &str,
    ctx: &Context,
) -> Result<(Option<DisasterRecoveryPair>, Option<Duration>), Error> {
    let ports = Ports::real(ctx, drp);
    let started = start_with(drp, kind, trigger, from, to, &ports).await?;
    let retry = ports.retry_in.lock().ok().and_then(|r| *r);
    Ok((started, retry))
}

/// Runs the journal of `drp`'s transition through the real ports (see `run_with`).
pub async fn run(drp: DisasterRecoveryPair, ctx: &Context) -> Result<Action, Error> {
    let ports = Ports::real(ctx, &drp);
    run_with(drp, &ports).await
}

/// Adopts `record`, the witness's `(epoch, holder, transition)` already read by the caller, when it
/// is ahead of the status (see `adopt_with`); the real ports are built only then.
pub async fn adopt_witness_epoch(
    ctx: &Context,
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    record: &(i64, String, String),
    journal: Option<&str>,
) -> Result<bool, Error> {
    if !adoptable(drp, st, record) {
        return Ok(false);
    }
    // The journal of the transition that made this epoch, when its controller published it: this
    // cluster shows what happened there (kind, steps, RTO, the fork point the rejoin compares with).
    if let Some(t) = journal
        .and_then(|j| serde_json::from_str::<crate::crd::Transition>(j).ok())
        .filter(|t| t.epoch.0 == record.0 && t.finished_at.is_some())
    {
        st.last_transition = Some(t);
    }
    adopt_record(&Ports::real(ctx, drp), drp, st, record).await
}

/// Starts a transition. A failover takes the epoch first (etcd swap when a witness is configured) and
/// journals `TakeEpoch` as done; a switchover takes it later, after the standby caught up. Losing
/// the swap, or a 409 on the write, starts nothing.
pub async fn start_with(
    drp: &DisasterRecoveryPair,
    kind: Kind,
    trigger: Trigger,
    from: &str,
    to: &str,
    ports: &Ports<'_>,
) -> Result<Option<DisasterRecoveryPair>, Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    let began = Timestamp::now();
    let Some(epoch) = st.epoch.next() else {
        let msg = format!(
            "status.epoch is {}, which cannot be moved on: only understudy writes the epoch; restore it from \
             the witness (`etcdctl get <prefix>/<ns>/<name>/epoch`)",
            st.epoch
        );
        refuse(ports, drp, &mut st, reasons::INVALID_SPEC, &msg).await?;
        return Ok(None);
    };
    let id = format!("{}/{epoch}/{to}", drp.uid().unwrap_or_default());
    let mut steps: Vec<StepRecord> =
        kind.steps().iter().map(|s| StepRecord { name: s.name().into(), ..Default::default() }).collect();
    let started_at = match kind {
        // RTO counts from the first failed probe.
        Kind::Failover => st
            .sites
            .iter()
            .find(|s| s.name == from)
            .and_then(|s| s.failing_since.clone())
            .unwrap_or_else(|| began.to_string()),
        Kind::Switchover => began.to_string(),
    };
    if kind == Kind::Switchover && adopt_with(ports, drp, &mut st).await? {
        return Ok(None);
    }
    if kind == Kind::Failover {
        let leader = if trigger == Trigger::Forced { LeaderKey::Break } else { LeaderKey::MustBeAbsent };
        let note = match take_epoch(ports, st.epoch.0, &id, leader).await {
            Ok(note) => note,
            Err(EpochRefusal::Ahead { .. }) if adopt_with(ports, drp, &mut st).await? => {
                return Ok(None);
            }
            Err(refusal) => {
                if let EpochRefusal::LeaderKeyHeld { ttl_left_s, .. } = &refusal {
                    // etcd counts whole seconds: try again just as the lease can have expired.
                    let mut wait =
                        Duration::from_secs(u64::try_from(*ttl_left_s).unwrap_or(0).saturating_sub(1))
                            .max(Duration::from_millis(100));
                    // A site with a fence hook may let its key go any moment (its hook confirmed
                    // the fence): try again every probe interval rather than at the lease's end.
                    if drp.spec.site(from).is_ok_and(|(_, s)| s.fence_hook.is_some()) {
                        let every: Duration = drp.spec.failover.probe_interval.into();
                        wait = wait.min(every.max(Duration::from_millis(100)));
                    }
                    if let Ok(mut r) = ports.retry_in.lock() {
                        *r = Some(wait);
                    }
                }
                refuse(ports, drp, &mut st, refusal.reason(), &refusal.to_string()).await?;
                return Ok(None);
            }
        };
        st.epoch = epoch;
        steps[0] = StepRecord {
            name: Step::TakeEpoch.name().into(),
            started_at: Some(began.to_string()),
            finished_at: Some(Timestamp::now().to_string()),
            outcome: Some(StepOutcome::Succeeded),
            message: Some(note),
            attempts: 1,
        };
    }
    st.phase = Some(if kind == Kind::Failover { Phase::FailingOver } else { Phase::SwitchingOver });
    st.target_primary = Some(to.into());
    // An approval is used up by the transition it started.
    st.pending_approval = None;
    st.last_transition = Some(Transition {
        trigger,
        kind,
        from: from.into(),
        to: to.into(),
        epoch,
        id,
        holder: ports.identity.clone(),
        started_at,
        steps,
        ..Default::default()
    });
    let msg = format!("{} from {from} to {to} (epoch {epoch})", kind.as_str().to_lowercase());
    set_condition(
        &mut st.conditions,
        conditions::FAILOVER_BLOCKED,
        ConditionStatus::False,
        reasons::FAILING_OVER,
        &msg,
        drp.metadata.generation,
        Timestamp::now(),
    );
    let updated = ports.store.write_status(drp, &st).await?;
    let reason = format!("{}Started", kind.as_str());
    ports
        .events
        .publish(drp, EventNote { warning: kind == Kind::Failover, reason, note: format!("{trigger} {msg}") })
        .await;
    info!(from, to, epoch = epoch.0, trigger = trigger.as_str(), kind = kind.as_str(), "transition started");
    Ok(Some(updated))
}

/// Moves the epoch from `from` to `from + 1` in etcd when there is a witness; without one the
/// caller's `resourceVersion`-guarded status write is the swap.
///
/// `leader` says whether the primary site's leader key must have expired (an unplanned failover)
/// or may be broken (a planned switchover, or a failover an operator forced).
async fn take_epoch(
    ports: &Ports<'_>,
    from: i64,
    id: &str,
    leader: LeaderKey,
) -> Result<String, EpochRefusal> {
    let Some(w) = &ports.witness else {
        return Ok("epoch taken by a status write with a resourceVersion precondition".into());
    };
    match w.swap(from, &ports.identity, id, leader).await.map_err(EpochRefusal::WitnessUnavailable)? {
        Swap::Won => {
            let mut note = format!("etcd epoch {from} → {}", from.saturating_add(1));
            // The primary site's key went early because its site fence hook confirmed the fence:
            // say so, as the reason this failover did not wait for the lease.
            if leader == LeaderKey::MustBeAbsent {
                if let Ok(Some(why)) = w.released_note(from).await {
                    note.push_str(&format!("; the leader key did not wait for its lease: {why}"));
                }
            }
            Ok(note)
        }
        Swap::LeaderAlive { holder, ttl_left_s } => Err(EpochRefusal::LeaderKeyHeld { holder, ttl_left_s }),
        Swap::Lost { epoch, .. } if epoch > from => Err(EpochRefusal::Ahead { held: epoch, ours: from }),
        Swap::Lost { epoch, holder, .. } => Err(EpochRefusal::Lost { held: epoch, holder, ours: from }),
    }
}

/// The witness holds a newer epoch than this pair's status while no transition of ours runs: a
/// pair deleted and created again under the same name (fencing tokens are never reused, so the
/// witness keeps its epoch), or the other site's controller acted. The witness is the authority:
/// its epoch, and the site its transition promoted, become the status; the next round decides
/// again from there.
/// Only a record made for another object is adopted (its transition id starts with another UID):
/// a record of this very object whose journal is not in the status yet belongs to a controller
/// that is between its epoch swap and its status write, and is left to it.
/// Returns whether it adopted (and wrote the status).
pub async fn adopt_with(
    ports: &Ports<'_>,
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
) -> Result<bool, Error> {
    let Some(w) = &ports.witness else { return Ok(false) };
    let Ok(record) = w.epoch().await else { return Ok(false) };
    if !adoptable(drp, st, &record) {
        return Ok(false);
    }
    adopt_record(ports, drp, st, &record).await
}

/// Whether the witness's record is ahead of the status and made for another object, while no
/// transition of this one runs (see `adopt_with`).
fn adoptable(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    record: &(i64, String, String),
) -> bool {
    let (epoch, _, transition) = record;
    let running = st.last_transition.as_ref().is_some_and(|t| t.finished_at.is_none());
    let ours = transition.split('/').next() == Some(drp.uid().unwrap_or_default().as_str());
    *epoch > st.epoch.0 && !running && !ours
}

/// Writes an adoptable `record` into the status (epoch, and the primary its transition promoted),
/// with the `EpochAdopted` condition and Event.
async fn adopt_record(
    ports: &Ports<'_>,
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    record: &(i64, String, String),
) -> Result<bool, Error> {
    let (epoch, holder, transition) = (record.0, &record.1, &record.2);
    let site = crate::coord::transition_site(transition)
        .or(Some(holder.as_str()))
        .filter(|s| drp.spec.sites.iter().any(|x| x.name == *s));
    let before = (st.epoch, st.current_primary.clone().unwrap_or_else(|| drp.spec.primary.clone()));
    st.epoch = Epoch(epoch);
    let msg = match site {
        Some(site) => {
            st.current_primary = Some(site.to_string());
            // The other site has to follow the one the witness names: the rejoin tends it (its
            // own site's controller runs the hook), starting from an assessment.
            if let Some(other) = drp.spec.sites.iter().map(|s| s.name.as_str()).find(|s| *s != site) {
                st.former_primary = Some(crate::crd::FormerPrimary {
                    site: other.to_string(),
                    assessment: crate::crd::Assessment::Pending,
                    message: Some(format!("the witness names {site} at epoch {epoch}: {other} must follow it")),
                    rejoin_attempts: 0,
                    assessed_at: None,
                });
            }
            format!(
                "the witness holds epoch {epoch} (transition {transition}, site {site}) ahead of this status \
                 (epoch {}, primary {}): adopted as the truth — the other site's controller ran that transition \
                 (in its own cluster, or while this one was away), or this pair was deleted and created again \
                 under its name; nothing was promoted here",
                before.0, before.1
            )
        }
        None => format!(
            "the witness holds epoch {epoch} (transition {transition}, holder {holder}) ahead of this status \
             (epoch {}): adopted the epoch; the site it names is not in spec.sites, so currentPrimary stays {}",
            before.0, before.1
        ),
    };
    set_condition(
        &mut st.conditions,
        conditions::FAILOVER_BLOCKED,
        ConditionStatus::True,
        reasons::EPOCH_ADOPTED,
        &msg,
        drp.metadata.generation,
        Timestamp::now(),
    );
    ports.store.write_status(drp, st).await?;
    ports
        .events
        .publish(drp, EventNote { warning: true, reason: reasons::EPOCH_ADOPTED.into(), note: msg.clone() })
        .await;
    warn!(epoch, "{msg}");
    Ok(true)
}

async fn refuse(
    ports: &Ports<'_>,
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    reason: &'static str,
    msg: &str,
) -> Result<(), Error> {
    set_condition(
        &mut st.conditions,
        conditions::FAILOVER_BLOCKED,
        ConditionStatus::True,
        reason,
        msg,
        drp.metadata.generation,
        Timestamp::now(),
    );
    ports.store.write_status(drp, st).await?;
    ports.events.publish(drp, EventNote { warning: true, reason: reason.into(), note: msg.into() }).await;
    warn!(reason, msg, "transition not started");
    Ok(())
}

fn step_ctx<'a>(
    ports: &'a Ports<'a>,
    drp: &'a DisasterRecoveryPair,
    pair: &'a str,
    t: &'a Transition,
    idx: usize,
) -> StepCtx<'a> {
    let st = drp.status.as_ref();
    // The old primary's last position: the switchover's final LSN, else the latest this controller
    // saw itself or found in the status (position-only status writes are throttled, and with a
    // controller per site the other one may have written the status last).
    let last_primary_lsn = match t.final_lsn.as_deref() {
        Some(l) => l.parse().ok(),
        None => {
            let written = st
                .and_then(|st| st.sites.iter().find(|s| s.name == t.from))
                .and_then(|s| s.current_lsn.as_deref())
                .and_then(|l| l.parse::<crate::pg::Lsn>().ok());
            let seen = ports.seen_lsn.get(&t.from).copied();
            written.max(seen)
        }
    };
    StepCtx {
        ports,
        pair,
        spec: &drp.spec,
        from: &t.from,
        to: &t.to,
        epoch: t.epoch.0,
        timeout: drp.spec.failover.probe_timeout(),
        attempts: t.steps.get(idx).map(|s| s.attempts.saturating_sub(1)).unwrap_or(0),
        last_primary_lsn,
        step_started: t.steps.get(idx).and_then(|s| s.started_at.as_deref()).and_then(|s| s.parse().ok()),
        data_source_written: None,
        final_position: t.final_lsn.is_some(),
        from_was_synchronous: st
            .and_then(|st| st.sites.iter().find(|s| s.name == t.from))
            .is_some_and(|s| s.synchronous_standby == Some(true)),
    }
}

/// Runs the journal of `drp`'s transition from its first unfinished step to the end.
pub async fn run_with(mut drp: DisasterRecoveryPair, ports: &Ports<'_>) -> Result<Action, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    let pair = format!("{ns}/{}", drp.name_any());
    // The step whose start the last write already recorded (with the previous step's end: one
    // status write between two steps instead of two).
    let mut pre_started: Vec<usize> = Vec::new();
    loop {
        let st = drp.status.clone().unwrap_or_default();
        let Some(t) = st.last_transition.clone() else { return Ok(Action::await_change()) };
        if let Some(msg) = site_problem(&drp, &t) {
            return stop_invalid_journal(drp, ports, msg).await;
        }
        if t.outcome == Some(TransitionOutcome::RollingBack) {
            return roll_back(drp, ports, &pair).await;
        }
        let Some(idx) = t.steps.iter().position(|s| s.finished_at.is_none()) else {
            finish(&mut drp, ports).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        let step = match Step::from_name(&t.steps[idx].name) {
            Some(step) => step,
            None => return stop_invalid_journal(drp, ports, unknown_step(&t, idx)).await,
        };
        let epoch_taken = t.steps.iter().any(|s| s.name == Step::TakeEpoch.name() && s.finished_at.is_some());
        // A stale leader's late step is refused: once the epoch is ours, the witness must still hold it.
        if epoch_taken && !epoch_still_ours(&drp, ports, &t, step).await? {
            return Ok(Action::await_change());
        }
        // The cutover's moves that follow one another and are not done yet run together.
        let group: Vec<(usize, Step)> = if step.is_cutover() {
            t.steps[idx..]
                .iter()
                .enumerate()
                .map(|(k, s)| (idx + k, s))
                .take_while(|(_, s)| s.finished_at.is_none())
                .map_while(|(i, s)| Step::from_name(&s.name).filter(|x| x.is_cutover()).map(|x| (i, x)))
                .collect()
        } else {
            vec![(idx, step)]
        };
        if group.len() > 1 {
            let unstarted: Vec<usize> =
                group.iter().map(|(i, _)| *i).filter(|i| !pre_started.contains(i)).collect();
            drp = record_started_all(drp, ports, &unstarted).await?;
            group.iter().for_each(|(_, s)| crash_point(*s, "before"));
            // The application's recyclers wait for the DataSource when both run now.
            let both =
                [Step::RewriteDataSource, Step::Recycle].iter().all(|x| group.iter().any(|(_, s)| s == x));
            let (written_tx, written_rx) = tokio::sync::watch::channel(None::<bool>);
            let runs = group.iter().map(|&(i, s)| {
                let drp = &drp;
                let pair = &pair;
                let gate = (both && s == Step::Recycle).then(|| written_rx.clone());
                let written_tx = &written_tx;
                async move {
                    let began = std::time::Instant::now();
                    let res = run_step_gated(drp, ports, pair, s, i, gate).await;
                    if s == Step::RewriteDataSource {
                        written_tx.send_replace(Some(res.is_ok()));
                    }
                    (i, s, res, began.elapsed(), Timestamp::now())
                }
            });
            let results = futures::future::join_all(runs).await;
            group.iter().for_each(|(_, s)| crash_point(*s, "after"));
            let mut done = Vec::new();
            let mut failed = None;
            let mut also_failed = Vec::new();
            for (i, s, res, took, ended) in results {
                match res {
                    Ok(d) => done.push((s, i, d, took, ended)),
                    Err(e) if failed.is_none() => failed = Some((s, i, e)),
                    Err(e) => {
                        warn!(step = s.name(), "{e}; tried again with the first failure");
                        also_failed.push((i, e.to_string()));
                    }
                }
            }
            if !done.is_empty() || !also_failed.is_empty() {
                (drp, pre_started) =
                    record_done_all(drp, ports, done, &also_failed, failed.is_none()).await?;
            }
            if let Some((s, i, e)) = failed {
                return record_failed(drp, ports, s, i, &e).await;
            }
            continue;
        }
        if !pre_started.contains(&idx) {
            drp = record_started(drp, ports, idx).await?;
        }
        crash_point(step, "before");
        let began = std::time::Instant::now();
        let result = run_step(&drp, ports, &pair, step, idx).await;
        let took = began.elapsed();
        crash_point(step, "after");
        match result {
            Ok(done) => {
                (drp, pre_started) = record_done(drp, ports, step, idx, done, took).await?;
            }
            // Before the epoch is taken a switchover can still be undone: a fatal error stops it.
            Err(e) if e.category() == Category::Fatal && !epoch_taken => {
                let drp = record_aborted(drp, ports, step, idx, &e).await?;
                return roll_back(drp, ports, &pair).await;
            }
            Err(e) => return record_failed(drp, ports, step, idx, &e).await,
        }
    }
}

/// A journal naming a site the spec does not have is not run.
fn site_problem(drp: &DisasterRecoveryPair, t: &Transition) -> Option<String> {
    let (field, site) =
        [("from", &t.from), ("to", &t.to)].into_iter().find(|(_, site)| drp.spec.site(site).is_err())?;
    let site: String = site.chars().take(64).collect();
    Some(format!(
        "status.lastTransition.{field} is {site:?}, which names no site in spec.sites; the {} is not \
         run. Finish it by hand (docs/failback.md), then remove status.lastTransition",
        t.kind
    ))
}

/// Only understudy writes the journal; a step it does not know (status edited by hand, or written
/// by another version) is not guessed at: the transition stops and says so.
fn unknown_step(t: &Transition, idx: usize) -> String {
    let name: String = t.steps[idx].name.chars().take(64).collect();
    format!(
        "status.lastTransition.steps[{idx}].name is {name:?}, not a step understudy knows; the {} \
         stopped before it. Finish the transition by hand (docs/failback.md), then remove \
         status.lastTransition",
        t.kind
    )
}

/// Whether the witness still holds this transition's epoch; if not, the pair is marked Failed with
/// `LostEpochSwap` and nothing more is done. A witness that cannot be read does not stop the step.
async fn epoch_still_ours(
    drp: &DisasterRecoveryPair,
    ports: &Ports<'_>,
    t: &Transition,
    step: Step,
) -> Result<bool, Error> {
    let Some(w) = &ports.witness else { return Ok(true) };
    let Ok((held, holder, id)) = w.epoch().await else { return Ok(true) };
    if held == t.epoch.0 && id == t.id {
        return Ok(true);
    }
    let msg = format!("etcd holds epoch {held} ({holder}), not ours ({}): stopping before {step}", t.epoch);
    let mut st = drp.status.clone().unwrap_or_default();
    st.phase = Some(Phase::Failed);
    set_condition(
        &mut st.conditions,
        conditions::FAILOVER_BLOCKED,
        ConditionStatus::True,
        reasons::LOST_EPOCH_SWAP,
        &msg,
        drp.metadata.generation,
        Timestamp::now(),
    );
    ports.store.write_status(drp, &st).await?;
    ports
        .events
        .publish(drp, EventNote { warning: true, reason: reasons::LOST_EPOCH_SWAP.into(), note: msg })
        .await;
    Ok(false)
}

/// Records steps `idxs` as started in one write (see `record_started`).
async fn record_started_all(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    idxs: &[usize],
) -> Result<DisasterRecoveryPair, Error> {
    if idxs.is_empty() {
        return Ok(drp);
    }
    let mut st = drp.status.clone().unwrap_or_default();
    if let Some(t) = st.last_transition.as_mut() {
        for &i in idxs {
            let rec = &mut t.steps[i];
            rec.started_at.get_or_insert_with(|| Timestamp::now().to_string());
            rec.attempts = rec.attempts.saturating_add(1);
        }
    }
    ports.store.write_status(&drp, &st).await
}

/// Records step `idx` as started (its first start time kept, one more attempt) before it acts.
async fn record_started(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    idx: usize,
) -> Result<DisasterRecoveryPair, Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    if let Some(rec) = st.last_transition.as_mut().map(|t| &mut t.steps[idx]) {
        rec.started_at.get_or_insert_with(|| Timestamp::now().to_string());
        rec.attempts = rec.attempts.saturating_add(1);
    }
    ports.store.write_status(&drp, &st).await
}

/// Runs one step. A switchover takes the epoch here, after the standby caught up.
async fn run_step(
    drp: &DisasterRecoveryPair,
    ports: &Ports<'_>,
    pair: &str,
    step: Step,
    idx: usize,
) -> Result<steps::Done, StepError> {
    run_step_gated(drp, ports, pair, step, idx, None).await
}

/// `run_step`; `Recycle` given the outcome of a `RewriteDataSource` running beside it.
async fn run_step_gated(
    drp: &DisasterRecoveryPair,
    ports: &Ports<'_>,
    pair: &str,
    step: Step,
    idx: usize,
    data_source_written: Option<tokio::sync::watch::Receiver<Option<bool>>>,
) -> Result<steps::Done, StepError> {
    let t = drp.status.as_ref().and_then(|s| s.last_transition.clone()).unwrap_or_default();
    if step != Step::TakeEpoch {
        let cx = StepCtx { data_source_written, ..step_ctx(ports, drp, pair, &t, idx) };
        return steps::run(step, &cx).await;
    }
    let from = drp.status.as_ref().map(|s| s.epoch).unwrap_or_default();
    if from == t.epoch {
        return Ok(steps::Done {
            outcome: Some(Outcome::Succeeded("epoch already ours".into())),
            ..Default::default()
        });
    }
    take_epoch(ports, from.0, &t.id, LeaderKey::Break)
        .await
        .map(|note| steps::Done { outcome: Some(Outcome::Succeeded(note)), ..Default::default() })
        .map_err(StepError::from)
}

/// The journal of the transition `drp` runs, for a record of step `idx`.
fn journal(drp: &DisasterRecoveryPair) -> Result<(DisasterRecoveryPairStatus, Transition), Error> {
    let st = drp.status.clone().unwrap_or_default();
    let t = st.last_transition.clone().ok_or_else(|| Error::Journal("transition vanished".into()))?;
    Ok((st, t))
}

/// Records a step done: its outcome and message, the figures it measured, the epoch when it took
/// it; then the metric, the log line and the Event. The next step's start goes into the same
/// write; returns it.
async fn record_done(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    step: Step,
    idx: usize,
    done: steps::Done,
    took: Duration,
) -> Result<(DisasterRecoveryPair, Vec<usize>), Error> {
    record_done_all(drp, ports, vec![(step, idx, done, took, Timestamp::now())], &[], true).await
}

/// `record_done` for several steps in one write (the cutover's concurrent moves: each keeps the
/// time it really finished), with the
/// messages of moves that `failed` beside them; the next step's start (the whole next group of
/// concurrent moves) is recorded with them when `start_next`.
async fn record_done_all(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    done: Vec<(Step, usize, steps::Done, Duration, Timestamp)>,
    failed: &[(usize, String)],
    start_next: bool,
) -> Result<(DisasterRecoveryPair, Vec<usize>), Error> {
    let (mut st, mut tr) = journal(&drp)?;
    // Moves that failed beside the one reported by `record_failed` keep their own message.
    for (idx, msg) in failed {
        tr.steps[*idx].message = Some(msg.clone());
    }
    let mut said = Vec::new();
    for (step, idx, done, took, ended) in done {
        let (outcome, msg) = done.outcome.unwrap_or(Outcome::Succeeded(String::new())).parts();
        if done.lost_wal_bytes.is_some() {
            tr.lost_wal_bytes = done.lost_wal_bytes;
            tr.lost_wal_bound = done.lost_wal_bound;
        }
        if let Some(l) = done.promoted_at_lsn {
            tr.promoted_at_lsn = Some(l.to_string());
        }
        if let Some(l) = done.final_lsn {
            tr.final_lsn = Some(l.to_string());
        }
        let rec = &mut tr.steps[idx];
        rec.finished_at = Some(ended.to_string());
        rec.outcome = Some(outcome);
        rec.message = Some(msg.clone());
        if step == Step::TakeEpoch {
            st.epoch = tr.epoch;
        }
        said.push((step, outcome, msg, took));
    }
    // The next step starts right after this write: its start goes into the same write.
    let mut next: Vec<usize> = Vec::new();
    if let Some(j) = tr.steps.iter().position(|s| s.finished_at.is_none()).filter(|_| start_next) {
        next.push(j);
        let cutover = |i: usize| {
            tr.steps
                .get(i)
                .filter(|s| s.finished_at.is_none())
                .and_then(|s| Step::from_name(&s.name))
                .is_some_and(Step::is_cutover)
        };
        if cutover(j) {
            next.extend((j + 1..tr.steps.len()).take_while(|&i| cutover(i)));
        }
    }
    for &j in &next {
        let rec = &mut tr.steps[j];
        rec.started_at.get_or_insert_with(|| Timestamp::now().to_string());
        rec.attempts = rec.attempts.saturating_add(1);
    }
    let epoch = tr.epoch;
    st.last_transition = Some(tr);
    let drp = ports.store.write_status(&drp, &st).await?;
    for (step, outcome, msg, took) in said {
        ports
            .metrics
            .step_duration
            .get_or_create(&crate::metrics::StepLabels {
                step: step.name().into(),
                outcome: outcome.as_str().into(),
            })
            .observe(took.as_secs_f64());
        info!(
            step = step.name(),
            outcome = outcome.as_str(),
            took_ms = took.as_millis() as u64,
            epoch = epoch.0,
            "{msg}"
        );
        let note = format!("{outcome} in {} ms: {msg}", took.as_millis());
        ports.events.publish(&drp, EventNote { warning: false, reason: step.name().into(), note }).await;
    }
    Ok((drp, next))
}

/// Records a step aborted and the transition rolling back (a switchover before `TakeEpoch`).
async fn record_aborted(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    step: Step,
    idx: usize,
    e: &StepError,
) -> Result<DisasterRecoveryPair, Error> {
    let (mut st, mut tr) = journal(&drp)?;
    let msg = e.to_string();
    let rec = &mut tr.steps[idx];
    rec.finished_at = Some(Timestamp::now().to_string());
    rec.outcome = Some(StepOutcome::Aborted);
    rec.message = Some(msg.clone());
    tr.outcome = Some(TransitionOutcome::RollingBack);
    st.last_transition = Some(tr);
    let drp = ports.store.write_status(&drp, &st).await?;
    warn!(step = step.name(), "{msg}; rolling back");
    let note = format!("{msg}; rolling back");
    ports
        .events
        .publish(&drp, EventNote { warning: true, reason: format!("{}Aborted", step.name()), note })
        .await;
    Ok(drp)
}

/// Records a failed attempt and comes back after the backoff.
async fn record_failed(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    step: Step,
    idx: usize,
    e: &StepError,
) -> Result<Action, Error> {
    let (mut st, mut tr) = journal(&drp)?;
    let (msg, category) = (e.to_string(), e.category());
    let attempts = tr.steps[idx].attempts;
    tr.steps[idx].message = Some(msg.clone());
    st.last_transition = Some(tr);
    let drp = ports.store.write_status(&drp, &st).await?;
    let backoff = backoff(attempts);
    warn!(
        step = step.name(),
        attempt = attempts,
        category = ?category,
        retry_in_ms = backoff.as_millis() as u64,
        "{msg}"
    );
    let note = format!("attempt {attempts}: {msg}; retrying in {backoff:?}");
    ports
        .events
        .publish(&drp, EventNote { warning: true, reason: format!("{}Failed", step.name()), note })
        .await;
    Ok(Action::requeue(backoff))
}

/// Stops a journal understudy cannot run (it did not write it): phase Failed, `FailoverBlocked`
/// with reason `InvalidJournal` and an Event, once; nothing else is done until the pair changes.
async fn stop_invalid_journal(
    drp: DisasterRecoveryPair,
    ports: &Ports<'_>,
    msg: String,
) -> Result<Action, Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    let already = st.phase == Some(Phase::Failed)
        && st.conditions.iter().any(|c| c.reason == reasons::INVALID_JOURNAL && c.message == msg);
    if !already {
        st.phase = Some(Phase::Failed);
        set_condition(
            &mut st.conditions,
            conditions::FAILOVER_BLOCKED,
            ConditionStatus::True,
            reasons::INVALID_JOURNAL,
            &msg,
            drp.metadata.generation,
            Timestamp::now(),
        );
        let drp = ports.store.write_status(&drp, &st).await?;
        warn!("{msg}");
        ports
            .events
            .publish(&drp, EventNote { warning: true, reason: reasons::INVALID_JOURNAL.into(), note: msg })
            .await;
    }
    Ok(Action::await_change())
}

/// Rolls a switchover back and closes its journal as `RolledBack`; retried until it succeeds.
async fn roll_back(drp: DisasterRecoveryPair, ports: &Ports<'_>, pair: &str) -> Result<Action, Error> {
    let t = drp.status.as_ref().and_then(|s| s.last_transition.clone()).unwrap_or_default();
    let cx = step_ctx(ports, &drp, pair, &t, usize::MAX);
    // Never lift the old primary's fence when the witness names another site meanwhile: another
    // transition (the other cluster's controller, or a forced failover) promoted it, and the
    // fenced old primary must follow that one. Its PgBouncers are that transition's too.
    let from_epoch = drp.status.as_ref().map(|s| s.epoch.0).unwrap_or_default();
    let moved = match &ports.witness {
        Some(w) => w.epoch().await.ok().and_then(|(held, holder, id)| {
            let named = crate::coord::transition_site(&id).map(str::to_string).unwrap_or(holder);
            (held > from_epoch && named != t.from).then_some((held, named))
        }),
        None => None,
    };
    let undone = match moved {
        Some((held, named)) => Ok(format!(
            "{} was NOT unfenced and no PgBouncer resumed: the witness holds epoch {held} for {named}, \
             promoted by another transition; {} stays fenced and follows {named}",
            t.from, t.from
        )),
        None => steps::roll_back(&cx).await,
    };
    match undone {
        Ok(msg) => {
            let mut st = drp.status.clone().unwrap_or_default();
            if let Some(tr) = st.last_transition.as_mut() {
                tr.outcome = Some(TransitionOutcome::RolledBack);
                tr.finished_at = Some(Timestamp::now().to_string());
            }
            st.target_primary = None;
            st.phase = Some(Phase::Degraded);
            let drp = ports.store.write_status(&drp, &st).await?;
            ports
                .metrics
                .transitions
                .get_or_create(&crate::metrics::TransitionLabels {
                    pair: format!("{}/{}", drp.namespace().unwrap_or_default(), drp.name_any()),
                    kind: Kind::Switchover.as_str().into(),
                    trigger: Trigger::Switchover.as_str().into(),
                    outcome: TransitionOutcome::RolledBack.as_str().into(),
                })
                .inc();
            warn!("switchover rolled back: {msg}");
            ports
                .events
                .publish(
                    &drp,
                    EventNote {
                        warning: true,
                        reason: "SwitchoverRolledBack".into(),
                        note: format!("nothing was promoted; {msg}"),
                    },
                )
                .await;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Err(e) => {
            warn!("rollback failed: {e}");
            ports
                .events
                .publish(
                    &drp,
                    EventNote {
                        warning: true,
                        reason: "RollbackFailed".into(),
                        note: format!("{e}; retrying"),
                    },
                )
                .await;
            Ok(Action::requeue(Duration::from_secs(1)))
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

async fn finish(drp: &mut DisasterRecoveryPair, ports: &Ports<'_>) -> Result<(), Error> {
    let mut st = drp.status.clone().unwrap_or_default();
    let Some(t) = st.last_transition.as_mut() else { return Ok(()) };
    let now = Timestamp::now();
    let end = t.steps.last().and_then(|s| s.finished_at.clone()).unwrap_or_else(|| now.to_string());
    t.finished_at = Some(end.clone());
    t.outcome = Some(TransitionOutcome::Completed);
    if let (Ok(a), Ok(b)) = (t.started_at.parse::<Timestamp>(), end.parse::<Timestamp>()) {
        t.rto_seconds = Some((b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0);
    }
    t.objectives = drp.spec.objectives.as_ref().and_then(|o| crate::objectives::judge(o, t));
    let verdict = t.objectives.clone();
    let (from, to, epoch, rto, lost, bound, kind) =
        (t.from.clone(), t.to.clone(), t.epoch, t.rto_seconds, t.lost_wal_bytes, t.lost_wal_bound, t.kind);
    st.current_primary = Some(to.clone());
    st.target_primary = None;
    // Probes decide Healthy or Degraded on the next round; the old primary may still be down.
    st.phase = Some(Phase::Degraded);
    // The counters of the old primary belong to its time as primary.
    for s in st.sites.iter_mut() {
        if s.name == from {
            s.consecutive_failures = 0;
            s.failing_since = None;
        }
    }
    // Synchronous replication starts afresh on the new primary (its controller's next round).
    st.sync = None;
    st.former_primary =
        Some(FormerPrimary { site: from.clone(), assessment: Assessment::Pending, ..Default::default() });
    *drp = ports.store.write_status(drp, &st).await?;
    // The other site's cluster mirrors the journal from the witness (best effort: the epoch is
    // what decides; the journal is what an SRE reads there).
    if let (Some(w), Some(t)) = (&ports.witness, st.last_transition.as_ref()) {
        match serde_json::to_string(t) {
            Ok(json) => {
                if let Err(e) = w.publish_journal(&json).await {
                    warn!(error = %e, "publishing the journal in the witness");
                }
            }
            Err(e) => warn!(error = %e, "serializing the journal"),
        }
    }
    let pair = crate::metrics::PairLabels {
        pair: format!("{}/{}", drp.namespace().unwrap_or_default(), drp.name_any()),
    };
    if let Some(r) = rto {
        ports.metrics.rto_seconds.get_or_create(&pair).set(r);
    }
    if let Some(l) = lost {
        ports.metrics.lost_wal_bytes.get_or_create(&pair).set(l);
        ports.metrics.lost_wal_exact.get_or_create(&pair).set(i64::from(bound == Some(LossBound::Exact)));
    }
    ports.metrics.epoch.get_or_create(&pair).set(epoch.0);
    let trigger = st.last_transition.as_ref().map(|t| t.trigger).unwrap_or_default();
    ports
        .metrics
        .transitions
        .get_or_create(&crate::metrics::TransitionLabels {
            pair: pair.pair.clone(),
            kind: kind.as_str().into(),
            trigger: trigger.as_str().into(),
            outcome: TransitionOutcome::Completed.as_str().into(),
        })
        .inc();
    let note = format!(
        "{to} serves (epoch {epoch}); RTO {}s, {}",
        rto.map(|r| format!("{r:.3}")).unwrap_or_else(|| "?".into()),
        LossBound::describe(bound, lost)
    );
    info!(%note, "{kind} complete");
    ports.events.publish(drp, EventNote { warning: false, reason: format!("{kind}Complete"), note }).await;
    if let Some(v) = verdict {
        for (objective, got) in [("rto", v.rto), ("rpo", v.rpo)] {
            if let Some(got) = got {
                let labels = crate::metrics::VerdictLabels {
                    pair: pair.pair.clone(),
                    objective: objective.into(),
                    verdict: got.as_str().into(),
                };
                ports.metrics.objective_verdicts.get_or_create(&labels).inc();
            }
        }
        let (warning, reason) = match v.verdict {
            Verdict::Met => (false, "ObjectivesMet"),
            Verdict::Unknown => (false, "ObjectivesUnknown"),
            Verdict::Missed => (true, "ObjectivesMissed"),
        };
        let note = format!("{kind} to {to} (epoch {epoch}): {}", v.message);
        ports.events.publish(drp, EventNote { warning, reason: reason.into(), note }).await;
    }
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
