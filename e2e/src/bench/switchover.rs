//! Planned switchovers, measured: one bed, a workload committing through PgBouncer every 10 ms,
//! N switchovers back and forth (the former primary rejoins through the rejoin hook between them).
//! For each: the write-unavailability window (the longest gap between two acknowledged commits
//! around the switchover) and the switchover's own duration; at the end, every acknowledged commit
//! is looked up on the final primary.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    bed::Bed,
    support::{self, wait_for},
    workload::lost,
};

/// What the switchovers measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Per switchover: longest write gap around it (s).
    pub gaps: Vec<f64>,
    /// Per switchover: annotation accepted → journal finished (s, from status timestamps).
    pub durations: Vec<f64>,
    pub acked: usize,
    pub lost_acked: usize,
    pub client_errors: u64,
    pub lost_wal_bytes: Vec<i64>,
}

/// Runs `n` switchovers.
pub async fn run(n: usize, log: &mut impl FnMut(String)) -> Result<Report> {
    let bed = Bed::start("benchsw").await?;
    support::create_pair(
        &bed.client,
        &bed.ns,
        &bed.pair_yaml("chat", "mode: Automatic, probeInterval: 500ms, failureThreshold: 3"),
    )
    .await?;
    let _ctl = bed.controller_process("west", &[])?;
    bed.wait_healthy("chat").await?;
    let wl = bed.workload("bench_sw", Duration::from_millis(10)).await?;
    wait_for("the workload to commit", Duration::from_secs(15), || async { Ok(wl.acked() > 50) }).await?;
    let mut rep = Report::default();
    let mut primary = "east";
    for i in 1..=n {
        let to = if primary == "east" { "west" } else { "east" };
        let asked = Instant::now();
        bed.annotate("chat", "dr.understudy.dev/switchover", &format!("bench-{i}")).await?;
        let drp = bed.wait_epoch_finished("chat", i as i64, Duration::from_secs(60)).await?;
        let t = drp.status.and_then(|s| s.last_transition).unwrap_or_default();
        if t.outcome.as_deref() != Some("Completed") || t.to != to {
            anyhow::bail!("switchover {i} did not complete to {to}: {:?}", t.outcome);
        }
        let done = Instant::now();
        bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
        let before = wl.acked();
        wait_for("writes after the switchover", Duration::from_secs(20), || async {
            Ok(wl.acked() > before + 20)
        })
        .await?;
        // The longest gap between consecutive acks from 1 s before the request to 3 s after the end.
        let st = wl.stats();
        let (lo, hi) = (asked - Duration::from_secs(1), done + Duration::from_secs(3));
        let window: Vec<Instant> = st.acked_at.iter().copied().filter(|a| *a >= lo && *a <= hi).collect();
        let gap = window.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).fold(0.0, f64::max);
        rep.gaps.push(gap);
        if let Some(d) = t
            .finished_at
            .as_deref()
            .and_then(super::rfc3339)
            .zip(super::rfc3339(&t.started_at))
            .map(|(b, a)| b - a)
        {
            rep.durations.push(d);
        }
        rep.lost_wal_bytes.push(t.lost_wal_bytes.unwrap_or(-1));
        log(format!(
            "  switchover {i} → {to}: write gap {gap:.3}s, journal {:.3}s",
            rep.durations.last().copied().unwrap_or(f64::NAN)
        ));
        primary = to;
    }
    let stats = wl.stop().await;
    let present: Vec<i64> = tokio::task::block_in_place(|| bed.server(primary).ids("bench_sw"))?;
    rep.acked = stats.acked.len();
    rep.lost_acked = lost(&stats.acked, &present).len();
    rep.client_errors = stats.errors;
    Ok(rep)
}
