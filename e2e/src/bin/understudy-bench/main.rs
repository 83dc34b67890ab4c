//! `make bench`: understudy's failover (RTO, RPO, per-step timing) and the controller's footprint,
//! side by side with Patroni doing the same kill on an identical PostgreSQL 15 pair, printed as one
//! table of `median (min–max)` over N runs, and written as JSON and Markdown under `target/bench/`.
//!
//! Planned switchovers are measured the same way for understudy and `patronictl switchover`, interleaved,
//! in a table of their own.
//!
//! Failovers are measured twice for understudy: with one controller (the standby site's, so no leader
//! key is kept) and with one controller per site (`two-site`: the primary site keeps the leader key
//! on an etcd lease of `leaseTTL`, and the standby promotes only after it is gone), for each
//! `--lease-ttls` value, both for a postmaster SIGKILL and a node loss.
//!
//! Flags (`--help` explains each): `--runs N` (10), `--pairs N` (1000), `--lease-ttls 10,4` (seconds),
//! `--skip-patroni`, `--skip-failover`, `--skip-two-site`, `--skip-switchover`, `--skip-footprint`,
//! `--only failover,two-site,switchover,footprint` (any subset; `two-site` alone runs the two-site
//! understudy failovers and Patroni's (a) and (b), not (a′) nor the one-controller runs).
//!
//! Scenarios run on their own, as subcommands: `two-cluster` (two Kubernetes clusters, the whole
//! site lost and back), `sync-cost` (what `replication: Sync` costs) and `mass-failover --pairs N
//! --runs N` (N PostgreSQL pairs, one DisasterRecoveryPair each, one controller; every primary
//! postmaster SIGKILLed at once: RTO per pair, the kill → the last pair done, double promotions and
//! lost acknowledged commits; `target/bench/mass-failover.{md,json}`).

use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use understudy_e2e::sandbox::repo_root;

mod footprint;
mod loaded_failover;
mod mass_failover;
mod measure;
mod patroni;
mod switchover;
mod sync_cost;
mod table;
mod two_cluster;
mod two_site;
mod understudy_failover;

use footprint::Footprint;
use patroni::{Scenario, Timing, SCENARIOS};
use understudy_failover::{self as us, Topology};

/// The bench's command line (`make bench BENCH_ARGS='…'`).
#[derive(Parser, Debug)]
#[command(
    name = "understudy-bench",
    about = "understudy's failovers, planned switchovers and footprint on the real sandbox, side by side \
             with Patroni; tables on stdout and in target/bench/bench.{md,json}",
    after_help = "Examples: make bench BENCH_ARGS='--runs 2 --pairs 50'; '--only switchover'; \
                  '--only two-site --lease-ttls 10,4'; '--runs 10 --skip-patroni'; \
                  'two-cluster --runs 10 --lease-ttls 4,10'; 'mass-failover --pairs 20 --runs 3'",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// A scenario of its own instead of the default parts (the flags below are then not used).
    #[command(subcommand)]
    command: Option<Command>,
    /// Runs of each configuration (failover topologies, Patroni configurations and switchovers); each
    /// failover run is on a fresh sandbox.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one())]
    runs: usize,
    /// Pairs created for the footprint's loaded window (all on one sandbox PostgreSQL pair).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = at_least_one())]
    pairs: usize,
    /// Leader-key lease TTLs measured by the two-site failovers, in seconds (`10` or `10s`), each
    /// 4..300 (leaseTTL ≥ 4 × the measured pair's probeTimeout of 1 s). The default: Patroni's
    /// aggressive `ttl`, and the least that probeTimeout allows.
    #[arg(
        long,
        value_name = "SECONDS,…",
        value_delimiter = ',',
        default_value = "10,4",
        value_parser = lease_ttl
    )]
    lease_ttls: Vec<u32>,
    /// Measure understudy alone: no Patroni runs (nor Patroni's installation).
    #[arg(long)]
    skip_patroni: bool,
    /// Skip the one-controller failovers (and Patroni's (a′) restart in place).
    #[arg(long)]
    skip_failover: bool,
    /// Skip the failovers with one controller per site.
    #[arg(long)]
    skip_two_site: bool,
    /// Two-site failovers: give east the sandbox's site fence hook (examples/fence-hooks/sandbox-local.sh),
    /// so that a dead postmaster's key is released once the hook confirms instead of expiring.
    #[arg(long)]
    fence_hook: bool,
    /// Two-site failovers: only (a), the postmaster SIGKILL (the other kills take east's controller
    /// down or away, so no fence hook could run).
    #[arg(long)]
    postmaster_only: bool,
    /// Two-site failovers: only these kills (comma-separated: postmaster, node-loss, black-hole),
    /// each beside Patroni's same kill; the default is all three.
    #[arg(long, value_enum, value_delimiter = ',')]
    kills: Vec<us::SiteKill>,
    /// Skip the planned switchovers.
    #[arg(long)]
    skip_switchover: bool,
    /// Skip the controller's footprint (RSS, CPU and API requests at 1 and --pairs pairs).
    #[arg(long)]
    skip_footprint: bool,
    /// Run only these parts (any subset; a --skip-… flag still skips its part). `two-site` alone runs
    /// the two-site understudy failovers and Patroni's (a), (b) and (c), not (a′) nor the one-controller
    /// runs.
    #[arg(long, value_name = "PART,…", value_delimiter = ',')]
    only: Option<Vec<Part>>,
}

/// Scenarios run on their own (not part of the default run).
#[derive(Subcommand, Debug)]
enum Command {
    /// Two sites, two Kubernetes clusters: the whole serving site lost and brought back, alternating
    /// east → west and west → east on one bed per leaseTTL; site loss → DNS confirmed and → first
    /// write, writes accepted by the returning site, the serving site's disturbance, the returning
    /// cluster's convergence (target/bench/two-cluster.{md,json}).
    TwoCluster(two_cluster::Args),
    /// One pair's failover while the controller probes `--pairs − 1` others every second, interleaved
    /// with the pair alone (target/bench/loaded-failover.{md,json}).
    LoadedFailover(loaded_failover::Args),
    /// What `replication: Sync` costs against `Async`: pgbench through PgBouncer, 1 and 8 clients,
    /// interleaved rounds, medians of transactions per second and average latency.
    SyncCost(sync_cost::Args),
    /// Many pairs, one controller: every primary postmaster SIGKILLed at once; RTO per pair, the
    /// kill → the last pair done, double promotions and lost acknowledged commits
    /// (target/bench/mass-failover.{md,json}).
    MassFailover(mass_failover::Args),
}

/// A part of the bench, for `--only`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Failovers with one controller (the standby site's), next to Patroni's.
    Failover,
    /// Failovers with one controller per site (the leader key on an etcd lease).
    TwoSite,
    /// Planned switchovers, next to `patronictl switchover`.
    Switchover,
    /// The controller's footprint.
    Footprint,
}

/// A count of at least 1.
pub(crate) fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// A `--lease-ttls` value: whole seconds, `s` allowed, within 4..300.
fn lease_ttl(v: &str) -> Result<u32, String> {
    let t: u32 =
        v.trim().trim_end_matches('s').parse().map_err(|e| format!("{v:?} is not whole seconds: {e}"))?;
    // leaseTTL ≥ 4 × probeTimeout (1 s in the measured pair), and the CRD's 2 s..5 m.
    if !(4..=300).contains(&t) {
        return Err(format!("{t} s is outside 4..300 s (leaseTTL ≥ 4 × probeTimeout 1 s)"));
    }
    Ok(t)
}

/// What runs, as the command line asked.
struct Args {
    runs: usize,
    pairs: usize,
    skip_patroni: bool,
    skip_footprint: bool,
    skip_switchover: bool,
    skip_failover: bool,
    skip_two_site: bool,
    lease_ttls: Vec<u32>,
    fence_hook: bool,
    /// The two-site kills measured (`--kills`; `--postmaster-only` is `--kills postmaster`).
    kills: Vec<us::SiteKill>,
}

impl From<Cli> for Args {
    fn from(c: Cli) -> Args {
        let skip = |part: Part, flag: bool| flag || c.only.as_ref().is_some_and(|only| !only.contains(&part));
        Args {
            runs: c.runs,
            pairs: c.pairs,
            skip_patroni: c.skip_patroni,
            skip_failover: skip(Part::Failover, c.skip_failover),
            skip_two_site: skip(Part::TwoSite, c.skip_two_site) || c.lease_ttls.is_empty(),
            skip_switchover: skip(Part::Switchover, c.skip_switchover),
            skip_footprint: skip(Part::Footprint, c.skip_footprint),
            lease_ttls: c.lease_ttls,
            fence_hook: c.fence_hook,
            kills: match (c.postmaster_only, c.kills.is_empty()) {
                (true, _) => vec![us::SiteKill::Postmaster],
                (false, true) => us::SiteKill::ALL.to_vec(),
                (false, false) => c.kills,
            },
        }
    }
}

fn say(s: String) {
    eprintln!("[bench {}] {s}", jiff::Timestamp::now().strftime("%H:%M:%S"));
}

/// The Patroni configurations measured: (timing label, timing, scenario).
type Config = (&'static str, Timing, Scenario);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::SyncCost(sc)) = &cli.command {
        let sc = sc.clone();
        return tokio::task::spawn_blocking(move || sync_cost::run(&sc)).await?;
    }
    if let Some(Command::LoadedFailover(lf)) = &cli.command {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut log = say;
        let report = loaded_failover::run(lf, argv, &mut log).await?;
        println!("{}", report.write()?);
        if !report.failures.is_empty() {
            anyhow::bail!("{} loaded-failover run(s) failed", report.failures.len());
        }
        return Ok(());
    }
    if let Some(Command::TwoCluster(tc)) = &cli.command {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut log = say;
        let report = two_cluster::run(tc, argv, &mut log).await;
        println!("{}", report.write()?);
        if !report.failures.is_empty() {
            anyhow::bail!("{} two-cluster run(s) failed", report.failures.len());
        }
        return Ok(());
    }
    if let Some(Command::MassFailover(mf)) = &cli.command {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut log = say;
        let report = mass_failover::run(mf, argv, &mut log).await;
        println!("{}", report.write()?);
        if !report.failures.is_empty() {
            anyhow::bail!("{} mass-failover run(s) failed", report.failures.len());
        }
        return Ok(());
    }
    let a = Args::from(cli);
    let began = Instant::now();
    let load_at_start = loadavg();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut patroni_version = String::new();
    if !a.skip_patroni {
        let out = tokio::task::spawn_blocking(patroni::ensure_installed).await??;
        patroni_version = out.trim().to_string();
        say(patroni_version.clone());
    }
    let mut aggressive = Timing::AGGRESSIVE;
    let mut aggressive_note = String::from("accepted");

    let mut us_runs: Vec<us::Run> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut two_runs: BTreeMap<String, Vec<us::Run>> = BTreeMap::new();
    let mut pat_runs: BTreeMap<String, Vec<patroni::Run>> = BTreeMap::new();
    let failover_rounds = if a.skip_failover && a.skip_two_site { 0 } else { a.runs };
    // One controller (unless skipped), then one controller per site for each lease TTL and kill.
    let mut topologies: Vec<Topology> = Vec::new();
    if !a.skip_failover {
        topologies.push(Topology::Single);
    }
    if !a.skip_two_site {
        for &ttl in &a.lease_ttls {
            for kill in us::SiteKill::ALL {
                if !a.kills.contains(&kill) {
                    continue;
                }
                topologies.push(Topology::TwoSite { lease_ttl_s: ttl, kill });
            }
        }
    }
    for i in 0..failover_rounds {
        for (j, topo) in topologies.iter().enumerate() {
            let key = topo.key();
            say(format!("round {}/{}: understudy {key}", i + 1, a.runs));
            match us::run_once(&format!("bench{i}x{j}"), *topo, a.fence_hook).await {
                Ok(r) => {
                    say(format!(
                        "  understudy {key}: kill→write {:.2}s, kill→decided {:.2}s, kill→key gone {:.2}s, RTO {:.2}s, lost acked {}",
                        r.kill_to_write.unwrap_or(f64::NAN),
                        r.kill_to_decision.unwrap_or(f64::NAN),
                        r.kill_to_key_gone.unwrap_or(f64::NAN),
                        r.rto.unwrap_or(f64::NAN),
                        r.lost_acked
                    ));
                    if *topo == Topology::Single {
                        us_runs.push(r);
                    } else {
                        two_runs.entry(key).or_default().push(r);
                    }
                }
                Err(e) => {
                    say(format!("  understudy {key} run {} FAILED: {e:#}", i + 1));
                    failures.push(format!("understudy {key} run {}: {e:#}", i + 1));
                }
            }
        }
        if a.skip_patroni {
            continue;
        }
        // (a′), Patroni restarting in place, belongs to the one-controller table only.
        let configs: Vec<Config> = [("defaults", Timing::DEFAULTS), ("aggressive", aggressive)]
            .into_iter()
            .flat_map(|(l, t)| SCENARIOS.iter().map(move |s| (l, t, *s)))
            .filter(|(_, _, s)| !a.skip_failover || s.key != "a-restart")
            // The black-holed node belongs to the two-site table only.
            .filter(|(_, _, s)| !a.skip_two_site || s.key != "c-black-hole")
            // With the two-site kills narrowed (and no one-controller table), Patroni's others too.
            .filter(|(_, _, s)| {
                !a.skip_failover || a.skip_two_site || a.kills.iter().any(|k| k.patroni() == s.kill)
            })
            .collect();
        for (label, timing, scenario) in configs {
            let key = format!("{label}/{}", scenario.key);
            say(format!("round {}/{}: Patroni {key} ({})", i + 1, a.runs, timing.label()));
            let mut res = patroni::run_once(timing, scenario).await;
            // The most aggressive timing this Patroni accepts: fall back once if it is refused.
            if label == "aggressive"
                && i == 0
                && aggressive.ttl == Timing::AGGRESSIVE.ttl
                && res.as_ref().map_or(true, |r| !r.timing_accepted)
            {
                aggressive_note = format!(
                    "ttl 10 / loop_wait 1 / retry_timeout 4 refused ({}); fell back",
                    res.as_ref()
                        .err()
                        .map(|e| format!("{e:#}"))
                        .unwrap_or_else(|| "not echoed by GET /config".into())
                );
                aggressive = Timing::AGGRESSIVE_FALLBACK;
                res = patroni::run_once(aggressive, scenario).await;
            }
            match res {
                Ok(r) => {
                    say(format!(
                        "  Patroni {key}: kill→write {:.2}s on {}, decision {:?}",
                        r.kill_to_write.unwrap_or(f64::NAN),
                        r.new_primary,
                        r.decision_line
                    ));
                    pat_runs.entry(key).or_default().push(r);
                }
                Err(e) => {
                    say(format!("  Patroni {key} run {} FAILED: {e:#}", i + 1));
                    failures.push(format!("Patroni {key} run {}: {e:#}", i + 1));
                }
            }
        }
    }

    let sw = if a.skip_switchover {
        None
    } else {
        say(format!(
            "switchovers: {} rounds, interleaved (understudy{})",
            a.runs,
            if a.skip_patroni { "" } else { ", Patroni via PgBouncer, Patroni multi-host" }
        ));
        let mut log = say;
        Some(switchover::run(a.runs, !a.skip_patroni, &mut log, &mut failures).await)
    };

    let fp = if a.skip_footprint {
        None
    } else {
        let mut log = say;
        match footprint::run(a.pairs, &mut log).await {
            Ok(f) => Some(f),
            Err(e) => {
                say(format!("footprint FAILED: {e:#}"));
                failures.push(format!("footprint: {e:#}"));
                None
            }
        }
    };

    let report = Report {
        a: &a,
        argv,
        us: &us_runs,
        two: &two_runs,
        pat: &pat_runs,
        fp: fp.as_ref(),
        sw: sw.as_ref(),
        aggressive,
        aggressive_note,
        patroni_version,
        failures: &failures,
        load_at_start,
    };
    let (md, table) = report.render();
    println!("{table}");
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench.md"), &md)?;
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&report.json(&table))?)?;
    println!(
        "written: {} and {} ({:.0} min)",
        dir.join("bench.md").display(),
        dir.join("bench.json").display(),
        began.elapsed().as_secs_f64() / 60.0
    );
    if !failures.is_empty() {
        println!("{} run(s) failed:", failures.len());
        for f in &failures {
            println!("  - {}", f.lines().next().unwrap_or_default());
        }
    }
    Ok(())
}

struct Report<'a> {
    a: &'a Args,
    argv: Vec<String>,
    us: &'a [us::Run],
    two: &'a BTreeMap<String, Vec<us::Run>>,
    pat: &'a BTreeMap<String, Vec<patroni::Run>>,
    fp: Option<&'a Footprint>,
    sw: Option<&'a switchover::Report>,
    aggressive: Timing,
    aggressive_note: String,
    patroni_version: String,
    failures: &'a [String],
    load_at_start: String,
}

impl Report<'_> {
    fn settings(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "command: make bench BENCH_ARGS='{}'  (= cargo run --release -p understudy-e2e --bin understudy-bench -- {})", self.argv.join(" "), self.argv.join(" "));
        let _ = writeln!(
            o,
            "machine: {} cores, shared; all traffic on 127.0.0.1; load average (1/5/15 min) at the start {}, at the end {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            self.load_at_start,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !self.patroni_version.is_empty() {
            let _ = writeln!(o, "Patroni: {}; DCS etcd3 (Debian etcd-server, own instance per cluster); 2 members, PostgreSQL 15 with the sandbox's settings (fsync off, wal_keep_size 512MB, shared_buffers 32MB, max_connections 200, hot_standby_feedback on, wal_log_hints on); use_pg_rewind false, use_slots true, maximum_lag_on_failover 16MiB, watchdog off", self.patroni_version);
        }
        if let Some(sw) = self.sw {
            let _ = writeln!(
                o,
                "switchover runs: N={} rounds{}; figures are median (min–max){}",
                self.a.runs,
                if self.a.skip_patroni {
                    ""
                } else {
                    ", interleaved (understudy switchover i, then Patroni's for each client path)"
                },
                if sw.failed.is_empty() { String::new() } else { format!("; failed: {:?}", sw.failed) }
            );
            o.push_str(&switchover::settings(!self.a.skip_patroni));
        }
        if self.a.skip_failover && self.a.skip_two_site {
            return self.footprint_settings(o);
        }
        let _ = writeln!(o, "failover runs: N={} per configuration, interleaved (understudy run i of each topology, then each Patroni configuration run i); each run on a fresh sandbox; figures are median (min–max)", self.a.runs);
        let _ = writeln!(o, "understudy: pair spec.failover {{ {} }}; controller = target/release/understudy as a process (bed.controller_process, --site west); Workload INSERT through PgBouncer (transaction pooling) every 20 ms; kill = SIGKILL of the primary postmaster; first write = first ack after the kill and after the Promote step started", us::FAILOVER);
        let _ = writeln!(o, "understudy full pair: DataSource ConfigMap+Secret, PgBouncer/HTTP/rollout recycle, RFC 2136 DNS + DNSEndpoint, etcd witness epoch (e2e/src/bed.rs Bed::pair)");
        if !self.a.skip_two_site {
            o.push_str(&two_site::settings(&self.a.lease_ttls));
            if self.a.fence_hook {
                o.push_str("two-site fence hook: east's spec.sites[*].fenceHook = examples/fence-hooks/sandbox-local.sh --data <east's data dir> (timeout 10s): no process of the data directory left, standby.signal armed; on exit 0 east's keeper releases the key at once\n");
            }
        }
        if !self.patroni_version.is_empty() {
            let _ = writeln!(
                o,
                "Patroni defaults: {}; aggressive: {} ({})",
                Timing::DEFAULTS.label(),
                self.aggressive.label(),
                self.aggressive_note
            );
            let _ = writeln!(o, "Patroni scenarios: (a) kill -KILL <postmaster> with primary_start_timeout 0 (fails over); {}(b) kill -KILL <patroni> and <postmaster>", if self.a.skip_failover { "" } else { "(a′) same with primary_start_timeout 300 (default: restarts in place); " });
            let _ = writeln!(o, "Patroni client: INSERT every 50 ms, DSN {}, reconnect after any error; a write counts when a server other than the killed postmaster acked it (inet_server_port(), pg_postmaster_start_time())", patroni::CLIENT_DSN);
        }
        self.footprint_settings(o)
    }

    fn footprint_settings(&self, mut o: String) -> String {
        if let Some(f) = self.fp {
            let _ = writeln!(o, "footprint: controller {} (release) --namespace <ns>; {} pairs created through kube-apiserver (all on one sandbox PostgreSQL pair, max_connections {}; the controller shares one probe connection per server and login, and one state query per server, login and timeout among the probes that start within 100 ms: pairs on distinct servers would each send their own), spec.failover {{ {} }}; 30 s windows; RSS = VmRSS, CPU = utime+stime from /proc; API requests from kube-apiserver /metrics apiserver_request_total for disasterrecoverypairs, secrets, events (the bench sends none during the window); created in {:.0} s, {} pairs with a status after {}", f.binary, f.loaded.pairs, f.max_connections, footprint::FAILOVER, f.create_seconds, f.observed, f.all_observed_seconds.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "180 s (not all)".into()));
        }
        o
    }

    fn render(&self) -> (String, String) {
        let settings = self.settings();
        let mut text = String::from("== understudy bench\n");
        text.push_str(&settings);
        let mut md = format!("# understudy bench\n\n```\n{settings}```\n");
        let runs = table::Runs {
            runs: self.a.runs,
            us: self.us,
            two: self.two,
            pat: self.pat,
            aggressive: self.aggressive,
        };
        if let Some(t) = runs.failover(!self.a.skip_failover, self.fp) {
            t.render(&mut md, &mut text);
        }
        if !self.a.skip_two_site {
            runs.two_site(&self.a.lease_ttls).render(&mut md, &mut text);
        }
        if let Some(sw) = self.sw {
            table::switchover(sw, self.a.runs, !self.a.skip_patroni).render(&mut md, &mut text);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(text, "failed runs (not in the figures): {}", self.failures.len());
            let _ = writeln!(md, "\nfailed runs (not in the figures): {}", self.failures.len());
        }
        (md, text)
    }

    fn json(&self, table: &str) -> serde_json::Value {
        serde_json::json!({
            "argv": self.argv,
            "runs": self.a.runs,
            "pairs": self.a.pairs,
            "settings": self.settings(),
            "table": table,
            "understudy": { "failover": us::FAILOVER, "runs": self.us },
            "understudy_two_site": { "lease_ttls": self.a.lease_ttls, "fence_hook": self.a.fence_hook, "runs": self.two },
            "switchover": self.sw,
            "patroni": {
                "version": self.patroni_version,
                "defaults": Timing::DEFAULTS,
                "aggressive": self.aggressive,
                "aggressive_note": self.aggressive_note,
                "runs": self.pat,
            },
            "footprint": self.fp,
            "failures": self.failures,
        })
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    fn args(argv: &[&str]) -> Result<super::Args, clap::Error> {
        super::Cli::try_parse_from(["understudy-bench"].iter().chain(argv)).map(super::Args::from)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn flags_mean_what_they_meant() -> Result<(), clap::Error> {
        let a = args(&[])?;
        assert_eq!((a.runs, a.pairs, a.lease_ttls.as_slice()), (10, 1000, &[10, 4][..]));
        assert!(
            !(a.skip_patroni || a.skip_failover || a.skip_two_site || a.skip_switchover || a.skip_footprint)
        );

        let a = args(&["--runs", "2", "--pairs", "50", "--skip-patroni", "--skip-footprint"])?;
        assert_eq!((a.runs, a.pairs, a.skip_patroni, a.skip_footprint), (2, 50, true, true));
        assert!(!(a.skip_failover || a.skip_two_site || a.skip_switchover));

        let a = args(&["--only", "switchover"])?;
        assert!(
            a.skip_failover && a.skip_two_site && a.skip_footprint && !a.skip_switchover && !a.skip_patroni
        );

        let a = args(&["--only", "two-site", "--lease-ttls", "10s, 4"])?;
        assert!(a.skip_failover && !a.skip_two_site && a.skip_switchover && a.skip_footprint);
        assert_eq!(a.lease_ttls, [10, 4]);

        use super::us::SiteKill::{BlackHole, Node, Postmaster};
        assert_eq!(a.kills, [Postmaster, Node, BlackHole], "every kill unless narrowed");
        assert_eq!(args(&["--postmaster-only"])?.kills, [Postmaster]);
        assert_eq!(args(&["--kills", "black-hole"])?.kills, [BlackHole]);
        assert_eq!(args(&["--kills", "node-loss,black-hole"])?.kills, [Node, BlackHole]);

        let a = args(&["--only", "failover,two-site", "--runs", "5", "--skip-two-site"])?;
        assert!(!a.skip_failover && a.skip_two_site && a.skip_switchover && a.skip_footprint);

        for bad in [
            &["--runs", "0"][..],
            &["--pairs", "x"],
            &["--lease-ttls", "3"],
            &["--lease-ttls", "301"],
            &["--lease-ttls", "ten"],
            &["--only", "failover,bogus"],
            &["--kills", "postmaster,meteor"],
            &["--skip-everything"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} is refused");
        }
        Ok(())
    }
    #[test]
    fn the_two_cluster_scenario_is_a_subcommand_of_its_own() {
        use clap::Parser as _;
        let parse = |argv: &[&str]| super::Cli::try_parse_from(["understudy-bench"].iter().chain(argv));
        let cli = parse(&[]).expect("no arguments");
        assert!(cli.command.is_none());
        let tc = |argv: &[&str]| match parse(argv).map(|c| c.command) {
            Ok(Some(super::Command::TwoCluster(a))) => Ok(a),
            Ok(Some(other)) => panic!("{argv:?}: {other:?}"),
            Ok(None) => panic!("{argv:?}: no subcommand"),
            Err(e) => Err(e),
        };
        match parse(&["sync-cost", "--secs", "5"]).map(|c| c.command) {
            Ok(Some(super::Command::SyncCost(a))) => assert_eq!((a.secs, a.runs), (5, 3)),
            other => panic!("sync-cost: {other:?}"),
        }
        match parse(&["loaded-failover"]).map(|c| c.command) {
            Ok(Some(super::Command::LoadedFailover(a))) => assert_eq!((a.runs, a.pairs), (3, 1000)),
            other => panic!("loaded-failover: {other:?}"),
        }
        match parse(&["loaded-failover", "--runs", "5", "--pairs", "100"]).map(|c| c.command) {
            Ok(Some(super::Command::LoadedFailover(a))) => assert_eq!((a.runs, a.pairs), (5, 100)),
            other => panic!("loaded-failover flags: {other:?}"),
        }
        for bad in [&["loaded-failover", "--pairs", "1"][..], &["loaded-failover", "--runs", "0"]] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
        let a = tc(&["two-cluster"]).expect("defaults");
        assert_eq!(
            (a.runs, a.lease_ttls.as_slice(), a.gap),
            (10, &[4, 10][..], std::time::Duration::from_secs(3))
        );
        let a = tc(&["two-cluster", "--runs", "3", "--lease-ttl", "4s", "--gap", "500ms"]).expect("flags");
        assert_eq!(
            (a.runs, a.lease_ttls.as_slice(), a.gap),
            (3, &[4][..], std::time::Duration::from_millis(500))
        );
        for bad in [
            &["two-cluster", "--runs", "0"][..],
            &["two-cluster", "--lease-ttls", "1"],
            &["--runs", "2", "two-cluster"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_mass_failover_scenario_is_a_subcommand_of_its_own() {
        use clap::Parser as _;
        let parse = |argv: &[&str]| super::Cli::try_parse_from(["understudy-bench"].iter().chain(argv));
        let mf = |argv: &[&str]| match parse(argv).map(|c| c.command) {
            Ok(Some(super::Command::MassFailover(a))) => Ok((a.pairs, a.runs)),
            Ok(other) => panic!("{argv:?}: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(mf(&["mass-failover"]).expect("defaults"), (20, 1));
        assert_eq!(mf(&["mass-failover", "--pairs", "3", "--runs", "2"]).expect("flags"), (3, 2));
        assert_eq!(mf(&["mass-failover", "--pairs", "1"]).expect("one pair"), (1, 1));
        let replication = |argv: &[&str]| match parse(argv).map(|c| c.command) {
            Ok(Some(super::Command::MassFailover(a))) => a.replication.as_str(),
            other => panic!("{argv:?}: {other:?}"),
        };
        assert_eq!(replication(&["mass-failover"]), "Async");
        assert_eq!(replication(&["mass-failover", "--replication", "Sync"]), "Sync");
        assert_eq!(replication(&["mass-failover", "--replication", "SyncPreferred"]), "SyncPreferred");
        for bad in [
            &["mass-failover", "--pairs", "0"][..],
            &["mass-failover", "--runs", "0"],
            &["mass-failover", "--pairs", "x"],
            &["mass-failover", "--lease-ttls", "4"],
            &["mass-failover", "--replication", "sync"],
            &["--pairs", "3", "mass-failover"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    use understudy::crd::FailoverPolicy;

    use understudy_e2e::pair::Failover;

    /// Each failover policy the report states is the one its pairs get.
    #[test]
    fn the_stated_failover_policies_are_the_ones_built() {
        type Build = fn(Failover) -> Failover;
        let cases: [(&str, Build); 3] = [
            (crate::understudy_failover::FAILOVER, crate::understudy_failover::failover),
            (crate::switchover::UNDERSTUDY_FAILOVER, crate::switchover::understudy_failover),
            (crate::footprint::FAILOVER, crate::footprint::failover),
        ];
        for (text, build) in cases {
            let stated: FailoverPolicy = serde_yaml::from_str(&format!("{{ {text} }}")).expect(text);
            assert_eq!(stated, build(Failover(FailoverPolicy::default())).0, "{text}");
        }
    }
}
