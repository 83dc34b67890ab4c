//! Record: one round's result — the next status and its Events (`Round`), the metrics, and the
//! status write, which skips changes of WAL positions alone for up to `positions_every`.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;

use super::{commands, guard, Pair};
use crate::{
    context::{Context, Error},
    crd::{
        annotations, conditions, ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus, Phase,
    },
    events::EventNote,
    probe::{Outcome, PgState, SiteObservation},
};

/// How often a status whose only change is WAL positions and lag is written, at most.
pub const POSITIONS_EVERY: Duration = Duration::from_secs(10);

/// Position-only status writes per second the controller allows itself across all its pairs: with
/// more than 50 pairs each pair's positions are written less often than `POSITIONS_EVERY`, so that a
/// thousand steady pairs cost a handful of API writes a second, not a hundred. Decisions never read
/// the written positions (a round starts from the last computed status, kept in memory), and the
/// metrics are live.
pub const POSITION_WRITES_PER_SEC: u32 = 5;

/// How often one pair's position-only change is written when the controller tends `pairs` pairs.
pub fn positions_every(pairs: usize) -> Duration {
    let pairs = u32::try_from(pairs).unwrap_or(u32::MAX);
    POSITIONS_EVERY.max(Duration::from_secs(1).saturating_mul(pairs) / POSITION_WRITES_PER_SEC)
}

/// The status a round computes and the Events it will publish.
pub struct Round {
    pub status: DisasterRecoveryPairStatus,
    pub events: Vec<EventNote>,
    /// A drill's switchover to start this round, to this site (`drill::tend`).
    pub drill: Option<String>,
}

impl Round {
    /// The round after `decide::observe`, with the commands' Warnings and handled tokens recorded.
    pub fn new(
        (mut status, observed): (DisasterRecoveryPairStatus, Vec<EventNote>),
        cmds: &commands::Commands,
        drp: &DisasterRecoveryPair,
    ) -> Round {
        let mut events = cmds.events.clone();
        events.extend(observed);
        commands::record(&mut status, &cmds.handled);
        last_command(&mut status, cmds, drp.metadata.generation);
        Round { status, events, drill: None }
    }

    /// Whether a failover is wanted and allowed now (`guard`), recorded in `FailoverBlocked`. A
    /// switchover or forced failover asked for by annotation takes the place of the guard.
    pub fn guard(
        &mut self,
        drp: &DisasterRecoveryPair,
        cmds: &commands::Commands,
        now: Timestamp,
        paused_at: Option<&str>,
    ) -> guard::Decision {
        let commanded = matches!(
            cmds.run,
            Some(commands::Command::Switchover { .. } | commands::Command::ForcedFailover { .. })
        );
        let paused_here = drp.annotations().get(annotations::PAUSED).map(String::as_str) == Some("true");
        let decision = if commanded {
            guard::Decision::Steady
        } else {
            let mut d = guard::next(&drp.spec, &self.status, drp.annotations(), now, super::new_nonce);
            // The copy in the other site's cluster is paused: automation waits here too.
            if let (Some(site), false, guard::Decision::Failover { from, .. }) = (paused_at, paused_here, &d)
            {
                d = guard::Decision::Blocked {
                    reason: crate::crd::conditions::reasons::PAUSED,
                    message: format!(
                        "primary {from} is down but automation is paused on {site}'s copy of this pair ({}=true \
                         in {site}'s cluster)",
                        annotations::PAUSED
                    ),
                };
            }
            self.events.extend(guard::record(
                &mut self.status,
                &d,
                drp.annotations(),
                drp.metadata.generation,
                now,
            ));
            d
        };
        if paused_here || paused_at.is_some() {
            self.status.phase = Some(Phase::Paused);
        }
        decision
    }
}

/// Keeps the latest command outcome in the `LastCommand` condition.
pub fn last_command(st: &mut DisasterRecoveryPairStatus, cmds: &commands::Commands, generation: Option<i64>) {
    if let Some((accepted, reason, message)) = &cmds.last {
        conditions::set_condition(
            &mut st.conditions,
            conditions::LAST_COMMAND,
            if *accepted { ConditionStatus::True } else { ConditionStatus::False },
            reason,
            message,
            generation,
            Timestamp::now(),
        );
    }
}

/// The status this round starts from: the last one computed when the stored one differs from it
/// only in WAL positions (those writes are throttled), else the stored one.
pub fn base(drp: &DisasterRecoveryPair, pair: &Pair, ctx: &Context) -> Option<DisasterRecoveryPairStatus> {
    ctx.memory.with(&pair.key, |m| match (m.unwritten.as_ref(), drp.status.as_ref()) {
        (Some(f), Some(s)) if same_but_positions(s, f) => Some(f.clone()),
        (_, s) => s.cloned(),
    })
}

/// The round's gauges and counters, and the freshest WAL positions for a failover's lost-WAL figure.
pub fn metrics(
    ctx: &Context,
    pair: &Pair,
    obs: &super::decide::Observed,
    status: &DisasterRecoveryPairStatus,
) {
    let label = crate::metrics::PairLabels { pair: pair.key.clone() };
    if let Some(lag) = status.replication_lag_bytes {
        ctx.metrics.lag_bytes.get_or_create(&label).set(lag);
    }
    ctx.metrics.epoch.get_or_create(&label).set(status.epoch.0);
    for SiteObservation { name, sql, .. } in &obs.sites {
        if let Outcome::Up(PgState { current_lsn: Some(lsn), timeline, .. }) = sql {
            ctx.memory.saw_lsn(&pair.key, name, *timeline, *lsn);
        }
        let outcome = match sql {
            Outcome::Up(_) => "up",
            Outcome::Down(_) => "down",
            Outcome::NotRun(..) => "not_run",
        };
        ctx.metrics
            .probes
            .get_or_create(&crate::metrics::ProbeLabels {
                pair: pair.key.clone(),
                site: name.clone(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// Writes `status` when it changed, except a change of WAL positions alone within `positions_every`
/// of the last write (at a thousand steady pairs, position-only writes were most of the API traffic;
/// metrics stay live). Returns the pair as stored.
pub async fn write(
    ctx: &Context,
    pair: &Pair,
    drp: DisasterRecoveryPair,
    status: &DisasterRecoveryPairStatus,
) -> Result<DisasterRecoveryPair, Error> {
    let positions_only = drp.status.as_ref().is_some_and(|s| same_but_positions(s, status));
    let every = positions_every(ctx.memory.len());
    let recently = ctx.memory.with(&pair.key, |m| m.written_at.is_some_and(|t| t.elapsed() < every));
    let drp = if drp.status.as_ref() != Some(status) && !(positions_only && recently) {
        let drp = crate::store::write_status(ctx, &drp, status).await?;
        ctx.memory.with(&pair.key, |m| m.written_at = Some(Instant::now()));
        drp
    } else {
        drp
    };
    ctx.memory.with(&pair.key, |m| m.unwritten = Some(status.clone()));
    Ok(drp)
}

/// Whether two statuses differ at most in WAL positions and replication lag.
pub fn same_but_positions(a: &DisasterRecoveryPairStatus, b: &DisasterRecoveryPairStatus) -> bool {
    let strip = |s: &DisasterRecoveryPairStatus| {
        let mut s = s.clone();
        s.replication_lag_bytes = None;
        for site in &mut s.sites {
            site.current_lsn = None;
            site.receive_lsn = None;
            site.replay_lsn = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SiteStatus;

    #[test]
    fn position_only_writes_stay_within_the_budget_at_any_scale() {
        assert_eq!(positions_every(1), POSITIONS_EVERY);
        assert_eq!(positions_every(50), POSITIONS_EVERY);
        assert_eq!(positions_every(1000), Duration::from_secs(200));
        assert_eq!(positions_every(5000), Duration::from_secs(1000));
        for pairs in [1, 10, 100, 1000, 5000, 100_000] {
            let per_sec = pairs as f64 / positions_every(pairs).as_secs_f64();
            assert!(per_sec <= f64::from(POSITION_WRITES_PER_SEC) + 1e-9, "{pairs} pairs: {per_sec}/s");
        }
    }

    #[test]
    fn only_wal_positions_and_lag_count_as_positions() {
        let site = |lsn: &str, failures| SiteStatus {
            name: "east".into(),
            reachable: true,
            current_lsn: Some(lsn.into()),
            consecutive_failures: failures,
            ..Default::default()
        };
        let a = DisasterRecoveryPairStatus {
            sites: vec![site("0/100", 0)],
            replication_lag_bytes: Some(10),
            ..Default::default()
        };
        let moved = DisasterRecoveryPairStatus {
            sites: vec![site("0/200", 0)],
            replication_lag_bytes: Some(99),
            ..Default::default()
        };
        let failing = DisasterRecoveryPairStatus { sites: vec![site("0/200", 1)], ..moved.clone() };
        assert!(same_but_positions(&a, &moved));
        assert!(!same_but_positions(&a, &failing));
        assert!(!same_but_positions(
            &moved,
            &DisasterRecoveryPairStatus { epoch: crate::crd::Epoch(1), ..moved.clone() }
        ));
    }
}
