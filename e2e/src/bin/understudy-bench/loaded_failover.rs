//! `understudy-bench loaded-failover`: one pair's failover while the same controller probes many
//! other pairs every second — does a busy controller look at a dying primary as quickly as an idle
//! one? Interleaved rounds on fresh beds, each with the release controller: the measured pair alone,
//! then the measured pair beside `--pairs − 1` others (all on a PostgreSQL pair of their own, Manual,
//! probed every second, as in the footprint). The kill and every figure are `understudy_failover`'s
//! single-controller run (SIGKILL of the primary postmaster; RTO from the journal; first write
//! through PgBouncer; acknowledged commits missing on the new primary).

use std::fmt::Write as _;

use anyhow::Result;

use crate::{
    table::{cell, Grid, Summary},
    understudy_failover::{self as us, Load, Topology},
};

/// How many rounds, and how many pairs the loaded controller has.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Interleaved rounds (the pair alone, then the pair beside the others).
    #[arg(long, default_value_t = 3, value_parser = crate::at_least_one())]
    pub runs: usize,
    /// Pairs the loaded controller has in all, the measured one included.
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    pub pairs: usize,
}

/// The runs of both configurations.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub argv: Vec<String>,
    pub pairs: usize,
    pub runs: usize,
    pub alone: Vec<us::Run>,
    pub loaded: Vec<us::Run>,
    pub failures: Vec<String>,
    pub load_at_start: String,
    pub load_at_end: String,
}

/// Runs the rounds; a failed run is recorded and the rest go on.
pub async fn run(a: &Args, argv: Vec<String>, log: &mut impl FnMut(String)) -> Result<Report> {
    let binary = crate::footprint::release_binary()?;
    let mut rep =
        Report { argv, pairs: a.pairs, runs: a.runs, load_at_start: crate::loadavg(), ..Default::default() };
    for i in 0..a.runs {
        for (others, what) in [(0, "alone"), (a.pairs - 1, "loaded")] {
            log(format!("round {}/{}: the pair {what} ({} pairs in all)", i + 1, a.runs, others + 1));
            let load = Load { pairs: others, binary: Some(binary.clone()) };
            match us::run_once_with(&format!("lf{i}{}", &what[..1]), Topology::Single, false, &load).await {
                Ok(r) => {
                    log(format!(
                        "  {what}: RTO {:.2}s, decided→DNS {:.2}s, kill→write {:.2}s, lost acked {}",
                        r.rto.unwrap_or(f64::NAN),
                        r.controller_share.unwrap_or(f64::NAN),
                        r.kill_to_write.unwrap_or(f64::NAN),
                        r.lost_acked
                    ));
                    if others == 0 {
                        rep.alone.push(r);
                    } else {
                        rep.loaded.push(r);
                    }
                }
                Err(e) => {
                    log(format!("  {what} run {} FAILED: {e:#}", i + 1));
                    rep.failures.push(format!("{what} run {}: {e:#}", i + 1));
                }
            }
        }
    }
    rep.load_at_end = crate::loadavg();
    Ok(rep)
}

impl Report {
    fn settings(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "command: cargo run --release -p understudy-e2e --bin understudy-bench -- {}",
            self.argv.join(" ")
        );
        let _ = writeln!(
            o,
            "machine: {} cores, shared; load average (1/5/15 min) at the start {}, at the end {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            self.load_at_start,
            self.load_at_end
        );
        let _ = writeln!(
            o,
            "runs: N={} rounds, interleaved (the pair alone, then beside {} others), each on a fresh bed; \
             controller = target/release/understudy --site west (one controller, no leader key); the measured \
             pair spec.failover {{ {} }} with PgBouncer, DNS, DataSource and recyclers (Bed::pair); the others \
             spec.failover {{ {} }} on a PostgreSQL pair of their own, all Healthy and settled 10 s before the \
             kill; kill = SIGKILL of the measured primary's postmaster; figures median (min–max)",
            self.runs,
            self.pairs - 1,
            us::FAILOVER,
            crate::footprint::FAILOVER
        );
        o
    }

    fn grid(&self) -> Grid {
        let col = |runs: &[us::Run], f: &dyn Fn(&us::Run) -> Option<f64>, d: usize, unit: &str| {
            cell(Summary::of(&runs.iter().filter_map(f).collect::<Vec<_>>()), d, unit, self.runs)
        };
        let row = |name: &str, f: &dyn Fn(&us::Run) -> Option<f64>, d: usize, unit: &str| {
            vec![name.to_string(), col(&self.alone, f, d, unit), col(&self.loaded, f, d, unit)]
        };
        let rows = vec![
            row("RTO (first failed probe → DNS confirmed)", &|r| r.rto, 2, " s"),
            row("kill → first failed probe", &|r| r.kill_to_first_failed_probe, 2, " s"),
            row("first failed probe → decided (TakeEpoch starts)", &|r| r.detection, 2, " s"),
            row("controller's share (TakeEpoch → DNS confirmed)", &|r| r.controller_share, 2, " s"),
            row("kill → first write acknowledged through PgBouncer", &|r| r.kill_to_write, 2, " s"),
            row(
                "decided → first write acknowledged through PgBouncer",
                &|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d),
                2,
                " s",
            ),
            row("lost acknowledged commits", &|r| Some(r.lost_acked as f64), 0, ""),
            row(
                "status writes refused with 409 over the run (all pairs, the controller's log)",
                &|r| Some(r.status_conflicts as f64),
                0,
                "",
            ),
        ];
        Grid {
            head: vec![
                "measurement".into(),
                "the pair alone".into(),
                format!("beside {} other pairs", self.pairs - 1),
            ],
            rows,
            notes: if self.failures.is_empty() {
                String::new()
            } else {
                format!("failed runs: {}\n", self.failures.join("; "))
            },
        }
    }

    /// The table as text, and `target/bench/loaded-failover.{md,json}` written.
    pub fn write(&self) -> Result<String> {
        crate::measure::write_report(
            "loaded-failover",
            "one failover under load",
            &self.settings(),
            |md, text| self.grid().render(md, text),
            &[],
            self,
        )
    }
}
