//! `understudy-bench two-cluster`: two sites, two Kubernetes clusters (`TwoSites`), the whole
//! serving site lost and brought back, over and over on one bed per lease TTL. Each run kills the
//! site that serves (its kube-apiserver and etcd, its controller, its PostgreSQL, its PgBouncer, its
//! app), waits until the other site serves (its journal `Completed`, a write acknowledged by it, its
//! app activated), brings the lost site back (PostgreSQL first or its controller first, alternating
//! every two runs) with a writer hammering its PostgreSQL directly, waits until it follows, and then
//! until the pair is Healthy in both clusters again. So runs alternate east → west and west → east
//! (the pair fails back by an automatic failover; `cooldown: 0s` lets it). The figures come from
//! `understudy_e2e::site_loss`, the same code the demo prints.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use understudy_e2e::{
    site_loss::{lose_site, return_site, wait_serving, Comeback, Loss},
    support::wait_for,
    two_sites::{Return, TwoSites, SITES},
    workload::{self, Workload},
};

use crate::table::{cell, Grid, Summary};

/// The pair's name on every bed.
const PAIR: &str = "chat";

/// The workload's write interval (through both PgBouncers).
pub const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The command line of `understudy-bench two-cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Runs per lease TTL. Each run loses the serving site whole and brings it back; runs alternate
    /// east → west and west → east on one bed per TTL, and the return's order alternates every two
    /// runs (PostgreSQL first, PostgreSQL first, controller first, controller first, …).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub runs: usize,
    /// The witness's leaseTTL values measured, in seconds (`4`, `4s`), each on its own bed; 2..300
    /// (leaseTTL ≥ 4 × the bed's probeTimeout of 500 ms).
    #[arg(
        long = "lease-ttls",
        alias = "lease-ttl",
        value_name = "SECONDS,…",
        value_delimiter = ',',
        default_value = "4,10",
        value_parser = lease_ttl
    )]
    pub lease_ttls: Vec<u32>,
    /// Time between the returning site's PostgreSQL and its controller, in either order (`3s`,
    /// `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = gap)]
    pub gap: Duration,
    /// Cross-cluster switchovers per lease TTL, after its losses and returns, on the same bed:
    /// annotated alternately on the serving site's copy and on the other copy, each one the way back
    /// of the one before.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub switchovers: usize,
}

fn lease_ttl(v: &str) -> Result<u32, String> {
    let t: u32 =
        v.trim().trim_end_matches('s').parse().map_err(|e| format!("{v:?} is not whole seconds: {e}"))?;
    if !(2..=300).contains(&t) {
        return Err(format!("{t} s is outside 2..300 s (leaseTTL ≥ 4 × probeTimeout 500 ms)"));
    }
    Ok(t)
}

fn gap(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (n, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (v.trim_end_matches('s'), 1.0),
    };
    let secs: f64 = n.parse().map_err(|e| format!("{v:?} is not a duration such as 3s or 500ms: {e}"))?;
    if !(0.0..=60.0).contains(&(secs * scale)) {
        return Err(format!("{v} is outside 0..60 s"));
    }
    Ok(Duration::from_secs_f64(secs * scale))
}

/// One run: the serving site lost, then back.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub lease_ttl_s: u32,
    /// The run's index on its TTL (0-based).
    pub index: usize,
    pub loss: Loss,
    pub comeback: Comeback,
    /// The return began → the pair Healthy in both clusters again with the leader key held, the boot
    /// gate armed, the apps scaled (`site_loss::wait_serving`), seconds.
    pub settled: f64,
}

/// One planned switchover across the clusters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Switch {
    pub lease_ttl_s: u32,
    pub index: usize,
    /// The cluster whose copy was annotated (its controller runs the transition).
    pub on: String,
    pub from: String,
    pub to: String,
    /// The longest time without an acknowledged write from the annotation until 50 writes went
    /// through after it, seconds (the first write after the annotation counts from the annotation).
    pub gap: f64,
    /// Client errors in that window.
    pub errors: u64,
    /// The annotation → both clusters' status at the new epoch with the new primary, seconds.
    pub mirrored: f64,
    /// The journal's rtoSeconds (request accepted → last step done).
    pub rto_seconds: Option<f64>,
}

/// What the scenario measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub argv: Vec<String>,
    pub runs: usize,
    pub switchovers: Vec<Switch>,
    pub lease_ttls: Vec<u32>,
    pub gap_s: f64,
    pub results: Vec<Run>,
    /// Acknowledged commits missing on the serving server when each bed was torn down, per TTL.
    pub lost_at_end: Vec<(u32, usize, usize)>,
    pub failures: Vec<String>,
    pub minutes: f64,
    pub load_at_start: String,
    pub load_at_end: String,
}

/// A bed for one TTL: both clusters, the pair (leaseTTL `ttl`, cooldown 0s) in both, a controller
/// per site, east serving, the workload writing.
async fn bed(label: &str, ttl: u32) -> Result<(TwoSites, Workload)> {
    let mut two = TwoSites::start(label).await?;
    let pair = two.pair(PAIR).lease_ttl(&format!("{ttl}s")).failover(|f| f.cooldown("0s"));
    two.apply(&pair).await?;
    for site in SITES {
        two.start_controller(site)?;
    }
    wait_serving(&two, PAIR, "east", 0).await?;
    let wl = two.workload("bench_writes", WRITE_EVERY).await?;
    wait_for("the workload to commit", Duration::from_secs(15), || async { Ok(wl.acked() > 20) }).await?;
    Ok((two, wl))
}

/// One run on a bed where `serving` serves: lose it, bring it back in `order`, wait until the pair
/// is healthy again with the other site serving.
async fn run_once(
    two: &mut TwoSites,
    wl: &Workload,
    serving: &str,
    order: Return,
    table: &str,
) -> Result<(Loss, Comeback, f64)> {
    let loss = lose_site(two, wl, PAIR, serving).await?;
    let comeback = return_site(two, wl, PAIR, serving, order, table).await?;
    let began: jiff::Timestamp = comeback.began_at.parse()?;
    wait_serving(two, PAIR, &loss.to, loss.epoch).await?;
    let settled = (jiff::Timestamp::now().as_microsecond() - began.as_microsecond()) as f64 / 1e6;
    Ok((loss, comeback, settled))
}

/// A switchover from `serving` annotated on `on`'s copy, measured; returns when the pair is healthy
/// again at the new epoch (the old primary following).
async fn switch_once(
    two: &TwoSites,
    wl: &Workload,
    serving: &str,
    on: &str,
    token: &str,
) -> Result<(Switch, String)> {
    let epoch = two.api(serving).get(PAIR).await?.status.map(|s| s.epoch.0).unwrap_or_default();
    let to = SITES.into_iter().find(|s| *s != serving).unwrap_or("west").to_string();
    let (before, errors_before) = (wl.acked(), wl.stats().errors);
    let annotated = std::time::Instant::now();
    let patch = serde_json::json!({"metadata": {"annotations": {"dr.understudy.dev/switchover": token}}});
    two.api(on).patch(PAIR, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    for site in SITES {
        two.wait_pair(
            site,
            PAIR,
            &format!("epoch {} with {to} serving", epoch + 1),
            Duration::from_secs(60),
            |p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.epoch.0 == epoch + 1 && s.current_primary.as_deref() == Some(&to))
            },
        )
        .await?;
    }
    let mirrored = annotated.elapsed().as_secs_f64();
    wait_for("50 writes after the switchover", Duration::from_secs(30), || async {
        Ok(wl.acked() > before + 50)
    })
    .await?;
    let st = wl.stats();
    let window: Vec<std::time::Instant> = st.acked_at.iter().copied().filter(|a| *a >= annotated).collect();
    let first = window.first().map(|a| *a - annotated).unwrap_or_default();
    let gap = window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default().max(first);
    let rto_seconds =
        two.api(on).get(PAIR).await?.status.and_then(|s| s.last_transition).and_then(|t| t.rto_seconds);
    wait_serving(two, PAIR, &to, epoch + 1).await?;
    Ok((
        Switch {
            lease_ttl_s: 0,
            index: 0,
            on: on.into(),
            from: serving.into(),
            to: to.clone(),
            gap: gap.as_secs_f64(),
            errors: st.errors - errors_before,
            mirrored,
            rto_seconds,
        },
        to,
    ))
}

/// Runs the scenario; `log` gets a line per step.
pub async fn run(a: &Args, argv: Vec<String>, log: &mut dyn FnMut(String)) -> Report {
    let began = std::time::Instant::now();
    let load_at_start = crate::loadavg();
    let mut results = Vec::new();
    let mut switchovers = Vec::new();
    let mut failures = Vec::new();
    let mut lost_at_end = Vec::new();
    for &ttl in &a.lease_ttls {
        let mut current: Option<(TwoSites, Workload)> = None;
        let mut serving = "east".to_string();
        let mut beds = 0;
        for i in 0..a.runs {
            if current.is_none() {
                beds += 1;
                log(format!(
                    "leaseTTL {ttl}s: starting a bed (two clusters, the pair in both, a controller per site)"
                ));
                match bed(&format!("tc{ttl}b{beds}"), ttl).await {
                    Ok(b) => {
                        current = Some(b);
                        serving = "east".into();
                    }
                    Err(e) => {
                        log(format!("  bed FAILED: {e:#}"));
                        failures.push(format!("leaseTTL {ttl}s bed {beds}: {e:#}"));
                        continue;
                    }
                }
            }
            let Some((two, wl)) = current.as_mut() else { continue };
            let order = if (i / 2) % 2 == 0 {
                Return::PostgresFirst { gap: a.gap }
            } else {
                Return::ControllerFirst { gap: a.gap }
            };
            log(format!(
                "leaseTTL {ttl}s run {}/{}: lose {serving} whole, then bring it back ({order:?})",
                i + 1,
                a.runs
            ));
            match run_once(two, wl, &serving, order, &format!("direct_{ttl}_{i}")).await {
                Ok((loss, c, settled)) => {
                    log(format!(
                        "  {} → {} epoch {}: key gone {:.2}s, DNS confirmed {:.2}s, first write {:.2}s, lost {}; \
                         return: accepted {} ({} refused), adopted {:.2}s after its controller, following {:.1}s \
                         after; {}'s longest gap {:.0} ms, {} errors; healthy again {:.1}s after the return began",
                        loss.from,
                        loss.to,
                        loss.epoch,
                        loss.key_gone.unwrap_or(f64::NAN),
                        loss.dns_confirmed.unwrap_or(f64::NAN),
                        loss.first_write,
                        loss.lost.len(),
                        c.accepted.len(),
                        c.refused,
                        c.mirrored_after_controller().unwrap_or(f64::NAN),
                        c.following_after_controller(),
                        c.serving,
                        c.serving_longest_gap * 1000.0,
                        c.serving_errors,
                        settled
                    ));
                    serving = loss.to.clone();
                    results.push(Run { lease_ttl_s: ttl, index: i, loss, comeback: c, settled });
                }
                Err(e) => {
                    log(format!("  run FAILED: {e:#}"));
                    failures.push(format!("leaseTTL {ttl}s run {}: {e:#}", i + 1));
                    // The bed is in an unknown state: the next run starts on a fresh one.
                    if let Some((two, wl)) = current.take() {
                        finish(ttl, two, wl, &mut lost_at_end, log).await;
                    }
                }
            }
        }
        for k in 0..a.switchovers {
            let Some((two, wl)) = current.as_mut() else { break };
            // Alternately the serving site's copy and the other one.
            let on = if k % 2 == 0 {
                serving.clone()
            } else {
                SITES.into_iter().find(|s| *s != serving).unwrap_or("west").to_string()
            };
            log(format!(
                "leaseTTL {ttl}s switchover {}/{}: from {serving}, annotated on {on}'s copy",
                k + 1,
                a.switchovers
            ));
            match switch_once(two, wl, &serving, &on, &format!("bench-{ttl}-{k}")).await {
                Ok((mut sw, to)) => {
                    log(format!(
                        "  {} → {}: longest write gap {:.0} ms, {} errors, both clusters mirrored {:.2}s, rtoSeconds {:?}",
                        sw.from, sw.to, sw.gap * 1000.0, sw.errors, sw.mirrored, sw.rto_seconds
                    ));
                    (sw.lease_ttl_s, sw.index) = (ttl, k);
                    switchovers.push(sw);
                    serving = to;
                }
                Err(e) => {
                    log(format!("  switchover FAILED: {e:#}"));
                    failures.push(format!("leaseTTL {ttl}s switchover {}: {e:#}", k + 1));
                    break;
                }
            }
        }
        if let Some((two, wl)) = current.take() {
            finish(ttl, two, wl, &mut lost_at_end, log).await;
        }
    }
    Report {
        argv,
        runs: a.runs,
        switchovers,
        lease_ttls: a.lease_ttls.clone(),
        gap_s: a.gap.as_secs_f64(),
        results,
        lost_at_end,
        failures,
        minutes: began.elapsed().as_secs_f64() / 60.0,
        load_at_start,
        load_at_end: crate::loadavg(),
    }
}

/// Stops a bed's workload and counts its acknowledged commits missing on the serving server.
async fn finish(
    ttl: u32,
    two: TwoSites,
    wl: Workload,
    lost_at_end: &mut Vec<(u32, usize, usize)>,
    log: &mut dyn FnMut(String),
) {
    let stats = wl.stop().await;
    let primary = SITES.into_iter().find(|s| {
        two.server(s).pid() != 0
            && two.server(s).psql("SELECT pg_is_in_recovery()").map(|o| o.trim() == "f").unwrap_or(false)
    });
    match primary.map(|p| two.server(p).ids("bench_writes")) {
        Some(Ok(present)) => {
            let lost = workload::lost(&stats.acked, &present).len();
            log(format!(
                "leaseTTL {ttl}s bed done: {lost} of {} acknowledged commits missing on the serving server",
                stats.acked.len()
            ));
            lost_at_end.push((ttl, lost, stats.acked.len()));
        }
        other => log(format!(
            "leaseTTL {ttl}s bed done: no serving server to count lost commits on ({:?})",
            other.map(|r| r.err().map(|e| e.to_string()))
        )),
    }
    drop(two);
}

fn summary(v: impl Iterator<Item = f64>) -> Option<Summary> {
    Summary::of(&v.collect::<Vec<_>>())
}

impl Report {
    fn of(&self, ttl: u32) -> Vec<&Run> {
        self.results.iter().filter(|r| r.lease_ttl_s == ttl).collect()
    }

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
            "bed: e2e/src/two_sites.rs TwoSites, one per leaseTTL (a fresh one after a failed run): cluster A = east, cluster B = west, each its own etcd + kube-apiserver, PgBouncer, app stand-in and controller (target/debug/understudy run --site <site>, its own kubeconfig); shared: the PostgreSQL 15 pair, BIND, the witness etcd"
        );
        let _ = writeln!(
            o,
            "pair: TwoSites::pair (per-site DataSource, PgBouncer, HTTP and rollout-restart recyclers, DNSEndpoint; shared RFC 2136; activate mattermost 2 / 0 replicas) with failover {{ mode: Automatic, probeInterval: 500ms, probeTimeout: 500ms, failureThreshold: 2, cooldown: 0s }} and coordination.etcd.leaseTTL {}",
            self.lease_ttls.iter().map(|t| format!("{t}s")).collect::<Vec<_>>().join(" / ")
        );
        let _ = writeln!(
            o,
            "each run: kill -9 of the serving site (kube-apiserver, etcd, controller, postmaster + backends, PgBouncer; app port closed) → the other site serves → the lost site back (TwoSites::revive_site, {:.1} s apart; PostgresFirst, PostgresFirst, ControllerFirst, ControllerFirst, …) → Healthy in both clusters again; runs alternate east → west and west → east; N={} per leaseTTL",
            self.gap_s,
            self.runs
        );
        let _ = writeln!(
            o,
            "clients: a workload INSERTing every {} ms over both PgBouncers (multi-host, east's first, target_session_attrs=read-write, 2 s connect timeout), recording the server port of every ack; a direct writer INSERTing every 50 ms straight into the returning PostgreSQL from before it starts",
            WRITE_EVERY.as_millis()
        );
        o
    }

    /// The table: one column per lease TTL and the goal.
    pub fn table(&self) -> Grid {
        let mut head = vec!["measurement (two clusters, whole site lost and back)".to_string()];
        head.extend(self.lease_ttls.iter().map(|t| format!("leaseTTL {t} s")));
        head.push("goal".into());
        let mut rows: Vec<Vec<String>> = Vec::new();
        let ttls = self.lease_ttls.clone();
        let mut row = |m: &str, f: &dyn Fn(u32, &[&Run]) -> String, goal: &dyn Fn(&[u32]) -> String| {
            let mut r = vec![m.to_string()];
            for &t in &ttls {
                r.push(f(t, &self.of(t)));
            }
            r.push(goal(&ttls));
            rows.push(r);
        };
        let none = |_: &[u32]| String::new();
        let s = |v: Option<Summary>, n: usize| cell(v, 2, " s", n);
        let ttl_goal = |ts: &[u32]| {
            format!(
                "median ≤ leaseTTL + 0.6 s ({})",
                ts.iter().map(|t| format!("{:.1} s", f64::from(*t) + 0.6)).collect::<Vec<_>>().join(" / ")
            )
        };
        row(
            "runs measured (east → west / west → east)",
            &|_, r| {
                let ew = r.iter().filter(|r| r.loss.from == "east").count();
                format!("{} ({ew} / {})", r.len(), r.len() - ew)
            },
            &none,
        );
        row(
            "whole-site loss → leader key gone from the witness (lease expired) ¹",
            &|_, r| s(summary(r.iter().filter_map(|r| r.loss.key_gone)), r.len()),
            &none,
        );
        row(
            "whole-site loss → failover decided (TakeEpoch start)",
            &|_, r| {
                s(
                    summary(r.iter().filter_map(|r| {
                        r.loss.steps.iter().find(|s| s.name == "TakeEpoch").and_then(|s| s.started)
                    })),
                    r.len(),
                )
            },
            &none,
        );
        let take = |r: &Run| r.loss.steps.iter().find(|s| s.name == "TakeEpoch").and_then(|s| s.started);
        row(
            "  leader key gone → failover decided (the surviving controller's next probe round wins the swap)",
            &|_, r| s(summary(r.iter().filter_map(|r| take(r).zip(r.loss.key_gone).map(|(t, k)| t - k))), r.len()),
            &none,
        );
        row(
            "  failover decided → DNS confirmed (Promote … FlipDns: the controller's share)",
            &|_, r| {
                s(
                    summary(r.iter().filter_map(|r| r.loss.dns_confirmed.zip(take(r)).map(|(d, t)| d - t))),
                    r.len(),
                )
            },
            &none,
        );
        row(
            "whole-site loss → DNS confirmed (the journal's FlipDns end)",
            &|_, r| s(summary(r.iter().filter_map(|r| r.loss.dns_confirmed)), r.len()),
            &ttl_goal,
        );
        row(
            "whole-site loss → first write acknowledged by the new primary (through its PgBouncer) ²",
            &|_, r| s(summary(r.iter().map(|r| r.loss.first_write)), r.len()),
            &ttl_goal,
        );
        row(
            "  the same, east → west / west → east (medians)",
            &|_, r| {
                let m = |from: &str| {
                    summary(r.iter().filter(|r| r.loss.from == from).map(|r| r.loss.first_write))
                        .map(|x| format!("{:.2} s", x.median))
                        .unwrap_or_else(|| "–".into())
                };
                format!("{} / {}", m("east"), m("west"))
            },
            &none,
        );
        row(
            "DNS confirmed → first write (PgBouncer's retry of the dead server, the client's reconnect) ²",
            &|_, r| {
                s(
                    summary(r.iter().filter_map(|r| r.loss.dns_confirmed.map(|d| r.loss.first_write - d))),
                    r.len(),
                )
            },
            &none,
        );
        row(
            "journal rtoSeconds (first failed probe → DNS confirmed)",
            &|_, r| s(summary(r.iter().filter_map(|r| r.loss.rto_seconds)), r.len()),
            &none,
        );
        row(
            "lost acknowledged commits per failover; total / acked ³",
            &|_, r| {
                format!(
                    "{}; {} / {}",
                    cell(summary(r.iter().map(|r| r.loss.lost.len() as f64)), 0, "", r.len()),
                    r.iter().map(|r| r.loss.lost.len()).sum::<usize>(),
                    r.iter().map(|r| r.loss.acked).max().unwrap_or(0)
                )
            },
            &|_| "0".into(),
        );
        row(
            "client errors, kill → first write on the new primary",
            &|_, r| cell(summary(r.iter().map(|r| r.loss.errors as f64)), 0, "", r.len()),
            &none,
        );
        let order = |o: &'static str| {
            move |_: u32, r: &[&Run]| -> String {
                let v: Vec<&&Run> = r.iter().filter(|r| r.comeback.order == o).collect();
                format!(
                    "{}; total {} in {} returns ({} attempts refused)",
                    cell(summary(v.iter().map(|r| r.comeback.accepted.len() as f64)), 0, "", v.len()),
                    v.iter().map(|r| r.comeback.accepted.len()).sum::<usize>(),
                    v.len(),
                    v.iter().map(|r| r.comeback.refused).sum::<u64>()
                )
            }
        };
        row(
            "writes accepted by the returning site per return, PostgreSQL first ⁴",
            &order("PostgresFirst"),
            &|_| "0".into(),
        );
        row(
            "writes accepted by the returning site per return, controller first ⁴",
            &order("ControllerFirst"),
            &|_| "0".into(),
        );
        row(
            "returning PostgreSQL in recovery when it first accepts connections (boot gate)",
            &|_, r| {
                format!("{} of {}", r.iter().filter(|r| r.comeback.in_recovery_on_return).count(), r.len())
            },
            &|_| "all".into(),
        );
        row(
            "serving site during the return: longest time without an acknowledged write ⁵",
            &|_, r| cell(summary(r.iter().map(|r| r.comeback.serving_longest_gap)), 3, " s", r.len()),
            &none,
        );
        row(
            "serving site during the return: client errors; total",
            &|_, r| {
                format!(
                    "{}; {}",
                    cell(summary(r.iter().map(|r| r.comeback.serving_errors as f64)), 0, "", r.len()),
                    r.iter().map(|r| r.comeback.serving_errors).sum::<u64>()
                )
            },
            &|_| "0".into(),
        );
        row(
            "returning controller started → its cluster's status mirrors the witness (EpochAdopted Event) ⁶",
            &|_, r| s(summary(r.iter().filter_map(|r| r.comeback.mirrored_after_controller())), r.len()),
            &none,
        );
        row(
            "  the same, PostgreSQL first / controller first (medians)",
            &|_, r| {
                let m = |o: &str| {
                    summary(
                        r.iter()
                            .filter(|r| r.comeback.order == o)
                            .filter_map(|r| r.comeback.mirrored_after_controller()),
                    )
                    .map(|x| format!("{:.2} s", x.median))
                    .unwrap_or_else(|| "–".into())
                };
                format!("{} / {}", m("PostgresFirst"), m("ControllerFirst"))
            },
            &none,
        );
        row(
            "returning controller started → former primary Following (polled every 100 ms) ⁶",
            &|_, r| s(summary(r.iter().map(|r| r.comeback.following_after_controller())), r.len()),
            &none,
        );
        row(
            "  the same, PostgreSQL first / controller first (medians) ⁷",
            &|_, r| {
                let m = |o: &str| {
                    summary(
                        r.iter()
                            .filter(|r| r.comeback.order == o)
                            .map(|r| r.comeback.following_after_controller()),
                    )
                    .map(|x| format!("{:.2} s", x.median))
                    .unwrap_or_else(|| "–".into())
                };
                format!("{} / {}", m("PostgresFirst"), m("ControllerFirst"))
            },
            &none,
        );
        row(
            "return began (its control plane restarting) → former primary Following",
            &|_, r| s(summary(r.iter().map(|r| r.comeback.following_seen)), r.len()),
            &none,
        );
        row(
            "return began → Healthy in both clusters again (leader key, boot gate, apps scaled)",
            &|_, r| s(summary(r.iter().map(|r| r.settled)), r.len()),
            &none,
        );
        let sw =
            |t: u32| -> Vec<&Switch> { self.switchovers.iter().filter(|s| s.lease_ttl_s == t).collect() };
        row(
            "cross-cluster switchovers measured (annotated on the serving copy / the other copy) ⁸",
            &|t, _| {
                let v = sw(t);
                let own = v.iter().filter(|s| s.on == s.from).count();
                format!("{} ({own} / {})", v.len(), v.len() - own)
            },
            &none,
        );
        row(
            "  longest time without an acknowledged write, from the annotation",
            &|t, _| cell(summary(sw(t).iter().map(|s| s.gap)), 3, " s", sw(t).len()),
            &|_| "≤ 0.6 s".into(),
        );
        row(
            "  the same, annotated on the serving copy / the other copy (medians)",
            &|t, _| {
                let m = |own: bool| {
                    summary(sw(t).iter().filter(|s| (s.on == s.from) == own).map(|s| s.gap))
                        .map(|x| format!("{:.3} s", x.median))
                        .unwrap_or_else(|| "–".into())
                };
                format!("{} / {}", m(true), m(false))
            },
            &none,
        );
        row(
            "  client errors per switchover",
            &|t, _| cell(summary(sw(t).iter().map(|s| s.errors as f64)), 0, "", sw(t).len()),
            &none,
        );
        row(
            "  journal rtoSeconds (request accepted → last step done)",
            &|t, _| s(summary(sw(t).iter().filter_map(|s| s.rto_seconds)), sw(t).len()),
            &none,
        );
        row(
            "  annotation → both clusters' status at the new epoch (polled)",
            &|t, _| s(summary(sw(t).iter().map(|s| s.mirrored)), sw(t).len()),
            &none,
        );
        row(
            "acknowledged commits missing on the serving server when the bed was torn down",
            &|t, _| {
                self.lost_at_end
                    .iter()
                    .filter(|(x, ..)| *x == t)
                    .map(|(_, l, a)| format!("{l} of {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            &|_| "0".into(),
        );
        row(
            "failed runs (not in the figures)",
            &|t, _| {
                self.failures.iter().filter(|f| f.starts_with(&format!("leaseTTL {t}s "))).count().to_string()
            },
            &|_| "0".into(),
        );
        Grid { head, rows, notes: NOTES.into() }
    }

    /// Prints the table and writes `target/bench/two-cluster.{md,json}`.
    pub fn write(&self) -> Result<String> {
        crate::measure::write_report(
            "two-cluster",
            "two clusters",
            &self.settings(),
            |md, text| self.table().render(md, text),
            &[("failed runs", self.failures.clone())],
            self,
        )
    }
}

/// Footnotes of the table.
const NOTES: &str = "¹ the DELETE of `<prefix>/<ns>/chat/leader` seen by an `etcdctl watch` started before the kill; the lost site's last keepalive (every leaseTTL/5) restarted the lease, and etcd checks expiry every 500 ms, so it lands between leaseTTL − leaseTTL/5 and leaseTTL + 0.5 s after the kill.\n\
² first write = the first INSERT acknowledged, after the kill, by the new primary's server (`inet_server_port()`); after a whole-site loss the only PgBouncer left is the new primary's own. The gap after DNS is the client side: the surviving PgBouncer had been pointing at the dead server, retries it every `server_login_retry` (1 s in the sandbox), and holds queued clients until its next retry even after the controller's RELOAD pointed it at the new primary; the client's own 2 s connect timeout adds to it when a connect was already waiting.\n\
³ every id the workload ever had acknowledged, looked up on the new primary after each failover.\n\
⁴ a writer straight at the returning PostgreSQL every 50 ms (database `postgres`, no PgBouncer), started before it comes back; every ack counts, whatever its time; the returning server's boot gate (`standby.signal`, armed by its keeper while it served) makes it start as a standby.\n\
⁵ from the start of the return (the lost cluster's control plane restarting) to Following seen, the longest interval between two acks by the serving server, the window's edges counting as acks; it includes the client's write interval (20 ms) and its retry delays.\n\
⁶ the controller's start = `TwoSites::revive_site` spawning the process; EpochAdopted = that Event's eventTime in the returning cluster (the controller's clock, the same machine); Following = the first 100 ms poll of the returning cluster's status that showed `formerPrimary` Following (the rejoin hook, `pg_rewind` and restart as a standby of the serving site, runs in between).\n\
⁷ with the controller first, its PostgreSQL comes up only `gap` after it, so Following cannot come before that.\n\
⁸ after the losses and returns, on the same bed: `dr.understudy.dev/switchover=<token>` put on one cluster's copy (alternately the serving site's and the other's; that cluster's controller claims it in the witness and runs it), each the way back of the one before, the old primary rejoined and the pair Healthy in both clusters before the next; the gap is the workload's (20 ms INSERTs over both PgBouncers, multi-host, read-write), from the annotation until 50 writes went through after it; its lost commits are in the bed's count at tear-down.";
