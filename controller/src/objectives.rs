//! `spec.objectives`: every completed transition judged against the declared RTO and RPO, and a
//! forecast of whether a failover now could meet them (pure functions; the executor publishes the
//! verdict, the readiness round the forecast).
//!
//! The RPO is in WAL bytes, because that is what understudy can measure: a switchover's loss and a
//! fenced old primary's are exact, a failover whose old primary died unreachable knows only a lower
//! bound (WAL written after the last probe cannot be seen). A lower bound within the objective
//! proves nothing, so it is judged `Unknown`, never `Met`.

use crate::crd::{
    conditions, ConditionStatus, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, LossBound, Objectives,
    ObjectivesVerdict, ReplicationMode, Transition, Verdict,
};
use crate::units::{human_bytes, quantity_bytes};

/// The RPO in bytes; `Err` names the field.
pub fn rpo_bytes(o: &Objectives) -> Option<Result<u64, String>> {
    o.rpo.as_ref().map(|q| quantity_bytes(&q.0).map_err(|e| format!("spec.objectives.rpo: {e}")))
}

/// Judges a completed transition; `None` when no objective is set.
pub fn judge(o: &Objectives, t: &Transition) -> Option<ObjectivesVerdict> {
    let mut words = Vec::new();
    let rto = o.rto.map(|want| {
        let want = std::time::Duration::from(want).as_secs_f64();
        match t.rto_seconds {
            Some(got) if got <= want => {
                words.push(format!("RTO {got:.2}s within {want}s"));
                Verdict::Met
            }
            Some(got) => {
                words.push(format!("RTO {got:.2}s over spec.objectives.rto {want}s"));
                Verdict::Missed
            }
            None => {
                words.push("RTO not measured".to_string());
                Verdict::Unknown
            }
        }
    });
    let rpo = rpo_bytes(o).map(|want| {
        let want = match want {
            Ok(w) => w,
            Err(e) => {
                words.push(e);
                return Verdict::Unknown;
            }
        };
        let w = human_bytes(want);
        match (t.lost_wal_bytes, t.lost_wal_bound) {
            (Some(l), Some(LossBound::Exact)) if l.max(0) as u64 <= want => {
                words.push(format!("lost WAL {} (exact) within RPO {w}", human_bytes(l.max(0) as u64)));
                Verdict::Met
            }
            (Some(l), Some(LossBound::Exact)) => {
                words.push(format!("lost WAL {} (exact) over spec.objectives.rpo {w}", human_bytes(l as u64)));
                Verdict::Missed
            }
            (Some(l), _) if l.max(0) as u64 > want => {
                words.push(format!("lost WAL at least {} over spec.objectives.rpo {w}", human_bytes(l as u64)));
                Verdict::Missed
            }
            (Some(l), _) => {
                words.push(format!(
                    "lost WAL at least {} — a lower bound (the old primary died unreachable; commits acknowledged \
                     after its last observed position may be lost too), so RPO {w} cannot be shown met",
                    human_bytes(l.max(0) as u64)
                ));
                Verdict::Unknown
            }
            (None, _) => {
                words.push(format!(
                    "lost WAL unknown (the old primary's position was never read): RPO {w} cannot be judged"
                ));
                Verdict::Unknown
            }
        }
    });
    let verdict = rto.into_iter().chain(rpo).max()?;
    let message: String = words.join("; ").chars().take(1024).collect();
    Some(ObjectivesVerdict { verdict, rto, rpo, message })
}

/// The controller's own share of a completed transition: `TakeEpoch`'s start to the last step's end.
pub fn cutover_seconds(t: &Transition) -> Option<f64> {
    let start = t.steps.iter().find(|s| s.name == "TakeEpoch")?.started_at.as_deref()?;
    let end = t.finished_at.as_deref()?;
    let (a, b) = (start.parse::<jiff::Timestamp>().ok()?, end.parse::<jiff::Timestamp>().ok()?);
    Some((b.as_millisecond() - a.as_millisecond()).max(0) as f64 / 1000.0)
}

/// What stands between a failover now and `spec.objectives`, each naming its figure; empty when
/// both could be met. `keyed`: the standby waits for the primary site's leader key (a witness and
/// a controller per site), so a primary that cannot be fenced costs the lease.
pub fn at_risk(spec: &DisasterRecoveryPairSpec, st: &DisasterRecoveryPairStatus, keyed: bool) -> Vec<String> {
    let Some(o) = spec.objectives.as_ref() else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(want) = rpo_bytes(o) {
        match want {
            Err(e) => out.push(e),
            Ok(want) => {
                let sync = st.conditions.iter().any(|c| {
                    c.type_ == conditions::SYNCHRONOUS_REPLICATION && c.status == ConditionStatus::True
                });
                let w = human_bytes(want);
                match (spec.failover.replication, sync, st.replication_lag_bytes) {
                    (ReplicationMode::Sync | ReplicationMode::SyncPreferred, true, _) => {}
                    (ReplicationMode::Sync | ReplicationMode::SyncPreferred, false, _) if want == 0 => out.push(format!(
                        "spec.objectives.rpo {w}: the standby is not synchronous now (condition SynchronousReplication), \
                         so a failover could lose acknowledged commits"
                    )),
                    (ReplicationMode::Async, _, _) if want == 0 => out.push(
                        "spec.objectives.rpo 0 needs spec.failover.replication Sync: under Async a failover can lose \
                         commits acknowledged after the standby's last received position, however small the lag"
                            .to_string(),
                    ),
                    (_, _, Some(lag)) if lag.max(0) as u64 > want => out.push(format!(
                        "spec.objectives.rpo {w}: the standby's replay lag is {} (a failover now could lose up to that, \
                         and more if the primary writes on before it dies)",
                        human_bytes(lag as u64)
                    )),
                    (_, _, None) => out.push(format!("spec.objectives.rpo {w}: the standby's lag is not measured yet")),
                    _ => {}
                }
            }
        }
    }
    if let Some(want) = o.rto {
        let want = std::time::Duration::from(want).as_secs_f64();
        let f = &spec.failover;
        let interval = std::time::Duration::from(f.probe_interval).as_secs_f64();
        // From the first failed probe to the failure confirmed: the other threshold − 1 rounds, the
        // last of which may wait out its timeout (a black-holed primary).
        let confirm = f64::from(f.failure_threshold.max(1) - 1) * interval + f.probe_timeout().as_secs_f64();
        let mut parts = vec![format!(
            "detection {confirm:.1}s ((failureThreshold {} − 1) × probeInterval {interval}s + probeTimeout {}s)",
            f.failure_threshold,
            f.probe_timeout().as_secs_f64()
        )];
        let mut estimate = confirm;
        let lease = spec
            .coordination
            .as_ref()
            .and_then(|c| c.etcd.as_ref())
            .map(|e| std::time::Duration::from(e.lease_ttl));
        let primary = crate::authority::primary(spec, Some(st)).site.to_string();
        let hooked = spec.site(&primary).is_ok_and(|(_, s)| s.fence_hook.is_some());
        match lease {
            Some(ttl) if keyed && !hooked => {
                estimate += ttl.as_secs_f64();
                parts.push(format!(
                    "leaseTTL {}s (a primary that SQL cannot fence, with no fenceHook, leaves its leader key to expire)",
                    ttl.as_secs_f64()
                ));
            }
            Some(_) if keyed => parts.push(format!("the fence hook's run on {primary} (not counted)")),
            _ => {}
        }
        match st.last_transition.as_ref().filter(|t| t.finished_at.is_some()).and_then(cutover_seconds) {
            Some(c) => {
                estimate += c;
                parts.push(format!("cutover {c:.2}s (the last transition's, TakeEpoch → done)"));
            }
            None => parts.push("cutover not measured yet (no transition): not counted".to_string()),
        }
        if f.mode == crate::crd::FailoverMode::Approve {
            parts.push("the wait for an approval (mode Approve, not counted)".to_string());
        }
        if estimate > want {
            out.push(format!(
                "spec.objectives.rto {want}s: a failover now could take {estimate:.1}s = {}",
                parts.join(" + ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{test_spec, Condition, Epoch, StepRecord, TransitionOutcome};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn objectives(rto: Option<&str>, rpo: Option<&str>) -> Objectives {
        Objectives {
            rto: rto.map(|r| crate::crd::duration::parse(r).expect("a duration")),
            rpo: rpo.map(|q| Quantity(q.into())),
        }
    }

    fn transition(rto: f64, lost: Option<i64>, bound: Option<LossBound>) -> Transition {
        Transition {
            epoch: Epoch(1),
            rto_seconds: Some(rto),
            lost_wal_bytes: lost,
            lost_wal_bound: bound,
            outcome: Some(TransitionOutcome::Completed),
            started_at: "2026-12-02T10:00:00Z".into(),
            finished_at: Some("2026-12-02T10:00:03.5Z".into()),
            steps: vec![StepRecord {
                name: "TakeEpoch".into(),
                started_at: Some("2026-12-02T10:00:03Z".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_transition_is_met_missed_or_unknown_by_its_worst_objective() {
        let o = objectives(Some("5s"), Some("0"));
        let v = judge(&o, &transition(3.5, Some(0), Some(LossBound::Exact))).expect("judged");
        assert_eq!(
            (v.verdict, v.rto, v.rpo),
            (Verdict::Met, Some(Verdict::Met), Some(Verdict::Met)),
            "{v:?}"
        );

        let v = judge(&o, &transition(6.0, Some(0), Some(LossBound::Exact))).expect("judged");
        assert_eq!((v.verdict, v.rto), (Verdict::Missed, Some(Verdict::Missed)));
        assert!(v.message.contains("RTO 6.00s over spec.objectives.rto 5s"), "{}", v.message);

        // A lower bound within the objective proves nothing; over it, it is a miss.
        let v = judge(&o, &transition(3.0, Some(0), Some(LossBound::AtLeast))).expect("judged");
        assert_eq!((v.verdict, v.rpo), (Verdict::Unknown, Some(Verdict::Unknown)));
        assert!(v.message.contains("lower bound"), "{}", v.message);
        let v = judge(&o, &transition(3.0, Some(4096), Some(LossBound::AtLeast))).expect("judged");
        assert_eq!(v.verdict, Verdict::Missed);
        let v = judge(&o, &transition(3.0, None, None)).expect("judged");
        assert_eq!(v.rpo, Some(Verdict::Unknown));

        // Only what is set is judged; nothing set, no verdict.
        let v = judge(&objectives(Some("5s"), None), &transition(3.0, None, None)).expect("judged");
        assert_eq!((v.verdict, v.rpo), (Verdict::Met, None));
        assert!(judge(&objectives(None, None), &transition(3.0, None, None)).is_none());
        assert_eq!(cutover_seconds(&transition(3.0, None, None)), Some(0.5));
    }

    fn with(o: Objectives) -> DisasterRecoveryPairSpec {
        let mut spec = test_spec().with_probes("1s", "500ms");
        spec.objectives = Some(o);
        spec
    }

    #[test]
    fn the_forecast_names_the_figure_that_stands_in_the_way() {
        let st = DisasterRecoveryPairStatus { replication_lag_bytes: Some(0), ..Default::default() };
        // Async can never promise 0.
        let r = at_risk(&with(objectives(None, Some("0"))), &st, false);
        assert!(r.len() == 1 && r[0].contains("needs spec.failover.replication Sync"), "{r:?}");
        // A lag over the RPO.
        let lagging =
            DisasterRecoveryPairStatus { replication_lag_bytes: Some(2 << 20), ..Default::default() };
        let r = at_risk(&with(objectives(None, Some("1Mi"))), &lagging, false);
        assert!(r.len() == 1 && r[0].contains("replay lag is 2.0 MiB"), "{r:?}");
        assert!(at_risk(&with(objectives(None, Some("1Mi"))), &st, false).is_empty());
        // Sync with a synchronous standby: 0 holds.
        let mut spec = with(objectives(None, Some("0")));
        spec.failover.replication = ReplicationMode::Sync;
        let sync = DisasterRecoveryPairStatus {
            conditions: vec![Condition {
                type_: conditions::SYNCHRONOUS_REPLICATION.into(),
                status: ConditionStatus::True,
                reason: "Synchronous".into(),
                message: String::new(),
                last_transition_time: String::new(),
                observed_generation: None,
            }],
            ..Default::default()
        };
        assert!(at_risk(&spec, &sync, false).is_empty());
        assert!(at_risk(&spec, &DisasterRecoveryPairStatus::default(), false)[0].contains("not synchronous"));

        // RTO: (3 − 1) × 1 s + 0.5 s = 2.5 s of detection, plus the last cutover.
        let done = DisasterRecoveryPairStatus {
            last_transition: Some(transition(3.0, None, None)),
            ..Default::default()
        };
        assert!(at_risk(&with(objectives(Some("3s"), None)), &done, false).is_empty());
        let r = at_risk(&with(objectives(Some("2s"), None)), &done, false);
        assert!(r.len() == 1 && r[0].contains("could take 3.0s") && r[0].contains("cutover 0.50s"), "{r:?}");
        // With a controller per site and a witness, the lease counts unless the primary has a fence hook.
        let mut keyed = with(objectives(Some("5s"), None));
        keyed.coordination = test_spec().with_witness("http://127.0.0.1:2379").coordination;
        let r = at_risk(&keyed, &done, true);
        assert!(r.len() == 1 && r[0].contains("leaseTTL"), "{r:?}");
        assert!(at_risk(&keyed, &done, false).is_empty(), "no keeper, no lease wait");
    }
}
