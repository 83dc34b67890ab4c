//! The side effects of each step. Every function is safe to call again after a crash or a failed
//! attempt: it checks what is already true and does only the rest. Errors are one line that names
//! the target (never a credential), so the journal and the Warning Event say what to fix.

use std::{net::IpAddr, time::Duration};

use super::{ports::Ports, Outcome, Step, StepError};
use crate::{
    crd::{DisasterRecoveryPairSpec, LossBound, ReplicationMode},
    datasource::Rewrite,
    dns,
    pg::Lsn,
    recycle::NewPrimary,
};

/// Everything a step needs.
pub struct StepCtx<'a> {
    /// The side effects, through their ports.
    pub ports: &'a Ports<'a>,
    /// `<namespace>/<name>` (the epoch marker's key).
    pub pair: &'a str,
    pub spec: &'a DisasterRecoveryPairSpec,
    pub from: &'a str,
    pub to: &'a str,
    pub epoch: i64,
    /// Bound for each remote call.
    pub timeout: Duration,
    /// Attempts already made at this step (0 on the first).
    pub attempts: i32,
    /// The last WAL position seen on the old primary (for the lost-WAL figure); for a switchover,
    /// the quiesced primary's final LSN.
    pub last_primary_lsn: Option<Lsn>,
    /// When this step was first started (survives restarts; deadlines count from it).
    pub step_started: Option<jiff::Timestamp>,
    /// `Recycle` running beside `RewriteDataSource`: that step's outcome once known (`true`:
    /// written). The application's recyclers wait for it; `None` when the rewrite is done already.
    pub data_source_written: Option<tokio::sync::watch::Receiver<Option<bool>>>,
    /// `last_primary_lsn` is the old primary's final position (quiesced by a switchover, or read
    /// after the failover's fence), not merely the last one a probe saw.
    pub final_position: bool,
    /// The old primary showed a synchronous standby at its last observation (`status.sites`).
    pub from_was_synchronous: bool,
}

/// A step's result: its outcome and the figures some steps measure.
#[derive(Debug, Default)]
pub struct Done {
    pub outcome: Option<Outcome>,
    /// `Promote`: WAL bytes the promoted standby did not have.
    pub lost_wal_bytes: Option<i64>,
    /// `Promote`: whether `lost_wal_bytes` is exact or a lower bound.
    pub lost_wal_bound: Option<LossBound>,
    /// `Promote`: the standby's position when promoted (the fork point).
    pub promoted_at_lsn: Option<Lsn>,
    /// `Quiesce`: the primary's last position once writers were stopped.
    pub final_lsn: Option<Lsn>,
}

impl Done {
    fn ok(msg: impl Into<String>) -> Done {
        Done { outcome: Some(Outcome::Succeeded(msg.into())), ..Default::default() }
    }
    fn skipped(msg: impl Into<String>) -> Done {
        Done { outcome: Some(Outcome::Skipped(msg.into())), ..Default::default() }
    }
}

/// Fencing a reachable old primary is retried this many times before the failover goes on without
/// it: the primary was confirmed dead by the probes, and a half-dead server must not block recovery.
pub const FENCE_ATTEMPTS: i32 = 3;

/// Runs one step (never `TakeEpoch`, which the executor does itself).
pub async fn run(step: Step, cx: &StepCtx<'_>) -> Result<Done, StepError> {
    match step {
        Step::TakeEpoch => Ok(Done::ok("epoch taken when the transition started")),
        Step::PreCheck => pre_check(cx).await.map_err(|e| StepError::NotReady(Box::new(e))),
        Step::Quiesce => quiesce(cx).await.map_err(|e| give_up_after(cx, e)),
        Step::CatchUp => catch_up(cx).await,
        Step::Fence => fence(cx).await,
        Step::Promote => promote(cx).await,
        Step::VerifyWritable => verify_writable(cx).await,
        Step::RewriteDataSource => rewrite(cx).await,
        Step::Recycle => recycle_all(cx).await,
        Step::FlipDns => flip_dns(cx).await,
    }
}

/// Switchover attempts at a step that can still roll back before giving up.
pub const SWITCHOVER_ATTEMPTS: i32 = 3;

/// A switchover step's error, made fatal on its last attempt (so that the switchover rolls back).
fn give_up_after(cx: &StepCtx<'_>, e: StepError) -> StepError {
    if cx.attempts + 1 >= SWITCHOVER_ATTEMPTS {
        StepError::GaveUp { attempts: SWITCHOVER_ATTEMPTS, source: Box::new(e) }
    } else {
        e
    }
}

/// The site `name` of the spec, or the configuration error naming it.
fn site<'a>(cx: &StepCtx<'a>, name: &str) -> Result<(usize, &'a crate::crd::Site), StepError> {
    cx.spec.site(name).map_err(|e| StepError::Spec(e.to_string()))
}

async fn pre_check(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    let s = cx.ports.pg.connect(cx.to).await.map_err(|e| StepError::connect("standby ", e))?;
    let streaming =
        s.wal_receiver_status().await.map_err(|e| StepError::sql(format!("standby {}: ", cx.to), e))?;
    if !s.in_recovery().await.map_err(|e| StepError::sql("", e))? {
        return Err(StepError::NotInRecovery { standby: cx.to.into(), primary: cx.from.into() });
    }
    if streaming.as_deref() != Some("streaming") {
        return Err(StepError::NotStreaming {
            standby: cx.to.into(),
            primary: cx.from.into(),
            receiver: streaming.unwrap_or_else(|| "none".into()),
        });
    }
    let p = cx.ports.pg.connect(cx.from).await.map_err(|e| StepError::connect("primary ", e))?;
    let head = p.current_lsn().await.map_err(|e| StepError::sql("", e))?;
    let (_, replay) = s.standby_lsns().await.map_err(|e| StepError::sql("", e))?;
    let lag = head.bytes_after(replay.unwrap_or_default());
    let max = crate::units::quantity_bytes(&cx.spec.failover.max_lag_bytes.0)
        .map_err(|e| StepError::Spec(e.to_string()))?;
    if lag > max {
        return Err(StepError::LagOverBudget { lag, max });
    }
    Ok(Done::ok(format!("{} streams from {}, lag {} bytes", cx.to, cx.from, lag)))
}

async fn quiesce(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    // PgBouncer first: PAUSE waits for running transactions and holds new ones, so the clients
    // queue instead of failing; then the primary refuses writes from anyone who went around it.
    for r in &cx.ports.recyclers {
        r.hold(cx.timeout.max(Duration::from_secs(5))).await?;
    }
    let p = cx.ports.pg.connect(cx.from).await.map_err(|e| StepError::connect("primary ", e))?;
    let n = p.fence().await.map_err(|e| StepError::sql(format!("fence {}: ", cx.from), e))?;
    let lsn = p.current_lsn().await.map_err(|e| StepError::sql("", e))?;
    Ok(Done {
        outcome: Some(Outcome::Succeeded(format!(
            "writers held at PgBouncer, {} read-only ({n} sessions terminated), final LSN {lsn}",
            cx.from
        ))),
        final_lsn: Some(lsn),
        ..Default::default()
    })
}

async fn catch_up(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    let Some(target) = cx.last_primary_lsn else { return Err(StepError::NoFinalLsn) };
    let timeout: Duration = cx.spec.failover.catch_up_timeout.into();
    let started = cx.step_started.unwrap_or_else(jiff::Timestamp::now);
    let deadline =
        started.checked_add(jiff::SignedDuration::try_from(timeout).unwrap_or_default()).unwrap_or(started);
    let s = cx.ports.pg.connect(cx.to).await.map_err(|e| StepError::connect("", e))?;
    loop {
        let (_, replay) = s.standby_lsns().await.map_err(|e| StepError::sql("", e))?;
        let replay = replay.unwrap_or_default();
        if replay >= target {
            return Ok(Done::ok(format!("{} replayed {replay} ≥ final LSN {target}", cx.to)));
        }
        if jiff::Timestamp::now() > deadline {
            return Err(StepError::CatchUpTimeout {
                standby: cx.to.into(),
                replayed: replay,
                target,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Undoes a switchover that stopped before `TakeEpoch`: the old primary writable again, PgBouncer
/// resumed. Safe to run more than once.
pub async fn roll_back(cx: &StepCtx<'_>) -> Result<String, StepError> {
    let p = cx.ports.pg.connect(cx.from).await.map_err(|e| StepError::connect("", e))?;
    p.unfence().await.map_err(|e| StepError::sql(format!("unfence {}: ", cx.from), e))?;
    for r in &cx.ports.recyclers {
        r.release(cx.timeout).await?;
    }
    Ok(format!("{} writable again, PgBouncer resumed", cx.from))
}

async fn fence(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    let old = match cx.ports.pg.connect(cx.from).await {
        Ok(c) => c,
        Err(e) => return Ok(Done::skipped(format!("old primary unreachable, nothing to fence: {e}"))),
    };
    // Hold new transactions at the poolers first, so nothing new starts on the old primary.
    let mut notes = Vec::new();
    for r in &cx.ports.recyclers {
        if let Err(e) = r.hold(cx.timeout).await {
            notes.push(format!("pause skipped: {e}"));
        }
    }
    match old.fence().await {
        Ok(n) => {
            let mut msg = format!("{} read-only, {n} client sessions terminated", cx.from);
            // Nothing commits on it any more: its position now is final, and the lost-WAL figure
            // counted from it is exact.
            let final_lsn = old.current_lsn().await.ok();
            if let Some(l) = final_lsn {
                msg.push_str(&format!(", final LSN {l}"));
            }
            if !notes.is_empty() {
                msg.push_str(&format!(" ({})", notes.join("; ")));
            }
            Ok(Done { final_lsn, ..Done::ok(msg) })
        }
        Err(e) if cx.attempts + 1 >= FENCE_ATTEMPTS => Ok(Done::skipped(format!(
            "fencing {} failed {FENCE_ATTEMPTS} times, going on without it: {e}",
            cx.from
        ))),
        Err(e) => Err(StepError::sql(format!("fence {}: ", cx.from), e)),
    }
}

/// The `synchronous_standby_names` a new primary gets under `mode`: `*` (any standby that
/// streams and reports its flush position: a pair has one, and `pg_basebackup`'s WAL stream never
/// qualifies), or `None` under `Async`, which leaves the server's own setting alone.
pub fn wanted_names(mode: ReplicationMode) -> Option<&'static str> {
    match mode {
        ReplicationMode::Async => None,
        ReplicationMode::Sync | ReplicationMode::SyncPreferred => Some("*"),
    }
}

async fn promote(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    let c = cx.ports.pg.connect(cx.to).await.map_err(|e| StepError::connect("", e))?;
    let mut kept = None;
    if c.in_recovery().await.map_err(|e| StepError::sql("", e))? {
        // What the standby holds now is what survives the promotion (it replays all it received).
        let (recv, replay) = c.standby_lsns().await.map_err(|e| StepError::sql("", e))?;
        kept = recv.max(replay);
    }
    // The new primary commits as `spec.failover.replication` says from its first write: set before
    // the promotion, so no commit is acknowledged asynchronously in between (a standby ignores it).
    let names = wanted_names(cx.spec.failover.replication);
    if let Some(names) = names {
        c.set_synchronous_standby_names(names)
            .await
            .map_err(|e| StepError::sql(format!("{}: ", cx.to), e))?;
    }
    let promoted = c
        .promote(cx.timeout.max(Duration::from_secs(30)))
        .await
        .map_err(|e| StepError::sql(format!("{}: ", cx.to), e))?;
    // The exact fork point, from the new timeline's history file; what the standby held is the
    // fallback (it can read as the start of a segment, past the real switch point).
    let switch = c.timeline_switch_point().await.ok().flatten();
    let fork = switch.or(kept);
    // Lost WAL from what the standby held; when this attempt found it already promoted (an earlier
    // attempt, or the other site's controller, promoted it and its record was lost), from the fork.
    let mut lost = None;
    let mut bound = None;
    let mut unacknowledged = 0;
    if let (Some(last), Some(kept)) = (cx.last_primary_lsn, kept.or(switch)) {
        let bytes = i64::try_from(last.bytes_after(kept)).unwrap_or(i64::MAX);
        if cx.spec.failover.replication == ReplicationMode::Sync && cx.from_was_synchronous {
            // Every commit was acknowledged only once the standby had flushed it: WAL past what it
            // holds belongs to transactions nobody was told committed.
            (lost, bound, unacknowledged) = (Some(0), Some(LossBound::Exact), bytes);
        } else {
            lost = Some(bytes);
            bound = Some(if cx.final_position { LossBound::Exact } else { LossBound::AtLeast });
        }
    }
    let mut msg =
        if promoted { format!("{} promoted", cx.to) } else { format!("{} was already promoted", cx.to) };
    if let Some(names) = names {
        msg.push_str(&format!(
            " with synchronous_standby_names = '{names}' (commits wait until {} follows it)",
            cx.from
        ));
    }
    if bound == Some(LossBound::Exact) && cx.spec.failover.replication == ReplicationMode::Sync {
        msg.push_str(&format!(
            "; 0 acknowledged bytes lost: the standby was synchronous ({unacknowledged} bytes of {}'s WAL \
             were never acknowledged)",
            cx.from
        ));
    }
    Ok(Done {
        outcome: Some(Outcome::Succeeded(msg)),
        lost_wal_bytes: lost,
        lost_wal_bound: bound,
        promoted_at_lsn: fork,
        ..Default::default()
    })
}

async fn verify_writable(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    let c = cx.ports.pg.connect(cx.to).await.map_err(|e| StepError::connect("", e))?;
    let held = c
        .write_epoch_marker(cx.pair, cx.to, cx.epoch)
        .await
        .map_err(|e| StepError::sql(format!("{}: ", cx.to), e))?;
    if held != cx.epoch {
        return Err(StepError::NewerMarker { site: cx.to.into(), held, ours: cx.epoch });
    }
    Ok(Done::ok(format!("{} committed the epoch {} marker", cx.to, cx.epoch)))
}

async fn rewrite(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    match cx.ports.data_source.rewrite(cx.spec, cx.to, cx.epoch).await? {
        Rewrite::NoTargets => Ok(Done::skipped("no spec.dataSource targets")),
        Rewrite::AlreadyRight => Ok(Done::ok(format!("every DataSource target already points at {}", cx.to))),
        Rewrite::Rewrote { objects, targets } => Ok(Done::ok(format!(
            "{objects} object(s) holding {targets} DataSource target(s) rewritten to {}",
            cx.to
        ))),
    }
}

async fn recycle_all(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    if cx.ports.recyclers.is_empty() {
        return Ok(Done::skipped("no spec.recycle entries"));
    }
    let (_, to) = site(cx, cx.to)?;
    let new_primary = NewPrimary { site: cx.to, postgres: &to.postgres, epoch: cx.epoch };
    // Poolers first and together (clients queue there); then what reads the DataSource, together,
    // once the DataSource names the new primary.
    let (poolers, apps): (Vec<_>, Vec<_>) = cx.ports.recyclers.iter().partition(|r| !r.reads_data_source());
    let mut done = Vec::new();
    for r in futures::future::join_all(poolers.iter().map(|r| r.recycle(&new_primary))).await {
        done.push(r?);
    }
    if !apps.is_empty() {
        if let Some(mut written) = cx.data_source_written.clone() {
            let ok = written.wait_for(Option::is_some).await.map(|v| *v == Some(true)).unwrap_or(false);
            if !ok {
                return Err(StepError::DataSourceNotWritten);
            }
        }
        for r in futures::future::join_all(apps.iter().map(|r| r.recycle(&new_primary))).await {
            done.push(r?);
        }
    }
    Ok(Done::ok(done.join(", ")))
}

async fn flip_dns(cx: &StepCtx<'_>) -> Result<Done, StepError> {
    if cx.ports.dns.is_empty() {
        return Ok(Done::skipped("no spec.dns records"));
    }
    let (i, to) = site(cx, cx.to)?;
    let target = to.dns_target.as_deref().ok_or_else(|| {
        StepError::Spec(format!("spec.sites[{i}].dnsTarget is required when spec.dns lists records"))
    })?;
    let addr: IpAddr = target
        .parse()
        .map_err(|_| StepError::Spec(format!("spec.sites[{i}].dnsTarget {target:?} is not an IP address")))?;
    let target = dns::Target { text: target, addr };
    let mut done = Vec::new();
    // Every record at once (each update is epoch-stamped and idempotent).
    for r in futures::future::join_all(cx.ports.dns.iter().map(|p| p.point_at(&target, cx.epoch))).await {
        done.push(r?);
    }
    Ok(Done::ok(done.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::{
        fakes::{spec, World, INJECTED, PRIMARY_LSN, STANDBY_LSN},
        Category,
    };

    fn cx<'a>(ports: &'a Ports<'a>, spec: &'a DisasterRecoveryPairSpec, attempts: i32) -> StepCtx<'a> {
        StepCtx {
            ports,
            pair: "ns/chat",
            spec,
            from: "east",
            to: "west",
            epoch: 1,
            timeout: Duration::from_secs(1),
            attempts,
            last_primary_lsn: Some(PRIMARY_LSN),
            step_started: None,
            data_source_written: None,
            final_position: false,
            from_was_synchronous: false,
        }
    }

    fn message(r: &Result<Done, StepError>) -> String {
        match r {
            Ok(Done { outcome: Some(Outcome::Succeeded(m) | Outcome::Skipped(m)), .. }) => m.clone(),
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    /// The error's category and message.
    fn failed(r: &Result<Done, StepError>) -> (Option<Category>, String) {
        (r.as_ref().err().map(StepError::category), message(r))
    }

    #[tokio::test]
    async fn pre_check_refuses_a_standby_that_does_not_follow_or_lags_too_far() {
        let (w, spec) = (World::new(), spec());
        let ports = w.ports();
        let ok = run(Step::PreCheck, &cx(&ports, &spec, 0)).await;
        assert_eq!(message(&ok), "west streams from east, lag 256 bytes");

        w.pg.set("east", |s| s.lsn = Lsn(STANDBY_LSN.0 + (64 << 20)));
        let (category, m) = failed(&run(Step::PreCheck, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Fatal));
        assert!(m.starts_with("lag 64.0 MiB > maxLagBytes 16.0 MiB"), "{m}");

        w.pg.set("west", |s| s.in_recovery = false);
        let (category, m) = failed(&run(Step::PreCheck, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Fatal));
        assert_eq!(m, "standby west is not in recovery: it does not follow east");

        w.pg.set("west", |s| s.reachable = false);
        // Unreachable would be transient anywhere else; the pre-check stops on any doubt.
        let (category, m) = failed(&run(Step::PreCheck, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Fatal));
        assert!(m.starts_with("standby west (pg-west:5432)"), "{m}");
    }

    #[tokio::test]
    async fn quiesce_holds_the_poolers_fences_and_reads_the_final_lsn_and_roll_back_undoes_it() {
        let (w, spec) = (World::new(), spec());
        let ports = w.ports();
        let done = run(Step::Quiesce, &cx(&ports, &spec, 0)).await.expect("quiesce");
        assert_eq!(done.final_lsn, Some(PRIMARY_LSN));
        assert!(w.pgbouncer.seen().held && w.pg.server("east").fenced);

        let said = roll_back(&cx(&ports, &spec, 0)).await.expect("roll back");
        assert_eq!(said, "east writable again, PgBouncer resumed");
        assert!(!w.pgbouncer.seen().held && !w.pg.server("east").fenced);

        // A failing quiesce is retried until the last switchover attempt, then stops.
        w.pg.faults.fail("east:fence", u32::MAX);
        let (category, m) = failed(&run(Step::Quiesce, &cx(&ports, &spec, 0)).await);
        assert_eq!((category, m), (Some(Category::Transient), format!("fence east: fence: {INJECTED}")));
        let (category, m) = failed(&run(Step::Quiesce, &cx(&ports, &spec, SWITCHOVER_ATTEMPTS - 1)).await);
        assert_eq!(category, Some(Category::Fatal));
        assert_eq!(m, format!("fence east: fence: {INJECTED} (after 3 attempts)"));
    }

    #[tokio::test]
    async fn promote_measures_what_the_standby_did_not_have_and_promotes_once() {
        let (w, spec) = (World::new(), spec());
        let ports = w.ports();
        let done = run(Step::Promote, &cx(&ports, &spec, 0)).await.expect("promote");
        assert_eq!(done.lost_wal_bytes, Some(256));
        assert_eq!(done.promoted_at_lsn, Some(STANDBY_LSN));
        let again = run(Step::Promote, &cx(&ports, &spec, 1)).await;
        assert_eq!(message(&again), "west was already promoted");
        assert_eq!(w.pg.promotions(), 1);
        // Found already promoted (its first record lost): measured from the fork point instead.
        let again = again.expect("promote");
        assert_eq!((again.lost_wal_bytes, again.promoted_at_lsn), (Some(256), Some(STANDBY_LSN)));
    }

    #[tokio::test]
    async fn the_lost_wal_figure_says_whether_it_is_exact_or_a_lower_bound() {
        use crate::crd::{LossBound, ReplicationMode};
        // Async, the old primary last seen by a probe: at least 256 bytes, nothing set on west.
        let (w, pair) = (World::new(), spec());
        let ports = w.ports();
        let done = run(Step::Promote, &cx(&ports, &pair, 0)).await.expect("promote");
        assert_eq!((done.lost_wal_bytes, done.lost_wal_bound), (Some(256), Some(LossBound::AtLeast)));
        assert_eq!(w.pg.server("west").sync_names, "", "Async leaves the setting alone");

        // Async after a fence that read the final position: exact.
        let (w, pair) = (World::new(), spec());
        let ports = w.ports();
        let fenced = run(Step::Fence, &cx(&ports, &pair, 0)).await.expect("fence");
        assert_eq!(fenced.final_lsn, Some(PRIMARY_LSN));
        assert!(message(&Ok(fenced)).contains(&format!("final LSN {PRIMARY_LSN}")));
        let c = StepCtx { final_position: true, ..cx(&ports, &pair, 0) };
        let done = run(Step::Promote, &c).await.expect("promote");
        assert_eq!((done.lost_wal_bytes, done.lost_wal_bound), (Some(256), Some(LossBound::Exact)));

        // Sync with the standby synchronous at the last observation: 0, exactly; the new primary
        // waits for its own standby from the start.
        let w = World::new();
        let ports = w.ports();
        let mut sync = pair.clone();
        sync.failover.replication = ReplicationMode::Sync;
        let c = StepCtx { from_was_synchronous: true, ..cx(&ports, &sync, 0) };
        let done = run(Step::Promote, &c).await.expect("promote");
        assert_eq!((done.lost_wal_bytes, done.lost_wal_bound), (Some(0), Some(LossBound::Exact)));
        assert_eq!(w.pg.server("west").sync_names, "*");
        let m = message(&Ok(done));
        assert!(
            m.contains("synchronous_standby_names = '*'")
                && m.contains("256 bytes of east's WAL were never acknowledged"),
            "{m}"
        );
        // Sync, but the standby was not synchronous (a forced failover): a lower bound again.
        let w = World::new();
        let ports = w.ports();
        let done = run(Step::Promote, &cx(&ports, &sync, 0)).await.expect("promote");
        assert_eq!((done.lost_wal_bytes, done.lost_wal_bound), (Some(256), Some(LossBound::AtLeast)));
    }

    #[tokio::test]
    async fn verify_writable_refuses_a_marker_of_a_newer_transition() {
        let (w, spec) = (World::new(), spec());
        let ports = w.ports();
        w.pg.set("west", |s| (s.in_recovery, s.marker) = (false, Some(7)));
        let (category, m) = failed(&run(Step::VerifyWritable, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Fatal));
        assert_eq!(m, "west marker holds epoch 7, newer than ours (1): a newer transition owns this pair");
        w.pg.set("west", |s| s.marker = Some(1));
        assert_eq!(
            message(&run(Step::VerifyWritable, &cx(&ports, &spec, 0)).await),
            "west committed the epoch 1 marker"
        );
    }

    #[tokio::test]
    async fn rewrite_recycle_and_dns_say_what_they_did_and_skip_what_is_not_configured() {
        let (w, spec) = (World::new(), spec());
        let ports = w.ports();
        let c = cx(&ports, &spec, 0);
        assert_eq!(
            message(&run(Step::RewriteDataSource, &c).await),
            "1 object(s) holding 1 DataSource target(s) rewritten to west"
        );
        assert_eq!(
            message(&run(Step::RewriteDataSource, &c).await),
            "every DataSource target already points at west"
        );
        assert_eq!(message(&run(Step::Recycle, &c).await), "fake → west, fake → west");
        assert_eq!(w.pgbouncer.seen().recycled, vec![("west".to_string(), 1)]);
        assert_eq!(message(&run(Step::FlipDns, &c).await), "chat.example.test. A 192.0.2.20");

        let mut bare = w.ports();
        bare.recyclers.clear();
        bare.dns.clear();
        let c = cx(&bare, &spec, 0);
        assert_eq!(message(&run(Step::Recycle, &c).await), "no spec.recycle entries");
        assert_eq!(message(&run(Step::FlipDns, &c).await), "no spec.dns records");
    }

    #[tokio::test]
    async fn flip_dns_needs_the_new_site_to_name_an_address() {
        let w = World::new();
        let ports = w.ports();
        let mut spec = spec();
        spec.sites[1].dns_target = None;
        let (category, m) = failed(&run(Step::FlipDns, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Configuration));
        assert_eq!(m, "spec.sites[1].dnsTarget is required when spec.dns lists records");
        spec.sites[1].dns_target = Some("chat.example.test".into());
        let (category, m) = failed(&run(Step::FlipDns, &cx(&ports, &spec, 0)).await);
        assert_eq!(category, Some(Category::Configuration));
        assert_eq!(m, "spec.sites[1].dnsTarget \"chat.example.test\" is not an IP address");
        assert_eq!(w.dns.record().changes, 0);
    }
}
