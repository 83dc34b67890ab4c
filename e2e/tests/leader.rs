//! One leader among controller replicas (a coordination.k8s.io Lease on the real API server), and
//! the admin endpoint: /metrics, /healthz, /readyz scraped from the real process.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use understudy_e2e::{bed::Bed, pair::Automatic, sandbox::proc::free_port, support::wait_for};

fn scrape(port: u16, path: &str) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "2", "-o", "-", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').context("curl output")?;
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

fn is_leader(port: u16) -> Option<bool> {
    let (code, body) = scrape(port, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    body.lines().find(|l| l.starts_with("understudy_is_leader ")).map(|l| l.ends_with(" 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_killed_leader_is_replaced_within_the_lease() -> Result<()> {
    let mut bed = Bed::start("leader").await?;
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .create(&bed.client, &bed.ns)
        .await?;
    let (pa, pb) = (free_port()?, free_port()?);
    let lease = ["--leader-elect", "--lease-name", "understudy", "--lease-namespace"];
    let spawn = |site: &str, port: u16| {
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = lease.to_vec();
        args.push(&bed.ns);
        let args: Vec<String> =
            args.iter().map(|s| s.to_string()).chain(["--metrics-addr".to_string(), addr]).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // Two replicas of east's release.
        bed.controller_replica("east", site, &refs)
    };
    let mut a = spawn("replica-a", pa)?;
    let mut b = spawn("replica-b", pb)?;
    wait_for("exactly one leader", Duration::from_secs(30), || async {
        Ok(matches!((is_leader(pa), is_leader(pb)), (Some(true), Some(false)) | (Some(false), Some(true))))
    })
    .await?;
    bed.wait_healthy("chat").await?;
    // Both stay up; the follower stays a follower (no flapping) over a few renew intervals.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (la, lb) = (is_leader(pa), is_leader(pb));
        assert!(
            matches!((la, lb), (Some(true), Some(false)) | (Some(false), Some(true))),
            "one leader at all times: {la:?} {lb:?}"
        );
    }
    let (leader, follower_port) = if is_leader(pa) == Some(true) { (&mut a, pb) } else { (&mut b, pa) };
    let killed = std::time::Instant::now();
    leader.kill9();
    wait_for("the follower to take over", Duration::from_secs(30), || async {
        Ok(is_leader(follower_port) == Some(true))
    })
    .await?;
    let handover = killed.elapsed();
    eprintln!(
        "leader handover after SIGKILL: {handover:?} (lease duration {:?})",
        understudy::replica_lease::LEASE_DURATION
    );
    assert!(handover <= understudy::replica_lease::LEASE_DURATION + Duration::from_secs(6), "{handover:?}");

    // The new leader acts: a primary failure is handled exactly once.
    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let st = drp.status.unwrap_or_default();
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (1, Some("west")));
    assert!(bed.witness_epoch("chat")?.starts_with("1 "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_serves_metrics_health_and_readiness() -> Result<()> {
    let mut bed = Bed::start("metrics").await?;
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .create(&bed.client, &bed.ns)
        .await?;
    let port = free_port()?;
    let _ctl = bed.controller_process_with("west", &["--metrics-addr", &format!("127.0.0.1:{port}")], &[])?;
    bed.wait_healthy("chat").await?;
    assert_eq!(scrape(port, "/healthz")?.0, 200);
    assert_eq!(scrape(port, "/readyz")?.0, 200);
    assert_eq!(scrape(port, "/nope")?.0, 404);
    bed.pg.primary.kill9();
    bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let pair = format!("{}/chat", bed.ns);
    let (_, m) = scrape(port, "/metrics")?;
    for needle in [
        format!("understudy_replication_lag_bytes{{pair=\"{pair}\"}}"),
        format!("understudy_epoch{{pair=\"{pair}\"}} 1"),
        format!("understudy_probes_total{{pair=\"{pair}\",site=\"east\",outcome=\"down\"}}"),
        "understudy_failover_step_duration_seconds_count{step=\"Promote\",outcome=\"Succeeded\"} 1".to_string(),
        format!("understudy_transitions_total{{pair=\"{pair}\",kind=\"Failover\",trigger=\"Automatic\",outcome=\"Completed\"}} 1"),
        format!("understudy_failover_rto_seconds{{pair=\"{pair}\"}}"),
        "understudy_is_leader 1".to_string(),
        "understudy_reconcile_runs_total".to_string(),
    ] {
        assert!(m.contains(&needle), "/metrics lacks {needle}:\n{m}");
    }
    assert!(!m.contains(&bed.pg.password), "no secret in metrics");
    Ok(())
}
