//! The comparison system: Debian's Patroni managing a PostgreSQL 15 pair with the same server
//! settings as the sandbox pair (`sandbox/postgres.rs`), etcd (Debian's `etcd-server`) as its DCS,
//! everything on 127.0.0.1, PostgreSQL and Patroni run as `postgres`. A client polling every 50 ms
//! with a multi-host DSN and `target_session_attrs=read-write` measures kill → first write on the new
//! primary; each write reports the port and start time of the server that acknowledged it, so a
//! write acknowledged by an orphaned backend of the killed postmaster never counts.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tokio_postgres::{config::TargetSessionAttrs, NoTls, SimpleQueryMessage};

use understudy_e2e::sandbox::{
    postgres::PG_BIN,
    proc::{as_user, free_port, run, tail_file, wait_until, Proc},
    random_hex, repo_root, scratch_dir, PgBouncer, Witness,
};

use crate::measure::{http_get, Mark};

/// Patroni's HA timing (the dynamic configuration written at bootstrap).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Timing {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
}

impl Timing {
    pub const DEFAULTS: Timing = Timing { ttl: 30, loop_wait: 10, retry_timeout: 10 };
    pub const AGGRESSIVE: Timing = Timing { ttl: 10, loop_wait: 1, retry_timeout: 4 };
    pub const AGGRESSIVE_FALLBACK: Timing = Timing { ttl: 20, loop_wait: 1, retry_timeout: 3 };

    pub fn label(&self) -> String {
        format!("ttl {} / loop_wait {} / retry_timeout {}", self.ttl, self.loop_wait, self.retry_timeout)
    }
}

/// What is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kill {
    /// SIGKILL of the primary postmaster; its Patroni stays alive.
    Postmaster,
    /// SIGKILL of the primary's Patroni and its postmaster (node loss).
    Node,
    /// A black-holed node: the primary's Patroni frozen (SIGSTOP: it neither renews its leader
    /// lock nor answers) and every packet to or from its PostgreSQL and REST ports dropped by
    /// nftables (no RST).
    BlackHole,
}

/// One Patroni scenario.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scenario {
    pub key: &'static str,
    pub kill: Kill,
    /// `primary_start_timeout`: 0 fails over at once, 300 (default) restarts the postmaster in place.
    pub primary_start_timeout: u32,
}

/// The planned-switchover bench's cluster: nothing is killed (`kill` is unused), Patroni's default
/// `primary_start_timeout`.
pub const SWITCHOVER: Scenario =
    Scenario { key: "switchover", kill: Kill::Postmaster, primary_start_timeout: 300 };

pub const SCENARIOS: [Scenario; 4] = [
    Scenario { key: "a-failover", kill: Kill::Postmaster, primary_start_timeout: 0 },
    Scenario { key: "a-restart", kill: Kill::Postmaster, primary_start_timeout: 300 },
    Scenario { key: "b-node-loss", kill: Kill::Node, primary_start_timeout: 300 },
    Scenario { key: "c-black-hole", kill: Kill::BlackHole, primary_start_timeout: 300 },
];

/// The PostgreSQL settings of `sandbox/postgres.rs`, as Patroni's `parameters`.
const PG_PARAMETERS: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("wal_keep_size", "512MB"),
    ("hot_standby", "on"),
    ("fsync", "off"),
    ("full_page_writes", "on"),
    ("logging_collector", "off"),
    ("shared_buffers", "32MB"),
    ("max_connections", "200"),
    ("wal_receiver_status_interval", "1s"),
    ("hot_standby_feedback", "on"),
    ("wal_log_hints", "on"),
];

/// One Patroni member and the PostgreSQL it manages.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    pub yaml: PathBuf,
    proc: Option<Proc>,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster's pid from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let s = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        let pid: u32 = s.lines().next()?.trim().parse().ok()?;
        std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// SIGKILL the postmaster.
    pub fn kill_postmaster(&self) -> Result<u32> {
        let pid = self.postmaster_pid().with_context(|| format!("{}: no running postmaster", self.name))?;
        run(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        Ok(pid)
    }

    /// SIGSTOP Patroni (it stays frozen until the bed is dropped).
    pub fn freeze_patroni(&self) -> Result<()> {
        self.proc.as_ref().context("Patroni is not running")?.signal("STOP")
    }

    /// SIGKILL Patroni.
    pub fn kill_patroni(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// The role Patroni's REST API reports (`/primary` or `/replica` answering 200).
    pub fn is(&self, role: &str) -> bool {
        http_get(&format!("http://127.0.0.1:{}/{role}", self.api_port), &[])
            .map(|(c, _)| c == 200)
            .unwrap_or(false)
    }

    /// SQL over the local socket as `postgres`.
    pub fn psql(&self, sql: &str) -> Result<String> {
        run(as_user("postgres", &format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.pg_port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql]))
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }

    /// When this member's `on_role_change` callback (PgBouncer clusters only) first ran for a
    /// promotion after `after` (Unix seconds), from the callback's own log.
    pub fn promoted_callback_after(&self, after: f64) -> Option<f64> {
        let text = std::fs::read_to_string(self.dir.join("callback.log")).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let ts: f64 = f.next()?.parse().ok()?;
            let (_action, role) = (f.next()?, f.next()?);
            (ts > after && ["promoted", "master", "primary"].contains(&role)).then_some(ts)
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_patroni();
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A two-member Patroni cluster with its own etcd.
pub struct Cluster {
    pub timing: Timing,
    pub password: String,
    pub nodes: Vec<Node>,
    /// The cluster's etcd, stopped with the cluster.
    _dcs: Witness,
    /// The dynamic configuration Patroni reports (`GET /config`), to show what it accepted.
    pub accepted: serde_json::Value,
    /// PgBouncer in front of the cluster (database `app`, as in the understudy bed), repointed by
    /// Patroni's `on_role_change` callback; only with `Cluster::start_with(.., true)`.
    pub pgbouncer: Option<PgBouncer>,
}

/// Installs Patroni when missing (the project's script).
pub fn ensure_installed() -> Result<String> {
    run(Command::new("bash").arg(repo_root().join("e2e/scripts/install-bench-deps.sh")))
        .context("e2e/scripts/install-bench-deps.sh")
}

/// Patroni's `on_role_change` callback (`<script> <action> <role> <scope>`) as a Patroni user with
/// PgBouncer writes it: when this member becomes primary, point PgBouncer's `[databases]` include at
/// it and `RELOAD` (PgBouncer then closes its server connections to the old host as they are released).
fn pgbouncer_callback(node: &Node, pgb: &PgBouncer) -> String {
    let db = pgb.databases_file();
    format!(
        "#!/bin/sh
# Patroni on_role_change callback: $1 action, $2 role, $3 scope.
echo \"$(date +%s.%N) $*\" >> {dir}/callback.log
case \"$2\" in
  promoted|master|primary)
    printf '%s = host=127.0.0.1 port=%s dbname=postgres\\n' {name} {port} > {db}.new && mv {db}.new {db}
    PGPASSWORD='{pw}' {PG_BIN}/psql -X -q -h 127.0.0.1 -p {pgb_port} -U {admin} -d pgbouncer -c RELOAD >> {dir}/callback.log 2>&1
    ;;
esac
",
        dir = node.dir.display(),
        name = pgb.database,
        port = node.pg_port,
        db = db.display(),
        pw = pgb.admin_password,
        pgb_port = pgb.port,
        admin = pgb.admin_user,
    )
}

fn yaml(node: &Node, etcd: &str, t: Timing, s: Scenario, password: &str, callback: Option<&Path>) -> String {
    let params: String = PG_PARAMETERS.iter().map(|(k, v)| format!("        {k}: '{v}'\n")).collect();
    let callbacks =
        callback.map(|c| format!("  callbacks:\n    on_role_change: {}\n", c.display())).unwrap_or_default();
    format!(
        "scope: bench
namespace: /bench/
name: {name}
log:
  level: INFO
  format: '%(created).3f %(levelname)s: %(message)s'
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: {etcd}
  protocol: http
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {lw}
    retry_timeout: {rt}
    primary_start_timeout: {pst}
    maximum_lag_on_failover: 16777216
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
{params}  initdb:
    - encoding: UTF8
    - auth-local: trust
    - auth-host: scram-sha-256
    - no-sync
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {PG_BIN}
  pgpass: {dir}/pgpass
  authentication:
    superuser: {{ username: postgres, password: '{password}' }}
    replication: {{ username: replicator, password: '{password}' }}
  parameters:
    unix_socket_directories: '{dir}'
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  basebackup:
    - checkpoint: fast
{callbacks}watchdog:
  mode: off
",
        name = node.name,
        api = node.api_port,
        pg = node.pg_port,
        data = node.data().display(),
        dir = node.dir.display(),
        ttl = t.ttl,
        lw = t.loop_wait,
        rt = t.retry_timeout,
        pst = s.primary_start_timeout,
    )
}

impl Cluster {
    /// Starts etcd, the first member (which bootstraps and becomes primary), then the second (which
    /// clones it and streams).
    pub fn start(timing: Timing, scenario: Scenario) -> Result<Cluster> {
        Self::start_with(timing, scenario, false)
    }

    /// `start`, with PgBouncer in front (pointing at pn1, the bootstrap leader) and each member's
    /// `on_role_change` callback repointing it when `pgbouncer` is set.
    pub fn start_with(timing: Timing, scenario: Scenario, pgbouncer: bool) -> Result<Cluster> {
        let dcs = Witness::start().context("start etcd for Patroni")?;
        let etcd_hosts = dcs.endpoint.trim_start_matches("http://").to_string();
        let password = random_hex(12);
        let mut nodes = Vec::new();
        let mut pgb: Option<PgBouncer> = None;
        for name in ["pn1", "pn2"] {
            let dir = scratch_dir(&format!("patroni-{name}"))?;
            let node = Node {
                name: name.into(),
                pg_port: free_port()?,
                api_port: free_port()?,
                yaml: dir.join("patroni.yml"),
                dir,
                proc: None,
            };
            if pgbouncer && pgb.is_none() {
                pgb = Some(PgBouncer::start("app", node.pg_port, "postgres", &password)?);
            }
            let callback = match &pgb {
                Some(b) => {
                    let path = node.dir.join("on_role_change.sh");
                    std::fs::write(&path, pgbouncer_callback(&node, b))?;
                    run(Command::new("chmod").arg("0755").arg(&path))?;
                    Some(path)
                }
                None => None,
            };
            std::fs::write(
                &node.yaml,
                yaml(&node, &etcd_hosts, timing, scenario, &password, callback.as_deref()),
            )?;
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&node.dir))?;
            run(Command::new("chmod").arg("0600").arg(&node.yaml))?;
            nodes.push(node);
        }
        let mut c =
            Cluster { timing, password, nodes, _dcs: dcs, accepted: serde_json::Value::Null, pgbouncer: pgb };
        c.spawn(0)?;
        let n0 = &c.nodes[0];
        wait_until("Patroni pn1 to bootstrap as primary", Duration::from_secs(90), || n0.is("primary"))
            .with_context(|| format!("patroni pn1 log:\n{}", tail_file(&n0.log(), 30)))?;
        c.spawn(1)?;
        let n1 = &c.nodes[1];
        wait_until("Patroni pn2 to stream from pn1", Duration::from_secs(120), || {
            n1.is("replica")
                && n1
                    .psql("SELECT status FROM pg_stat_wal_receiver")
                    .map(|s| s.trim() == "streaming")
                    .unwrap_or(false)
        })
        .with_context(|| format!("patroni pn2 log:\n{}", tail_file(&n1.log(), 30)))?;
        let (_, body) = http_get(&format!("http://127.0.0.1:{}/config", c.nodes[0].api_port), &[])?;
        c.accepted = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let mut cmd = as_user("postgres", "/usr/bin/patroni");
        cmd.arg(&node.yaml);
        node.proc = Some(Proc::spawn(&format!("patroni-{}", node.name), cmd, &node.log())?);
        Ok(())
    }

    /// Whether Patroni runs with the timing it was given (its `/config` echoes it back).
    pub fn timing_accepted(&self) -> bool {
        let a = &self.accepted;
        a["ttl"].as_u64() == Some(self.timing.ttl.into())
            && a["loop_wait"].as_u64() == Some(self.timing.loop_wait.into())
            && a["retry_timeout"].as_u64() == Some(self.timing.retry_timeout.into())
    }

    pub fn client_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        for n in &self.nodes {
            cfg.host("127.0.0.1").port(n.pg_port);
        }
        cfg.dbname("postgres")
            .user("postgres")
            .password(&self.password)
            .target_session_attrs(TargetSessionAttrs::ReadWrite)
            .connect_timeout(Duration::from_secs(1));
        cfg
    }
}

/// One acknowledged write: when, which id, and which server (port, postmaster start time).
#[derive(Clone, Copy, Debug)]
struct Ack {
    at: Instant,
    id: i64,
    port: u16,
    postmaster_started: f64,
}

/// The polling client: a write every `every`, reconnecting (multi-host, read-write) after errors.
struct Poller {
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<u64>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    async fn start(cfg: tokio_postgres::Config, every: Duration) -> Result<Poller> {
        {
            let (c, conn) = cfg.connect(NoTls).await.context("connect to the Patroni primary")?;
            tokio::spawn(conn);
            c.simple_query("CREATE TABLE IF NOT EXISTS bench_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
                .await?;
        }
        let acks: Arc<Mutex<Vec<Ack>>> = Default::default();
        let errors: Arc<Mutex<u64>> = Default::default();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (a2, e2) = (acks.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut id: i64 = 0;
            let err = || {
                if let Ok(mut e) = e2.lock() {
                    *e += 1;
                }
            };
            while !*stopped.borrow() {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = match tokio::time::timeout(Duration::from_secs(2), cfg.connect(NoTls)).await {
                        Ok(Ok((c, conn))) => {
                            tokio::spawn(conn);
                            Some(c)
                        }
                        _ => {
                            err();
                            let _ = tokio::time::timeout(every, stopped.changed()).await;
                            continue;
                        }
                    };
                }
                id += 1;
                let sql = format!(
                    "INSERT INTO bench_writes (id) VALUES ({id}) \
                     RETURNING inet_server_port(), extract(epoch from pg_postmaster_start_time())"
                );
                let Some(c) = &client else { continue };
                match tokio::time::timeout(Duration::from_secs(2), c.simple_query(&sql)).await {
                    Ok(Ok(msgs)) => {
                        let at = Instant::now();
                        let row = msgs.iter().find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => Some((
                                r.get(0).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0),
                                r.get(1).and_then(|p| p.parse::<f64>().ok()).unwrap_or(0.0),
                            )),
                            _ => None,
                        });
                        if let (Some((port, postmaster_started)), Ok(mut a)) = (row, a2.lock()) {
                            a.push(Ack { at, id, port, postmaster_started });
                        }
                    }
                    _ => {
                        err();
                        client = None;
                    }
                }
                let _ = tokio::time::timeout(every, stopped.changed()).await;
            }
        });
        Ok(Poller { acks, errors, stop, task })
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().map(|a| a.clone()).unwrap_or_default()
    }

    async fn stop(self) -> (Vec<Ack>, u64) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let errors = self.errors.lock().map(|e| *e).unwrap_or(0);
        (self.acks.lock().map(|a| a.clone()).unwrap_or_default(), errors)
    }
}

/// The client's DSN as shown in the report (the password is not shown).
pub const CLIENT_DSN: &str =
    "postgresql://postgres@127.0.0.1:<pn1>,127.0.0.1:<pn2>/postgres?target_session_attrs=read-write&connect_timeout=1";

/// The client's write interval.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// What one Patroni run measured (seconds).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Run {
    pub kill_to_write: Option<f64>,
    /// kill → the Patroni log line that decided (leader lock taken / restart begun).
    pub kill_to_decision: Option<f64>,
    pub decision_line: Option<String>,
    /// Which member served the first write after the kill.
    pub new_primary: String,
    pub lost_acked: usize,
    pub acked: usize,
    pub errors: u64,
    pub timing_accepted: bool,
}

/// Runs one kill on a fresh cluster.
pub async fn run_once(timing: Timing, scenario: Scenario) -> Result<Run> {
    let mut c = tokio::task::spawn_blocking(move || Cluster::start(timing, scenario)).await??;
    let poller = Poller::start(c.client_config(), POLL_EVERY).await?;
    let t0 = Instant::now();
    while poller.acks().len() < 20 {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("the Patroni client did not commit 20 writes in 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_port = c.nodes[0].pg_port;
    let cut = match scenario.kill {
        Kill::BlackHole => Some(understudy_e2e::sandbox::netcut::Partition::new()?),
        _ => None,
    };
    let kill = Mark::now();
    match scenario.kill {
        Kill::BlackHole => {
            c.nodes[0].freeze_patroni()?;
            if let Some(cut) = &cut {
                cut.black_hole(c.nodes[0].pg_port)?;
                cut.black_hole(c.nodes[0].api_port)?;
            }
        }
        Kill::Postmaster => {
            c.nodes[0].kill_postmaster()?;
        }
        Kill::Node => {
            c.nodes[0].kill_patroni();
            c.nodes[0].kill_postmaster()?;
        }
    }
    // A write counts when a server other than the killed postmaster acknowledged it: another port,
    // or the same port restarted after the kill.
    let served_after = |a: &Ack| a.at > kill.mono && (a.port != old_port || a.postmaster_started > kill.wall);
    let limit = Duration::from_secs(u64::from(timing.ttl) * 3 + 60);
    let first = loop {
        if let Some(a) = poller.acks().into_iter().find(served_after) {
            break Some(a);
        }
        if kill.mono.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(first) = first else {
        let _ = poller.stop().await;
        bail!(
            "no write acknowledged within {limit:?} after the kill ({} / {:?}); pn2 log:\n{}",
            timing.label(),
            scenario.key,
            tail_file(&c.nodes[1].log(), 20)
        );
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acks, errors) = poller.stop().await;
    let new_node = c.nodes.iter().find(|n| n.pg_port == first.port).context("unknown server port")?;
    let present: Vec<i64> =
        new_node.psql("SELECT id FROM bench_writes")?.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let have: std::collections::HashSet<i64> = present.into_iter().collect();
    let lost_acked = acks.iter().filter(|a| !have.contains(&a.id)).count();
    let (decision_at, decision_line) = decision(&[&c.nodes[0].log(), &c.nodes[1].log()], kill.wall);
    Ok(Run {
        kill_to_write: Some(kill.wall_of(first.at) - kill.wall),
        kill_to_decision: decision_at.map(|d| d - kill.wall),
        decision_line,
        new_primary: new_node.name.clone(),
        lost_acked,
        acked: acks.len(),
        errors,
        timing_accepted: c.timing_accepted(),
    })
}

/// The first Patroni log line after `after` (Unix seconds) in which a member decided to take over
/// or restart the primary, as (time, text); the switchover bench reads the candidate's log with it.
pub fn decision(logs: &[&Path], after: f64) -> (Option<f64>, Option<String>) {
    const MARKERS: [&str; 4] = [
        "promoted self to leader",
        "acquired session lock as a leader",
        "starting primary after failure",
        "starting postgresql",
    ];
    let mut best: Option<(f64, String)> = None;
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Some((ts, rest)) = line.split_once(' ') else { continue };
            let Ok(ts) = ts.parse::<f64>() else { continue };
            let lower = rest.to_lowercase();
            if ts > after
                && MARKERS.iter().any(|m| lower.contains(m))
                && best.as_ref().is_none_or(|(b, _)| ts < *b)
            {
                best = Some((ts, rest.to_string()));
            }
        }
    }
    match best {
        Some((t, l)) => (Some(t), Some(l)),
        None => (None, None),
    }
}
