//! What every part of a reconcile shares: the clients, the per-process memory, the metrics, and
//! the error type. Its own module so that `failover/` and `reconcile/` both use it without
//! importing each other.

use std::time::Duration;

use kube::{
    api::{ApiResource, DynamicObject},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
    Client, Resource, ResourceExt,
};
use tracing::warn;

use crate::{
    crd::DisasterRecoveryPair,
    events::{action_for, EventNote},
    probe::sql::SqlProber,
};

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub sql: SqlProber,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    /// Who this controller is in the journal and in etcd (`--site`, else the instance name).
    pub identity: String,
    pub metrics: crate::metrics::Metrics,
    pub leadership: crate::replica_lease::Leadership,
    /// The site this controller runs at (`--site`); only a site controller keeps a leader key.
    pub site: Option<String>,
    /// The leader-key keepers of the pairs whose primary is this site.
    pub keepers: crate::coord::keeper::Keepers,
    /// The witness's view of every pair that has one (`coord::view`): the authority on who serves.
    pub views: crate::coord::view::Views,
    /// What the controller remembers per pair between rounds.
    pub memory: crate::memory::Memory,
    /// This replica's name (`--instance`, else the host name).
    pub instance: String,
    /// Random per process: tells apart two processes with the same instance name.
    pub nonce: String,
}

impl Context {
    /// Publishes an Event on the pair; a failure to publish is logged, never fatal.
    pub async fn publish(&self, drp: &DisasterRecoveryPair, ev: EventNote) {
        publish_with(&self.recorder, &drp.object_ref(&()), ev).await
    }

    /// `publish`, without waiting for the API server.
    pub fn publish_detached(&self, drp: &DisasterRecoveryPair, ev: EventNote) {
        let (recorder, oref) = (self.recorder.clone(), drp.object_ref(&()));
        tokio::spawn(async move { publish_with(&recorder, &oref, ev).await });
    }
}

async fn publish_with(
    recorder: &Recorder,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    ev: EventNote,
) {
    let event = Event {
        type_: if ev.warning { EventType::Warning } else { EventType::Normal },
        action: action_for(&ev.note),
        reason: ev.reason,
        note: Some(ev.note.chars().take(1000).collect()),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, oref).await {
        warn!(error = %crate::secrets::short_api_error(&e), "publish event");
    }
}

impl Context {
    /// `obj` reads again: clear its Undecodable mark.
    pub fn decoded(&self, obj: &DynamicObject) {
        let key = format!("{}/{}", obj.metadata.namespace.clone().unwrap_or_default(), obj.name_any());
        if self.memory.with(&key, |m| std::mem::take(&mut m.undecodable)) {
            self.metrics.undecodable.remove(&crate::metrics::PairLabels { pair: key });
        }
    }

    /// `obj` cannot be read: report it on the object (a Warning Event naming the field, and a
    /// metric) and skip it until it changes. Every other pair goes on as before.
    pub async fn undecodable(
        &self,
        obj: &DynamicObject,
        e: crate::crd::decode::Undecodable,
    ) -> Result<Action, Error> {
        let key = format!("{}/{}", obj.metadata.namespace.clone().unwrap_or_default(), obj.name_any());
        self.memory.with(&key, |m| m.undecodable = true);
        self.metrics.undecodable.get_or_create(&crate::metrics::PairLabels { pair: key.clone() }).set(1);
        let note = format!(
            "cannot read this pair, so understudy does nothing for it (every other pair goes on): {e}. \
             Fix {} to the type `kubectl explain drp.{}` describes",
            e.field,
            e.field.split('[').next().unwrap_or(&e.field)
        );
        warn!(pair = %key, field = %e.field, "pair skipped: {e}");
        let ar = ApiResource::erase::<DisasterRecoveryPair>(&());
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(note.chars().take(1000).collect()),
            action: action_for(&note),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &obj.object_ref(&ar)).await {
            warn!(error = %crate::secrets::short_api_error(&err), "publish event");
        }
        Ok(Action::await_change())
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    #[error("write status: {0}")]
    UpdateStatus(String),
    #[error("status changed under us (409); observing again")]
    Conflict,
    #[error("transition journal: {0}")]
    Journal(String),
    /// The round's own task ended without an answer (a bug: it panicked); the pair is retried.
    #[error("reconcile task failed: {0}")]
    Task(String),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::UpdateStatus(_) => "update_status",
            Error::Conflict => "conflict",
            Error::Journal(_) => "journal",
            Error::Task(_) => "task",
        }
    }

    /// How soon to try again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Error::Conflict => Duration::from_millis(50),
            Error::MissingMetadata(_) | Error::Journal(_) | Error::Task(_) => Duration::from_secs(30),
            Error::UpdateStatus(_) => Duration::from_secs(1),
        }
    }
}
