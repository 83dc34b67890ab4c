//! Rollout restart of a Deployment or StatefulSet: the pod template gets the annotation
//! `dr.understudy.dev/restarted-for-epoch: N`. Setting it again to the same N changes nothing, so the
//! step is idempotent and a retry never restarts the pods twice for one promotion.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};

use crate::{crd::WorkloadKind, secrets::short_api_error};

/// Annotation on the pod template.
pub const RESTARTED_FOR_EPOCH: &str = "dr.understudy.dev/restarted-for-epoch";

/// Patches the workload's pod template.
pub async fn restart(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    epoch: i64,
) -> Result<(), String> {
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
    res.map_err(|e| format!("rollout restart {kind:?} {ns}/{name}: {}", short_api_error(&e)))
}
