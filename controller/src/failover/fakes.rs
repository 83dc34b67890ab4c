//! In-memory fakes of every port (tests only), and `World`: a pair, its two sites and everything
//! around them, wired into `Ports`. Each fake keeps what happened (promotions, epoch moves, DNS
//! changes, every status written) so a test can say "exactly once", and fails on demand.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use kube::runtime::controller::Action;

use super::{executor, ports::Events, ports::Ports, Kind};
use crate::{
    context::Error,
    coord::{etcd::LeaderKey, EpochWitness, Swap, WitnessError},
    crd::{
        DisasterRecoveryPair, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, SiteStatus, Transition,
        Trigger,
    },
    datasource::{self, DataSourceWriter, Rewrite, RewriteError},
    dns::{self, DnsProvider},
    events::EventNote,
    metrics::Metrics,
    pg::{
        admin::{self, OpenError, PgAdmin, PgSession},
        Lsn,
    },
    recycle::{self, NewPrimary, Recycler},
    store::StatusStore,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Failures to inject, by operation: the next `n` calls of it fail.
#[derive(Default)]
pub struct Faults(Mutex<HashMap<String, u32>>);

impl Faults {
    /// The next `times` calls of `op` fail (`u32::MAX`: every call).
    pub fn fail(&self, op: &str, times: u32) {
        lock(&self.0).insert(op.to_string(), times);
    }

    /// Whether this call of `op` fails (and counts it).
    fn hit(&self, op: &str) -> bool {
        let mut m = lock(&self.0);
        match m.get_mut(op) {
            Some(n) if *n > 0 => {
                *n = n.saturating_sub(u32::from(*n != u32::MAX));
                true
            }
            _ => false,
        }
    }
}

/// The text every injected failure carries.
pub const INJECTED: &str = "injected failure";

// ---------------------------------------------------------------- PostgreSQL

/// One fake server.
#[derive(Clone, Debug, Default)]
pub struct Server {
    pub reachable: bool,
    pub in_recovery: bool,
    pub streaming: bool,
    /// The WAL insert position (a primary).
    pub lsn: Lsn,
    pub received: Option<Lsn>,
    pub replayed: Option<Lsn>,
    pub fenced: bool,
    pub fences: u32,
    pub unfences: u32,
    pub promotions: u32,
    pub marker: Option<i64>,
    pub switch_point: Option<Lsn>,
    pub checkpoints: u32,
    /// `synchronous_standby_names`.
    pub sync_names: String,
}

/// Fake servers by site. Faults are keyed `<site>:<op>` (`west:promote`, `east:connect`).
#[derive(Clone, Default)]
pub struct FakePg {
    servers: Arc<Mutex<BTreeMap<String, Server>>>,
    pub faults: Arc<Faults>,
}

impl FakePg {
    /// `east` a primary at `primary`, `west` a streaming standby that received and replayed `standby`.
    pub fn pair(primary: Lsn, standby: Lsn) -> FakePg {
        let pg = FakePg::default();
        pg.set("east", |s| {
            *s = Server { reachable: true, lsn: primary, ..Default::default() };
        });
        pg.set("west", |s| {
            *s = Server {
                reachable: true,
                in_recovery: true,
                streaming: true,
                received: Some(standby),
                replayed: Some(standby),
                ..Default::default()
            };
        });
        pg
    }

    pub fn server(&self, site: &str) -> Server {
        lock(&self.servers).get(site).cloned().unwrap_or_default()
    }

    pub fn set(&self, site: &str, f: impl FnOnce(&mut Server)) {
        f(lock(&self.servers).entry(site.to_string()).or_default())
    }

    pub fn promotions(&self) -> u32 {
        lock(&self.servers).values().map(|s| s.promotions).sum()
    }
}

#[async_trait]
impl PgAdmin for FakePg {
    async fn connect(&self, site: &str) -> Result<Box<dyn PgSession>, OpenError> {
        let up = lock(&self.servers).get(site).is_some_and(|s| s.reachable);
        if !up || self.faults.hit(&format!("{site}:connect")) {
            return Err(OpenError::Unreachable {
                site: site.into(),
                host: format!("pg-{site}"),
                port: 5432,
                reason: format!("connection refused ({INJECTED})"),
                tls: false,
            });
        }
        Ok(Box::new(FakeSession { pg: self.clone(), site: site.to_string() }))
    }
}

struct FakeSession {
    pg: FakePg,
    site: String,
}

impl FakeSession {
    fn op<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&mut Server) -> Result<T, &'static str>,
    ) -> Result<T, admin::Error> {
        if self.pg.faults.hit(&format!("{}:{action}", self.site)) {
            return Err(admin::Error { action, reason: INJECTED.into() });
        }
        let mut servers = lock(&self.pg.servers);
        let s = servers.entry(self.site.clone()).or_default();
        if !s.reachable {
            return Err(admin::Error { action, reason: "server closed the connection".into() });
        }
        f(s).map_err(|reason| admin::Error { action, reason: reason.into() })
    }
}

#[async_trait]
impl PgSession for FakeSession {
    async fn in_recovery(&self) -> Result<bool, admin::Error> {
        self.op("in_recovery", |s| Ok(s.in_recovery))
    }
    async fn wal_receiver_status(&self) -> Result<Option<String>, admin::Error> {
        self.op("wal_receiver_status", |s| Ok((s.in_recovery && s.streaming).then(|| "streaming".into())))
    }
    async fn current_lsn(&self) -> Result<Lsn, admin::Error> {
        self.op("current_lsn", |s| {
            if s.in_recovery {
                return Err("recovery is in progress");
            }
            Ok(s.lsn)
        })
    }
    async fn standby_lsns(&self) -> Result<(Option<Lsn>, Option<Lsn>), admin::Error> {
        self.op("standby_lsns", |s| Ok((s.received, s.replayed)))
    }
    async fn fence(&self) -> Result<u64, admin::Error> {
        self.op("fence", |s| {
            s.fenced = true;
            s.fences += 1;
            Ok(2)
        })
    }
    async fn unfence(&self) -> Result<(), admin::Error> {
        self.op("unfence", |s| {
            s.fenced = false;
            s.unfences += 1;
            Ok(())
        })
    }
    async fn promote(&self, _timeout: Duration) -> Result<bool, admin::Error> {
        self.op("promote", |s| {
            if !s.in_recovery {
                return Ok(false);
            }
            s.in_recovery = false;
            s.streaming = false;
            s.promotions += 1;
            s.switch_point = s.replayed;
            s.lsn = s.replayed.unwrap_or_default();
            Ok(true)
        })
    }
    async fn write_epoch_marker(&self, _pair: &str, _site: &str, epoch: i64) -> Result<i64, admin::Error> {
        self.op("write_epoch_marker", |s| {
            if s.in_recovery {
                return Err("cannot execute INSERT in a read-only transaction");
            }
            s.fenced = false;
            let held = s.marker.map_or(epoch, |m| m.max(epoch));
            s.marker = Some(held);
            Ok(held)
        })
    }
    async fn timeline_switch_point(&self) -> Result<Option<Lsn>, admin::Error> {
        self.op("timeline_switch_point", |s| Ok(s.switch_point))
    }
    async fn checkpoint(&self) -> Result<(), admin::Error> {
        self.op("checkpoint", |s| {
            s.checkpoints += 1;
            Ok(())
        })
    }
    async fn set_synchronous_standby_names(&self, names: &str) -> Result<bool, admin::Error> {
        self.op("set_synchronous_standby_names", |s| {
            let changed = s.sync_names != names;
            s.sync_names = names.to_string();
            Ok(changed)
        })
    }
}

// ---------------------------------------------------------------- recyclers

/// What a fake recycler saw.
#[derive(Clone, Debug, Default)]
pub struct Recycled {
    pub held: bool,
    pub holds: u32,
    pub releases: u32,
    /// `(site, epoch)` of every recycle call.
    pub recycled: Vec<(String, i64)>,
}

/// A fake recycler; `can_hold` makes it a PgBouncer-like one. Faults: `hold`, `release`, `recycle`.
#[derive(Clone, Default)]
pub struct FakeRecycler {
    pub can_hold: bool,
    state: Arc<Mutex<Recycled>>,
    pub faults: Arc<Faults>,
}

impl FakeRecycler {
    pub fn seen(&self) -> Recycled {
        lock(&self.state).clone()
    }

    fn fault(&self, op: &str) -> Result<(), recycle::Error> {
        if self.faults.hit(op) {
            return Err(recycle::Error::PgBouncer {
                field: "spec.recycle[0].pgBouncer".into(),
                source: recycle::pgbouncer::Error {
                    target: "pgbouncer:6432".into(),
                    action: op.into(),
                    reason: INJECTED.into(),
                },
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Recycler for FakeRecycler {
    fn describe(&self) -> String {
        "fake recycler".into()
    }
    // The pooler fake (it can hold) is repointed itself; the HTTP-like one reads the DataSource.
    fn reads_data_source(&self) -> bool {
        !self.can_hold
    }
    async fn hold(&self, _wait: Duration) -> Result<bool, recycle::Error> {
        self.fault("hold")?;
        let mut s = lock(&self.state);
        if self.can_hold {
            s.held = true;
            s.holds += 1;
        }
        Ok(self.can_hold)
    }
    async fn release(&self, _wait: Duration) -> Result<bool, recycle::Error> {
        self.fault("release")?;
        let mut s = lock(&self.state);
        if self.can_hold {
            s.held = false;
            s.releases += 1;
        }
        Ok(self.can_hold)
    }
    async fn recycle(&self, to: &NewPrimary<'_>) -> Result<String, recycle::Error> {
        self.fault("recycle")?;
        let mut s = lock(&self.state);
        s.held = false;
        s.recycled.push((to.site.to_string(), to.epoch));
        Ok(format!("fake → {}", to.site))
    }
    async fn check(&self) -> Result<(), recycle::Error> {
        self.fault("check")
    }
}

// ---------------------------------------------------------------- DNS

/// What a fake record holds.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub answer: Option<IpAddr>,
    /// Times the answer actually changed.
    pub changes: u32,
}

/// A fake DNS record. Fault: `point_at`.
#[derive(Clone, Default)]
pub struct FakeDns {
    state: Arc<Mutex<Record>>,
    pub faults: Arc<Faults>,
}

impl FakeDns {
    pub fn record(&self) -> Record {
        lock(&self.state).clone()
    }
}

#[async_trait]
impl DnsProvider for FakeDns {
    fn describe(&self) -> String {
        "chat.example.test".into()
    }
    async fn point_at(&self, to: &dns::Target<'_>, _epoch: i64) -> Result<String, dns::Error> {
        if self.faults.hit("point_at") {
            return Err(dns::Error::Server {
                field: "spec.dns[0].rfc2136".into(),
                source: dns::rfc2136::Error::Server {
                    server: "192.0.2.53:53".into(),
                    reason: INJECTED.into(),
                },
            });
        }
        let mut r = lock(&self.state);
        if r.answer != Some(to.addr) {
            r.answer = Some(to.addr);
            r.changes += 1;
        }
        Ok(format!("chat.example.test. A {}", to.addr))
    }
    async fn check(&self) -> Result<(), dns::Error> {
        Ok(())
    }
}

// ---------------------------------------------------------------- witness

/// What the fake witness holds.
#[derive(Clone, Debug, Default)]
pub struct Held {
    pub epoch: i64,
    pub holder: String,
    pub transition: String,
    /// The primary site's leader key, while its lease is alive.
    pub leader: Option<String>,
    /// Times the epoch moved.
    pub moves: u32,
    /// Why the leader key of an epoch went before its lease (`<epoch>`, `<site> released at …`).
    pub released: Option<(i64, String)>,
}

/// A fake etcd witness with `etcd::Witness::swap`'s rules. Faults: `epoch`, `swap`.
#[derive(Clone, Default)]
pub struct FakeWitness {
    state: Arc<Mutex<Held>>,
    pub faults: Arc<Faults>,
}

impl FakeWitness {
    pub fn held(&self) -> Held {
        lock(&self.state).clone()
    }

    pub fn set(&self, f: impl FnOnce(&mut Held)) {
        f(&mut lock(&self.state))
    }

    fn fault(&self, op: &str) -> Result<(), WitnessError> {
        if self.faults.hit(op) {
            return Err(WitnessError::Etcd(crate::coord::etcd::Error::Connect {
                endpoints: "http://witness:2379".into(),
                reason: INJECTED.into(),
            }));
        }
        Ok(())
    }
}

#[async_trait]
impl EpochWitness for FakeWitness {
    async fn epoch(&self) -> Result<(i64, String, String), WitnessError> {
        self.fault("epoch")?;
        let h = lock(&self.state);
        Ok((h.epoch, h.holder.clone(), h.transition.clone()))
    }

    async fn swap(
        &self,
        from: i64,
        holder: &str,
        transition: &str,
        leader: LeaderKey,
    ) -> Result<Swap, WitnessError> {
        self.fault("swap")?;
        let mut h = lock(&self.state);
        if h.epoch == from + 1 && h.transition == transition {
            return Ok(Swap::Won);
        }
        if h.epoch != from {
            return Ok(Swap::Lost {
                epoch: h.epoch,
                holder: h.holder.clone(),
                transition: h.transition.clone(),
            });
        }
        if let (Some(l), LeaderKey::MustBeAbsent) = (&h.leader, leader) {
            return Ok(Swap::LeaderAlive { holder: l.clone(), ttl_left_s: 7 });
        }
        h.epoch = from + 1;
        h.holder = holder.into();
        h.transition = transition.into();
        h.leader = None;
        h.moves += 1;
        Ok(Swap::Won)
    }

    async fn released_note(&self, epoch: i64) -> Result<Option<String>, WitnessError> {
        Ok(lock(&self.state).released.clone().filter(|(e, _)| *e == epoch).map(|(_, n)| n))
    }
}

// ---------------------------------------------------------------- status store

/// Which write attempt (1-based) and status a crash happens at.
type CrashAt = Box<dyn Fn(usize, &DisasterRecoveryPairStatus) -> bool + Send>;

/// When the fake store "crashes": the controller dies at that write, which reached the API
/// server (`lands`) or not.
struct Crash {
    at: CrashAt,
    lands: bool,
}

#[derive(Default)]
struct Stored {
    obj: Option<DisasterRecoveryPair>,
    rv: u64,
    /// Every status that landed, in order.
    writes: Vec<DisasterRecoveryPairStatus>,
    /// Write attempts so far.
    attempts: usize,
    crash: Option<Crash>,
    conflicts: u32,
}

/// A fake API server for one pair: `resourceVersion` preconditions, every landed status kept.
#[derive(Clone, Default)]
pub struct FakeStore(Arc<Mutex<Stored>>);

impl FakeStore {
    pub fn new(drp: DisasterRecoveryPair) -> FakeStore {
        let store = FakeStore::default();
        let mut s = lock(&store.0);
        s.rv = 1;
        let mut drp = drp;
        drp.metadata.resource_version = Some("1".into());
        s.obj = Some(drp);
        drop(s);
        store
    }

    /// The object as stored now.
    pub fn get(&self) -> DisasterRecoveryPair {
        lock(&self.0).obj.clone().unwrap_or_else(|| DisasterRecoveryPair::new("none", spec()))
    }

    pub fn status(&self) -> DisasterRecoveryPairStatus {
        self.get().status.unwrap_or_default()
    }

    /// Changes the stored status as an earlier round would have written it.
    pub fn edit_status(&self, f: impl FnOnce(&mut DisasterRecoveryPairStatus)) {
        if let Some(obj) = lock(&self.0).obj.as_mut() {
            f(obj.status.get_or_insert_with(Default::default));
        }
    }

    pub fn journal(&self) -> Transition {
        self.status().last_transition.unwrap_or_default()
    }

    /// Every status that landed.
    pub fn writes(&self) -> Vec<DisasterRecoveryPairStatus> {
        lock(&self.0).writes.clone()
    }

    /// The controller dies at write attempt `n` (1-based).
    pub fn crash_at_write(&self, n: usize, lands: bool) {
        lock(&self.0).crash = Some(Crash { at: Box::new(move |i, _| i == n), lands });
    }

    /// The controller dies at the first write whose status satisfies `when`.
    pub fn crash_when(
        &self,
        when: impl Fn(&DisasterRecoveryPairStatus) -> bool + Send + 'static,
        lands: bool,
    ) {
        lock(&self.0).crash = Some(Crash { at: Box::new(move |_, st| when(st)), lands });
    }

    /// Somebody else writes the object: the next `n` writes meet a newer resourceVersion.
    pub fn conflict(&self, n: u32) {
        lock(&self.0).conflicts = n;
    }

    /// Changes the stored status as another writer would (new resourceVersion).
    pub fn edit(&self, f: impl FnOnce(&mut DisasterRecoveryPairStatus)) {
        let mut s = lock(&self.0);
        s.rv += 1;
        let rv = s.rv;
        if let Some(obj) = s.obj.as_mut() {
            f(obj.status.get_or_insert_with(Default::default));
            obj.metadata.resource_version = Some(rv.to_string());
        }
    }
}

/// The error a crashed write returns: the executor stops there, as a killed process would.
pub const CRASH: &str = "simulated crash";

#[async_trait]
impl StatusStore for FakeStore {
    async fn write_status(
        &self,
        drp: &DisasterRecoveryPair,
        status: &DisasterRecoveryPairStatus,
    ) -> Result<DisasterRecoveryPair, Error> {
        let mut s = lock(&self.0);
        s.attempts += 1;
        let crash = match &s.crash {
            Some(c) if (c.at)(s.attempts, status) => Some(c.lands),
            _ => None,
        };
        if s.conflicts > 0 {
            s.conflicts -= 1;
            return Err(Error::Conflict);
        }
        if crash == Some(false) {
            s.crash = None;
            return Err(Error::UpdateStatus(CRASH.into()));
        }
        if drp.metadata.resource_version != Some(s.rv.to_string()) {
            return Err(Error::Conflict);
        }
        s.rv += 1;
        let rv = s.rv;
        let mut obj = drp.clone();
        obj.status = Some(status.clone());
        obj.metadata.resource_version = Some(rv.to_string());
        s.obj = Some(obj.clone());
        s.writes.push(status.clone());
        if crash == Some(true) {
            s.crash = None;
            return Err(Error::UpdateStatus(CRASH.into()));
        }
        Ok(obj)
    }
}

// ---------------------------------------------------------------- DataSource

/// What the fake DataSource targets hold.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub points_at: Option<String>,
    pub epoch: i64,
    /// Times they were rewritten.
    pub rewrites: u32,
}

/// Fake DataSource targets (one object, one target). Fault: `rewrite`.
#[derive(Clone, Default)]
pub struct FakeDataSource {
    state: Arc<Mutex<Targets>>,
    pub faults: Arc<Faults>,
}

impl FakeDataSource {
    pub fn targets(&self) -> Targets {
        lock(&self.state).clone()
    }
}

#[async_trait]
impl DataSourceWriter for FakeDataSource {
    async fn rewrite(
        &self,
        _spec: &DisasterRecoveryPairSpec,
        site: &str,
        epoch: i64,
    ) -> Result<Rewrite, RewriteError> {
        if self.faults.hit("rewrite") {
            return Err(RewriteError::NothingWritten(datasource::Error::Target {
                field: "spec.dataSource[0].secretKey".into(),
                reason: INJECTED.into(),
            }));
        }
        let mut t = lock(&self.state);
        if t.points_at.as_deref() == Some(site) {
            return Ok(Rewrite::AlreadyRight);
        }
        t.points_at = Some(site.into());
        t.epoch = epoch;
        t.rewrites += 1;
        Ok(Rewrite::Rewrote { objects: 1, targets: 1 })
    }
}

// ---------------------------------------------------------------- Events

/// Every Event published.
#[derive(Clone, Default)]
pub struct FakeEvents(Arc<Mutex<Vec<EventNote>>>);

impl FakeEvents {
    pub fn all(&self) -> Vec<EventNote> {
        lock(&self.0).clone()
    }

    pub fn reasons(&self) -> Vec<String> {
        self.all().into_iter().map(|e| e.reason).collect()
    }
}

#[async_trait]
impl Events for FakeEvents {
    async fn publish(&self, _drp: &DisasterRecoveryPair, ev: EventNote) {
        lock(&self.0).push(ev);
    }
}

// ---------------------------------------------------------------- the world

/// The test pair's spec: `east` primary, `west` standby, Automatic, each site with a DNS target,
/// 1 s probes and catch-up; nothing to rewrite, recycle or flip (the world's ports stand for them).
pub fn spec() -> DisasterRecoveryPairSpec {
    crate::crd::test_spec()
        .with_mode(crate::crd::FailoverMode::Automatic)
        .with_probes("1s", "1s")
        .with_catch_up_timeout("1s")
        .with_database("app")
        .with_site("east", |s| s.dns_target = Some("192.0.2.10".into()))
        .with_site("west", |s| s.dns_target = Some("192.0.2.20".into()))
}

/// A pair in its steady state at epoch 0 (`east` serves), and fakes around it: a PgBouncer-like
/// recycler, an HTTP-like one, one DNS record, DataSource targets, a witness (unless `without_witness`).
pub struct World {
    pub pg: FakePg,
    pub pgbouncer: FakeRecycler,
    pub http: FakeRecycler,
    pub dns: FakeDns,
    pub witness: Option<FakeWitness>,
    pub store: FakeStore,
    pub data_source: FakeDataSource,
    pub events: FakeEvents,
    pub metrics: Metrics,
}

/// The primary's last position the probes saw, and the standby's.
pub const PRIMARY_LSN: Lsn = Lsn(0x300_0100);
pub const STANDBY_LSN: Lsn = Lsn(0x300_0000);

impl World {
    pub fn new() -> World {
        World::with_spec(spec())
    }

    pub fn with_spec(spec: DisasterRecoveryPairSpec) -> World {
        let mut drp = DisasterRecoveryPair::new("chat", spec);
        drp.metadata.namespace = Some("ns".into());
        drp.metadata.uid = Some("uid-1".into());
        drp.metadata.generation = Some(1);
        drp.status = Some(DisasterRecoveryPairStatus {
            current_primary: Some("east".into()),
            sites: vec![
                SiteStatus {
                    name: "east".into(),
                    reachable: true,
                    current_lsn: Some(PRIMARY_LSN.to_string()),
                    ..Default::default()
                },
                SiteStatus {
                    name: "west".into(),
                    reachable: true,
                    in_recovery: Some(true),
                    streaming: Some(true),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        World {
            pg: FakePg::pair(PRIMARY_LSN, STANDBY_LSN),
            pgbouncer: FakeRecycler { can_hold: true, ..Default::default() },
            http: FakeRecycler::default(),
            dns: FakeDns::default(),
            witness: Some(FakeWitness::default()),
            store: FakeStore::new(drp),
            data_source: FakeDataSource::default(),
            events: FakeEvents::default(),
            metrics: Metrics::default(),
        }
    }

    pub fn without_witness(mut self) -> World {
        self.witness = None;
        self
    }

    pub fn ports(&self) -> Ports<'_> {
        Ports {
            identity: "west".into(),
            metrics: &self.metrics,
            seen_lsn: BTreeMap::new(),
            pg: Arc::new(self.pg.clone()),
            recyclers: vec![Arc::new(self.pgbouncer.clone()), Arc::new(self.http.clone())],
            dns: vec![Arc::new(self.dns.clone())],
            witness: self.witness.clone().map(|w| Arc::new(w) as Arc<dyn EpochWitness>),
            store: Arc::new(self.store.clone()),
            data_source: Arc::new(self.data_source.clone()),
            events: Arc::new(self.events.clone()),
            retry_in: Default::default(),
        }
    }

    /// The witness (the world has one unless built `without_witness`).
    pub fn w(&self) -> &FakeWitness {
        self.witness.as_ref().expect("this world has a witness")
    }

    /// Starts a transition as the reconciler does; whether it started.
    pub async fn start(&self, kind: Kind, trigger: Trigger) -> Result<bool, Error> {
        Ok(self.start_retry(kind, trigger).await?.0)
    }

    /// As `start`, with when a refused start asked to be tried again.
    pub async fn start_retry(
        &self,
        kind: Kind,
        trigger: Trigger,
    ) -> Result<(bool, Option<std::time::Duration>), Error> {
        let drp = self.store.get();
        let ports = self.ports();
        let started = executor::start_with(&drp, kind, trigger, "east", "west", &ports).await?.is_some();
        let retry = ports.retry_in.lock().ok().and_then(|r| *r);
        Ok((started, retry))
    }

    /// One executor round on the stored object.
    pub async fn run(&self) -> Result<Action, Error> {
        executor::run_with(self.store.get(), &self.ports()).await
    }

    /// The journal's record of `step`.
    pub fn step(&self, step: super::Step) -> crate::crd::StepRecord {
        self.store
            .journal()
            .steps
            .into_iter()
            .find(|s| s.name == step.name())
            .unwrap_or_else(|| panic!("no {step} in the journal"))
    }
}
