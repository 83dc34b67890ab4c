//! `understudy-bench sync-cost`: what `replication: Sync` costs against `Async` in commit latency and
//! throughput (pgbench through PgBouncer on the sandbox pair).

use std::time::Duration;

use anyhow::Result;

/// One pgbench run through PgBouncer: (transactions per second, average latency in ms).
fn pgbench(bouncer_port: u16, password: &str, clients: u32, secs: u32) -> Result<(f64, f64)> {
    let out = understudy_e2e::sandbox::proc::run(
        std::process::Command::new(format!("{}/pgbench", understudy_e2e::sandbox::postgres::PG_BIN))
            .args(["-h", "127.0.0.1", "-p", &bouncer_port.to_string(), "-U", "postgres", "-n"])
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(2).to_string(),
                "-T",
                &secs.to_string(),
                "app",
            ])
            .env("PGPASSWORD", password),
    )?;
    let figure = |prefix: &str| -> Result<f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {prefix:?} in pgbench output:\n{out}"))
    };
    Ok((figure("tps = ")?, figure("latency average = ")?))
}

/// How long each pgbench run lasts and how many interleaved rounds.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 10)]
    pub secs: u32,
    /// Interleaved rounds (Async then Sync, 1 and 8 clients each).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

/// What `Sync` costs against `Async`: pgbench's TPC-B-like transactions through PgBouncer on the
/// sandbox pair (loopback, `fsync = off`, so the standby's flush is cheap: on real disks and a real
/// network the cost is one network round trip plus the standby's WAL flush per commit). Prints the
/// table (medians) on stdout.
pub fn run(a: &Args) -> Result<()> {
    use understudy_e2e::sandbox::{pgbouncer::PgBouncer, postgres::PgPair};
    let (secs, runs) = (a.secs, a.runs.max(1));
    let pg = PgPair::start("syncbench")?;
    let pgb = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
    understudy_e2e::sandbox::proc::run(
        std::process::Command::new(format!("{}/pgbench", understudy_e2e::sandbox::postgres::PG_BIN))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.primary.port.to_string(),
                "-U",
                "postgres",
                "-i",
                "-s",
                "10",
                "-q",
            ])
            .arg("postgres")
            .env("PGPASSWORD", &pg.password),
    )?;
    let mut results: Vec<(&str, u32, f64, f64)> = Vec::new();
    for run in 1..=runs {
        // Interleaved, so that the machine's other load falls on both modes alike.
        for (mode, names, state) in [("Async", "", "async"), ("Sync", "*", "sync")] {
            pg.primary.psql(&format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"))?;
            pg.primary.psql("SELECT pg_reload_conf()")?;
            understudy_e2e::sandbox::proc::wait_until(
                &format!("sync_state {state}"),
                Duration::from_secs(10),
                || {
                    pg.primary
                        .psql("SELECT sync_state FROM pg_stat_replication")
                        .is_ok_and(|s| s.trim() == state)
                },
            )?;
            for clients in [1, 8] {
                let (tps, ms) = pgbench(pgb.port, &pg.password, clients, secs)?;
                eprintln!(
                    "run {run} {mode:5} {clients} client(s): {tps:8.1} tps, {ms:6.3} ms average latency"
                );
                results.push((mode, clients, tps, ms));
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\n| clients | Async tps | Sync tps | Sync/Async | Async latency ms | Sync latency ms |\n|---|---|---|---|---|---|");
    for clients in [1, 8] {
        let pick = |mode: &str, f: fn(&(&str, u32, f64, f64)) -> f64| {
            median(results.iter().filter(|r| r.0 == mode && r.1 == clients).map(f).collect())
        };
        let (at, st) = (pick("Async", |r| r.2), pick("Sync", |r| r.2));
        let (al, sl) = (pick("Async", |r| r.3), pick("Sync", |r| r.3));
        println!("| {clients} | {at:.0} | {st:.0} | {:.2} | {al:.3} | {sl:.3} |", st / at);
    }
    Ok(())
}
