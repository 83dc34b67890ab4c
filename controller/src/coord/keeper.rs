//! The primary site's leader key: while this controller's site serves writes, a task per pair keeps
//! `<prefix>/<ns>/<name>/leader` alive on an etcd lease. When it cannot confirm the lease for
//! `Timing::self_fence_after`, it fences its own database (read-only, writers terminated) and pauses
//! the pair's PgBouncers, all within `Timing::fence_budget`, before etcd can expire the lease and
//! let the standby win the epoch swap (the inequality is on `Timing`). When the witness answers
//! again and the epoch has not moved, the key is taken again and the fence lifted. When the epoch
//! has moved, the other site was promoted: the database is fenced at once and the task ends.
//!
//! The task never talks to the Kubernetes API: a site cut off from everything still fences itself.
//! The reconciler starts, updates and stops tasks, and copies their `State` into the status.
//!
//! A site fence hook (`spec.sites[*].fenceHook`, `hook`) covers the case SQL cannot: when the site
//! failed and its database cannot be fenced by SQL (a dead or unreachable postmaster), the keeper
//! runs the hook, within its timeout; exit 0 makes the fence sure and the key is released at once.
//! A hook that fails, hangs or times out changes nothing: the key is left to expire. It runs only
//! in a give-up, only once the key was confirmed in this task's life (the site knows it serves), at
//! most `HOOK_ATTEMPTS` times per give-up (a failed run is tried again at the next give-up round,
//! a confirmed one never), and again only after the site answered its probes in between.
//!
//! The loop acts through two ports, so that its failure paths run as unit tests on a paused clock
//! (`tests`): `KeeperWitness` (the lease and the key, `EtcdKeeper` on `etcd::Witness`) and
//! `SiteFence` (this site's database and PgBouncers, `PgSiteFence` on `pg::admin` and the PgBouncer
//! console). Neither reaches the Kubernetes API.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use jiff::Timestamp;
// Tokio's clock (the real one in production): the tests run the keeper on a paused clock.
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use super::{
    etcd::{self, Access, Acquire, KeepAlive, Renewal, Witness},
    Timing,
};
mod hook;
pub use hook::SiteHook;

use crate::{
    crd::PgBouncerRecycler,
    pg::{admin, conn},
    recycle::pgbouncer::{self, Console},
};

/// What a keeper needs; rebuilt by every reconcile of the pair (credentials may rotate). Holds
/// credentials, so it is deliberately not `Debug`.
#[derive(Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    /// The witness's TLS material and etcd user.
    pub access: Access,
    pub prefix: String,
    pub namespace: String,
    pub name: String,
    /// This controller's site, the holder written into the key.
    pub site: String,
    /// The epoch this site serves.
    pub epoch: i64,
    pub timing: Timing,
    /// The admin connection to this site's own database (TLS as the spec asks).
    pub postgres: Arc<conn::Target>,
    /// The pair's PgBouncers with their admin user and password.
    pub bouncers: Vec<(PgBouncerRecycler, String, String)>,
    /// The database was fenced by a self-fence before this controller started: lift it once the
    /// key is ours again.
    pub lift_on_acquire: bool,
    /// This site failed its own probes (SQL unreachable or HTTP checks failing, for
    /// `failureThreshold` rounds): it gives up the key so that the standby may take over, after
    /// fencing what it can reach. A fence the keeper made itself is not a failure of the site.
    pub site_failed: bool,
    /// This site's probes read its database in recovery: it restarted behind its boot gate while
    /// the key is ours, and is promoted again at the next confirmed round.
    pub in_recovery: bool,
    /// This site's fence hook (`spec.sites[*].fenceHook`), run when SQL cannot fence a failed site.
    pub fence_hook: Option<SiteHook>,
    /// Where hook runs are counted (`understudy_site_fence_hook_runs`).
    pub hook_runs: prometheus_client::metrics::family::Family<
        crate::metrics::FenceHookLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// How many times a fence hook runs in one give-up before the key is only left to expire.
pub const HOOK_ATTEMPTS: u32 = 3;

impl Config {
    fn same_task(&self, other: &Config) -> bool {
        self.endpoints == other.endpoints
            && self.prefix == other.prefix
            && self.site == other.site
            && self.epoch == other.epoch
            && self.timing == other.timing
    }
}

/// What a keeper reports; copied into the pair's status by the reconciler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The key is ours and etcd confirmed the lease within the self-fence deadline.
    pub holding: bool,
    /// When this task fenced its site, and what it did.
    pub self_fenced: Option<(Timestamp, String)>,
    /// When the fence was lifted after the key was taken again.
    pub lifted_at: Option<Timestamp>,
    /// The task ended because the other site was promoted (epoch moved).
    pub ended: Option<String>,
    /// The last witness error, when the last round failed.
    pub witness_error: Option<String>,
    /// What holding the primary did once the key was first ours (`SiteFence::hold_primary`).
    pub primary_held: Option<String>,
    /// The last run of the site fence hook in this give-up.
    pub site_fence: Option<HookRun>,
}

/// One run of the site fence hook, as the status and the Event tell it.
#[derive(Clone, Debug, PartialEq)]
pub struct HookRun {
    pub at: Timestamp,
    /// 1 for the first run of a give-up.
    pub attempt: u32,
    /// The hook succeeded: the fence is sure.
    pub confirmed: bool,
    /// What the hook said (its last line), or why it failed.
    pub note: String,
}

/// The keepers of this controller, by pair (`ns/name`).
#[derive(Default, Clone)]
pub struct Keepers(super::tasks::PairTasks<Config, State>);

impl Keepers {
    /// Starts the keeper of `pair`, or hands a running one the new configuration. A change of
    /// epoch, site, witness or timing restarts the task. A task that ended because the epoch
    /// moved is not started again for the same epoch: this site lost it, and a new task would only
    /// fence the database once more. The reconciler stops it once its status mirrors the witness.
    pub fn ensure(&self, pair: &str, cfg: Config) -> State {
        self.0.ensure(pair, cfg, Config::same_task, |s: &State| s.ended.is_some(), keep)
    }

    /// The state of `pair`'s keeper, when one runs.
    pub fn state(&self, pair: &str) -> Option<State> {
        self.0.state(pair)
    }

    /// Stops the keepers of every pair for which `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.retain(keep)
    }

    /// Stops `pair`'s keeper (this site no longer serves, or the pair is gone). The lease is left
    /// to expire: releasing it early would let the standby promote before a fence.
    pub fn stop(&self, pair: &str) {
        self.0.stop(pair)
    }
}

/// Why a round with the witness failed. The text is what the status shows (`witness_error`, and
/// the self-fence message).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// etcd could not be reached or refused.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// One call did not answer within its bound (the renew interval).
    #[error("etcd {what}: no answer within {limit:?}")]
    NoAnswer { what: &'static str, limit: Duration },
    /// The round did not finish before its cutoff (the self-fence deadline, or longer once fenced).
    #[error("etcd: no confirmation within {0:?}")]
    Unconfirmed(Duration),
}

/// Why an action on this site's database or PgBouncers failed (never with credentials).
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("connect: {0}")]
    Connect(conn::ConnectError),
    #[error("connect: no answer within {0:?}")]
    NoAnswer(Duration),
    #[error(transparent)]
    Admin(#[from] admin::Error),
    #[error(transparent)]
    PgBouncer(#[from] pgbouncer::Error),
    #[error("site fence hook: {0}")]
    Hook(#[from] hook::HookError),
}

/// The lease and leader-key operations the keeper needs from the witness.
#[async_trait]
pub trait KeeperWitness: Send + Sync + 'static {
    type Conn: WitnessConn;
    /// Connects within `limit`.
    async fn connect(&self, cfg: &Config, limit: Duration) -> Result<Self::Conn, KeyError>;
}

/// One connection to the witness, as `etcd::Witness`.
#[async_trait]
pub trait WitnessConn: Send + 'static {
    /// A live keepalive stream for one lease.
    type KeepAlive: Send + 'static;
    /// A new lease of `ttl`.
    async fn grant(&mut self, ttl: Duration) -> Result<i64, KeyError>;
    /// Opens the keepalive stream of `lease`.
    async fn keep_alive(&mut self, lease: i64) -> Result<Self::KeepAlive, KeyError>;
    /// Takes the leader key for `holder` serving `epoch`, bound to `lease`.
    async fn acquire(&mut self, epoch: i64, holder: &str, lease: i64) -> Result<Acquire, KeyError>;
    /// One keepalive round, answered within `timeout`.
    async fn renew(
        &mut self,
        ka: &mut Self::KeepAlive,
        epoch: i64,
        holder: &str,
        timeout: Duration,
    ) -> Result<Renewal, KeyError>;
    /// Deletes the leader key if it is ours; `note` (why, when a site fence hook made it sure) is
    /// published beside it for the standby's transition.
    async fn release(&mut self, epoch: i64, holder: &str, note: Option<&str>) -> Result<(), KeyError>;
}

/// What the keeper does to its own site. Timeouts are the keeper's, except where a `budget` is
/// passed.
#[async_trait]
pub trait SiteFence: Send + Sync + 'static {
    /// Makes the database read-only and terminates its client sessions: how many.
    async fn fence_database(&self, cfg: &Config) -> Result<u64, SiteError>;
    /// Makes the database writable again; `budget` bounds the connection.
    async fn unfence_database(&self, cfg: &Config, budget: Duration) -> Result<(), SiteError>;
    /// PAUSE on every PgBouncer of the pair, each bounded by `budget`: what each answered.
    async fn pause_bouncers(&self, cfg: &Config, budget: Duration) -> Vec<Result<(), SiteError>>;
    /// RESUME on every PgBouncer, each bounded by `budget`: a note for each.
    async fn resume_bouncers(&self, cfg: &Config, budget: Duration) -> Vec<String>;
    /// The key is ours: the database serves as the primary. One that restarted behind its boot
    /// gate (a standby, `pg_admin::arm_boot_gate`) is promoted; the gate is armed. What was done.
    async fn hold_primary(&self, cfg: &Config, budget: Duration) -> Result<String, SiteError>;
    /// Runs this site's fence hook once (the keeper bounds it by the hook's timeout too): what it
    /// said on success.
    async fn run_fence_hook(&self, cfg: &Config, hook: &SiteHook) -> Result<String, SiteError>;
}

/// The real witness: etcd.
pub struct EtcdKeeper;

#[async_trait]
impl KeeperWitness for EtcdKeeper {
    type Conn = Witness;

    async fn connect(&self, cfg: &Config, limit: Duration) -> Result<Witness, KeyError> {
        Ok(Witness::connect(
            &cfg.endpoints,
            &cfg.prefix,
            &cfg.namespace,
            &cfg.name,
            limit,
            cfg.access.clone(),
        )
        .await?)
    }
}

#[async_trait]
impl WitnessConn for Witness {
    type KeepAlive = KeepAlive;

    async fn grant(&mut self, ttl: Duration) -> Result<i64, KeyError> {
        Ok(Witness::grant(self, ttl).await?)
    }

    async fn keep_alive(&mut self, lease: i64) -> Result<KeepAlive, KeyError> {
        Ok(Witness::keep_alive(self, lease).await?)
    }

    async fn acquire(&mut self, epoch: i64, holder: &str, lease: i64) -> Result<Acquire, KeyError> {
        Ok(Witness::acquire(self, epoch, holder, lease).await?)
    }

    async fn renew(
        &mut self,
        ka: &mut KeepAlive,
        epoch: i64,
        holder: &str,
        timeout: Duration,
    ) -> Result<Renewal, KeyError> {
        Ok(Witness::renew(self, ka, epoch, holder, timeout).await?)
    }

    async fn release(&mut self, epoch: i64, holder: &str, note: Option<&str>) -> Result<(), KeyError> {
        Ok(Witness::release(self, epoch, holder, note).await?)
    }
}

/// The real site: the admin connection to this site's PostgreSQL and the PgBouncer consoles.
pub struct PgSiteFence;

#[async_trait]
impl SiteFence for PgSiteFence {
    async fn fence_database(&self, cfg: &Config) -> Result<u64, SiteError> {
        let c = conn::connect(&cfg.postgres).await.map_err(SiteError::Connect)?;
        Ok(admin::fence(&c).await?)
    }

    async fn unfence_database(&self, cfg: &Config, budget: Duration) -> Result<(), SiteError> {
        let c = connect_within(cfg, budget).await?;
        Ok(admin::unfence(&c).await?)
    }

    async fn pause_bouncers(&self, cfg: &Config, budget: Duration) -> Vec<Result<(), SiteError>> {
        futures::future::join_all(cfg.bouncers.iter().map(|(r, user, password)| async move {
            let c = Console::connect(r, user, password, budget).await?;
            Ok(c.pause(budget).await?)
        }))
        .await
    }

    async fn hold_primary(&self, cfg: &Config, budget: Duration) -> Result<String, SiteError> {
        let c = connect_within(cfg, budget).await?;
        let mut notes = Vec::new();
        if admin::in_recovery(&c).await? {
            // Only the holder of the epoch's key gets here: this is the primary restarted behind
            // its gate, not a standby of the other site (whose epoch would have ended this task).
            admin::promote(&c, budget.max(Duration::from_secs(5))).await?;
            notes.push("restarted behind its boot gate and promoted again (the key is ours)".to_string());
        }
        match admin::arm_boot_gate(&c).await {
            Ok(()) => notes.push("boot gate armed".into()),
            Err(e) => notes.push(format!("boot gate NOT armed ({e}): a restart would come up writable")),
        }
        Ok(notes.join("; "))
    }

    async fn run_fence_hook(&self, cfg: &Config, h: &SiteHook) -> Result<String, SiteError> {
        Ok(hook::run(h, &cfg.site, &cfg.namespace, &cfg.name, cfg.epoch).await?)
    }

    async fn resume_bouncers(&self, cfg: &Config, budget: Duration) -> Vec<String> {
        // A PgBouncer that is not paused answers RESUME with an error; that is fine here.
        let mut notes = Vec::new();
        for (r, user, password) in &cfg.bouncers {
            let resumed = match Console::connect(r, user, password, budget).await {
                Ok(c) => c.resume(budget).await,
                Err(e) => Err(e),
            };
            notes.push(match resumed {
                Ok(()) => format!("{}:{} resumed", r.host, r.port),
                Err(e) => e.to_string(),
            });
        }
        notes
    }
}

/// The admin connection to this site's database, within `budget`.
async fn connect_within(cfg: &Config, budget: Duration) -> Result<tokio_postgres::Client, SiteError> {
    tokio::time::timeout(budget, conn::connect(&cfg.postgres))
        .await
        .map_err(|_| SiteError::NoAnswer(budget))?
        .map_err(SiteError::Connect)
}

type Conn<W> = <W as KeeperWitness>::Conn;
type Ka<W> = <<W as KeeperWitness>::Conn as WitnessConn>::KeepAlive;

/// The keeper loop, on etcd and this site's own database and PgBouncers.
async fn keep(cfg_rx: watch::Receiver<Config>, state: Arc<Mutex<State>>) {
    keep_with(EtcdKeeper, PgSiteFence, cfg_rx, state).await
}

/// The keeper loop, on any witness and site.
async fn keep_with<W: KeeperWitness, F: SiteFence>(
    wit: W,
    site: F,
    mut cfg_rx: watch::Receiver<Config>,
    state: Arc<Mutex<State>>,
) {
    let started = Instant::now();
    let mut witness: Option<Conn<W>> = None;
    let mut lease: Option<i64> = None;
    let mut keepalive: Option<Ka<W>> = None;
    // Until the key is first confirmed, the clock runs from the start of the task.
    let mut confirmed = started;
    // This task tried to fence its site (and lifts that once the key is ours again) ...
    let mut fenced_here = false;
    // ... and the database is surely fenced: until then every round tries again.
    let mut fence_sure = false;
    // A fence left by a previous life is lifted once, on the first confirmation.
    let mut lift_pending = cfg_rx.borrow().lift_on_acquire;
    let set = |f: &dyn Fn(&mut State)| {
        if let Ok(mut s) = state.lock() {
            f(&mut s)
        }
    };
    let mut gave_up = false;
    // The key was confirmed at least once in this task's life: until then this site does not know
    // it still serves, and a give-up touches its database only, never a PgBouncer.
    let mut ever_confirmed = false;
    // The database was made to serve as the primary (promoted if it restarted behind its boot
    // gate, the gate armed) since the key was first ours.
    let mut primary_held = false;
    // Runs of the fence hook in the current give-up (reset once the site answers its probes again).
    let mut hook_runs = 0u32;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        let t = cfg.timing;
        if cfg.site_failed {
            // Given up once; again while the database is not surely fenced (the key is only
            // released once it is).
            if !gave_up || !fence_sure {
                let retry = gave_up;
                gave_up = true;
                fence_sure = give_up(
                    &wit,
                    &site,
                    &cfg,
                    ever_confirmed,
                    retry,
                    &mut hook_runs,
                    &mut witness,
                    &mut lease,
                    &mut keepalive,
                    &state,
                )
                .await;
                fenced_here = true;
            }
            if !wait(&mut cfg_rx, Instant::now() + t.renew_every, true).await {
                return;
            }
            continue;
        }
        if gave_up {
            // The site answers again before anybody promoted: take the key back (and lift the fence).
            gave_up = false;
            hook_runs = 0;
            confirmed = Instant::now();
        }
        let round = Instant::now();
        // A round never runs past the self-fence deadline: a witness that hangs mid-round must not
        // delay the fence (the inequality on `Timing` counts from the deadline, not from a timeout).
        // Once fenced, a slow witness gets longer, unless the fence is still to be retried.
        let cutoff = if fence_sure {
            round + t.renew_every * 3
        } else if fenced_here {
            round + t.renew_every
        } else {
            (confirmed + t.self_fence_after).max(round + Duration::from_millis(1))
        };
        let outcome = match tokio::time::timeout_at(
            cutoff,
            round_once(&wit, &cfg, &mut witness, &mut lease, &mut keepalive),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                witness = None;
                keepalive = None;
                Err(KeyError::Unconfirmed(cutoff - round))
            }
        };
        // From here on the witness's error is the text the status shows.
        let outcome = outcome.map_err(|e| e.to_string());
        match outcome {
            Ok(Round::Confirmed(sent)) => {
                confirmed = confirmed.max(sent);
                ever_confirmed = true;
                set(&|s| {
                    s.holding = true;
                    s.witness_error = None;
                });
                if fenced_here || lift_pending {
                    match lift(&site, &cfg).await {
                        Ok(note) => {
                            info!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %note, "self-fence lifted: the leader key is ours again");
                            fenced_here = false;
                            fence_sure = false;
                            lift_pending = false;
                            let now = Timestamp::now();
                            set(&|s| {
                                s.self_fenced = None;
                                s.site_fence = None;
                                s.lifted_at = Some(now);
                            });
                        }
                        Err(e) => {
                            warn!(pair = %cfg.name, error = %e, "lifting the self-fence failed; retrying")
                        }
                    }
                }
                if (!primary_held || cfg.in_recovery) && !fenced_here && !lift_pending {
                    let budget = t.fence_budget.max(Duration::from_secs(1));
                    match site.hold_primary(&cfg, budget).await {
                        Ok(note) => {
                            primary_held = true;
                            info!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %note, "serving as the primary");
                            set(&|s| s.primary_held = Some(note.clone()));
                        }
                        Err(e) => {
                            warn!(pair = %cfg.name, site = %cfg.site, error = %e, "holding the primary failed; retrying")
                        }
                    }
                }
            }
            Ok(Round::EpochMoved { epoch, holder }) => {
                let why = format!(
                    "the epoch moved to {epoch} ({holder}): {} was promoted, this site no longer serves",
                    if holder.is_empty() { "the other site".to_string() } else { holder.clone() }
                );
                // The database only: the PgBouncers now belong to the new primary's transition,
                // which may already have resumed them.
                let (_, note) = fence_database(&site, &cfg).await;
                warn!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %why, %note, "fenced: epoch moved");
                let now = Timestamp::now();
                set(&|s| {
                    s.holding = false;
                    s.self_fenced = Some((now, format!("{why}; {note}")));
                    s.ended = Some(why.clone());
                });
                return;
            }
            Ok(Round::NotHeld(why)) | Err(why) => {
                set(&|s| {
                    s.holding = false;
                    s.witness_error = Some(why.clone());
                });
                let silent = confirmed.elapsed();
                if !fence_sure && silent >= t.self_fence_after {
                    let retry = fenced_here;
                    let (sure, note) = fence_checked(&site, &cfg).await;
                    fenced_here = true;
                    fence_sure = sure;
                    let msg = format!(
                        "{} could not renew its leader key for {:.1}s (deadline {:.1}s, lease {:.0}s): {why}; {note}{}",
                        cfg.site,
                        silent.as_secs_f64(),
                        t.self_fence_after.as_secs_f64(),
                        t.lease_ttl.as_secs_f64(),
                        match (sure, retry) {
                            (true, _) => "",
                            (false, false) => "; the fence is retried every round",
                            (false, true) => "; fence retried, not confirmed yet",
                        }
                    );
                    warn!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %msg, confirmed = sure, "self-fenced");
                    let now = Timestamp::now();
                    set(&|s| s.self_fenced = Some((now, msg.clone())));
                }
            }
        }
        // Next round on the renew interval, or at the self-fence deadline if that comes first.
        let deadline = if fenced_here { None } else { Some(confirmed + t.self_fence_after) };
        let mut wake = round + t.renew_every;
        if let Some(d) = deadline {
            wake = wake.min(d.max(Instant::now()));
        }
        if !wait(&mut cfg_rx, wake, cfg.site_failed).await {
            return;
        }
    }
}

/// Sleeps until `wake`. A new configuration (every reconcile sends one) only cuts the sleep short
/// when it changes whether the site failed, so keepalives keep their own cadence. False when the
/// reconciler dropped the keeper.
async fn wait(cfg_rx: &mut watch::Receiver<Config>, wake: Instant, site_failed: bool) -> bool {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => return true,
            changed = cfg_rx.changed() => {
                if changed.is_err() {
                    return false;
                }
                if cfg_rx.borrow().site_failed != site_failed {
                    return true;
                }
            }
        }
    }
}

enum Round {
    /// The key is ours; etcd confirmed a keepalive sent at this instant.
    Confirmed(Instant),
    /// The key is not (yet) ours, for this reason.
    NotHeld(String),
    EpochMoved {
        epoch: i64,
        holder: String,
    },
}

/// One round: connect if needed, take the key if not held, else renew. Every call is bounded by
/// the renew interval, so a witness that stops answering cannot stall the self-fence clock.
async fn round_once<W: KeeperWitness>(
    wit: &W,
    cfg: &Config,
    witness: &mut Option<Conn<W>>,
    lease: &mut Option<i64>,
    keepalive: &mut Option<Ka<W>>,
) -> Result<Round, KeyError> {
    let t = cfg.timing;
    let limit = t.renew_every;
    if witness.is_none() {
        *witness = Some(wit.connect(cfg, limit).await?);
        *keepalive = None;
    }
    let res = round_connected(cfg, witness.as_mut().expect("connected above"), lease, keepalive, limit).await;
    if res.is_err() {
        // A broken channel is rebuilt on the next round; the lease may still be alive.
        *witness = None;
        *keepalive = None;
    }
    res
}

async fn round_connected<C: WitnessConn>(
    cfg: &Config,
    w: &mut C,
    lease: &mut Option<i64>,
    keepalive: &mut Option<C::KeepAlive>,
    limit: Duration,
) -> Result<Round, KeyError> {
    let bounded = |what: &'static str| move |_| KeyError::NoAnswer { what, limit };
    if let (Some(id), None) = (*lease, keepalive.as_ref()) {
        *keepalive =
            Some(tokio::time::timeout(limit, w.keep_alive(id)).await.map_err(bounded("keepalive"))??);
    }
    if let (Some(_), Some(ka)) = (*lease, keepalive.as_mut()) {
        match w.renew(ka, cfg.epoch, &cfg.site, limit).await? {
            Renewal::Confirmed { sent } => return Ok(Round::Confirmed(sent)),
            Renewal::EpochMoved { epoch, holder } => return Ok(Round::EpochMoved { epoch, holder }),
            Renewal::Expired | Renewal::HeldByOther { .. } => {
                // Take it again below with a fresh lease.
                *lease = None;
                *keepalive = None;
            }
        }
    }
    let sent = Instant::now();
    let id = tokio::time::timeout(limit, w.grant(cfg.timing.lease_ttl))
        .await
        .map_err(bounded("lease grant"))??;
    match tokio::time::timeout(limit, w.acquire(cfg.epoch, &cfg.site, id))
        .await
        .map_err(bounded("leader key transaction"))??
    {
        Acquire::Held => {
            *lease = Some(id);
            *keepalive = None;
            info!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, lease = id, "leader key taken");
            Ok(Round::Confirmed(sent))
        }
        Acquire::EpochMoved { epoch, holder } => Ok(Round::EpochMoved { epoch, holder }),
        Acquire::HeldByOther { holder } => {
            Ok(Round::NotHeld(format!("the leader key is held by {holder} for the same epoch")))
        }
    }
}

/// The site failed its probes: fence what can be reached, then, only if the database is surely
/// fenced, delete the key so that the standby need not wait for the lease to expire. Otherwise the
/// key is left to expire (the database may still be serving clients we cannot see). When SQL
/// cannot fence it, the site fence hook may (`run_hook`). Whether the database is surely fenced.
#[allow(clippy::too_many_arguments)]
async fn give_up<W: KeeperWitness, F: SiteFence>(
    wit: &W,
    site: &F,
    cfg: &Config,
    ever_confirmed: bool,
    retry: bool,
    hook_runs: &mut u32,
    witness: &mut Option<Conn<W>>,
    lease: &mut Option<i64>,
    keepalive: &mut Option<Ka<W>>,
    state: &Mutex<State>,
) -> bool {
    // PgBouncers only once this task knew it serves: a controller starting on a site that may have
    // lost the epoch while it was away must not pause what the serving site now uses.
    // And only at the first attempt of a give-up: a retry may come after the standby took over and
    // its transition resumed the PgBouncers (this task does not see the epoch move while it gives
    // up), and pausing them again would stall the new primary's clients.
    let (mut fenced, mut note) = if !ever_confirmed {
        let (fenced, note) = fence_database(site, cfg).await;
        (fenced, format!("{note}; PgBouncers left alone (the key was never confirmed in this life)"))
    } else if retry {
        let (fenced, note) = fence_database(site, cfg).await;
        (fenced, format!("{note}; PgBouncers not paused again (paused at the first attempt)"))
    } else {
        fence_checked(site, cfg).await
    };
    let mut hooked = false;
    if !fenced {
        if let Some(h) = &cfg.fence_hook {
            if !ever_confirmed {
                note.push_str("; fence hook not run (the key was never confirmed in this life: this site may not serve)");
            } else if *hook_runs >= HOOK_ATTEMPTS {
                note.push_str(&format!(
                    "; fence hook failed {HOOK_ATTEMPTS} times in this give-up, not run again"
                ));
            } else {
                *hook_runs += 1;
                let run = run_hook(site, cfg, h, *hook_runs).await;
                fenced = run.confirmed;
                hooked = run.confirmed;
                note.push_str(&format!("; {}", run.note));
                if let Ok(mut s) = state.lock() {
                    s.site_fence = Some(run);
                }
            }
        }
    }
    let mut msg = format!("{} failed its probes and gives up the leader key: {note}", cfg.site);
    *keepalive = None;
    *lease = None;
    if fenced {
        let limit = cfg.timing.renew_every;
        let released = async {
            let mut w = match witness.take() {
                Some(w) => w,
                None => wit.connect(cfg, limit).await?,
            };
            let why = hooked.then(|| {
                format!("released at {} after its site fence hook confirmed the fence", Timestamp::now())
            });
            w.release(cfg.epoch, &cfg.site, why.as_deref()).await?;
            *witness = Some(w);
            Ok::<_, KeyError>(())
        };
        match tokio::time::timeout(limit, released).await {
            Ok(Ok(())) => msg.push_str("; key released"),
            Ok(Err(e)) => msg.push_str(&format!("; key left to expire ({e})")),
            Err(_) => msg.push_str("; key left to expire (etcd did not answer)"),
        }
    } else {
        msg.push_str("; key left to expire, the fence is retried");
    }
    warn!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %msg, "leader key given up");
    let now = Timestamp::now();
    if let Ok(mut s) = state.lock() {
        s.holding = false;
        s.self_fenced = Some((now, msg));
    }
    fenced
}

/// Runs the fence hook once, bounded by its timeout; counted, logged and reported.
async fn run_hook(site: &impl SiteFence, cfg: &Config, h: &SiteHook, attempt: u32) -> HookRun {
    let timeout: Duration = h.hook.timeout.into();
    let started = Instant::now();
    let res = match tokio::time::timeout(timeout, site.run_fence_hook(cfg, h)).await {
        Ok(r) => {
            r.map_err(|e| (matches!(e, SiteError::Hook(hook::HookError::Timeout { .. })), e.to_string()))
        }
        Err(_) => Err((true, format!("site fence hook: did not finish within {timeout:?} (killed)"))),
    };
    let took = started.elapsed().as_secs_f64();
    let (outcome, confirmed, note) = match res {
        Ok(said) => (
            "confirmed",
            true,
            format!(
                "site fence hook confirmed the fence (run {attempt}, {took:.1}s){}",
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ),
        ),
        Err((timed_out, e)) => (
            if timed_out { "timed_out" } else { "failed" },
            false,
            format!("{e} (run {attempt} of at most {HOOK_ATTEMPTS}, {took:.1}s): the fence is not sure"),
        ),
    };
    cfg.hook_runs
        .get_or_create(&crate::metrics::FenceHookLabels {
            pair: format!("{}/{}", cfg.namespace, cfg.name),
            site: cfg.site.clone(),
            outcome: outcome.into(),
        })
        .inc();
    if confirmed {
        info!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %note, "site fence hook confirmed");
    } else {
        warn!(pair = %cfg.name, site = %cfg.site, epoch = cfg.epoch, %note, "site fence hook did not confirm");
    }
    HookRun { at: Timestamp::now(), attempt, confirmed, note }
}

/// Fences this site's database only, within the fence budget: whether it is surely fenced, and
/// what happened.
async fn fence_database(site: &impl SiteFence, cfg: &Config) -> (bool, String) {
    let budget = cfg.timing.fence_budget;
    match tokio::time::timeout(budget, site.fence_database(cfg)).await {
        Ok(Ok(n)) => (true, format!("database read-only, {n} client sessions terminated")),
        Ok(Err(e)) => (false, format!("fencing the database failed: {e}")),
        Err(_) => (false, format!("fencing the database did not finish within {budget:?}")),
    }
}

/// Fences this site's database and pauses the PgBouncers, within the fence budget: whether the
/// database is surely fenced now, and what was done, for the log and the status (never
/// credentials).
async fn fence_checked(site: &impl SiteFence, cfg: &Config) -> (bool, String) {
    let budget = cfg.timing.fence_budget;
    let ((fenced, mut note), pauses) = tokio::join!(
        fence_database(site, cfg),
        tokio::time::timeout(budget, site.pause_bouncers(cfg, budget))
    );
    match pauses {
        Ok(results) => {
            let ok = results.iter().filter(|r| r.is_ok()).count();
            if !results.is_empty() {
                note.push_str(&format!(", {ok}/{} PgBouncers paused", results.len()));
            }
            for e in results.into_iter().filter_map(Result::err) {
                note.push_str(&format!(" ({e})"));
            }
        }
        Err(_) => note.push_str(&format!(", PgBouncer PAUSE did not finish within {budget:?}")),
    }
    (fenced, note)
}

/// Lifts a self-fence: the database takes writes again and the PgBouncers resume.
async fn lift(site: &impl SiteFence, cfg: &Config) -> Result<String, SiteError> {
    let budget = cfg.timing.fence_budget.max(Duration::from_secs(1));
    site.unfence_database(cfg, budget).await?;
    let notes = site.resume_bouncers(cfg, budget).await;
    Ok(format!(
        "database writable again; {}",
        if notes.is_empty() { "no PgBouncer".into() } else { notes.join(", ") }
    ))
}

#[cfg(test)]
mod tests;
