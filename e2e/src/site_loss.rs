//! The two-cluster story as measurements, shared by `make demo` and the bench's `two-cluster`
//! scenario: a whole site lost (`lose_site`) and the lost site coming back (`return_site`) on a
//! `TwoSites` bed, in either direction (east → west, or back after a failback). Every figure is read
//! from the real components: the workload's acknowledged commits and the port of the server that
//! acknowledged each, the serving cluster's journal, the returning cluster's status and Events, a
//! direct writer on the returning server, and an `etcdctl watch` on the witness's leader key.
//!
//! Times are seconds from a `Clock` mark: the monotonic clock for what this process saw (acks,
//! polls), the wall clock for what the controllers wrote (journal steps, Events, `status.*.at`);
//! everything runs on this one machine, so both clocks are the same clock.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::Api;
use understudy::crd::{Activated, DisasterRecoveryPair};

use crate::{
    support::{condition, wait_for},
    two_sites::{Return, TwoSites, SITES},
    workload::{self, Workload},
};

/// The `mattermost` Deployment's replicas while its site serves (`TwoSites::pair`'s
/// `activeReplicas`) and while it does not.
pub const ACTIVE_REPLICAS: i32 = 2;
pub const PASSIVE_REPLICAS: i32 = 0;

/// The other site.
pub fn other(site: &str) -> &'static str {
    if site == SITES[0] {
        SITES[1]
    } else {
        SITES[0]
    }
}

/// The DNS target of a site in `TwoSites::pair` (`Pair::on`).
pub fn dns_target(site: &str) -> &'static str {
    if site == "east" {
        "127.0.0.11"
    } else {
        "127.0.0.12"
    }
}

/// A moment on both clocks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub mono: Instant,
    pub wall: jiff::Timestamp,
}

impl Clock {
    pub fn now() -> Clock {
        Clock { mono: Instant::now(), wall: jiff::Timestamp::now() }
    }

    /// The same clocks moved to the monotonic instant `t`.
    pub fn at(&self, t: Instant) -> Clock {
        let d = if t >= self.mono {
            jiff::SignedDuration::try_from(t - self.mono).unwrap_or_default()
        } else {
            -jiff::SignedDuration::try_from(self.mono - t).unwrap_or_default()
        };
        Clock { mono: t, wall: self.wall.checked_add(d).unwrap_or(self.wall) }
    }

    /// Seconds from this mark to `t` (negative before it).
    pub fn to(&self, t: Instant) -> f64 {
        if t >= self.mono {
            (t - self.mono).as_secs_f64()
        } else {
            -(self.mono - t).as_secs_f64()
        }
    }

    /// Seconds from this mark to a wall-clock time.
    pub fn to_wall(&self, t: jiff::Timestamp) -> f64 {
        (t.as_microsecond() - self.wall.as_microsecond()) as f64 / 1e6
    }

    /// Seconds from this mark to an RFC 3339 time, as the controller writes them.
    pub fn to_rfc3339(&self, t: Option<&str>) -> Option<f64> {
        t?.parse::<jiff::Timestamp>().ok().map(|t| self.to_wall(t))
    }
}

/// Watches one key with `etcdctl watch` and records when it is first deleted.
pub struct KeyWatch {
    child: std::process::Child,
    deleted: Arc<Mutex<Option<Instant>>>,
}

impl KeyWatch {
    pub fn start(endpoint: &str, key: &str) -> Result<KeyWatch> {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["watch", key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("etcdctl watch")?;
        let out = child.stdout.take().context("etcdctl watch stdout")?;
        let deleted = Arc::new(Mutex::new(None));
        let d = deleted.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if line.trim() == "DELETE" {
                    let now = Instant::now();
                    if let Ok(mut g) = d.lock() {
                        g.get_or_insert(now);
                    }
                }
            }
        });
        Ok(KeyWatch { child, deleted })
    }

    /// When the key was first deleted since the watch started.
    pub fn deleted(&self) -> Option<Instant> {
        self.deleted.lock().ok().and_then(|g| *g)
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `mattermost` Deployment's replicas in `site`'s cluster.
pub async fn replicas(two: &TwoSites, site: &str) -> Result<i32> {
    let d =
        Api::<Deployment>::namespaced(two.cluster(site).client.clone(), &two.ns).get("mattermost").await?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
}

/// The epoch the witness holds for pair `name` (0 before the first transition).
pub fn witness_epoch(two: &TwoSites, name: &str) -> Result<i64> {
    let v = two.witness_epoch(name)?;
    match v.split_whitespace().next() {
        None => Ok(0),
        Some(e) => e.parse().with_context(|| format!("witness epoch record {v:?}")),
    }
}

/// The Events with `reason` recorded in `site`'s cluster, oldest first, with their times.
pub async fn events(two: &TwoSites, site: &str, reason: &str) -> Result<Vec<(jiff::Timestamp, String)>> {
    let list =
        Api::<Event>::namespaced(two.cluster(site).client.clone(), &two.ns).list(&Default::default()).await?;
    let mut v: Vec<(jiff::Timestamp, String)> = list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| {
            let at = e.event_time.map(|t| t.0).or(e.deprecated_first_timestamp.map(|t| t.0))?;
            Some((at, e.note.unwrap_or_default()))
        })
        .collect();
    v.sort_by_key(|(t, _)| *t);
    Ok(v)
}

/// The first Event with `reason` in `site`'s cluster at or after `since`: seconds from `since`, note.
async fn first_event(
    two: &TwoSites,
    site: &str,
    reason: &str,
    since: &Clock,
) -> Result<Option<(f64, String)>> {
    Ok(events(two, site, reason)
        .await?
        .into_iter()
        .map(|(t, n)| (since.to_wall(t), n))
        .find(|(t, _)| *t >= 0.0))
}

/// Waits until `primary` serves at `epoch` as both clusters see it: the pair Healthy in each (both
/// sites reachable, the other site streaming), the leader key `"<epoch> <primary>"` in the witness,
/// the boot gate armed in `primary`'s data directory, and the apps scaled (`primary`'s active, the
/// other's passive).
pub async fn wait_serving(two: &TwoSites, name: &str, primary: &str, epoch: i64) -> Result<()> {
    for site in SITES {
        two.wait_healthy(site, name, primary).await?;
        two.wait_pair(site, name, &format!("epoch {epoch}"), Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| s.epoch.0 == epoch)
        })
        .await?;
    }
    let key = format!("{epoch} {primary}");
    wait_for(&format!("{primary} to hold the leader key ({key})"), Duration::from_secs(30), || async {
        Ok(two.witness_leader(name)? == key)
    })
    .await
    .with_context(|| format!("{primary}'s controller:\n{}", two.controller_tail(primary, 30)))?;
    let gate = two.server(primary).data.join("standby.signal");
    wait_for(&format!("{primary}'s boot gate to be armed"), Duration::from_secs(20), || async {
        Ok(gate.exists())
    })
    .await
    .with_context(|| format!("{primary}'s controller:\n{}", two.controller_tail(primary, 30)))?;
    let writable = tokio::task::block_in_place(|| two.server(primary).psql("SELECT pg_is_in_recovery()"))?;
    if writable.trim() != "f" {
        bail!("{primary}'s PostgreSQL is in recovery, it does not serve");
    }
    let passive = other(primary);
    wait_for(
        &format!("{primary}'s app active ({ACTIVE_REPLICAS}) and {passive}'s passive ({PASSIVE_REPLICAS})"),
        Duration::from_secs(30),
        || async {
            Ok(replicas(two, primary).await? == ACTIVE_REPLICAS
                && replicas(two, passive).await? == PASSIVE_REPLICAS)
        },
    )
    .await
}

/// One journal step, its times in seconds from the kill.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    pub name: String,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub outcome: String,
    pub message: String,
}

/// A whole site lost: what the serving cluster's controller did, and what the clients saw. Times
/// are seconds from the kill.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Loss {
    pub from: String,
    pub to: String,
    /// The epoch the failover took.
    pub epoch: i64,
    /// The kill, on the wall clock (RFC 3339).
    pub killed_at: String,
    /// The leader key's DELETE seen by `etcdctl watch` (the lost site's lease expired).
    pub key_gone: Option<f64>,
    /// `lastTransition.startedAt`: the surviving controller's first failed probe of the lost site.
    pub first_failed_probe: Option<f64>,
    pub steps: Vec<Step>,
    /// The `FlipDns` step's end: DNS confirmed at the authoritative server.
    pub dns_confirmed: Option<f64>,
    /// The first write acknowledged by the new primary (through either PgBouncer).
    pub first_write: f64,
    /// The new primary's app scaled up (`status.activated[].at` in its cluster).
    pub activated: Option<f64>,
    /// The journal's `rtoSeconds` (first failed probe → DNS confirmed).
    pub rto_seconds: Option<f64>,
    /// `chat.example.test` at BIND after the failover.
    pub dns_answer: Vec<String>,
    /// Acknowledged ids missing on the new primary (every id the workload ever had acknowledged).
    pub lost: Vec<i64>,
    /// Commits the workload had acknowledged when the new primary's first came.
    pub acked: usize,
    /// Client errors from the kill to the first write on the new primary.
    pub errors: u64,
}

/// Loses site `from` whole (`TwoSites::kill_site`) while `wl` writes, and waits until the other
/// site serves: the failover journal in its cluster `Completed` at the next epoch, a write
/// acknowledged by its server, its app activated, its DataSource and PgBouncer pointing at it.
pub async fn lose_site(two: &mut TwoSites, wl: &Workload, name: &str, from: &str) -> Result<Loss> {
    let to = other(from);
    let epoch = witness_epoch(two, name)? + 1;
    let watch = KeyWatch::start(&two.witness.endpoint, &format!("/understudy/{}/{name}/leader", two.ns))?;
    // etcdctl needs a moment to open its watch; the key outlives the kill by a lease anyway.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors_before = wl.stats().errors;
    let before = Clock::now();
    let killed = before.at(two.kill_site(from).await?);
    let to_port = two.server(to).port;

    let drp = two
        .wait_pair(
            to,
            name,
            &format!("the failover to {to} at epoch {epoch}"),
            Duration::from_secs(90),
            |p| {
                p.status.as_ref().and_then(|s| s.last_transition.as_ref()).is_some_and(|t| {
                    t.epoch.0 == epoch && t.to == to && t.outcome.map(|o| o.as_str()) == Some("Completed")
                })
            },
        )
        .await
        .with_context(|| format!("{to}'s controller:\n{}", two.controller_tail(to, 40)))?;
    let t = drp.status.as_ref().and_then(|s| s.last_transition.clone()).context("no transition")?;
    if t.from != from || t.holder != to {
        bail!("transition {} → {} by {} (expected {from} → {to} by {to})", t.from, t.to, t.holder);
    }
    let first_new = || {
        let st = wl.stats();
        st.acked_at
            .iter()
            .zip(&st.acked_port)
            .position(|(a, p)| *a >= killed.mono && *p == to_port)
            .map(|i| (st.acked_at[i], i, st.errors))
    };
    wait_for(&format!("a write acknowledged by {to}"), Duration::from_secs(30), || async {
        Ok(first_new().is_some())
    })
    .await?;
    let (first_write, acked, errors_then) = first_new().context("no write on the new primary")?;
    let drp = two
        .wait_pair(to, name, &format!("{to}'s app activated"), Duration::from_secs(30), |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.activated.iter().any(|a| a.site == to && a.active && a.epoch.0 == epoch))
        })
        .await
        .with_context(|| format!("{to}'s controller:\n{}", two.controller_tail(to, 30)))?;
    let activated = drp
        .status
        .as_ref()
        .and_then(|s| s.activated.iter().find(|a| a.site == to && a.active))
        .and_then(|a| killed.to_rfc3339(a.at.as_deref()));
    wait_for(&format!("{to}'s own DataSource and PgBouncer on {to}"), Duration::from_secs(20), || async {
        Ok(two.secret_value(to, "mattermost-db", "dsn").await? == two.dsn(to)
            && std::fs::read_to_string(two.cluster(to).pgb.databases_file())?
                .contains(&format!("port={to_port}")))
    })
    .await?;
    let stats = wl.stats();
    let present = tokio::task::block_in_place(|| two.server(to).ids(&wl.table))?;
    let lost = workload::lost(&stats.acked, &present);
    let steps: Vec<Step> = t
        .steps
        .iter()
        .map(|s| Step {
            name: s.name.clone(),
            started: killed.to_rfc3339(s.started_at.as_deref()),
            finished: killed.to_rfc3339(s.finished_at.as_deref()),
            outcome: s.outcome.map(|o| o.as_str().to_string()).unwrap_or_else(|| "-".into()),
            message: s.message.clone().unwrap_or_default(),
        })
        .collect();
    Ok(Loss {
        from: from.into(),
        to: to.into(),
        epoch,
        killed_at: killed.wall.to_string(),
        key_gone: watch.deleted().map(|d| killed.to(d)),
        first_failed_probe: killed.to_rfc3339(Some(&t.started_at)),
        dns_confirmed: steps.iter().find(|s| s.name == "FlipDns").and_then(|s| s.finished),
        steps,
        first_write: killed.to(first_write),
        activated,
        rto_seconds: t.rto_seconds,
        dns_answer: tokio::task::block_in_place(|| two.bind.dig("chat"))?,
        lost,
        acked,
        errors: errors_then - errors_before,
    })
}

/// The lost site coming back: what its server accepted, how its cluster converged on the witness,
/// and what the serving site's clients saw meanwhile. Times are seconds from the start of the
/// return (`revive_site` called: the lost cluster's control plane restarting).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comeback {
    pub site: String,
    pub serving: String,
    /// `PostgresFirst` or `ControllerFirst`.
    pub order: String,
    /// The time between the two, in seconds.
    pub gap: f64,
    pub epoch: i64,
    /// The start of the return, on the wall clock (RFC 3339).
    pub began_at: String,
    pub cluster_ready: f64,
    pub postgres_ready: f64,
    pub controller_started: f64,
    /// `pg_is_in_recovery()` of the returning server right after `revive_site` (the boot gate).
    pub in_recovery_on_return: bool,
    /// Writes the returning server acknowledged to a writer straight at it (every 50 ms from before
    /// it started): seconds after its PostgreSQL was up, one per write.
    pub accepted: Vec<f64>,
    /// Attempts it refused (failed connects and refused INSERTs) meanwhile.
    pub refused: u64,
    /// The `EpochAdopted` Event in the returning cluster (its status took the witness's epoch).
    pub epoch_adopted: Option<f64>,
    /// Its note.
    pub epoch_adopted_note: String,
    /// First poll that saw the returning cluster's status name the serving site at the epoch.
    pub mirrored_seen: f64,
    /// First poll that saw its `LeaderKey` condition with reason `SiteDemoted`; the message.
    pub demoted_seen: f64,
    pub demoted_message: String,
    /// The returning site's own objects repointed at the serving site: `status.siteObjects[].at`,
    /// and the `SiteObjectsRepointed` Event's note.
    pub repointed: Option<f64>,
    pub repointed_note: String,
    /// First poll that saw its `mattermost-db` Secret and PgBouncer `databases.ini` name the serving
    /// server.
    pub repointed_seen: f64,
    /// Its app scaled to passive (`status.activated[].at`), and the `Deactivated` Event's note.
    pub deactivated: Option<f64>,
    pub deactivated_note: String,
    /// The rejoin hook's `RejoinHookSucceeded` Event.
    pub rejoined: Option<f64>,
    /// First poll that saw `formerPrimary` `Following`; its message.
    pub following_seen: f64,
    pub following_message: String,
    /// `status.activated` in each cluster after the return, (cluster, entries).
    pub activated: Vec<(String, Vec<ActivatedEntry>)>,
    /// The serving site during the return (start → Following seen): writes it acknowledged through
    /// either PgBouncer, the longest time without one (window edges included), client errors.
    pub serving_writes: usize,
    pub serving_longest_gap: f64,
    pub serving_errors: u64,
    /// After the return: the returning server in recovery, the witness's epoch and leader key
    /// unchanged.
    pub in_recovery_after: bool,
    pub witness_epoch_after: i64,
    pub leader_after: String,
}

/// One `status.activated` entry, as the summary prints it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ActivatedEntry {
    pub site: String,
    pub name: String,
    pub active: bool,
    pub replicas: i32,
    pub epoch: i64,
}

impl From<&Activated> for ActivatedEntry {
    fn from(a: &Activated) -> ActivatedEntry {
        ActivatedEntry {
            site: a.site.clone(),
            name: a.name.clone(),
            active: a.active,
            replicas: a.replicas,
            epoch: a.epoch.0,
        }
    }
}

impl Comeback {
    /// Seconds from the returning controller's start to its `EpochAdopted` Event.
    pub fn mirrored_after_controller(&self) -> Option<f64> {
        self.epoch_adopted.map(|t| t - self.controller_started)
    }

    /// Seconds from the returning controller's start to `Following` seen.
    pub fn following_after_controller(&self) -> f64 {
        self.following_seen - self.controller_started
    }
}

/// Brings the lost `site` back in `order` (`TwoSites::revive_site`) while a direct writer hammers
/// its PostgreSQL (table `direct_table`, fresh for each return) and `wl` writes through both
/// PgBouncers; waits until its cluster mirrors the witness, says `SiteDemoted`, has repointed the
/// site's own objects, scaled its app down, and its server follows the serving one.
pub async fn return_site(
    two: &mut TwoSites,
    wl: &Workload,
    name: &str,
    site: &str,
    order: Return,
    direct_table: &str,
) -> Result<Comeback> {
    let serving = other(site);
    let epoch = witness_epoch(two, name)?;
    let serving_port = two.server(serving).port;
    let direct = two.direct_writer(site, direct_table);
    let errors_before = wl.stats().errors;
    let began = Clock::now();
    let revived = two.revive_site(site, order).await?;
    let in_recovery_on_return =
        tokio::task::block_in_place(|| two.server(site).psql("SELECT pg_is_in_recovery()"))?.trim() == "t";

    // Poll the returning cluster until every milestone was seen once.
    let (mut mirrored, mut demoted, mut repointed, mut deactivated, mut following) =
        (None, None, None, None, None);
    let mut last: Option<DisasterRecoveryPair> = None;
    let mut errors_at_following = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let api = two.api(site);
    let pgb_file = two.cluster(site).pgb.databases_file();
    while following.is_none()
        || mirrored.is_none()
        || demoted.is_none()
        || repointed.is_none()
        || deactivated.is_none()
    {
        if Instant::now() > deadline {
            bail!(
                "{site}'s return did not converge in 120 s (mirrored {mirrored:?}, demoted {demoted:?}, repointed \
                 {repointed:?}, deactivated {deactivated:?}, following {following:?}); status in {site}'s cluster: \
                 {}\n{site}'s controller:\n{}",
                serde_json::to_string_pretty(&last.and_then(|p| p.status))?,
                two.controller_tail(site, 40)
            );
        }
        let now = Instant::now();
        if let Ok(p) = api.get(name).await {
            let st = p.status.clone().unwrap_or_default();
            if mirrored.is_none() && st.current_primary.as_deref() == Some(serving) && st.epoch.0 == epoch {
                mirrored = Some(now);
            }
            if demoted.is_none() {
                if let Some(c) = condition(&p, "LeaderKey").filter(|c| c.1 == "SiteDemoted") {
                    demoted = Some((now, c.2));
                }
            }
            if following.is_none() {
                if let Some(f) = st
                    .former_primary
                    .as_ref()
                    .filter(|f| f.site == site && f.assessment.as_str() == "Following")
                {
                    following = Some((now, f.message.clone().unwrap_or_default()));
                    errors_at_following = wl.stats().errors;
                }
            }
            last = Some(p);
        }
        if repointed.is_none()
            && two.secret_value(site, "mattermost-db", "dsn").await.ok() == Some(two.dsn(serving))
            && std::fs::read_to_string(&pgb_file)
                .unwrap_or_default()
                .contains(&format!("port={serving_port}"))
        {
            repointed = Some(now);
        }
        if deactivated.is_none() && replicas(two, site).await.ok() == Some(PASSIVE_REPLICAS) {
            deactivated = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (following_at, following_message) = following.context("following")?;
    let (demoted_at, demoted_message) = demoted.context("demoted")?;
    let st = direct.stop().await;
    let postgres_ready = began.to(revived.postgres_ready);
    let accepted: Vec<f64> = st.acked_at.iter().map(|a| began.to(*a) - postgres_ready).collect();

    // The serving site's writes from the start of the return to Following seen.
    let ws = wl.stats();
    let on_serving: Vec<Instant> = ws
        .acked_at
        .iter()
        .zip(&ws.acked_port)
        .filter(|(a, p)| **a >= began.mono && **a <= following_at && **p == serving_port)
        .map(|(a, _)| *a)
        .collect();
    let edges: Vec<Instant> =
        std::iter::once(began.mono).chain(on_serving.iter().copied()).chain([following_at]).collect();
    let gap = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();

    let status = api.get(name).await?.status.unwrap_or_default();
    let at = |s: Option<&String>| began.to_rfc3339(s.map(String::as_str));
    let objects_at = at(status
        .site_objects
        .iter()
        .find(|o| o.site == site && o.epoch.0 == epoch)
        .and_then(|o| o.at.as_ref()));
    let deactivated_at = at(status
        .activated
        .iter()
        .find(|a| a.site == site && !a.active && a.epoch.0 == epoch)
        .and_then(|a| a.at.as_ref()));
    let adopted = first_event(two, site, "EpochAdopted", &began).await?;
    let repointed_ev = first_event(two, site, "SiteObjectsRepointed", &began).await?;
    let deactivated_ev = first_event(two, site, "Deactivated", &began).await?;
    let rejoined = first_event(two, site, "RejoinHookSucceeded", &began).await?;
    let mut activated = Vec::new();
    for c in SITES {
        let st = two.api(c).get(name).await?.status.unwrap_or_default();
        activated.push((c.to_string(), st.activated.iter().map(ActivatedEntry::from).collect()));
    }
    let (order_name, gap_secs) = match order {
        Return::PostgresFirst { gap } => ("PostgresFirst", gap.as_secs_f64()),
        Return::ControllerFirst { gap } => ("ControllerFirst", gap.as_secs_f64()),
    };
    Ok(Comeback {
        site: site.into(),
        serving: serving.into(),
        order: order_name.into(),
        gap: gap_secs,
        epoch,
        began_at: began.wall.to_string(),
        cluster_ready: began.to(revived.cluster_ready),
        postgres_ready,
        controller_started: began.to(revived.controller_started),
        in_recovery_on_return,
        accepted,
        refused: st.errors,
        epoch_adopted: adopted.as_ref().map(|e| e.0),
        epoch_adopted_note: adopted.map(|e| e.1).unwrap_or_default(),
        mirrored_seen: began.to(mirrored.context("mirrored")?),
        demoted_seen: began.to(demoted_at),
        demoted_message,
        repointed: objects_at.or(repointed_ev.as_ref().map(|e| e.0)),
        repointed_note: repointed_ev.map(|e| e.1).unwrap_or_default(),
        repointed_seen: began.to(repointed.context("repointed")?),
        deactivated: deactivated_at.or(deactivated_ev.as_ref().map(|e| e.0)),
        deactivated_note: deactivated_ev.map(|e| e.1).unwrap_or_default(),
        rejoined: rejoined.map(|e| e.0),
        following_seen: began.to(following_at),
        following_message,
        activated,
        serving_writes: on_serving.len(),
        serving_longest_gap: gap.as_secs_f64(),
        serving_errors: errors_at_following - errors_before,
        in_recovery_after: tokio::task::block_in_place(|| {
            two.server(site).psql("SELECT pg_is_in_recovery()")
        })?
        .trim()
            == "t",
        witness_epoch_after: witness_epoch(two, name)?,
        leader_after: two.witness_leader(name)?,
    })
}
