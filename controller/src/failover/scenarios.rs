//! The executor against the fakes: every step failing once (retried, or stopping a switchover
//! before its epoch), crashes at every status write (resumed, and every side effect happens
//! exactly once), lost epoch swaps, a fence that fails, a switchover rolled back, and what the
//! journal says after each.

use std::time::Duration;

use kube::runtime::controller::Action;

use super::{
    executor::backoff,
    fakes::{World, CRASH, INJECTED, PRIMARY_LSN, STANDBY_LSN},
    steps::FENCE_ATTEMPTS,
    Kind, Step,
};
use crate::{
    context::Error,
    crd::{
        conditions::{reasons, FAILOVER_BLOCKED},
        DisasterRecoveryPairStatus, Phase, StepOutcome, Transition, TransitionOutcome, Trigger,
    },
};

const DONE: Duration = Duration::from_millis(100);

fn blocked(st: &DisasterRecoveryPairStatus) -> (String, String) {
    st.conditions
        .iter()
        .find(|c| c.type_ == FAILOVER_BLOCKED)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Every step of a finished journal: started, finished, an outcome; and the transition closed.
fn assert_closed(t: &Transition, outcome: TransitionOutcome) {
    assert_eq!(t.outcome, Some(outcome), "{t:#?}");
    assert!(t.finished_at.is_some(), "{t:#?}");
    for s in &t.steps {
        assert!(s.started_at.is_some() && s.finished_at.is_some(), "{s:?}");
        assert!(s.outcome.is_some() && s.attempts >= 1, "{s:?}");
    }
}

/// One promotion, one epoch move, one DNS change, one DataSource rewrite, all for `west` at epoch 1.
fn assert_once(w: &World) {
    assert_eq!(w.pg.promotions(), 1, "promotions");
    assert_eq!(w.pg.server("west").marker, Some(1));
    if let Some(wit) = &w.witness {
        let h = wit.held();
        assert_eq!((h.moves, h.epoch, h.transition.as_str()), (1, 1, "uid-1/1/west"));
    }
    let dns = w.dns.record();
    assert_eq!((dns.changes, dns.answer), (1, Some("192.0.2.20".parse().expect("ip"))));
    let ds = w.data_source.targets();
    assert_eq!((ds.rewrites, ds.points_at.as_deref(), ds.epoch), (1, Some("west"), 1));
    let st = w.store.status();
    assert_eq!(
        (st.epoch.0, st.current_primary.as_deref(), st.target_primary.as_deref()),
        (1, Some("west"), None)
    );
}

#[tokio::test]
async fn a_failover_runs_every_step_once_and_journals_it() -> Result<(), Error> {
    let w = World::new();
    w.pg.set("east", |s| s.reachable = false);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);

    // Started: the epoch is taken and journalled, nothing else has run.
    let t = w.store.journal();
    assert_eq!(
        (t.kind.as_str(), t.trigger.as_str(), t.epoch.0, t.id.as_str()),
        ("Failover", "Automatic", 1, "uid-1/1/west")
    );
    assert_eq!(t.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), Step::FAILOVER.map(|s| s.name()));
    assert_eq!((t.steps[0].outcome, t.steps[0].attempts), (Some(StepOutcome::Succeeded), 1));
    assert!(t.steps[1..].iter().all(|s| s.started_at.is_none() && s.attempts == 0 && s.outcome.is_none()));
    assert_eq!(t.outcome, None);
    let st = w.store.status();
    assert_eq!(
        (st.phase, st.epoch.0, st.target_primary.as_deref()),
        (Some(Phase::FailingOver), 1, Some("west"))
    );
    assert_eq!(w.w().held().moves, 1);

    assert_eq!(w.run().await?, Action::requeue(DONE));
    let t = w.store.journal();
    assert_closed(&t, TransitionOutcome::Completed);
    assert!(t.steps.iter().all(|s| s.attempts == 1));
    assert_eq!(t.finished_at, t.steps.last().and_then(|s| s.finished_at.clone()));
    assert!(t.rto_seconds.is_some());
    let fence = w.step(Step::Fence);
    assert_eq!(fence.outcome, Some(StepOutcome::Skipped));
    assert!(fence.message.as_deref().unwrap_or_default().starts_with("old primary unreachable"), "{fence:?}");
    for s in [Step::Promote, Step::VerifyWritable, Step::RewriteDataSource, Step::Recycle, Step::FlipDns] {
        assert_eq!(w.step(s).outcome, Some(StepOutcome::Succeeded), "{s}");
    }
    assert_eq!(w.step(Step::Promote).message.as_deref(), Some("west promoted"));
    // Lost WAL: the primary's last probed position minus what the standby held when promoted.
    assert_eq!(t.lost_wal_bytes, Some(i64::try_from(PRIMARY_LSN.bytes_after(STANDBY_LSN)).unwrap_or(-1)));
    // ... and only a lower bound: the old primary died unreachable.
    assert_eq!(t.lost_wal_bound, Some(crate::crd::LossBound::AtLeast));
    let complete =
        w.events.all().into_iter().find(|e| e.reason == "FailoverComplete").expect("FailoverComplete");
    assert!(
        complete.note.contains(
            "lost WAL at least 256 bytes; commits acknowledged after the last observed position may be lost"
        ),
        "{}",
        complete.note
    );
    assert_eq!(t.promoted_at_lsn, Some(STANDBY_LSN.to_string()));
    assert_once(&w);
    assert_eq!(w.pgbouncer.seen().recycled, vec![("west".to_string(), 1)]);
    assert_eq!(w.http.seen().recycled.len(), 1);
    let st = w.store.status();
    assert_eq!(st.phase, Some(Phase::Degraded));
    let fp = st.former_primary.unwrap_or_default();
    assert_eq!((fp.site.as_str(), fp.assessment.as_str()), ("east", "Pending"));

    // Each step was journalled as started (attempt counted) before it ran, then finished.
    let writes = w.store.writes();
    for (i, step) in Step::FAILOVER.iter().enumerate().skip(1) {
        let first = writes
            .iter()
            .map(|s| s.last_transition.clone().unwrap_or_default().steps[i].clone())
            .find(|r| r.started_at.is_some())
            .unwrap_or_default();
        assert_eq!((first.attempts, first.finished_at.as_deref(), first.outcome), (1, None, None), "{step}");
    }
    let reasons = w.events.reasons();
    assert_eq!(reasons.first().map(String::as_str), Some("FailoverStarted"));
    assert_eq!(reasons.last().map(String::as_str), Some("FailoverComplete"));
    for s in &Step::FAILOVER[1..] {
        assert!(reasons.contains(&s.name().to_string()), "{s}: {reasons:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_failure_at_any_failover_step_is_retried_and_the_effects_happen_once() -> Result<(), Error> {
    type Inject = fn(&World);
    let cases: [(Step, Inject); 6] = [
        (Step::Fence, |w| w.pg.faults.fail("east:fence", 1)),
        (Step::Promote, |w| w.pg.faults.fail("west:promote", 1)),
        (Step::VerifyWritable, |w| w.pg.faults.fail("west:write_epoch_marker", 1)),
        (Step::RewriteDataSource, |w| w.data_source.faults.fail("rewrite", 1)),
        (Step::Recycle, |w| w.http.faults.fail("recycle", 1)),
        (Step::FlipDns, |w| w.dns.faults.fail("point_at", 1)),
    ];
    for (step, inject) in cases {
        let w = World::new();
        inject(&w);
        assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
        assert_eq!(w.run().await?, Action::requeue(backoff(1)), "{step}");
        let rec = w.step(step);
        assert_eq!((rec.attempts, rec.finished_at.as_deref(), rec.outcome), (1, None, None), "{step}");
        assert!(rec.message.as_deref().unwrap_or_default().contains(INJECTED), "{step}: {rec:?}");
        let t = w.store.journal();
        let at = Step::FAILOVER.iter().position(|s| *s == step).unwrap_or_default();
        assert!(t.steps[..at].iter().all(|s| s.finished_at.is_some()), "{step}: earlier steps are done");
        if step == Step::RewriteDataSource {
            // The cutover's moves run together, but the application is recycled only once its
            // DataSource names the new primary: the PgBouncer was repointed, the HTTP call waits.
            let recycle = w.step(Step::Recycle);
            assert!(recycle.finished_at.is_none(), "Recycle waits for the DataSource: {recycle:?}");
            assert!(recycle.message.unwrap_or_default().contains("wait for RewriteDataSource"));
            assert_eq!((w.pgbouncer.seen().recycled.len(), w.http.seen().recycled.len()), (1, 0));
            assert!(w.step(Step::FlipDns).finished_at.is_some(), "FlipDns ran beside it");
        } else if step.is_cutover() {
            // The cutover's moves run together: the others are done, the failed one waits.
            let others = t.steps.iter().enumerate().filter(|(i, _)| *i != at);
            assert!(others.clone().all(|(_, s)| s.finished_at.is_some()), "{step}: the other moves are done");
        } else {
            assert!(t.steps[at + 1..].iter().all(|s| s.started_at.is_none()), "{step}: later steps wait");
        }
        assert_eq!((t.outcome, t.finished_at.as_deref()), (None, None));
        assert_eq!(w.store.status().phase, Some(Phase::FailingOver));
        let failed = w.events.all().into_iter().find(|e| e.reason == format!("{step}Failed"));
        assert!(failed.is_some_and(|e| e.warning && e.note.starts_with("attempt 1: ")), "{step}");

        assert_eq!(w.run().await?, Action::requeue(DONE), "{step}");
        assert_closed(&w.store.journal(), TransitionOutcome::Completed);
        let rec = w.step(step);
        assert_eq!((rec.attempts, rec.outcome), (2, Some(StepOutcome::Succeeded)), "{step}");
        assert_once(&w);
    }
    Ok(())
}

#[tokio::test]
async fn a_switchover_runs_every_step_and_loses_nothing() -> Result<(), Error> {
    let w = World::new();
    w.pg.set("west", |s| (s.received, s.replayed) = (Some(PRIMARY_LSN), Some(PRIMARY_LSN)));
    // The old primary's keeper holds the leader key: a switchover breaks it.
    w.w().set(|h| h.leader = Some("east".into()));
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    let t = w.store.journal();
    assert!(t.steps.iter().all(|s| s.started_at.is_none()), "a switchover takes the epoch later");
    assert_eq!((w.store.status().epoch.0, w.w().held().moves), (0, 0));

    assert_eq!(w.run().await?, Action::requeue(DONE));
    let t = w.store.journal();
    assert_closed(&t, TransitionOutcome::Completed);
    assert!(t.steps.iter().all(|s| s.attempts == 1 && s.outcome == Some(StepOutcome::Succeeded)), "{t:#?}");
    assert_eq!((t.final_lsn, t.lost_wal_bytes), (Some(PRIMARY_LSN.to_string()), Some(0)));
    assert_once(&w);
    assert_eq!(w.w().held().leader, None);
    let east = w.pg.server("east");
    assert!(east.fenced && east.fences == 1);
    assert_eq!(w.pgbouncer.seen().holds, 1);
    Ok(())
}

#[tokio::test]
async fn a_switchover_stops_and_rolls_back_before_its_epoch_and_retries_after_it() -> Result<(), Error> {
    let caught_up =
        |w: &World| w.pg.set("west", |s| (s.received, s.replayed) = (Some(PRIMARY_LSN), Some(PRIMARY_LSN)));

    // PreCheck: a standby that does not stream stops the switchover at once.
    let w = World::new();
    w.pg.set("west", |s| s.streaming = false);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let pre = w.step(Step::PreCheck);
    assert_eq!((pre.outcome, pre.attempts), (Some(StepOutcome::Aborted), 1));
    assert!(pre.message.as_deref().unwrap_or_default().contains("is not streaming"), "{pre:?}");
    assert_rolled_back(&w);

    // Quiesce: retried, then given up after SWITCHOVER_ATTEMPTS, and rolled back.
    let w = World::new();
    caught_up(&w);
    w.pg.faults.fail("east:fence", u32::MAX);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    assert_eq!(w.run().await?, Action::requeue(backoff(1)));
    assert_eq!(w.run().await?, Action::requeue(backoff(2)));
    assert_eq!(w.store.journal().outcome, None);
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let q = w.step(Step::Quiesce);
    assert_eq!((q.outcome, q.attempts), (Some(StepOutcome::Aborted), 3));
    assert!(q.message.as_deref().unwrap_or_default().ends_with("(after 3 attempts)"), "{q:?}");
    assert_rolled_back(&w);

    // TakeEpoch: another controller moved the epoch meanwhile; the swap is lost and nothing is promoted.
    let w = World::new();
    caught_up(&w);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    w.w().set(|h| (h.epoch, h.holder, h.transition) = (1, "east".into(), "uid-1/1/east".into()));
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let take = w.step(Step::TakeEpoch);
    assert_eq!(take.outcome, Some(StepOutcome::Aborted));
    assert!(take.message.as_deref().unwrap_or_default().contains("etcd holds epoch 1"), "{take:?}");
    assert_rolled_back(&w);
    assert_eq!(w.w().held().holder, "east");

    // TakeEpoch lost to a transition that promoted the other site (the other cluster's copy, or a
    // forced failover): the rollback must not unfence east, which now has to follow west.
    let w = World::new();
    caught_up(&w);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    w.w().set(|h| (h.epoch, h.holder, h.transition) = (1, "west".into(), "uid-2/1/west".into()));
    assert_eq!(w.run().await?, Action::requeue(DONE));
    assert_eq!(w.store.journal().outcome, Some(TransitionOutcome::RolledBack));
    let east = w.pg.server("east");
    assert!(east.fenced && east.unfences == 0, "east unfenced under west's epoch: {east:?}");
    assert!(w.pgbouncer.seen().held, "the PgBouncer is the other transition's to resume");
    assert!(w.events.all().iter().any(|e| e.note.contains("NOT unfenced")), "{:?}", w.events.all());

    // After TakeEpoch the only way is forward: a failing Promote is retried, never rolled back.
    let w = World::new();
    caught_up(&w);
    w.pg.faults.fail("west:promote", 2);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    assert_eq!(w.run().await?, Action::requeue(backoff(1)));
    assert_eq!(w.run().await?, Action::requeue(backoff(2)));
    assert_eq!(w.run().await?, Action::requeue(DONE));
    assert_closed(&w.store.journal(), TransitionOutcome::Completed);
    assert_eq!(w.step(Step::Promote).attempts, 3);
    assert_once(&w);
    Ok(())
}

/// A switchover rolled back: nothing promoted, epoch unmoved, the old primary writable and the
/// PgBouncers resumed, the journal closed as `RolledBack`.
fn assert_rolled_back(w: &World) {
    let t = w.store.journal();
    assert_eq!(t.outcome, Some(TransitionOutcome::RolledBack), "{t:#?}");
    assert!(t.finished_at.is_some());
    assert!(t.steps.iter().all(|s| s.outcome != Some(StepOutcome::Succeeded) || s.name != "Promote"));
    assert_eq!(w.pg.promotions(), 0);
    assert_eq!(w.store.status().epoch.0, 0);
    assert!(w.witness.as_ref().is_none_or(|x| x.held().holder != "west"), "our epoch swap never won");
    let east = w.pg.server("east");
    assert!(!east.fenced && east.unfences >= 1, "{east:?}");
    let pgb = w.pgbouncer.seen();
    assert!(!pgb.held && pgb.releases >= 1, "{pgb:?}");
    let st = w.store.status();
    assert_eq!(
        (st.phase, st.target_primary.as_deref(), st.current_primary.as_deref()),
        (Some(Phase::Degraded), None, Some("east"))
    );
    assert!(w.events.reasons().contains(&"SwitchoverRolledBack".to_string()));
}

#[tokio::test]
async fn a_switchover_whose_standby_cannot_catch_up_rolls_back() -> Result<(), Error> {
    let mut spec = super::fakes::spec();
    spec.failover.catch_up_timeout = std::time::Duration::from_millis(50).into();
    let w = World::with_spec(spec);
    // The standby stays 256 bytes short of the quiesced primary's last position.
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    // The first rollback attempt fails (the old primary does not answer), and is retried.
    w.pg.faults.fail("east:unfence", 1);
    assert_eq!(w.run().await?, Action::requeue(Duration::from_secs(1)));
    let c = w.step(Step::CatchUp);
    assert_eq!((c.outcome, c.attempts), (Some(StepOutcome::Aborted), 1));
    assert!(c.message.as_deref().unwrap_or_default().contains("256 bytes short"), "{c:?}");
    assert_eq!(w.store.journal().outcome, Some(TransitionOutcome::RollingBack));
    assert_eq!(w.store.journal().finished_at, None);
    assert!(w.events.reasons().contains(&"RollbackFailed".to_string()));
    assert_eq!(w.step(Step::Quiesce).outcome, Some(StepOutcome::Succeeded));
    assert!(w.pg.server("east").fenced, "still fenced until the rollback succeeds");

    assert_eq!(w.run().await?, Action::requeue(DONE));
    assert_rolled_back(&w);
    let t = w.store.journal();
    assert!(t.steps.iter().skip(3).all(|s| s.started_at.is_none()), "nothing after CatchUp ran: {t:#?}");
    assert_eq!(w.w().held().moves, 0);
    Ok(())
}

/// Drives a transition the way the reconciler does after any crash: start it when the status has
/// no journal yet, else run it; until it is closed.
async fn drive(w: &World, kind: Kind, trigger: Trigger) {
    for _ in 0..60 {
        let st = w.store.status();
        match &st.last_transition {
            None => {
                let _ = w.start(kind, trigger).await;
            }
            Some(t) if t.finished_at.is_some() => return,
            Some(_) => {
                let _ = w.run().await;
            }
        }
    }
    panic!("not finished: {:#?}", w.store.journal());
}

#[tokio::test]
async fn a_crash_at_any_status_write_resumes_and_every_effect_happens_once() -> Result<(), Error> {
    for (kind, trigger) in [(Kind::Failover, Trigger::Automatic), (Kind::Switchover, Trigger::Switchover)] {
        let world = || {
            let w = World::new();
            w.pg.set("west", |s| (s.received, s.replayed) = (Some(PRIMARY_LSN), Some(PRIMARY_LSN)));
            w
        };
        let clean = world();
        drive(&clean, kind, trigger).await;
        assert_once(&clean);
        let writes = clean.store.writes().len();
        // A step's end and the next one's start share a write, and the cutover's three moves share
        // theirs: one write per step but two.
        assert!(writes >= kind.steps().len() - 2, "{kind:?}: {writes} writes");
        for n in 1..=writes {
            for lands in [true, false] {
                let w = world();
                w.store.crash_at_write(n, lands);
                drive(&w, kind, trigger).await;
                let t = w.store.journal();
                assert_closed(&t, TransitionOutcome::Completed);
                assert_once(&w);
                // The crashed step is attempted again, the others once.
                assert!(t.steps.iter().all(|s| s.attempts <= 2), "{kind:?} write {n} lands {lands}: {t:#?}");
                // One step, or the cutover's moves that were running together.
                let again: Vec<&str> =
                    t.steps.iter().filter(|s| s.attempts == 2).map(|s| s.name.as_str()).collect();
                let cutover = |n: &&str| Step::from_name(n).is_some_and(Step::is_cutover);
                assert!(again.len() <= 1 || again.iter().all(cutover), "{kind:?} write {n}: {again:?}");
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_crash_between_started_and_the_effect_and_one_after_the_effect_each_act_once() -> Result<(), Error>
{
    let started = |name: &'static str| {
        move |st: &DisasterRecoveryPairStatus| {
            st.last_transition
                .as_ref()
                .and_then(|t| t.steps.iter().find(|s| s.name == name))
                .is_some_and(|s| s.started_at.is_some() && s.finished_at.is_none())
        }
    };
    let finished = |name: &'static str| {
        move |st: &DisasterRecoveryPairStatus| {
            st.last_transition
                .as_ref()
                .and_then(|t| t.steps.iter().find(|s| s.name == name))
                .is_some_and(|s| s.finished_at.is_some())
        }
    };
    for step in [Step::Promote, Step::FlipDns] {
        // Recorded as started (the write landed), then killed before the side effect.
        let w = World::new();
        w.store.crash_when(started(step.name()), true);
        assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
        assert!(matches!(w.run().await, Err(Error::UpdateStatus(m)) if m == CRASH));
        assert_eq!((w.pg.promotions(), w.dns.record().changes), (u32::from(step == Step::FlipDns), 0));
        let rec = w.step(step);
        assert_eq!((rec.attempts, rec.finished_at.as_deref()), (1, None));
        assert_eq!(w.run().await?, Action::requeue(DONE));
        assert_eq!(w.step(step).attempts, 2);
        assert_once(&w);

        // The side effect done, killed before it was journalled as finished.
        let w = World::new();
        w.store.crash_when(finished(step.name()), false);
        assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
        assert!(w.run().await.is_err());
        assert_eq!(w.pg.promotions(), 1);
        assert_eq!(w.dns.record().changes, u32::from(step == Step::FlipDns));
        assert_eq!(w.step(step).finished_at, None);
        assert_eq!(w.run().await?, Action::requeue(DONE));
        assert_eq!(w.step(step).attempts, 2);
        assert_once(&w);
        if step == Step::Promote {
            assert_eq!(w.step(step).message.as_deref(), Some("west was already promoted"));
        }
    }

    // A switchover's epoch swap done, killed before TakeEpoch was journalled: the resumed swap of
    // the same transition counts as won and the epoch moves once.
    let w = World::new();
    w.pg.set("west", |s| (s.received, s.replayed) = (Some(PRIMARY_LSN), Some(PRIMARY_LSN)));
    w.store.crash_when(finished("TakeEpoch"), false);
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await?);
    assert!(w.run().await.is_err());
    assert_eq!((w.w().held().moves, w.store.status().epoch.0), (1, 0));
    assert_eq!(w.run().await?, Action::requeue(DONE));
    assert_eq!(w.step(Step::TakeEpoch).attempts, 2);
    assert_once(&w);

    // A failover killed between its epoch swap and the write that starts the journal: started
    // again, the same transition's swap is won again and nothing moves twice.
    let w = World::new();
    w.store.crash_at_write(1, false);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await.is_err());
    assert_eq!((w.w().held().moves, w.store.status().last_transition), (1, None));
    drive(&w, Kind::Failover, Trigger::Automatic).await;
    assert_once(&w);
    Ok(())
}

#[tokio::test]
async fn a_lost_epoch_swap_starts_nothing_and_a_stolen_epoch_stops_the_transition() -> Result<(), Error> {
    // This pair's own transition, by another controller between its swap and its status write.
    let w = World::new();
    w.w().set(|h| (h.epoch, h.holder, h.transition) = (1, "east".into(), "uid-1/1/east".into()));
    assert!(!w.start(Kind::Failover, Trigger::Automatic).await?);
    let (reason, msg) = blocked(&w.store.status());
    assert_eq!(reason, reasons::LOST_EPOCH_SWAP);
    assert!(msg.contains("etcd holds epoch 1"), "{msg}");
    assert_eq!(w.store.status().last_transition, None);
    assert_eq!((w.pg.promotions(), w.w().held().moves), (0, 0));
    assert!(w.events.reasons().contains(&reasons::LOST_EPOCH_SWAP.to_string()));

    // A record of an earlier pair of this name is adopted instead.
    let w = World::new();
    w.w().set(|h| (h.epoch, h.holder, h.transition) = (5, "west".into(), "old-uid/5/west".into()));
    assert!(!w.start(Kind::Failover, Trigger::Automatic).await?);
    let st = w.store.status();
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (5, Some("west")));
    assert_eq!(blocked(&st).0, reasons::EPOCH_ADOPTED);
    assert_eq!(w.pg.promotions(), 0);

    // The primary site's leader key is alive: nothing is promoted until it expires, unless forced.
    // It is tried again as the lease can have expired (7 s left, whole seconds), not a round later.
    let w = World::new();
    w.w().set(|h| h.leader = Some("east".into()));
    assert_eq!(
        w.start_retry(Kind::Failover, Trigger::Automatic).await?,
        (false, Some(std::time::Duration::from_secs(6)))
    );
    assert_eq!(blocked(&w.store.status()).0, reasons::LEADER_KEY_HELD);
    assert_eq!(w.w().held().moves, 0);
    assert!(w.start(Kind::Failover, Trigger::Forced).await?);
    assert_eq!((w.w().held().moves, w.w().held().leader), (1, None));

    // With a site fence hook on the primary's site its keeper may release the key any moment: tried
    // again every probe interval. Once released, TakeEpoch says why it did not wait for the lease.
    let mut hooked = super::fakes::spec();
    hooked.sites[0].fence_hook = Some(crate::crd::FenceHook {
        command: vec!["/hooks/fence".into()],
        timeout: std::time::Duration::from_secs(30).into(),
    });
    let every: std::time::Duration = hooked.failover.probe_interval.into();
    let w = World::with_spec(hooked);
    w.w().set(|h| h.leader = Some("east".into()));
    assert_eq!(
        w.start_retry(Kind::Failover, Trigger::Automatic).await?,
        (false, Some(every.min(std::time::Duration::from_secs(6))))
    );
    w.w().set(|h| {
        h.leader = None;
        h.released = Some((
            0,
            "east released at 2026-12-02T10:00:00Z after its site fence hook confirmed the fence".into(),
        ));
    });
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    let take = w.step(Step::TakeEpoch).message.unwrap_or_default();
    assert!(
        take.contains("the leader key did not wait for its lease: east released at")
            && take.contains("site fence hook confirmed"),
        "{take}"
    );

    // The witness does not answer.
    let w = World::new();
    w.w().faults.fail("swap", 1);
    assert!(!w.start(Kind::Failover, Trigger::Automatic).await?);
    let (reason, msg) = blocked(&w.store.status());
    assert_eq!(reason, reasons::WITNESS_UNAVAILABLE);
    assert!(msg.starts_with("cannot take the epoch: ") && msg.contains(INJECTED), "{msg}");

    // Without a witness the status write is the swap: a concurrent writer (409) starts nothing.
    let w = World::new().without_witness();
    w.store.conflict(1);
    assert!(matches!(w.start(Kind::Failover, Trigger::Automatic).await, Err(Error::Conflict)));
    assert_eq!(w.store.status().last_transition, None);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    assert_eq!(
        w.step(Step::TakeEpoch).message.as_deref(),
        Some("epoch taken by a status write with a resourceVersion precondition")
    );

    // Another controller took the epoch after ours: the transition stops before its next step.
    let w = World::new();
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    w.w().set(|h| (h.epoch, h.holder, h.transition) = (2, "east".into(), "uid-1/2/east".into()));
    assert_eq!(w.run().await?, Action::await_change());
    let st = w.store.status();
    assert_eq!(st.phase, Some(Phase::Failed));
    let (reason, msg) = blocked(&st);
    assert_eq!(reason, reasons::LOST_EPOCH_SWAP);
    assert!(msg.ends_with("stopping before Fence"), "{msg}");
    assert_eq!(w.step(Step::Fence).started_at, None);
    assert_eq!(w.pg.promotions(), 0);
    Ok(())
}

#[tokio::test]
async fn a_fence_that_fails_is_retried_then_skipped_and_the_failover_goes_on() -> Result<(), Error> {
    let w = World::new();
    w.pg.faults.fail("east:fence", u32::MAX);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    for attempt in 1..FENCE_ATTEMPTS {
        assert_eq!(w.run().await?, Action::requeue(backoff(attempt)));
        let f = w.step(Step::Fence);
        assert_eq!((f.attempts, f.finished_at.as_deref()), (attempt, None));
        assert_eq!(f.message.as_deref(), Some(format!("fence east: fence: {INJECTED}").as_str()));
    }
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let f = w.step(Step::Fence);
    assert_eq!((f.attempts, f.outcome), (FENCE_ATTEMPTS, Some(StepOutcome::Skipped)));
    assert!(f
        .message
        .as_deref()
        .unwrap_or_default()
        .starts_with("fencing east failed 3 times, going on without it"));
    assert_closed(&w.store.journal(), TransitionOutcome::Completed);
    assert_once(&w);

    // A PgBouncer that cannot be paused is noted; the database fence still counts.
    let w = World::new();
    w.pgbouncer.faults.fail("hold", 1);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let f = w.step(Step::Fence);
    assert_eq!((f.attempts, f.outcome), (1, Some(StepOutcome::Succeeded)));
    assert!(f.message.as_deref().unwrap_or_default().contains("(pause skipped: "), "{f:?}");
    assert!(w.pg.server("east").fenced);
    Ok(())
}

#[tokio::test]
async fn a_journal_understudy_did_not_write_is_stopped_not_guessed_at() -> Result<(), Error> {
    let w = World::new();
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    w.store.edit(|st| {
        if let Some(t) = st.last_transition.as_mut() {
            t.steps[2].name = "Teleport".into();
        }
    });
    assert_eq!(w.run().await?, Action::await_change());
    let st = w.store.status();
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(blocked(&st).0, reasons::INVALID_JOURNAL);
    // Fence ran (it comes before the unknown step); nothing after it did.
    assert_eq!(w.pg.promotions(), 0);
    assert_eq!(w.store.journal().outcome, None);
    Ok(())
}

#[tokio::test]
async fn after_the_epoch_even_a_fatal_or_configuration_error_is_retried_never_rolled_back(
) -> Result<(), Error> {
    // A newer marker (fatal: another transition owns the pair) and a missing dnsTarget
    // (configuration) stop nothing once the epoch is ours: there is nothing left to undo.
    let mut spec = super::fakes::spec();
    spec.sites[1].dns_target = None;
    let w = World::with_spec(spec);
    w.pg.set("west", |s| s.marker = Some(9));
    assert!(w.start(Kind::Switchover, Trigger::Switchover).await.is_ok_and(|s| s));
    w.pg.set("west", |s| (s.received, s.replayed) = (Some(PRIMARY_LSN), Some(PRIMARY_LSN)));
    assert_eq!(w.run().await?, Action::requeue(backoff(1)));
    let v = w.step(Step::VerifyWritable);
    assert_eq!((v.attempts, v.outcome), (1, None));
    assert!(v.message.as_deref().unwrap_or_default().contains("newer than ours"), "{v:?}");
    assert_eq!(w.store.journal().outcome, None);
    w.pg.set("west", |s| s.marker = None);
    assert_eq!(w.run().await?, Action::requeue(backoff(1)));
    let f = w.step(Step::FlipDns);
    assert_eq!((f.attempts, f.outcome), (1, None));
    assert_eq!(f.message.as_deref(), Some("spec.sites[1].dnsTarget is required when spec.dns lists records"));
    assert_eq!(w.store.journal().outcome, None);
    assert_eq!(w.pg.promotions(), 1);
    Ok(())
}

#[tokio::test]
async fn under_sync_a_failover_from_a_synchronous_primary_loses_exactly_nothing_and_the_new_primary_waits(
) -> Result<(), Error> {
    let mut spec = super::fakes::spec();
    spec.failover.replication = crate::crd::ReplicationMode::Sync;
    let w = World::with_spec(spec);
    w.store.edit_status(|st| {
        st.sites[0].synchronous_standby = Some(true);
        st.sites[0].synchronous_standby_names = Some("*".into());
    });
    w.pg.set("east", |s| s.reachable = false);
    assert!(w.start(Kind::Failover, Trigger::Automatic).await?);
    assert_eq!(w.run().await?, Action::requeue(DONE));
    let t = w.store.journal();
    assert_closed(&t, TransitionOutcome::Completed);
    assert_eq!((t.lost_wal_bytes, t.lost_wal_bound), (Some(0), Some(crate::crd::LossBound::Exact)));
    assert_eq!(w.pg.server("west").sync_names, "*", "set before the promotion");
    let promote = w.step(Step::Promote).message.unwrap_or_default();
    assert!(promote.contains("0 acknowledged bytes lost: the standby was synchronous"), "{promote}");
    let complete =
        w.events.all().into_iter().find(|e| e.reason == "FailoverComplete").expect("FailoverComplete");
    assert!(complete.note.contains("lost WAL 0 bytes (exact)"), "{}", complete.note);
    assert_eq!(w.store.status().sync, None, "synchronous replication starts afresh on the new primary");
    Ok(())
}
