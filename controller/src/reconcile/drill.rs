//! DR drills: a planned switchover from the serving site to the standby and, once the former
//! primary follows again and the pair is `Ready`, back — judged against `spec.objectives` and kept
//! in `status.drills`. Asked for by the `dr.understudy.dev/drill=<token>` annotation, or by
//! `spec.drills.every` inside `spec.drills.window`.
//!
//! The drill is a small state machine in `status.drill`, advanced by every steady round (`tend`,
//! pure but for the witness claim): it never runs a step itself, it asks the round to start a
//! switchover (`Round::drill`), which runs through the same journalled executor as any other, and
//! reads that switchover's journal when it has finished. A failover that cuts in, a switchover
//! that rolls back, or a former primary that does not follow within `returnTimeout` ends the drill
//! `Failed`, with the pair left wherever the last transition put it.

use jiff::Timestamp;

use crate::{
    crd::{
        conditions, ConditionStatus, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, DrillLeg,
        DrillOutcome, DrillPolicy, DrillReport, DrillRun, Transition, TransitionKind, TransitionOutcome,
        Verdict,
    },
    events::EventNote,
};

/// Reports kept in `status.drills`.
pub const KEEP: usize = 5;

/// How long a leg's switchover may take to start once asked for (on top of `catchUpTimeout`):
/// a switchover the controller keeps refusing ends the drill.
const START_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// What a round asks of the drill.
pub struct Ask<'a> {
    /// A `dr.understudy.dev/drill` token accepted by `commands::read` this round.
    pub token: Option<&'a str>,
    /// Whether `dr.understudy.dev/paused` holds automation (here or on the other copy).
    pub paused: bool,
    /// This controller's `--site`: a scheduled drill is started only by the serving site's controller.
    pub site: Option<&'a str>,
}

/// Advances the drill; `Some(site)`: start a switchover to `site` now.
pub fn tend(
    spec: &DisasterRecoveryPairSpec,
    st: &mut DisasterRecoveryPairStatus,
    ask: &Ask<'_>,
    now: Timestamp,
    events: &mut Vec<EventNote>,
) -> Option<String> {
    let policy = spec.drills.clone().unwrap_or_default();
    if st.drill.is_none() {
        let token = match ask.token {
            Some(t) => t.to_string(),
            None if due(&policy, st, ask, now) => format!("scheduled-{}", now.strftime("%Y%m%dT%H%M%SZ")),
            None => return None,
        };
        let primary = crate::authority::primary(spec, Some(st));
        let (home, away) = (primary.site.to_string(), primary.standby.to_string());
        if let Some(why) = not_ready(st, ask.paused) {
            let note = format!("drill {token} refused, nothing was done: {why}");
            finish(
                st,
                DrillRun { token, started_at: now.to_string(), home, away, ..Default::default() },
                DrillOutcome::Refused,
                note,
                now,
                events,
            );
            return None;
        }
        events.push(EventNote {
            warning: false,
            reason: "DrillStarted".into(),
            note: format!("drill {token}: a switchover {home} → {away}, then back once {home} follows"),
        });
        st.drill = Some(DrillRun {
            token,
            started_at: now.to_string(),
            home,
            away,
            leg: 1,
            after_epoch: st.epoch,
            waiting_since: Some(now.to_string()),
            legs: Vec::new(),
        });
    }
    let mut d = st.drill.clone()?;
    let since = d.waiting_since.as_deref().and_then(|s| s.parse::<Timestamp>().ok()).unwrap_or(now);
    let waited = std::time::Duration::from_millis(
        now.as_millisecond().saturating_sub(since.as_millisecond()).max(0) as u64,
    );
    let (from, to) =
        if d.leg == 1 { (d.home.clone(), d.away.clone()) } else { (d.away.clone(), d.home.clone()) };
    // The first transition since this leg was asked for.
    let leg = st
        .last_transition
        .as_ref()
        .filter(|t| t.finished_at.is_some())
        .filter(|t| t.started_at.parse::<Timestamp>().is_ok_and(|s| s >= since))
        .cloned();
    match leg {
        Some(t) if t.kind != TransitionKind::Switchover || t.to != to => {
            let note = format!(
                "drill {}: a {} to {} (epoch {}) cut in during leg {}; the drill stops and the pair stays where it put it",
                d.token, t.kind, t.to, t.epoch, d.leg
            );
            finish(st, d, DrillOutcome::Failed, note, now, events);
            None
        }
        Some(t) => {
            d.legs.push(leg_of(&t));
            if t.outcome != Some(TransitionOutcome::Completed) {
                let why = t.steps.iter().rev().find_map(|s| s.message.clone()).unwrap_or_default();
                let note = format!("drill {}: the switchover {from} → {to} rolled back: {why}", d.token);
                finish(st, d, DrillOutcome::Failed, note, now, events);
                return None;
            }
            if d.leg == 2 {
                let verdicts: Vec<Verdict> =
                    d.legs.iter().filter_map(|l| l.objectives.as_ref().map(|v| v.verdict)).collect();
                let missed = verdicts.contains(&Verdict::Missed);
                let note = format!(
                    "drill {}: {} → {} → {} done; {}{}",
                    d.token,
                    d.home,
                    d.away,
                    d.home,
                    d.legs.iter().map(describe).collect::<Vec<_>>().join("; "),
                    if missed { "; an objective was missed" } else { "" }
                );
                let outcome = if missed { DrillOutcome::Failed } else { DrillOutcome::Passed };
                finish(st, d, outcome, note, now, events);
                return None;
            }
            // Leg 1 done: wait for the former primary to follow, then back.
            d.leg = 2;
            d.after_epoch = st.epoch;
            d.waiting_since = Some(now.to_string());
            st.drill = Some(d);
            None
        }
        None => {
            // Leg 1's switchover must start soon; leg 2 waits up to returnTimeout for the former
            // primary to follow, then must start soon too.
            let limit = match (d.leg, back_ready(st)) {
                (1, _) => std::time::Duration::from(spec.failover.catch_up_timeout) + START_GRACE,
                (_, Some(_)) => policy.return_timeout.into(),
                (_, None) => std::time::Duration::from(policy.return_timeout) + START_GRACE,
            };
            if waited > limit {
                let why = if d.leg == 1 {
                    last_refusal(st).unwrap_or_else(|| "the switchover did not start".into())
                } else {
                    back_ready(st).unwrap_or_else(|| "the switchover back did not start".into())
                };
                let note = format!(
                    "drill {}: leg {} ({from} → {to}) not done within {:.0}s: {why}{}",
                    d.token,
                    d.leg,
                    limit.as_secs_f64(),
                    if d.leg == 2 {
                        format!("; the pair serves from {from}: switch back by hand once it is ready")
                    } else {
                        String::new()
                    }
                );
                finish(st, d, DrillOutcome::Failed, note, now, events);
                return None;
            }
            if d.leg == 2 && back_ready(st).is_some() {
                return None;
            }
            if ask.paused {
                return None;
            }
            st.drill = Some(d);
            Some(to)
        }
    }
}

/// Whether a scheduled drill is due: `every` set, the last drill (any outcome but a refusal) at
/// least `every` ago, inside the window, and asked of the serving site's controller.
fn due(policy: &DrillPolicy, st: &DisasterRecoveryPairStatus, ask: &Ask<'_>, now: Timestamp) -> bool {
    let Some(every) = policy.every else { return false };
    let primary = st.current_primary.as_deref();
    if ask.site.is_some() && ask.site != primary {
        return false;
    }
    if policy.window.as_ref().is_some_and(|w| !w.contains(now)) {
        return false;
    }
    let every = std::time::Duration::from(every);
    let last = st
        .drills
        .iter()
        .find(|r| r.outcome != DrillOutcome::Refused)
        .and_then(|r| r.started_at.parse::<Timestamp>().ok());
    let ready = not_ready(st, ask.paused).is_none();
    ready
        && last.is_none_or(|l| {
            now.as_millisecond().saturating_sub(l.as_millisecond()) >= every.as_millis() as i64
        })
}

/// Why a drill may not start now (`None`: it may).
fn not_ready(st: &DisasterRecoveryPairStatus, paused: bool) -> Option<String> {
    if paused {
        return Some("automation is paused (dr.understudy.dev/paused=true)".into());
    }
    if st.last_transition.as_ref().is_some_and(|t| t.finished_at.is_none()) {
        return Some("a transition is running".into());
    }
    back_ready(st)
}

/// Why the pair cannot take a planned switchover now: not `Ready`, or the former primary does not
/// follow yet (`None`: it can).
fn back_ready(st: &DisasterRecoveryPairStatus) -> Option<String> {
    if let Some(f) = st.former_primary.as_ref().filter(|f| f.assessment != crate::crd::Assessment::Following)
    {
        return Some(format!("the former primary {} does not follow yet ({})", f.site, f.assessment));
    }
    match st.conditions.iter().find(|c| c.type_ == conditions::READY) {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => Some(format!("the pair is not Ready: {}", c.message)),
        None => Some("the pair is not Ready yet (never probed)".into()),
    }
}

/// The last refusal a switchover met: the `LastCommand` or `FailoverBlocked` message.
fn last_refusal(st: &DisasterRecoveryPairStatus) -> Option<String> {
    st.conditions
        .iter()
        .find(|c| {
            (c.type_ == conditions::LAST_COMMAND || c.type_ == conditions::FAILOVER_BLOCKED)
                && c.status == ConditionStatus::False
        })
        .map(|c| c.message.clone())
}

/// A finished leg's figures from its journal.
fn leg_of(t: &Transition) -> DrillLeg {
    let at = |s: Option<&String>| s.and_then(|s| s.parse::<Timestamp>().ok());
    let quiesce = t.steps.iter().find(|s| s.name == "Quiesce").and_then(|s| at(s.started_at.as_ref()));
    let resumed = t.steps.iter().find(|s| s.name == "Recycle").and_then(|s| at(s.finished_at.as_ref()));
    let writes_held_seconds = match (quiesce, resumed) {
        (Some(a), Some(b)) => Some((b.as_millisecond() - a.as_millisecond()).max(0) as f64 / 1000.0),
        _ => None,
    };
    DrillLeg {
        from: t.from.clone(),
        to: t.to.clone(),
        epoch: (t.outcome == Some(TransitionOutcome::Completed)).then_some(t.epoch),
        outcome: t.outcome.unwrap_or(TransitionOutcome::RolledBack),
        rto_seconds: t.rto_seconds,
        writes_held_seconds,
        lost_wal_bytes: t.lost_wal_bytes,
        objectives: t.objectives.clone(),
    }
}

fn describe(l: &DrillLeg) -> String {
    let secs = |v: Option<f64>| v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "?".into());
    format!(
        "{} → {}: RTO {}, writes held {}, lost WAL {}{}",
        l.from,
        l.to,
        secs(l.rto_seconds),
        secs(l.writes_held_seconds),
        l.lost_wal_bytes.map(|b| format!("{b} B")).unwrap_or_else(|| "?".into()),
        l.objectives.as_ref().map(|v| format!(" (objectives {})", v.verdict.as_str())).unwrap_or_default()
    )
}

/// Ends the drill: its report goes first in `status.drills` (at most `KEEP`), with an Event.
fn finish(
    st: &mut DisasterRecoveryPairStatus,
    d: DrillRun,
    outcome: DrillOutcome,
    note: String,
    now: Timestamp,
    events: &mut Vec<EventNote>,
) {
    let objectives = d.legs.iter().filter_map(|l| l.objectives.as_ref().map(|v| v.verdict)).max();
    let message: String = note.chars().take(2048).collect();
    st.drills.insert(
        0,
        DrillReport {
            token: d.token,
            started_at: d.started_at,
            finished_at: now.to_string(),
            outcome,
            objectives,
            legs: d.legs,
            message: message.clone(),
        },
    );
    st.drills.truncate(KEEP);
    st.drill = None;
    events.push(EventNote {
        warning: outcome != DrillOutcome::Passed,
        reason: format!("Drill{}", outcome.as_str()),
        note: message,
    });
}

#[cfg(test)]
mod tests;
