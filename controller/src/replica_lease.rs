//! Leader election among controller replicas with a `coordination.k8s.io` Lease: one replica acts,
//! the others keep their watch caches warm and take over when the lease expires.
//!
//! Timing, and why it is safe (all durations by each replica's own monotonic clock):
//!   RENEW_INTERVAL (2 s) < RENEW_DEADLINE (10 s) < LEASE_DURATION (15 s).
//! A leader that has not renewed for RENEW_DEADLINE stops leading — no reconcile, no transition
//! step starts — before any follower can take over: a follower waits LEASE_DURATION after it last
//! saw the lease change. The margin (LEASE_DURATION − RENEW_DEADLINE = 5 s) covers the time an
//! in-flight API write of the old leader can still land; every journal write also carries a
//! resourceVersion precondition, so a late write on stale state fails instead of applying.
//!
//! It does not exit: the leader-key keepers (`coord::keeper`) run on in the process, because losing
//! the local API server must never leave the site's database writable without a key nor fence a
//! healthy primary — the witness, not the API server, decides who serves. When the lease can be
//! renewed again, the replica leads again; when it finds another replica leading, it exits (its
//! keepers with it: the key is left to expire and the new leader's keeper takes it).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    api::{ObjectMeta, PostParams},
    Api, Client,
};
use tracing::{error, info, warn};

pub const RENEW_INTERVAL: Duration = Duration::from_secs(2);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

const _: () = assert!(RENEW_INTERVAL.as_millis() < RENEW_DEADLINE.as_millis());
const _: () = assert!(RENEW_DEADLINE.as_millis() < LEASE_DURATION.as_millis());

/// Whether this replica leads; shared with the reconciler.
#[derive(Clone, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// A replica that runs without election always leads.
    pub fn always() -> Self {
        Leadership(Arc::new(AtomicBool::new(true)))
    }
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs the election loop forever. Stops leading when the lease cannot be renewed in time; exits
/// the process when another replica leads after this one did.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    leadership: Leadership,
    on_change: impl Fn(bool) + Send + 'static,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renew = Instant::now();
    // What we last saw of someone else's lease, and when (our clock).
    let mut observed: Option<(String, Instant)> = None;
    // This replica led and stopped because it could not renew in time.
    let mut paused = false;
    loop {
        let leading = leadership.is_leader();
        match try_acquire_or_renew(&api, &name, &identity, &mut observed).await {
            Ok(true) => {
                last_renew = Instant::now();
                if !leading {
                    info!(lease = %name, %identity, resumed = paused, "became leader");
                    paused = false;
                    leadership.0.store(true, Ordering::SeqCst);
                    on_change(true);
                }
            }
            Ok(false) => {
                if leading || paused {
                    // Someone else holds it: stop at once. The keepers end with the process.
                    error!(lease = %name, "leadership lost to another replica; exiting");
                    std::process::exit(1);
                }
            }
            Err(e) => warn!(lease = %name, error = %e, "lease renew/acquire failed"),
        }
        if leadership.is_leader() && last_renew.elapsed() > RENEW_DEADLINE {
            error!(
                lease = %name,
                "could not renew the lease within {RENEW_DEADLINE:?}: no reconcile or transition step starts \
                 until it is renewed; the leader-key keepers go on (they never use the Kubernetes API)"
            );
            paused = true;
            leadership.0.store(false, Ordering::SeqCst);
            on_change(false);
        }
        tokio::time::sleep(RENEW_INTERVAL).await;
    }
}

/// One round: returns whether we hold the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let secs = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    if holder != identity && !holder.is_empty() {
        // Expiry is judged by our own clock from when we last saw the lease change.
        let key = format!("{holder}/{renewed}");
        let seen_at = match observed {
            Some((k, at)) if *k == key => *at,
            _ => {
                *observed = Some((key, Instant::now()));
                return Ok(false);
            }
        };
        if seen_at.elapsed() < LEASE_DURATION {
            return Ok(false);
        }
        info!(previous = %holder, "lease expired; taking over");
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(now);
    // Replace carries the resourceVersion we read: two replicas racing for an expired lease cannot
    // both win.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
