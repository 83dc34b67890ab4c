//! Planned switchover and the manual controls, against the real sandbox: zero acknowledged commits
//! lost across switchovers back and forth, roll back on a catch-up timeout, tokens that act once,
//! pause, dry-run, and the former primary rejoining (with pg_rewind) so that a switchover back works.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::events::v1::Event;
use kube::{api::ListParams, Api};
use understudy::crd::{conditions, ConditionStatus, Phase};
use understudy_e2e::{
    bed::Bed,
    pair::{Automatic, Manual},
    support::{self, condition, wait_for},
    workload::lost,
};

const SW: &str = "dr.understudy.dev/switchover";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_back_and_forth_lose_no_acknowledged_commit() -> Result<()> {
    let (bed, _ctl) =
        Bed::with_pair("switch", |f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3)).await?;
    let wl = bed.workload("workload", Duration::from_millis(10)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;

    let mut gaps = Vec::new();
    let mut primary = "east".to_string();
    for i in 1..=10 {
        let target = if primary == "east" { "west" } else { "east" };
        bed.annotate("chat", SW, &format!("drill-{i}")).await?;
        let drp = bed.wait_epoch_finished("chat", i, Duration::from_secs(60)).await?;
        let st = drp.status.unwrap_or_default();
        let t = st.last_transition.clone().expect("transition");
        assert_eq!(
            (t.kind.as_str(), t.outcome.map(|o| o.as_str()), t.to.as_str()),
            ("Switchover", Some("Completed"), target),
            "switchover {i}: {t:?}"
        );
        assert_eq!(st.epoch.0, i, "one epoch per switchover: {t:?}");
        assert_eq!(t.lost_wal_bytes, Some(0), "switchover {i} lost WAL");
        assert_eq!(
            t.lost_wal_bound,
            Some(understudy::crd::LossBound::Exact),
            "switchover {i}: the quiesced final LSN"
        );
        primary = target.to_string();
        // The former primary follows the new one again (rejoin hook), so the next switchover can run.
        bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
        let before = wl.acked();
        wait_for("writes on the new primary", Duration::from_secs(20), || async {
            Ok(wl.acked() > before + 10)
        })
        .await?;
        let s = wl.stats();
        gaps.push(s.longest_gap);
        eprintln!(
            "switchover {i} → {target}: epoch {}, acked so far {}, errors {}, longest gap so far {:?}",
            st.epoch.0,
            s.acked.len(),
            s.errors,
            s.longest_gap
        );
    }
    let stats = wl.stop().await;
    let present = bed.server(&primary).ids("workload")?;
    let missing = lost(&stats.acked, &present);
    eprintln!(
        "10 switchovers: {} commits acknowledged, {} client errors, longest write gap {:?}, missing {}",
        stats.acked.len(),
        stats.errors,
        stats.longest_gap,
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    assert!(stats.acked.len() > 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_timeout_rolls_back_and_writes_resume_on_the_old_primary() -> Result<()> {
    let (bed, _ctl) =
        Bed::with_pair("rollback", |f| f.mode(Automatic).probe_interval("500ms").catch_up_timeout("2s"))
            .await?;
    let wl = bed.workload("workload", Duration::from_millis(10)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;
    // The standby receives but stops replaying: it can never catch up.
    bed.pg.standby.psql("SELECT pg_wal_replay_pause()")?;
    bed.annotate("chat", SW, "doomed").await?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let st = drp.status.unwrap_or_default();
    let t = st.last_transition.expect("transition");
    assert_eq!(t.outcome.map(|o| o.as_str()), Some("RolledBack"));
    let catch_up = t.steps.iter().find(|s| s.name == "CatchUp").expect("CatchUp");
    assert_eq!(catch_up.outcome.map(|o| o.as_str()), Some("Aborted"));
    assert!(catch_up.message.as_deref().unwrap_or_default().contains("catchUpTimeout"), "{catch_up:?}");
    assert!(
        t.steps
            .iter()
            .filter(|s| ["TakeEpoch", "Promote"].contains(&s.name.as_str()))
            .all(|s| s.started_at.is_none()),
        "nothing promoted"
    );
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (0, Some("east")));
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    assert_eq!(
        bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim(),
        "off",
        "primary writable again"
    );
    assert!(bed.has_event("SwitchoverRolledBack").await?);
    let before = wl.acked();
    wait_for("writes to resume on east through PgBouncer", Duration::from_secs(15), || async {
        Ok(wl.acked() > before + 20)
    })
    .await?;
    let stats = wl.stop().await;
    bed.pg.standby.psql("SELECT pg_wal_replay_resume()")?;
    assert!(lost(&stats.acked, &bed.pg.primary.ids("workload")?).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_act_once_and_bad_values_change_nothing() -> Result<()> {
    let (bed, _ctl) = Bed::with_pair("tokens", |f| f.mode(Manual).probe_interval("500ms")).await?;
    let api = bed.api();

    // Bad values: a Warning each, nothing changes.
    bed.annotate("chat", "dr.understudy.dev/switchover-to", "north").await?;
    bed.annotate("chat", SW, "bad-target").await?;
    wait_for("SwitchoverRejected", Duration::from_secs(10), || bed.has_event("SwitchoverRejected")).await?;
    bed.annotate("chat", "dr.understudy.dev/failback", "please").await?;
    wait_for("UnknownAnnotation", Duration::from_secs(10), || bed.has_event("UnknownAnnotation")).await?;
    bed.annotate("chat", "dr.understudy.dev/paused", "maybe").await?;
    wait_for("InvalidAnnotation", Duration::from_secs(10), || bed.has_event("InvalidAnnotation")).await?;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!((st.epoch.0, st.current_primary.as_deref()), (0, Some("east")));
    assert!(st.last_transition.is_none());

    // A good token switches over once; re-applying it (same value) does nothing.
    let patch = serde_json::json!({ "metadata": { "annotations": { "dr.understudy.dev/switchover-to": null, "dr.understudy.dev/paused": null } } });
    api.patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    bed.annotate("chat", SW, "t1").await?;
    bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    assert_eq!(api.get("chat").await?.status.unwrap_or_default().epoch.0, 1);
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    let patch = serde_json::json!({ "metadata": { "annotations": { SW: null } } });
    api.patch("chat", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    bed.annotate("chat", SW, "t1").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = api.get("chat").await?.status.unwrap_or_default();
    assert_eq!(
        (st.epoch.0, st.current_primary.as_deref()),
        (1, Some("west")),
        "the replayed token did nothing"
    );
    assert_eq!(st.handled.get(SW).map(String::as_str), Some("t1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pair_does_not_fail_over_until_resumed() -> Result<()> {
    let (mut bed, _ctl) =
        Bed::with_pair("paused", |f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3)).await?;
    bed.annotate("chat", "dr.understudy.dev/paused", "true").await?;
    let api = bed.api();
    wait_for("phase Paused", Duration::from_secs(10), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.phase) == Some(Phase::Paused))
    })
    .await?;
    bed.pg.primary.kill9();
    wait_for("FailoverBlocked/Paused", Duration::from_secs(15), || async {
        Ok(condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED)
            .is_some_and(|(s, r, _)| s == ConditionStatus::True && r == "Paused"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get("chat").await?.status.unwrap_or_default().epoch.0, 0);
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t", "paused: nothing promoted");
    // Probes kept reporting while paused.
    assert!(api
        .get("chat")
        .await?
        .status
        .unwrap_or_default()
        .sites
        .iter()
        .any(|s| s.name == "east" && s.consecutive_failures >= 3));
    bed.annotate("chat", "dr.understudy.dev/paused", "false").await?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    assert_eq!(
        drp.status.and_then(|s| s.current_primary).as_deref(),
        Some("west"),
        "resumed automation fails over"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lists_a_broken_dns_key_as_a_blocker() -> Result<()> {
    let (bed, _ctl) = Bed::with_pair("dryrun", |f| f.mode(Automatic).probe_interval("500ms")).await?;
    let api = bed.api();
    bed.annotate("chat", "dr.understudy.dev/dry-run", "d1").await?;
    wait_for("dry-run d1", Duration::from_secs(15), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.dry_run).is_some_and(|d| d.token == "d1"))
    })
    .await?;
    let d = api.get("chat").await?.status.and_then(|s| s.dry_run).expect("dry run");
    assert!(d.blockers.is_empty(), "a healthy pair has no blockers: {:?}", d.blockers);
    assert!(
        d.steps.iter().any(|s| s.starts_with("FlipDns:"))
            && d.steps.iter().any(|s| s.starts_with("Promote:")),
        "{:?}",
        d.steps
    );

    let wrong = "c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQtaXMtd3Jvbmc=";
    support::put_secret(
        &bed.client,
        &bed.ns,
        "dns-tsig",
        &[("name", &bed.bind.key_name), ("algorithm", "hmac-sha256"), ("secret", wrong)],
    )
    .await?;
    bed.annotate("chat", "dr.understudy.dev/dry-run", "d2").await?;
    wait_for("dry-run d2", Duration::from_secs(15), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.dry_run).is_some_and(|d| d.token == "d2"))
    })
    .await?;
    let drp = api.get("chat").await?;
    let d = drp.status.clone().and_then(|s| s.dry_run).expect("dry run");
    assert!(
        d.blockers.iter().any(|b| b.contains("spec.dns[0].rfc2136") && b.contains("TSIG")),
        "{:?}",
        d.blockers
    );
    assert_eq!(
        condition(&drp, conditions::READY_FOR_FAILOVER).map(|c| (c.0, c.1)),
        Some((ConditionStatus::False, "Blocked".into()))
    );
    // Nothing acted.
    assert_eq!(drp.status.unwrap_or_default().epoch.0, 0);
    assert_eq!(bed.bind.dig("chat")?, vec!["127.0.0.11"]);
    let raw = serde_json::to_string(&api.get("chat").await?.status)?;
    assert!(!raw.contains(wrong) && !raw.contains(&bed.bind.key_secret), "no key material in status");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_primary_rejoins_after_a_failover_with_pg_rewind_and_a_switchover_back_works() -> Result<()> {
    let (bed, _ctl) = Bed::with_pair("rejoin", |f| f.mode(Manual).probe_interval("500ms")).await?;
    // Some replicated history first, so the fork does not sit on a WAL segment boundary.
    bed.pg.primary.psql("CREATE TABLE shared_history AS SELECT g FROM generate_series(1, 5000) g")?;
    wait_for("the standby to replay it", Duration::from_secs(10), || async {
        Ok(bed
            .pg
            .standby
            .psql("SELECT count(*) FROM pg_class WHERE relname = 'shared_history'")
            .map(|s| s.trim() == "1")
            .unwrap_or(false))
    })
    .await?;
    // Cut replication, then write on east: east now has WAL the standby never received.
    bed.pg.standby.psql("ALTER SYSTEM SET primary_conninfo = ''")?;
    bed.pg.standby.psql("SELECT pg_reload_conf()")?;
    bed.pg.primary.psql("CREATE TABLE diverged AS SELECT g FROM generate_series(1, 20000) g")?;
    bed.annotate("chat", "dr.understudy.dev/failover", "f1").await?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let t = drp.status.clone().and_then(|s| s.last_transition).expect("transition");
    assert_eq!((t.trigger.as_str(), t.to.as_str()), ("Forced", "west"));
    assert!(t.lost_wal_bytes.unwrap_or(0) > 0, "the forced failover reports the WAL it gave up: {t:?}");
    // east answered, so Fence read its final position after fencing it: the figure is exact.
    assert_eq!(t.lost_wal_bound, Some(understudy::crd::LossBound::Exact), "{t:?}");
    assert!(t.final_lsn.is_some(), "{t:?}");

    // east (fenced by the failover) needs pg_rewind; the hook rewinds it and it follows west.
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    assert!(bed.has_event("FormerPrimaryNeedsRewind").await?);
    assert!(bed.has_event("FormerPrimaryFenced").await?, "east was still writable after the forced failover");
    let hook_said = Api::<Event>::namespaced(bed.client.clone(), &bed.ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("RejoinHookSucceeded"))
        .and_then(|e| e.note)
        .unwrap_or_default();
    assert!(hook_said.contains("east rewound"), "pg_rewind did the work: {hook_said}");
    assert_eq!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    assert_eq!(
        bed.pg.primary.psql("SELECT count(*) FROM pg_class WHERE relname = 'diverged'")?.trim(),
        "0",
        "the diverged writes were rewound away"
    );

    // And back: a switchover to east, then west rejoins.
    bed.pg.standby.psql("CREATE TABLE written_on_west AS SELECT 1 AS x")?;
    bed.annotate("chat", SW, "back").await?;
    let drp = bed.wait_epoch_finished("chat", 2, Duration::from_secs(60)).await?;
    let st = drp.status.unwrap_or_default();
    assert_eq!((st.current_primary.as_deref(), st.epoch.0), (Some("east"), 2));
    assert_eq!(st.last_transition.and_then(|t| t.outcome).map(|o| o.as_str()), Some("Completed"));
    assert_eq!(bed.pg.primary.psql("SELECT x FROM written_on_west")?.trim(), "1");
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    Ok(())
}
