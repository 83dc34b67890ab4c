//! The witness read directly: the pair's epoch record and leader key in etcd, reached at the spec's
//! endpoints with the TLS material and etcd user its Secrets hold — read with the user's own
//! Kubernetes credentials, so only when the user may read those Secrets. Nothing read is printed
//! but the epoch record and the leader key.

use std::time::{Duration, Instant};

use kube::{Client, ResourceExt};
use serde::Serialize;
use understudy::crd::DisasterRecoveryPair;

/// What etcd holds for the pair.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Etcd {
    /// The epoch (0 when no transition ever took one).
    pub epoch: i64,
    /// The site promoted at that epoch (`spec.primary` at epoch 0).
    pub primary: String,
    /// The controller that took the epoch (empty at epoch 0).
    pub taken_by: String,
    /// The serving site's leader key: `<site> (epoch N)`, absent when no site holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_key: Option<String>,
    /// The endpoints read.
    pub endpoints: String,
    /// Connect and read, in milliseconds.
    pub took_ms: u64,
}

/// The site an epoch record's transition id (`<uid>/<epoch>/<site>`) promoted.
pub fn promoted(id: &str) -> Option<&str> {
    id.rsplit('/').next().filter(|s| !s.is_empty() && id.contains('/'))
}

/// Reads the witness of `drp` through `client`'s Secrets within `timeout`. `Ok(None)`: the pair
/// has no witness.
pub async fn read(
    drp: &DisasterRecoveryPair,
    client: Client,
    timeout: Duration,
) -> Result<Option<Etcd>, String> {
    let Some(etcd) = drp.spec.coordination.as_ref().and_then(|c| c.etcd.as_ref()) else { return Ok(None) };
    let t0 = Instant::now();
    let ns = drp.namespace().unwrap_or_default();
    let run = async {
        let secrets = understudy::secrets::Secrets::new(client, &ns);
        let access = understudy::coord::witness_access(etcd, &secrets).await.map_err(|e| e.to_string())?;
        let mut w = understudy::coord::etcd::Witness::connect(
            &etcd.endpoints,
            &etcd.prefix,
            &ns,
            &drp.name_any(),
            timeout,
            access,
        )
        .await
        .map_err(|e| e.to_string())?;
        let (epoch, holder, id) = w.epoch().await.map_err(|e| e.to_string())?;
        let leader = w.leader().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((epoch, holder, id, leader))
    };
    let (epoch, holder, id, leader) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("no answer within {timeout:?} from {}", etcd.endpoints.join(",")))??;
    Ok(Some(Etcd {
        epoch,
        primary: promoted(&id).filter(|_| epoch > 0).unwrap_or(drp.spec.primary.as_str()).to_string(),
        taken_by: holder,
        leader_key: leader.map(|l| format!("{} (epoch {})", l.holder, l.epoch)),
        endpoints: etcd.endpoints.join(","),
        took_ms: t0.elapsed().as_millis() as u64,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_promoted_site_is_the_last_part_of_the_transition_id() {
        assert_eq!(super::promoted("18963c38-ac20/1/west"), Some("west"));
        assert_eq!(super::promoted(""), None);
        assert_eq!(super::promoted("west"), None);
    }
}
