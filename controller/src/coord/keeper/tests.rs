//! The keeper's failure paths on a paused clock: an in-memory witness (leases that expire, a key
//! bound to a lease, an epoch) and an in-memory site (a database that can be fenced, PgBouncers
//! that can be paused). Times below are offsets from the start of a test.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::*;

const SITE: &str = "west";
const EPOCH: i64 = 1;

/// T = 10s, so r = 2s, f = 5s; b = 1s.
fn timing() -> Timing {
    Timing::new(Duration::from_secs(10), Duration::from_secs(1)).expect("10s lease, 1s probe timeout")
}

fn config() -> Config {
    Config {
        endpoints: vec!["https://etcd.invalid:2379".into()],
        access: Access::default(),
        prefix: "/understudy".into(),
        namespace: "db".into(),
        name: "orders".into(),
        site: SITE.into(),
        epoch: EPOCH,
        timing: timing(),
        postgres: Arc::new(conn::Target::unreachable()),
        bouncers: Vec::new(),
        lift_on_acquire: false,
        site_failed: false,
        in_recovery: false,
        fence_hook: None,
        hook_runs: Default::default(),
    }
}

/// A fence hook with a 4s timeout (what it does is the fake site's `hook`).
fn with_hook() -> Config {
    Config {
        fence_hook: Some(SiteHook {
            hook: crate::crd::FenceHook {
                command: vec!["/fence".into()],
                timeout: Duration::from_secs(4).into(),
            },
            pg_host: "pg-west".into(),
            pg_port: 5432,
        }),
        ..config()
    }
}

/// The witness: what etcd holds, and what the keeper asked of it.
struct Etcd {
    /// `(epoch, holder)` of the epoch key.
    epoch: (i64, String),
    /// `(epoch, holder, lease)` of the leader key.
    leader: Option<(i64, String, i64)>,
    /// Live leases: when each expires, and its TTL.
    leases: HashMap<i64, (Instant, Duration)>,
    next_lease: i64,
    grants: usize,
    acquired: usize,
    /// When each confirmed keepalive was sent.
    renewed: Vec<Instant>,
    released: Vec<Instant>,
    /// What each release published beside it.
    release_notes: Vec<Option<String>>,
}

impl Etcd {
    /// Leases past their TTL are gone, and the key bound to one with them.
    fn expire(&mut self) {
        let now = Instant::now();
        self.leases.retain(|_, (until, _)| *until > now);
        if let Some((_, _, l)) = &self.leader {
            if !self.leases.contains_key(l) {
                self.leader = None;
            }
        }
    }
}

#[derive(Clone)]
struct FakeWitness {
    etcd: Arc<Mutex<Etcd>>,
    /// False: every call hangs until it is true again.
    up: Arc<watch::Sender<bool>>,
}

impl FakeWitness {
    async fn answer<T>(&self, f: impl FnOnce(&mut Etcd) -> T) -> T {
        let mut up = self.up.subscribe();
        let _ = up.wait_for(|up| *up).await;
        let mut etcd = self.etcd.lock().expect("etcd");
        etcd.expire();
        f(&mut etcd)
    }
}

#[async_trait]
impl KeeperWitness for FakeWitness {
    type Conn = FakeWitness;

    async fn connect(&self, _: &Config, _: Duration) -> Result<FakeWitness, KeyError> {
        self.answer(|_| ()).await;
        Ok(self.clone())
    }
}

#[async_trait]
impl WitnessConn for FakeWitness {
    type KeepAlive = i64;

    async fn grant(&mut self, ttl: Duration) -> Result<i64, KeyError> {
        Ok(self
            .answer(|e| {
                e.next_lease += 1;
                e.grants += 1;
                e.leases.insert(e.next_lease, (Instant::now() + ttl, ttl));
                e.next_lease
            })
            .await)
    }

    async fn keep_alive(&mut self, lease: i64) -> Result<i64, KeyError> {
        Ok(lease)
    }

    async fn acquire(&mut self, epoch: i64, holder: &str, lease: i64) -> Result<Acquire, KeyError> {
        self.answer(|e| {
            if e.epoch.0 != epoch {
                return Ok(Acquire::EpochMoved { epoch: e.epoch.0, holder: e.epoch.1.clone() });
            }
            if !e.leases.contains_key(&lease) {
                return Err(KeyError::Etcd(etcd::Error::Txn {
                    key: "/understudy/db/orders/leader".into(),
                    reason: format!("lease {lease} not found"),
                }));
            }
            match &e.leader {
                Some((_, h, _)) if h != holder => Ok(Acquire::HeldByOther { holder: h.clone() }),
                _ => {
                    e.leader = Some((epoch, holder.to_string(), lease));
                    e.acquired += 1;
                    Ok(Acquire::Held)
                }
            }
        })
        .await
    }

    async fn renew(
        &mut self,
        ka: &mut i64,
        epoch: i64,
        holder: &str,
        _: Duration,
    ) -> Result<Renewal, KeyError> {
        let sent = Instant::now();
        Ok(self
            .answer(|e| {
                let Some((until, ttl)) = e.leases.get_mut(ka) else { return Renewal::Expired };
                *until = Instant::now() + *ttl;
                if e.epoch.0 != epoch {
                    return Renewal::EpochMoved { epoch: e.epoch.0, holder: e.epoch.1.clone() };
                }
                match &e.leader {
                    Some((ep, h, _)) if *ep == epoch && h == holder => {
                        e.renewed.push(sent);
                        Renewal::Confirmed { sent }
                    }
                    Some((_, h, _)) => Renewal::HeldByOther { holder: h.clone() },
                    None => Renewal::Expired,
                }
            })
            .await)
    }

    async fn release(&mut self, epoch: i64, holder: &str, note: Option<&str>) -> Result<(), KeyError> {
        self.answer(|e| {
            e.release_notes.push(note.map(str::to_string));
            if matches!(&e.leader, Some((ep, h, _)) if *ep == epoch && h == holder) {
                e.leader = None;
            }
            e.released.push(Instant::now());
        })
        .await;
        Ok(())
    }
}

/// This site: its database and two PgBouncers.
struct Site {
    read_only: bool,
    paused: [bool; 2],
    /// How long a fence takes, and whether it fails.
    fence_takes: Duration,
    fence_fails: bool,
    /// When each fence attempt ended, and whether it worked.
    fences: Vec<(Instant, bool)>,
    bouncer_fences: usize,
    lifts: usize,
    /// The database restarted behind its boot gate (a standby until promoted).
    in_recovery: bool,
    promotions: usize,
    gate_armed: bool,
    /// What the fence hook does, and when each run started.
    hook: Hook,
    hook_runs: Vec<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Hook {
    /// Takes 1s, then confirms.
    Confirms,
    /// Takes 1s, then fails.
    Fails,
    /// Never answers.
    Hangs,
}

#[derive(Clone)]
struct FakeSite(Arc<Mutex<Site>>);

impl FakeSite {
    fn with<T>(&self, f: impl FnOnce(&mut Site) -> T) -> T {
        f(&mut self.0.lock().expect("site"))
    }
}

#[async_trait]
impl SiteFence for FakeSite {
    async fn fence_database(&self, _: &Config) -> Result<u64, SiteError> {
        tokio::time::sleep(self.with(|s| s.fence_takes)).await;
        self.with(|s| {
            let ok = !s.fence_fails;
            s.fences.push((Instant::now(), ok));
            if !ok {
                return Err(SiteError::Admin(admin::Error {
                    action: "set read-only",
                    reason: "permission denied to set default_transaction_read_only".into(),
                }));
            }
            s.read_only = true;
            Ok(3)
        })
    }

    async fn unfence_database(&self, _: &Config, _: Duration) -> Result<(), SiteError> {
        self.with(|s| {
            s.read_only = false;
            s.lifts += 1;
        });
        Ok(())
    }

    async fn pause_bouncers(&self, _: &Config, _: Duration) -> Vec<Result<(), SiteError>> {
        self.with(|s| {
            s.bouncer_fences += 1;
            s.paused = [true; 2];
        });
        vec![Ok(()), Ok(())]
    }

    async fn resume_bouncers(&self, _: &Config, _: Duration) -> Vec<String> {
        self.with(|s| s.paused = [false; 2]);
        vec!["pgb-0:6432 resumed".into(), "pgb-1:6432 resumed".into()]
    }

    async fn hold_primary(&self, _: &Config, _: Duration) -> Result<String, SiteError> {
        self.with(|s| {
            let promoted = std::mem::take(&mut s.in_recovery);
            s.promotions += usize::from(promoted);
            s.gate_armed = true;
            Ok(if promoted { "promoted; boot gate armed" } else { "boot gate armed" }.into())
        })
    }

    async fn run_fence_hook(&self, _: &Config, _: &SiteHook) -> Result<String, SiteError> {
        let hook = self.with(|s| {
            s.hook_runs.push(Instant::now());
            s.hook
        });
        match hook {
            Hook::Confirms => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok("postmaster gone, standby.signal armed".into())
            }
            Hook::Fails => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(SiteError::Hook(hook::HookError::EmptyCommand))
            }
            Hook::Hangs => std::future::pending().await,
        }
    }
}

/// A running keeper on the fakes.
struct Run {
    t0: Instant,
    etcd: Arc<Mutex<Etcd>>,
    up: Arc<watch::Sender<bool>>,
    site: FakeSite,
    cfg: watch::Sender<Config>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Run {
    fn start(cfg: Config) -> Run {
        let etcd = Arc::new(Mutex::new(Etcd {
            epoch: (EPOCH, SITE.into()),
            leader: None,
            leases: HashMap::new(),
            next_lease: 100,
            grants: 0,
            acquired: 0,
            renewed: Vec::new(),
            released: Vec::new(),
            release_notes: Vec::new(),
        }));
        let up = Arc::new(watch::channel(true).0);
        let site = FakeSite(Arc::new(Mutex::new(Site {
            read_only: false,
            paused: [false; 2],
            fence_takes: Duration::from_millis(600),
            fence_fails: false,
            fences: Vec::new(),
            bouncer_fences: 0,
            lifts: 0,
            in_recovery: false,
            promotions: 0,
            gate_armed: false,
            hook: Hook::Confirms,
            hook_runs: Vec::new(),
        })));
        let (tx, rx) = watch::channel(cfg);
        let state = Arc::new(Mutex::new(State::default()));
        let witness = FakeWitness { etcd: etcd.clone(), up: up.clone() };
        let task: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(keep_with(witness, site.clone(), rx, state.clone()));
        Run { t0: Instant::now(), etcd, up, site, cfg: tx, state, task: tokio::spawn(task) }
    }

    /// Lets the keeper run until `secs` after the start.
    async fn until(&self, secs: f64) {
        tokio::time::sleep_until(self.t0 + Duration::from_secs_f64(secs)).await;
    }

    fn at(&self, i: Instant) -> f64 {
        (i - self.t0).as_secs_f64()
    }

    fn state(&self) -> State {
        self.state.lock().expect("state").clone()
    }

    fn etcd<T>(&self, f: impl FnOnce(&mut Etcd) -> T) -> T {
        f(&mut self.etcd.lock().expect("etcd"))
    }

    fn last_confirmed(&self) -> f64 {
        self.etcd(|e| e.renewed.last().map(|i| self.at(*i))).expect("a confirmed keepalive")
    }

    fn holds_key(&self) -> bool {
        self.etcd(|e| {
            e.expire();
            matches!(&e.leader, Some((EPOCH, h, _)) if h == SITE)
        })
    }

    fn hang(&self, hang: bool) {
        self.up.send_replace(!hang);
    }

    /// `understudy_site_fence_hook_runs` for `outcome`.
    fn config_hook_runs(&self, outcome: &str) -> u64 {
        let runs = self.cfg.borrow().hook_runs.clone();
        let n = runs
            .get_or_create(&crate::metrics::FenceHookLabels {
                pair: "db/orders".into(),
                site: SITE.into(),
                outcome: outcome.into(),
            })
            .get();
        n
    }

    fn site_failed(&self, failed: bool) {
        self.cfg.send_modify(|c| c.site_failed = failed);
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn steady_the_key_is_taken_once_and_renewed_every_renew_interval() {
    let t = timing();
    let run = Run::start(config());
    run.until(21.0).await;
    let s = run.state();
    assert!(s.holding, "{s:?}");
    assert_eq!((s.self_fenced.clone(), s.ended.clone(), s.witness_error.clone()), (None, None, None));
    assert!(run.holds_key());
    let renewed: Vec<f64> = run.etcd(|e| e.renewed.iter().map(|i| run.at(*i)).collect());
    // Taken at 0 with one lease, then a keepalive every r.
    assert_eq!(run.etcd(|e| (e.grants, e.acquired)), (1, 1));
    assert_eq!(renewed, (1..=10).map(|i| i as f64 * secs(t.renew_every)).collect::<Vec<_>>());
    assert!(run.site.with(|s| s.fences.is_empty() && s.lifts == 0 && s.bouncer_fences == 0));
    assert!(!run.task.is_finished());
}

/// The witness hangs at 10.5s, just after the keepalive sent at 10s was confirmed: every call hangs.
async fn hung_and_fenced() -> Run {
    let t = timing();
    let run = Run::start(config());
    run.until(10.5).await;
    run.hang(true);
    let last = run.last_confirmed();
    assert_eq!(last, 10.0);
    // Not before the deadline: one lost keepalive (at 12s) never fences.
    run.until(last + secs(t.self_fence_after) - 0.01).await;
    assert!(run.site.with(|s| s.fences.is_empty()), "fenced before the deadline");
    run.until(last + secs(t.self_fence_after + t.fence_budget)).await;
    run
}

#[tokio::test(start_paused = true)]
async fn a_hung_witness_fences_within_the_budget_after_the_deadline_and_before_the_lease_expires() {
    let t = timing();
    let run = hung_and_fenced().await;
    let last = run.last_confirmed();
    let fences = run.site.with(|s| s.fences.clone());
    assert_eq!(fences.len(), 1, "{fences:?}");
    let (done, ok) = fences[0];
    let done = run.at(done);
    assert!(ok);
    let deadline = last + secs(t.self_fence_after);
    assert!(done >= deadline, "fenced at {done}s, before the deadline {deadline}s");
    assert!(done <= deadline + secs(t.fence_budget), "fenced at {done}s, over budget after {deadline}s");
    assert!(done < last + secs(t.lease_ttl), "fenced at {done}s, after the lease could expire");
    assert!(run.site.with(|s| s.read_only && s.paused == [true; 2]));
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("self_fenced reported");
    assert!(msg.contains("database read-only") && msg.contains("2/2 PgBouncers paused"), "{msg}");
    assert!(!s.holding && s.ended.is_none() && s.witness_error.is_some(), "{s:?}");
    // Nothing is lifted while the witness stays away, and the key is never released.
    run.until(40.0).await;
    assert!(run.site.with(|s| s.read_only && s.lifts == 0 && s.fences.len() == 1));
    assert!(run.etcd(|e| e.released.is_empty()));
    assert!(!run.holds_key(), "the lease expired");
}

#[tokio::test(start_paused = true)]
async fn the_witness_back_before_the_lease_expired_the_key_is_kept_and_the_fence_lifted() {
    let run = hung_and_fenced().await;
    assert!(run.site.with(|s| s.read_only));
    run.hang(false);
    run.until(17.5).await;
    assert!(run.holds_key());
    // The same lease: the keepalive reached it in time.
    assert_eq!(run.etcd(|e| e.grants), 1);
    assert!(run.site.with(|s| !s.read_only && s.paused == [false; 2] && s.lifts == 1));
    let s = run.state();
    assert!(s.holding && s.self_fenced.is_none() && s.lifted_at.is_some(), "{s:?}");
    // And it stays: the lift happens once, the next fence only after a new silence.
    run.until(40.0).await;
    assert!(run.holds_key() && run.site.with(|s| s.lifts == 1 && s.fences.len() == 1));
}

#[tokio::test(start_paused = true)]
async fn the_witness_back_after_the_lease_expired_the_key_is_retaken_and_the_fence_lifted() {
    let run = hung_and_fenced().await;
    run.until(25.0).await;
    assert!(!run.holds_key(), "the lease (confirmed at 10s, T = 10s) expired at 20s");
    run.hang(false);
    run.until(26.0).await;
    assert!(run.holds_key(), "retaken with the epoch unchanged");
    assert_eq!(run.etcd(|e| (e.grants, e.acquired)), (2, 2));
    assert!(run.site.with(|s| !s.read_only && s.paused == [false; 2] && s.lifts == 1));
    let s = run.state();
    assert!(s.holding && s.self_fenced.is_none() && s.lifted_at.is_some(), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn only_a_fence_of_this_keeper_or_inherited_from_its_last_life_is_lifted() {
    // Somebody else fenced the database: the keeper holds the key and leaves it alone.
    let run = Run::start(config());
    run.site.with(|s| s.read_only = true);
    run.until(12.0).await;
    assert!(run.holds_key() && run.site.with(|s| s.read_only && s.lifts == 0));
    // A self-fence of a previous life (`lift_on_acquire`) is lifted on the first confirmation.
    let run = Run::start(Config { lift_on_acquire: true, ..config() });
    run.site.with(|s| s.read_only = true);
    run.until(12.0).await;
    assert!(run.holds_key() && run.site.with(|s| !s.read_only && s.lifts == 1));
}

#[tokio::test(start_paused = true)]
async fn the_epoch_moved_fences_the_database_at_once_and_ends_without_retaking_the_key() {
    let t = timing();
    let run = Run::start(config());
    run.until(10.5).await;
    // The other site won the swap, deleting the key (a switchover breaks it).
    run.etcd(|e| {
        e.epoch = (EPOCH + 1, "east".into());
        e.leader = None;
    });
    let moved = 10.5;
    run.until(moved + secs(t.renew_every + t.fence_budget)).await;
    let fences = run.site.with(|s| s.fences.clone());
    assert_eq!(fences.len(), 1, "{fences:?}");
    assert!(run.at(fences[0].0) <= moved + secs(t.renew_every + t.fence_budget));
    // The database only: the PgBouncers are the new primary's now.
    assert!(run.site.with(|s| s.read_only && s.paused == [false; 2] && s.bouncer_fences == 0));
    assert!(run.task.is_finished(), "the task ended");
    let s = run.state();
    assert!(s.ended.as_deref().is_some_and(|e| e.contains("moved to 2 (east)")), "{s:?}");
    assert!(!s.holding && s.self_fenced.is_some());
    run.until(60.0).await;
    assert_eq!(run.etcd(|e| (e.grants, e.acquired, e.leader.clone())), (1, 1, None));
    assert!(run.site.with(|s| s.read_only && s.lifts == 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_site_releases_the_key_once_its_database_is_fenced() {
    let run = Run::start(config());
    run.until(10.5).await;
    run.site_failed(true);
    run.until(11.5).await;
    let fenced = run.site.with(|s| s.fences.clone());
    let released = run.etcd(|e| e.released.clone());
    assert_eq!((fenced.len(), released.len()), (1, 1));
    assert!(fenced[0].1 && released[0] >= fenced[0].0, "released before the fence was confirmed");
    assert!(run.site.with(|s| s.read_only && s.paused == [true; 2]));
    assert!(!run.holds_key());
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("reported");
    assert!(!s.holding && msg.contains("key released"), "{msg}");
    // No more keepalives, no second fence.
    let renewed = run.etcd(|e| e.renewed.len());
    run.until(40.0).await;
    assert_eq!(run.etcd(|e| (e.renewed.len(), e.grants)), (renewed, 1));
    assert_eq!(run.site.with(|s| s.fences.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_site_whose_fence_fails_leaves_the_key_to_expire() {
    let t = timing();
    let run = Run::start(config());
    run.until(10.5).await;
    run.site.with(|s| s.fence_fails = true);
    run.site_failed(true);
    run.until(11.5).await;
    assert!(run.holds_key(), "the key stays until its lease expires");
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("reported");
    assert!(msg.contains("fencing the database failed") && msg.contains("key left to expire"), "{msg}");
    // Not renewed any more: gone with its lease (last confirmed at 10s), never released.
    run.until(10.0 + secs(t.lease_ttl) + 0.1).await;
    assert!(!run.holds_key());
    assert!(run.etcd(|e| e.released.is_empty()));
    // The fence is retried; once it holds, the site is fenced (the key is gone by then anyway).
    assert!(run.site.with(|s| s.fences.len()) >= 3);
    // The PgBouncers were paused at the first attempt only: by now the standby may have taken over
    // and resumed them.
    assert_eq!(run.site.with(|s| s.bouncer_fences), 1);
    let (_, msg) = run.state().self_fenced.expect("reported");
    assert!(msg.contains("PgBouncers not paused again"), "{msg}");
    run.site.with(|s| s.fence_fails = false);
    run.until(25.0).await;
    assert!(run.site.with(|s| s.read_only && s.fences.last().is_some_and(|f| f.1)));
    let tries = run.site.with(|s| s.fences.len());
    run.until(40.0).await;
    assert_eq!(run.site.with(|s| s.fences.len()), tries, "no fence after one held");
}

#[tokio::test(start_paused = true)]
async fn a_self_fence_that_fails_is_reported_and_retried_and_the_key_never_released() {
    let t = timing();
    let run = Run::start(config());
    run.until(10.5).await;
    run.site.with(|s| s.fence_fails = true);
    run.hang(true);
    run.until(10.0 + secs(t.self_fence_after + t.fence_budget)).await;
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("a failed fence is reported");
    assert!(msg.contains("fencing the database failed: set read-only: permission denied"), "{msg}");
    assert!(!s.holding && s.ended.is_none());
    // Retried every round while the lease may still be alive.
    run.until(10.0 + secs(t.lease_ttl)).await;
    let tries = run.site.with(|s| s.fences.clone());
    assert!(tries.len() >= 2 && tries.iter().all(|f| !f.1), "{tries:?}");
    run.site.with(|s| s.fence_fails = false);
    run.until(24.0).await;
    assert!(run.site.with(|s| s.read_only && s.fences.last().is_some_and(|f| f.1)));
    let (_, msg) = run.state().self_fenced.expect("reported");
    assert!(msg.contains("database read-only"), "{msg}");
    let tries = run.site.with(|s| s.fences.len());
    run.until(40.0).await;
    assert_eq!(run.site.with(|s| s.fences.len()), tries, "no fence after one held");
    assert!(run.etcd(|e| e.released.is_empty()), "the self-fence path never releases the key");
}

#[tokio::test(start_paused = true)]
async fn a_fence_that_hangs_is_cut_at_the_budget_reported_unconfirmed_and_retried() {
    let t = timing();
    let run = Run::start(config());
    run.until(10.5).await;
    run.site.with(|s| s.fence_takes = Duration::from_secs(30));
    run.hang(true);
    let deadline = 10.0 + secs(t.self_fence_after);
    run.until(deadline + secs(t.fence_budget) + 0.01).await;
    let (_, msg) = run.state().self_fenced.expect("reported at the end of the budget");
    assert!(msg.contains(&format!("did not finish within {:?}", t.fence_budget)), "{msg}");
    assert!(msg.contains("2/2 PgBouncers paused"), "{msg}");
    // The next attempt starts within a round, still before the lease can expire.
    run.site.with(|s| s.fence_takes = Duration::from_millis(600));
    run.until(10.0 + secs(t.lease_ttl)).await;
    let fences = run.site.with(|s| s.fences.clone());
    assert!(fences.len() == 1 && fences[0].1 && run.at(fences[0].0) < 10.0 + secs(t.lease_ttl), "{fences:?}");
    assert!(run.site.with(|s| s.read_only));
}

#[tokio::test(start_paused = true)]
async fn a_primary_restarted_behind_its_boot_gate_is_promoted_once_the_key_is_ours() {
    let run = Run::start(config());
    run.site.with(|s| s.in_recovery = true);
    run.until(1.0).await;
    assert!(run.holds_key());
    assert!(run.site.with(|s| !s.in_recovery && s.promotions == 1 && s.gate_armed));
    assert_eq!(run.state().primary_held.as_deref(), Some("promoted; boot gate armed"));
    // Once per life: a later restart is the next task's to handle.
    run.until(12.0).await;
    assert_eq!(run.site.with(|s| s.promotions), 1);
}

#[tokio::test(start_paused = true)]
async fn a_site_whose_epoch_moved_while_it_was_away_never_promotes_and_never_pauses_a_pgbouncer() {
    // The controller comes back on a site that lost the epoch: its database restarted as a
    // standby behind the gate, and its probes fail (the site is still coming up).
    let run = Run::start(Config { site_failed: true, ..config() });
    run.etcd(|e| e.epoch = (EPOCH + 1, "east".into()));
    run.site.with(|s| s.in_recovery = true);
    run.until(2.0).await;
    assert!(run.site.with(|s| s.bouncer_fences == 0 && s.paused == [false; 2]), "a PgBouncer was paused");
    let (_, msg) = run.state().self_fenced.expect("the give-up is reported");
    assert!(msg.contains("PgBouncers left alone"), "{msg}");
    // The probes pass again: the keeper meets the moved epoch, fences and ends, and never promotes.
    run.site_failed(false);
    run.until(6.0).await;
    assert!(run.task.is_finished());
    assert!(run.site.with(|s| s.in_recovery && s.promotions == 0 && s.bouncer_fences == 0));
    assert!(run.state().ended.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_primary_restarted_while_the_key_is_held_is_promoted_again_at_the_next_round() {
    let run = Run::start(config());
    run.until(5.0).await;
    assert_eq!(run.site.with(|s| s.promotions), 0);
    // A restart by hand: the database comes back behind its gate, the probes say so.
    run.site.with(|s| s.in_recovery = true);
    run.cfg.send_modify(|c| c.in_recovery = true);
    run.until(5.0 + secs(timing().renew_every) + 0.01).await;
    assert!(run.site.with(|s| !s.in_recovery && s.promotions == 1));
    assert!(run.holds_key() && run.site.with(|s| s.fences.is_empty()));
}

/// The postmaster died at 10.5s (SQL cannot fence it) and the site's probes say so; the hook acts.
async fn dead_postmaster(hook: Hook) -> Run {
    let run = Run::start(with_hook());
    run.site.with(|s| s.hook = hook);
    run.until(10.5).await;
    run.site.with(|s| s.fence_fails = true);
    run.site_failed(true);
    run
}

#[tokio::test(start_paused = true)]
async fn a_fence_hook_that_confirms_releases_the_key_at_once() {
    let run = dead_postmaster(Hook::Confirms).await;
    // SQL fence fails (0.6s), the hook runs 1s: released at about 12.1s, not at the lease (20s).
    run.until(12.5).await;
    assert!(!run.holds_key(), "the key is gone before its lease");
    let released = run.etcd(|e| e.released.clone());
    assert_eq!(released.len(), 1);
    let hook_runs = run.site.with(|s| s.hook_runs.clone());
    assert_eq!(hook_runs.len(), 1);
    assert!(released[0] >= hook_runs[0] + Duration::from_secs(1), "released before the hook answered");
    assert!(run.at(released[0]) < 10.5 + 2.0, "released at {}s", run.at(released[0]));
    let note = run.etcd(|e| e.release_notes[0].clone()).expect("a note beside the release");
    assert!(note.contains("site fence hook confirmed the fence"), "{note}");
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("reported");
    assert!(
        msg.contains("fencing the database failed") && msg.contains("site fence hook confirmed"),
        "{msg}"
    );
    assert!(msg.contains("postmaster gone") && msg.contains("key released"), "{msg}");
    let hook = s.site_fence.clone().expect("the hook run is reported");
    assert!(hook.confirmed && hook.attempt == 1, "{hook:?}");
    // Once per give-up: confirmed, never run again.
    run.until(40.0).await;
    assert_eq!(run.site.with(|s| s.hook_runs.len()), 1);
    assert_eq!(
        run.config_hook_runs("confirmed"),
        1,
        "counted in understudy_site_fence_hook_runs{{outcome=\"confirmed\"}}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fence_hook_that_fails_leaves_the_key_to_its_lease_and_is_tried_three_times() {
    let t = timing();
    let run = dead_postmaster(Hook::Fails).await;
    run.until(10.0 + secs(t.lease_ttl) - 0.1).await;
    assert!(run.holds_key(), "the key stays until its lease expires");
    run.until(10.0 + secs(t.lease_ttl) + 0.1).await;
    assert!(!run.holds_key());
    assert!(run.etcd(|e| e.released.is_empty()), "a failed hook never releases the key");
    let s = run.state();
    let (_, msg) = s.self_fenced.clone().expect("reported");
    assert!(msg.contains("the fence is not sure") && msg.contains("key left to expire"), "{msg}");
    assert!(s.site_fence.as_ref().is_some_and(|h| !h.confirmed), "{s:?}");
    run.until(60.0).await;
    assert_eq!(run.site.with(|s| s.hook_runs.len()), HOOK_ATTEMPTS as usize);
    let (_, msg) = run.state().self_fenced.expect("reported");
    assert!(msg.contains("not run again"), "{msg}");
    assert_eq!(run.config_hook_runs("failed"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_fence_hook_that_hangs_is_cut_at_its_timeout_and_the_key_left_to_its_lease() {
    let t = timing();
    let run = dead_postmaster(Hook::Hangs).await;
    // Given up at 10.5s, SQL fence fails at 11.1s, the hook is cut at its 4s timeout.
    run.until(15.2).await;
    let s = run.state();
    let hook = s.site_fence.clone().expect("the cut hook is reported");
    assert!(!hook.confirmed && hook.note.contains("did not finish within 4s"), "{hook:?}");
    assert!(run.holds_key());
    run.until(10.0 + secs(t.lease_ttl) + 0.1).await;
    assert!(!run.holds_key() && run.etcd(|e| e.released.is_empty()));
    // Every run that ended was cut at the timeout (the last one may still be running).
    let (cut, started) = (run.config_hook_runs("timed_out") as usize, run.site.with(|s| s.hook_runs.len()));
    assert!(cut >= 1 && (cut == started || cut + 1 == started), "{cut} cut of {started}");
    assert_eq!(run.config_hook_runs("confirmed"), 0);
}

#[tokio::test(start_paused = true)]
async fn the_fence_hook_is_not_run_when_sql_fences_the_database_nor_while_the_key_is_held() {
    let run = Run::start(with_hook());
    run.until(10.5).await;
    assert!(run.site.with(|s| s.hook_runs.is_empty()), "run while the key is held and the database fine");
    run.site_failed(true);
    run.until(12.0).await;
    assert!(!run.holds_key() && run.etcd(|e| e.released.len()) == 1);
    assert!(run.site.with(|s| s.hook_runs.is_empty() && s.read_only), "the SQL fence was enough");
    assert_eq!(run.etcd(|e| e.release_notes[0].clone()), None);
    assert!(run.state().site_fence.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_fence_hook_is_not_run_before_the_key_was_confirmed_in_this_life() {
    let t = timing();
    // The controller starts on a site whose database is dead: it may not serve any more.
    let run = Run::start(Config { site_failed: true, ..with_hook() });
    run.site.with(|s| s.fence_fails = true);
    run.until(secs(t.lease_ttl)).await;
    assert!(run.site.with(|s| s.hook_runs.is_empty()));
    let (_, msg) = run.state().self_fenced.expect("reported");
    assert!(msg.contains("fence hook not run"), "{msg}");
}
