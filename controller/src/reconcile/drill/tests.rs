use super::*;
use crate::crd::{
    test_spec, Assessment, Condition, DrillWindow, Epoch, FormerPrimary, ObjectivesVerdict, StepRecord,
    Trigger,
};

fn at(s: &str) -> Timestamp {
    s.parse().expect("a timestamp")
}

fn ready() -> Condition {
    Condition {
        type_: conditions::READY.into(),
        status: ConditionStatus::True,
        reason: "Protected".into(),
        message: "east serves".into(),
        last_transition_time: String::new(),
        observed_generation: None,
    }
}

/// A steady, ready pair at epoch `epoch` served by `primary`.
fn steady(primary: &str, epoch: i64) -> DisasterRecoveryPairStatus {
    DisasterRecoveryPairStatus {
        current_primary: Some(primary.into()),
        epoch: Epoch(epoch),
        conditions: vec![ready()],
        ..Default::default()
    }
}

/// A finished switchover `from → to` that started at `start`, quiesced at +0.1 s and resumed at +0.6 s.
fn switchover(from: &str, to: &str, epoch: i64, start: &str, outcome: TransitionOutcome) -> Transition {
    let t0 = at(start);
    let plus = |ms: i64| Timestamp::from_millisecond(t0.as_millisecond() + ms).expect("in range").to_string();
    Transition {
        trigger: Trigger::Switchover,
        kind: TransitionKind::Switchover,
        from: from.into(),
        to: to.into(),
        epoch: Epoch(epoch),
        started_at: t0.to_string(),
        finished_at: Some(plus(800)),
        rto_seconds: Some(0.8),
        lost_wal_bytes: Some(0),
        outcome: Some(outcome),
        steps: vec![
            StepRecord { name: "Quiesce".into(), started_at: Some(plus(100)), ..Default::default() },
            StepRecord {
                name: "Recycle".into(),
                finished_at: Some(plus(600)),
                message: Some("catch-up timed out".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

const ASK: Ask<'static> = Ask { token: Some("d1"), paused: false, site: None };
const NONE: Ask<'static> = Ask { token: None, paused: false, site: None };

#[test]
fn a_drill_on_a_pair_that_is_not_ready_is_refused_and_does_nothing() {
    let spec = test_spec();
    let mut st = steady("east", 0);
    st.conditions.clear();
    let mut ev = Vec::new();
    assert_eq!(tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut ev), None);
    assert!(st.drill.is_none());
    assert_eq!(st.drills.len(), 1);
    assert_eq!(st.drills[0].outcome, DrillOutcome::Refused);
    assert!(st.drills[0].message.contains("not Ready"), "{}", st.drills[0].message);
    assert_eq!(ev[0].reason, "DrillRefused");
    assert!(ev[0].warning);

    // Paused, or the former primary not following: refused too, each saying why.
    let mut st = steady("east", 1);
    st.former_primary = Some(FormerPrimary {
        site: "west".into(),
        assessment: Assessment::NeedsRewind,
        ..Default::default()
    });
    tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    assert!(st.drills[0].message.contains("former primary west does not follow"), "{}", st.drills[0].message);
    let mut st = steady("east", 1);
    tend(&spec, &mut st, &Ask { paused: true, ..ASK }, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    assert!(st.drills[0].message.contains("paused"));
}

#[test]
fn a_drill_goes_to_the_standby_waits_for_the_rejoin_and_comes_back() {
    let spec = test_spec();
    let mut st = steady("east", 4);
    let mut ev = Vec::new();
    // Leg 1 is asked for, and again next round while it has not started.
    assert_eq!(tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut ev), Some("west".into()));
    assert_eq!(ev[0].reason, "DrillStarted");
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:01Z"), &mut ev), Some("west".into()));
    let d = st.drill.clone().expect("a drill runs");
    assert_eq!((d.home.as_str(), d.away.as_str(), d.leg, d.after_epoch), ("east", "west", 1, Epoch(4)));

    // Leg 1 done: west serves, east must follow before the way back.
    st.last_transition =
        Some(switchover("east", "west", 5, "2026-12-02T10:00:01.5Z", TransitionOutcome::Completed));
    st.current_primary = Some("west".into());
    st.epoch = Epoch(5);
    st.former_primary =
        Some(FormerPrimary { site: "east".into(), assessment: Assessment::Pending, ..Default::default() });
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:03Z"), &mut ev), None);
    let d = st.drill.clone().expect("a drill runs");
    assert_eq!((d.leg, d.legs.len()), (2, 1));
    assert_eq!(d.legs[0].writes_held_seconds, Some(0.5));
    assert_eq!(
        tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:04Z"), &mut ev),
        None,
        "east does not follow yet"
    );
    st.former_primary.as_mut().expect("former primary").assessment = Assessment::Following;
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:05Z"), &mut ev), Some("east".into()));

    // Leg 2 done: the report, newest first.
    st.last_transition =
        Some(switchover("west", "east", 6, "2026-12-02T10:00:05.5Z", TransitionOutcome::Completed));
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:07Z"), &mut ev), None);
    assert!(st.drill.is_none());
    let r = &st.drills[0];
    assert_eq!((r.outcome, r.legs.len(), r.token.as_str()), (DrillOutcome::Passed, 2, "d1"));
    assert_eq!(r.legs[1].epoch, Some(Epoch(6)));
    assert!(r.message.contains("east → west → east done"), "{}", r.message);
    assert_eq!(ev.last().expect("an Event").reason, "DrillPassed");
}

#[test]
fn a_rollback_a_failover_cutting_in_or_a_missed_objective_fails_the_drill() {
    let spec = test_spec();
    let mut st = steady("east", 0);
    tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    st.last_transition =
        Some(switchover("east", "west", 1, "2026-12-02T10:00:00.5Z", TransitionOutcome::RolledBack));
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:02Z"), &mut Vec::new());
    assert_eq!(st.drills[0].outcome, DrillOutcome::Failed);
    assert!(st.drills[0].message.contains("rolled back: catch-up timed out"), "{}", st.drills[0].message);

    let mut st = steady("east", 0);
    tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    let mut failover = switchover("east", "west", 1, "2026-12-02T10:00:00.5Z", TransitionOutcome::Completed);
    failover.kind = TransitionKind::Failover;
    st.last_transition = Some(failover);
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:02Z"), &mut Vec::new());
    assert!(st.drills[0].message.contains("cut in"), "{}", st.drills[0].message);

    // Both legs completed, but one missed its RTO objective.
    let mut st = steady("east", 0);
    tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    let mut t = switchover("east", "west", 1, "2026-12-02T10:00:00.5Z", TransitionOutcome::Completed);
    t.objectives = Some(ObjectivesVerdict { verdict: Verdict::Missed, ..Default::default() });
    st.last_transition = Some(t);
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:02Z"), &mut Vec::new());
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:03Z"), &mut Vec::new()), Some("east".into()));
    st.last_transition =
        Some(switchover("west", "east", 2, "2026-12-02T10:00:03.5Z", TransitionOutcome::Completed));
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:05Z"), &mut Vec::new());
    assert_eq!(
        (st.drills[0].outcome, st.drills[0].objectives),
        (DrillOutcome::Failed, Some(Verdict::Missed))
    );
}

#[test]
fn a_former_primary_that_never_follows_ends_the_drill_at_the_return_timeout() {
    let spec = test_spec();
    let mut st = steady("east", 0);
    tend(&spec, &mut st, &ASK, at("2026-12-02T10:00:00Z"), &mut Vec::new());
    st.last_transition =
        Some(switchover("east", "west", 1, "2026-12-02T10:00:00.5Z", TransitionOutcome::Completed));
    st.former_primary = Some(FormerPrimary {
        site: "east".into(),
        assessment: Assessment::NeedsRewind,
        ..Default::default()
    });
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:00:02Z"), &mut Vec::new());
    assert!(st.drill.is_some());
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:09:00Z"), &mut Vec::new());
    assert!(st.drill.is_some(), "inside the 10m returnTimeout");
    tend(&spec, &mut st, &NONE, at("2026-12-02T10:10:03Z"), &mut Vec::new());
    let r = &st.drills[0];
    assert_eq!(r.outcome, DrillOutcome::Failed);
    assert!(
        r.message.contains("does not follow yet") && r.message.contains("switch back by hand"),
        "{}",
        r.message
    );
}

#[test]
fn scheduled_drills_run_when_due_inside_the_window_by_the_serving_site_only() {
    let mut spec = test_spec();
    spec.drills = Some(DrillPolicy {
        every: Some(crate::crd::duration::parse("168h").expect("168h")),
        window: Some(DrillWindow {
            start: "23:00".into(),
            duration: crate::crd::duration::parse("2h").expect("2h"),
        }),
        ..Default::default()
    });
    let inside = at("2026-12-02T00:30:00Z");
    let mut st = steady("east", 0);
    assert_eq!(
        tend(&spec, &mut st, &NONE, at("2026-12-02T12:00:00Z"), &mut Vec::new()),
        None,
        "outside the window"
    );
    let west = Ask { site: Some("west"), ..NONE };
    assert_eq!(
        tend(&spec, &mut st, &west, inside, &mut Vec::new()),
        None,
        "the standby's controller never schedules"
    );
    assert_eq!(tend(&spec, &mut st, &NONE, inside, &mut Vec::new()), Some("west".into()));
    assert!(st.drill.as_ref().expect("a drill runs").token.starts_with("scheduled-20261202T003000Z"));

    // Not due again until `every` after the last one.
    let mut st = steady("east", 0);
    st.drills.push(DrillReport {
        started_at: "2026-11-30T00:00:00Z".into(),
        outcome: DrillOutcome::Passed,
        ..Default::default()
    });
    assert_eq!(tend(&spec, &mut st, &NONE, inside, &mut Vec::new()), None);
    assert_eq!(tend(&spec, &mut st, &NONE, at("2026-12-07T00:10:00Z"), &mut Vec::new()), Some("west".into()));
    // Unset `every`: never on its own.
    spec.drills.as_mut().expect("drills").every = None;
    let mut st = steady("east", 0);
    assert_eq!(tend(&spec, &mut st, &NONE, inside, &mut Vec::new()), None);
}
