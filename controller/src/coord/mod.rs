//! Coordination: who may take the next epoch. The epoch is the fencing token: it moves from N to
//! N+1 by exactly one compare-and-swap per promotion, and whoever loses the swap stops.
//!
//! Without a witness the swap is the status write itself (a `resourceVersion` precondition on the
//! pair, done by the executor). With `spec.coordination.etcd` it is an etcd transaction on
//! `<prefix>/<namespace>/<name>/epoch`, and the status only records what etcd decided.
//!
//! With one controller per site (`--site`), the controller of the primary site also keeps the
//! pair's leader key `<prefix>/<namespace>/<name>/leader` alive on an etcd lease (`keeper`). The
//! standby's epoch swap only succeeds while that key is absent, so the standby can promote only
//! after the primary site's lease expired; and the primary site fences its own database before
//! that can happen when it cannot renew. The timing that makes "before" true is `Timing`.

pub mod etcd;
pub mod keeper;
pub mod tasks;
pub mod view;

use std::time::Duration;

use async_trait::async_trait;
use kube::ResourceExt;

use crate::crd::{DisasterRecoveryPair, EtcdWitness};
use etcd::{Access, LeaderKey, Witness};

/// The witness port, as the transition executor uses it: the epoch read and its compare-and-swap.
/// (The primary site's leader key is kept by `keeper`, which talks to `etcd::Witness` itself.)
#[async_trait]
pub trait EpochWitness: Send + Sync {
    /// The epoch held, with the holder and transition id stored with it (0 and empty when unset).
    async fn epoch(&self) -> Result<(i64, String, String), WitnessError>;
    /// Moves the epoch `from` → `from + 1` for `holder`'s transition `transition`, as
    /// `etcd::Witness::swap`: the same transition's second swap counts as won.
    async fn swap(
        &self,
        from: i64,
        holder: &str,
        transition: &str,
        leader: LeaderKey,
    ) -> Result<Swap, WitnessError>;
    /// Publishes a finished transition's journal (`<base>/journal`), so that the other site's
    /// cluster can mirror it. Best effort: the default does nothing.
    async fn publish_journal(&self, _journal: &str) -> Result<(), WitnessError> {
        Ok(())
    }
    /// Why the leader key of `epoch` went before its lease (`<site> released at … after its site
    /// fence hook confirmed the fence`), when its keeper said so. Best effort: the default knows none.
    async fn released_note(&self, _epoch: i64) -> Result<Option<String>, WitnessError> {
        Ok(None)
    }
}

/// Why the witness could not answer.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Its TLS material or etcd user cannot be read (the message names the spec field).
    #[error(transparent)]
    Access(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
}

impl WitnessError {
    /// A problem of the spec or its Secrets.
    pub fn is_config(&self) -> bool {
        matches!(self, WitnessError::Access(_))
    }
}

/// The real witness of one pair: etcd, connected on first use with the TLS material and user its
/// spec names (read then), and again after an error.
pub struct EtcdEpochWitness {
    etcd: EtcdWitness,
    ns: String,
    name: String,
    secrets: crate::secrets::Secrets,
    conn: tokio::sync::Mutex<Option<Witness>>,
}

impl EtcdEpochWitness {
    /// The witness of `drp`, when its spec names one.
    pub fn of(drp: &DisasterRecoveryPair, client: &kube::Client) -> Option<EtcdEpochWitness> {
        let etcd = drp.spec.coordination.as_ref().and_then(|c| c.etcd.clone())?;
        let ns = drp.namespace().unwrap_or_default();
        Some(EtcdEpochWitness {
            etcd,
            secrets: crate::secrets::Secrets::new(client.clone(), &ns),
            ns,
            name: drp.name_any(),
            conn: Default::default(),
        })
    }

    /// The connection, opened when there is none.
    async fn conn(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Witness>, WitnessError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(connect(&self.etcd, &self.ns, &self.name, &self.secrets).await?);
        }
        tokio::sync::MutexGuard::try_map(conn, Option::as_mut).map_err(|_| {
            WitnessError::Etcd(etcd::Error::Connect {
                endpoints: self.etcd.endpoints.join(","),
                reason: "the connection is gone".into(),
            })
        })
    }

    /// An etcd error drops the connection: a broken channel is rebuilt on the next call.
    async fn settle<T>(&self, res: Result<T, etcd::Error>) -> Result<T, WitnessError> {
        if res.is_err() {
            *self.conn.lock().await = None;
        }
        Ok(res?)
    }
}

#[async_trait]
impl EpochWitness for EtcdEpochWitness {
    async fn epoch(&self) -> Result<(i64, String, String), WitnessError> {
        let res = self.conn().await?.epoch().await;
        self.settle(res).await
    }

    async fn swap(
        &self,
        from: i64,
        holder: &str,
        transition: &str,
        leader: LeaderKey,
    ) -> Result<Swap, WitnessError> {
        let res = self.conn().await?.swap(from, holder, transition, leader).await;
        self.settle(res).await
    }

    async fn publish_journal(&self, journal: &str) -> Result<(), WitnessError> {
        let res = self.conn().await?.put_journal(journal).await;
        self.settle(res).await
    }

    async fn released_note(&self, epoch: i64) -> Result<Option<String>, WitnessError> {
        let res = self.conn().await?.released_note(epoch).await;
        self.settle(res).await
    }
}

async fn connect(
    etcd: &EtcdWitness,
    ns: &str,
    name: &str,
    secrets: &crate::secrets::Secrets,
) -> Result<Witness, WitnessError> {
    let access = witness_access(etcd, secrets).await?;
    Ok(Witness::connect(&etcd.endpoints, &etcd.prefix, ns, name, Duration::from_secs(2), access).await?)
}

/// The witness of `drp`, when it has one, connected with the TLS material and etcd user its spec
/// names. Errors name the spec field to fix and never carry the material.
pub async fn witness(
    drp: &DisasterRecoveryPair,
    client: &kube::Client,
) -> Result<Option<Witness>, WitnessError> {
    let Some(etcd) = drp.spec.coordination.as_ref().and_then(|c| c.etcd.as_ref()) else { return Ok(None) };
    let ns = drp.namespace().unwrap_or_default();
    connect(etcd, &ns, &drp.name_any(), &crate::secrets::Secrets::new(client.clone(), &ns)).await.map(Some)
}

/// The TLS material and etcd user `etcd` names, read from its Secrets.
pub async fn witness_access(
    etcd: &crate::crd::EtcdWitness,
    secrets: &crate::secrets::Secrets,
) -> Result<Access, crate::secrets::SecretError> {
    let mut access = Access::default();
    if let Some(t) = &etcd.tls_secret {
        let field = "spec.coordination.etcd.tlsSecret";
        let d = secrets.get(&t.name, &["ca.crt", "tls.crt", "tls.key"], field).await?;
        access.tls = Some((
            format!("{field} (Secret {})", t.name),
            d.value("ca.crt").into(),
            d.value("tls.crt").into(),
            d.value("tls.key").into(),
        ));
    }
    if let Some(a) = &etcd.auth_secret {
        let field = "spec.coordination.etcd.authSecret";
        let d = secrets.get(&a.name, &["username", "password"], field).await?;
        access.user = Some((
            format!("{field} (Secret {})", a.name),
            d.value("username").into(),
            d.value("password").into(),
        ));
    }
    Ok(access)
}

/// The cross-site timing, derived from `spec.coordination.etcd.leaseTTL` (T) and
/// `spec.failover.probeTimeout` (p). Every duration is measured on the primary-site controller's
/// monotonic clock, from the moment it *sent* the last keepalive that etcd confirmed:
///
/// ```text
///   keepalive every          r = T / 5
///   self-fence after         f = T / 2      (no keepalive confirmed for this long)
///   fence budget             b = p          (connect + read-only + terminate + PgBouncer PAUSE)
///   standby promotes at the earliest when etcd expires the lease: ≥ T after that send
///   (etcd restarts the TTL when the keepalive *arrives*, which is later than we sent it).
///
///   safety:   f + b + p ≤ T   ⇔   T/2 + 2p ≤ T   ⇔   T ≥ 4p
/// ```
///
/// The fence is done by `f + b` at the latest, and the standby cannot win the epoch swap before
/// `T`; the margin between the two, `T/2 − p ≥ p`, absorbs a controller that is scheduled late. The spec rejects a pair with `leaseTTL < 4 × probeTimeout` (a CEL rule on the spec), and
/// `Timing::check` refuses it again at run time. `f ≥ 2r` so one lost keepalive never fences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    pub self_fence_after: Duration,
    pub fence_budget: Duration,
}

/// A lease too short for the probe timeout: the primary site could not fence itself in time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.coordination.etcd.leaseTTL ({lease_ttl:?}) must be at least {LEASE_TTL_PER_PROBE_TIMEOUT} × \
     spec.failover.probeTimeout ({probe_timeout:?}) so that the primary site fences itself before the \
     standby can promote: raise leaseTTL or lower probeTimeout"
)]
pub struct TimingError {
    pub lease_ttl: Duration,
    pub probe_timeout: Duration,
}

/// `leaseTTL ≥ LEASE_TTL_PER_PROBE_TIMEOUT × probeTimeout`, the inequality above.
pub const LEASE_TTL_PER_PROBE_TIMEOUT: u32 = 4;

impl Timing {
    /// The timing of a pair, or why its spec breaks the inequality.
    pub fn new(lease_ttl: Duration, probe_timeout: Duration) -> Result<Timing, TimingError> {
        let t = Timing {
            lease_ttl,
            renew_every: lease_ttl / 5,
            self_fence_after: lease_ttl / 2,
            fence_budget: probe_timeout,
        };
        t.check().map(|()| t)
    }

    /// The inequality, checked again at run time (a spec stored before the CEL rule existed).
    pub fn check(&self) -> Result<(), TimingError> {
        if self.lease_ttl < self.fence_budget * LEASE_TTL_PER_PROBE_TIMEOUT
            || self.self_fence_after < self.renew_every * 2
        {
            return Err(TimingError { lease_ttl: self.lease_ttl, probe_timeout: self.fence_budget });
        }
        Ok(())
    }

    /// The least time between a completed self-fence and the standby's earliest promotion.
    pub fn margin(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.self_fence_after + self.fence_budget)
    }
}

/// The result of an epoch swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// We moved the epoch to the value asked for (or had already done so, before a restart).
    Won,
    /// Somebody else holds the epoch; nothing was changed. `transition` is the id stored with it.
    Lost { epoch: i64, holder: String, transition: String },
    /// The epoch is unchanged but the primary site's leader key is still alive: it has not
    /// fenced itself yet, so nothing may be promoted. `ttl_left_s` is its lease's remaining time.
    LeaderAlive { holder: String, ttl_left_s: i64 },
}

/// The site a transition id names: ids are `<pair uid>/<epoch>/<site promoted>` (ids written
/// before the site was part of them have two parts and name none).
pub fn transition_site(id: &str) -> Option<&str> {
    let mut parts = id.split('/');
    let (_, _, site) = (parts.next()?, parts.next()?, parts.next()?);
    Some(site).filter(|s| !s.is_empty())
}

/// What an etcd epoch key holds: `<epoch> <holder> <transition id>`.
pub fn encode_epoch(epoch: i64, holder: &str, transition: &str) -> String {
    format!("{epoch} {holder} {transition}")
}

/// Parses an epoch value; `None` for anything that is not ours.
pub fn decode_epoch(raw: &str) -> Option<(i64, String, String)> {
    let mut it = raw.splitn(3, ' ');
    let epoch = it.next()?.parse().ok()?;
    Some((epoch, it.next()?.to_string(), it.next().unwrap_or_default().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_fence_always_finishes_before_the_lease_can_expire() {
        for ttl_ms in [2_000u64, 4_000, 10_000, 30_000, 300_000] {
            for p_ms in [50u64, 100, 500, 1_000, 2_500, 7_500, 60_000] {
                let (ttl, p) = (Duration::from_millis(ttl_ms), Duration::from_millis(p_ms));
                match Timing::new(ttl, p) {
                    Ok(t) => {
                        assert!(t.self_fence_after + t.fence_budget < t.lease_ttl, "{t:?}");
                        assert!(t.margin() >= p, "margin {:?} < probeTimeout {p:?}", t.margin());
                        assert!(t.self_fence_after >= 2 * t.renew_every);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(ttl_ms < 4 * p_ms, "{ttl_ms} {p_ms} refused: {e}");
                        assert!(e.contains("spec.coordination.etcd.leaseTTL"), "{e}");
                        assert!(!e.contains("  "), "no stray spaces: {e}");
                    }
                }
            }
        }
        let t = Timing::new(Duration::from_secs(10), Duration::from_secs(1))
            .expect("10s lease, 1s probe timeout");
        assert_eq!(t.renew_every, Duration::from_secs(2));
        assert_eq!(t.self_fence_after, Duration::from_secs(5));
        assert_eq!(t.margin(), Duration::from_secs(4));
    }

    #[test]
    fn epoch_values_round_trip() {
        let raw = encode_epoch(7, "west", "uid-1/7");
        assert_eq!(decode_epoch(&raw), Some((7, "west".into(), "uid-1/7".into())));
        assert_eq!(decode_epoch("garbage"), None);
        assert_eq!(transition_site("uid-1/7/west"), Some("west"));
        assert_eq!(transition_site("uid-1/7"), None);
    }
}
