//! The status store: the one way a pair's status is written.

use async_trait::async_trait;
use kube::{api::PostParams, Api, ResourceExt};

use crate::{
    context::{Context, Error},
    crd::{DisasterRecoveryPair, DisasterRecoveryPairStatus},
};

/// The status store port.
#[async_trait]
pub trait StatusStore: Send + Sync {
    /// Writes `status` with `drp`'s `resourceVersion` as precondition; returns the updated object.
    /// A newer object on the server is `Error::Conflict`.
    async fn write_status(
        &self,
        drp: &DisasterRecoveryPair,
        status: &DisasterRecoveryPairStatus,
    ) -> Result<DisasterRecoveryPair, Error>;
}

/// The real store: the status subresource of the pair on the API server.
pub struct KubeStore(pub kube::Client);

#[async_trait]
impl StatusStore for KubeStore {
    /// A PUT of the status subresource, not a merge patch: a merge patch would keep fields the new
    /// status leaves out (a finished transition's `finishedAt` leaking into the next one).
    async fn write_status(
        &self,
        drp: &DisasterRecoveryPair,
        status: &DisasterRecoveryPairStatus,
    ) -> Result<DisasterRecoveryPair, Error> {
        let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
        drp.resource_version().ok_or(Error::MissingMetadata(".metadata.resourceVersion"))?;
        let api: Api<DisasterRecoveryPair> = Api::namespaced(self.0.clone(), &ns);
        let mut obj = drp.clone();
        obj.metadata.managed_fields = None;
        obj.status = Some(status.clone());
        api.replace_status(&drp.name_any(), &PostParams::default(), &obj).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict,
            _ => Error::UpdateStatus(crate::secrets::short_api_error(&e)),
        })
    }
}

/// Writes `status` through the real store (see `StatusStore::write_status`).
pub async fn write_status(
    ctx: &Context,
    drp: &DisasterRecoveryPair,
    status: &DisasterRecoveryPairStatus,
) -> Result<DisasterRecoveryPair, Error> {
    let res = KubeStore(ctx.client.clone()).write_status(drp, status).await;
    if matches!(res, Err(Error::Conflict)) {
        let key = format!("{}/{}", drp.namespace().unwrap_or_default(), drp.name_any());
        ctx.memory.with(&key, |m| m.stale = true);
    }
    res
}
