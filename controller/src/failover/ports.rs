//! The ports a transition acts through: one per family of side effects, each a trait with its real
//! implementation in its own module and an in-memory fake in `fakes` (tests only).
//!
//! | port | trait | real |
//! |---|---|---|
//! | PostgreSQL administration | `pg::admin::PgAdmin` (sessions: `PgSession`) | `pg::admin::SiteAdmin` |
//! | recyclers | `recycle::Recycler` | one per kind, `recycle::build` |
//! | DNS | `dns::DnsProvider` | one per kind, `dns::build` |
//! | witness | `coord::EpochWitness` | `coord::EtcdEpochWitness` |
//! | status store | `store::StatusStore` | `store::KubeStore` |
//! | DataSource targets | `datasource::DataSourceWriter` | `datasource::KubeDataSource` |
//! | Events | `Events` | the `Context`'s recorder |
//!
//! The rejoin of a former primary (`reconcile::rejoin`) acts through `PgAdmin`, the status store,
//! `Events` and one port of its own, the rejoin hook (`reconcile::rejoin::hook::HookRunner`, real
//! `CommandHook`).

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use kube::ResourceExt;

use crate::{
    context::Context,
    coord::{EpochWitness, EtcdEpochWitness},
    crd::DisasterRecoveryPair,
    datasource::{DataSourceWriter, KubeDataSource},
    dns::{self, DnsProvider},
    events::EventNote,
    metrics::Metrics,
    pg::{
        admin::{PgAdmin, SiteAdmin},
        Lsn,
    },
    recycle::{self, Recycler},
    secrets::Secrets,
    store::{KubeStore, StatusStore},
};

/// Events on the pair. Publishing never fails a transition (a failure is logged).
#[async_trait]
pub trait Events: Send + Sync {
    async fn publish(&self, drp: &DisasterRecoveryPair, ev: EventNote);
}

/// Everything the executor and the steps act through, for one pair.
pub struct Ports<'a> {
    /// Who acts: the journal's `holder` and the etcd epoch's holder.
    pub identity: String,
    pub metrics: &'a Metrics,
    /// The highest WAL position this controller's probes read on each site of the pair (the
    /// freshest "last known primary LSN" for the lost-WAL figure).
    pub seen_lsn: BTreeMap<String, Lsn>,
    pub pg: Arc<dyn PgAdmin + 'a>,
    /// One per `spec.recycle` entry, in order.
    pub recyclers: Vec<Arc<dyn Recycler + 'a>>,
    /// One per `spec.dns` entry, in order.
    pub dns: Vec<Arc<dyn DnsProvider + 'a>>,
    /// `None` without `spec.coordination.etcd`: the status write's precondition is the swap.
    pub witness: Option<Arc<dyn EpochWitness + 'a>>,
    pub store: Arc<dyn StatusStore + 'a>,
    pub data_source: Arc<dyn DataSourceWriter + 'a>,
    pub events: Arc<dyn Events + 'a>,
    /// Set by a start refused only for a while (the old primary's leader key about to expire):
    /// when to try again, sooner than the next probe round.
    pub retry_in: std::sync::Mutex<Option<std::time::Duration>>,
}

impl<'a> Ports<'a> {
    /// The real ports of `drp`, on the controller's clients.
    pub fn real(ctx: &'a Context, drp: &DisasterRecoveryPair) -> Ports<'a> {
        let ns = drp.namespace().unwrap_or_default();
        let secrets = Secrets::new(ctx.client.clone(), &ns);
        let timeout = drp.spec.failover.probe_timeout();
        let pair = format!("{ns}/{}", drp.name_any());
        let seen_lsn = drp
            .spec
            .sites
            .iter()
            .filter_map(|s| ctx.memory.seen_lsn(&pair, &s.name).map(|l| (s.name.clone(), l)))
            .collect();
        let renv = recycle::Env {
            client: ctx.client.clone(),
            http: ctx.http.clone(),
            secrets: secrets.clone(),
            ns: ns.clone(),
            timeout,
        };
        let denv = dns::Env { client: ctx.client.clone(), secrets: secrets.clone(), ns: ns.clone(), timeout };
        Ports {
            identity: ctx.identity.clone(),
            metrics: &ctx.metrics,
            seen_lsn,
            pg: Arc::new(SiteAdmin { secrets, spec: drp.spec.clone(), timeout }),
            recyclers: recycle::build_all(&drp.spec, &renv, ctx.site.as_deref())
                .into_iter()
                .map(Arc::from)
                .collect(),
            dns: dns::build_all(&drp.spec, &denv, ctx.site.as_deref()).into_iter().map(Arc::from).collect(),
            witness: EtcdEpochWitness::of(drp, &ctx.client).map(|w| Arc::new(w) as Arc<dyn EpochWitness>),
            store: Arc::new(KubeStore(ctx.client.clone())),
            data_source: Arc::new(KubeDataSource { client: ctx.client.clone(), ns, here: ctx.site.clone() }),
            events: Arc::new(ContextEvents(ctx)),
            retry_in: Default::default(),
        }
    }
}

/// Events through the controller's recorder. A transition's steps do not wait for their Events:
/// each is published by a task of its own (an API request each, ~10 ms that the cutover would
/// otherwise spend between steps).
pub struct ContextEvents<'a>(pub &'a Context);

#[async_trait]
impl Events for ContextEvents<'_> {
    async fn publish(&self, drp: &DisasterRecoveryPair, ev: EventNote) {
        self.0.publish_detached(drp, ev)
    }
}
