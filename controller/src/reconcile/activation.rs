//! The serving site's application runs; the other's is scaled down (`spec.activate`). Each
//! site's controller scales its own site's workloads once per epoch, as soon as its status mirrors
//! the witness — so the standby site's application starts when its site takes over, and the old
//! site's stops when its controller reaches its cluster again, however late. A controller without
//! `--site` (one cluster holding both sites) scales both. Scaling down remembers the count on the
//! workload (`dr.understudy.dev/active-replicas`), and scaling up restores it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    api::{Patch, PatchParams},
    Api, ResourceExt,
};
use tracing::{info, warn};

use crate::{
    context::Context,
    crd::{Activated, Activation, DisasterRecoveryPair, DisasterRecoveryPairStatus, WorkloadKind},
    events::EventNote,
    secrets::short_api_error,
};

/// The workload annotation that keeps the active replica count while it is scaled down.
pub const ACTIVE_REPLICAS: &str = "dr.understudy.dev/active-replicas";

/// How often a failed scale is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(10);

/// Scales every `spec.activate` workload this controller acts on to what the serving site asks
/// for, when it was not for this epoch yet; records it in `st.activated`; returns the Events.
pub async fn converge(
    drp: &DisasterRecoveryPair,
    key: &str,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Vec<EventNote> {
    if drp.spec.activate.is_empty() {
        return vec![];
    }
    let primary = crate::authority::primary(&drp.spec, Some(st));
    let (epoch, serving) = (primary.epoch, primary.site.to_string());
    let here = ctx.site.as_deref();
    let due: Vec<(usize, &Activation)> = drp
        .spec
        .activate
        .iter()
        .enumerate()
        .filter(|(_, a)| crate::crd::acts_here(Some(&a.site), here))
        .filter(|(_, a)| {
            !st.activated.iter().any(|x| {
                x.site == a.site && x.name == a.name && x.kind == kind_name(a.kind) && x.epoch >= epoch
            })
        })
        .collect();
    if due.is_empty() {
        return vec![];
    }
    // A failure is retried after a while, not every round.
    if ctx.memory.with(key, |m| m.activation_tried_at).is_some_and(|t| t.elapsed() < RETRY_EVERY) {
        return vec![];
    }
    let ns = drp.namespace().unwrap_or_default();
    let mut events = Vec::new();
    for (i, a) in due {
        let active = a.site == serving;
        // The count to restore on a failback is remembered only from a workload understudy itself
        // ran as the active one; the first scale-down of a fresh workload keeps `activeReplicas`.
        let was_active = st
            .activated
            .iter()
            .any(|x| x.site == a.site && x.name == a.name && x.kind == kind_name(a.kind) && x.active);
        match scale(&ctx.client, &ns, a, active, was_active).await {
            Ok(replicas) => {
                st.activated
                    .retain(|x| !(x.site == a.site && x.name == a.name && x.kind == kind_name(a.kind)));
                st.activated.push(Activated {
                    site: a.site.clone(),
                    kind: kind_name(a.kind).into(),
                    name: a.name.clone(),
                    active,
                    replicas,
                    epoch,
                    at: Some(jiff::Timestamp::now().to_string()),
                });
                let note = format!(
                    "{} {} {} of {} scaled to {replicas} ({}; {serving} serves at epoch {epoch})",
                    if active { "activated" } else { "deactivated" },
                    kind_name(a.kind),
                    a.name,
                    a.site,
                    if active { "its site serves" } else { "its site does not serve" },
                );
                info!(%note, "activation");
                events.push(EventNote {
                    warning: false,
                    reason: if active { "Activated" } else { "Deactivated" }.into(),
                    note,
                });
            }
            Err(e) => {
                ctx.memory.with(key, |m| m.activation_tried_at = Some(std::time::Instant::now()));
                let note = format!("spec.activate[{i}]: {e}; retried in {RETRY_EVERY:?}");
                warn!(%note, "activation");
                events.push(EventNote { warning: true, reason: "ActivationFailed".into(), note });
            }
        }
    }
    st.activated.sort_by(|a, b| (&a.site, &a.name).cmp(&(&b.site, &b.name)));
    events
}

fn kind_name(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    }
}

/// Scales one workload up (to its remembered or configured active count) or down (remembering the
/// count it had); returns the replicas it now asks for.
async fn scale(
    client: &kube::Client,
    ns: &str,
    a: &Activation,
    active: bool,
    was_active: bool,
) -> Result<i32, String> {
    let (replicas, remembered) = match a.kind {
        WorkloadKind::Deployment => {
            read(Api::<Deployment>::namespaced(client.clone(), ns), &a.name, |d| {
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            })
            .await?
        }
        WorkloadKind::StatefulSet => {
            read(Api::<StatefulSet>::namespaced(client.clone(), ns), &a.name, |s| {
                s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            })
            .await?
        }
    };
    let (want, remember) = if active {
        (remembered.unwrap_or(a.active_replicas).max(1), None)
    } else {
        // Remember what ran as the active application (unless it already runs the passive count:
        // keep the older memory).
        let keep = (was_active && replicas > a.passive_replicas).then_some(replicas);
        (a.passive_replicas, keep)
    };
    let mut patch = serde_json::json!({ "spec": { "replicas": want } });
    if let Some(n) = remember {
        patch["metadata"] = serde_json::json!({ "annotations": { ACTIVE_REPLICAS: n.to_string() } });
    }
    let pp = PatchParams::default();
    let res = match a.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&a.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&a.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    res.map_err(|e| format!("scale {} {ns}/{}: {}", kind_name(a.kind), a.name, short_api_error(&e)))?;
    Ok(want)
}

/// The workload's replicas and the remembered active count.
async fn read<K>(api: Api<K>, name: &str, replicas: impl Fn(&K) -> i32) -> Result<(i32, Option<i32>), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj = api
        .get_opt(name)
        .await
        .map_err(|e| format!("read {name}: {}", short_api_error(&e)))?
        .ok_or_else(|| format!("{name} not found in this cluster: create it, or fix spec.activate"))?;
    let remembered =
        obj.annotations().get(ACTIVE_REPLICAS).and_then(|v| v.parse().ok()).filter(|n: &i32| *n > 0);
    Ok((replicas(&obj), remembered))
}
