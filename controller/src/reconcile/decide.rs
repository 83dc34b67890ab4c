//! The pure heart of a reconcile: from the spec, the previous status and one round of observations,
//! compute the next status and the Events to emit. No client, no `async`; the clock is an argument,
//! so every rule here is tested by tables.

use jiff::Timestamp;

use crate::{
    crd::{
        conditions::{self, reasons},
        ConditionStatus, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, Phase, SiteStatus,
    },
    events::{upsert, EventNote},
    probe::{Outcome, SiteObservation},
    units::{human_bytes, quantity_bytes},
};

/// Everything one reconcile observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Probe results, one per site that could be probed or attempted.
    pub sites: Vec<SiteObservation>,
    /// Problems with referenced Secrets, as (reason, message).
    pub secret_problems: Vec<(&'static str, String)>,
    /// `metadata.generation` of the object observed.
    pub generation: Option<i64>,
    /// What this controller finds wrong beyond the spec's own rules, as (reason, message): its
    /// `--site` not in the spec, or the other site's copy differing (`SpecDrift`).
    pub site_problems: Vec<(&'static str, String)>,
}

/// Computes the next status and the Events describing what changed.
pub fn observe(
    spec: &DisasterRecoveryPairSpec,
    old: Option<&DisasterRecoveryPairStatus>,
    obs: &Observed,
    now: Timestamp,
) -> (DisasterRecoveryPairStatus, Vec<EventNote>) {
    let mut st = old.cloned().unwrap_or_default();
    let who = crate::authority::primary(spec, old);
    let (primary, standby) = (who.site.to_string(), who.standby.to_string());
    st.current_primary = Some(primary.clone());
    st.observed_generation = obs.generation;
    let threshold = spec.failover.failure_threshold.max(1);
    st.sites = site_records(spec, &st, obs, now);
    let p = st.sites.iter().find(|s| s.name == primary).cloned().unwrap_or_default();
    let s = st.sites.iter().find(|s| s.name == standby).cloned().unwrap_or_default();
    st.replication_lag_bytes = lag(&p, &s).or(st.replication_lag_bytes);

    let primary_obs = obs.sites.iter().find(|o| o.name == primary);
    let standby_obs = obs.sites.iter().find(|o| o.name == standby);
    let mut next: Vec<Cond> = vec![
        secrets_resolved(obs),
        spec_valid(spec, &obs.site_problems),
        primary_healthy(&primary, primary_obs, &p, threshold),
        standby_streaming(&primary, &standby, standby_obs),
        lag_within_budget(spec, st.replication_lag_bytes),
    ];
    // Ready: the summary; it never drives logic.
    // A spec problem is reported but handled (the probe timeout is capped), so it does not make
    // the pair unprotected.
    let failing: Vec<&str> = next
        .iter()
        .filter(|c| c.1 != ConditionStatus::True && c.0 != conditions::SPEC_VALID)
        .map(|c| c.0.as_str())
        .collect();
    next.push(if failing.is_empty() {
        (
            conditions::READY.into(),
            ConditionStatus::True,
            reasons::PROTECTED,
            format!("{primary} serves, {standby} is ready to take over"),
        )
    } else {
        (
            conditions::READY.into(),
            ConditionStatus::False,
            reasons::NOT_PROTECTED,
            format!("not protected: {}", failing.join(", ")),
        )
    });

    let mut events = Vec::new();
    for (type_, status, reason, message) in next {
        let announce_first = type_ == conditions::READY;
        upsert(
            &mut st.conditions,
            &mut events,
            &type_,
            status,
            reason,
            &message,
            obs.generation,
            now,
            announce_first,
        );
    }

    let ready =
        st.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == ConditionStatus::True);
    st.phase = Some(match st.phase {
        Some(p @ (Phase::FailingOver | Phase::SwitchingOver | Phase::Failed)) => p,
        _ if ready => Phase::Healthy,
        _ => Phase::Degraded,
    });
    (st, events)
}

/// A condition to set: (type, status, reason, message).
type Cond = (String, ConditionStatus, &'static str, String);

/// Per-site records: the last known LSNs of a site that stopped answering are kept, because the
/// lag guard and the lost-WAL figure need the last thing known, not a blank.
fn site_records(
    spec: &DisasterRecoveryPairSpec,
    st: &DisasterRecoveryPairStatus,
    obs: &Observed,
    now: Timestamp,
) -> Vec<SiteStatus> {
    spec.sites
        .iter()
        .map(|site| {
            let prev = st.sites.iter().find(|s| s.name == site.name).cloned();
            let mut rec =
                prev.unwrap_or_else(|| SiteStatus { name: site.name.clone(), ..Default::default() });
            if let Some(o) = obs.sites.iter().find(|o| o.name == site.name) {
                apply_observation(&mut rec, o, now);
            }
            rec
        })
        .collect()
}

/// The primary's current position minus the standby's replay position, when both are known.
fn lag(p: &SiteStatus, s: &SiteStatus) -> Option<i64> {
    let p_lsn = p.current_lsn.as_deref().and_then(|l| l.parse::<crate::pg::Lsn>().ok())?;
    let s_lsn = s.replay_lsn.as_deref().and_then(|l| l.parse::<crate::pg::Lsn>().ok())?;
    Some(i64::try_from(p_lsn.bytes_after(s_lsn)).unwrap_or(i64::MAX))
}

/// `SecretsResolved`: every referenced Secret has its keys (the first problem named).
fn secrets_resolved(obs: &Observed) -> Cond {
    match obs.secret_problems.first() {
        None => (
            conditions::SECRETS_RESOLVED.into(),
            ConditionStatus::True,
            reasons::SECRETS_FOUND,
            "every referenced Secret has its keys".into(),
        ),
        Some((reason, msg)) => {
            let more = obs.secret_problems.len() - 1;
            let msg = if more > 0 { format!("{msg} (and {more} more)") } else { msg.clone() };
            (conditions::SECRETS_RESOLVED.into(), ConditionStatus::False, reason, msg)
        }
    }
}

/// `SpecValid`: rules the API server may not have checked (objects older than the rule).
fn spec_valid(spec: &DisasterRecoveryPairSpec, site_problems: &[(&'static str, String)]) -> Cond {
    let problems: Vec<(&'static str, String)> = site_problems
        .iter()
        .cloned()
        .chain(spec.problems().into_iter().map(|p| (reasons::INVALID_SPEC, p)))
        .collect();
    match problems.first() {
        None => (
            conditions::SPEC_VALID.into(),
            ConditionStatus::True,
            reasons::SPEC_OK,
            "the spec passes every rule".into(),
        ),
        Some((reason, p)) => (
            conditions::SPEC_VALID.into(),
            ConditionStatus::False,
            reason,
            if problems.len() > 1 { format!("{p} (and {} more)", problems.len() - 1) } else { p.clone() },
        ),
    }
}

/// `PrimaryHealthy`: the primary answers its probes; failures count up to the threshold.
fn primary_healthy(
    primary: &str,
    primary_obs: Option<&SiteObservation>,
    p: &SiteStatus,
    threshold: i32,
) -> Cond {
    match primary_obs.map(|o| &o.sql) {
        Some(Outcome::NotRun(reason, msg)) => (conditions::PRIMARY_HEALTHY.into(), ConditionStatus::Unknown, reason, format!("cannot probe primary {primary}: {msg}")),
        None => (conditions::PRIMARY_HEALTHY.into(), ConditionStatus::Unknown, reasons::PROBE_FAILED, format!("primary {primary} was not probed")),
        Some(_) if p.consecutive_failures >= threshold => (
            conditions::PRIMARY_HEALTHY.into(),
            ConditionStatus::False,
            reasons::PRIMARY_DOWN,
            format!(
                "primary {primary} failed {} consecutive probes (threshold {threshold}) since {}: {}",
                p.consecutive_failures,
                p.failing_since.as_deref().unwrap_or("?"),
                p.message.as_deref().unwrap_or("")
            ),
        ),
        Some(_) if p.consecutive_failures > 0 => (
            conditions::PRIMARY_HEALTHY.into(),
            ConditionStatus::False,
            reasons::PROBE_FAILED,
            format!(
                "primary {primary} failed {} of {threshold} consecutive probes needed to confirm a failure: {}",
                p.consecutive_failures,
                p.message.as_deref().unwrap_or("")
            ),
        ),
        Some(Outcome::Up(state)) if state.in_recovery => (
            conditions::PRIMARY_HEALTHY.into(),
            ConditionStatus::False,
            reasons::NOT_PRIMARY,
            format!("site {primary} should serve writes but is in recovery (a standby)"),
        ),
        Some(_) => (conditions::PRIMARY_HEALTHY.into(), ConditionStatus::True, reasons::PROBES_PASSING, format!("primary {primary} answers its probes")),
    }
}

/// `StandbyStreaming`: the standby answers, is in recovery and its WAL receiver streams.
fn standby_streaming(primary: &str, standby: &str, standby_obs: Option<&SiteObservation>) -> Cond {
    match standby_obs.map(|o| &o.sql) {
        Some(Outcome::NotRun(reason, msg)) => (conditions::STANDBY_STREAMING.into(), ConditionStatus::Unknown, reason, format!("cannot probe standby {standby}: {msg}")),
        None => (conditions::STANDBY_STREAMING.into(), ConditionStatus::Unknown, reasons::PROBE_FAILED, format!("standby {standby} was not probed")),
        Some(Outcome::Down(msg)) => (conditions::STANDBY_STREAMING.into(), ConditionStatus::False, reasons::STANDBY_UNREACHABLE, format!("standby {standby} does not answer: {msg}")),
        Some(Outcome::Up(state)) if !state.in_recovery => (
            conditions::STANDBY_STREAMING.into(),
            ConditionStatus::False,
            reasons::NOT_IN_RECOVERY,
            format!("standby {standby} is not in recovery: it accepts writes of its own and no longer follows {primary}"),
        ),
        Some(Outcome::Up(state)) if !state.streaming => (
            conditions::STANDBY_STREAMING.into(),
            ConditionStatus::False,
            reasons::NOT_STREAMING,
            format!("standby {standby} is in recovery but its WAL receiver is not streaming from {primary}"),
        ),
        Some(_) => (conditions::STANDBY_STREAMING.into(), ConditionStatus::True, reasons::STREAMING, format!("standby {standby} streams from {primary}")),
    }
}

/// `LagWithinBudget`: the last known lag against `spec.failover.maxLagBytes`.
fn lag_within_budget(spec: &DisasterRecoveryPairSpec, lag: Option<i64>) -> Cond {
    let budget = quantity_bytes(&spec.failover.max_lag_bytes.0);
    match (lag, &budget) {
        (_, Err(e)) => (
            conditions::LAG_WITHIN_BUDGET.into(),
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            format!("spec.failover.maxLagBytes: {e}"),
        ),
        (None, _) => (
            conditions::LAG_WITHIN_BUDGET.into(),
            ConditionStatus::Unknown,
            reasons::LAG_UNKNOWN,
            "replication lag not measured yet".into(),
        ),
        (Some(lag), Ok(max)) if lag as u64 > *max => (
            conditions::LAG_WITHIN_BUDGET.into(),
            ConditionStatus::False,
            reasons::LAG_OVER_BUDGET,
            format!("lag {} > maxLagBytes {}", human_bytes(lag as u64), human_bytes(*max)),
        ),
        (Some(lag), Ok(max)) => (
            conditions::LAG_WITHIN_BUDGET.into(),
            ConditionStatus::True,
            reasons::LAG_OK,
            format!("lag {} within maxLagBytes {}", human_bytes(lag as u64), human_bytes(*max)),
        ),
    }
}

fn apply_observation(rec: &mut SiteStatus, o: &SiteObservation, now: Timestamp) {
    let mut failure: Option<String> = None;
    let mut ran = true;
    match &o.sql {
        Outcome::Up(state) => {
            rec.reachable = true;
            rec.in_recovery = Some(state.in_recovery);
            rec.streaming = Some(state.streaming);
            rec.current_lsn = state.current_lsn.map(|l| l.to_string());
            rec.receive_lsn = state.receive_lsn.map(|l| l.to_string());
            rec.replay_lsn = state.replay_lsn.map(|l| l.to_string());
            rec.timeline = state.timeline;
            rec.fenced = Some(state.fenced);
            rec.synchronous_standby_names = state.synchronous_standby_names.clone();
            rec.synchronous_standby = state.synchronous_standby;
            if state.fenced && !state.in_recovery {
                failure = Some(
                    "sql: answers but is fenced (default_transaction_read_only = on) and takes no writes"
                        .into(),
                );
            }
        }
        Outcome::Down(msg) => {
            rec.reachable = false;
            failure = Some(format!("sql: {msg}"));
        }
        Outcome::NotRun(_, msg) => {
            rec.reachable = false;
            ran = false;
            rec.message = Some(msg.clone());
        }
    }
    match &o.http {
        Some(Outcome::Up(())) => rec.http_healthy = Some(true),
        Some(Outcome::Down(msg)) => {
            rec.http_healthy = Some(false);
            failure = Some(match failure {
                Some(f) => format!("{f}; http: {msg}"),
                None => format!("http: {msg}"),
            });
        }
        Some(Outcome::NotRun(..)) | None => rec.http_healthy = None,
    }
    if !ran {
        return; // a configuration problem is not evidence either way
    }
    match failure {
        Some(msg) => {
            rec.consecutive_failures = rec.consecutive_failures.saturating_add(1);
            if rec.failing_since.is_none() {
                rec.failing_since = Some(now.to_string());
            }
            rec.message = Some(msg);
        }
        None => {
            rec.consecutive_failures = 0;
            rec.failing_since = None;
            rec.message = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crd::test_spec,
        pg::Lsn,
        probe::{Outcome, PgState},
    };

    fn primary(lsn: u64) -> Outcome<PgState> {
        Outcome::Up(PgState { current_lsn: Some(Lsn(lsn)), timeline: Some(1), ..Default::default() })
    }
    fn standby(replay: u64) -> Outcome<PgState> {
        Outcome::Up(PgState {
            in_recovery: true,
            streaming: true,
            receive_lsn: Some(Lsn(replay)),
            replay_lsn: Some(Lsn(replay)),
            timeline: Some(1),
            ..Default::default()
        })
    }
    fn obs(east: Outcome<PgState>, west: Outcome<PgState>) -> Observed {
        Observed {
            sites: vec![
                SiteObservation { name: "east".into(), sql: east, http: None },
                SiteObservation { name: "west".into(), sql: west, http: None },
            ],
            secret_problems: vec![],
            generation: Some(1),
            site_problems: vec![],
        }
    }
    fn cond<'a>(st: &'a DisasterRecoveryPairStatus, t: &str) -> &'a crate::crd::Condition {
        st.conditions.iter().find(|c| c.type_ == t).expect(t)
    }
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("ts")
    }

    #[test]
    fn healthy_pair_reports_lag_and_ready() {
        let (st, events) =
            observe(&test_spec().with_max_lag("1Mi"), None, &obs(primary(5000), standby(4000)), at(0));
        assert_eq!(st.phase, Some(Phase::Healthy));
        assert_eq!(st.current_primary.as_deref(), Some("east"));
        assert_eq!(st.replication_lag_bytes, Some(1000));
        assert_eq!(cond(&st, conditions::READY).status, ConditionStatus::True);
        assert_eq!(cond(&st, conditions::LAG_WITHIN_BUDGET).reason, reasons::LAG_OK);
        // First observation: only the Ready summary is announced when all is well.
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, reasons::PROTECTED);
    }

    #[test]
    fn failures_count_up_to_the_threshold_and_a_pass_resets_them() {
        let s = test_spec().with_max_lag("1Mi");
        let (mut st, _) = observe(&s, None, &obs(primary(100), standby(100)), at(0));
        let down = || obs(Outcome::Down("connection refused".into()), standby(100));
        for i in 1..=2 {
            let (next, _) = observe(&s, Some(&st), &down(), at(i));
            st = next;
            let c = cond(&st, conditions::PRIMARY_HEALTHY);
            assert_eq!(
                (c.status, c.reason.as_str()),
                (ConditionStatus::False, reasons::PROBE_FAILED),
                "failure {i}"
            );
            assert!(c.message.contains(&format!("failed {i} of 3")), "{}", c.message);
        }
        let (next, events) = observe(&s, Some(&st), &down(), at(3));
        st = next;
        let c = cond(&st, conditions::PRIMARY_HEALTHY);
        assert_eq!(c.reason, reasons::PRIMARY_DOWN);
        assert!(c.message.contains("since 2027"), "names when the failures began: {}", c.message);
        assert!(events.iter().any(|e| e.warning && e.reason == reasons::PRIMARY_DOWN));
        let east = &st.sites[0];
        assert_eq!(east.consecutive_failures, 3);
        assert_eq!(east.current_lsn.as_deref(), Some("0/64"), "the last known LSN survives the outage");
        assert_eq!(st.replication_lag_bytes, Some(0), "last known lag kept");

        let (st, events) = observe(&s, Some(&st), &obs(primary(200), standby(200)), at(4));
        assert_eq!(st.sites[0].consecutive_failures, 0);
        assert_eq!(st.sites[0].failing_since, None);
        assert_eq!(cond(&st, conditions::PRIMARY_HEALTHY).status, ConditionStatus::True);
        assert!(events.iter().any(|e| !e.warning && e.reason == reasons::PROBES_PASSING));
    }

    #[test]
    fn last_transition_time_moves_only_on_a_flip() {
        let s = test_spec().with_max_lag("1Mi");
        let (st, _) = observe(&s, None, &obs(primary(100), standby(100)), at(0));
        let (st, _) = observe(&s, Some(&st), &obs(primary(300), standby(200)), at(10));
        assert_eq!(cond(&st, conditions::PRIMARY_HEALTHY).last_transition_time, at(0).to_string());
        let (st, _) = observe(&s, Some(&st), &obs(Outcome::Down("x".into()), standby(200)), at(20));
        assert_eq!(cond(&st, conditions::PRIMARY_HEALTHY).last_transition_time, at(20).to_string());
    }

    #[test]
    fn a_secret_problem_is_not_a_probe_failure() {
        let s = test_spec().with_max_lag("1Mi");
        let mut o = obs(
            Outcome::NotRun(reasons::SECRET_MISSING, "Secret ns/s not found".into()),
            Outcome::NotRun(reasons::SECRET_MISSING, "Secret ns/s not found".into()),
        );
        o.secret_problems = vec![(reasons::SECRET_MISSING, "Secret ns/s not found".into())];
        let (st, events) = observe(&s, None, &o, at(0));
        let (st, _) = observe(&s, Some(&st), &o, at(1));
        assert!(st.sites.iter().all(|x| x.consecutive_failures == 0));
        assert_eq!(cond(&st, conditions::PRIMARY_HEALTHY).status, ConditionStatus::Unknown);
        assert_eq!(cond(&st, conditions::SECRETS_RESOLVED).reason, reasons::SECRET_MISSING);
        assert_eq!(st.phase, Some(Phase::Degraded));
        assert!(events.iter().any(|e| e.warning && e.reason == reasons::SECRET_MISSING));
    }

    #[test]
    fn a_refused_tls_handshake_is_reported_and_never_counted_as_a_failure() {
        let s = test_spec().with_max_lag("1Mi");
        let msg = "spec.sites[0].postgres.tls (mode VerifyFull): the server's certificate was not issued by the CA in spec.sites[0].postgres.tls.caSecret";
        let o = obs(Outcome::NotRun(reasons::TLS_HANDSHAKE_FAILED, msg.into()), standby(100));
        let (mut st, events) = observe(&s, None, &o, at(0));
        for t in 1..10 {
            st = observe(&s, Some(&st), &o, at(t)).0;
        }
        assert_eq!(st.sites[0].consecutive_failures, 0, "ten refused handshakes are not one failure");
        let c = cond(&st, conditions::PRIMARY_HEALTHY);
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::Unknown, reasons::TLS_HANDSHAKE_FAILED));
        assert!(c.message.contains("spec.sites[0].postgres.tls.caSecret"), "{}", c.message);
        assert!(events.iter().any(|e| e.warning && e.reason == reasons::TLS_HANDSHAKE_FAILED));
        assert_eq!(st.phase, Some(Phase::Degraded));
    }

    #[test]
    fn standby_states_are_told_apart() {
        let s = test_spec().with_max_lag("1Mi");
        let cases = [
            (Outcome::Down("timeout".into()), reasons::STANDBY_UNREACHABLE),
            (Outcome::Up(PgState { in_recovery: false, ..Default::default() }), reasons::NOT_IN_RECOVERY),
            (
                Outcome::Up(PgState { in_recovery: true, streaming: false, ..Default::default() }),
                reasons::NOT_STREAMING,
            ),
            (standby(100), reasons::STREAMING),
        ];
        for (west, reason) in cases {
            let (st, _) = observe(&s, None, &obs(primary(100), west), at(0));
            assert_eq!(cond(&st, conditions::STANDBY_STREAMING).reason, reason);
        }
    }

    #[test]
    fn lag_over_budget_names_both_figures() {
        let (st, _) =
            observe(&test_spec().with_max_lag("1Mi"), None, &obs(primary(40 << 20), standby(0)), at(0));
        let c = cond(&st, conditions::LAG_WITHIN_BUDGET);
        assert_eq!(c.reason, reasons::LAG_OVER_BUDGET);
        assert_eq!(c.message, "lag 40.0 MiB > maxLagBytes 1.0 MiB");
        assert_eq!(st.phase, Some(Phase::Degraded));
    }

    #[test]
    fn http_failure_counts_like_a_sql_failure() {
        let s = test_spec().with_max_lag("1Mi");
        let mut o = obs(primary(1), standby(1));
        o.sites[0].http = Some(Outcome::Down("GET http://x/ping answered 503".into()));
        let (st, _) = observe(&s, None, &o, at(0));
        assert_eq!(st.sites[0].consecutive_failures, 1);
        assert_eq!(st.sites[0].http_healthy, Some(false));
        assert!(st.sites[0].message.as_deref().is_some_and(|m| m.contains("503")));
    }
}
