//! The failover decision, pure like `decide`: given the freshly observed status, the annotations and
//! the clock, is a failover wanted, and may it run? Each refusal is a value whose reason is the guard's
//! name; it becomes the `FailoverBlocked` condition and a Warning Event, and nothing else happens.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::crd::{
    annotations,
    conditions::{self, reasons},
    ConditionStatus, DegradedFailover, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, FailoverMode,
    PendingApproval, ReplicationMode,
};
use crate::{
    crd::conditions::set_condition,
    events::EventNote,
    units::{human_bytes, quantity_bytes},
};

/// What the controller should do about the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The primary is fine (or not yet confirmed dead): nothing to do.
    Steady,
    /// A failover is wanted but a guard refuses it.
    Blocked { reason: &'static str, message: String },
    /// `Approve` mode: wait for the annotation carrying `nonce`.
    AwaitApproval { nonce: String, to: String },
    /// Run a failover from `from` to `to`.
    Failover { trigger: Trigger, from: String, to: String },
}

/// Why a transition started (the journal's own type; the guard starts `Automatic` and `Approved`).
pub use crate::crd::Trigger;

/// Decides. `fresh_nonce` is called only when a new approval nonce is needed.
pub fn next(
    spec: &DisasterRecoveryPairSpec,
    st: &DisasterRecoveryPairStatus,
    annotations: &BTreeMap<String, String>,
    now: Timestamp,
    fresh_nonce: impl FnOnce() -> String,
) -> Decision {
    let who = crate::authority::primary(spec, Some(st));
    let (from, to) = (who.site.to_string(), who.standby.to_string());
    if to.is_empty() {
        return Decision::Steady;
    }
    let threshold = spec.failover.failure_threshold.max(1);
    let p = st.sites.iter().find(|s| s.name == from);
    let s = st.sites.iter().find(|s| s.name == to);
    let failures = p.map(|p| p.consecutive_failures).unwrap_or(0);
    if failures < threshold {
        return Decision::Steady;
    }
    let blocked = |reason, message: String| Decision::Blocked { reason, message };

    if annotations.get(annotations::PAUSED).map(String::as_str) == Some("true") {
        return blocked(
            reasons::PAUSED,
            format!("primary {from} is down but automation is paused ({}=true)", annotations::PAUSED),
        );
    }
    if let Some(c) = st.conditions.iter().find(|c| {
        c.type_ == crate::crd::conditions::SPEC_VALID
            && c.status == ConditionStatus::False
            && c.reason == reasons::SPEC_DRIFT
    }) {
        return blocked(
            reasons::SPEC_DRIFT,
            format!("primary {from} is down ({failures} consecutive failed probes) but {}", c.message),
        );
    }
    if spec.failover.mode == FailoverMode::Manual {
        return blocked(
            reasons::MANUAL_MODE,
            format!(
                "primary {from} is down ({failures} consecutive failed probes); failover mode is Manual: \
                 to fail over to {to}, run kubectl annotate drp <name> {}=<token>",
                annotations::FAILOVER
            ),
        );
    }
    if let Some(t) = &st.last_transition {
        if let (Some(fin), Ok(cooldown)) = (
            t.finished_at.as_deref().and_then(|f| f.parse::<Timestamp>().ok()),
            jiff::SignedDuration::try_from(std::time::Duration::from(spec.failover.cooldown)),
        ) {
            if let Ok(until) = fin.checked_add(cooldown) {
                if now < until {
                    return blocked(
                        reasons::IN_COOLDOWN,
                        format!("primary {from} is down, but the last transition finished at {fin} and the cooldown lasts until {until}"),
                    );
                }
            }
        }
    }
    match s {
        Some(s) if s.reachable && s.in_recovery == Some(true) => {}
        Some(s) if s.reachable => {
            return blocked(reasons::STANDBY_UNAVAILABLE, format!("primary {from} is down, and standby {to} is not in recovery: it is not a follower of {from} and will not be promoted"));
        }
        _ => {
            let why = s.and_then(|s| s.message.clone()).unwrap_or_else(|| "never probed".into());
            return blocked(
                reasons::STANDBY_UNAVAILABLE,
                format!("primary {from} is down, and standby {to} is unreachable too: {why}"),
            );
        }
    }
    match (st.replication_lag_bytes, quantity_bytes(&spec.failover.max_lag_bytes.0)) {
        (_, Err(e)) => return blocked(reasons::LAG_OVER_BUDGET, format!("spec.failover.maxLagBytes: {e}")),
        (None, _) => return blocked(reasons::LAG_OVER_BUDGET, format!("primary {from} is down and the standby's lag was never measured; refusing to guess the data loss")),
        (Some(lag), Ok(max)) if lag as u64 > max => {
            return blocked(
                reasons::LAG_OVER_BUDGET,
                format!("primary {from} is down; last known lag {} > maxLagBytes {}: promoting {to} would lose more than the budget", human_bytes(lag as u64), human_bytes(max)),
            )
        }
        _ => {}
    }
    // Synchronous replication: the standby holds every acknowledged commit only if it was the
    // synchronous one. What the probes last saw on the primary decides (kept while it is down).
    let mode = spec.failover.replication;
    let allowed =
        mode == ReplicationMode::SyncPreferred && spec.failover.degraded_failover == DegradedFailover::Allow;
    if !mode.is_async() && !allowed && p.and_then(|p| p.synchronous_standby) != Some(true) {
        let names = p.and_then(|p| p.synchronous_standby_names.clone()).unwrap_or_default();
        let degraded = st.sync.as_ref().and_then(|s| s.degraded_since.clone());
        let why = match p.and_then(|p| p.synchronous_standby) {
            _ if degraded.is_some() => format!(
                "SyncPreferred had degraded to asynchronous commits at {}",
                degraded.as_deref().unwrap_or_default()
            ),
            None => format!("{from} was never seen with a synchronous standby"),
            Some(_) if names.is_empty() => format!(
                "at the last observation {from} committed asynchronously (synchronous_standby_names empty{})",
                if mode == ReplicationMode::SyncPreferred { ": SyncPreferred had degraded" } else { "" }
            ),
            Some(_) => format!(
                "at the last observation {from} showed no synchronous standby (synchronous_standby_names = '{names}')"
            ),
        };
        let knob = if mode == ReplicationMode::SyncPreferred {
            " or set spec.failover.degradedFailover: Allow"
        } else {
            ""
        };
        return blocked(
            reasons::NOT_SYNCHRONOUS,
            format!(
                "primary {from} is down; spec.failover.replication is {} but standby {to} was not the synchronous \
                 standby: {why}, so promoting {to} could lose acknowledged commits. To accept that, force it with \
                 kubectl annotate drp <name> {}=<token>{knob}",
                mode.as_str(),
                annotations::FAILOVER
            ),
        );
    }
    match spec.failover.mode {
        FailoverMode::Approve => {
            let pending = st.pending_approval.as_ref().filter(|p| p.to == to);
            let nonce = pending.map(|p| p.nonce.clone()).unwrap_or_else(fresh_nonce);
            if annotations.get(annotations::APPROVE) == Some(&nonce) {
                Decision::Failover { trigger: Trigger::Approved, from, to }
            } else {
                Decision::AwaitApproval { nonce, to }
            }
        }
        _ => Decision::Failover { trigger: Trigger::Automatic, from, to },
    }
}

/// Records a decision in the status (the `FailoverBlocked` condition and the pending approval) and
/// returns the Events to publish: one when the condition's reason changes, and one for an approval
/// annotation that carries the wrong nonce (once per value).
pub fn record(
    st: &mut DisasterRecoveryPairStatus,
    decision: &Decision,
    annotations: &BTreeMap<String, String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    let (status, reason, message) = match decision {
        // The transition's start records it (or its refusal: the witness, the epoch swap, the
        // leader key); writing "started" first would flap the condition on every refused round.
        // An approval stands until its transition has started (the start clears it): a start
        // refused for a moment (the old primary's leader key not yet expired, a 409) must not ask
        // for a new nonce and reject the approval already given.
        Decision::Failover { .. } => return events,
        Decision::Steady => {
            (ConditionStatus::False, reasons::NOT_NEEDED, "the primary is not confirmed down".to_string())
        }
        Decision::Blocked { reason, message } => (ConditionStatus::True, *reason, message.clone()),
        Decision::AwaitApproval { nonce, to } => (
            ConditionStatus::True,
            reasons::AWAITING_APPROVAL,
            format!(
                "failover to {to} waits for approval: kubectl annotate drp <name> {}={nonce} --overwrite",
                annotations::APPROVE
            ),
        ),
    };
    let before = st.conditions.iter().find(|c| c.type_ == conditions::FAILOVER_BLOCKED);
    let changed =
        before.map(|b| b.status != status || b.reason != reason).unwrap_or(status == ConditionStatus::True);
    if changed && status == ConditionStatus::True {
        events.push(EventNote { warning: true, reason: reason.into(), note: message.clone() });
    }
    set_condition(
        &mut st.conditions,
        conditions::FAILOVER_BLOCKED,
        status,
        reason,
        &message,
        generation,
        now,
    );

    match decision {
        Decision::AwaitApproval { nonce, to } => {
            if st.pending_approval.as_ref().map(|p| &p.nonce) != Some(nonce) {
                st.pending_approval = Some(PendingApproval {
                    nonce: nonce.clone(),
                    to: to.clone(),
                    requested_at: now.to_string(),
                });
            }
            if let Some(given) = annotations.get(annotations::APPROVE) {
                if given != nonce && st.handled.get(annotations::APPROVE) != Some(given) {
                    events.push(EventNote {
                        warning: true,
                        reason: "ApprovalRejected".into(),
                        note: format!(
                            "{}={given:?} does not match the pending nonce; nothing was done",
                            annotations::APPROVE
                        ),
                    });
                    st.handled.insert(annotations::APPROVE.into(), given.clone());
                }
            }
        }
        Decision::Steady => st.pending_approval = None,
        Decision::Failover { .. } | Decision::Blocked { .. } => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{test_spec, SiteStatus, Transition};

    /// The pair in `mode`, with a witness (threshold 3, maxLagBytes 16Mi and cooldown 10m: the defaults).
    fn spec(mode: FailoverMode) -> DisasterRecoveryPairSpec {
        test_spec().with_mode(mode).with_witness("http://w:2379")
    }

    /// A status with the primary failing `failures` times and the standby healthy at `lag` bytes.
    fn status(failures: i32, lag: i64) -> DisasterRecoveryPairStatus {
        DisasterRecoveryPairStatus {
            current_primary: Some("east".into()),
            replication_lag_bytes: Some(lag),
            sites: vec![
                SiteStatus {
                    name: "east".into(),
                    reachable: failures == 0,
                    consecutive_failures: failures,
                    ..Default::default()
                },
                SiteStatus {
                    name: "west".into(),
                    reachable: true,
                    in_recovery: Some(true),
                    streaming: Some(false),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        "2027-01-15T10:00:00Z".parse().expect("ts")
    }

    fn decide(
        spec: &DisasterRecoveryPairSpec,
        st: &DisasterRecoveryPairStatus,
        ann: &[(&str, &str)],
    ) -> Decision {
        let ann: BTreeMap<String, String> = ann.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        next(spec, st, &ann, now(), || "n0nce".into())
    }

    fn reason(d: &Decision) -> &str {
        match d {
            Decision::Blocked { reason, .. } => reason,
            Decision::Steady => "Steady",
            Decision::AwaitApproval { .. } => "AwaitApproval",
            Decision::Failover { .. } => "Failover",
        }
    }

    #[test]
    fn below_the_threshold_nothing_happens() {
        for f in 0..3 {
            assert_eq!(
                decide(&spec(FailoverMode::Automatic), &status(f, 0), &[]),
                Decision::Steady,
                "{f} failures"
            );
        }
    }

    #[test]
    fn automatic_mode_fails_over_a_confirmed_dead_primary() {
        assert_eq!(
            decide(&spec(FailoverMode::Automatic), &status(3, 1024), &[]),
            Decision::Failover { trigger: Trigger::Automatic, from: "east".into(), to: "west".into() }
        );
    }

    #[test]
    fn every_guard_refuses_with_its_own_reason() {
        let auto = spec(FailoverMode::Automatic);
        let mut cooling = status(3, 0);
        cooling.last_transition =
            Some(Transition { finished_at: Some("2027-01-15T09:55:00Z".into()), ..Default::default() });
        let mut standby_down = status(3, 0);
        standby_down.sites[1].reachable = false;
        let mut standby_promoted = status(3, 0);
        standby_promoted.sites[1].in_recovery = Some(false);
        let mut lag_unknown = status(3, 0);
        lag_unknown.replication_lag_bytes = None;
        type Case<'a> =
            (&'a str, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (reasons::PAUSED, auto.clone(), status(3, 0), vec![(annotations::PAUSED, "true")]),
            (reasons::MANUAL_MODE, spec(FailoverMode::Manual), status(3, 0), vec![]),
            (reasons::IN_COOLDOWN, auto.clone(), cooling, vec![]),
            (reasons::STANDBY_UNAVAILABLE, auto.clone(), standby_down, vec![]),
            (reasons::STANDBY_UNAVAILABLE, auto.clone(), standby_promoted, vec![]),
            (reasons::LAG_OVER_BUDGET, auto.clone(), status(3, 40 << 20), vec![]),
            (reasons::LAG_OVER_BUDGET, auto.clone(), lag_unknown, vec![]),
        ];
        for (want, spec, st, ann) in cases {
            assert_eq!(reason(&decide(&spec, &st, &ann)), want);
        }
        match decide(&auto, &status(3, 40 << 20), &[]) {
            Decision::Blocked { message, .. } => {
                assert!(message.contains("40.0 MiB > maxLagBytes 16.0 MiB"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // An expired cooldown no longer blocks.
        let mut old = status(3, 0);
        old.last_transition =
            Some(Transition { finished_at: Some("2027-01-15T09:40:00Z".into()), ..Default::default() });
        assert_eq!(reason(&decide(&auto, &old, &[])), "Failover");
        // paused=false is not paused.
        assert_eq!(reason(&decide(&auto, &status(3, 0), &[(annotations::PAUSED, "false")])), "Failover");
    }

    #[test]
    fn sync_fails_over_only_from_a_primary_last_seen_with_a_synchronous_standby() {
        let sync = {
            let mut s = spec(FailoverMode::Automatic);
            s.failover.replication = ReplicationMode::Sync;
            s
        };
        // Never seen synchronous, seen without one, seen degraded: refused, naming why.
        let mut st = status(3, 0);
        let d = decide(&sync, &st, &[]);
        assert_eq!(reason(&d), reasons::NOT_SYNCHRONOUS);
        assert!(
            matches!(&d, Decision::Blocked { message, .. } if message.contains("east was never seen with a synchronous standby")
                && message.contains("spec.failover.replication is Sync")),
            "{d:?}"
        );
        st.sites[0].synchronous_standby = Some(false);
        st.sites[0].synchronous_standby_names = Some("*".into());
        let d = decide(&sync, &st, &[]);
        assert!(
            matches!(&d, Decision::Blocked { reason, message } if *reason == reasons::NOT_SYNCHRONOUS
                && message.contains("showed no synchronous standby (synchronous_standby_names = '*')")),
            "{d:?}"
        );
        // The standby was the synchronous one: the failover runs.
        st.sites[0].synchronous_standby = Some(true);
        assert_eq!(reason(&decide(&sync, &st, &[])), "Failover");

        // SyncPreferred, degraded: refused unless the policy allows it.
        let mut pref = sync.clone();
        pref.failover.replication = ReplicationMode::SyncPreferred;
        st.sites[0].synchronous_standby = Some(false);
        st.sites[0].synchronous_standby_names = Some(String::new());
        let d = decide(&pref, &st, &[]);
        assert!(
            matches!(&d, Decision::Blocked { reason, message } if *reason == reasons::NOT_SYNCHRONOUS
                && message.contains("SyncPreferred had degraded") && message.contains("degradedFailover: Allow")),
            "{d:?}"
        );
        pref.failover.degraded_failover = DegradedFailover::Allow;
        assert_eq!(reason(&decide(&pref, &st, &[])), "Failover");
        // Async never looks.
        assert_eq!(reason(&decide(&spec(FailoverMode::Automatic), &st, &[])), "Failover");
    }

    #[test]
    fn copies_that_differ_block_a_failover_naming_the_difference() {
        let mut st = status(3, 0);
        crate::crd::conditions::set_condition(
            &mut st.conditions,
            crate::crd::conditions::SPEC_VALID,
            ConditionStatus::False,
            reasons::SPEC_DRIFT,
            "the copy of this pair that west's controller reads differs from this one (east): spec.failover.mode",
            None,
            now(),
        );
        let d = decide(&spec(FailoverMode::Automatic), &st, &[]);
        assert_eq!(reason(&d), reasons::SPEC_DRIFT);
        assert!(
            matches!(&d, Decision::Blocked { message, .. } if message.contains("spec.failover.mode")),
            "{d:?}"
        );
    }

    #[test]
    fn approve_mode_waits_for_the_right_nonce() {
        let s = spec(FailoverMode::Approve);
        let mut st = status(3, 0);
        let d = decide(&s, &st, &[]);
        assert_eq!(d, Decision::AwaitApproval { nonce: "n0nce".into(), to: "west".into() });
        let ann = BTreeMap::from([(annotations::APPROVE.to_string(), "wrong".to_string())]);
        let events = record(&mut st, &d, &ann, None, now());
        assert_eq!(st.pending_approval.as_ref().map(|p| p.nonce.as_str()), Some("n0nce"));
        assert!(events.iter().any(|e| e.reason == "ApprovalRejected"), "{events:?}");
        assert!(events.iter().any(|e| e.reason == reasons::AWAITING_APPROVAL));
        // The same wrong value is reported once.
        let d = next(&s, &st, &ann, now(), || "other".into());
        assert_eq!(
            d,
            Decision::AwaitApproval { nonce: "n0nce".into(), to: "west".into() },
            "the pending nonce is kept"
        );
        assert!(record(&mut st, &d, &ann, None, now()).is_empty());
        // The right nonce runs it.
        let ann = BTreeMap::from([(annotations::APPROVE.to_string(), "n0nce".to_string())]);
        let d = next(&s, &st, &ann, now(), || unreachable!("no new nonce needed"));
        assert_eq!(
            d,
            Decision::Failover { trigger: Trigger::Approved, from: "east".into(), to: "west".into() }
        );
        record(&mut st, &d, &ann, None, now());
        assert_eq!(
            st.pending_approval.as_ref().map(|p| p.nonce.as_str()),
            Some("n0nce"),
            "kept until the start"
        );
        // A start refused for a moment (the old primary's key still alive): the next round still
        // runs on the approval given, with no new nonce.
        let d = next(&s, &st, &ann, now(), || unreachable!("the approval stands"));
        assert_eq!(
            d,
            Decision::Failover { trigger: Trigger::Approved, from: "east".into(), to: "west".into() }
        );
    }
}
