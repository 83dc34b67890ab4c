//! `understudy-bench mass-failover`: many pairs losing their primaries at the same moment, one
//! controller failing them all over. Each run starts `--pairs` bare PostgreSQL pairs (primary +
//! streaming standby, `PgPair`), one `DisasterRecoveryPair` per PostgreSQL pair in one namespace
//! (Automatic, probes every 1 s, threshold 3, as the single-pair bench), one release controller
//! (`--site west`, or no `--site` under `--replication Sync|SyncPreferred`: no leader key kept, so
//! each standby promotes as soon as its probes decide) and a
//! writer per pair committing straight to its primary every 20 ms; then SIGKILLs every primary
//! postmaster at once (one `kill -9` of all the pids) and reads every pair's journal back: RTO per
//! pair, the kill → the last pair done, outcomes, double promotions (epoch, journal, the promoted
//! server's timeline, the old primary staying dead) and the acknowledged commits missing on each new
//! primary. Written to `target/bench/mass-failover.{md,json}`; the controller's log of each run is
//! kept as `target/bench/mass-failover-run<i>-controller.log`.

use std::{collections::BTreeMap, fmt::Write as _, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, ListParams},
    Api,
};
use understudy::crd::{conditions, DisasterRecoveryPair, EtcdWitness, Phase, TransitionOutcome};
use understudy_e2e::{
    pair::{duration, Pair},
    sandbox::{repo_root, PgPair, Witness},
    support,
    workload::{lost, Workload},
};

use crate::{
    measure::{cpu_seconds, rfc3339, rss_mib, Mark},
    table::{cell, Grid, Summary},
    understudy_failover as us,
};

/// The writers' table (one per pair, in its own PostgreSQL pair).
const TABLE: &str = "bench_writes";

/// PostgreSQL pairs started at once (initdb, pg_basebackup): enough to overlap their waits, few
/// enough not to starve the 2-core machine.
const START_CONCURRENCY: usize = 4;

/// The command line of `understudy-bench mass-failover`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// PostgreSQL pairs (and DisasterRecoveryPairs, one each) whose primaries are all killed at once.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub pairs: usize,
    /// Runs, each on fresh PostgreSQL pairs, a fresh namespace and a fresh controller.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub runs: usize,
    /// `spec.failover.replication` of every pair: `Async` (the default), `SyncPreferred` or `Sync`
    /// (no commit acknowledged before the standby flushed it: 0 lost is then the claim).
    #[arg(long, value_name = "MODE", default_value = "Async", value_parser = replication)]
    pub replication: understudy::crd::ReplicationMode,
}

fn replication(v: &str) -> Result<understudy::crd::ReplicationMode, String> {
    use understudy::crd::ReplicationMode as R;
    [R::Async, R::SyncPreferred, R::Sync]
        .into_iter()
        .find(|m| m.as_str() == v)
        .ok_or_else(|| format!("{v:?}: use Async, SyncPreferred or Sync"))
}

/// One pair of one run, from its journal and its servers (seconds).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PairResult {
    pub name: String,
    /// `lastTransition.outcome` (empty while unfinished or absent).
    pub outcome: String,
    /// The promoted site.
    pub to: String,
    pub transition_epoch: Option<i64>,
    pub status_epoch: i64,
    /// The epoch in the witness (`<prefix>/<ns>/<name>/epoch`, `<epoch> <holder> <id>`).
    pub witness_epoch: Option<i64>,
    /// `Promote` steps in the journal.
    pub promote_steps: usize,
    /// The promoted server's timeline after the run (2 after exactly one promotion).
    pub west_timeline: Option<i64>,
    /// The killed primary's postmaster, or anything on its port, alive after the run.
    pub old_primary_alive: bool,
    /// kill → first failed probe (`lastTransition.startedAt`).
    pub kill_to_first_failed_probe: Option<f64>,
    /// first failed probe → TakeEpoch start.
    pub detection: Option<f64>,
    /// TakeEpoch start → last step end.
    pub controller_share: Option<f64>,
    /// first failed probe → last step end (as the single-pair bench's journal RTO).
    pub rto: Option<f64>,
    /// `lastTransition.rtoSeconds`.
    pub rto_seconds: Option<f64>,
    /// kill → last step end.
    pub kill_to_done: Option<f64>,
    /// (step, duration, outcome) in journal order.
    pub steps: Vec<(String, Option<f64>, String)>,
    pub lost_wal_bytes: Option<i64>,
    /// `lastTransition.lostWalBound` (`Exact` or `AtLeast`).
    pub lost_wal_bound: Option<String>,
    pub lost_acked: usize,
    pub acked: usize,
    /// What was odd about this pair (empty when nothing).
    pub anomalies: Vec<String>,
}

impl PairResult {
    /// A second promotion or epoch: more than one Promote step, an epoch past 1, a timeline past 2,
    /// or the old primary serving again.
    pub fn double_promotion(&self) -> bool {
        self.promote_steps > 1
            || self.transition_epoch.is_some_and(|e| e > 1)
            || self.status_epoch > 1
            || self.witness_epoch.is_some_and(|e| e > 1)
            || self.west_timeline.is_some_and(|t| t > 2)
            || self.old_primary_alive
    }

    pub fn completed(&self) -> bool {
        self.outcome == TransitionOutcome::Completed.as_str() && self.to == "west"
    }
}

/// One run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunResult {
    pub index: usize,
    pub namespace: String,
    pub pairs: Vec<PairResult>,
    /// Wall-clock time of the kill (Unix seconds) and how long the one `kill -9` took.
    pub kill_at: f64,
    pub kill_spread_ms: f64,
    /// kill → the last pair's last step end (None if some pair never finished).
    pub kill_to_last_done: Option<f64>,
    /// The first pair's done → the last pair's done.
    pub first_to_last_done: Option<f64>,
    /// Every pair Healthy with a measured lag after the controller started, seconds.
    pub healthy_after: f64,
    /// Reconciles, and their p50 / p99, from just before the kill until every pair was done
    /// (the controller's `understudy_reconcile_duration_seconds`, interpolated in its buckets).
    pub reconciles: f64,
    pub reconcile_p50: Option<f64>,
    pub reconcile_p99: Option<f64>,
    /// Controller CPU (% of one core) from the kill until every pair was done, and its RSS then.
    pub controller_cpu_pct: Option<f64>,
    pub controller_rss_mib: Option<f64>,
    /// Writer errors after the kill, summed over pairs.
    pub writer_errors: u64,
    pub controller_log: String,
}

/// What the scenario measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub argv: Vec<String>,
    pub pairs: usize,
    pub runs: usize,
    /// `spec.failover.replication` of every pair.
    pub replication: String,
    pub results: Vec<RunResult>,
    pub failures: Vec<String>,
    pub minutes: f64,
    pub load_at_start: String,
    pub load_at_end: String,
}

/// Runs the scenario; `log` gets a line per step.
pub async fn run(a: &Args, argv: Vec<String>, log: &mut dyn FnMut(String)) -> Report {
    let began = std::time::Instant::now();
    let load_at_start = crate::loadavg();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for i in 0..a.runs {
        log(format!("run {}/{}: {} pairs, every primary killed at once", i + 1, a.runs, a.pairs));
        match run_once(i, a.pairs, a.replication, log).await {
            Ok(r) => {
                let rto = Summary::of(&r.pairs.iter().filter_map(|p| p.rto).collect::<Vec<_>>());
                log(format!(
                    "  run {}: {} of {} Completed; RTO per pair {}; kill → last pair done {}; double promotions {}; lost acked {} of {}",
                    i + 1,
                    r.pairs.iter().filter(|p| p.completed()).count(),
                    r.pairs.len(),
                    rto.map(|s| s.fmt(2, " s")).unwrap_or_else(|| "–".into()),
                    r.kill_to_last_done.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "never".into()),
                    r.pairs.iter().filter(|p| p.double_promotion()).count(),
                    r.pairs.iter().map(|p| p.lost_acked).sum::<usize>(),
                    r.pairs.iter().map(|p| p.acked).sum::<usize>(),
                ));
                for p in r.pairs.iter().filter(|p| !p.anomalies.is_empty()) {
                    log(format!("    {}: {}", p.name, p.anomalies.join("; ")));
                }
                results.push(r);
            }
            Err(e) => {
                log(format!("  run {} FAILED: {e:#}", i + 1));
                failures.push(format!("run {}: {e:#}", i + 1));
            }
        }
    }
    Report {
        argv,
        pairs: a.pairs,
        runs: a.runs,
        replication: a.replication.as_str().into(),
        results,
        failures,
        minutes: began.elapsed().as_secs_f64() / 60.0,
        load_at_start,
        load_at_end: crate::loadavg(),
    }
}

/// Pair `i` on `pg`: bare (nothing to rewrite, recycle or flip), its own Secrets, `us::FAILOVER`,
/// its epoch in the shared `witness` (Automatic requires one; as on the single-pair bench's bed).
fn pair(i: usize, pg: &PgPair, witness: &Witness, replication: understudy::crd::ReplicationMode) -> Pair {
    let failover = move |f| us::failover(f).replication(replication);
    Pair::on_prefixed(&name(i), pg, &prefix(i)).failover(failover).set_witness(Some(EtcdWitness {
        endpoints: vec![witness.endpoint.clone()],
        prefix: WITNESS_PREFIX.into(),
        tls_secret: None,
        auth_secret: None,
        lease_ttl: duration("10s"),
    }))
}

/// The witness's key prefix: pair `<name>` of namespace `<ns>` keeps its epoch at
/// `<prefix>/<ns>/<name>/epoch`.
const WITNESS_PREFIX: &str = "/understudy";

/// Pair `i`'s Secrets' prefix (every PostgreSQL pair has its own password).
fn prefix(i: usize) -> String {
    format!("m{i}-")
}

fn name(i: usize) -> String {
    format!("mass-{i:03}")
}

/// One run: start, kill, measure, tear down.
async fn run_once(
    index: usize,
    n: usize,
    replication: understudy::crd::ReplicationMode,
    log: &mut dyn FnMut(String),
) -> Result<RunResult> {
    let binary = crate::footprint::release_binary()?;
    log(format!("  starting {n} PostgreSQL pairs ({START_CONCURRENCY} at a time)"));
    let t0 = std::time::Instant::now();
    let started: Vec<Result<PgPair>> = futures::stream::iter(0..n)
        .map(|i| async move {
            tokio::task::spawn_blocking(move || PgPair::start(&format!("mass{index}-{i}")))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.with_context(|| format!("PostgreSQL pair {i}")))
        })
        .buffered(START_CONCURRENCY)
        .collect()
        .await;
    let mut pgs = Vec::with_capacity(n);
    for r in started {
        pgs.push(r?);
    }
    let witness = tokio::task::spawn_blocking(Witness::start).await??;
    log(format!("  {n} PostgreSQL pairs streaming after {:.0} s", t0.elapsed().as_secs_f64()));

    let client = support::client_with_crd().await?;
    let cp = support::control_plane();
    let ns = support::namespace(&client, "bench-mass").await?;
    for (i, pg) in pgs.iter().enumerate() {
        support::pair_secrets_prefixed(&client, &ns, pg, &prefix(i)).await?;
        pair(i, pg, &witness, replication).create(&client, &ns).await?;
    }
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);

    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let ctl_log = dir.join(format!("mass-failover-run{}-controller.log", index + 1));
    let _ = std::fs::remove_file(&ctl_log);
    // `synchronous_standby_names` is kept by the controller acting on the primary's site: under a
    // synchronous mode the one controller runs without `--site` (acting on both; no leader key).
    let sync = !replication.is_async();
    let site = (!sync).then_some("west");
    let (mut ctl, metrics_port) =
        crate::footprint::spawn_controller_at(&binary, &ns, &cp.kubeconfig, &ctl_log, site)?;
    let t_ctl = std::time::Instant::now();
    // Under Sync or SyncPreferred, also committing synchronously as observed: before that the guard
    // rightly refuses to promote a standby that was not the synchronous one (NotSynchronous).
    let ready = |d: &DisasterRecoveryPair| {
        d.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Healthy) && s.replication_lag_bytes.is_some())
            && (!sync
                || support::condition(d, understudy::crd::conditions::SYNCHRONOUS_REPLICATION)
                    .is_some_and(|(status, _, _)| status == understudy::crd::ConditionStatus::True))
    };
    let wait = Duration::from_secs(60 + 3 * n as u64);
    support::wait_for(
        &format!(
            "all {n} pairs Healthy with a measured lag{}",
            if sync { ", committing synchronously" } else { "" }
        ),
        wait,
        || async {
            Ok(api.list(&ListParams::default()).await?.items.iter().filter(|d| ready(d)).count() >= n)
        },
    )
    .await
    .with_context(|| format!("controller log tail:\n{}", ctl.tail(20)))?;
    let healthy_after = t_ctl.elapsed().as_secs_f64();
    log(format!(
        "  all {n} pairs Healthy with a measured lag {healthy_after:.1} s after the controller started"
    ));

    let mut writers = Vec::with_capacity(n);
    for pg in &pgs {
        writers.push(
            Workload::start(
                "127.0.0.1",
                pg.primary.port,
                "postgres",
                &pg.user,
                &pg.password,
                TABLE,
                us::WRITE_EVERY,
            )
            .await?,
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    support::wait_for("every writer to commit", Duration::from_secs(30), || async {
        Ok(writers.iter().all(|w| w.acked() > 20))
    })
    .await?;
    let acked_before: usize = writers.iter().map(Workload::acked).sum();
    let errors_before: u64 = writers.iter().map(|w| w.stats().errors).sum();
    log(format!("  {n} writers committed {acked_before} rows; killing every primary postmaster at once"));

    let h0 = tokio::task::block_in_place(|| crate::footprint::reconcile_histogram(metrics_port))?;
    let cpu0 = cpu_seconds(ctl.pid())?;
    let pids: Vec<String> = pgs.iter().map(|p| p.primary.pid().to_string()).collect();
    // A shell started beforehand sends every SIGKILL (its kill builtin) as soon as it reads a line, so
    // the kill is not delayed by a fork and exec on the loaded machine.
    let mut killer = Command::new("sh")
        .args(["-c", &format!("read go && kill -9 {}", pids.join(" "))])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("start the killer shell")?;
    let mut go = killer.stdin.take().context("the killer's stdin")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = Mark::now();
    {
        use std::io::Write as _;
        go.write_all(b"go\n").context("tell the killer")?;
        drop(go);
    }
    let st = killer.wait().context("kill -9 the primaries")?;
    let kill_spread_ms = kill.mono.elapsed().as_secs_f64() * 1000.0;
    if !st.success() {
        log(format!("  kill -9 {} exited {st}", pids.join(" ")));
    }
    // Reap the postmasters and wait for their ports to close (the orphaned backends exit).
    tokio::task::block_in_place(|| pgs.iter_mut().for_each(|p| p.primary.kill9()));

    let finished = |d: &DisasterRecoveryPair| {
        d.status.as_ref().and_then(|s| s.last_transition.as_ref()).is_some_and(|t| t.finished_at.is_some())
    };
    // Polled every 500 ms (the figures come from the journals, not from this poll), so that the
    // bench's own reads weigh little on the API server the controller is writing to.
    let deadline = kill.mono + Duration::from_secs(120);
    let done = loop {
        match api.list(&ListParams::default()).await {
            Ok(l) if l.items.iter().filter(|d| finished(d)).count() >= n => break Ok(()),
            _ if std::time::Instant::now() > deadline => {
                break Err(anyhow::anyhow!("not every one of the {n} transitions finished within 120 s"))
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let seen_done = kill.mono.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(ctl.pid()).ok();
    let rss = rss_mib(ctl.pid()).ok();
    let h1 = tokio::task::block_in_place(|| crate::footprint::reconcile_histogram(metrics_port)).ok();
    match &done {
        Ok(()) => log(format!("  every transition finished (seen {seen_done:.1} s after the kill)")),
        Err(e) => log(format!("  {e:#}")),
    }
    let mut stats = Vec::with_capacity(n);
    for w in writers {
        stats.push(w.stop().await);
    }
    let list = api.list(&ListParams::default()).await?;
    let by_name: BTreeMap<String, DisasterRecoveryPair> =
        list.items.into_iter().map(|d| (d.metadata.name.clone().unwrap_or_default(), d)).collect();

    let mut pairs = Vec::with_capacity(n);
    for (i, (pg, st)) in pgs.iter().zip(&stats).enumerate() {
        let drp = by_name.get(&name(i));
        let present = tokio::task::block_in_place(|| pg.standby.ids(TABLE)).unwrap_or_default();
        let west_timeline = tokio::task::block_in_place(|| pg.standby.timeline()).ok();
        let old_alive =
            pg.primary.pid() != 0 || std::net::TcpStream::connect(("127.0.0.1", pg.primary.port)).is_ok();
        let mut r = pair_result(&name(i), drp, kill.wall, west_timeline, old_alive, &st.acked, &present);
        let key = format!("{WITNESS_PREFIX}/{ns}/{}/epoch", name(i));
        match tokio::task::block_in_place(|| witness.etcdctl(&["get", &key, "--print-value-only"])) {
            Ok(v) => {
                r.witness_epoch = v.split_whitespace().next().and_then(|e| e.parse().ok());
                if r.witness_epoch != Some(1) {
                    r.anomalies.push(format!("witness epoch {:?} ({key} = {:?})", r.witness_epoch, v.trim()));
                }
            }
            Err(e) => r.anomalies.push(format!("witness epoch unread: {e:#}")),
        }
        pairs.push(r);
    }
    let dones: Vec<f64> = pairs.iter().filter_map(|p| p.kill_to_done).collect();
    let all_done = dones.len() == n && done.is_ok();
    let max = dones.iter().copied().reduce(f64::max);
    let min = dones.iter().copied().reduce(f64::min);
    let (reconciles, p50, p99) = match &h1 {
        Some(h1) => (
            h1.1 - h0.1,
            crate::footprint::histogram_quantile(&h0.0, &h1.0, 0.5),
            crate::footprint::histogram_quantile(&h0.0, &h1.0, 0.99),
        ),
        None => (0.0, None, None),
    };
    let result = RunResult {
        index,
        namespace: ns.clone(),
        kill_at: kill.wall,
        kill_spread_ms,
        kill_to_last_done: if all_done { max } else { None },
        first_to_last_done: if all_done { max.zip(min).map(|(a, b)| a - b) } else { None },
        healthy_after,
        reconciles,
        reconcile_p50: p50,
        reconcile_p99: p99,
        controller_cpu_pct: cpu1.map(|c| 100.0 * (c - cpu0) / seen_done),
        controller_rss_mib: rss,
        writer_errors: stats.iter().map(|s| s.errors).sum::<u64>().saturating_sub(errors_before),
        controller_log: ctl_log.display().to_string(),
        pairs,
    };

    // Tear down: the controller, the namespace (no finalizers: its pairs go with it once the
    // control plane's process ends, if not before), the PostgreSQL pairs.
    ctl.stop("TERM", Duration::from_secs(5));
    let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
    tokio::task::block_in_place(|| {
        drop(pgs);
        drop(witness);
    });
    log(format!("  torn down (controller log: {})", ctl_log.display()));
    Ok(result)
}

/// One pair's figures from its journal (`drp`), the promoted server's timeline, whether the old
/// primary came back, and its writer's acks against the ids on the new primary.
fn pair_result(
    name: &str,
    drp: Option<&DisasterRecoveryPair>,
    kill: f64,
    west_timeline: Option<i64>,
    old_primary_alive: bool,
    acked: &[i64],
    present: &[i64],
) -> PairResult {
    let mut r = PairResult {
        name: name.into(),
        west_timeline,
        old_primary_alive,
        lost_acked: lost(acked, present).len(),
        acked: acked.len(),
        ..Default::default()
    };
    let Some(status) = drp.and_then(|d| d.status.as_ref()) else {
        r.anomalies.push("no status".into());
        return r;
    };
    r.status_epoch = status.epoch.0;
    let Some(t) = status.last_transition.as_ref() else {
        let conds: Vec<String> = status
            .conditions
            .iter()
            .filter(|c| c.type_ == conditions::FAILOVER_BLOCKED || c.type_ == conditions::PRIMARY_HEALTHY)
            .map(|c| format!("{} {} {}: {}", c.type_, c.status.as_str(), c.reason, c.message))
            .collect();
        r.anomalies.push(format!("no transition; phase {:?}; {}", status.phase, conds.join("; ")));
        return r;
    };
    r.outcome = t.outcome.map(|o| o.as_str().to_string()).unwrap_or_default();
    r.to = t.to.clone();
    r.transition_epoch = Some(t.epoch.0);
    r.promote_steps = t.steps.iter().filter(|s| s.name == "Promote").count();
    r.rto_seconds = t.rto_seconds;
    r.lost_wal_bytes = t.lost_wal_bytes;
    r.lost_wal_bound = t.lost_wal_bound.map(|b| b.as_str().to_string());
    let started = rfc3339(&t.started_at);
    let take = t
        .steps
        .iter()
        .find(|s| s.name == "TakeEpoch")
        .and_then(|s| s.started_at.as_deref())
        .and_then(rfc3339);
    let last_end = t.steps.iter().filter_map(|s| s.finished_at.as_deref().and_then(rfc3339)).reduce(f64::max);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    r.kill_to_first_failed_probe = diff(started, Some(kill));
    r.detection = diff(take, started);
    r.controller_share = diff(last_end, take);
    if t.finished_at.is_some() {
        r.rto = diff(last_end, started);
        r.kill_to_done = diff(last_end, Some(kill));
    }
    r.steps = t
        .steps
        .iter()
        .map(|s| {
            let d =
                diff(s.finished_at.as_deref().and_then(rfc3339), s.started_at.as_deref().and_then(rfc3339));
            (s.name.clone(), d, s.outcome.map(|o| o.as_str().to_string()).unwrap_or_default())
        })
        .collect();
    if !r.completed() {
        r.anomalies.push(format!(
            "transition to {:?}, outcome {:?}, finished {:?}, phase {:?}",
            t.to, r.outcome, t.finished_at, status.phase
        ));
    }
    if started.is_some_and(|s| s < kill) {
        r.anomalies.push("the transition started before the kill".into());
    }
    if r.double_promotion() {
        r.anomalies.push(format!(
            "second promotion? Promote steps {}, epoch {} (transition {:?}), west timeline {:?}, old primary alive {}",
            r.promote_steps, r.status_epoch, r.transition_epoch, r.west_timeline, r.old_primary_alive
        ));
    }
    if r.west_timeline != Some(2) && r.completed() {
        r.anomalies.push(format!("west's timeline {:?} (2 expected after one promotion)", r.west_timeline));
    }
    r
}

fn summary(v: impl Iterator<Item = f64>) -> Option<Summary> {
    Summary::of(&v.collect::<Vec<_>>())
}

impl Report {
    /// The settings block (what ran, how, on what).
    pub fn settings(&self) -> String {
        let mut o = String::new();
        let args = self.argv.join(" ");
        let _ = writeln!(
            o,
            "command: make bench BENCH_ARGS='{args}'  (= cargo run --release -p understudy-e2e --bin understudy-bench -- {args})"
        );
        let _ = writeln!(
            o,
            "machine: {} cores, shared; all traffic on 127.0.0.1; load average (1/5/15 min) at the start {}, at the end {}; {:.0} min",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            self.load_at_start,
            self.load_at_end,
            self.minutes
        );
        let _ = writeln!(
            o,
            "bed: {} PostgreSQL 15 pairs (PgPair: primary + streaming standby, fsync off, shared_buffers 32MB), one kube-apiserver, one namespace holding one DisasterRecoveryPair per PostgreSQL pair (bare: no DataSource, recycler or DNS; its own Secrets), failover {{ {}, replication: {} }}, coordination.etcd on one witness etcd shared by every pair (its epoch key per pair; leaseTTL 10s, unused: no controller keeps a leader key); one controller: target/release/understudy run --namespace <ns> {} (no leader key kept: each standby promotes as soon as its probes decide)",
            self.pairs,
            us::FAILOVER,
            self.replication,
            if self.replication == "Async" { "--site west" } else { "(no --site: under a synchronous mode the controller acting on the primary's site keeps synchronous_standby_names)" }
        );
        let _ = writeln!(
            o,
            "each run: every pair Healthy with status.replicationLagBytes set; a writer per pair INSERTing straight into its primary every {} ms for 3 s; then one `kill -9` of every primary postmaster; wait (≤ 120 s, polled every 500 ms) until every pair's lastTransition has finishedAt; N={} runs, each on fresh pairs, namespace and controller",
            us::WRITE_EVERY.as_millis(),
            self.runs
        );
        o
    }

    /// The table: a column per run and, with several runs, one over all of them.
    pub fn table(&self) -> Grid {
        let mut head = vec![format!("measurement ({} pairs, every primary SIGKILLed at once)", self.pairs)];
        head.extend(self.results.iter().map(|r| format!("run {}", r.index + 1)));
        let all = self.results.len() > 1;
        if all {
            head.push("all runs".into());
        }
        head.push("goal".into());
        let mut rows: Vec<Vec<String>> = Vec::new();
        let runs: Vec<&RunResult> = self.results.iter().collect();
        let mut row = |m: &str, per: &dyn Fn(&[&RunResult]) -> String, goal: &str| {
            let mut r = vec![m.to_string()];
            for run in &runs {
                r.push(per(std::slice::from_ref(run)));
            }
            if all {
                r.push(per(&runs));
            }
            r.push(goal.into());
            rows.push(r);
        };
        let pairs_of = |rs: &[&RunResult]| -> Vec<PairResult> {
            rs.iter().flat_map(|r| r.pairs.iter().cloned()).collect()
        };
        let per_pair = |f: fn(&PairResult) -> Option<f64>| {
            move |rs: &[&RunResult]| {
                let ps = pairs_of(rs);
                cell(summary(ps.iter().filter_map(f)), 2, " s", ps.len())
            }
        };
        row(
            "pairs Completed (to west) / killed",
            &|rs| {
                format!("{} / {}", pairs_of(rs).iter().filter(|p| p.completed()).count(), pairs_of(rs).len())
            },
            "all",
        );
        row("RTO per pair: first failed probe → last step done (journal) ¹", &per_pair(|p| p.rto), "");
        row("  kill → first failed probe", &per_pair(|p| p.kill_to_first_failed_probe), "");
        row("  first failed probe → failover decided (TakeEpoch start)", &per_pair(|p| p.detection), "");
        row(
            "  failover decided → last step done (the controller's share)",
            &per_pair(|p| p.controller_share),
            "",
        );
        row("kill → pair done (last step end), per pair", &per_pair(|p| p.kill_to_done), "");
        row(
            "kill → the LAST pair done ²",
            &|rs| cell(summary(rs.iter().filter_map(|r| r.kill_to_last_done)), 2, " s", rs.len()),
            "",
        );
        row(
            "first pair done → last pair done",
            &|rs| cell(summary(rs.iter().filter_map(|r| r.first_to_last_done)), 2, " s", rs.len()),
            "",
        );
        let mut steps: Vec<String> = Vec::new();
        for p in self.results.iter().flat_map(|r| &r.pairs) {
            for (s, ..) in &p.steps {
                if !steps.contains(s) {
                    steps.push(s.clone());
                }
            }
        }
        for s in &steps {
            row(
                &format!("  step {s}, per pair"),
                &|rs| {
                    let ps = pairs_of(rs);
                    let d: Vec<f64> = ps
                        .iter()
                        .flat_map(|p| p.steps.iter().filter(|(n, ..)| n == s).filter_map(|(_, d, _)| *d))
                        .collect();
                    cell(Summary::of(&d), 3, " s", ps.len())
                },
                "",
            );
        }
        row(
            "double promotions (pairs) ³",
            &|rs| pairs_of(rs).iter().filter(|p| p.double_promotion()).count().to_string(),
            "0",
        );
        row(
            "lost acknowledged commits: total / acked; pairs losing any ⁴",
            &|rs| {
                let ps = pairs_of(rs);
                format!(
                    "{} / {}; {}",
                    ps.iter().map(|p| p.lost_acked).sum::<usize>(),
                    ps.iter().map(|p| p.acked).sum::<usize>(),
                    ps.iter().filter(|p| p.lost_acked > 0).count()
                )
            },
            "",
        );
        row(
            "lostWalBytes per pair (journal); pairs by lostWalBound",
            &|rs| {
                let ps = pairs_of(rs);
                let mut bounds: BTreeMap<&str, usize> = BTreeMap::new();
                for p in &ps {
                    *bounds.entry(p.lost_wal_bound.as_deref().unwrap_or("none")).or_default() += 1;
                }
                let bounds: Vec<String> = bounds.iter().map(|(b, n)| format!("{b} {n}")).collect();
                format!(
                    "{}; {}",
                    cell(
                        summary(ps.iter().filter_map(|p| p.lost_wal_bytes.map(|b| b as f64))),
                        0,
                        " B",
                        ps.len()
                    ),
                    bounds.join(", ")
                )
            },
            "",
        );
        row(
            "controller reconcile p50 / p99, kill → all done ⁵",
            &|rs| {
                let ms = |v: Option<Summary>| {
                    v.map(|s| format!("{:.1}", s.median * 1000.0)).unwrap_or_else(|| "–".into())
                };
                format!(
                    "{} / {} ms ({} reconciles)",
                    ms(summary(rs.iter().filter_map(|r| r.reconcile_p50))),
                    ms(summary(rs.iter().filter_map(|r| r.reconcile_p99))),
                    rs.iter().map(|r| r.reconciles).sum::<f64>()
                )
            },
            "",
        );
        row(
            "controller CPU, kill → all done; RSS after",
            &|rs| {
                format!(
                    "{} % of a core; {} MiB",
                    cell(summary(rs.iter().filter_map(|r| r.controller_cpu_pct)), 0, "", rs.len()),
                    cell(summary(rs.iter().filter_map(|r| r.controller_rss_mib)), 0, "", rs.len())
                )
            },
            "",
        );
        row(
            "pairs Healthy with a lag after the controller started",
            &|rs| cell(summary(rs.iter().map(|r| r.healthy_after)), 1, " s", rs.len()),
            "",
        );
        row(
            "the kill: the waiting shell told to kill -9 → it exited",
            &|rs| cell(summary(rs.iter().map(|r| r.kill_spread_ms)), 1, " ms", rs.len()),
            "",
        );
        row("failed runs (not in the figures)", &|_| self.failures.len().to_string(), "0");
        Grid { head, rows, notes: NOTES.into() }
    }

    /// Prints the table and writes `target/bench/mass-failover.{md,json}`.
    pub fn write(&self) -> Result<String> {
        let anomalies: Vec<String> = self
            .results
            .iter()
            .flat_map(|r| {
                r.pairs
                    .iter()
                    .filter(|p| !p.anomalies.is_empty())
                    .map(move |p| format!("run {} {}: {}", r.index + 1, p.name, p.anomalies.join("; ")))
            })
            .chain(self.failures.iter().cloned())
            .collect();
        crate::measure::write_report(
            "mass-failover",
            "mass failover",
            &self.settings(),
            |md, text| self.table().render(md, text),
            &[("anomalies and failures", anomalies)],
            self,
        )
    }
}

/// Footnotes of the table.
const NOTES: &str = "figures over pairs are median (min–max), n= when fewer pairs than killed have one; \"all runs\" pools every pair of every run.\n\
¹ from the pair's own journal (`lastTransition`): startedAt (the first failed probe) → the latest step finishedAt, as the single-pair bench's RTO (bare pairs: the last step is VerifyWritable or the no-op moves after it).\n\
² the kill's wall-clock time (taken just before a waiting shell is told to run the one `kill -9`) → the latest step finishedAt over every pair; \"never\"/– when some pair had not finished within 120 s.\n\
³ a pair counts when its journal holds more than one Promote step, its epoch (status, transition or witness) passed 1, the promoted server's timeline passed 2, or the killed primary's postmaster or port was alive after the run.\n\
⁴ every id a pair's writer had acknowledged (straight from its primary, before and after the kill: orphaned backends may commit until they notice the postmaster's death), looked up on its promoted standby after the run; under `replication: Async` a few may be missing (`lostWalBound: AtLeast`); under `Sync` none may.\n\
⁵ the controller's `understudy_reconcile_duration_seconds` histogram scraped just before the kill and once every transition finished, interpolated within its buckets.\n";
