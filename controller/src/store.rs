//! The status store: the one way a pair's status is written.

use kube::{api::PostParams, Api, ResourceExt};

use crate::{
    context::{Context, Error},
    crd::{DisasterRecoveryPair, DisasterRecoveryPairStatus},
};

/// Writes `status` with `resourceVersion` as precondition; returns the updated object. A PUT of
/// the status subresource, not a merge patch: a merge patch would keep fields the new status
/// leaves out (a finished transition's `finishedAt` leaking into the next one).
pub async fn write_status(
    ctx: &Context,
    drp: &DisasterRecoveryPair,
    status: &DisasterRecoveryPairStatus,
) -> Result<DisasterRecoveryPair, Error> {
    let ns = drp.namespace().ok_or(Error::MissingMetadata(".metadata.namespace"))?;
    drp.resource_version().ok_or(Error::MissingMetadata(".metadata.resourceVersion"))?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(ctx.client.clone(), &ns);
    let mut obj = drp.clone();
    obj.metadata.managed_fields = None;
    obj.status = Some(status.clone());
    api.replace_status(&drp.name_any(), &PostParams::default(), &obj).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 409 => Error::Conflict,
        _ => Error::UpdateStatus(crate::secrets::short_api_error(&e)),
    })
}
