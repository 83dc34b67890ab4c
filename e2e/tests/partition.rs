//! Network partitions between real processes (nftables rules by socket owner, `sandbox::netcut`),
//! with one controller per site, each under its own user id, coordinated through the witness etcd:
//!
//! - the primary site cut off from the witness and from the standby → the primary fences itself,
//!   the standby promotes exactly once after the leader key's lease expired, and no write is ever
//!   acknowledged by both sides (`make chaos N=50` repeats it);
//! - the primary cut off from the witness only → it fences itself, and the standby, which still
//!   sees it (fenced, so down for writes), takes over once;
//! - the witness down → the primary fences itself, nothing is promoted, and when the witness
//!   returns the primary takes its key back and serves again.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use understudy::crd::{conditions, ConditionStatus};
use understudy_e2e::{
    bed::Bed,
    pair::{Automatic, Failover},
    sandbox::{netcut, proc::Proc},
    support::{condition, wait_for},
    workload::{Stats, Workload},
};

/// Lease 4 s: the primary fences itself after 2 s without renewal, within probeTimeout (500 ms).
fn failover(f: Failover) -> Failover {
    f.mode(Automatic).probe_interval("500ms").probe_timeout("500ms").failure_threshold(2)
}
const LEASE_TTL: &str = "4s";

struct Sites {
    bed: Bed,
    east_uid: u32,
    west_uid: u32,
    east: Proc,
    _west: Proc,
    /// Writes straight to the east database, as the primary site's own clients would.
    direct: Workload,
}

/// `site_users`: run each controller under its own user id (so the network can be cut per site);
/// without, they run as root and can run the sandbox's rejoin hook (it restarts PostgreSQL).
async fn two_site_bed(label: &str, site_users: bool) -> Result<Sites> {
    two_site_bed_with(label, site_users, failover).await
}

async fn two_site_bed_with(
    label: &str,
    site_users: bool,
    failover: impl FnOnce(Failover) -> Failover,
) -> Result<Sites> {
    let bed = Bed::start(label).await?;
    bed.pair("chat").failover(failover).lease_ttl(LEASE_TTL).create(&bed.client, &bed.ns).await?;
    let (east_uid, west_uid) = (netcut::site_uid(0), netcut::site_uid(1));
    // The controllers run under their own user ids and rewrite PgBouncer's include file.
    let dbfile = bed.pgb.databases_file();
    for (mode, path) in [("0777", dbfile.parent().context("databases file dir")?), ("0666", dbfile.as_path())]
    {
        std::process::Command::new("chmod").arg(mode).arg(path).status()?;
    }
    let (east, west) = if site_users {
        (bed.controller_process_as("east", east_uid, &[])?, bed.controller_process_as("west", west_uid, &[])?)
    } else {
        (bed.controller_process("east", &[])?, bed.controller_process("west", &[])?)
    };
    bed.wait_healthy("chat").await?;
    wait_for("east to hold the leader key", Duration::from_secs(20), || async {
        Ok(bed.witness_leader("chat")? == "0 east")
    })
    .await?;
    let direct = Workload::start(
        "127.0.0.1",
        bed.pg.primary.port,
        "postgres",
        &bed.pg.user,
        &bed.pg.password,
        "direct_east",
        Duration::from_millis(10),
    )
    .await?;
    wait_for("direct writes on east", Duration::from_secs(10), || async { Ok(direct.acked() > 20) }).await?;
    Ok(Sites { bed, east_uid, west_uid, east, _west: west, direct })
}

/// What one partition trial measured.
struct Trial {
    /// East's last acknowledged direct write after the cut (≈ the self-fence), since the cut.
    east_last_ack: Duration,
    /// West's epoch swap (its earliest moment as a primary), since the cut.
    west_took_epoch: Duration,
    /// Direct writes east acknowledged at or after west took the epoch (dual-writable): must be 0.
    east_acks_after_swap: usize,
}

impl Trial {
    fn margin(&self) -> f64 {
        self.west_took_epoch.as_secs_f64() - self.east_last_ack.as_secs_f64()
    }
}

fn rfc3339_since(ts: &str, cut_wall: SystemTime) -> Result<Duration> {
    let t: jiff::Timestamp = ts.parse().with_context(|| format!("timestamp {ts:?}"))?;
    let wall = SystemTime::UNIX_EPOCH + Duration::from_nanos(t.as_nanosecond() as u64);
    wall.duration_since(cut_wall).context("the swap happened before the cut")
}

/// Waits for west's failover, then checks the outcome and measures the trial.
async fn judge(s: Sites, cut_at: Instant, cut_wall: SystemTime) -> Result<Trial> {
    let drp = s.bed.wait_transition_finished("chat", Duration::from_secs(60)).await?;
    let st = drp.status.clone().unwrap_or_default();
    let t = st.last_transition.clone().context("no transition")?;
    ensure!(t.outcome.map(|o| o.as_str()) == Some("Completed"), "transition outcome {:?}", t.outcome);
    ensure!(
        t.from == "east" && t.to == "west" && t.holder == "west",
        "transition {} → {} by {}",
        t.from,
        t.to,
        t.holder
    );
    // Give any second actor the chance to do harm before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = s.bed.api().get("chat").await?.status.unwrap_or_default();
    ensure!(st.epoch.0 == 1, "epoch {} after one failover", st.epoch.0);
    let etcd = s.bed.witness_epoch("chat")?;
    ensure!(etcd.starts_with("1 west "), "etcd epoch {etcd:?}");
    ensure!(s.bed.pg.standby.timeline()? == 2, "west promoted more than once or not at all");
    ensure!(
        s.bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim() == "on",
        "east is not fenced"
    );
    let east_log = std::fs::read_to_string(&s.east.log).unwrap_or_default();
    ensure!(east_log.contains("self-fenced"), "east never fenced itself:\n{}", s.east.tail(30));

    let took = t.steps.iter().find(|x| x.name == "TakeEpoch").and_then(|x| x.started_at.clone());
    let west_took_epoch = rfc3339_since(&took.context("TakeEpoch never started")?, cut_wall)?;
    let stats: Stats = s.direct.stop().await;
    let after_cut: Vec<Duration> =
        stats.acked_at.iter().filter(|a| **a >= cut_at).map(|a| a.duration_since(cut_at)).collect();
    let east_last_ack = after_cut.last().copied().unwrap_or_default();
    let east_acks_after_swap = after_cut.iter().filter(|a| **a >= west_took_epoch).count();
    Ok(Trial { east_last_ack, west_took_epoch, east_acks_after_swap })
}

async fn full_partition_trial(round: usize) -> Result<Trial> {
    let s = two_site_bed("partition", true).await?;
    let cut = netcut::Partition::new()?;
    let postgres_uid: u32 = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()?
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect::<String>()
        .trim()
        .parse()?;
    let (east_pg, west_pg) = (s.bed.pg.primary.port, s.bed.pg.standby.port);
    // The primary site (east's controller) loses the witness and the standby site; the standby
    // site (west's controller, west's WAL receiver, and PgBouncer with the app behind it) loses east.
    let cut_wall = SystemTime::now();
    let cut_at = Instant::now();
    cut.cut(s.east_uid, s.bed.witness.port)?;
    cut.cut(s.east_uid, west_pg)?;
    cut.cut(s.west_uid, east_pg)?;
    cut.cut(postgres_uid, east_pg)?;
    let trial = judge(s, cut_at, cut_wall)
        .await
        .with_context(|| format!("round {round}, rules:\n{}", cut.describe()))?;
    eprintln!(
        "round {round}: east's last write {:.2}s after the cut, west took the epoch at {:.2}s: margin {:.2}s, \
         east writes after west's swap: {}",
        trial.east_last_ack.as_secs_f64(),
        trial.west_took_epoch.as_secs_f64(),
        trial.margin(),
        trial.east_acks_after_swap
    );
    Ok(trial)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_site_cut_off_fences_itself_and_the_standby_promotes_once() -> Result<()> {
    let rounds: usize = std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut trials = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=rounds {
        match full_partition_trial(round).await {
            Ok(t) => trials.push(t),
            Err(e) => {
                eprintln!("round {round} FAILED: {e:#}");
                failures.push(format!("round {round}: {e:#}"));
            }
        }
    }
    let dual: usize = trials.iter().map(|t| t.east_acks_after_swap).sum();
    let margins: Vec<f64> = trials.iter().map(Trial::margin).collect();
    eprintln!(
        "{rounds} partitions: {} failed, {} dual-writable writes; self-fence margin (east's last write → west's \
         epoch swap) median {:.2}s, min {:.2}s, max {:.2}s",
        failures.len(),
        dual,
        median(margins.clone()),
        margins.iter().copied().fold(f64::INFINITY, f64::min),
        margins.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !failures.is_empty() {
        bail!("{} of {rounds} rounds failed:\n{}", failures.len(), failures.join("\n"));
    }
    ensure!(dual == 0, "{dual} writes acknowledged by east after west took the epoch");
    ensure!(margins.iter().all(|m| *m > 0.0), "a non-positive self-fence margin: {margins:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_witness_only_is_replaced_by_the_standby() -> Result<()> {
    let s = two_site_bed("witnesscut", true).await?;
    let cut = netcut::Partition::new()?;
    let cut_wall = SystemTime::now();
    let cut_at = Instant::now();
    cut.cut(s.east_uid, s.bed.witness.port)?;
    let api = s.bed.api();
    // East fences itself; west still reaches east, sees it fenced (down for writes), and waits for
    // the lease to expire before it takes over.
    wait_for("east to report its self-fence", Duration::from_secs(20), || async {
        Ok(condition(&api.get("chat").await?, conditions::LEADER_KEY).is_some_and(|c| c.1 == "SelfFenced"))
    })
    .await?;
    let trial = judge(s, cut_at, cut_wall).await.with_context(|| cut.describe())?;
    eprintln!(
        "witness cut: east's last write {:.2}s, west's swap {:.2}s, margin {:.2}s",
        trial.east_last_ack.as_secs_f64(),
        trial.west_took_epoch.as_secs_f64(),
        trial.margin()
    );
    ensure!(trial.east_acks_after_swap == 0, "{} east writes after west's swap", trial.east_acks_after_swap);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_witness_down_the_primary_fences_itself_and_serves_again_when_it_returns() -> Result<()> {
    let mut s = two_site_bed("witnessdown", true).await?;
    let api = s.bed.api();
    let before = s.direct.acked();
    s.bed.witness.kill();
    wait_for("east to fence itself", Duration::from_secs(20), || async {
        Ok(condition(&api.get("chat").await?, conditions::LEADER_KEY).is_some_and(|c| c.1 == "SelfFenced"))
    })
    .await?;
    ensure!(s.bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim() == "on", "east not fenced");
    // Past the lease: nothing may be promoted while nobody can reach the witness.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fenced_acks = s.direct.acked();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(s.direct.acked() == fenced_acks, "east acknowledged writes while fenced");
    ensure!(s.bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim() == "t", "west was promoted");
    wait_for("FailoverBlocked/WitnessUnavailable", Duration::from_secs(10), || async {
        Ok(condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED)
            .is_some_and(|c| c.0 == ConditionStatus::True && c.1 == "WitnessUnavailable"))
    })
    .await?;

    s.bed.witness.restart()?;
    wait_for("east to take its key back and lift the fence", Duration::from_secs(30), || async {
        Ok(condition(&api.get("chat").await?, conditions::LEADER_KEY).is_some_and(|c| c.1 == "LeaderKeyHeld")
            && s.bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim() == "off")
    })
    .await?;
    wait_for("direct writes to resume on east", Duration::from_secs(20), || async {
        Ok(s.direct.acked() > fenced_acks + 20)
    })
    .await?;
    wait_for("the pair to be healthy again", Duration::from_secs(30), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.phase).map(|p| format!("{p:?}")).as_deref()
            == Some("Healthy"))
    })
    .await?;
    let st = api.get("chat").await?.status.unwrap_or_default();
    ensure!(st.epoch.0 == 0 && st.last_transition.is_none(), "a transition ran: epoch {}", st.epoch.0);
    ensure!(s.bed.witness_leader("chat")? == "0 east", "leader key {:?}", s.bed.witness_leader("chat")?);
    eprintln!(
        "witness down: {} direct writes before, {} at the fence, resumed after the restart",
        before, fenced_acks
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_with_a_controller_per_site_move_the_leader_key_and_writes_keep_flowing() -> Result<()> {
    // Gentler probes than the partition trials: a loaded CI machine must not make a healthy primary
    // look down in the middle of a planned switchover.
    let s = two_site_bed_with("twosite-switch", false, |f| {
        f.mode(Automatic).probe_interval("500ms").probe_timeout("500ms").failure_threshold(4)
    })
    .await?;
    let wl = s.bed.workload("app_writes", Duration::from_millis(10)).await?;
    wait_for("the workload to commit", Duration::from_secs(10), || async { Ok(wl.acked() > 20) }).await?;
    let mut primary = "east";
    for i in 1..=2i64 {
        let target = if primary == "east" { "west" } else { "east" };
        s.bed.annotate("chat", "dr.understudy.dev/switchover", &format!("two-site-{i}")).await?;
        let drp = s.bed.wait_epoch_finished("chat", i, Duration::from_secs(60)).await?;
        let t = drp.status.and_then(|s| s.last_transition).context("transition")?;
        ensure!(
            t.kind.as_str() == "Switchover"
                && t.outcome.map(|o| o.as_str()) == Some("Completed")
                && t.to == target,
            "switchover {i}: {} {:?} to {}; steps: {:?}",
            t.kind,
            t.outcome,
            t.to,
            t.steps
                .iter()
                .map(|x| format!("{} {:?}: {:?}", x.name, x.outcome, x.message))
                .collect::<Vec<_>>()
        );
        wait_for(&format!("{target} to hold the leader key"), Duration::from_secs(20), || async {
            Ok(s.bed.witness_leader("chat")? == format!("{i} {target}"))
        })
        .await?;
        // The old primary's keeper saw the epoch move: it fences its database only, never the
        // PgBouncer the new primary has resumed, so writes keep flowing well past its reaction time.
        // Flowing, not fast: a loaded CI machine may write slowly, so the check is that commits are
        // acknowledged by the new primary in every second of the 4 s after the key moved.
        let start = std::time::Instant::now();
        let port = s.bed.server(target).port;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let st = wl.stats();
        let per_second: Vec<usize> = (0..4u32)
            .map(|k| {
                let (a, b) =
                    (start + Duration::from_secs(k.into()), start + Duration::from_secs((k + 1).into()));
                st.acked_at
                    .iter()
                    .zip(&st.acked_port)
                    .filter(|(t, p)| **t >= a && **t < b && **p == port)
                    .count()
            })
            .collect();
        ensure!(
            per_second.iter().all(|n| *n > 0),
            "writes stalled after switchover {i}: commits acknowledged by {target} per second: {per_second:?}"
        );
        primary = target;
        s.bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    }
    let stats = wl.stop().await;
    let missing = understudy_e2e::workload::lost(&stats.acked, &s.bed.server(primary).ids("app_writes")?);
    ensure!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    Ok(())
}

/// The standby watches the witness: once the primary site's leader key is gone (deleted here by
/// hand, as a confirmed site fence or a lease expiry does), the standby's takeover starts at once,
/// not at its next probe round (probes every 2 s here, and a 20 s lease, so neither explains a
/// quick start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_as_soon_as_the_leader_key_is_gone() -> Result<()> {
    let after = takeover_after_the_key_is_deleted("keywatch", "2s", "500ms", false).await?;
    // Well under a probe round (2 s); a reconcile round with one dead and one live probe.
    ensure!(after < 0.7, "west took the epoch {after:.2} s after the key was deleted");
    Ok(())
}

/// The same with east's database black-holed (every packet to its port dropped: no RST) and
/// probes of 3 s × 2 with a 3 s timeout: each probe of east waits out those 3 s, and the round
/// under way when the key goes no longer holds the takeover back until that probe's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_primarys_hanging_probe_does_not_hold_the_takeover_back() -> Result<()> {
    let after = takeover_after_the_key_is_deleted("keywatch-bh", "3s", "3s", true).await?;
    ensure!(after < 0.5, "west took the epoch {after:.2} s after the key was deleted (probe timeout 3 s)");
    Ok(())
}

/// East holds the key, its controller frozen, its database killed (or black-holed); once west
/// refuses for the held key, the key is deleted by hand: seconds from the deletion to the end of
/// west's TakeEpoch.
async fn takeover_after_the_key_is_deleted(
    label: &str,
    every: &str,
    timeout: &str,
    black_hole: bool,
) -> Result<f64> {
    let mut bed = Bed::start(label).await?;
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval(every).probe_timeout(timeout).failure_threshold(2))
        .lease_ttl("20s")
        .create(&bed.client, &bed.ns)
        .await?;
    let east = bed.controller_process("east", &[])?;
    let _west = bed.controller_process("west", &[])?;
    wait_for("east to hold the leader key", Duration::from_secs(30), || async {
        Ok(bed.witness_leader("chat")? == "0 east")
    })
    .await?;
    // The standby's lag measured first: east can hold the key before any round wrote a status, and
    // a primary killed before its lag was ever seen is rightly refused (LagOverBudget), not kept
    // waiting for the key.
    let api = bed.api();
    wait_for("the pair Healthy with its lag measured", Duration::from_secs(30), || async {
        let st = api.get("chat").await?.status.unwrap_or_default();
        Ok(st.phase == Some(understudy::crd::Phase::Healthy) && st.replication_lag_bytes.is_some())
    })
    .await?;
    // East's controller frozen (it neither renews nor releases the key), then its database killed
    // or cut off.
    east.signal("STOP")?;
    let cut = netcut::Partition::new()?;
    if black_hole {
        cut.black_hole(bed.pg.primary.port)?;
    } else {
        bed.pg.primary.kill9();
    }
    wait_for("west refused for the live leader key", Duration::from_secs(30), || async {
        match condition(&api.get("chat").await?, conditions::FAILOVER_BLOCKED) {
            Some((s, r, _)) if s == ConditionStatus::True && r == conditions::reasons::LEADER_KEY_HELD => {
                Ok(true)
            }
            // Kept as the last error, so that a timeout says where the pair stood.
            other => bail!("FailoverBlocked is {other:?}"),
        }
    })
    .await?;
    if black_hole {
        // Into a round whose probe of east hangs: its 3 s timeout, not the deletion, would end it.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let deleted = jiff::Timestamp::now();
    bed.witness.etcdctl(&["del", &format!("/understudy/{}/chat/leader", bed.ns)])?;
    let drp = bed.wait_epoch_finished("chat", 1, Duration::from_secs(30)).await?;
    east.signal("CONT")?;
    cut.heal()?;
    let t = drp.status.and_then(|s| s.last_transition).context("journal")?;
    let took: jiff::Timestamp = t
        .steps
        .iter()
        .find(|s| s.name == "TakeEpoch")
        .and_then(|s| s.finished_at.as_deref())
        .context("TakeEpoch finished")?
        .parse()?;
    let after = took.duration_since(deleted).as_secs_f64();
    eprintln!("leader key deleted → west's epoch swap: {:.0} ms (black hole: {black_hole})", after * 1000.0);
    ensure!(t.to == "west", "promoted {}", t.to);
    Ok(after)
}
