//! Recovery objectives and DR drills, against the real sandbox (kube-apiserver, PostgreSQL,
//! PgBouncer, BIND, the witness): a drill switches to the standby and back under a workload and is
//! judged `Met`; a failover slower than its RTO is forecast at risk beforehand and judged `Missed`;
//! a drill on a pair whose former primary does not follow is refused.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use understudy::crd::{conditions, DisasterRecoveryPair, DrillOutcome, Objectives, Verdict};
use understudy_e2e::{
    bed::Bed,
    pair::{self, Automatic},
    support::{self, condition, wait_for},
    workload::lost,
};

const DRILL: &str = "dr.understudy.dev/drill";

async fn bed_with(label: &str, rto: &str, rpo: Option<&str>) -> Result<(Bed, support::RunningController)> {
    let bed = Bed::start(label).await?;
    let ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    let objectives = Objectives { rto: Some(pair::duration(rto)), rpo: rpo.map(|q| Quantity(q.into())) };
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .spec(|s| s.objectives = Some(objectives))
        .create(&bed.client, &bed.ns)
        .await?;
    bed.wait_healthy("chat").await?;
    Ok((bed, ctl))
}

/// Waits until `status.drills` holds a report, and returns the pair.
async fn wait_drill_report(bed: &Bed, timeout: Duration) -> Result<DisasterRecoveryPair> {
    let api = bed.api();
    wait_for("a drill report in status.drills", timeout, || async {
        Ok(api.get("chat").await?.status.is_some_and(|s| !s.drills.is_empty()))
    })
    .await?;
    Ok(api.get("chat").await?)
}

/// `ReadyForFailover` once its message mentions `needle`.
async fn wait_ready_for_failover(bed: &Bed, needle: &str) -> Result<(String, String)> {
    let api = bed.api();
    let seen = std::sync::Mutex::new((String::new(), String::new()));
    let found = wait_for(&format!("ReadyForFailover naming {needle:?}"), Duration::from_secs(20), || async {
        let drp = api.get("chat").await?;
        let mut seen = seen.lock().expect("not poisoned");
        if let Some((_, reason, message)) = condition(&drp, conditions::READY_FOR_FAILOVER) {
            *seen = (reason, message);
        }
        Ok(seen.1.contains(needle))
    })
    .await;
    let seen = seen.into_inner().expect("not poisoned");
    found.map_err(|e| anyhow::anyhow!("{e}; last seen: {seen:?}"))?;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_goes_to_the_standby_and_back_under_traffic_and_meets_its_objectives() -> Result<()> {
    let (bed, ctl) = bed_with("drill", "30s", Some("0")).await?;
    // Under Async an RPO of 0 can never be promised for a failover: the forecast says so.
    let (reason, message) = wait_ready_for_failover(&bed, "spec.objectives.rpo 0 needs").await?;
    eprintln!("ReadyForFailover: {reason}: {message}");
    assert_eq!(reason, conditions::reasons::OBJECTIVES_AT_RISK, "{message}");

    let wl = bed.workload("workload", Duration::from_millis(10)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;
    bed.annotate("chat", DRILL, "d1").await?;
    let drp = wait_drill_report(&bed, Duration::from_secs(180)).await?;
    let st = drp.status.unwrap_or_default();
    let r = &st.drills[0];
    eprintln!("drill report: {}", serde_json::to_string_pretty(r)?);
    assert_eq!((r.token.as_str(), r.outcome), ("d1", DrillOutcome::Passed), "{}", r.message);
    assert_eq!(r.legs.len(), 2);
    assert_eq!(
        r.legs.iter().map(|l| (l.from.as_str(), l.to.as_str())).collect::<Vec<_>>(),
        [("east", "west"), ("west", "east")]
    );
    for l in &r.legs {
        // A switchover loses nothing, exactly: the RPO of 0 is met, as is the RTO of 30 s.
        assert_eq!(l.lost_wal_bytes, Some(0), "{l:?}");
        let v = l.objectives.as_ref().expect("judged");
        assert_eq!(
            (v.verdict, v.rto, v.rpo),
            (Verdict::Met, Some(Verdict::Met), Some(Verdict::Met)),
            "{v:?}"
        );
        let held = l.writes_held_seconds.expect("writes held measured");
        assert!(held > 0.0 && held < 5.0, "writes held {held}s");
    }
    assert_eq!(r.objectives, Some(Verdict::Met));
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (2, Some("east")), "back home, two epochs later");
    assert!(st.drill.is_none());
    for reason in ["DrillStarted", "DrillPassed", "ObjectivesMet"] {
        assert!(bed.has_event(reason).await?, "Event {reason}");
    }
    let metrics = ctl.metrics.render();
    assert!(
        metrics.lines().any(|l| l.starts_with("understudy_drills_total{")
            && l.contains("verdict=\"Passed\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(metrics.contains("understudy_objective_verdicts_total{"), "{metrics}");

    // Under the drill's traffic: every acknowledged commit is on the primary it came home to.
    let before = wl.acked();
    wait_for("writes after the drill", Duration::from_secs(20), || async { Ok(wl.acked() > before + 10) })
        .await?;
    let stats = wl.stop().await;
    let missing = lost(&stats.acked, &bed.server("east").ids("workload")?);
    eprintln!(
        "drill under traffic: {} acknowledged, {} client errors, longest write gap {:?}, missing {}",
        stats.acked.len(),
        stats.errors,
        stats.longest_gap,
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");

    // The same token again does nothing; a second drill runs and is kept first.
    bed.annotate("chat", DRILL, "d2").await?;
    wait_for("the second drill's report", Duration::from_secs(180), || async {
        Ok(bed.api().get("chat").await?.status.is_some_and(|s| s.drills.len() == 2))
    })
    .await?;
    let st = bed.api().get("chat").await?.status.unwrap_or_default();
    assert_eq!((st.drills[0].token.as_str(), st.drills[1].token.as_str()), ("d2", "d1"));
    assert_eq!(st.epoch.0, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_over_its_rto_is_forecast_at_risk_then_judged_missed_and_a_drill_is_refused() -> Result<()>
{
    // Detection alone takes (3 − 1) × 0.5 s + 0.5 s = 1.5 s: an RTO of 1 s cannot be met.
    let (mut bed, ctl) = bed_with("objmiss", "1s", None).await?;
    let (reason, message) = wait_ready_for_failover(&bed, "spec.objectives.rto 1s").await?;
    eprintln!("ReadyForFailover: {reason}: {message}");
    assert_eq!(reason, conditions::reasons::OBJECTIVES_AT_RISK);
    assert!(message.contains("detection 1.5s"), "{message}");
    assert!(ctl
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("understudy_objectives_at_risk{") && l.ends_with(" 1")));

    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let t = drp.status.clone().unwrap_or_default().last_transition.expect("transition");
    let v = t.objectives.clone().expect("judged");
    eprintln!("RTO {:?}: {v:?}", t.rto_seconds);
    assert_eq!((v.verdict, v.rto, v.rpo), (Verdict::Missed, Some(Verdict::Missed), None));
    assert!(v.message.contains("over spec.objectives.rto 1s"), "{}", v.message);
    assert!(bed.has_event("ObjectivesMissed").await?);
    assert!(ctl
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("understudy_objective_verdicts_total{") && l.contains("verdict=\"Missed\"")));

    // east is dead and does not follow: a drill now is refused and nothing moves.
    bed.annotate("chat", DRILL, "too-soon").await?;
    let drp = wait_drill_report(&bed, Duration::from_secs(20)).await?;
    let st = drp.status.unwrap_or_default();
    let r = &st.drills[0];
    assert_eq!(r.outcome, DrillOutcome::Refused, "{r:?}");
    assert!(r.message.contains("former primary east does not follow"), "{}", r.message);
    assert!(r.legs.is_empty());
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (1, Some("west")));
    assert!(bed.has_event("DrillRefused").await?);
    Ok(())
}
