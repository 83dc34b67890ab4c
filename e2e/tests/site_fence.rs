//! The site fence hook (`spec.sites[*].fenceHook`) and the persistent fence, on real processes with
//! one controller per site and the leader key in the witness etcd:
//!
//! - the primary's postmaster SIGKILLed while its site's controller runs: SQL cannot fence a dead
//!   server, the site's hook (`examples/fence-hooks/sandbox-local.sh`: no process of the data
//!   directory left, `standby.signal` armed) confirms the fence, the key is released at once and
//!   west takes the epoch well before the lease (20 s) could have expired; east restarted comes back
//!   a read-only standby;
//! - the same with a hook that fails, or hangs past its timeout (killed with its process group,
//!   nothing it started left running): the key is left to its lease, west takes the epoch only
//!   once it expired;
//! - a server fenced by SQL stays fenced across a crash and restart (`ALTER SYSTEM` persists in
//!   `postgresql.auto.conf`), though a session may turn the default off; behind the boot gate
//!   (`standby.signal`) it comes back in recovery and refuses every write, whatever the session sets.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::events::v1::Event;
use kube::{api::ListParams, Api};
use understudy::crd::{conditions, FenceHook};
use understudy_e2e::{
    bed::Bed,
    pair::Automatic,
    support::{condition, wait_for},
};

/// Large, so that a takeover that waited for the lease cannot pass for one that did not.
const LEASE_TTL: Duration = Duration::from_secs(20);

fn sandbox_hook(data: &std::path::Path) -> FenceHook {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fence-hooks/sandbox-local.sh");
    FenceHook {
        command: vec![script.display().to_string(), "--data".into(), data.display().to_string()],
        timeout: Duration::from_secs(10).into(),
    }
}

fn failing_hook() -> FenceHook {
    FenceHook {
        command: vec!["/bin/sh".into(), "-c".into(), "echo 'the BMC did not answer' >&2; exit 1".into()],
        timeout: Duration::from_secs(5).into(),
    }
}

/// Waits until no process works in `data` (PostgreSQL's processes chdir there): backends orphaned by
/// a SIGKILLed postmaster hold its shared memory, and a new postmaster refuses to start beside them.
async fn wait_orphans_gone(data: &std::path::Path) -> Result<()> {
    let data = data.canonicalize()?;
    wait_for("the killed server's backends to exit", Duration::from_secs(20), || async {
        let left = std::fs::read_dir("/proc")?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
            .any(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == data));
        Ok(!left)
    })
    .await
}

/// A hook that never finishes: a shell waiting on a child (a distinctive `sleep`, to find leftovers).
fn hanging_hook() -> FenceHook {
    FenceHook {
        command: vec!["/bin/sh".into(), "-c".into(), format!("sleep {HANG_MARK} & wait")],
        timeout: Duration::from_secs(2).into(),
    }
}
const HANG_MARK: &str = "311.5";

/// Processes running `sleep HANG_MARK`.
fn hung_sleeps() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| c == format!("sleep\0{HANG_MARK}\0").as_bytes())
                })
                .count()
        })
        .unwrap_or(0)
}

struct Outcome {
    bed: Bed,
    east: understudy_e2e::sandbox::proc::Proc,
    /// From the SIGKILL to west's epoch swap (`TakeEpoch` started).
    took_epoch: Duration,
}

/// East serves with both sites' controllers running and holds the key; its postmaster is
/// SIGKILLed; waits for west's failover and measures the kill → epoch swap.
async fn kill_east_postmaster(
    label: &str,
    hook: impl FnOnce(&std::path::Path) -> FenceHook,
) -> Result<Outcome> {
    let mut bed = Bed::start(label).await?;
    let hook = hook(&bed.pg.primary.data);
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").probe_timeout("500ms").failure_threshold(2))
        .lease_ttl(&format!("{}s", LEASE_TTL.as_secs()))
        .site("east", |s| s.fence_hook = Some(hook))
        .create(&bed.client, &bed.ns)
        .await?;
    let east = bed.controller_process("east", &[])?;
    let _west = bed.controller_process("west", &[])?;
    bed.wait_healthy("chat").await?;
    wait_for("east to hold the leader key", Duration::from_secs(20), || async {
        Ok(bed.witness_leader("chat")? == "0 east")
    })
    .await?;
    // Keepalives every leaseTTL/5: let a few go by so the lease is well established.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill_wall = SystemTime::now();
    let kill_at = Instant::now();
    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(60)).await?;
    let t = drp.status.clone().unwrap_or_default().last_transition.context("no transition")?;
    ensure!(
        t.from == "east" && t.to == "west" && t.outcome.map(|o| o.as_str()) == Some("Completed"),
        "transition {} → {} {:?}",
        t.from,
        t.to,
        t.outcome
    );
    let took = t.steps.iter().find(|x| x.name == "TakeEpoch").and_then(|x| x.started_at.clone());
    let took: jiff::Timestamp = took.context("TakeEpoch never started")?.parse()?;
    let took_wall = SystemTime::UNIX_EPOCH + Duration::from_nanos(took.as_nanosecond() as u64);
    let took_epoch = took_wall.duration_since(kill_wall).context("the swap happened before the kill")?;
    eprintln!(
        "{label}: postmaster SIGKILL → west's epoch swap {:.2}s (leaseTTL {:?}); the test saw the transition finish after {:.2}s",
        took_epoch.as_secs_f64(),
        LEASE_TTL,
        kill_at.elapsed().as_secs_f64()
    );
    ensure!(bed.pg.standby.timeline()? == 2, "west promoted more than once or not at all");
    // Either site's controller may run the failover (both watch the one cluster); one epoch, to west.
    let etcd = bed.witness_epoch("chat")?;
    ensure!(etcd.starts_with("1 ") && etcd.ends_with("/west"), "etcd epoch {etcd:?}");
    Ok(Outcome { bed, east, took_epoch })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_fenced_by_the_site_hook_is_replaced_before_the_lease_could_expire() -> Result<()>
{
    let mut o = kill_east_postmaster("sitefence", sandbox_hook).await?;
    // Without the hook the swap waits for the lease: at least leaseTTL − one renew interval after
    // the kill (16 s here). With it: the failure threshold, the hook and the standby's next try.
    ensure!(
        o.took_epoch < LEASE_TTL / 2,
        "west took the epoch {:.2}s after the kill: the hook did not let the key go early (lease {:?})\n{}",
        o.took_epoch.as_secs_f64(),
        LEASE_TTL,
        o.east.tail(30)
    );
    // Journalled: east's log, the note published beside the released key, the Event.
    let log = std::fs::read_to_string(&o.east.log).unwrap_or_default();
    ensure!(log.contains("site fence hook confirmed"), "east's log:\n{}", o.east.tail(30));
    let released = o.bed.witness.etcdctl(&[
        "get",
        &format!("/understudy/{}/chat/released", o.bed.ns),
        "--print-value-only",
    ])?;
    ensure!(
        released.starts_with("0 east released at") && released.contains("site fence hook confirmed"),
        "released note {released:?}"
    );
    let events: Api<Event> = Api::namespaced(o.bed.client.clone(), &o.bed.ns);
    wait_for("an Event SiteFenceConfirmed", Duration::from_secs(15), || async {
        let items = events.list(&ListParams::default()).await?.items;
        if items.iter().any(|e| {
            e.reason.as_deref() == Some("SiteFenceConfirmed")
                && e.note.as_deref().is_some_and(|n| n.contains("site fence hook confirmed the fence"))
        }) {
            return Ok(true);
        }
        // Kept as the last error: what was published instead.
        let seen: Vec<String> = items
            .iter()
            .map(|e| format!("{}: {}", e.reason.as_deref().unwrap_or("?"), e.note.as_deref().unwrap_or("")))
            .collect();
        bail!("Events so far:\n{}", seen.join("\n"))
    })
    .await
    .with_context(|| format!("east's log:\n{}", o.east.tail(40)))?;
    // West's transition says why it did not wait for the lease.
    let st = o.bed.api().get("chat").await?.status.unwrap_or_default();
    let t = st.last_transition.context("no transition")?;
    let take =
        t.steps.iter().find(|x| x.name == "TakeEpoch").and_then(|x| x.message.clone()).unwrap_or_default();
    ensure!(
        take.contains("the leader key did not wait for its lease: east released at")
            && take.contains("site fence hook confirmed the fence"),
        "TakeEpoch: {take}"
    );
    // The hook's boot gate: east started again comes back a standby and refuses writes.
    ensure!(o.bed.pg.primary.data.join("standby.signal").exists(), "standby.signal not armed by the hook");
    o.bed.pg.primary.start()?;
    ensure!(o.bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "t", "east came back writable");
    let write = o.bed.pg.primary.psql("CREATE TABLE after_fence (i int)");
    ensure!(write.is_err(), "east took a write after its restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_site_hook_leaves_the_key_to_its_lease() -> Result<()> {
    let o = kill_east_postmaster("fencefail", |_| failing_hook()).await?;
    // The last keepalive was at most leaseTTL/5 before the kill; the lease runs leaseTTL from it.
    let earliest = LEASE_TTL - LEASE_TTL / 5 - Duration::from_millis(500);
    ensure!(
        o.took_epoch >= earliest,
        "west took the epoch {:.2}s after the kill, before the lease ({:?}) could expire (≥ {:.1}s)",
        o.took_epoch.as_secs_f64(),
        LEASE_TTL,
        earliest.as_secs_f64()
    );
    let log = std::fs::read_to_string(&o.east.log).unwrap_or_default();
    ensure!(
        log.contains("site fence hook did not confirm") && log.contains("the BMC did not answer"),
        "east's log:\n{}",
        o.east.tail(30)
    );
    ensure!(!log.contains("key released"), "the key was released after a failed hook");
    let released = o.bed.witness.etcdctl(&[
        "get",
        &format!("/understudy/{}/chat/released", o.bed.ns),
        "--print-value-only",
    ])?;
    ensure!(released.trim().is_empty(), "a release note after a failed hook: {released:?}");
    let drp = o.bed.api().get("chat").await?;
    eprintln!("LeaderKey after the failover: {:?}", condition(&drp, conditions::LEADER_KEY));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_server_restarted_stays_fenced() -> Result<()> {
    let mut bed = Bed::start("persistfence").await?;
    let dsn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=postgres application_name=understudy",
        bed.pg.primary.port, bed.pg.user, bed.pg.password
    );
    let admin = || async {
        let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        anyhow::Ok(c)
    };
    // The fence the keeper and the transitions use.
    understudy::pg::admin::fence(&admin().await?).await?;
    let refused = |r: Result<String>| match r {
        Ok(out) => Err(anyhow::anyhow!("write accepted: {out:?}")),
        Err(e) => Ok(format!("{e:#}")),
    };
    // A crash (SIGKILL of the postmaster) and a start: the ALTER SYSTEM default is still there.
    bed.pg.primary.kill9();
    wait_orphans_gone(&bed.pg.primary.data).await?;
    bed.pg.primary.start()?;
    ensure!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "f");
    ensure!(
        bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim() == "on",
        "fence lost by the crash"
    );
    let e = refused(bed.pg.primary.psql("CREATE TABLE fenced_after_crash (i int)"))?;
    ensure!(e.contains("read-only transaction"), "{e}");
    // What this layer cannot stop: a session that asks for a read-write transaction.
    ensure!(
        bed.pg.primary.psql("BEGIN READ WRITE; CREATE TABLE bypass (i int); COMMIT").is_ok(),
        "expected the read-only default to be overridable by a session"
    );
    // The boot gate: with standby.signal armed, a restart comes back in recovery, and no session
    // setting lets a write through.
    understudy::pg::admin::arm_boot_gate(&admin().await?).await?;
    bed.pg.primary.kill9();
    wait_orphans_gone(&bed.pg.primary.data).await?;
    bed.pg.primary.start()?;
    ensure!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "t", "the boot gate did not hold");
    let e = refused(bed.pg.primary.psql("BEGIN READ WRITE; CREATE TABLE gated (i int); COMMIT"))?;
    ensure!(e.contains("read-only transaction") || e.contains("recovery"), "{e}");
    // And a clean restart (fast shutdown) behaves the same.
    bed.pg.primary.stop();
    bed.pg.primary.start()?;
    ensure!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "t", "the boot gate did not hold");
    ensure!(bed.pg.primary.psql("SHOW default_transaction_read_only")?.trim() == "on");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_site_hook_is_killed_at_its_timeout_and_leaves_the_key_to_its_lease() -> Result<()> {
    let o = kill_east_postmaster("fencehang", |_| hanging_hook()).await?;
    let earliest = LEASE_TTL - LEASE_TTL / 5 - Duration::from_millis(500);
    ensure!(
        o.took_epoch >= earliest,
        "west took the epoch {:.2}s after the kill, before the lease ({:?}) could expire (≥ {:.1}s)",
        o.took_epoch.as_secs_f64(),
        LEASE_TTL,
        earliest.as_secs_f64()
    );
    let log = std::fs::read_to_string(&o.east.log).unwrap_or_default();
    ensure!(
        log.contains("site fence hook did not confirm") && log.contains("did not finish within 2s"),
        "east's log:\n{}",
        o.east.tail(30)
    );
    // Killed with its process group: the shell's child did not outlive the timeout.
    ensure!(hung_sleeps() == 0, "{} `sleep {HANG_MARK}` left running by the killed hook", hung_sleeps());
    Ok(())
}
