//! `kubectl-understudy` (issue 16) against the two-cluster sandbox: the built binary runs as a
//! process with a kubeconfig holding one context per site's real kube-apiserver (plus one whose
//! API server does not exist).
//!
//! - `status --context east --context west`: both clusters' primary and epoch, the witness's truth
//!   read in etcd (and, with `--no-witness`, as the copies mirror it); how long it takes is printed. An unreachable cluster is shown, not fatal; none answering exits 3.
//! - `kubectl understudy status` (kubectl finding the plugin in PATH) says the same, and
//!   `kubectl __complete understudy …` completes through the `kubectl_complete-understudy` link;
//! - `-o json` parses; `failover` without `--force` is a usage error (2).
//! - `pause --wait` annotates both copies and both go `Paused`; a `switchover` is then refused (1)
//!   naming the pause; `resume --wait` lifts it.
//! - `dry-run` returns the controller's plan; `failover --force` without `--yes` on a non-terminal
//!   is refused (1).
//! - `switchover --wait`: the epoch moves in both clusters, the output names the new primary, the
//!   timeline and the RTO; `failover --force --yes --wait` moves it back (trigger `Forced`).
//! - A real failover: the serving site lost whole (API server included), west takes over by itself,
//!   and `status` shows east unreachable beside west's view and the failover's journal.
//! - `drill --writer-dsn` (a third bed, with `spec.objectives`): a switchover to west and back run
//!   by the controllers across both clusters under the plugin's own writes through both PgBouncers;
//!   the report's legs judged `Met`, 0 acknowledged writes lost, the write gap printed; `status`
//!   shows the objectives and the last drill.
//! - `Approve` mode (a second bed): `approve` refused while nothing is pending; with east's database
//!   killed, both copies approved with their own nonces, the failover run once, and the plugin's
//!   report of the outcome checked against the witness.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use understudy_e2e::{
    bed,
    pair::Approve,
    sandbox::{control_plane::binaries, proc::free_port},
    two_sites::{TwoSites, SITES},
};

/// Builds `kubectl-understudy` once (as `bed::controller_binary` builds the controller).
fn cli_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| bed::workspace_binary("kubectl-understudy", "kubectl-understudy"))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// One kubeconfig with a context per site (`east`, `west`: each its cluster's API server, user and
/// the bed's namespace) and `gone`, an API server nobody listens on.
fn kubeconfig(two: &TwoSites) -> Result<PathBuf> {
    let mut clusters = Vec::new();
    let mut users = Vec::new();
    let mut contexts = Vec::new();
    for site in SITES {
        let raw = std::fs::read_to_string(two.cluster(site).kubeconfig())?;
        let kc: serde_yaml::Value = serde_yaml::from_str(&raw)?;
        let cluster = kc["clusters"][0]["cluster"].clone();
        let user = kc["users"][0]["user"].clone();
        clusters.push(serde_json::json!({ "name": site, "cluster": serde_json::to_value(cluster)? }));
        users.push(serde_json::json!({ "name": site, "user": serde_json::to_value(user)? }));
        contexts.push(serde_json::json!({ "name": site, "context": { "cluster": site, "user": site, "namespace": two.ns } }));
    }
    let ca = two.cluster("east").kubeconfig().parent().map(|d| d.join("pki/ca.crt")).unwrap_or_default();
    clusters.push(serde_json::json!({ "name": "gone", "cluster": { "server": format!("https://127.0.0.1:{}", free_port()?), "certificate-authority": ca } }));
    contexts.push(serde_json::json!({ "name": "gone", "context": { "cluster": "gone", "user": "east", "namespace": two.ns } }));
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": clusters, "users": users, "contexts": contexts,
    });
    let path = two.dir.join("kubeconfig-two-contexts");
    std::fs::write(&path, serde_yaml::to_string(&kc)?)?;
    Ok(path)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the plugin with `args` against `kubeconfig` ($KUBECONFIG, as kubectl hands it down).
async fn cli(kubeconfig: &Path, args: &[&str]) -> Result<Run> {
    cli_env(kubeconfig, args, &[]).await
}

/// `cli` with more environment (such as `PGPASSWORD`, which is not echoed).
async fn cli_env(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new(cli_binary()?)
        .args(args)
        .envs(env.iter().copied())
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    };
    eprintln!(
        "$ kubectl understudy {}   # exit {}, {} ms\n{}{}",
        args.join(" "),
        run.code,
        run.took.as_millis(),
        run.stdout,
        run.stderr
    );
    Ok(run)
}

async fn healthy(label: &str) -> Result<TwoSites> {
    let mut two = TwoSites::start(label).await?;
    two.apply(&two.pair("chat")).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    two.wait_east_serving("chat").await?;
    Ok(two)
}

fn paused_annotation(p: &understudy::crd::DisasterRecoveryPair) -> Option<String> {
    p.metadata.annotations.as_ref()?.get("dr.understudy.dev/paused").cloned()
}

/// The tests of this file run one at a time (each starts two clusters).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reads_both_clusters_and_runs_a_switchover() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let bin = tokio::task::spawn_blocking(cli_binary).await??;
    ensure!(bin.is_file(), "{} was not built", bin.display());
    let t0 = Instant::now();
    let mut two = healthy("cli").await?;
    eprintln!("bed healthy in {:.1}s", t0.elapsed().as_secs_f64());
    let kc = kubeconfig(&two)?;
    let both = ["--context", "east", "--context", "west"];

    // status: both clusters side by side, and how long it takes (three runs).
    let mut took = Vec::new();
    for _ in 0..3 {
        let r = cli(&kc, &[&["status", "chat"][..], &both].concat()).await?;
        ensure!(r.code == 0, "status exited {}: {}", r.code, r.stderr);
        took.push(r.took);
        let row = |name: &str| {
            r.stdout.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or("").to_string()
        };
        let words = |l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        ensure!(words(row("primary")) == ["primary", "east", "east"], "primary row: {:?}", row("primary"));
        ensure!(words(row("epoch")) == ["epoch", "0", "0"], "epoch row: {:?}", row("epoch"));
        // The witness read in etcd directly (through the Secrets the spec names).
        ensure!(
            r.stdout.contains("witness: epoch 0, primary east, leader key east (epoch 0) (etcd http")
                && r.stdout.contains("; every cluster agrees)"),
            "{}",
            r.stdout
        );
    }
    took.sort();
    // Without reading etcd: the witness as the copies mirror it.
    let r = cli(&kc, &[&["status", "chat", "--no-witness"][..], &both].concat()).await?;
    ensure!(
        r.code == 0
            && r.stdout
                .contains("witness: epoch 0, primary east (as mirrored by east; every cluster agrees)")
            && r.stdout.contains("etcd not read directly: --no-witness"),
        "{}",
        r.stdout
    );
    let no_witness = r.took;
    // The same through kubectl, as a plugin found in PATH.
    let k8s = tokio::task::spawn_blocking(binaries).await??;
    let path = format!(
        "{}:{}:{}",
        bin.parent().context("bin dir")?.display(),
        k8s.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(k8s.join("kubectl"))
        .args(["understudy", "status", "chat", "--context", "east", "--context", "west"])
        .env("KUBECONFIG", &kc)
        .env("PATH", path)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("witness: epoch 0, primary east"),
        "kubectl understudy status: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // `kubectl understudy <TAB>`: kubectl runs `kubectl_complete-understudy` (a link to the plugin).
    let links = two.dir.join("plugin-bin");
    std::fs::create_dir_all(&links)?;
    std::os::unix::fs::symlink(&bin, links.join("kubectl_complete-understudy"))?;
    std::os::unix::fs::symlink(&bin, links.join("kubectl-understudy"))?;
    let complete = |words: &'static [&'static str]| {
        let (kubectl, kc, links, k8s) = (k8s.join("kubectl"), kc.clone(), links.clone(), k8s.clone());
        async move {
            let out = tokio::process::Command::new(kubectl)
                .args(["__complete", "understudy"])
                .args(words)
                .env("KUBECONFIG", &kc)
                .env("PATH", format!("{}:{}", links.display(), k8s.display()))
                .output()
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let got = complete(&["sw"]).await?;
    ensure!(got == "switchover\n:4\n", "kubectl __complete understudy sw: {got:?}");
    let got = complete(&["status", "chat", "--context", ""]).await?;
    ensure!(
        got == "east\nwest\ngone\n:4\n",
        "kubectl __complete understudy status chat --context '': {got:?}"
    );
    // -o json for scripts.
    let r = cli(&kc, &[&["status", "chat", "-o", "json"][..], &both].concat()).await?;
    ensure!(r.code == 0, "status -o json exited {}", r.code);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).context("status -o json is JSON")?;
    for (i, site) in SITES.iter().enumerate() {
        ensure!(v["clusters"][i]["context"] == *site && v["clusters"][i]["reachable"] == true, "{v}");
        ensure!(v["clusters"][i]["primary"] == "east" && v["clusters"][i]["epoch"] == 0, "{v}");
    }
    ensure!(v["witness"]["primary"] == "east" && v["witness"]["epoch"] == 0, "{v}");
    ensure!(v["witness"]["mirroredBy"] == "etcd" && v["etcd"]["leaderKey"] == "east (epoch 0)", "{v}");

    // A cluster that does not answer is shown; none answering exits 3.
    let r =
        cli(&kc, &[&["status", "chat", "--context", "gone", "--request-timeout", "2s"][..], &both].concat())
            .await?;
    ensure!(r.code == 0 && r.stdout.contains("not read: gone"), "exit {}: {}", r.code, r.stdout);
    let r = cli(&kc, &["status", "chat", "--context", "gone", "--request-timeout", "2s"]).await?;
    ensure!(r.code == 3 && r.stderr.contains("no cluster answered"), "exit {}: {}", r.code, r.stderr);
    let r = cli(&kc, &["failover", "chat"]).await?;
    ensure!(r.code == 2 && r.stderr.contains("--force"), "failover without --force: exit {}", r.code);
    let r = cli(&kc, &[&["failover", "chat", "--force"][..], &both].concat()).await?;
    ensure!(r.code == 1 && r.stderr.contains("pass --yes"), "failover unconfirmed: exit {}", r.code);

    // pause on both copies; a switchover is refused naming the pause; resume.
    let r = cli(&kc, &[&["pause", "chat", "--wait", "--timeout", "30s"][..], &both].concat()).await?;
    ensure!(r.code == 0 && r.stdout.contains("result: paused"), "pause exited {}: {}", r.code, r.stderr);
    for site in SITES {
        let p = two.api(site).get("chat").await?;
        ensure!(paused_annotation(&p).as_deref() == Some("true"), "{site}'s copy not paused");
    }
    let r = cli(&kc, &[&["switchover", "chat", "--wait"][..], &both].concat()).await?;
    ensure!(r.code == 1 && r.stderr.contains("paused"), "switchover while paused: exit {}", r.code);
    let r = cli(&kc, &[&["resume", "chat", "--wait", "--timeout", "30s"][..], &both].concat()).await?;
    ensure!(r.code == 0 && r.stdout.contains("result: resumed"), "resume exited {}: {}", r.code, r.stderr);
    for site in SITES {
        let p = two.api(site).get("chat").await?;
        ensure!(paused_annotation(&p).as_deref() == Some("false"), "{site}'s copy still paused");
    }
    for site in SITES {
        two.wait_healthy(site, "chat", "east").await?;
    }

    // A dry-run: the controller's plan (blockers exit 1, none exit 0); -o json parses.
    let r = cli(&kc, &[&["dry-run", "chat", "-o", "json"][..], &both].concat()).await?;
    ensure!(r.code == 0 || r.code == 1, "dry-run exited {}: {}", r.code, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).context("dry-run -o json is JSON")?;
    ensure!(v["result"] == "planned" && v["dryRun"]["to"] == "west", "{v}");

    // switchover --wait: the epoch moves in both clusters; the output names west, the timeline, the RTO.
    let r = cli(&kc, &[&["switchover", "chat", "--wait", "--timeout", "90s"][..], &both].concat()).await?;
    ensure!(r.code == 0, "switchover exited {}: {}", r.code, r.stderr);
    ensure!(r.stdout.contains("result: Completed — west serves at epoch 1"), "{}", r.stdout);
    ensure!(r.stdout.contains("primary west, epoch 0 → 1") && r.stdout.contains("RTO "), "{}", r.stdout);
    ensure!(r.stdout.contains("Promote") && r.stdout.contains("lost WAL (RPO) 0 B"), "{}", r.stdout);
    for site in SITES {
        two.wait_pair(site, "chat", "epoch 1 mirrored", Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| s.epoch.0 == 1 && s.current_primary.as_deref() == Some("west"))
        })
        .await?;
    }
    // The witness's record: `<epoch> <holder> <transition id ending in the promoted site>`.
    let w = two.witness_epoch("chat")?;
    ensure!(w.starts_with("1 ") && w.trim_end().ends_with("/1/west"), "witness: {w}");
    let r = cli(&kc, &[&["status", "chat"][..], &both].concat()).await?;
    ensure!(r.code == 0 && r.stdout.contains("witness: epoch 1, primary west"), "{}", r.stdout);
    ensure!(r.stdout.contains("Switchover east → west, epoch 1"), "{}", r.stdout);

    // A forced failover back to east, confirmed by --yes, once east follows west again.
    following(&two, "east").await?;
    let r = cli(
        &kc,
        &[&["failover", "chat", "--force", "--yes", "--wait", "--timeout", "90s"][..], &both].concat(),
    )
    .await?;
    ensure!(r.code == 0, "failover exited {}: {}", r.code, r.stderr);
    ensure!(r.stdout.contains("result: Completed — east serves at epoch 2"), "{}", r.stdout);
    ensure!(r.stdout.contains("trigger Forced"), "{}", r.stdout);

    // A real failover: east (serving) is lost whole, its API server with it; west takes over by
    // itself. `status` shows east unreachable and west's view with the failover's journal.
    following(&two, "west").await?;
    two.wait_healthy("west", "chat", "east").await?;
    let killed = two.kill_site("east").await?;
    two.wait_pair("west", "chat", "west to fail over", Duration::from_secs(60), |p| {
        p.status.as_ref().is_some_and(|s| {
            s.epoch.0 == 3 && s.last_transition.as_ref().is_some_and(|t| t.finished_at.is_some())
        })
    })
    .await
    .with_context(|| format!("west's controller:\n{}", two.controller_tail("west", 40)))?;
    eprintln!("east lost; west's failover finished {:.2}s after the kill", killed.elapsed().as_secs_f64());
    let r = cli(&kc, &[&["status", "chat"][..], &both].concat()).await?;
    ensure!(r.code == 0, "status with east lost exited {}: {}", r.code, r.stderr);
    ensure!(
        r.stdout.contains("witness: epoch 3, primary west (taken by west)")
            && r.stdout.contains("; not read: east)"),
        "{}",
        r.stdout
    );
    ensure!(
        r.stdout.contains("Failover east → west, epoch 3, trigger Automatic, Completed by west"),
        "{}",
        r.stdout
    );
    let one_down = r.took;
    eprintln!(
        "status against two clusters (process start to exit): {} ms min, {} ms median, {} ms max",
        took[0].as_millis(),
        took[1].as_millis(),
        took[2].as_millis()
    );
    eprintln!(
        "status with --no-witness: {} ms; with one of the two clusters lost: {} ms",
        no_witness.as_millis(),
        one_down.as_millis()
    );
    Ok(())
}

/// Waits until `site`, the former primary, streams from the new one again (its rejoin hook ran).
async fn following(two: &TwoSites, site: &str) -> Result<()> {
    two.wait_pair(site, "chat", &format!("{site} to follow"), Duration::from_secs(60), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.former_primary.as_ref())
            .is_some_and(|f| f.site == site && f.assessment.as_str() == "Following")
    })
    .await
    .with_context(|| format!("{site}'s controller:\n{}", two.controller_tail(site, 40)))?;
    Ok(())
}

/// Approve mode across two clusters: `approve` refuses while nothing is pending, then approves the
/// failover each site's controller asks for (each copy its own nonce) and follows it: one promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_through_the_plugin() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut two = TwoSites::start("cli-approve").await?;
    let pair = two.pair("chat").failover(|f| f.mode(Approve));
    two.apply(&pair).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    two.wait_east_serving("chat").await?;
    let kc = kubeconfig(&two)?;
    let both = ["--context", "east", "--context", "west"];
    let r = cli(&kc, &[&["approve", "chat"][..], &both].concat()).await?;
    ensure!(
        r.code == 1 && r.stderr.contains("nothing awaits approval"),
        "approve with nothing pending: exit {}",
        r.code
    );
    // East's database dies; in Approve mode each site's controller asks in its own cluster's copy,
    // with its own nonce, and nothing moves until approved.
    two.server_mut("east").kill9();
    for site in SITES {
        two.wait_pair(site, "chat", "a pending approval", Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| s.pending_approval.is_some())
        })
        .await
        .with_context(|| format!("{site}'s controller:\n{}", two.controller_tail(site, 30)))?;
    }
    ensure!(two.witness_epoch("chat")?.is_empty(), "an epoch was taken before the approval");
    let r = cli(&kc, &[&["status", "chat"][..], &both].concat()).await?;
    ensure!(r.code == 0 && r.stdout.contains("AwaitingApproval"), "{}", r.stdout);
    let r = cli(&kc, &[&["approve", "chat", "--wait", "--timeout", "30s"][..], &both].concat()).await?;
    let nonces: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("approved failover"))
        .filter_map(|l| l.split("dr.understudy.dev/approve=").nth(1)?.split(' ').next())
        .collect();
    ensure!(nonces.len() == 2 && nonces[0] != nonces[1], "each copy approved with its own nonce: {nonces:?}");
    // The approval stands until the failover starts (it waits for east's leader key to lapse
    // first): the failover runs once, approved, and the plugin reports it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = two.witness_epoch("chat")?;
    let tails =
        || format!("east:\n{}\nwest:\n{}", two.controller_tail("east", 30), two.controller_tail("west", 30));
    match r.code {
        0 => {
            ensure!(r.stdout.contains("result: Completed — west serves at epoch 1"), "{}", r.stdout);
            ensure!(r.stdout.contains("trigger Approved"), "{}", r.stdout);
            ensure!(w.starts_with("1 ") && w.trim_end().ends_with("/1/west"), "witness: {w}");
            eprintln!("approve: the failover ran once");
        }
        c => anyhow::bail!("approve exited {c}: {}\n{}", r.stderr, tails()),
    }
    Ok(())
}

/// A drill through the plugin across two clusters, under the plugin's own traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_through_the_plugin_across_two_clusters() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut two = TwoSites::start("cli-drill").await?;
    let objectives = understudy::crd::Objectives {
        rto: Some(understudy_e2e::pair::duration("30s")),
        rpo: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity("0".into())),
    };
    two.apply(&two.pair("chat").spec(|s| s.objectives = Some(objectives))).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    two.wait_east_serving("chat").await?;
    for site in SITES {
        two.wait_healthy(site, "chat", "east").await?;
    }
    let kc = kubeconfig(&two)?;
    let both = ["--context", "east", "--context", "west"];
    // The application's path: both sites' PgBouncers, whichever is writable (the password from
    // $PGPASSWORD, so it is in no command line).
    let ports: Vec<String> = SITES.iter().map(|s| two.cluster(s).pgb.port.to_string()).collect();
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={} dbname=app user={} target_session_attrs=read-write",
        ports.join(","),
        two.pg.user
    );
    let r = cli_env(
        &kc,
        &[&["drill", "chat", "--writer-dsn", &dsn, "--timeout", "240s"][..], &both].concat(),
        &[("PGPASSWORD", &two.pg.password)],
    )
    .await?;
    let tails =
        || format!("east:\n{}\nwest:\n{}", two.controller_tail("east", 30), two.controller_tail("west", 30));
    ensure!(r.code == 0, "drill exited {}: {}\n{}", r.code, r.stderr, tails());
    ensure!(r.stdout.contains("result: Passed"), "{}", r.stdout);
    ensure!(
        r.stdout.contains("  east → west: Completed") && r.stdout.contains("  west → east: Completed"),
        "{}",
        r.stdout
    );
    ensure!(r.stdout.matches("— objectives Met: ").count() == 2, "both legs judged Met: {}", r.stdout);
    ensure!(r.stdout.contains("objectives: RTO 30s, RPO 0"), "{}", r.stdout);
    ensure!(r.stdout.contains(", lost 0\n"), "no acknowledged write lost: {}", r.stdout);
    ensure!(
        !r.stdout.contains(&two.pg.password) && !r.stderr.contains(&two.pg.password),
        "the password is never printed"
    );
    for site in SITES {
        two.wait_pair(site, "chat", "epoch 2 mirrored", Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| s.epoch.0 == 2 && s.current_primary.as_deref() == Some("east"))
        })
        .await?;
    }
    let r = cli(&kc, &[&["status", "chat"][..], &both].concat()).await?;
    ensure!(r.code == 0 && r.stdout.contains("last drill (in east): drill drill-"), "{}", r.stdout);
    ensure!(
        r.stdout.contains("objectives (RTO 30s, RPO 0): at risk — spec.objectives.rpo 0 needs"),
        "{}",
        r.stdout
    );
    let r = cli(&kc, &[&["status", "chat", "-o", "json"][..], &both].concat()).await?;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).context("status -o json")?;
    ensure!(v["clusters"][0]["lastDrill"]["outcome"] == "Passed", "{v}");
    Ok(())
}
