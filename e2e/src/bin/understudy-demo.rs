//! `make demo`: start the real sandbox, run the understudy controller against it, and show a pair
//! with its live status. Everything it starts is stopped when it exits.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use understudy_e2e::{
    sandbox::{repo_root, Bind, PgBouncer, PgPair, Witness},
    support,
};

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "== starting the sandbox (kube-apiserver, etcd, PostgreSQL 15 pair, PgBouncer, BIND9, witness etcd)"
    );
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    println!("   kube-apiserver {} at {}", cp.version, cp.url);
    let (pg, _pgb, _bind, _witness) = tokio::task::spawn_blocking(|| -> Result<_> {
        let pg = PgPair::start("demo")?;
        let pgb = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
        let bind = Bind::start("example.test", &[("chat", "127.0.0.11".parse()?)])?;
        let witness = Witness::start()?;
        Ok((pg, pgb, bind, witness))
    })
    .await??;
    println!("   PostgreSQL primary :{}, standby :{} (streaming)", pg.primary.port, pg.standby.port);

    let client = support::client_with_crd().await?;
    let ns = "demo";
    let _ = support::create_namespace(&client, ns).await;
    support::pair_secrets(&client, ns, &pg).await?;
    let yaml = support::pair_yaml("chat", &pg, "pg-admin", "");
    support::create_pair(&client, ns, &yaml).await?;
    println!("== applied DisasterRecoveryPair {ns}/chat:\n{}", indent(&yaml));

    let bin = repo_root().join("target/debug/understudy");
    let log = cp.dir.join("understudy.log");
    let mut controller = Command::new(&bin);
    controller.args(["run", "--namespace", ns]).env("KUBECONFIG", &cp.kubeconfig);
    let _ctl = understudy_e2e::sandbox::proc::Proc::spawn("understudy", controller, &log)
        .with_context(|| format!("start {} (run `cargo build -p understudy` first)", bin.display()))?;
    println!("== understudy controller running (log: {})", log.display());

    let get = || -> Result<String> {
        understudy_e2e::sandbox::proc::run(cp.kubectl().args(["get", "drp", "-n", ns]))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("== kubectl get drp\n{}", get()?);
    println!("== pausing WAL replay on the standby and writing on the primary: watch the lag grow");
    pg.standby.psql("SELECT pg_wal_replay_pause()")?;
    for i in 0..4 {
        pg.primary.psql(&format!(
            "CREATE TABLE IF NOT EXISTS filler (g int, pad text); INSERT INTO filler SELECT g, repeat('{i}', 200) FROM generate_series(1, 10000) g"
        ))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        print!("{}", get()?.lines().last().map(|l| format!("{l}\n")).unwrap_or_default());
    }
    pg.standby.psql("SELECT pg_wal_replay_resume()")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("== replay resumed\n{}", get()?);
    let status = understudy_e2e::sandbox::proc::run(cp.kubectl().args([
        "get",
        "drp",
        "chat",
        "-n",
        ns,
        "-o",
        "jsonpath={.status}",
    ]))?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    println!("== status\n{}", indent(&serde_yaml::to_string(&status)?));
    println!("== done; stopping the sandbox");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}
