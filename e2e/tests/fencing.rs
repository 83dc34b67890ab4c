//! The epoch as the fencing token, against the real witness etcd: two controllers racing to promote
//! (no leader election between them, as two sites would be) increment the epoch exactly once and
//! promote once; with the witness down nothing is promoted, a condition says why, and health
//! reporting goes on. `make chaos N=50` repeats the race.

use std::time::Duration;

use anyhow::Result;
use understudy::crd::{conditions, ConditionStatus};
use understudy_e2e::{
    bed::Bed,
    pair::Automatic,
    support::{self, condition, wait_for},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_racing_to_promote_take_one_epoch_and_promote_once() -> Result<()> {
    let rounds: usize = std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut double = 0;
    for round in 1..=rounds {
        let mut bed = Bed::start("race").await?;
        bed.pair("chat")
            .failover(|f| {
                f.mode(Automatic).probe_interval("200ms").probe_timeout("200ms").failure_threshold(2)
            })
            .create(&bed.client, &bed.ns)
            .await?;
        // Two independent actors on the same pair, both probing and both wanting to fail over.
        let _east = bed.controller_process("east", &[])?;
        let _west = bed.controller_process("west", &[])?;
        bed.wait_healthy("chat").await?;
        let serial = bed.bind.serial()?;
        bed.pg.primary.kill9();
        let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let st = bed.api().get("chat").await?.status.unwrap_or_default();
        let etcd = bed.witness_epoch("chat")?;
        let timeline = bed.pg.standby.timeline()?;
        let dns_changes = bed.bind.serial()? - serial;
        let ok = st.epoch.0 == 1 && etcd.starts_with("1 ") && timeline == 2 && dns_changes == 1;
        if !ok {
            double += 1;
        }
        eprintln!(
            "round {round}: epoch {} (etcd {etcd:?}), timeline {timeline}, DNS changes {dns_changes}, holder {}",
            st.epoch.0,
            drp.status.and_then(|s| s.last_transition).map(|t| t.holder).unwrap_or_default()
        );
    }
    eprintln!("{rounds} races: {double} with more than one epoch, promotion or DNS change");
    assert_eq!(double, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_witness_down_nothing_is_promoted_and_health_reporting_goes_on() -> Result<()> {
    let mut bed = Bed::start("nowitness").await?;
    let _ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .create(&bed.client, &bed.ns)
        .await?;
    bed.wait_healthy("chat").await?;
    bed.witness.kill();
    bed.pg.primary.kill9();
    let api = bed.api();
    wait_for("FailoverBlocked/WitnessUnavailable", Duration::from_secs(30), || async {
        Ok(condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED).is_some_and(|(s, r, m)| {
            s == ConditionStatus::True && r == "WitnessUnavailable" && m.contains("etcd")
        }))
    })
    .await?;
    assert_eq!(
        bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(),
        "t",
        "nothing promoted without the witness"
    );
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!(st.epoch.0, 0);
    // Health reporting goes on: the failure count keeps climbing, the standby is still reported.
    let before = st.sites.iter().find(|s| s.name == "east").map(|s| s.consecutive_failures).unwrap_or(0);
    wait_for("probes to keep reporting", Duration::from_secs(10), || async {
        let st = api.get("chat").await?.status.unwrap_or_default();
        Ok(st.sites.iter().find(|s| s.name == "east").is_some_and(|s| s.consecutive_failures > before + 2)
            && condition(&api.get("chat").await?, conditions::PRIMARY_HEALTHY)
                .is_some_and(|c| c.1 == "PrimaryDown"))
    })
    .await?;
    Ok(())
}
