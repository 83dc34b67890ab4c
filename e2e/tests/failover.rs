//! Automated failover end to end, against the real sandbox: a primary killed with SIGKILL, the
//! standby promoted exactly once, the DataSource rewritten, PgBouncer repointed, DNS flipped and
//! confirmed at BIND, and the whole story in the status timeline.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::events::v1::Event;
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use understudy::{
    crd::{conditions, ConditionStatus, Phase},
    datasource::jsonptr,
};
use understudy_e2e::{
    bed::{mattermost_config, wait_exit, Bed},
    pair::{Approve, Automatic, Failover, Manual},
    sandbox::netcut::Partition,
    support::{condition, wait_for, RunningController},
    workload::lost,
};

/// Automatic, quick probes.
fn fast(f: Failover) -> Failover {
    f.mode(Automatic)
        .probe_interval("500ms")
        .probe_timeout("500ms")
        .failure_threshold(3)
        .max_lag_bytes("16Mi")
}

async fn events(bed: &Bed) -> Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(bed.client.clone(), &bed.ns).list(&ListParams::default()).await?.items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_by_its_standby_everywhere() -> Result<()> {
    let (mut bed, _ctl) = Bed::with_pair("failover", fast).await?;

    let wl = bed.workload("workload", Duration::from_millis(20)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;

    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let st = drp.status.clone().unwrap_or_default();
    let t = st.last_transition.clone().expect("transition");
    eprintln!("timeline: {}", serde_json::to_string_pretty(&t)?);

    // One promotion, one epoch, recorded everywhere.
    assert_eq!(st.current_primary.as_deref(), Some("west"));
    assert_eq!(st.epoch.0, 1);
    assert_eq!(
        (t.trigger.as_str(), t.from.as_str(), t.to.as_str(), t.epoch.0),
        ("Automatic", "east", "west", 1)
    );
    assert!(
        bed.witness_epoch("chat")?.starts_with("1 "),
        "etcd holds epoch 1: {}",
        bed.witness_epoch("chat")?
    );
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "f");
    assert_eq!(bed.pg.standby.timeline()?, 2, "exactly one promotion");
    assert_eq!(bed.pg.standby.psql("SELECT epoch FROM understudy_epoch")?.trim(), "1");
    // The login retry delay the dead primary armed in PgBouncer was skipped, and its configured
    // value is back.
    let recycled = t.steps.iter().find(|s| s.name == "Recycle").and_then(|s| s.message.clone());
    assert!(
        recycled.as_deref().is_some_and(|m| m.contains("pgbouncer") && !m.contains("could not be skipped")),
        "Recycle: {recycled:?}"
    );
    assert_eq!(bed.pgb.setting("server_login_retry")?, "1");

    // The journal: every step finished, in order, with timestamps; RTO and lost WAL measured.
    let names: Vec<&str> = t.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["TakeEpoch", "Fence", "Promote", "VerifyWritable", "RewriteDataSource", "Recycle", "FlipDns"]
    );
    for s in &t.steps {
        assert!(s.started_at.is_some() && s.finished_at.is_some(), "{s:?}");
        let outcome = s.outcome.map(|o| o.as_str()).unwrap_or_default();
        if s.name == "Fence" {
            assert_eq!(outcome, "Skipped", "the dead primary cannot be fenced: {s:?}");
        } else {
            assert_eq!(outcome, "Succeeded", "{s:?}");
        }
    }
    let rto = t.rto_seconds.expect("rto");
    assert!(rto > 0.0 && rto < 30.0, "rto {rto}");
    let lost_wal = t.lost_wal_bytes.expect("lost WAL bytes are measured");
    // The old primary died unreachable: the figure counts from its last observed position only.
    assert_eq!(t.lost_wal_bound, Some(understudy::crd::LossBound::AtLeast), "{t:?}");

    // DataSource: the ConfigMap changed only at the two pointers; the Secret holds west's DSN.
    let west = bed.dsn("west");
    let doc = bed.config_map_value("mattermost-config", "config.json").await?;
    let expected =
        jsonptr::splice(&mattermost_config(&west), "/JobSettings/RunScheduler", &serde_json::json!(false))?;
    assert_eq!(doc, expected, "only the pointed values changed, byte for byte");
    assert_eq!(bed.secret_value("mattermost-db", "dsn").await?, west);

    // DNS: the authoritative server answers west's address, and the DNSEndpoint points there too.
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.12"]);
    let de = Api::<kube::api::DynamicObject>::namespaced_with(
        bed.client.clone(),
        &bed.ns,
        &understudy::dns::dns_endpoint::resource(),
    )
    .get("chat")
    .await?;
    assert_eq!(de.data["spec"]["endpoints"][0]["targets"], serde_json::json!(["127.0.0.12"]));
    assert_eq!(
        de.metadata.annotations.unwrap_or_default().get("dr.understudy.dev/epoch").map(String::as_str),
        Some("1")
    );

    // The app was told to recycle (with its token), and its Deployment restarted for epoch 1.
    assert_eq!(bed.app.recycles.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(bed.app.unauthorized.load(std::sync::atomic::Ordering::SeqCst), 0);
    let dep = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(bed.client.clone(), &bed.ns)
        .get("mattermost")
        .await?;
    let ann = dep.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
    assert_eq!(ann.get("dr.understudy.dev/restarted-for-epoch").map(String::as_str), Some("1"));

    // PgBouncer points at west and the workload commits there again.
    let before = wl.acked();
    wait_for("the workload to commit through PgBouncer on west", Duration::from_secs(15), || async {
        Ok(wl.acked() > before + 20)
    })
    .await?;
    let stats = wl.stop().await;
    let present: Vec<i64> = bed.pg.standby.ids("workload")?;
    let missing = lost(&stats.acked, &present);
    eprintln!(
        "acked {} commits, {} errors, longest write gap {:?}; lost WAL {lost_wal} bytes; acked commits missing on west: {}",
        stats.acked.len(),
        stats.errors,
        stats.longest_gap,
        missing.len()
    );
    // Only an exact 0 promises that no acknowledged commit is missing; this one is a lower bound
    // (asserted above), and commits acknowledged after the last probe may be gone (issue 14: 1–2
    // in 2 of 5 such kills under pgbench).
    if lost_wal == 0 && t.lost_wal_bound == Some(understudy::crd::LossBound::Exact) {
        assert!(missing.is_empty(), "no WAL lost, so no acknowledged commit may be missing: {missing:?}");
    }

    // Events tell the story.
    let evs = events(&bed).await?;
    for reason in ["PrimaryDown", "FailoverStarted", "Promote", "FlipDns", "FailoverComplete"] {
        assert!(evs.iter().any(|e| e.reason.as_deref() == Some(reason)), "an Event with reason {reason}");
    }
    // A second failover is not attempted: west serves and is healthy; east is down but is the standby now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bed.api().get("chat").await?.status.unwrap_or_default();
    assert_eq!(after.epoch.0, 1);
    assert_eq!(
        condition(&bed.api().get("chat").await?, conditions::PRIMARY_HEALTHY).map(|c| c.0),
        Some(ConditionStatus::True)
    );
    Ok(())
}

/// A primary whose packets are all dropped (nftables DROP both ways, no RST: a lost host) is
/// decided within `failureThreshold × probeInterval + probeTimeout` of the cut: the probes keep
/// their cadence while each waits out its timeout (before, each timed-out round cost
/// `probeInterval + probeTimeout`: 1 s × 3 with a 1 s timeout decided 5–6 s after the cut).
/// `make chaos` repeats it (`CHAOS_ROUNDS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_primary_is_decided_on_the_probe_cadence() -> Result<()> {
    let rounds: usize = std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    // 3 × 1 s + 1 s, and the round's own work (Secrets, the status write) on a loaded machine.
    let bound = 3.0 * 1.0 + 1.0;
    let mut decided_after = Vec::new();
    let mut bad = Vec::new();
    for round in 1..=rounds {
        let (bed, ctl) = Bed::with_pair("blackhole", |f| {
            f.mode(Automatic).probe_interval("1s").probe_timeout("1s").failure_threshold(3)
        })
        .await?;
        let cut = Partition::new()?;
        let at = jiff::Timestamp::now();
        cut.black_hole(bed.server("east").port)?;
        let drp = bed.wait_epoch_finished("chat", 1, Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let timeline = bed.pg.standby.timeline()?;
        drop(cut);
        ctl.shutdown().await;
        let t = drp.status.and_then(|s| s.last_transition).context("journal")?;
        let take: jiff::Timestamp = t
            .steps
            .iter()
            .find(|s| s.name == "TakeEpoch")
            .and_then(|s| s.started_at.as_deref())
            .context("TakeEpoch started")?
            .parse()?;
        let decided = take.duration_since(at).as_secs_f64();
        eprintln!(
            "round {round}: black-holed primary decided {decided:.2} s after the cut (bound {bound} s), \
             promoted {}, timeline {timeline}, epoch {}",
            t.to,
            bed.witness_epoch("chat")?
        );
        if decided > bound + 0.5
            || t.to != "west"
            || timeline != 2
            || !bed.witness_epoch("chat")?.starts_with("1 ")
        {
            bad.push(round);
        }
        decided_after.push(decided);
    }
    decided_after.sort_by(f64::total_cmp);
    eprintln!(
        "{rounds} black-holed primaries: decided after the cut median {:.2} s, max {:.2} s (bound {bound} s); \
         rounds outside the bound or not promoted once: {bad:?}",
        decided_after[decided_after.len() / 2],
        decided_after[decided_after.len() - 1]
    );
    anyhow::ensure!(bad.is_empty(), "rounds {bad:?} decided late or promoted more than once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_shorter_than_the_threshold_changes_nothing() -> Result<()> {
    let mut bed = Bed::start("blip").await?;
    let _ctl = RunningController::start(bed.client.clone(), &bed.ns);
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").probe_timeout("500ms").failure_threshold(8))
        .create(&bed.client, &bed.ns)
        .await?;
    bed.wait_healthy("chat").await?;
    // A restart of the primary: down for well under 8 x 500 ms.
    bed.pg.primary.stop();
    let api = bed.api();
    wait_for("the failed probe to be seen", Duration::from_secs(10), || async {
        Ok(api
            .get("chat")
            .await?
            .status
            .unwrap_or_default()
            .sites
            .iter()
            .any(|s| s.name == "east" && s.consecutive_failures > 0))
    })
    .await?;
    bed.pg.primary.start()?;
    wait_for("primary healthy again", Duration::from_secs(15), || async {
        Ok(condition(&api.get("chat").await?, conditions::PRIMARY_HEALTHY).map(|c| c.0)
            == Some(ConditionStatus::True))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!(st.epoch.0, 0);
    assert!(st.last_transition.is_none());
    assert_eq!(st.current_primary.as_deref(), Some("east"));
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.11"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_over_budget_refuses_with_the_figures() -> Result<()> {
    let mut bed = Bed::start("lag").await?;
    let _ctl = RunningController::start(bed.client.clone(), &bed.ns);
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3).max_lag_bytes("64Ki"))
        .create(&bed.client, &bed.ns)
        .await?;
    bed.wait_healthy("chat").await?;
    bed.pg.standby.psql("SELECT pg_wal_replay_pause()")?;
    bed.pg
        .primary
        .psql("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000) g")?;
    let api = bed.api();
    wait_for("lag above 64 KiB reported", Duration::from_secs(15), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.replication_lag_bytes).unwrap_or(0) > 65536)
    })
    .await?;
    bed.pg.primary.kill9();
    wait_for("FailoverBlocked/LagOverBudget", Duration::from_secs(15), || async {
        let d = api.get("chat").await?;
        Ok(condition(&d, conditions::FAILOVER_BLOCKED).is_some_and(|(s, r, m)| {
            s == ConditionStatus::True && r == "LagOverBudget" && m.contains("> maxLagBytes 64.0 KiB")
        }))
    })
    .await?;
    let evs = events(&bed).await?;
    assert!(evs
        .iter()
        .any(|e| e.reason.as_deref() == Some("LagOverBudget") && e.type_.as_deref() == Some("Warning")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.get("chat").await?.status.unwrap_or_default().epoch.0, 0);
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t", "nothing promoted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_reports_and_changes_nothing() -> Result<()> {
    let (mut bed, _ctl) =
        Bed::with_pair("manual", |f| f.mode(Manual).probe_interval("500ms").failure_threshold(3)).await?;
    bed.pg.primary.kill9();
    let api = bed.api();
    wait_for("FailoverBlocked/ManualMode", Duration::from_secs(15), || async {
        Ok(condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED).is_some_and(|(s, r, m)| {
            s == ConditionStatus::True && r == "ManualMode" && m.contains("dr.understudy.dev/failover=")
        }))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!((st.epoch.0, st.phase), (0, Some(Phase::Degraded)));
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    assert_eq!(bed.secret_value("mattermost-db", "dsn").await?, bed.dsn("east"));
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.11"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_mode_waits_acts_on_the_right_nonce_and_ignores_a_wrong_one() -> Result<()> {
    let (mut bed, _ctl) =
        Bed::with_pair("approve", |f| f.mode(Approve).probe_interval("500ms").failure_threshold(3)).await?;
    bed.pg.primary.kill9();
    let api = bed.api();
    wait_for("a pending approval", Duration::from_secs(15), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.pending_approval).is_some())
    })
    .await?;
    let nonce =
        api.get("chat").await?.status.and_then(|s| s.pending_approval).map(|p| p.nonce).unwrap_or_default();
    let annotate =
        |v: &str| serde_json::json!({ "metadata": { "annotations": { "dr.understudy.dev/approve": v } } });
    api.patch("chat", &PatchParams::default(), &Patch::Merge(&annotate("not-the-nonce"))).await?;
    wait_for("ApprovalRejected Warning", Duration::from_secs(10), || async {
        Ok(events(&bed).await?.iter().any(|e| e.reason.as_deref() == Some("ApprovalRejected")))
    })
    .await?;
    assert_eq!(api.get("chat").await?.status.unwrap_or_default().epoch.0, 0, "a wrong nonce does nothing");
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");

    api.patch("chat", &PatchParams::default(), &Patch::Merge(&annotate(&nonce))).await?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let st = drp.status.unwrap_or_default();
    assert_eq!(st.last_transition.map(|t| t.trigger.as_str()), Some("Approved"));
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (1, Some("west")));
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "f");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_server_down_during_the_flip_is_retried_without_promoting_twice() -> Result<()> {
    let (mut bed, _ctl) = Bed::with_pair("dnsdown", fast).await?;
    bed.bind.kill();
    bed.pg.primary.kill9();
    let api = bed.api();
    wait_for("FlipDns failing with the server named", Duration::from_secs(30), || async {
        let t = api.get("chat").await?.status.and_then(|s| s.last_transition);
        Ok(t.and_then(|t| t.steps.into_iter().find(|s| s.name == "FlipDns")).is_some_and(|s| {
            s.attempts >= 2
                && s.finished_at.is_none()
                && s.message.unwrap_or_default().contains(&format!("127.0.0.1:{}", bed.bind.port))
        }))
    })
    .await?;
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "f", "promoted while DNS is down");
    tokio::task::block_in_place(|| bed.bind.restart())?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let t = drp.status.and_then(|s| s.last_transition).expect("transition");
    // Promoted once: the standby is on timeline 2 (checked below), and the step did not run again
    // after it finished (an attempt whose connect timed out on a loaded machine is not a promotion).
    let promote = t.steps.iter().find(|s| s.name == "Promote").expect("promote");
    assert_eq!(
        promote.outcome.map(|o| o.as_str()),
        Some("Succeeded"),
        "{:?}",
        t.steps.iter().map(|s| (&s.name, s.attempts, &s.message)).collect::<Vec<_>>()
    );
    let flip = t.steps.iter().find(|s| s.name == "FlipDns").expect("flip");
    assert!(flip.attempts >= 2);
    // The DNS retries never ran the promotion again: it finished before the flip first started.
    let at = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<jiff::Timestamp>().ok());
    assert!(at(&promote.finished_at) <= at(&flip.started_at), "{promote:?} / {flip:?}");
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.12"]);
    assert_eq!(bed.pg.standby.timeline()?, 2);
    Ok(())
}

/// Kills the controller (a real process) at each step in turn, before and after the step's side
/// effect, restarts it, and checks that the failover completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_at_any_step_resumes_and_completes_exactly_once() -> Result<()> {
    let points = [
        "Fence:after",
        "Promote:before",
        "Promote:after",
        "VerifyWritable:after",
        "RewriteDataSource:after",
        "Recycle:after",
        "FlipDns:before",
        "FlipDns:after",
    ];
    for point in points {
        let mut bed = Bed::start("crash").await?;
        bed.pair("chat").failover(fast).create(&bed.client, &bed.ns).await?;
        let mut ctl = bed.controller_process("west", &[("UNDERSTUDY_CRASH_POINT", point)])?;
        bed.wait_healthy("chat").await?;
        let serial = bed.bind.serial()?;
        bed.pg.primary.kill9();
        tokio::task::block_in_place(|| wait_exit(&mut ctl, Duration::from_secs(30)))?;
        let mid = bed.api().get("chat").await?.status.unwrap_or_default();
        assert!(
            mid.last_transition.as_ref().is_some_and(|t| t.finished_at.is_none()),
            "{point}: died mid-transition"
        );
        let _ctl = bed.controller_process("west", &[])?;
        let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
        let st = drp.status.unwrap_or_default();
        assert_eq!((st.epoch.0, st.current_primary.as_deref()), (1, Some("west")), "{point}");
        assert!(bed.witness_epoch("chat")?.starts_with("1 "), "{point}: one epoch increment in etcd");
        assert_eq!(bed.pg.standby.timeline()?, 2, "{point}: one promotion");
        assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.12"], "{point}");
        assert_eq!(bed.bind.serial()?, serial + 1, "{point}: exactly one DNS change");
        assert_eq!(bed.secret_value("mattermost-db", "dsn").await?, bed.dsn("west"), "{point}");
        eprintln!("{point}: resumed and completed once");
        drop(bed);
    }
    Ok(())
}
