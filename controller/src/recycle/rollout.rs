//! Rollout restart of a Deployment or StatefulSet: the pod template gets the annotation
//! `dr.understudy.dev/restarted-for-epoch: N`. Setting it again to the same N changes nothing, so the
//! step is idempotent and a retry never restarts the pods twice for one promotion.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};

use async_trait::async_trait;

use super::{Env, NewPrimary};
use crate::{crd::WorkloadKind, secrets::short_api_error};

/// Annotation on the pod template.
pub const RESTARTED_FOR_EPOCH: &str = "dr.understudy.dev/restarted-for-epoch";

/// A refused restart patch.
#[derive(Debug, thiserror::Error)]
#[error("rollout restart {kind:?} {ns}/{name}: {reason}")]
pub struct Error {
    pub kind: WorkloadKind,
    pub ns: String,
    pub name: String,
    pub reason: String,
}

/// The rollout-restart recycler of `spec.recycle[i].rolloutRestart`.
pub struct RolloutRestart {
    index: usize,
    spec: crate::crd::RolloutRestart,
    client: Client,
    ns: String,
}

impl RolloutRestart {
    pub fn new(index: usize, spec: &crate::crd::RolloutRestart, env: &Env) -> RolloutRestart {
        RolloutRestart { index, spec: spec.clone(), client: env.client.clone(), ns: env.ns.clone() }
    }
}

#[async_trait]
impl super::Recycler for RolloutRestart {
    fn describe(&self) -> String {
        format!("rollout restart {:?} {}", self.spec.kind, self.spec.name)
    }

    async fn recycle(&self, to: &NewPrimary<'_>) -> Result<String, super::Error> {
        restart(&self.client, &self.ns, self.spec.kind, &self.spec.name, to.epoch).await.map_err(
            |source| super::Error::Rollout {
                field: format!("spec.recycle[{}].rolloutRestart", self.index),
                source,
            },
        )?;
        Ok(format!("restarted {:?} {}", self.spec.kind, self.spec.name))
    }

    /// Nothing to prove beforehand: the patch is checked by the API server when it is sent.
    async fn check(&self) -> Result<(), super::Error> {
        Ok(())
    }
}

/// Patches the workload's pod template.
pub async fn restart(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    epoch: i64,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_FOR_EPOCH: epoch.to_string() } } } }
    });
    let pp = PatchParams::default();
    let res = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    res.map_err(|e| Error { kind, ns: ns.into(), name: name.into(), reason: short_api_error(&e) })
}
