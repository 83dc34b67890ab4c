//! `make demo`: two sites, two Kubernetes clusters, and the whole primary site lost and back.
//!
//! It starts one control plane per site (cluster A = east, cluster B = west: each its own etcd and
//! kube-apiserver), a PostgreSQL 15 primary (east) and streaming standby (west), a PgBouncer and an
//! application stand-in per site, BIND9 and a witness etcd; applies the same `DisasterRecoveryPair`
//! to both clusters and runs one `understudy` controller per site; drives a workload that commits
//! through both PgBouncers and records which server acknowledged each commit. Then:
//!
//! 1. it kills the whole east site at once (its kube-apiserver and etcd, its controller, its
//!    PostgreSQL, its PgBouncer, its app) and prints what west's controller did, from cluster B's
//!    journal, with the RTO and the acknowledged commits lost;
//! 2. it brings east back, PostgreSQL first and its controller 3 s later (nobody watches the old
//!    primary meanwhile), while a writer hammers east's PostgreSQL directly, and prints what east's
//!    server accepted (nothing) and how cluster A converged on the witness.
//!
//! Every claim it prints is checked: a write accepted by the returning site, a lost acknowledged
//! commit or a status that does not converge ends it with a non-zero exit. Everything it started
//! is stopped when it exits.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use understudy_e2e::{
    sandbox::proc::run,
    site_loss::{self, dns_target, lose_site, replicas, return_site, wait_serving, Comeback, Loss},
    two_sites::{Return, TwoSites, LEASE_TTL, SITES},
};

const PAIR: &str = "chat";
/// How long east's PostgreSQL runs before its controller starts.
const GAP: Duration = Duration::from_secs(3);

fn cluster_name(site: &str) -> &'static str {
    if site == "east" {
        "cluster A (east)"
    } else {
        "cluster B (west)"
    }
}

/// `kubectl get drp` in each cluster, with that cluster's own kubectl.
fn get_drp(two: &TwoSites) -> Result<()> {
    for site in SITES {
        let mut cmd = two.cluster(site).kubectl();
        cmd.args(["-n", &two.ns, "get", "drp"]);
        let text = run(&mut cmd).with_context(|| format!("kubectl get drp in {}", cluster_name(site)))?;
        println!("   {} $ kubectl get drp", cluster_name(site));
        for l in text.lines() {
            println!("     {l}");
        }
    }
    Ok(())
}

fn secs(x: Option<f64>) -> String {
    x.map(|x| format!("{x:+8.3}s")).unwrap_or_else(|| "        -".into())
}

/// Prints `(time, line)` rows in time order (rows without a time last).
fn rows(mut v: Vec<(Option<f64>, String)>) {
    v.sort_by(|a, b| a.0.unwrap_or(f64::MAX).total_cmp(&b.0.unwrap_or(f64::MAX)));
    for (_, l) in v {
        println!("   {l}");
    }
}

fn timeline(l: &Loss) {
    println!("== timeline (times from the kill; steps from cluster B's journal, lastTransition.steps)");
    let blank = " ".repeat(9);
    let ev = |t: Option<f64>, what: String| (t, format!("{}  {blank}  {what}", secs(t)));
    let mut v = vec![
        ev(Some(0.0), "east site killed (kill -9)".into()),
        ev(l.first_failed_probe, "west's first failed probe of east (lastTransition.startedAt)".into()),
        ev(
            l.key_gone,
            format!("east's leader key gone from the witness: its lease ({LEASE_TTL}) expired unrenewed"),
        ),
        ev(Some(l.first_write), "first write acknowledged by west (through a PgBouncer)".into()),
        ev(l.activated, "west's app activated (cluster B status.activated)".into()),
    ];
    for s in &l.steps {
        v.push((
            s.started,
            format!(
                "{}→{}  {:<17} {:<9} {}",
                secs(s.started),
                secs(s.finished),
                s.name,
                s.outcome,
                short(&s.message, 100)
            ),
        ));
    }
    rows(v);
}

fn comeback(c: &Comeback) {
    println!("== east's return (times from cluster A's control plane restarting)");
    let s = |x: f64| Some(x);
    let ev = |t: Option<f64>, what: String| (t, format!("{}  {what}", secs(t)));
    rows(vec![
        ev(
            s(0.0),
            "cluster A's etcd and kube-apiserver restarting (same data: the pair and Secrets as they were)"
                .into(),
        ),
        ev(s(c.cluster_ready), "cluster A's kube-apiserver ready".into()),
        ev(
            s(c.postgres_ready),
            format!(
                "east's PostgreSQL accepts connections: pg_is_in_recovery() = {}",
                if c.in_recovery_on_return {
                    "t, a standby (the boot gate its keeper armed while east served)"
                } else {
                    "f  <-- WRITABLE: no boot gate"
                }
            ),
        ),
        ev(s(c.controller_started), "east's controller started".into()),
        ev(
            c.epoch_adopted,
            format!("Event EpochAdopted in cluster A: currentPrimary west, epoch {}", c.epoch),
        ),
        ev(
            s(c.demoted_seen),
            format!("LeaderKey False SiteDemoted (seen): {}", short(&c.demoted_message, 80)),
        ),
        ev(
            c.repointed,
            format!(
                "east's own objects repointed at west (status.siteObjects; Event: {})",
                short(after_colon(&c.repointed_note), 90)
            ),
        ),
        ev(
            c.deactivated,
            format!("east's app deactivated (status.activated): {}", short(&c.deactivated_note, 80)),
        ),
        ev(c.rejoined, "east's rejoin hook succeeded (pg_rewind; east restarted as west's standby)".into()),
        ev(
            s(c.following_seen),
            format!("formerPrimary east Following (seen): {}", short(&c.following_message, 80)),
        ),
    ]);
}

/// What follows "…: " in a note that starts with its context.
fn after_colon(s: &str) -> &str {
    s.rsplit_once(" now point at west: ").map(|(_, r)| r).unwrap_or(s)
}

fn short(s: &str, n: usize) -> String {
    // The part after the first colon says what was done; keep it short for a terminal.
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 3).collect::<String>() + "..."
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let t0 = std::time::Instant::now();
    println!("== starting two sites, two Kubernetes clusters, on loopback (real processes, nothing mocked)");
    let mut two = TwoSites::start("demo").await?;
    for site in SITES {
        let c = two.cluster(site);
        println!(
            "   {}: kube-apiserver {} at {} (own etcd); PgBouncer :{}; app :{}",
            cluster_name(site),
            c.cp.version,
            c.cp.url,
            c.pgb.port,
            c.app.port
        );
    }
    println!(
        "   shared: PostgreSQL 15 east :{} (primary) → west :{} (streaming standby); BIND :{} (chat.example.test); \
         witness etcd {}  ({:.1}s)",
        two.server("east").port,
        two.server("west").port,
        two.bind.port,
        two.witness.endpoint,
        t0.elapsed().as_secs_f64()
    );
    let pair = two.pair(PAIR);
    two.apply(&pair).await?;
    println!(
        "== the same DisasterRecoveryPair {}/{PAIR} applied in both clusters (Automatic, probe every 500ms, 2 \
         failures confirm, witness leaseTTL {LEASE_TTL}; per-site DataSource, PgBouncer, app and DNSEndpoint \
         entries)",
        two.ns
    );
    for site in SITES {
        let pid = two.start_controller(site)?;
        println!(
            "   {}: understudy run --site {site} (pid {pid}, its own cluster's kubeconfig)",
            cluster_name(site)
        );
    }
    wait_serving(&two, PAIR, "east", 0).await?;
    get_drp(&two)?;
    println!(
        "   witness leader key: {:?} (east serves epoch 0 and renews its lease; its keeper armed east's boot gate)",
        two.witness_leader(PAIR)?
    );
    println!(
        "   mattermost Deployment: {} replicas in cluster A (active), {} in cluster B (passive)",
        replicas(&two, "east").await?,
        replicas(&two, "west").await?
    );

    let wl = two.workload("demo_writes", Duration::from_millis(50)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "== workload: an INSERT every 50 ms through both PgBouncers (east's first, target_session_attrs=read-write): \
         {} acknowledged so far; DNS chat.example.test → {:?}",
        wl.acked(),
        two.bind.dig("chat")?
    );

    println!(
        "\n== kill -9 the whole east site at once: cluster A's kube-apiserver and etcd, east's controller, \
         PostgreSQL (postmaster and backends), PgBouncer; east's app stops listening"
    );
    let loss = lose_site(&mut two, &wl, PAIR, "east").await?;
    timeline(&loss);
    println!(
        "== RTO {:.2}s (kill → first write acknowledged by west); DNS confirmed {:.2}s after the kill \
         (journal rtoSeconds {:.2}s from west's first failed probe); lost acknowledged commits {} of {}",
        loss.first_write,
        loss.dns_confirmed.unwrap_or(f64::NAN),
        loss.rto_seconds.unwrap_or(f64::NAN),
        loss.lost.len(),
        loss.acked
    );
    println!(
        "   DNS chat.example.test → {:?}; cluster B's mattermost-db and west's PgBouncer → west; the client saw {} \
         failed attempts between the kill and its first write on west",
        loss.dns_answer, loss.errors
    );
    ensure!(loss.lost.is_empty(), "acknowledged commits lost in the failover: {:?}", loss.lost);
    ensure!(
        loss.dns_answer == [dns_target("west")],
        "chat.example.test answers {:?}, not west's {}",
        loss.dns_answer,
        dns_target("west")
    );

    println!(
        "\n== east comes back, PostgreSQL first and its controller {}s later (the hardest order: nobody watches the \
         old primary meanwhile); a writer hammers east's PostgreSQL :{} directly every 50 ms",
        GAP.as_secs(),
        two.server("east").port
    );
    let c =
        return_site(&mut two, &wl, PAIR, "east", Return::PostgresFirst { gap: GAP }, "direct_east").await?;
    comeback(&c);
    println!(
        "== writes accepted by the returning site: {} ({} attempts refused)",
        c.accepted.len(),
        c.refused
    );
    println!(
        "   east's own objects in cluster A: mattermost-db → {} ; east's PgBouncer databases.ini → port {}",
        if two.secret_value("east", "mattermost-db", "dsn").await? == two.dsn("west") {
            "west"
        } else {
            "NOT west"
        },
        two.server("west").port
    );
    for (cluster, entries) in &c.activated {
        let list: Vec<String> = entries
            .iter()
            .map(|a| {
                format!(
                    "{}/{} {} replicas {} (epoch {})",
                    a.site,
                    a.name,
                    if a.active { "active" } else { "passive" },
                    a.replicas,
                    a.epoch
                )
            })
            .collect();
        println!("   status.activated in {}: {}", cluster_name(cluster), list.join("; "));
    }
    println!(
        "   west during the return: {} writes acknowledged, longest gap {:.0} ms, {} client errors",
        c.serving_writes,
        c.serving_longest_gap * 1000.0,
        c.serving_errors
    );
    get_drp(&two)?;
    let stats = wl.stop().await;
    let lost_end = understudy_e2e::workload::lost(&stats.acked, &two.server("west").ids("demo_writes")?);

    ensure!(c.in_recovery_on_return, "east's PostgreSQL came back writable (no boot gate)");
    ensure!(
        c.accepted.is_empty(),
        "the returning east acknowledged {} writes, at {:?} s after it was up",
        c.accepted.len(),
        c.accepted
    );
    ensure!(c.in_recovery_after, "east is not a standby after its return");
    ensure!(
        c.witness_epoch_after == 1 && c.leader_after == "1 west",
        "the witness moved: epoch {}, leader {:?}",
        c.witness_epoch_after,
        c.leader_after
    );
    ensure!(lost_end.is_empty(), "acknowledged commits missing on west at the end: {lost_end:?}");
    ensure!(
        c.serving_longest_gap < 2.0,
        "west's writes stalled {:.2}s during east's return",
        c.serving_longest_gap
    );
    ensure!(
        replicas(&two, "east").await? == site_loss::PASSIVE_REPLICAS
            && replicas(&two, "west").await? == site_loss::ACTIVE_REPLICAS,
        "apps not scaled: east active or west passive"
    );

    let mirrored = c.mirrored_after_controller();
    println!("\n== summary");
    println!("   RTO, whole east site lost → first write acknowledged by west   {:>7.2} s", loss.first_write);
    println!(
        "   whole east site lost → DNS confirmed (FlipDns)                {:>7.2} s",
        loss.dns_confirmed.unwrap_or(f64::NAN)
    );
    println!(
        "   lost acknowledged commits                                     {:>7} of {}",
        lost_end.len(),
        stats.acked.len()
    );
    println!(
        "   writes accepted by the returning site                         {:>7} ({} refused)",
        c.accepted.len(),
        c.refused
    );
    println!(
        "   cluster A converged (east's controller start → EpochAdopted)  {:>7.2} s",
        mirrored.unwrap_or(f64::NAN)
    );
    println!(
        "   east following west (east's controller start → Following)     {:>7.1} s",
        c.following_after_controller()
    );
    println!(
        "   west's longest write gap while east returned                  {:>7.0} ms",
        c.serving_longest_gap * 1000.0
    );
    println!("== done in {:.0}s; stopping both sites", t0.elapsed().as_secs_f64());
    Ok(())
}
