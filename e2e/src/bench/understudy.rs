//! One understudy failover run: a fresh `Bed`, the pair in Automatic mode, the controller as a real
//! process, the `Workload` committing through PgBouncer every 20 ms, SIGKILL of the primary
//! postmaster, and every figure read back from the pair's journal and the workload's acks.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::{rfc3339, Mark};
use crate::{
    bed::Bed,
    support::{self, wait_for},
    workload::lost,
};

/// The failover settings of the measured pair.
pub const FAILOVER: &str =
    "mode: Automatic, probeInterval: 1s, probeTimeout: 1s, failureThreshold: 3, maxLagBytes: 16Mi";

/// The workload's write interval.
pub const WRITE_EVERY: Duration = Duration::from_millis(20);

/// What one run measured (seconds unless named otherwise).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Run {
    /// kill → first failed probe (`lastTransition.startedAt`).
    pub kill_to_first_failed_probe: Option<f64>,
    /// first failed probe → TakeEpoch start.
    pub detection: Option<f64>,
    /// (step name, duration) in journal order.
    pub steps: Vec<(String, Option<f64>, String)>,
    /// TakeEpoch start → last step end.
    pub controller_share: Option<f64>,
    /// `rtoSeconds`: first failed probe → DNS confirmed.
    pub rto: Option<f64>,
    /// kill → first write acknowledged on the new primary through PgBouncer.
    pub kill_to_write: Option<f64>,
    /// kill → TakeEpoch start (the moment the failover was decided).
    pub kill_to_decision: Option<f64>,
    /// kill → DNS confirmed (last step end).
    pub kill_to_dns: Option<f64>,
    pub lost_wal_bytes: Option<i64>,
    pub lost_acked: usize,
    pub acked: usize,
    pub workload_errors: u64,
}

/// Runs one failover on a fresh bed.
pub async fn run_once(label: &str) -> Result<Run> {
    let mut bed = Bed::start(label).await?;
    let yaml = bed.pair_yaml("chat", FAILOVER);
    support::create_pair(&bed.client, &bed.ns, &yaml).await?;
    let _ctl = bed.controller_process("west", &[]).context("start the understudy controller")?;
    bed.wait_healthy("chat").await?;
    let wl = bed.workload("bench_writes", WRITE_EVERY).await?;
    wait_for("the workload to commit", Duration::from_secs(15), || async { Ok(wl.acked() > 50) }).await?;

    let kill = Mark::now();
    tokio::task::block_in_place(|| bed.pg.primary.kill9());
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(90)).await?;
    let t = drp.status.and_then(|s| s.last_transition).context("no transition recorded")?;
    if t.to != "west" {
        bail!("the transition went to {} (expected west)", t.to);
    }
    let promote_start =
        t.steps.iter().find(|s| s.name == "Promote").and_then(|s| s.started_at.as_deref()).and_then(rfc3339);
    // The first acknowledged write after the kill that a promoted server can have taken: any ack
    // before the Promote step started came from an orphaned backend of the killed primary.
    let first_new_write = || -> Option<f64> {
        let p = promote_start?;
        let st = wl.stats();
        st.acked_at.iter().map(|a| kill.wall_of(*a)).find(|w| *w > kill.wall && *w >= p)
    };
    wait_for("a write acknowledged on the new primary", Duration::from_secs(30), || async {
        Ok(first_new_write().is_some())
    })
    .await?;
    let first_write = first_new_write();
    let before = wl.acked();
    wait_for("writes to continue", Duration::from_secs(10), || async { Ok(wl.acked() > before + 10) })
        .await?;
    let stats = wl.stop().await;
    let present: Vec<i64> = tokio::task::block_in_place(|| bed.pg.standby.ids("bench_writes"))?;
    let missing = lost(&stats.acked, &present);

    let started = rfc3339(&t.started_at);
    let take = t
        .steps
        .iter()
        .find(|s| s.name == "TakeEpoch")
        .and_then(|s| s.started_at.as_deref())
        .and_then(rfc3339);
    let last_end = t.steps.iter().filter_map(|s| s.finished_at.as_deref().and_then(rfc3339)).reduce(f64::max);
    let steps = t
        .steps
        .iter()
        .map(|s| {
            let d =
                match (s.started_at.as_deref().and_then(rfc3339), s.finished_at.as_deref().and_then(rfc3339))
                {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
            (s.name.clone(), d, s.outcome.clone().unwrap_or_default())
        })
        .collect();
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    Ok(Run {
        kill_to_first_failed_probe: diff(started, Some(kill.wall)),
        detection: diff(take, started),
        steps,
        controller_share: diff(last_end, take),
        rto: t.rto_seconds,
        kill_to_write: diff(first_write, Some(kill.wall)),
        kill_to_decision: diff(take, Some(kill.wall)),
        kill_to_dns: diff(last_end, Some(kill.wall)),
        lost_wal_bytes: t.lost_wal_bytes,
        lost_acked: missing.len(),
        acked: stats.acked.len(),
        workload_errors: stats.errors,
    })
}
