//! A workload that writes the way an application does: through PgBouncer, one autocommit INSERT at a
//! time, reconnecting after errors. It records every id whose commit was acknowledged and the port of
//! the server that acknowledged it (`inet_server_port()`, also behind PgBouncer), so lost data can be
//! counted exactly afterwards, and the longest gap between two acknowledged commits. A direct writer
//! (`Workload::direct`) does the same straight against one PostgreSQL server.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::sandbox::postgres::PgServer;

/// How often a direct writer (`Workload::direct`) writes.
pub const DIRECT_EVERY: Duration = Duration::from_millis(50);

/// What the workload saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub acked: Vec<i64>,
    /// When each id in `acked` was acknowledged (same order as `acked`).
    pub acked_at: Vec<Instant>,
    /// The port of the PostgreSQL server that acknowledged each id in `acked` (0 if unknown).
    pub acked_port: Vec<u16>,
    pub errors: u64,
    /// Longest time between two acknowledged commits.
    pub longest_gap: Duration,
    /// When the longest gap ended (time since the workload started).
    pub gap_ended_at: Duration,
}

/// A running workload; `stop` ends it and returns its stats.
pub struct Workload {
    stats: Arc<Mutex<Stats>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub table: String,
}

impl Workload {
    /// Starts writing to `table` (created if missing) at `host:port/db` every `every`.
    pub async fn start(
        host: &str,
        port: u16,
        db: &str,
        user: &str,
        password: &str,
        table: &str,
        every: Duration,
    ) -> Result<Workload> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host).port(port).dbname(db).user(user).password(password);
        Self::start_with(cfg, table, every).await
    }

    /// Starts writing with a client configuration of its own (e.g. several hosts with
    /// `target_session_attrs=read-write`); the connect timeout is the same 2 s as through `start`.
    pub async fn start_with(
        mut cfg: tokio_postgres::Config,
        table: &str,
        every: Duration,
    ) -> Result<Workload> {
        cfg.connect_timeout(Duration::from_secs(2));
        {
            let (c, conn) = cfg.connect(NoTls).await?;
            tokio::spawn(conn);
            c.simple_query(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
            ))
            .await?;
        }
        Ok(Self::spawn(cfg, table, every, false))
    }

    /// Writes straight to one PostgreSQL server (database `postgres`, no PgBouncer in between)
    /// every 50 ms, so a test can count exactly the writes that server acknowledges (a returning
    /// old primary, say). It starts even while the server is down (each refused attempt counts as
    /// an error) and creates `table` on every new connection when it is missing (a read-only
    /// server refuses that, and then its INSERTs too). Ids start at 1: give each writer its own
    /// table.
    pub fn direct(server: &PgServer, user: &str, password: &str, table: &str) -> Workload {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(server.port)
            .dbname("postgres")
            .user(user)
            .password(password)
            .connect_timeout(Duration::from_secs(2));
        Self::spawn(cfg, table, DIRECT_EVERY, true)
    }

    fn spawn(cfg: tokio_postgres::Config, table: &str, every: Duration, create_on_connect: bool) -> Workload {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (s2, t2) = (stats.clone(), table.to_string());
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
        );
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let mut last_ack = Instant::now();
            let mut client: Option<tokio_postgres::Client> = None;
            let mut id: i64 = 0;
            while !*stopped.borrow() {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = match tokio::time::timeout(Duration::from_secs(2), cfg.connect(NoTls)).await {
                        Ok(Ok((c, conn))) => {
                            tokio::spawn(conn);
                            if create_on_connect {
                                let _ = tokio::time::timeout(Duration::from_secs(5), c.simple_query(&create))
                                    .await;
                            }
                            Some(c)
                        }
                        _ => {
                            if let Ok(mut s) = s2.lock() {
                                s.errors += 1;
                            }
                            let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
                            continue;
                        }
                    };
                }
                id += 1;
                let sql = format!("INSERT INTO {t2} (id) VALUES ({id}) RETURNING inet_server_port()");
                let res = match &client {
                    Some(c) => tokio::time::timeout(Duration::from_secs(5), c.simple_query(&sql)).await,
                    None => continue,
                };
                match res {
                    Ok(Ok(msgs)) => {
                        let now = Instant::now();
                        let port = msgs
                            .iter()
                            .find_map(|m| match m {
                                SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse().ok()),
                                _ => None,
                            })
                            .unwrap_or(0);
                        if let Ok(mut s) = s2.lock() {
                            s.acked.push(id);
                            s.acked_at.push(now);
                            s.acked_port.push(port);
                            let gap = now - last_ack;
                            if gap > s.longest_gap {
                                s.longest_gap = gap;
                                s.gap_ended_at = now - began;
                            }
                        }
                        last_ack = now;
                    }
                    _ => {
                        if let Ok(mut s) = s2.lock() {
                            s.errors += 1;
                        }
                        client = None;
                    }
                }
                let _ = tokio::time::timeout(every, stopped.changed()).await;
            }
        });
        Workload { stats, stop, task, table: table.into() }
    }

    /// A snapshot of the stats so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Number of acknowledged commits so far.
    pub fn acked(&self) -> usize {
        self.stats.lock().map(|s| s.acked.len()).unwrap_or(0)
    }

    /// Stops the workload and returns its final stats.
    pub async fn stop(self) -> Stats {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Ids in `acked` that are missing from `present` (sorted).
pub fn lost(acked: &[i64], present: &[i64]) -> Vec<i64> {
    let have: std::collections::HashSet<i64> = present.iter().copied().collect();
    acked.iter().copied().filter(|i| !have.contains(i)).collect()
}
