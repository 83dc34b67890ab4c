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
//! Flags: `--runs N` (10), `--pairs N` (1000), `--lease-ttls 10,4` (seconds), `--skip-patroni`,
//! `--skip-failover`, `--skip-two-site`, `--skip-switchover`, `--skip-footprint`,
//! `--only failover,two-site,switchover,footprint` (any subset; `two-site` alone runs the two-site
//! understudy failovers and Patroni's (a) and (b), not (a′) nor the one-controller runs).

use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

use anyhow::{bail, Context as _, Result};
use understudy_e2e::sandbox::repo_root;

mod footprint;
mod measure;
mod patroni;
mod switchover;
mod two_site;
mod understudy_failover;

use footprint::Footprint;
use measure::{cell, Summary};
use patroni::{Scenario, Timing, SCENARIOS};
use understudy_failover::{self as us, Topology};

struct Args {
    runs: usize,
    pairs: usize,
    skip_patroni: bool,
    skip_footprint: bool,
    skip_switchover: bool,
    skip_failover: bool,
    skip_two_site: bool,
    lease_ttls: Vec<u32>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        runs: 10,
        pairs: 1000,
        skip_patroni: false,
        skip_footprint: false,
        skip_switchover: false,
        skip_failover: false,
        skip_two_site: false,
        lease_ttls: two_site::DEFAULT_TTLS.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => a.runs = it.next().context("--runs N")?.parse().context("--runs N")?,
            "--pairs" => a.pairs = it.next().context("--pairs N")?.parse().context("--pairs N")?,
            "--skip-patroni" => a.skip_patroni = true,
            "--skip-footprint" => a.skip_footprint = true,
            "--skip-switchover" => a.skip_switchover = true,
            "--skip-failover" => a.skip_failover = true,
            "--skip-two-site" => a.skip_two_site = true,
            "--lease-ttls" => {
                a.lease_ttls = it
                    .next()
                    .context("--lease-ttls 10,4")?
                    .split(',')
                    .map(|t| {
                        t.trim().trim_end_matches('s').parse::<u32>().context("--lease-ttls 10,4 (seconds)")
                    })
                    .collect::<Result<_>>()?;
                // leaseTTL ≥ 4 × probeTimeout (1 s in the measured pair), and the CRD's 2 s..5 m.
                if let Some(t) = a.lease_ttls.iter().find(|t| !(4..=300).contains(*t)) {
                    bail!("--lease-ttls: {t} s is outside 4..300 s (leaseTTL ≥ 4 × probeTimeout 1 s)");
                }
            }
            "--only" => {
                let parts: Vec<String> = it
                    .next()
                    .context("--only failover,two-site,switchover,footprint")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(p) = parts
                    .iter()
                    .find(|p| !["failover", "two-site", "switchover", "footprint"].contains(&p.as_str()))
                {
                    bail!("--only: unknown part {p:?} (failover, two-site, switchover, footprint)");
                }
                let has = |x: &str| parts.iter().any(|p| p == x);
                a.skip_failover = !has("failover");
                a.skip_two_site = !has("two-site");
                a.skip_switchover = !has("switchover");
                a.skip_footprint = !has("footprint");
            }
            "-h" | "--help" => {
                println!("understudy-bench [--runs N] [--pairs N] [--lease-ttls 10,4] [--skip-patroni] [--skip-failover] [--skip-two-site] [--skip-switchover] [--skip-footprint] [--only failover,two-site,switchover,footprint]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if a.lease_ttls.is_empty() {
        a.skip_two_site = true;
    }
    if a.runs == 0 || a.pairs == 0 {
        bail!("--runs and --pairs must be at least 1");
    }
    Ok(a)
}

fn say(s: String) {
    eprintln!("[bench {}] {s}", jiff::Timestamp::now().strftime("%H:%M:%S"));
}

/// The Patroni configurations measured: (timing label, timing, scenario).
type Config = (&'static str, Timing, Scenario);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
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
            for node_loss in [false, true] {
                topologies.push(Topology::TwoSite { lease_ttl_s: ttl, node_loss });
            }
        }
    }
    for i in 0..failover_rounds {
        for (j, topo) in topologies.iter().enumerate() {
            let key = topo.key();
            say(format!("round {}/{}: understudy {key}", i + 1, a.runs));
            match us::run_once(&format!("bench{i}x{j}"), *topo).await {
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

fn s(v: impl Iterator<Item = Option<f64>>) -> Option<Summary> {
    Summary::of(&v.flatten().collect::<Vec<_>>())
}

impl Report<'_> {
    fn pat(&self, key: &str) -> &[patroni::Run] {
        self.pat.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn pat_write(&self, key: &str) -> Option<Summary> {
        s(self.pat(key).iter().map(|r| r.kill_to_write))
    }

    fn pat_decision(&self, key: &str) -> Option<Summary> {
        s(self.pat(key).iter().map(|r| r.kill_to_decision))
    }

    fn pat_after_decision(&self, key: &str) -> Option<Summary> {
        s(self.pat(key).iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)))
    }

    fn us_write(&self) -> Option<Summary> {
        s(self.us.iter().map(|r| r.kill_to_write))
    }

    fn us_cutover(&self) -> Option<Summary> {
        s(self.us.iter().map(|r| r.kill_to_dns.zip(r.kill_to_decision).map(|(d, k)| d - k)))
    }

    /// Rows of the table: (measurement, understudy, Patroni defaults, Patroni aggressive).
    fn rows(&self) -> Vec<[String; 4]> {
        let n = self.a.runs;
        let c = |x: Option<Summary>| cell(x, 2, " s", n);
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |m: &str, u: String, d: String, g: String| rows.push([m.into(), u, d, g]);
        let ratio = |u: Option<Summary>, p: Option<Summary>| match (u, p) {
            (Some(u), Some(p)) if p.median > 0.0 => format!("{:.2}", u.median / p.median),
            _ => "–".into(),
        };
        let diff = |u: Option<Summary>, p: Option<Summary>| match (u, p) {
            (Some(u), Some(p)) => format!("{:+.2} s", u.median - p.median),
            _ => "–".into(),
        };
        let dash = || "".to_string();
        if !self.a.skip_failover {
            let uw = self.us_write();
            row(
                "(a) primary postmaster SIGKILL → first write acked on the new primary",
                c(uw),
                c(self.pat_write("defaults/a-failover")),
                c(self.pat_write("aggressive/a-failover")),
            );
            row(
            "(a′) same kill, Patroni restarts the postmaster in place (primary_start_timeout 300) → first write",
            "– (never restarts in place)".into(),
            c(self.pat_write("defaults/a-restart")),
            c(self.pat_write("aggressive/a-restart")),
        );
            row(
                "(b) node loss (Patroni + postmaster SIGKILLed) → first write acked on the new primary",
                format!("{} ¹", c(uw)),
                c(self.pat_write("defaults/b-node-loss")),
                c(self.pat_write("aggressive/b-node-loss")),
            );
            row(
                "ratio understudy / Patroni (a), medians",
                "".into(),
                ratio(uw, self.pat_write("defaults/a-failover")),
                ratio(uw, self.pat_write("aggressive/a-failover")),
            );
            row(
                "ratio understudy / Patroni (b), medians",
                "".into(),
                ratio(uw, self.pat_write("defaults/b-node-loss")),
                ratio(uw, self.pat_write("aggressive/b-node-loss")),
            );
            row(
                "kill → failover decided (understudy: TakeEpoch start; Patroni: leader-lock log line) (a)",
                c(s(self.us.iter().map(|r| r.kill_to_decision))),
                c(self.pat_decision("defaults/a-failover")),
                c(self.pat_decision("aggressive/a-failover")),
            );
            row(
                "kill → failover decided (b)",
                format!("{} ¹", c(s(self.us.iter().map(|r| r.kill_to_decision)))),
                c(self.pat_decision("defaults/b-node-loss")),
                c(self.pat_decision("aggressive/b-node-loss")),
            );
            row(
                "decided → first write acked (understudy: through PgBouncer; Patroni: multi-host DSN) (a)",
                c(s(self.us.iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)))),
                c(self.pat_after_decision("defaults/a-failover")),
                c(self.pat_after_decision("aggressive/a-failover")),
            );
            row(
                "decided → first write acked (b)",
                "same as (a) ¹".into(),
                c(self.pat_after_decision("defaults/b-node-loss")),
                c(self.pat_after_decision("aggressive/b-node-loss")),
            );
            let cut = self.us_cutover();
            row(
            "equal detection: understudy whole cutover (decided → DNS confirmed) − Patroni DB-only promotion (decided → write) (a)",
            c(cut),
            diff(cut, self.pat_after_decision("defaults/a-failover")),
            diff(cut, self.pat_after_decision("aggressive/a-failover")),
        );
            row(
                "equal detection: same difference (b)",
                "".into(),
                diff(cut, self.pat_after_decision("defaults/b-node-loss")),
                diff(cut, self.pat_after_decision("aggressive/b-node-loss")),
            );
            row(
                "understudy: kill → first failed probe",
                c(s(self.us.iter().map(|r| r.kill_to_first_failed_probe))),
                dash(),
                dash(),
            );
            row(
                "understudy: detection window (first failed probe → TakeEpoch start)",
                c(s(self.us.iter().map(|r| r.detection))),
                dash(),
                dash(),
            );
            let mut names: Vec<String> = Vec::new();
            for r in self.us {
                for (name, _, _) in &r.steps {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            for name in &names {
                let outcomes: std::collections::BTreeSet<&str> = self
                    .us
                    .iter()
                    .flat_map(|r| r.steps.iter().filter(|(n, _, _)| n == name).map(|(_, _, o)| o.as_str()))
                    .collect();
                let v = s(self
                    .us
                    .iter()
                    .map(|r| r.steps.iter().find(|(n, _, _)| n == name).and_then(|(_, d, _)| *d)));
                row(
                    &format!(
                        "understudy step {name} ({})",
                        outcomes.into_iter().collect::<Vec<_>>().join("/")
                    ),
                    cell(v, 3, " s", n),
                    dash(),
                    dash(),
                );
            }
            row(
                "understudy: controller's share (TakeEpoch start → last step end)",
                c(s(self.us.iter().map(|r| r.controller_share))),
                dash(),
                dash(),
            );
            row(
                "understudy: RTO (rtoSeconds: first failed probe → DNS confirmed)",
                c(s(self.us.iter().map(|r| r.rto))),
                dash(),
                dash(),
            );
            row(
                "lost WAL bytes (understudy: lostWalBytes)",
                cell(s(self.us.iter().map(|r| r.lost_wal_bytes.map(|b| b as f64))), 0, " B", n),
                dash(),
                dash(),
            );
            let lost = |v: &[patroni::Run]| {
                cell(Summary::of(&v.iter().map(|r| r.lost_acked as f64).collect::<Vec<_>>()), 0, "", n)
            };
            row(
                "lost acknowledged commits (a) (acked ids missing on the new primary)",
                cell(Summary::of(&self.us.iter().map(|r| r.lost_acked as f64).collect::<Vec<_>>()), 0, "", n),
                lost(self.pat("defaults/a-failover")),
                lost(self.pat("aggressive/a-failover")),
            );
            row(
                "lost acknowledged commits (b)",
                "same as (a) ¹".into(),
                lost(self.pat("defaults/b-node-loss")),
                lost(self.pat("aggressive/b-node-loss")),
            );
        }
        if let Some(f) = self.fp {
            let (i, l) = (&f.idle, &f.loaded);
            let both = |x: f64, y: f64, unit: &str, d: usize| format!("{x:.d$}{unit} / {y:.d$}{unit}");
            let pct = |x: Option<f64>| x.map(|x| format!("{x:.3} s")).unwrap_or_else(|| "–".into());
            let m = format!("(1 pair / {} pairs)", l.pairs);
            row(&format!("controller RSS {m}"), both(i.rss_mib, l.rss_mib, " MiB", 1), dash(), dash());
            row(
                &format!("controller CPU, % of one core over {:.0} s {m}", l.seconds),
                both(i.cpu_pct, l.cpu_pct, " %", 1),
                dash(),
                dash(),
            );
            row(
                &format!("kube-apiserver CPU, % of one core {m}"),
                both(i.apiserver_cpu_pct, l.apiserver_cpu_pct, " %", 1),
                dash(),
                dash(),
            );
            row(
                &format!("API requests/s sent by the controller {m}"),
                both(i.api_rps_total, l.api_rps_total, "", 1),
                dash(),
                dash(),
            );
            let top: Vec<String> = l.api_rps.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            row(&format!("  of which at {} pairs", l.pairs), top.join(", "), dash(), dash());
            row(
                &format!("probe round interval per pair, mean at {} pairs (probeInterval 1 s) ²", l.pairs),
                format!(
                    "{} ({:.0} reconciles in {:.0} s)",
                    pct(l.mean_round_interval),
                    l.reconciles,
                    l.seconds
                ),
                dash(),
                dash(),
            );
            row(
                &format!("reconcile duration p50 / p99 at {} pairs ²", l.pairs),
                format!("{} / {}", pct(l.reconcile_p50), pct(l.reconcile_p99)),
                dash(),
                dash(),
            );
            row(
                "reconcile duration p50 / p99 at 1 pair ²",
                format!("{} / {}", pct(i.reconcile_p50), pct(i.reconcile_p99)),
                dash(),
                dash(),
            );
            row(
                &format!(
                    "pairs Healthy after the window; probe connections held on the primary ({} pairs)",
                    l.pairs
                ),
                format!(
                    "{} Healthy{}; {} connections",
                    l.healthy,
                    l.not_healthy.iter().map(|(k, v)| format!(", {v} {k}")).collect::<String>(),
                    l.probe_connections
                ),
                dash(),
                dash(),
            );
        }
        rows
    }

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
        let _ = writeln!(o, "understudy: pair spec.failover {{ {} }}; controller = target/debug/understudy as a process (bed.controller_process, --site west); Workload INSERT through PgBouncer (transaction pooling) every 20 ms; kill = SIGKILL of the primary postmaster; first write = first ack after the kill and after the Promote step started", us::FAILOVER);
        let _ = writeln!(o, "understudy full pair: DataSource ConfigMap+Secret, PgBouncer/HTTP/rollout recycle, RFC 2136 DNS + DNSEndpoint, etcd witness epoch (e2e/src/bed.rs Bed::pair)");
        if !self.a.skip_two_site {
            o.push_str(&two_site::settings(&self.a.lease_ttls));
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
            let _ = writeln!(o, "footprint: controller {} (release) --namespace <ns>; {} pairs created through kube-apiserver (all on one sandbox PostgreSQL pair, max_connections {}; the controller shares one probe connection per server and login), spec.failover {{ {} }}; 30 s windows; RSS = VmRSS, CPU = utime+stime from /proc; API requests from kube-apiserver /metrics apiserver_request_total for disasterrecoverypairs, secrets, events (the bench sends none during the window); created in {:.0} s, {} pairs with a status after {}", f.binary, f.loaded.pairs, f.max_connections, footprint::FAILOVER, f.create_seconds, f.observed, f.all_observed_seconds.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "180 s (not all)".into()));
        }
        o
    }

    fn render(&self) -> (String, String) {
        let settings = self.settings();
        let mut text = String::from("== understudy bench\n");
        text.push_str(&settings);
        let mut md = format!("# understudy bench\n\n```\n{settings}```\n");
        let rows = self.rows();
        if !rows.is_empty() {
            let head = [
                "measurement".to_string(),
                "understudy".to_string(),
                format!("Patroni {}", Timing::DEFAULTS.label()),
                format!("Patroni {}", self.aggressive.label()),
            ];
            let mut notes = String::new();
            if !self.a.skip_failover {
                notes.push_str("¹ understudy's node loss is the same experiment as (a): the \"node\" of the primary runs only the postmaster (the only controller runs at the standby's site), so there is nothing else to kill; the same runs are shown. With one controller per site, see the two-site table.\n");
            }
            if self.fp.is_some() {
                notes.push_str("² the controller's own /metrics: understudy_reconcile_duration_seconds (histogram, quantiles interpolated within its buckets) and its count over the window; the controller requeues probeInterval after a reconcile ends, so the round interval per pair = 1 s + reconcile duration + queueing.\n");
            }
            add_table(&mut md, &mut text, &head, &rows, &notes);
        }
        if !self.a.skip_two_site {
            let head = [
                "measurement (failover, one controller per site)".to_string(),
                "understudy two-site".to_string(),
                format!("Patroni {}", Timing::DEFAULTS.label()),
                format!("Patroni {}", self.aggressive.label()),
            ];
            let rows = two_site::rows(self.two, &self.a.lease_ttls, self.a.runs, self.pat, self.aggressive);
            add_table(&mut md, &mut text, &head, &rows, two_site::NOTES);
        }
        if let Some(sw) = self.sw {
            let (head, rows) = sw.table(self.a.runs, !self.a.skip_patroni);
            add_table(&mut md, &mut text, &head, &rows, switchover::NOTES);
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
            "understudy_two_site": { "lease_ttls": self.a.lease_ttls, "runs": self.two },
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

/// Appends one table (Markdown to `md`, aligned text to `text`) with its notes.
fn add_table(md: &mut String, text: &mut String, head: &[String; 4], rows: &[[String; 4]], notes: &str) {
    let _ = writeln!(md, "\n| {} |", head.join(" | "));
    let _ = writeln!(md, "|---|---|---|---|");
    for r in rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    let _ = write!(md, "\n{notes}");
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    text.push('\n');
    text.push_str(line(head).trim_end());
    text.push('\n');
    text.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    text.push('\n');
    for r in rows {
        text.push_str(line(r).trim_end());
        text.push('\n');
    }
    text.push_str(notes);
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
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
