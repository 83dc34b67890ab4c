//! The kube-apiserver restarted in the middle of a failover: the controller (a real process) keeps
//! its journal in status, resumes when the API returns, and finishes with one promotion, one epoch
//! and one DNS change. Its own test binary, because it restarts this process's control plane.

use std::time::Duration;

use anyhow::Result;
use understudy_e2e::{bed::Bed, pair::Automatic, support::wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_survives_a_kube_apiserver_restart_and_completes_once() -> Result<()> {
    let mut bed = Bed::start("apirestart").await?;
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .create(&bed.client, &bed.ns)
        .await?;
    let _ctl = bed.controller_process("west", &[])?;
    bed.wait_healthy("chat").await?;
    let serial = bed.bind.serial()?;
    // Hold the failover at FlipDns (DNS down), so the outage lands mid-transition.
    bed.bind.kill();
    bed.pg.primary.kill9();
    let api = bed.api();
    wait_for("the failover to be stuck at FlipDns", Duration::from_secs(30), || async {
        let t = api.get("chat").await?.status.and_then(|s| s.last_transition);
        Ok(t.and_then(|t| t.steps.into_iter().find(|s| s.name == "FlipDns"))
            .is_some_and(|s| s.attempts >= 1 && s.finished_at.is_none()))
    })
    .await?;
    let cp = bed.cp;
    tokio::task::spawn_blocking(move || cp.restart_apiserver(Duration::from_secs(3))).await??;
    tokio::task::block_in_place(|| bed.bind.restart())?;
    // The old client's connections died with the server; a fresh client for the checks.
    let client = bed.cp.client().await?;
    let api: kube::Api<understudy::crd::DisasterRecoveryPair> = kube::Api::namespaced(client, &bed.ns);
    wait_for("the failover to complete after the restart", Duration::from_secs(60), || async {
        Ok(api
            .get("chat")
            .await?
            .status
            .and_then(|s| s.last_transition)
            .is_some_and(|t| t.finished_at.is_some()))
    })
    .await?;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (1, Some("west")));
    let t = st.last_transition.expect("transition");
    assert_eq!(
        t.steps.iter().find(|s| s.name == "Promote").map(|s| s.attempts),
        Some(1),
        "promotion not repeated"
    );
    assert_eq!(bed.pg.standby.timeline()?, 2);
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.12"]);
    assert_eq!(bed.bind.serial()?, serial + 1, "one DNS change");
    assert!(bed.witness_epoch("chat")?.starts_with("1 "));
    Ok(())
}
