//! The reconcile loop: observe → decide → act → record. A pair in the middle of a transition goes
//! straight to the journalled executor. Otherwise both sites are probed once, the pure `decide`
//! computes the next status, the pure `guard` decides whether a failover is wanted and allowed, the
//! status is written when it changed, an Event is published for every condition that flipped, and a
//! permitted failover starts. Steady pairs requeue after `probeInterval`.

pub mod act;
pub mod activation;
pub mod commands;
pub mod decide;
pub mod drill;
pub mod guard;
pub mod keeper_tend;
pub mod local_objects;
pub mod observe;
pub mod readiness;
pub mod record;
pub mod rejoin;
pub mod site_lock;
pub mod sync_rep;

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
    crd::DisasterRecoveryPair,
    events::EventNote,
    probe::sql::SqlProber,
};

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
    // A witness view asks for its pair's reconcile when the witness changed (the leader key gone,
    // the epoch moved): the round runs at once instead of at the next probe interval.
    let (trigger, triggered) = tokio::sync::mpsc::unbounded_channel::<String>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        sql: SqlProber::default(),
        http,
        recorder: Recorder::new(client, reporter),
        identity: opts.identity.clone().unwrap_or_else(|| opts.instance.clone()),
        metrics: opts.metrics.clone(),
        leadership: opts.leadership.clone(),
        site: opts.identity.clone(),
        keepers: Default::default(),
        views: crate::coord::view::Views::new(trigger),
        memory: Default::default(),
        instance: opts.instance.clone(),
        nonce: new_nonce(),
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
            ctx2.views.retain(exists);
            ctx2.sql.prune(Duration::from_secs(60)).await;
            for (pair, m) in ctx2.memory.retain(exists) {
                if m.undecodable {
                    ctx2.metrics.undecodable.remove(&crate::metrics::PairLabels { pair });
                }
            }
        }
    });
    let ar3 = ar.clone();
    let triggered = futures::stream::unfold(triggered, |mut rx| async move {
        let pair = rx.recv().await?;
        Some((pair, rx))
    })
    .filter_map(move |pair: String| {
        let ar = ar3.clone();
        async move {
            let (ns, name) = pair.split_once('/')?;
            Some(reflector::ObjectRef::new_with(name, ar).within(ns))
        }
    });
    Controller::for_stream_with(stream, reader, ar)
        .reconcile_on(triggered)
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
    ctx.views.stop(&key);
    // A pair created again under this name starts afresh (its first round assesses readiness and
    // reads the witness at once).
    ctx.memory.forget(&key);
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
    // Each round runs on a task of its own: the controller's one task then only dispatches rounds
    // and reads the watch, so a thousand busy rounds spread over every worker thread and never
    // starve the watch stream (whose lag turns every status write into a 409); and a round that
    // panics costs that round, not the controller.
    let res = match tokio::spawn(reconcile_inner(drp, ctx.clone(), began)).await {
        Ok(res) => res,
        Err(e) => {
            tracing::error!(drp = %obj.name_any(), error = %e, "reconcile task failed");
            Err(Error::Task(e.to_string()))
        }
    };
    ctx.metrics.reconcile_duration.observe(began.elapsed().as_secs_f64());
    res
}

#[instrument(skip_all, fields(drp = %drp.name_any(), ns = drp.namespace().unwrap_or_default()))]
async fn reconcile_inner(
    drp: Arc<DisasterRecoveryPair>,
    ctx: Arc<Context>,
    began: std::time::Instant,
) -> Result<Action, Error> {
    let pair = Pair::of(&drp)?;
    let mut phases = Phases::new(&ctx.metrics, began);
    // Read: the watch cache, or the latest journal when a transition runs.
    let Some(drp) = act::latest(drp, &pair, &ctx).await? else { return Ok(Action::await_change()) };
    phases.done("read");
    // Decide (pure): what the annotations ask for; refused values become Warnings.
    let cmds =
        commands::read(&drp.spec, drp.status.as_ref().unwrap_or(&Default::default()), drp.annotations());
    if act::in_transition(&drp) {
        return act::continue_transition(drp, &cmds, &ctx).await;
    }
    // Observe (reads only): both sites probed once, every Secret resolved.
    let obs = observe::collect(&drp, &pair, &ctx).await;
    phases.done("observe");
    let now = jiff::Timestamp::now();
    // Decide (pure): the next status from the last one and this round.
    let base = record::base(&drp, &pair, &ctx);
    let mut round = record::Round::new(decide::observe(&drp.spec, base.as_ref(), &obs, now), &cmds, &drp);
    record::metrics(&ctx, &pair, &obs, &round.status);
    // Act: the former primary's rejoin, the leader key, and (every 30 s) the witness and readiness.
    if act::round_effects(&drp, &pair, &cmds, &mut round, &ctx, now).await? == act::Next::Again {
        // The status was written under this round: start over once the watch cache has it (sooner
        // only meets 409s against the stale copy).
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    phases.done("effects");
    // Decide (pure): is a failover wanted and allowed?
    // A copy paused in the other site's cluster holds this one too (published in the witness).
    let paused_at = ctx
        .site
        .as_deref()
        .and_then(|here| ctx.views.state(&pair.key)?.paused.into_iter().find(|s| s != here));
    let decision = round.guard(&drp, &cmds, now, paused_at.as_deref());
    // Record: the status when it changed, then the Events.
    let stored = drp.status.clone();
    let drp = record::write(&ctx, &pair, drp, &round.status).await?;
    act::count_finished_drill(&ctx, &pair, stored.as_ref(), &round.status);
    publish_all(&ctx, &drp, std::mem::take(&mut round.events)).await;
    phases.done("write");
    // Act: start what was decided (one transition at most), or come back next round.
    let action = act::start(drp, &cmds, decision, round.drill.take(), &round.status, &ctx, began).await;
    phases.done("start");
    action
}

/// Times the phases of one round into `understudy_reconcile_phase_seconds`.
struct Phases<'a> {
    metrics: &'a crate::metrics::Metrics,
    mark: std::time::Instant,
}

impl<'a> Phases<'a> {
    fn new(metrics: &'a crate::metrics::Metrics, began: std::time::Instant) -> Self {
        Phases { metrics, mark: began }
    }

    /// The phase that just ended; the next one starts now.
    fn done(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.metrics
            .reconcile_phase
            .get_or_create(&crate::metrics::PhaseLabels { phase })
            .observe(now.duration_since(self.mark).as_secs_f64());
        self.mark = now;
    }
}

/// A pair's identity in this controller's memory and metrics.
pub struct Pair {
    pub ns: String,
    pub name: String,
    /// `namespace/name`.
    pub key: String,
}

impl Pair {
    fn of(drp: &DisasterRecoveryPair) -> Result<Pair, Error> {
        let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
        let name = drp.metadata.name.clone().ok_or(Error::MissingMetadata(".metadata.name"))?;
        Ok(Pair { key: format!("{ns}/{name}"), ns, name })
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
