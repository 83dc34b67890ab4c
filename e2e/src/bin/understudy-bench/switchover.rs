//! Planned switchovers, measured the same way for understudy and for `patronictl switchover`: for each
//! run a fresh `Workload` (one autocommit INSERT every 10 ms, its own table) writes until 50 commits
//! are acknowledged, the switchover is requested, and after the system's own "done" the workload runs
//! on until the new primary has acknowledged 20 more commits and 1 s has passed. Per run: the longest
//! gap between two acknowledged commits from 1 s before the request to the end (the write-unavailability
//! window), request → first commit acknowledged by the new primary, lost acknowledged commits (acked ids
//! missing on the new primary), client errors. The former primary rejoins before the next run.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    measure::{rfc3339, Mark},
    patroni::{self, Cluster, Timing},
};
use understudy_e2e::{
    bed::Bed,
    pair::{Automatic, Failover},
    sandbox::proc::{run as run_cmd, Proc},
    support::wait_for,
    workload::{lost, Stats, Workload},
};

/// Both systems' write interval.
pub const WRITE_EVERY: Duration = Duration::from_millis(10);

/// Acknowledged commits before the switchover is requested.
const WARM_ACKS: usize = 50;

/// Commits the new primary must acknowledge before a run ends.
const AFTER_ACKS: usize = 20;

/// The understudy pair's failover settings (a switchover does not wait on them), as the report
/// states them.
pub const UNDERSTUDY_FAILOVER: &str = "mode: Automatic, probeInterval: 500ms, failureThreshold: 3";

/// `UNDERSTUDY_FAILOVER`, as the pair gets it.
pub fn understudy_failover(f: Failover) -> Failover {
    f.mode(Automatic).probe_interval("500ms").failure_threshold(3)
}

/// Patroni's HA timing for the switchover runs: its defaults.
pub const PATRONI_TIMING: Timing = Timing::DEFAULTS;

/// What one switchover measured (seconds; "request" = the moment the request was sent).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Run {
    pub from: String,
    pub to: String,
    /// Longest gap between two consecutive acknowledged commits in [request − 1 s, end of the run].
    pub gap: f64,
    /// The gap's ends relative to the request: last ack before it, first ack after it.
    pub gap_from: f64,
    pub gap_to: f64,
    /// request → first commit acknowledged by the new primary (`inet_server_port()` of the ack).
    pub request_to_write: Option<f64>,
    /// request → the system's own "done" (understudy: `lastTransition.finishedAt`; Patroni:
    /// `patronictl switchover` returned, after its REST API polled the DCS once a second).
    pub request_to_done: Option<f64>,
    /// request → the new primary's promotion began (understudy: the Promote step's startedAt;
    /// Patroni: the candidate's "promoted self to leader" log line).
    pub request_to_promote: Option<f64>,
    /// request → PgBouncer repointed (understudy: the Recycle step's startedAt; Patroni, PgBouncer
    /// path: its `on_role_change` callback ran).
    pub request_to_repoint: Option<f64>,
    /// understudy only: `lastTransition.startedAt → finishedAt`, and `lostWalBytes`.
    pub journal: Option<f64>,
    pub lost_wal_bytes: Option<i64>,
    pub acked: usize,
    pub lost_acked: usize,
    pub errors: u64,
}

/// The shared half of a run: wait for the new primary to take `AFTER_ACKS` commits and for 1 s past
/// `done`, then stop the workload.
async fn settle(wl: Workload, new_port: u16, done: Instant) -> Result<Stats> {
    let res = wait_for("commits acknowledged by the new primary", Duration::from_secs(30), || async {
        let st = wl.stats();
        Ok(st.acked_port.iter().position(|p| *p == new_port).is_some_and(|i| st.acked.len() > i + AFTER_ACKS))
    })
    .await;
    if let Some(rest) = (done + Duration::from_secs(1)).checked_duration_since(Instant::now()) {
        tokio::time::sleep(rest).await;
    }
    let stats = wl.stop().await;
    res.map(|_| stats)
}

/// The figures both systems share, from the workload's acks.
fn figures(run: &mut Run, st: &Stats, asked: Instant, new_port: u16, present: &[i64]) {
    let lo = asked.checked_sub(Duration::from_secs(1)).unwrap_or(asked);
    let rel = |t: Instant| {
        if t >= asked {
            (t - asked).as_secs_f64()
        } else {
            -(asked - t).as_secs_f64()
        }
    };
    let window: Vec<Instant> = st.acked_at.iter().copied().filter(|a| *a >= lo).collect();
    for w in window.windows(2) {
        let g = (w[1] - w[0]).as_secs_f64();
        if g > run.gap {
            (run.gap, run.gap_from, run.gap_to) = (g, rel(w[0]), rel(w[1]));
        }
    }
    run.request_to_write = st
        .acked_at
        .iter()
        .zip(&st.acked_port)
        .find(|(a, p)| **a > asked && **p == new_port)
        .map(|(a, _)| rel(*a));
    run.acked = st.acked.len();
    run.lost_acked = lost(&st.acked, present).len();
    run.errors = st.errors;
}

/// Waits until a workload has `WARM_ACKS` acknowledged commits.
async fn warm(wl: &Workload) -> Result<()> {
    wait_for("the workload to commit", Duration::from_secs(15), || async { Ok(wl.acked() >= WARM_ACKS) })
        .await
}

// === understudy ===

/// understudy's side: one bed, the pair `chat`, the controller as a process at the west site, the
/// workload through the bed's PgBouncer (which the controller pauses, repoints and resumes).
pub struct Understudy {
    bed: Bed,
    _ctl: Proc,
    n: usize,
}

impl Understudy {
    pub async fn start() -> Result<Understudy> {
        let bed = Bed::start("benchsw").await?;
        bed.pair("chat").failover(understudy_failover).create(&bed.client, &bed.ns).await?;
        // One controller for both sites (it runs the former primary's rejoin hook between runs; a
        // controller run with `--site` leaves another site's hook to that site's controller).
        let ctl = bed.controller_process_both_sites()?;
        bed.wait_healthy("chat").await?;
        Ok(Understudy { bed, _ctl: ctl, n: 0 })
    }

    /// One switchover away from the current primary: `kubectl annotate drp chat
    /// dr.understudy.dev/switchover=<token>`, the command a user runs.
    pub async fn once(&mut self) -> Result<Run> {
        self.n += 1;
        let bed = &self.bed;
        let st = bed.api().get("chat").await?.status.context("no status")?;
        let from = st.current_primary.clone().context("no currentPrimary")?;
        let to = if from == "east" { "west" } else { "east" };
        let new_port = bed.server(to).port;
        let table = format!("sw_us_{}", self.n);
        let wl = bed.workload(&table, WRITE_EVERY).await?;
        warm(&wl).await?;
        let mut cmd = bed.cp.kubectl();
        cmd.args(["-n", &bed.ns, "annotate", "--overwrite", "drp", "chat"])
            .arg(format!("dr.understudy.dev/switchover=bench-{}-{}", self.n, st.epoch));
        let asked = Mark::now();
        if let Err(e) = tokio::task::block_in_place(|| run_cmd(&mut cmd)) {
            wl.stop().await;
            return Err(e).context("kubectl annotate");
        }
        let finished = bed.wait_epoch_finished("chat", st.epoch.0 + 1, Duration::from_secs(60)).await;
        let drp = match finished {
            Ok(d) => d,
            Err(e) => {
                wl.stop().await;
                return Err(e);
            }
        };
        let done = Instant::now();
        let t = drp.status.and_then(|s| s.last_transition).unwrap_or_default();
        if t.outcome.map(|o| o.as_str()) != Some("Completed") || t.to != to {
            wl.stop().await;
            bail!("switchover {from} → {to} did not complete: {:?} to {}", t.outcome, t.to);
        }
        let stats = settle(wl, new_port, done).await?;
        let present = tokio::task::block_in_place(|| bed.server(to).ids(&table))?;
        let mut run = Run { from, to: to.into(), ..Default::default() };
        figures(&mut run, &stats, asked.mono, new_port, &present);
        let finished_at = t.finished_at.as_deref().and_then(rfc3339);
        run.request_to_done = finished_at.map(|f| f - asked.wall);
        run.journal = finished_at.zip(rfc3339(&t.started_at)).map(|(f, s)| f - s);
        run.lost_wal_bytes = t.lost_wal_bytes;
        let step_start = |name: &str| {
            t.steps.iter().find(|s| s.name == name).and_then(|s| s.started_at.as_deref()).and_then(rfc3339)
        };
        run.request_to_promote = step_start("Promote").map(|p| p - asked.wall);
        run.request_to_repoint = step_start("Recycle").map(|p| p - asked.wall);
        bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
        Ok(run)
    }
}

// === Patroni ===

/// How the Patroni side's workload reaches the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PatroniPath {
    /// Through PgBouncer (the same configuration as the understudy bed's), which each member's
    /// `on_role_change` callback repoints (`[databases]` rewrite + `RELOAD`) when it is promoted.
    PgBouncer,
    /// Straight to the servers with a multi-host DSN and `target_session_attrs=read-write`.
    MultiHost,
}

/// Patroni's side: one two-member cluster (the failover bench's `Cluster`) with PgBouncer in front.
pub struct Patroni {
    pub cluster: Cluster,
    n: usize,
}

/// The command each Patroni run sends (`<cfg>` is the current leader's `patroni.yml`).
pub const PATRONICTL: &str = "patronictl -c <cfg> switchover --leader <old> --candidate <new> --force";

impl Patroni {
    pub async fn start() -> Result<Patroni> {
        let cluster =
            tokio::task::spawn_blocking(|| Cluster::start_with(PATRONI_TIMING, patroni::SWITCHOVER, true))
                .await??;
        Ok(Patroni { cluster, n: 0 })
    }

    /// The index of the member whose REST API answers `/primary` with 200, once the other one is a
    /// streaming replica.
    async fn leader(&self) -> Result<usize> {
        let c = &self.cluster;
        let mut found = None;
        let res = wait_for("one Patroni primary and one streaming replica", Duration::from_secs(90), || {
            let r = tokio::task::block_in_place(|| {
                let l = (0..2).find(|i| c.nodes[*i].is("primary"))?;
                let f = &c.nodes[1 - l];
                let streaming = f.is("replica")
                    && f.psql("SELECT status FROM pg_stat_wal_receiver")
                        .is_ok_and(|s| s.trim() == "streaming");
                streaming.then_some(l)
            });
            found = r;
            async move { Ok(r.is_some()) }
        })
        .await;
        res.with_context(|| {
            format!(
                "patroni logs:\n{}\n{}",
                understudy_e2e::sandbox::proc::tail_file(&c.nodes[0].log(), 15),
                understudy_e2e::sandbox::proc::tail_file(&c.nodes[1].log(), 15)
            )
        })?;
        found.context("no leader")
    }

    /// One `patronictl switchover` from the current leader to the other member.
    pub async fn once(&mut self, path: PatroniPath) -> Result<Run> {
        self.n += 1;
        let l = self.leader().await?;
        let c = &self.cluster;
        let (old, new) = (&c.nodes[l], &c.nodes[1 - l]);
        let table = format!("sw_pat_{}", self.n);
        let wl = match path {
            PatroniPath::PgBouncer => {
                let pgb = c.pgbouncer.as_ref().context("the cluster has no PgBouncer")?;
                Workload::start(
                    "127.0.0.1",
                    pgb.port,
                    &pgb.database,
                    "postgres",
                    &c.password,
                    &table,
                    WRITE_EVERY,
                )
                .await?
            }
            PatroniPath::MultiHost => Workload::start_with(c.client_config(), &table, WRITE_EVERY).await?,
        };
        warm(&wl).await?;
        let mut cmd = Command::new("patronictl");
        cmd.arg("-c").arg(&old.yaml).args([
            "switchover",
            "--leader",
            &old.name,
            "--candidate",
            &new.name,
            "--force",
        ]);
        let asked = Mark::now();
        let out = tokio::task::block_in_place(|| cmd.output());
        let done = Instant::now();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                wl.stop().await;
                return Err(e).context("run patronictl");
            }
        };
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() || !text.contains("Successfully switched over") {
            wl.stop().await;
            bail!(
                "patronictl switchover {} → {} failed ({}): {}",
                old.name,
                new.name,
                out.status,
                text.trim()
            );
        }
        let stats = settle(wl, new.pg_port, done).await?;
        let present: Vec<i64> = tokio::task::block_in_place(|| new.psql(&format!("SELECT id FROM {table}")))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut run = Run { from: old.name.clone(), to: new.name.clone(), ..Default::default() };
        figures(&mut run, &stats, asked.mono, new.pg_port, &present);
        run.request_to_done = Some((done - asked.mono).as_secs_f64());
        run.request_to_promote = patroni::decision(&[&new.log()], asked.wall).0.map(|p| p - asked.wall);
        if path == PatroniPath::PgBouncer {
            run.request_to_repoint = new.promoted_callback_after(asked.wall).map(|p| p - asked.wall);
        }
        Ok(run)
    }
}

// === the interleaved comparison ===

/// Every switchover run, per system and client path, and the failed ones.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub understudy: Vec<Run>,
    pub patroni_pgbouncer: Vec<Run>,
    pub patroni_multihost: Vec<Run>,
    /// Failed runs per column (`understudy`, `patroni_pgbouncer`, `patroni_multihost`, or `setup`).
    pub failed: std::collections::BTreeMap<String, usize>,
}

/// `runs` rounds, each: one understudy switchover, then (unless `patroni` is false) one Patroni
/// switchover per client path, the two paths' order alternating by round so that each path sees both
/// directions. A failed run is logged, counted in `failed` and appended to `failures`.
pub async fn run(
    runs: usize,
    patroni: bool,
    log: &mut impl FnMut(String),
    failures: &mut Vec<String>,
) -> Report {
    let mut rep = Report::default();
    let mut fail =
        |rep: &mut Report, log: &mut dyn FnMut(String), key: &str, what: String, e: anyhow::Error| {
            log(format!("  {what} FAILED: {e:#}"));
            failures.push(format!("{what}: {e:#}"));
            *rep.failed.entry(key.into()).or_default() += 1;
        };
    let mut us = match Understudy::start().await {
        Ok(u) => Some(u),
        Err(e) => {
            fail(&mut rep, log, "setup", "understudy switchover bed".into(), e);
            None
        }
    };
    let mut pat = if patroni {
        log("switchovers: starting the Patroni cluster with PgBouncer".into());
        match Patroni::start().await {
            Ok(p) => Some(p),
            Err(e) => {
                fail(&mut rep, log, "setup", "Patroni switchover cluster".into(), e);
                None
            }
        }
    } else {
        None
    };
    let show = |r: &Run| {
        format!(
            "{} → {}: write gap {:.3}s (+{:.3}…+{:.3}), request→write {:.3}s, request→done {:.3}s, lost {}, errors {}",
            r.from,
            r.to,
            r.gap,
            r.gap_from,
            r.gap_to,
            r.request_to_write.unwrap_or(f64::NAN),
            r.request_to_done.unwrap_or(f64::NAN),
            r.lost_acked,
            r.errors
        )
    };
    for i in 1..=runs {
        if let Some(u) = us.as_mut() {
            log(format!("switchover round {i}/{runs}: understudy"));
            match u.once().await {
                Ok(r) => {
                    log(format!("  understudy {}", show(&r)));
                    rep.understudy.push(r);
                }
                Err(e) => fail(&mut rep, log, "understudy", format!("understudy switchover {i}"), e),
            }
        }
        if let Some(p) = pat.as_mut() {
            let paths = if i % 2 == 1 {
                [PatroniPath::PgBouncer, PatroniPath::MultiHost]
            } else {
                [PatroniPath::MultiHost, PatroniPath::PgBouncer]
            };
            for path in paths {
                let key = match path {
                    PatroniPath::PgBouncer => "patroni_pgbouncer",
                    PatroniPath::MultiHost => "patroni_multihost",
                };
                log(format!("switchover round {i}/{runs}: Patroni ({key})"));
                match p.once(path).await {
                    Ok(r) => {
                        log(format!("  Patroni {key} {}", show(&r)));
                        match path {
                            PatroniPath::PgBouncer => rep.patroni_pgbouncer.push(r),
                            PatroniPath::MultiHost => rep.patroni_multihost.push(r),
                        }
                    }
                    Err(e) => fail(&mut rep, log, key, format!("Patroni {key} switchover {i}"), e),
                }
            }
        }
    }
    rep
}

/// How the switchover runs were set up and what each figure includes, for the report.
pub fn settings(patroni: bool) -> String {
    let mut o = format!(
        "switchover: per run a fresh Workload (e2e/src/workload.rs: one autocommit INSERT … RETURNING inet_server_port() every {} ms, reconnect after any error, its own table), {WARM_ACKS} acks before the request, then until the new primary acked {AFTER_ACKS} more and 1 s after the system's own \"done\"; the former primary rejoins before the next run\n\
         switchover understudy: kubectl -n <ns> annotate --overwrite drp chat dr.understudy.dev/switchover=<token>; pair spec.failover {{ {UNDERSTUDY_FAILOVER} }}; controller = target/debug/understudy as a process (--site west); the client writes through PgBouncer 1.18 (transaction pooling, e2e/src/sandbox/pgbouncer.rs), which the controller PAUSEs, repoints and RESUMEs\n",
        WRITE_EVERY.as_millis()
    );
    if patroni {
        o.push_str(&format!(
            "switchover Patroni: {PATRONICTL}; {}; the same PostgreSQL settings as the failover cluster; the PgBouncer path uses the same PgBouncer configuration as understudy's bed, repointed by each member's on_role_change callback (rewrite [databases] + RELOAD; Patroni calls it right after pg_ctl promote -W); the multi-host path connects with {} (connect_timeout 2 s); the two paths alternate order by round, so each sees both directions\n",
            PATRONI_TIMING.label(),
            patroni::CLIENT_DSN.replace("&connect_timeout=1", "")
        ));
    }
    o
}
