//! The reconcile loop: observe → decide → act → record. A pair in the middle of a transition goes
//! straight to the journalled executor. Otherwise both sites are probed once, the pure `decide`
//! computes the next status, the pure `guard` decides whether a failover is wanted and allowed, the
//! status is written when it changed, an Event is published for every condition that flipped, and a
//! permitted failover starts. Steady pairs requeue after `probeInterval`.

pub mod commands;
pub mod decide;
pub mod guard;
pub mod keeper_tend;
pub mod observe;
pub mod readiness;
pub mod rejoin;
pub mod site_lock;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::{
        controller::{Action, Controller},
        events::{Recorder, Reporter},
        predicates, reflector, watcher,
        watcher::Config as WatcherConfig,
        Predicate, WatchStreamExt,
    },
    Api, Client, ResourceExt,
};
use tracing::{info, instrument, warn};

use crate::{
    context::{Context, Error},
    crd::{DisasterRecoveryPair, Trigger},
    events::EventNote,
    failover,
    probe::sql::SqlProber,
};

/// How often a status whose only change is WAL positions and lag is written.
pub const POSITIONS_EVERY: Duration = Duration::from_secs(10);

/// Whether two statuses differ at most in WAL positions and replication lag.
fn same_but_positions(
    a: &crate::crd::DisasterRecoveryPairStatus,
    b: &crate::crd::DisasterRecoveryPairStatus,
) -> bool {
    let strip = |s: &crate::crd::DisasterRecoveryPairStatus| {
        let mut s = s.clone();
        s.replication_lag_bytes = None;
        for site in &mut s.sites {
            site.current_lsn = None;
            site.receive_lsn = None;
            site.replay_lsn = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// How often the `ReadyForFailover` checks run per pair.
pub const READINESS_EVERY: Duration = Duration::from_secs(30);

/// Options for running the controller.
#[derive(Clone, Default)]
pub struct Options {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Name reported on Events.
    pub instance: String,
    /// Identity in journals and in etcd; defaults to `instance`.
    pub identity: Option<String>,
    /// Where metrics are recorded.
    pub metrics: crate::metrics::Metrics,
    /// Whether this replica may act (always, without leader election).
    pub leadership: crate::replica_lease::Leadership,
    /// Set once the controller runs (for `/readyz`).
    pub ready: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Pairs are listed and watched as raw objects and read one by one (`crd::decode`): a single
    // object the types cannot read must never fail the list that carries every other pair.
    let ar = ApiResource::erase::<DisasterRecoveryPair>(&());
    let api: Api<DynamicObject> = match &opts.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let http = reqwest::Client::builder().user_agent("understudy").build().unwrap_or_default();
    let reporter = Reporter { controller: "understudy".into(), instance: Some(opts.instance.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        sql: SqlProber::default(),
        http,
        recorder: Recorder::new(client, reporter),
        identity: opts.identity.clone().unwrap_or_else(|| opts.instance.clone()),
        readiness_at: Default::default(),
        metrics: opts.metrics.clone(),
        leadership: opts.leadership.clone(),
        site: opts.identity.clone(),
        keepers: Default::default(),
        written_at: Default::default(),
        unwritten: Default::default(),
        seen_lsn: Default::default(),
        undecodable: Default::default(),
        instance: opts.instance.clone(),
        nonce: new_nonce(),
        other_site_controller: Default::default(),
    });
    if let Some(r) = &opts.ready {
        r.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    // Status writes must not trigger a new probe round (that would probe in a hot loop): only spec
    // (generation) and annotation changes trigger; everything else runs on the requeue timer.
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let ctx_deleted = ctx.clone();
    let stream = watcher(api, WatcherConfig::default())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |ev| {
            if let watcher::Event::Delete(obj) = ev {
                deleted(obj, &ctx_deleted);
            }
        })
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());
    // Keepers of deleted pairs stop (a deleted pair is never reconciled again). The store keeps
    // its last contents while the watch is down, so a lost API server stops no keeper.
    let store = reader.clone();
    let ctx2 = ctx.clone();
    let ar2 = ar.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let exists = |pair: &str| {
                let (ns, name) = pair.split_once('/').unwrap_or_default();
                store.get(&reflector::ObjectRef::new_with(name, ar2.clone()).within(ns)).is_some()
            };
            ctx2.keepers.retain(exists);
            ctx2.sql.prune(Duration::from_secs(60)).await;
            if let Ok(mut m) = ctx2.written_at.lock() {
                m.retain(|k, _| exists(k));
            }
            if let Ok(mut m) = ctx2.unwritten.lock() {
                m.retain(|k, _| exists(k));
            }
            if let Ok(mut m) = ctx2.seen_lsn.lock() {
                m.retain(|k, _| k.rsplit_once('/').is_some_and(|(pair, _)| exists(pair)));
            }
            if let Ok(mut m) = ctx2.undecodable.lock() {
                m.retain(|k| {
                    let keep = exists(k);
                    if !keep {
                        ctx2.metrics.undecodable.remove(&crate::metrics::PairLabels { pair: k.clone() });
                    }
                    keep
                });
            }
        }
    });
    Controller::for_stream_with(stream, reader, ar)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile dispatch");
            }
        })
        .await;
    info!("controller stopped");
}

/// A pair was deleted: stop tending it, and say what a transition it was running leaves undone.
fn deleted(obj: &DynamicObject, ctx: &Arc<Context>) {
    let key = format!("{}/{}", obj.metadata.namespace.clone().unwrap_or_default(), obj.name_any());
    ctx.keepers.stop(&key);
    // A pair created again under this name starts afresh (its first round assesses readiness and
    // reads the witness at once).
    if let Ok(mut m) = ctx.readiness_at.lock() {
        m.remove(&key);
    }
    if let Ok(mut m) = ctx.written_at.lock() {
        m.remove(&key);
    }
    if let Ok(mut m) = ctx.unwritten.lock() {
        m.remove(&key);
    }
    let Ok(drp) = crate::crd::decode::decode(obj) else { return };
    let Some(t) = drp.status.as_ref().and_then(|s| s.last_transition.as_ref()) else { return };
    if t.finished_at.is_some() || !ctx.leadership.is_leader() {
        return;
    }
    let done: Vec<&str> =
        t.steps.iter().filter(|s| s.finished_at.is_some()).map(|s| s.name.as_str()).collect();
    let undone: Vec<&str> =
        t.steps.iter().filter(|s| s.finished_at.is_none()).map(|s| s.name.as_str()).collect();
    let note = format!(
        "the pair was deleted during its {} from {} to {} (epoch {}): done {}; NOT done {}. \
         understudy stopped; finish by hand (the failback runbook in docs) or create the pair again, \
         which continues from the witness's epoch",
        t.kind,
        t.from,
        t.to,
        t.epoch,
        if done.is_empty() { "nothing".into() } else { done.join(", ") },
        undone.join(", ")
    );
    warn!(pair = %key, "{note}");
    let ctx = ctx.clone();
    tokio::spawn(async move {
        ctx.publish(&drp, EventNote { warning: true, reason: "DeletedMidTransition".into(), note }).await;
    });
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let drp = match crate::crd::decode::decode(&obj) {
        Ok(d) => {
            ctx.decoded(&obj);
            Arc::new(d)
        }
        Err(e) => return ctx.undecodable(&obj, e).await,
    };
    let interval: Duration = drp.spec.failover.probe_interval.into();
    // Followers keep their watch cache warm and do nothing else: leadership gates every probe and write.
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(interval));
    }
    let began = std::time::Instant::now();
    ctx.metrics.reconcile_runs.inc();
    let res = reconcile_inner(drp, ctx.clone()).await;
    ctx.metrics.reconcile_duration.observe(began.elapsed().as_secs_f64());
    res
}

#[instrument(skip_all, fields(drp = %drp.name_any(), ns = drp.namespace().unwrap_or_default()))]
async fn reconcile_inner(drp: Arc<DisasterRecoveryPair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    let name = drp.metadata.name.clone().ok_or(Error::MissingMetadata(".metadata.name"))?;
    let interval: Duration = drp.spec.failover.probe_interval.into();
    // Steady pairs act on the watch cache (a read per probe round would cost a thousand API reads a
    // second at a thousand pairs); a stale copy makes the status write fail with 409 and we re-run.
    // A pair mid-transition reads the latest journal first: transitions are rare, and every step
    // decision should start from the last write.
    let cached_in_transition =
        drp.status.as_ref().and_then(|s| s.last_transition.as_ref()).is_some_and(|t| t.finished_at.is_none());
    let drp = if cached_in_transition {
        let api: Api<DisasterRecoveryPair> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .get_opt(&name)
            .await
            .map_err(|e| Error::UpdateStatus(crate::secrets::short_api_error(&e)))?
        {
            Some(d) => d,
            None => {
                ctx.keepers.stop(&format!("{ns}/{name}"));
                return Ok(Action::await_change());
            }
        }
    } else {
        (*drp).clone()
    };

    // Commands by annotation are read first, also during a transition, so that one arriving at
    // the wrong time is refused with a Warning instead of silently waiting.
    let cmds =
        commands::read(&drp.spec, drp.status.as_ref().unwrap_or(&Default::default()), drp.annotations());
    let mut events = cmds.events.clone();
    let in_transition =
        drp.status.as_ref().and_then(|s| s.last_transition.as_ref()).is_some_and(|t| t.finished_at.is_none());
    if in_transition {
        let drp = if cmds.handled.is_empty() {
            drp
        } else {
            let mut st = drp.status.clone().unwrap_or_default();
            commands::record(&mut st, &cmds.handled);
            last_command(&mut st, &cmds, drp.metadata.generation);
            crate::store::write_status(&ctx, &drp, &st).await?
        };
        publish_all(&ctx, &drp, events).await;
        return failover::executor::run(drp, &ctx).await;
    }

    let obs = observe::collect(&drp, &ns, &ctx).await;
    let now = jiff::Timestamp::now();
    let pair_key = format!("{ns}/{name}");
    // WAL positions move with every write; the last round's positions (maybe not yet written) are
    // the base, as long as the stored status says the same apart from them.
    let fresh = ctx.unwritten.lock().ok().and_then(|m| m.get(&pair_key).cloned());
    let base = fresh.as_ref().filter(|f| drp.status.as_ref().is_some_and(|s| same_but_positions(s, f)));
    let (mut status, observed_events) = decide::observe(&drp.spec, base.or(drp.status.as_ref()), &obs, now);
    events.extend(observed_events);
    let pair_label = crate::metrics::PairLabels { pair: format!("{ns}/{name}") };
    if let Some(lag) = status.replication_lag_bytes {
        ctx.metrics.lag_bytes.get_or_create(&pair_label).set(lag);
    }
    ctx.metrics.epoch.get_or_create(&pair_label).set(status.epoch.0);
    for o in &obs.sites {
        if let crate::probe::Outcome::Up(crate::probe::PgState { current_lsn: Some(lsn), timeline, .. }) =
            &o.sql
        {
            if let Ok(mut m) = ctx.seen_lsn.lock() {
                // The highest position on the server's current timeline (a rewound server starts over).
                let e = m.entry(format!("{pair_key}/{}", o.name)).or_insert((*timeline, *lsn));
                *e = if e.0 == *timeline { (e.0, e.1.max(*lsn)) } else { (*timeline, *lsn) };
            }
        }
        let outcome = match &o.sql {
            crate::probe::Outcome::Up(_) => "up",
            crate::probe::Outcome::Down(_) => "down",
            crate::probe::Outcome::NotRun(..) => "not_run",
        };
        ctx.metrics
            .probes
            .get_or_create(&crate::metrics::ProbeLabels {
                pair: pair_label.pair.clone(),
                site: o.name.clone(),
                outcome: outcome.into(),
            })
            .inc();
    }
    commands::record(&mut status, &cmds.handled);
    last_command(&mut status, &cmds, drp.metadata.generation);
    events.extend(rejoin::step(&drp, &mut status, &ctx).await);
    keeper_tend::tend(&drp, &ns, &name, &mut status, &mut events, &ctx, now).await;

    // Readiness: on a dry-run request, and every READINESS_EVERY.
    let key = format!("{ns}/{name}");
    let due = ctx
        .readiness_at
        .lock()
        .map(|m| m.get(&key).is_none_or(|t| t.elapsed() >= READINESS_EVERY))
        .unwrap_or(true);
    let dry_run = match &cmds.run {
        Some(commands::Command::DryRun { token }) => Some(token.clone()),
        _ => None,
    };
    if dry_run.is_some() {
        crate::secrets::Secrets::new(ctx.client.clone(), &ns).invalidate_all();
    }
    if due || dry_run.is_some() {
        if let Ok(mut m) = ctx.readiness_at.lock() {
            m.insert(key, std::time::Instant::now());
        }
        // The witness is the authority on the epoch: a record ahead of this status (a pair created
        // again under an old name) is adopted before anything is decided from the stale one.
        if failover::executor::adopt_witness_epoch(&ctx, &drp, &mut status).await? {
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        events.extend(site_lock::check(&drp, &ctx).await);
        let (to, plan, blockers) = readiness::assess(&drp, &status, &ctx).await;
        let (st, reason, msg) = if blockers.is_empty() {
            ("True", "Ready", format!("a failover to {to} could run now"))
        } else {
            ("False", "Blocked", blockers.join("; "))
        };
        crate::events::upsert(
            &mut status.conditions,
            &mut events,
            crate::crd::conditions::READY_FOR_FAILOVER,
            st,
            reason,
            &msg,
            drp.metadata.generation,
            now,
            false,
        );
        if let Some(token) = dry_run {
            status.dry_run = Some(crate::crd::DryRun {
                token: token.clone(),
                at: now.to_string(),
                to,
                steps: plan,
                lag_bytes: status.replication_lag_bytes,
                blockers: blockers.clone(),
            });
            events.push(EventNote {
                warning: !blockers.is_empty(),
                reason: "DryRun".into(),
                note: format!(
                    "dry-run {token}: {} blockers{}",
                    blockers.len(),
                    if blockers.is_empty() { String::new() } else { format!(": {}", blockers.join("; ")) }
                ),
            });
        }
    }

    let decision = match &cmds.run {
        Some(commands::Command::Switchover { .. } | commands::Command::ForcedFailover { .. }) => {
            guard::Decision::Steady
        }
        _ => guard::next(&drp.spec, &status, drp.annotations(), now, new_nonce),
    };
    if !matches!(
        cmds.run,
        Some(commands::Command::Switchover { .. } | commands::Command::ForcedFailover { .. })
    ) {
        events.extend(guard::record(&mut status, &decision, drp.annotations(), drp.metadata.generation, now));
    }
    if drp.annotations().get(crate::crd::annotations::PAUSED).map(String::as_str) == Some("true") {
        status.phase = Some(crate::crd::Phase::Paused);
    }

    // Status writes are skipped when only WAL positions and lag moved, up to POSITIONS_EVERY (at a
    // thousand steady pairs, position-only writes were most of the API traffic). Metrics stay live.
    let positions_only = drp.status.as_ref().is_some_and(|s| same_but_positions(s, &status));
    let recently = ctx
        .written_at
        .lock()
        .ok()
        .and_then(|m| m.get(&pair_key).map(|t| t.elapsed() < POSITIONS_EVERY))
        .unwrap_or(false);
    let drp = if drp.status.as_ref() != Some(&status) && !(positions_only && recently) {
        let drp = crate::store::write_status(&ctx, &drp, &status).await?;
        if let Ok(mut m) = ctx.written_at.lock() {
            m.insert(pair_key.clone(), std::time::Instant::now());
        }
        drp
    } else {
        drp
    };
    if let Ok(mut m) = ctx.unwritten.lock() {
        m.insert(pair_key, status.clone());
    }
    publish_all(&ctx, &drp, events).await;
    let from = status.current_primary.clone().unwrap_or_default();
    let started = match (cmds.run, decision) {
        (Some(commands::Command::Switchover { to }), _) => {
            failover::executor::start(&drp, failover::Kind::Switchover, Trigger::Switchover, &from, &to, &ctx)
                .await?
        }
        (Some(commands::Command::ForcedFailover { to }), _) => {
            failover::executor::start(&drp, failover::Kind::Failover, Trigger::Forced, &from, &to, &ctx)
                .await?
        }
        (_, guard::Decision::Failover { trigger, from, to }) => {
            failover::executor::start(&drp, failover::Kind::Failover, trigger, &from, &to, &ctx).await?
        }
        _ => None,
    };
    match started {
        Some(drp) => failover::executor::run(drp, &ctx).await,
        None => Ok(Action::requeue(interval)),
    }
}

/// Keeps the latest command outcome in the `LastCommand` condition.
fn last_command(
    st: &mut crate::crd::DisasterRecoveryPairStatus,
    cmds: &commands::Commands,
    generation: Option<i64>,
) {
    if let Some((accepted, reason, message)) = &cmds.last {
        crate::crd::conditions::set_condition(
            &mut st.conditions,
            crate::crd::conditions::LAST_COMMAND,
            if *accepted { "True" } else { "False" },
            reason,
            message,
            generation,
            jiff::Timestamp::now(),
        );
    }
}

async fn publish_all(ctx: &Context, drp: &DisasterRecoveryPair, events: Vec<EventNote>) {
    for ev in events {
        if ev.warning {
            warn!(reason = %ev.reason, note = %ev.note, "event");
        } else {
            info!(reason = %ev.reason, note = %ev.note, "event");
        }
        ctx.publish(drp, ev).await;
    }
}

fn error_policy(drp: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failures
        .get_or_create(&crate::metrics::CategoryLabels { category: err.category().into() })
        .inc();
    warn!(drp = %drp.name_any(), category = err.category(), error = %err, "reconcile failed");
    Action::requeue(err.retry_after())
}

/// A fresh approval nonce: 8 hex digits from the OS-seeded hasher and the clock.
fn new_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DisasterRecoveryPairStatus, SiteStatus};

    #[test]
    fn only_wal_positions_and_lag_count_as_positions() {
        let site = |lsn: &str, failures| SiteStatus {
            name: "east".into(),
            reachable: true,
            current_lsn: Some(lsn.into()),
            consecutive_failures: failures,
            ..Default::default()
        };
        let a = DisasterRecoveryPairStatus {
            sites: vec![site("0/100", 0)],
            replication_lag_bytes: Some(10),
            ..Default::default()
        };
        let moved = DisasterRecoveryPairStatus {
            sites: vec![site("0/200", 0)],
            replication_lag_bytes: Some(99),
            ..Default::default()
        };
        let failing = DisasterRecoveryPairStatus { sites: vec![site("0/200", 1)], ..moved.clone() };
        assert!(same_but_positions(&a, &moved));
        assert!(!same_but_positions(&a, &failing));
        assert!(!same_but_positions(
            &moved,
            &DisasterRecoveryPairStatus { epoch: crate::crd::Epoch(1), ..moved.clone() }
        ));
    }
}
