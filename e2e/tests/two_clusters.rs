//! Two sites, two Kubernetes clusters (issue 13): each site has its own control plane, PgBouncer,
//! app and controller (`--site`, with its own cluster's kubeconfig); the same pair spec is applied
//! in both clusters, per-site entries tagged with their site.
//!
//! - The primary site lost whole (its kube-apiserver and etcd, its controller, its PostgreSQL and
//!   its PgBouncer SIGKILLed together) → west takes the epoch from the witness, promotes, and
//!   repoints what lives in its own cluster; a client of both PgBouncers writes again through
//!   west's, and west's application is activated.
//! - The lost site returns, PostgreSQL first or its controller first: east's PostgreSQL comes back
//!   behind its boot gate and acknowledges no write (a writer hammers it directly every 50 ms);
//!   east's controller reads the witness, mirrors the new epoch into cluster A, takes no key,
//!   repoints east's own DataSource and PgBouncer at west, deactivates east's application and
//!   rejoins east as west's standby; west's writes go on undisturbed.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use understudy::crd::{ConditionStatus, DisasterRecoveryPair};
use understudy_e2e::{
    support::{condition, wait_for},
    two_sites::{Return, TwoSites, SITES},
    workload::{self, Workload},
};

/// Both clusters up with the pair, a controller per site, east serving; then east lost whole and
/// west serving. Returns the bed, the workload (both PgBouncers) and cluster A's pair from before.
async fn lose_east(label: &str) -> Result<(TwoSites, Workload, DisasterRecoveryPair)> {
    let t0 = Instant::now();
    let mut two = TwoSites::start(label).await?;
    let bed_up = t0.elapsed();
    let pair = two.pair("chat");
    two.apply(&pair).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    two.wait_east_serving("chat").await?;
    // The keeper armed east's boot gate once the key was confirmed.
    let gate = two.server("east").data.join("standby.signal");
    wait_for("east's boot gate to be armed", Duration::from_secs(10), || async { Ok(gate.exists()) })
        .await
        .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 30)))?;
    ensure!(two.server("east").psql("SELECT pg_is_in_recovery()")?.trim() == "f", "east serves");
    wait_for("east's app active and west's passive", Duration::from_secs(20), || async {
        Ok(replicas(&two, "east").await? == 2 && replicas(&two, "west").await? == 0)
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
    wait_for("west's app activated", Duration::from_secs(20), || async {
        Ok(replicas(&two, "west").await? == 2)
    })
    .await
    .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 30)))?;
    let stats = wl.stats();
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
    Ok((two, wl, before))
}

/// The `mattermost` Deployment's replicas in `site`'s cluster.
async fn replicas(two: &TwoSites, site: &str) -> Result<i32> {
    let d =
        Api::<Deployment>::namespaced(two.cluster(site).client.clone(), &two.ns).get("mattermost").await?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
}

/// East comes back in `order`: it acknowledges no write, cluster A converges on west, east's own
/// objects point at west, east's app is scaled down, east follows west, and west is not disturbed.
async fn east_returns(order: Return, label: &str) -> Result<()> {
    let (mut two, wl, before) = lose_east(label).await?;
    let west_port = two.server("west").port;
    let direct = two.direct_writer("east", "direct_east");
    let returning = Instant::now();
    let returning_wall = jiff::Timestamp::now();
    let revived = two.revive_site("east", order).await?;
    let after = two.api("east").get("chat").await.context("the pair in cluster A after the revive")?;
    ensure!(after.metadata.uid == before.metadata.uid, "cluster A's pair is a new object");
    // Behind its boot gate: a standby from its first second.
    ensure!(
        two.server("east").psql("SELECT pg_is_in_recovery()")?.trim() == "t",
        "east came back writable (no boot gate)"
    );
    let converged = two
        .wait_pair("east", "chat", "cluster A to mirror the witness", Duration::from_secs(30), |p| {
            p.status
                .as_ref()
                .is_some_and(|st| st.current_primary.as_deref() == Some("west") && st.epoch.0 == 1)
        })
        .await
        .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 40)))?;
    // The journal of west's failover, mirrored from the witness into cluster A.
    let t = converged
        .status
        .as_ref()
        .and_then(|s| s.last_transition.as_ref())
        .context("no journal in cluster A")?;
    ensure!(
        t.to == "west"
            && t.holder == "west"
            && t.epoch.0 == 1
            && t.outcome.map(|o| o.as_str()) == Some("Completed"),
        "cluster A's journal: {} → {} by {} epoch {} {:?}",
        t.from,
        t.to,
        t.holder,
        t.epoch.0,
        t.outcome
    );
    // When east's controller adopted the witness's epoch, from its Event (the wait above may start
    // late: with the controller first, `revive_site` returns only after PostgreSQL is up too).
    let adopted =
        event_time(&two, "east", "EpochAdopted").await?.context("no EpochAdopted Event in cluster A")?;
    let started_wall = returning_wall
        + jiff::SignedDuration::try_from(revived.controller_started.duration_since(returning))?;
    let converged_after = adopted.duration_since(started_wall);
    let demoted = two
        .wait_pair("east", "chat", "east's LeaderKey to say SiteDemoted", Duration::from_secs(20), |p| {
            condition(p, "LeaderKey").is_some_and(|c| c.1 == "SiteDemoted")
        })
        .await?;
    let key = condition(&demoted, "LeaderKey");
    two.wait_pair("east", "chat", "east to follow west", Duration::from_secs(90), |p| {
        p.status
            .as_ref()
            .and_then(|st| st.former_primary.as_ref())
            .is_some_and(|f| f.site == "east" && f.assessment.as_str() == "Following")
    })
    .await
    .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 40)))?;
    let following_after = revived.controller_started.elapsed();
    wait_for("east's own objects to point at west", Duration::from_secs(20), || async {
        Ok(two.secret_value("east", "mattermost-db", "dsn").await? == two.dsn("west")
            && std::fs::read_to_string(two.cluster("east").pgb.databases_file())?
                .contains(&format!("port={west_port}")))
    })
    .await
    .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 40)))?;
    wait_for("east's app scaled down", Duration::from_secs(20), || async {
        Ok(replicas(&two, "east").await? == 0)
    })
    .await?;
    ensure!(replicas(&two, "west").await? == 2, "west's app is not active");
    let st = direct.stop().await;
    let accepted: Vec<f64> = st
        .acked_at
        .iter()
        .filter(|a| **a >= returning)
        .map(|a| a.duration_since(revived.postgres_ready).as_secs_f64())
        .collect();
    ensure!(
        accepted.is_empty(),
        "the returning east acknowledged {} writes: at {accepted:?}s",
        accepted.len()
    );
    ensure!(two.server("east").psql("SELECT pg_is_in_recovery()")?.trim() == "t", "east is not a standby");
    ensure!(two.witness_epoch("chat")?.starts_with("1 west "), "the epoch moved again");
    ensure!(two.witness_leader("chat")?.ends_with(" west"), "west does not hold the key");
    // West undisturbed: its writes went on through the whole return.
    let ws = wl.stop().await;
    let on_west: Vec<Instant> = ws
        .acked_at
        .iter()
        .zip(&ws.acked_port)
        .filter(|(a, p)| **a >= returning && **p == west_port)
        .map(|(a, _)| *a)
        .collect();
    let gap = on_west.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    ensure!(on_west.len() > 20, "only {} writes on west during the return", on_west.len());
    ensure!(gap < Duration::from_secs(2), "west's writes stalled for {gap:?} during the return");
    let lost = workload::lost(&ws.acked, &two.server("west").ids("app_writes")?);
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "east back ({order:?}): 0 writes accepted by the returning site ({} refused); cluster A mirrored west at \
         epoch 1 {:.2}s after east's controller started (LeaderKey {:?}); east following {:.1}s after; west's \
         longest write gap during the return {:.0} ms over {} writes",
        st.errors,
        converged_after.as_secs_f64(),
        key.map(|c| c.1),
        following_after.as_secs_f64(),
        gap.as_secs_f64() * 1000.0,
        on_west.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_lost_whole_then_back_postgres_first_is_demoted_and_accepts_no_write() -> Result<()> {
    east_returns(Return::PostgresFirst { gap: Duration::from_secs(3) }, "twoc-pgfirst").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_lost_whole_then_back_controller_first_is_demoted_and_accepts_no_write() -> Result<()> {
    east_returns(Return::ControllerFirst { gap: Duration::from_secs(3) }, "twoc-ctlfirst").await
}

/// When the newest Event with `reason` was recorded in `site`'s cluster.
async fn event_time(two: &TwoSites, site: &str, reason: &str) -> Result<Option<jiff::Timestamp>> {
    use k8s_openapi::api::events::v1::Event;
    let events =
        Api::<Event>::namespaced(two.cluster(site).client.clone(), &two.ns).list(&Default::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.event_time.map(|t| t.0).or(e.deprecated_first_timestamp.map(|t| t.0)))
        .max())
}

/// Both clusters with the pair, a controller per site (east's with `east_args`), east serving
/// with its key and its boot gate armed.
async fn healthy(label: &str, east_args: &[&str]) -> Result<TwoSites> {
    let mut two = TwoSites::start(label).await?;
    two.apply(&two.pair("chat")).await?;
    two.start_controller_with("east", east_args, &[])?;
    two.start_controller("west")?;
    two.wait_east_serving("chat").await?;
    Ok(two)
}

/// The serving site's API server alone is lost for longer than the Kubernetes Lease's renew
/// deadline (10 s): nothing moves. East keeps its leader key and stays writable (its keeper does not
/// use the API server), west does not promote, and east's controller — with and without leader
/// election — is still running and acts again once its API server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_sites_api_server_alone_lost_moves_nothing_with_leader_election() -> Result<()> {
    api_server_alone_lost(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_sites_api_server_alone_lost_moves_nothing_without_leader_election() -> Result<()> {
    api_server_alone_lost(false).await
}

async fn api_server_alone_lost(elect: bool) -> Result<()> {
    {
        let label = if elect { "twoc-api-elect" } else { "twoc-api" };
        let lease_ns;
        let args: Vec<&str> = if elect {
            lease_ns = "default".to_string();
            vec!["--leader-elect", "--lease-name", "understudy-east", "--lease-namespace", &lease_ns]
        } else {
            vec![]
        };
        let mut two = healthy(label, &args).await?;
        let direct = two.direct_writer("east", "direct_api");
        wait_for("direct writes on east", Duration::from_secs(10), || async { Ok(direct.acked() > 5) })
            .await?;
        two.cluster("east").cp.stop_apiserver();
        let down = Instant::now();
        let mut key_lost = None;
        while down.elapsed() < Duration::from_secs(16) {
            let leader = two.witness_leader("chat")?;
            if leader != "0 east" && key_lost.is_none() {
                key_lost = Some((down.elapsed(), leader));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let acked_while_down = direct.stats().acked_at.iter().filter(|a| **a >= down).count();
        tokio::task::block_in_place(|| two.cluster("east").cp.start_apiserver())?;
        ensure!(
            key_lost.is_none(),
            "elect={elect}: east's key changed while its API server was down: {key_lost:?}"
        );
        ensure!(
            two.witness_epoch("chat")?.starts_with("0") || two.witness_epoch("chat")?.is_empty(),
            "the epoch moved"
        );
        ensure!(
            acked_while_down > 100,
            "elect={elect}: east acknowledged only {acked_while_down} writes in 16 s"
        );
        ensure!(two.cluster_mut("east").controller_pid() != 0, "elect={elect}: east's controller exited");
        // Back: east's controller acts on its cluster again (a dry run is answered).
        let api = two.api("east");
        let patch =
            serde_json::json!({"metadata": {"annotations": {"dr.understudy.dev/dry-run": "after-outage"}}});
        api.patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
        two.wait_pair(
            "east",
            "chat",
            "east's controller to answer the dry run",
            Duration::from_secs(40),
            |p| p.status.as_ref().and_then(|s| s.dry_run.as_ref()).is_some_and(|d| d.token == "after-outage"),
        )
        .await
        .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 30)))?;
        let st = direct.stop().await;
        eprintln!(
            "API server of east down 16 s (leader election {elect}): key kept, epoch 0, {acked_while_down} writes \
             acknowledged by east meanwhile ({} errors), east's controller acts again after",
            st.errors
        );
    }
    Ok(())
}

/// Switchovers across clusters: one annotated on cluster A's copy (east's controller runs it),
/// then one back annotated on cluster B's copy (west's controller runs it); no acknowledged commit
/// is lost and both clusters mirror each result. The same annotation value put on both copies
/// runs once; the other copy's controller says who runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_annotated_on_either_cluster_act_once_and_lose_nothing() -> Result<()> {
    let two = healthy("twoc-switch", &[]).await?;
    let wl = two.workload("app_writes", Duration::from_millis(20)).await?;
    wait_for("writes", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;
    let annotate = |site: &'static str, key: &'static str, value: &'static str| {
        let api = two.api(site);
        async move {
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            api.patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await
        }
    };
    let mut gaps = Vec::new();
    for (i, (on, to)) in [("east", "west"), ("west", "east")].into_iter().enumerate() {
        let epoch = i as i64 + 1;
        let before = wl.stats().acked.len();
        let annotated = Instant::now();
        annotate(on, "dr.understudy.dev/switchover", if epoch == 1 { "s1" } else { "s2" }).await?;
        for site in SITES {
            two.wait_pair(
                site,
                "chat",
                &format!("{site}'s cluster to mirror epoch {epoch}"),
                Duration::from_secs(60),
                |p| {
                    p.status
                        .as_ref()
                        .is_some_and(|s| s.epoch.0 == epoch && s.current_primary.as_deref() == Some(to))
                },
            )
            .await
            .with_context(|| format!("{on}'s controller:\n{}", two.controller_tail(on, 40)))?;
        }
        let t = two.api(on).get("chat").await?.status.and_then(|s| s.last_transition).context("journal")?;
        ensure!(
            t.kind.as_str() == "Switchover"
                && t.outcome.map(|o| o.as_str()) == Some("Completed")
                && t.holder == on,
            "switchover {epoch} annotated on {on}: {} {:?} by {}",
            t.kind,
            t.outcome,
            t.holder
        );
        let ms = |a: &Option<String>, b: &Option<String>| -> Option<i64> {
            let (a, b): (jiff::Timestamp, jiff::Timestamp) =
                (a.as_deref()?.parse().ok()?, b.as_deref()?.parse().ok()?);
            Some(b.duration_since(a).as_millis() as i64)
        };
        eprintln!(
            "switchover {epoch} ({on} → {to}) steps: {}",
            t.steps
                .iter()
                .map(|s| format!("{} {:?} ms", s.name, ms(&s.started_at, &s.finished_at)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        wait_for("writes through the new primary", Duration::from_secs(20), || async {
            Ok(wl.stats().acked.len() > before + 50)
        })
        .await?;
        // The old primary rejoins (its own controller runs the hook) before the next switchover.
        let from = if to == "west" { "east" } else { "west" };
        two.wait_pair(from, "chat", &format!("{from} to follow {to}"), Duration::from_secs(60), |p| {
            p.status
                .as_ref()
                .and_then(|s| s.former_primary.as_ref())
                .is_some_and(|f| f.site == from && f.assessment.as_str() == "Following")
        })
        .await
        .with_context(|| format!("{from}'s controller:\n{}", two.controller_tail(from, 40)))?;
        // The longest time without an acknowledged commit from the annotation until writes flowed
        // through the new primary again.
        let st = wl.stats();
        let window: Vec<Instant> = st.acked_at.iter().copied().filter(|a| *a >= annotated).collect();
        let first = window.first().map(|a| *a - annotated).unwrap_or_default();
        gaps.push(window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default().max(first));
    }
    // The same value on both copies: one transition.
    annotate("east", "dr.understudy.dev/switchover", "both").await?;
    annotate("west", "dr.understudy.dev/switchover", "both").await?;
    for site in SITES {
        two.wait_pair(site, "chat", "epoch 3", Duration::from_secs(60), |p| {
            p.status.as_ref().is_some_and(|s| s.epoch.0 == 3 && s.current_primary.as_deref() == Some("west"))
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(two.witness_epoch("chat")?.starts_with("3 "), "epoch {}", two.witness_epoch("chat")?);
    let elsewhere = [
        event_time(&two, "east", "CommandHandledElsewhere").await?,
        event_time(&two, "west", "CommandHandledElsewhere").await?,
    ];
    ensure!(
        elsewhere.iter().filter(|e| e.is_some()).count() == 1,
        "CommandHandledElsewhere on {elsewhere:?}"
    );
    let stats = wl.stop().await;
    let lost = workload::lost(&stats.acked, &two.server("west").ids("app_writes")?);
    ensure!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    ensure!(gaps.iter().all(|g| *g < Duration::from_secs(5)), "writes stalled: {gaps:?}");
    eprintln!(
        "cross-cluster switchovers: 3 (one annotated on both copies, run once); 0 acknowledged commits lost; longest \
         write gap {:?} ms",
        gaps.iter().map(|g| g.as_millis()).collect::<Vec<_>>()
    );
    Ok(())
}

/// Two copies whose specs differ are reported on both clusters naming the field, and a command is
/// refused until they match again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_differ_are_reported_on_both_and_nothing_starts() -> Result<()> {
    let two = healthy("twoc-drift", &[]).await?;
    let drift = two.pair("chat").failover(|f| f.failure_threshold(5));
    drift.apply(&two.cluster("west").client, &two.ns).await?;
    for site in SITES {
        two.wait_pair(site, "chat", &format!("{site} to report the drift"), Duration::from_secs(20), |p| {
            condition(p, "SpecValid").is_some_and(|c| {
                c.0 == ConditionStatus::False
                    && c.1 == "SpecDrift"
                    && c.2.contains("spec.failover.failureThreshold")
            })
        })
        .await?;
    }
    let patch =
        serde_json::json!({"metadata": {"annotations": {"dr.understudy.dev/switchover": "during-drift"}}});
    two.api("east")
        .patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await?;
    wait_for("the switchover to be refused", Duration::from_secs(15), || async {
        Ok(event_time(&two, "east", "CommandRefused").await?.is_some())
    })
    .await?;
    ensure!(two.witness_epoch("chat")?.is_empty(), "an epoch was taken during the drift");
    two.apply(&two.pair("chat")).await?;
    for site in SITES {
        two.wait_pair(
            site,
            "chat",
            &format!("{site} to see matching copies"),
            Duration::from_secs(20),
            |p| condition(p, "SpecValid").is_some_and(|c| c.0 == ConditionStatus::True),
        )
        .await?;
    }
    Ok(())
}

/// The witness lost with both clusters up: east cannot renew its key and fences its own database
/// at leaseTTL/2, west promotes nothing (it cannot take the epoch), neither cluster starts a
/// transition; when the witness returns east takes its key back, lifts its fence and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_witness_down_east_fences_itself_nothing_moves_and_it_serves_again_on_return() -> Result<()>
{
    let mut two = healthy("twoc-witness", &[]).await?;
    let direct = two.direct_writer("east", "direct_witness");
    wait_for("direct writes on east", Duration::from_secs(10), || async { Ok(direct.acked() > 5) }).await?;
    two.witness.kill();
    let down = Instant::now();
    wait_for("east to fence itself", Duration::from_secs(10), || async {
        Ok(two.server("east").psql("SHOW default_transaction_read_only")?.trim() == "on")
    })
    .await
    .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 30)))?;
    let fenced_after = down.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let st = direct.stats();
    let last =
        st.acked_at.iter().filter(|a| **a >= down).map(|a| a.duration_since(down)).max().unwrap_or_default();
    ensure!(
        last < Duration::from_secs(3),
        "east acknowledged a write {last:?} after the witness went (lease 4 s)"
    );
    for site in SITES {
        let st = two.api(site).get("chat").await?.status.unwrap_or_default();
        ensure!(
            st.epoch.0 == 0 && st.last_transition.is_none() && st.current_primary.as_deref() == Some("east"),
            "{site}'s cluster: epoch {}, primary {:?}, transition {:?}",
            st.epoch.0,
            st.current_primary,
            st.last_transition.map(|t| t.to)
        );
    }
    tokio::task::block_in_place(|| two.witness.restart())?;
    wait_for("east to serve again", Duration::from_secs(20), || async {
        Ok(two.witness_leader("chat")? == "0 east"
            && two.server("east").psql("SHOW default_transaction_read_only")?.trim() == "off")
    })
    .await
    .with_context(|| format!("east's controller:\n{}", two.controller_tail("east", 30)))?;
    let resumed = direct.acked();
    wait_for("direct writes on east again", Duration::from_secs(10), || async {
        Ok(direct.acked() > resumed + 5)
    })
    .await?;
    direct.stop().await;
    eprintln!(
        "witness down: east fenced itself {:.1}s after (lease 4 s), last write acknowledged {:.1}s after, nothing \
         promoted; it serves again once the witness is back",
        fenced_after.as_secs_f64(),
        last.as_secs_f64()
    );
    Ok(())
}

/// `dr.understudy.dev/paused=true` on one cluster's copy holds automation in both: east's database
/// dies while east's copy is paused, and west (whose copy is not annotated) does not fail over
/// until east's copy is unpaused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_on_one_clusters_copy_holds_automation_in_both() -> Result<()> {
    let mut two = healthy("twoc-pause", &[]).await?;
    let east_api = two.api("east");
    let set = |value: serde_json::Value| {
        let api = east_api.clone();
        async move {
            let patch = serde_json::json!({"metadata": {"annotations": {"dr.understudy.dev/paused": value}}});
            api.patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await
        }
    };
    set(serde_json::json!("true")).await?;
    wait_for("east's pause to reach the witness", Duration::from_secs(10), || async {
        Ok(two
            .witness
            .etcdctl(&["get", &format!("/understudy/{}/chat/paused/east", two.ns), "--print-value-only"])?
            .trim()
            == "true")
    })
    .await?;
    two.server_mut("east").kill9();
    let blocked = two
        .wait_pair(
            "west",
            "chat",
            "west to hold its failover for east's pause",
            Duration::from_secs(30),
            |p| {
                condition(p, "FailoverBlocked")
                    .is_some_and(|c| c.1 == "Paused" && c.2.contains("east's copy"))
            },
        )
        .await
        .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 30)))?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(two.witness_epoch("chat")?.is_empty(), "an epoch was taken during the pause");
    let msg = condition(&blocked, "FailoverBlocked").map(|c| c.2).unwrap_or_default();
    set(serde_json::Value::Null).await?;
    two.wait_pair("west", "chat", "west to fail over once unpaused", Duration::from_secs(60), |p| {
        p.status.as_ref().is_some_and(|s| s.epoch.0 == 1 && s.current_primary.as_deref() == Some("west"))
    })
    .await
    .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 30)))?;
    eprintln!("paused on east's copy: west said {msg:?}; unpaused: west failed over");
    Ok(())
}

/// A partition between the sites (each site's controller under its own user id, packets dropped by
/// nftables): east's controller loses the witness and west's PostgreSQL, west's controller and
/// west's WAL receiver lose east's PostgreSQL; each cluster keeps its own API server. East fences
/// itself before its key can expire, west takes the epoch once and promotes, and a writer hammering
/// east's server directly sees no write acknowledged at or after west's epoch swap. Healed, cluster
/// A mirrors the witness (epoch 1, west) and east stays read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_the_sites_fences_east_and_promotes_west_once() -> Result<()> {
    use understudy_e2e::sandbox::netcut;
    let mut two = TwoSites::start("twoc-partition").await?;
    two.apply(&two.pair("chat")).await?;
    let (east_uid, west_uid) = (netcut::site_uid(2), netcut::site_uid(3));
    two.start_controller_as("east", east_uid)?;
    two.start_controller_as("west", west_uid)?;
    two.wait_east_serving("chat").await?;
    let direct = two.direct_writer("east", "direct_east");
    wait_for("direct writes on east", Duration::from_secs(10), || async { Ok(direct.acked() > 20) }).await?;
    let postgres_uid: u32 =
        String::from_utf8(std::process::Command::new("id").args(["-u", "postgres"]).output()?.stdout)?
            .trim()
            .parse()?;
    let (east_pg, west_pg) = (two.server("east").port, two.server("west").port);
    let cut = netcut::Partition::new()?;
    let cut_wall = jiff::Timestamp::now();
    let cut_at = Instant::now();
    cut.cut(east_uid, two.witness.port)?;
    cut.cut(east_uid, west_pg)?;
    cut.cut(west_uid, east_pg)?;
    cut.cut(postgres_uid, east_pg)?;
    let drp = two
        .wait_pair("west", "chat", "west to serve at epoch 1", Duration::from_secs(60), |p| {
            p.status.as_ref().is_some_and(|s| {
                s.epoch.0 == 1 && s.last_transition.as_ref().is_some_and(|t| t.finished_at.is_some())
            })
        })
        .await
        .with_context(|| format!("rules:\n{}\nwest:\n{}", cut.describe(), two.controller_tail("west", 40)))?;
    let t = drp.status.and_then(|s| s.last_transition).context("journal")?;
    ensure!(
        t.from == "east" && t.to == "west" && t.holder == "west",
        "{} → {} by {}",
        t.from,
        t.to,
        t.holder
    );
    let took: jiff::Timestamp = t
        .steps
        .iter()
        .find(|s| s.name == "TakeEpoch")
        .and_then(|s| s.started_at.clone())
        .context("swap")?
        .parse()?;
    let swap_after = Duration::try_from(took.duration_since(cut_wall)).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(two.witness_epoch("chat")?.starts_with("1 west "), "witness {}", two.witness_epoch("chat")?);
    ensure!(two.server("west").timeline()? == 2, "west promoted more than once or not at all");
    ensure!(
        two.server("east").psql("SHOW default_transaction_read_only")?.trim() == "on",
        "east is not fenced:\n{}",
        two.controller_tail("east", 30)
    );
    let stats = direct.stop().await;
    let after_cut: Vec<Duration> =
        stats.acked_at.iter().filter(|a| **a >= cut_at).map(|a| a.duration_since(cut_at)).collect();
    let last = after_cut.last().copied().unwrap_or_default();
    let dual = after_cut.iter().filter(|a| **a >= swap_after).count();
    eprintln!(
        "two-cluster partition: east's last direct write {:.2} s after the cut, west's epoch swap at {:.2} s \
         (margin {:.2} s); writes east acknowledged at or after the swap: {dual}",
        last.as_secs_f64(),
        swap_after.as_secs_f64(),
        swap_after.as_secs_f64() - last.as_secs_f64()
    );
    ensure!(dual == 0, "east acknowledged {dual} writes after west took the epoch");
    // Healed: cluster A mirrors the witness; east never serves again on its own.
    cut.heal()?;
    two.wait_pair("east", "chat", "cluster A to mirror epoch 1", Duration::from_secs(60), |p| {
        p.status.as_ref().is_some_and(|s| s.epoch.0 == 1 && s.current_primary.as_deref() == Some("west"))
    })
    .await
    .with_context(|| format!("east:\n{}", two.controller_tail("east", 40)))?;
    ensure!(two.witness_leader("chat")?.ends_with(" west"), "leader key {}", two.witness_leader("chat")?);
    Ok(())
}
