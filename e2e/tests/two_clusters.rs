//! Two sites, two Kubernetes clusters (issue 13): each site has its own control plane, PgBouncer,
//! app and controller (`--site`, with its own cluster's kubeconfig); the same pair spec is applied
//! in both clusters, per-site entries tagged with their site.
//!
//! - The primary site lost whole (its kube-apiserver and etcd, its controller, its PostgreSQL and
//!   its PgBouncer SIGKILLed together) → west takes the epoch from the witness, promotes, and
//!   repoints what lives in its own cluster; a client of both PgBouncers writes again through
//!   west's. The lost site's cluster comes back with its objects (`revive_site`); what its
//!   controller then does with the old primary is not asserted here yet.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use understudy_e2e::{
    support::wait_for,
    two_sites::{Return, TwoSites, SITES},
    workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_primary_site_and_its_cluster_promotes_west_in_its_own_cluster() -> Result<()> {
    let t0 = Instant::now();
    let mut two = TwoSites::start("twoclusters").await?;
    let bed_up = t0.elapsed();
    let pair = two.pair("chat");
    two.apply(&pair).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    for site in SITES {
        two.wait_healthy(site, "chat", "east").await?;
    }
    wait_for("east to hold the leader key", Duration::from_secs(20), || async {
        Ok(two.witness_leader("chat")? == "0 east")
    })
    .await?;
    let healthy = t0.elapsed();

    let wl = two.workload("app_writes", Duration::from_millis(50)).await?;
    wait_for("writes through east's PgBouncer", Duration::from_secs(10), || async { Ok(wl.acked() > 10) })
        .await?;
    let before = two.api("east").get("chat").await?;

    let killed_at = two.kill_site("east").await?;
    let west_port = two.server("west").port;
    wait_for("west to take epoch 1 from the witness", Duration::from_secs(30), || async {
        Ok(two.witness_epoch("chat")?.starts_with("1 west "))
    })
    .await
    .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 40)))?;
    let drp = two
        .wait_pair("west", "chat", "the failover to west to complete", Duration::from_secs(60), |p| {
            p.status.as_ref().is_some_and(|st| {
                st.current_primary.as_deref() == Some("west")
                    && st.epoch.0 == 1
                    && st
                        .last_transition
                        .as_ref()
                        .is_some_and(|t| t.outcome.map(|o| o.as_str()) == Some("Completed"))
            })
        })
        .await
        .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 40)))?;
    let t = drp.status.and_then(|s| s.last_transition).context("no transition")?;
    ensure!(
        t.from == "east" && t.to == "west" && t.holder == "west",
        "transition {} → {} by {}",
        t.from,
        t.to,
        t.holder
    );
    let mm = two.secret_value("west", "mattermost-db", "dsn").await?;
    ensure!(mm == two.dsn("west"), "cluster B's mattermost-db names {mm}, not west's DSN");
    wait_for("a write acknowledged by west", Duration::from_secs(20), || async {
        let st = wl.stats();
        Ok(st.acked_at.iter().zip(&st.acked_port).any(|(a, p)| *a >= killed_at && *p == west_port))
    })
    .await?;
    let stats = wl.stop().await;
    let rto = stats
        .acked_at
        .iter()
        .zip(&stats.acked_port)
        .find(|(a, p)| **a >= killed_at && **p == west_port)
        .map(|(a, _)| a.duration_since(killed_at))
        .context("no write on west")?;
    let lost = workload::lost(&stats.acked, &two.server("west").ids("app_writes")?);
    eprintln!(
        "two clusters: bed up in {:.1}s, healthy at {:.1}s; east lost → first write acknowledged by west after \
         {:.2}s (RTO); {} acknowledged writes missing on west (RPO), {} client errors",
        bed_up.as_secs_f64(),
        healthy.as_secs_f64(),
        rto.as_secs_f64(),
        lost.len(),
        stats.errors
    );

    // East returns: its cluster comes back with the pair, its Secrets and their data as they were.
    let direct = two.direct_writer("east", "direct_east");
    let revived = two.revive_site("east", Return::ControllerFirst { gap: Duration::from_secs(1) }).await?;
    let after = two.api("east").get("chat").await.context("the pair in cluster A after the revive")?;
    ensure!(after.metadata.uid == before.metadata.uid, "cluster A's pair is a new object");
    ensure!(after.spec == before.spec, "cluster A's pair spec changed across the loss");
    let admin = two.secret_value("east", "pgb-admin", "username").await?;
    ensure!(admin == two.cluster("east").pgb.admin_user, "cluster A's pgb-admin Secret: {admin}");
    ensure!(
        two.cluster("east").cp.is_ready() && two.cluster_mut("east").controller_pid() != 0,
        "cluster A or east's controller is not up after the revive"
    );
    // Not asserted yet (the controller's return handling): what east does in its first seconds back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = direct.stop().await;
    let back = revived.postgres_ready;
    let acked_back: Vec<f64> =
        st.acked_at.iter().filter(|a| **a >= back).map(|a| a.duration_since(back).as_secs_f64()).collect();
    let east_status = two.api("east").get("chat").await?.status.unwrap_or_default();
    eprintln!(
        "east back (controller first, then PostgreSQL {:.1}s later): {} direct writes acknowledged by east in the \
         first {:.1}s (from {:.2}s to {:.2}s after it accepted connections); east in recovery: {}; cluster A: \
         currentPrimary {:?}, epoch {}, phase {:?}; direct writer errors {}",
        revived.postgres_ready.duration_since(revived.controller_started).as_secs_f64(),
        acked_back.len(),
        back.elapsed().as_secs_f64(),
        acked_back.first().copied().unwrap_or(f64::NAN),
        acked_back.last().copied().unwrap_or(f64::NAN),
        two.server("east").psql("SELECT pg_is_in_recovery()").map(|s| s.trim().to_string())?,
        east_status.current_primary,
        east_status.epoch.0,
        east_status.phase,
        st.errors,
    );
    let east_pgb = std::fs::read_to_string(two.cluster("east").pgb.databases_file())?;
    let east_mm = two.secret_value("east", "mattermost-db", "dsn").await?;
    eprintln!(
        "east's PgBouncer: {}; cluster A's mattermost-db names {}",
        east_pgb.trim(),
        if east_mm == two.dsn("west") {
            "west"
        } else if east_mm == two.dsn("east") {
            "east"
        } else {
            "?"
        }
    );
    eprintln!("two clusters: test took {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
