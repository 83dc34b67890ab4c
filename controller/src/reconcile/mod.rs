//! The reconcile loop: observe → decide → record. Each run probes both sites once, computes the next
//! status with the pure `decide` module, writes it when it changed, publishes an Event for every
//! condition that flipped, and requeues after `probeInterval`.

pub mod decide;
pub mod observe;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    api::{Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        predicates, reflector, watcher,
        watcher::Config as WatcherConfig,
        Predicate, WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use tracing::{info, instrument, warn};

use crate::{crd::DisasterRecoveryPair, probe::sql::SqlProber};

/// The field manager name on every write.
pub const MANAGER: &str = "understudy";

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub sql: SqlProber,
    pub http: reqwest::Client,
    pub recorder: Recorder,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    #[error("write status: {0}")]
    UpdateStatus(String),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::UpdateStatus(_) => "update_status",
        }
    }
}

/// Options for running the controller.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Name reported on Events.
    pub instance: String,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<DisasterRecoveryPair> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let http = reqwest::Client::builder().user_agent("understudy").build().unwrap_or_default();
    let reporter = Reporter { controller: "understudy".into(), instance: Some(opts.instance.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        sql: SqlProber::default(),
        http,
        recorder: Recorder::new(client, reporter),
    });

    // Status writes must not trigger a new probe round (that would probe in a hot loop): only spec
    // (generation) and annotation changes trigger; everything else runs on the requeue timer.
    let (reader, writer) = reflector::store();
    let stream = watcher(api, WatcherConfig::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());
    Controller::for_stream(stream, reader)
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

#[instrument(skip_all, fields(drp = %drp.name_any(), ns = drp.namespace().unwrap_or_default()))]
async fn reconcile(drp: Arc<DisasterRecoveryPair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    let name = drp.metadata.name.clone().ok_or(Error::MissingMetadata(".metadata.name"))?;
    let interval: Duration = drp.spec.failover.probe_interval.into();

    let obs = observe::collect(&drp, &ns, &ctx).await;
    let (status, events) = decide::observe(&drp.spec, drp.status.as_ref(), &obs, jiff::Timestamp::now());

    // Re-read the latest status before comparing: the cached object may predate our own last write.
    let api: Api<DisasterRecoveryPair> = Api::namespaced(ctx.client.clone(), &ns);
    if drp.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::UpdateStatus(crate::secrets::short_api_error(&e)))?;
    }
    let reference = drp.object_ref(&());
    for ev in events {
        if ev.warning {
            warn!(reason = %ev.reason, note = %ev.note, "condition changed");
        } else {
            info!(reason = %ev.reason, note = %ev.note, "condition changed");
        }
        let event = Event {
            type_: if ev.warning { EventType::Warning } else { EventType::Normal },
            reason: ev.reason,
            note: Some(ev.note.chars().take(1000).collect()),
            action: "Probe".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %crate::secrets::short_api_error(&e), "publish event");
        }
    }
    Ok(Action::requeue(interval))
}

fn error_policy(drp: Arc<DisasterRecoveryPair>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(drp = %drp.name_any(), category = err.category(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(1))
}
