//! One understudy failover run: a fresh `Bed`, the pair in Automatic mode, the controller(s) as real
//! processes, the `Workload` committing through PgBouncer every 20 ms, SIGKILL of the primary
//! postmaster (and, for a node loss, of the primary site's controller), and every figure read back
//! from the pair's journal, the witness's leader key and the workload's acks.
//!
//! Two topologies: `Topology::Single` runs only the standby site's controller (`--site west`), so
//! nobody keeps the primary site's leader key and the standby promotes as soon as its probes
//! decide; `Topology::TwoSite` runs one controller per site, as in production, so the east
//! controller keeps the leader key on a lease of `leaseTTL` and west may take the epoch only once
//! that key is gone (expired, or released by east after a fence that succeeded).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use understudy_e2e::{
    bed::Bed,
    pair::{Automatic, Failover},
    sandbox::netcut::Partition,
    site_loss::KeyWatch,
    support::wait_for,
    workload::lost,
};

use crate::measure::{rfc3339, Mark};

/// The failover settings of the measured pair, as the report states them.
pub const FAILOVER: &str =
    "mode: Automatic, probeInterval: 1s, probeTimeout: 1s, failureThreshold: 3, maxLagBytes: 16Mi";

/// `FAILOVER`, as the measured pair gets it.
pub fn failover(f: Failover) -> Failover {
    f.mode(Automatic).probe_interval("1s").probe_timeout("1s").failure_threshold(3).max_lag_bytes("16Mi")
}

/// The workload's write interval.
pub const WRITE_EVERY: Duration = Duration::from_millis(20);

/// Which controllers run, and what the kill takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Topology {
    /// Only west's controller; the kill is the primary postmaster's SIGKILL.
    Single,
    /// One controller per site, `lease_ttl_s` the leader key's lease; `kill` says what is lost.
    TwoSite { lease_ttl_s: u32, kill: SiteKill },
}

/// What a two-site run takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum SiteKill {
    /// (a) SIGKILL of the primary postmaster; east's controller lives on.
    Postmaster,
    /// (b) SIGKILL of east's controller process and of the primary postmaster (the analogue of
    /// Patroni's node loss; on loopback the dead ports answer with RST at once).
    #[value(name = "node-loss")]
    Node,
    /// (c) A black-holed node: east's controller frozen (SIGSTOP: it sends nothing) and every
    /// packet to or from the primary's PostgreSQL port dropped by nftables (no RST: connects and
    /// queries hang until their own timeouts, as when a host or its network is lost).
    #[value(name = "black-hole")]
    BlackHole,
}

impl SiteKill {
    pub const ALL: [SiteKill; 3] = [SiteKill::Postmaster, SiteKill::Node, SiteKill::BlackHole];

    /// The same kill in Patroni's runs.
    pub fn patroni(self) -> crate::patroni::Kill {
        match self {
            SiteKill::Postmaster => crate::patroni::Kill::Postmaster,
            SiteKill::Node => crate::patroni::Kill::Node,
            SiteKill::BlackHole => crate::patroni::Kill::BlackHole,
        }
    }

    /// The scenario's key, as Patroni's runs name it too.
    pub fn key(self) -> &'static str {
        match self {
            SiteKill::Postmaster => "a-postmaster",
            SiteKill::Node => "b-node-loss",
            SiteKill::BlackHole => "c-black-hole",
        }
    }
}

impl Topology {
    /// A short key for logs and JSON: `single`, `two-site/ttl10/a-postmaster`, `two-site/ttl10/b-node-loss`.
    pub fn key(&self) -> String {
        match self {
            Topology::Single => "single".into(),
            Topology::TwoSite { lease_ttl_s, kill } => format!("two-site/ttl{lease_ttl_s}/{}", kill.key()),
        }
    }
}

/// What one run measured (seconds unless named otherwise).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Run {
    /// `Topology::key`.
    pub topology: String,
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
    /// Status writes of west's controller refused with 409 over the whole run (every pair; its log).
    pub status_conflicts: usize,
    /// Two sites: kill → the leader key deleted in etcd (lease expired, or released by east).
    pub kill_to_key_gone: Option<f64>,
    /// Two sites: the leader key gone → TakeEpoch start (west's next reconcile winning the swap).
    pub key_gone_to_decision: Option<f64>,
    /// Two sites: east's "leader key given up" log line, when it wrote one (postmaster kill only).
    pub east_gave_up: Option<String>,
    /// Two sites: kill → that log line.
    pub kill_to_east_gave_up: Option<f64>,
}

/// The first "leader key given up" line of a controller log at or after `after` (wall seconds):
/// its time and its `msg=` (ANSI colours stripped).
fn gave_up_line(log: &std::path::Path, after: f64) -> Option<(f64, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().map(strip_ansi).filter(|l| l.contains("leader key given up")).find_map(|l| {
        let ts = rfc3339(l.split_whitespace().next()?)?;
        let msg = l.split_once("msg=").map(|(_, m)| m.to_string()).unwrap_or_else(|| l.clone());
        (ts >= after).then_some((ts, msg))
    })
}

/// Removes `ESC [ … m` colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs one failover on a fresh bed.
pub async fn run_once(label: &str, topo: Topology, fence_hook: bool) -> Result<Run> {
    // The controller users run: the release build (`make bench` builds it first).
    let load = Load { pairs: 0, binary: Some(crate::footprint::release_binary()?) };
    run_once_with(label, topo, fence_hook, &load).await
}

/// What else the controller of a run has to do, and which controller binary runs.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Pairs created beside the measured one, probed every second on a PostgreSQL pair of their
    /// own (`footprint::FAILOVER`, Manual), so that the kill meets a busy controller.
    pub pairs: usize,
    /// The controller binary; `None`: the debug build.
    pub binary: Option<std::path::PathBuf>,
}

/// The load's pairs, probed and Healthy, with the PostgreSQL pair they probe (stopped on drop).
async fn start_load(bed: &Bed, n: usize) -> Result<Option<understudy_e2e::sandbox::PgPair>> {
    use futures::StreamExt;
    use understudy_e2e::pair::Pair;
    if n == 0 {
        return Ok(None);
    }
    let label = format!("{}-load", bed.ns);
    let pg = tokio::task::spawn_blocking(move || understudy_e2e::sandbox::PgPair::start(&label)).await??;
    understudy_e2e::support::pair_secrets_prefixed(&bed.client, &bed.ns, &pg, "load-").await?;
    let made: Vec<Result<_>> = futures::stream::iter(0..n)
        .map(|i| {
            let pair =
                Pair::on_prefixed(&format!("load-{i:04}"), &pg, "load-").failover(crate::footprint::failover);
            let (client, ns) = (bed.client.clone(), bed.ns.clone());
            async move { pair.create(&client, &ns).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(e) = made.into_iter().find_map(Result::err) {
        return Err(e.context("create the load's pairs"));
    }
    Ok(Some(pg))
}

/// Waits until every one of the load's `n` pairs is Healthy.
async fn wait_load(bed: &Bed, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let api = bed.api();
    wait_for("the load's pairs Healthy", Duration::from_secs(240), || async {
        let list = api.list(&kube::api::ListParams::default()).await?;
        let healthy = list
            .items
            .iter()
            .filter(|d| d.metadata.name.as_deref().is_some_and(|n| n.starts_with("load-")))
            .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(understudy::crd::Phase::Healthy))
            .count();
        if healthy < n {
            bail!("{healthy}/{n} Healthy");
        }
        Ok(true)
    })
    .await?;
    // Let the first rounds' readiness checks and status writes settle into the steady cadence.
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(())
}

/// Runs one failover on a fresh bed, with `load` beside it.
pub async fn run_once_with(label: &str, topo: Topology, fence_hook: bool, load: &Load) -> Result<Run> {
    let mut bed = Bed::start(label).await?;
    bed.controller_bin = load.binary.clone();
    let _load_pg = start_load(&bed, load.pairs).await?;
    let mut pair = bed.pair("chat").failover(failover);
    if let Topology::TwoSite { lease_ttl_s, .. } = topo {
        pair = pair.lease_ttl(&format!("{lease_ttl_s}s"));
        if fence_hook {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/fence-hooks/sandbox-local.sh");
            let hook = understudy::crd::FenceHook {
                command: vec![
                    script.display().to_string(),
                    "--data".into(),
                    bed.pg.primary.data.display().to_string(),
                ],
                timeout: Duration::from_secs(10).into(),
            };
            pair = pair.site("east", |s| s.fence_hook = Some(hook));
        }
    }
    pair.create(&bed.client, &bed.ns).await?;
    let mut east = match topo {
        Topology::Single => None,
        Topology::TwoSite { .. } => {
            Some(bed.controller_process("east", &[]).context("start the east controller")?)
        }
    };
    let west = bed.controller_process("west", &[]).context("start the understudy controller")?;
    wait_load(&bed, load.pairs).await?;
    bed.wait_healthy("chat").await?;
    let watch = match topo {
        Topology::Single => None,
        Topology::TwoSite { .. } => {
            wait_for("east to hold the leader key", Duration::from_secs(30), || async {
                Ok(bed.witness_leader("chat")? == "0 east")
            })
            .await?;
            let key = format!("/understudy/{}/chat/leader", bed.ns);
            Some(KeyWatch::start(&bed.witness.endpoint, &key)?)
        }
    };
    let wl = bed.workload("bench_writes", WRITE_EVERY).await?;
    wait_for("the workload to commit", Duration::from_secs(15), || async { Ok(wl.acked() > 50) }).await?;
    if let Some(w) = &watch {
        if w.deleted().is_some() {
            bail!("the leader key was deleted before the kill");
        }
    }

    let cut = match topo {
        Topology::TwoSite { kill: SiteKill::BlackHole, .. } => Some(Partition::new()?),
        _ => None,
    };
    let kill = Mark::now();
    tokio::task::block_in_place(|| -> Result<()> {
        match (topo, east.as_mut(), &cut) {
            (Topology::TwoSite { kill: SiteKill::Node, .. }, Some(e), _) => {
                e.kill9();
                bed.pg.primary.kill9();
            }
            (Topology::TwoSite { kill: SiteKill::BlackHole, .. }, Some(e), Some(cut)) => {
                e.signal("STOP")?;
                cut.black_hole(bed.pg.primary.port)?;
            }
            _ => bed.pg.primary.kill9(),
        }
        Ok(())
    })?;
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
            (s.name.clone(), d, s.outcome.map(|o| o.as_str().to_string()).unwrap_or_default())
        })
        .collect();
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let key_gone = watch.as_ref().and_then(KeyWatch::deleted).map(|t| kill.wall_of(t));
    if watch.is_some() && key_gone.is_none() {
        bail!("west took the epoch but the watch saw no deletion of the leader key");
    }
    let gave_up = match (topo, &east) {
        (Topology::TwoSite { kill: SiteKill::Postmaster, .. }, Some(e)) => gave_up_line(&e.log, kill.wall),
        _ => None,
    };
    Ok(Run {
        topology: topo.key(),
        kill_to_key_gone: diff(key_gone, Some(kill.wall)),
        key_gone_to_decision: diff(take, key_gone),
        kill_to_east_gave_up: diff(gave_up.as_ref().map(|g| g.0), Some(kill.wall)),
        east_gave_up: gave_up.map(|g| g.1),
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
        status_conflicts: std::fs::read_to_string(&west.log)
            .map(|t| t.lines().filter(|l| l.contains("status changed under us (409)")).count())
            .unwrap_or(0),
    })
}
