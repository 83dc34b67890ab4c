//! `make demo`: a real local sandbox in which the primary dies and understudy fails over.
//!
//! It starts kube-apiserver (built from Go modules), a PostgreSQL 15 primary and streaming standby,
//! PgBouncer, BIND9 and a witness etcd; runs the `understudy` controller as a process; drives a
//! workload that commits through PgBouncer and counts every acknowledged commit; kills the primary
//! postmaster with SIGKILL; and prints the failover timeline with RTO, lost WAL bytes and lost
//! acknowledged commits. Everything it started is stopped when it exits.

use std::time::Duration;

use anyhow::{Context as _, Result};
use understudy_e2e::{bed::Bed, pair::Automatic, sandbox::proc::run, support::wait_for, workload::lost};

#[tokio::main]
async fn main() -> Result<()> {
    let t0 = std::time::Instant::now();
    println!("== starting the sandbox: kube-apiserver + etcd, PostgreSQL 15 primary and streaming standby, PgBouncer, BIND9, witness etcd");
    let mut bed = Bed::start("demo").await?;
    println!("   kube-apiserver {} at {} ({:.1}s)", bed.cp.version, bed.cp.url, t0.elapsed().as_secs_f64());
    println!(
        "   PostgreSQL east (primary) :{}, west (standby) :{}; PgBouncer :{}; BIND :{}; witness {}",
        bed.pg.primary.port, bed.pg.standby.port, bed.pgb.port, bed.bind.port, bed.witness.endpoint
    );

    bed.pair("chat")
        .failover(|f| {
            f.mode(Automatic)
                .probe_interval("1s")
                .probe_timeout("1s")
                .failure_threshold(3)
                .max_lag_bytes("16Mi")
        })
        .create(&bed.client, &bed.ns)
        .await?;
    println!(
        "== applied DisasterRecoveryPair {}/chat (Automatic, probe every 1s, 3 failures confirm)",
        bed.ns
    );
    let _ctl = bed.controller_process("west", &[]).context("start the understudy controller")?;
    bed.wait_healthy("chat").await?;
    let kubectl = |args: &[&str]| run(bed.cp.kubectl().args(["-n", &bed.ns]).args(args));
    print!("{}", kubectl(&["get", "drp"])?);

    let wl = bed.workload("demo_writes", Duration::from_millis(20)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("== workload committing through PgBouncer: {} commits acknowledged so far", wl.acked());
    println!("   DNS chat.example.test → {:?}", bed.bind.dig("chat")?);

    println!("== kill -9 the primary postmaster (pid {})", bed.pg.primary.pid());
    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(60)).await?;
    let before = wl.acked();
    wait_for("writes to resume on the new primary", Duration::from_secs(20), || async {
        Ok(wl.acked() > before + 10)
    })
    .await?;
    let stats = wl.stop().await;
    let present: Vec<i64> = bed.pg.standby.ids("demo_writes")?;
    let missing = lost(&stats.acked, &present);

    let st = drp.status.clone().unwrap_or_default();
    let t = st.last_transition.clone().context("no transition recorded")?;
    println!("== failover timeline ({} trigger, {} → {}, epoch {})", t.trigger, t.from, t.to, t.epoch);
    let start: jiff::Timestamp = t.started_at.parse()?;
    let off = |s: &Option<String>| -> String {
        s.as_deref()
            .and_then(|x| x.parse::<jiff::Timestamp>().ok())
            .map(|x| format!("{:>7.3}s", (x.as_millisecond() - start.as_millisecond()) as f64 / 1000.0))
            .unwrap_or_else(|| "      -".into())
    };
    println!("   {:<18} {:>8} {:>8}  {:<9} detail", "step", "start", "end", "outcome");
    println!("   {:<18} {:>8} {:>8}  {:<9} first failed probe of {}", "Detect", "  0.000s", "", "", t.from);
    for s in &t.steps {
        println!(
            "   {:<18} {} {}  {:<9} {}",
            s.name,
            off(&s.started_at),
            off(&s.finished_at),
            s.outcome.map(|o| o.as_str()).unwrap_or("-"),
            s.message.as_deref().unwrap_or("")
        );
    }
    println!("== RTO {:.3}s (first failed probe → DNS confirmed); lost WAL {} bytes; lost acknowledged commits {} of {}",
        t.rto_seconds.unwrap_or_default(), t.lost_wal_bytes.unwrap_or_default(), missing.len(), stats.acked.len());
    println!(
        "   workload: {} errors, longest write gap {:.2}s",
        stats.errors,
        stats.longest_gap.as_secs_f64()
    );
    println!(
        "   DNS chat.example.test → {:?}; mattermost-db dsn now points at port {}",
        bed.bind.dig("chat")?,
        bed.pg.standby.port
    );
    print!("{}", kubectl(&["get", "drp"])?);
    println!("== done in {:.0}s; stopping the sandbox", t0.elapsed().as_secs_f64());
    Ok(())
}
