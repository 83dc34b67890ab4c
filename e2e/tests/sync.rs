//! Synchronous replication (`spec.failover.replication`) against the real sandbox: under `Sync`, a
//! workload recording every commit acknowledged through PgBouncer loses none over repeated SIGKILLs
//! of the primary's postmaster (failovers in alternating directions, the former primary rejoining
//! in between), and every transition says `0` bytes, exactly; a switchover after them leaves the
//! new primary synchronous too. Under `SyncPreferred`, a stopped
//! standby makes the primary fall back to asynchronous commits after `syncDegradeAfter` (condition,
//! Event, metric) while writes go on; the standby's return makes it synchronous again; and a
//! primary that dies while degraded is not failed over automatically. `make chaos N=50` repeats the
//! kills (`CHAOS_ROUNDS`).

use std::time::{Duration, Instant};

use anyhow::Result;
use understudy::crd::{
    conditions::{self, reasons},
    ConditionStatus, DisasterRecoveryPair, LossBound,
    ReplicationMode::{Sync, SyncPreferred},
};
use understudy_e2e::{
    bed::Bed,
    pair::Automatic,
    support::{condition, wait_for},
    workload::lost,
};

/// The `SynchronousReplication` condition's status and reason.
fn sync_condition(drp: &DisasterRecoveryPair) -> Option<(ConditionStatus, String)> {
    condition(drp, conditions::SYNCHRONOUS_REPLICATION).map(|(s, r, _)| (s, r))
}

/// Waits until `primary` shows a synchronous standby in the status (what the failover guard reads).
async fn wait_synchronous(bed: &Bed, primary: &str, timeout: Duration) -> Result<()> {
    let api = bed.api();
    wait_for(&format!("{primary} to commit synchronously"), timeout, || async {
        let drp = api.get("chat").await?;
        let seen = drp
            .status
            .as_ref()
            .and_then(|s| s.sites.iter().find(|x| x.name == primary))
            .and_then(|s| s.synchronous_standby);
        Ok(seen == Some(true)
            && sync_condition(&drp) == Some((ConditionStatus::True, reasons::SYNCHRONOUS.to_string())))
    })
    .await
}

/// Ready to fail over without losing an acknowledged commit: under Sync the guard must see the
/// standby synchronous; under Async it must merely stream.
async fn ready(bed: &Bed, primary: &str, sync: bool) -> Result<()> {
    if sync {
        return wait_synchronous(bed, primary, Duration::from_secs(30)).await;
    }
    let api = bed.api();
    wait_for("the standby to stream", Duration::from_secs(30), || async {
        Ok(condition(&api.get("chat").await?, conditions::STANDBY_STREAMING).map(|c| c.0)
            == Some(ConditionStatus::True))
    })
    .await
}

/// Writers, each recording the commits acknowledged through PgBouncer in its own table.
const WRITERS: usize = 3;

/// What `kill_rounds` saw.
struct KillReport {
    acked: usize,
    missing: Vec<(String, i64)>,
    errors: u64,
    longest_gap: Duration,
    /// Each failover's `lostWalBytes` and `lostWalBound`.
    figures: Vec<(Option<i64>, Option<LossBound>)>,
    secs: f64,
}

/// A bed under `mode` with `WRITERS` writers; `rounds` SIGKILLs of the serving postmaster, each
/// followed by an automatic failover (alternating directions) and the killed server's return and
/// rejoin. Under `Sync` every transition must say 0 bytes, exactly, and the new primary must carry
/// the setting; at the end a switchover. Returns the lost acknowledged commits.
async fn kill_rounds(label: &str, mode: understudy::crd::ReplicationMode, rounds: i64) -> Result<KillReport> {
    let sync = mode == Sync;
    let (mut bed, _ctl) = Bed::with_pair(label, |f| {
        f.mode(Automatic)
            .probe_interval("500ms")
            .probe_timeout("500ms")
            .failure_threshold(3)
            .cooldown("0s")
            .replication(mode)
    })
    .await?;
    ready(&bed, "east", sync).await?;
    if sync {
        assert_eq!(bed.pg.primary.psql("SHOW synchronous_standby_names")?.trim(), "*");
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(bed.workload(&format!("workload{w}"), Duration::from_millis(5)).await?);
    }
    let acked = |ws: &[understudy_e2e::workload::Workload]| ws.iter().map(|w| w.acked()).sum::<usize>();
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(acked(&writers) > 60) })
        .await?;

    let mut primary = "east".to_string();
    let mut figures = Vec::new();
    let began = Instant::now();
    for i in 1..=rounds {
        let target = if primary == "east" { "west" } else { "east" };
        // The next kill only once the guard can fail over, and writes flow.
        ready(&bed, &primary, sync).await?;
        let before = acked(&writers);
        wait_for("writes before the kill", Duration::from_secs(20), || async {
            Ok(acked(&writers) > before + 60)
        })
        .await?;
        if primary == "east" {
            bed.pg.primary.kill9();
        } else {
            bed.pg.standby.kill9();
        }
        let drp = bed.wait_epoch_finished("chat", i, Duration::from_secs(60)).await?;
        let st = drp.status.unwrap_or_default();
        let t = st.last_transition.clone().expect("transition");
        assert_eq!(
            (t.kind.as_str(), t.trigger.as_str(), t.outcome.map(|o| o.as_str()), t.to.as_str()),
            ("Failover", "Automatic", Some("Completed"), target),
            "kill {i}: {t:?}"
        );
        figures.push((t.lost_wal_bytes, t.lost_wal_bound));
        if sync {
            // Honest RPO: the standby was synchronous, so nothing acknowledged can be missing.
            assert_eq!(
                (t.lost_wal_bytes, t.lost_wal_bound),
                (Some(0), Some(LossBound::Exact)),
                "kill {i}: {t:?}"
            );
            // The new primary waits for its own standby: the setting moved with the promotion.
            assert_eq!(bed.server(target).psql("SHOW synchronous_standby_names")?.trim(), "*");
        } else {
            // The old primary died unreachable: a lower bound, and said so.
            assert_eq!(t.lost_wal_bound, Some(LossBound::AtLeast), "kill {i}: {t:?}");
        }
        // The killed server's host comes back; the rejoin fences it, rewinds it and makes it follow.
        if primary == "east" {
            bed.pg.primary.start()?;
        } else {
            bed.pg.standby.start()?;
        }
        primary = target.to_string();
        bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
        eprintln!(
            "{label}: kill {i} → {target} at +{:.1}s: acked so far {}, lostWalBytes {:?} {:?}",
            began.elapsed().as_secs_f64(),
            acked(&writers),
            t.lost_wal_bytes,
            t.lost_wal_bound.map(|b| b.as_str())
        );
    }
    if sync {
        // A planned switchover keeps the setting too: the new primary waits for the old one.
        ready(&bed, &primary, sync).await?;
        let target = if primary == "east" { "west" } else { "east" };
        bed.annotate("chat", understudy::crd::annotations::SWITCHOVER, "sync-drill").await?;
        let drp = bed.wait_epoch_finished("chat", rounds + 1, Duration::from_secs(60)).await?;
        let t = drp.status.and_then(|s| s.last_transition).expect("transition");
        assert_eq!(
            (t.kind.as_str(), t.outcome.map(|o| o.as_str()), t.to.as_str()),
            ("Switchover", Some("Completed"), target)
        );
        assert_eq!((t.lost_wal_bytes, t.lost_wal_bound), (Some(0), Some(LossBound::Exact)), "{t:?}");
        assert_eq!(bed.server(target).psql("SHOW synchronous_standby_names")?.trim(), "*");
        primary = target.to_string();
        bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    }
    ready(&bed, &primary, sync).await?;
    let before = acked(&writers);
    wait_for("writes after the last kill", Duration::from_secs(20), || async {
        Ok(acked(&writers) > before + 60)
    })
    .await?;
    let secs = began.elapsed().as_secs_f64();
    let mut report =
        KillReport { acked: 0, missing: vec![], errors: 0, longest_gap: Duration::ZERO, figures, secs };
    for w in writers {
        let table = w.table.clone();
        let stats = w.stop().await;
        let present = bed.server(&primary).ids(&table)?;
        report.missing.extend(lost(&stats.acked, &present).into_iter().map(|id| (table.clone(), id)));
        report.acked += stats.acked.len();
        report.errors += stats.errors;
        report.longest_gap = report.longest_gap.max(stats.longest_gap);
    }
    eprintln!(
        "{label}: {:?}, {rounds} primary kills in {:.0}s, {WRITERS} writers through PgBouncer: {} commits acknowledged, \
         {} client errors, longest write gap {:?}, lost acknowledged commits {}; lostWalBytes per kill {:?}",
        mode,
        report.secs,
        report.acked,
        report.errors,
        report.longest_gap,
        report.missing.len(),
        report.figures.iter().map(|f| f.0.unwrap_or(-1)).collect::<Vec<_>>()
    );
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_loses_no_acknowledged_commit_over_repeated_primary_kills() -> Result<()> {
    let rounds: i64 = std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let r = kill_rounds("sync", Sync, rounds).await?;
    assert!(r.missing.is_empty(), "acknowledged commits lost under Sync: {:?}", r.missing);
    assert!(r.acked as i64 > 60 * rounds, "the workload kept committing: {}", r.acked);
    Ok(())
}

/// The same kills under `Async`: each transition says its lost-WAL figure is only a lower bound
/// (`AtLeast`), and the run prints how many acknowledged commits went missing without synchronous
/// commits. Two kills in `make test`; `CHAOS_ROUNDS=10 cargo test -p understudy-e2e --test sync
/// async_control -- --nocapture` for the comparison figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_control_the_same_kills_without_synchronous_commits() -> Result<()> {
    let rounds: i64 = std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let r = kill_rounds("async", understudy::crd::ReplicationMode::Async, rounds).await?;
    assert!(r.figures.iter().all(|f| f.1 == Some(LossBound::AtLeast)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_a_controller_per_site_fails_over_losing_nothing_and_the_new_primary_waits_for_its_standby(
) -> Result<()> {
    let mut bed = Bed::start("syncsites").await?;
    bed.pair("chat")
        .failover(|f| {
            f.mode(Automatic)
                .probe_interval("500ms")
                .probe_timeout("500ms")
                .failure_threshold(3)
                .replication(Sync)
        })
        .lease_ttl("4s")
        .create(&bed.client, &bed.ns)
        .await?;
    // One controller per site: east's sets the setting on east while it serves; west's only reports.
    let _east = bed.controller_process("east", &[])?;
    let _west = bed.controller_process("west", &[])?;
    wait_synchronous(&bed, "east", Duration::from_secs(30)).await?;
    assert_eq!(bed.pg.primary.psql("SHOW synchronous_standby_names")?.trim(), "*");
    let wl = bed.workload("workload", Duration::from_millis(5)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 50) }).await?;

    // West is promoted once east's leader key expired, with '*' set on it first.
    bed.pg.primary.kill9();
    let drp = bed.wait_epoch_finished("chat", 1, Duration::from_secs(60)).await?;
    let t = drp.status.and_then(|s| s.last_transition).expect("transition");
    // (Both controllers share this cluster's journal and may run its steps: the holder is either.)
    assert_eq!(t.to.as_str(), "west", "{t:?}");
    assert_eq!((t.lost_wal_bytes, t.lost_wal_bound), (Some(0), Some(LossBound::Exact)), "{t:?}");
    assert_eq!(bed.pg.standby.psql("SHOW synchronous_standby_names")?.trim(), "*");
    // With east gone, west's commits wait for a standby: that is what Sync means.
    wait_for("a commit on west waiting for its standby", Duration::from_secs(20), || async {
        Ok(bed.pg.standby.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")?.trim()
            != "0")
    })
    .await?;
    let stats = wl.stop().await;
    let missing = lost(&stats.acked, &bed.pg.standby.ids("workload")?);
    eprintln!("per-site controllers, Sync: {} acknowledged, {} lost", stats.acked.len(), missing.len());
    assert!(missing.is_empty(), "{missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_preferred_degrades_while_the_standby_is_away_and_recovers_when_it_returns() -> Result<()> {
    let (mut bed, ctl) = Bed::with_pair("syncpref", |f| {
        f.mode(Automatic)
            .probe_interval("500ms")
            .probe_timeout("500ms")
            .failure_threshold(3)
            .replication(SyncPreferred)
            .sync_degrade_after("3s")
    })
    .await?;
    let label = understudy::metrics::PairLabels { pair: format!("{}/chat", bed.ns) };
    let gauge = |m: &understudy::metrics::Metrics| m.sync_degraded.get_or_create(&label).get();
    wait_synchronous(&bed, "east", Duration::from_secs(20)).await?;
    assert_eq!(gauge(&ctl.metrics), 0);
    let wl = bed.workload("workload", Duration::from_millis(20)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;

    // The standby stops: commits wait, then after syncDegradeAfter the primary stops waiting.
    let stopped = Instant::now();
    bed.pg.standby.stop();
    let api = bed.api();
    wait_for("SyncPreferred to degrade", Duration::from_secs(20), || async {
        Ok(sync_condition(&api.get("chat").await?)
            == Some((ConditionStatus::False, reasons::DEGRADED.into())))
    })
    .await?;
    let took = stopped.elapsed();
    eprintln!("degraded {:.1}s after the standby stopped (syncDegradeAfter 3s)", took.as_secs_f64());
    assert!(took >= Duration::from_secs(3), "degraded before syncDegradeAfter: {took:?}");
    assert!(bed.has_event("SyncDegraded").await?, "a SyncDegraded Event");
    assert_eq!(gauge(&ctl.metrics), 1, "understudy_sync_degraded");
    assert_eq!(bed.pg.primary.psql("SHOW synchronous_standby_names")?.trim(), "");
    // Writes go on without the standby.
    let before = wl.acked();
    wait_for("writes while degraded", Duration::from_secs(10), || async { Ok(wl.acked() > before + 20) })
        .await?;

    // The standby returns: synchronous again, with an Event, and the gauge back to 0.
    bed.pg.standby.start()?;
    wait_synchronous(&bed, "east", Duration::from_secs(30)).await?;
    assert!(bed.has_event("SyncRestored").await?, "a SyncRestored Event");
    assert_eq!(bed.pg.primary.psql("SHOW synchronous_standby_names")?.trim(), "*");
    wait_for("the gauge to clear", Duration::from_secs(5), || async { Ok(gauge(&ctl.metrics) == 0) }).await?;
    let before = wl.acked();
    wait_for("writes once synchronous again", Duration::from_secs(10), || async {
        Ok(wl.acked() > before + 20)
    })
    .await?;
    let stats = wl.stop().await;
    let missing = lost(&stats.acked, &bed.pg.primary.ids("workload")?);
    assert!(missing.is_empty(), "{missing:?}");
    let on_standby = lost(&stats.acked, &bed.pg.standby.ids("workload")?);
    wait_for("the standby to hold every acknowledged commit", Duration::from_secs(10), || async {
        Ok(lost(&stats.acked, &bed.pg.standby.ids("workload")?).is_empty())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}: missing on the standby {on_standby:?}"))?;

    // Degraded again, the primary dies: commits acknowledged asynchronously could be lost, so the
    // guard refuses an automatic failover (degradedFailover: Refuse, the default) and says why.
    bed.pg.standby.stop();
    wait_for("SyncPreferred to degrade again", Duration::from_secs(20), || async {
        Ok(sync_condition(&api.get("chat").await?)
            == Some((ConditionStatus::False, reasons::DEGRADED.into())))
    })
    .await?;
    // The primary dies first (so nothing can restore synchronous commits), then the standby is
    // back and would be promotable but for the guard.
    bed.pg.primary.kill9();
    bed.pg.standby.start()?;
    wait_for("the guard to refuse", Duration::from_secs(20), || async {
        Ok(condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED)
            .is_some_and(|(s, r, _)| s == ConditionStatus::True && r == reasons::NOT_SYNCHRONOUS))
    })
    .await?;
    let drp = api.get("chat").await?;
    let (_, _, msg) = condition(&drp, conditions::FAILOVER_BLOCKED).expect("FailoverBlocked");
    eprintln!("FailoverBlocked: {msg}");
    assert!(msg.contains("SyncPreferred") && msg.contains("degradedFailover: Allow"), "{msg}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!((st.epoch.0, st.last_transition.is_none()), (0, true), "nothing promoted");
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    Ok(())
}

/// PostgreSQL's startup process takes a promotion request that arrives while it waits on a WAL
/// receiver it has just started — which is where a reload's SIGHUP leaves it, and `Promote` under
/// `Sync` reloads `synchronous_standby_names` just before promoting — but then sleeps out
/// `wal_retrieve_retry_interval` (5 s) before acting on it. Measured in the 20-pair mass failover
/// under `Sync`: 13 of 20 promotions took 5.0–5.1 s. `pg::admin::promote` asks again while the
/// server stays in recovery: the same sequence, on a real standby whose primary was SIGKILLed, is
/// promoted well inside those 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_just_before_the_promotion_does_not_stall_it_for_the_retry_interval() -> Result<()> {
    use understudy::pg::admin;
    let mut pg =
        tokio::task::spawn_blocking(|| understudy_e2e::sandbox::postgres::PgPair::start("promote-nudge"))
            .await??;
    pg.primary.kill9();
    // Past the first failed reconnect: the startup process now sleeps between attempts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(pg.standby.port).user(&pg.user).password(&pg.password).dbname("postgres");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let t0 = Instant::now();
    admin::set_synchronous_standby_names(&c, "*").await?;
    let promoted = admin::promote(&c, Duration::from_secs(30)).await?;
    let took = t0.elapsed();
    eprintln!("reload + promote: {took:?} (nudge every {:?})", admin::PROMOTE_NUDGE);
    anyhow::ensure!(promoted, "the standby was already promoted");
    anyhow::ensure!(
        took < Duration::from_secs(2),
        "promotion took {took:?}: the retry-interval stall is back"
    );
    Ok(())
}
