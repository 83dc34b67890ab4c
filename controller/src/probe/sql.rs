//! The SQL probe. Keeps one admin connection per server and login (the connection target's
//! fingerprint: host, port, database, credentials, TLS material) and shares it between every pair
//! and site that probe that server, so a thousand pairs on one server cost one backend, not a
//! thousand, and no connection is opened per probe. Probes of the same server, login and timeout
//! that start within `SHARE` of each other share one state query and its answer. A connection
//! that errors or times out is dropped and the next probe reconnects; idle ones are pruned.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{Outcome, PgState};
use crate::{
    crd::conditions::reasons,
    pg::conn::{self, describe, ConnectError, Target},
};

const STATE_QUERY: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
    CASE WHEN pg_is_in_recovery() \
      THEN coalesce((SELECT received_tli::bigint FROM pg_stat_wal_receiver LIMIT 1), \
                    (SELECT timeline_id::bigint FROM pg_control_checkpoint())) \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END, \
    current_setting('default_transaction_read_only') = 'on', \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE current_setting('synchronous_standby_names') END, \
    CASE WHEN pg_is_in_recovery() THEN NULL \
      ELSE EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')) END";

/// Shared connections by target fingerprint, with when each was last used.
type Pool = HashMap<u64, (Arc<Client>, Instant)>;

/// How long one probe's answer serves every other probe of the same server, login and timeout:
/// pairs that share a server (many tenants' databases on one PostgreSQL) send it one state query
/// per `SHARE` between them instead of one each per round. Far below any probe interval, so no
/// pair decides from an answer older than this.
pub const SHARE: Duration = Duration::from_millis(100);

/// A probe in flight (or just answered) that later callers join instead of sending their own.
type Flight = futures::future::Shared<futures::future::BoxFuture<'static, Outcome<PgState>>>;

/// Flights by (target fingerprint, timeout), with when each started.
type Flights = HashMap<(u64, Duration), (Instant, Flight)>;

/// Probes sites over cached, shared connections.
#[derive(Default, Clone)]
pub struct SqlProber {
    conns: Arc<Mutex<Pool>>,
    flights: Arc<std::sync::Mutex<Flights>>,
}

impl SqlProber {
    /// Reads the server's state within `timeout` (connecting included), or joins a probe of the
    /// same server, login and timeout that started less than `SHARE` ago.
    pub async fn probe(&self, target: Target, timeout: Duration) -> Outcome<PgState> {
        use futures::FutureExt;
        let key = (target.fingerprint(), timeout);
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match flights.get(&key) {
                Some((at, f)) if at.elapsed() < SHARE => f.clone(),
                _ => {
                    let me = self.clone();
                    let f = async move { me.probe_alone(&target, timeout).await }.boxed().shared();
                    flights.insert(key, (Instant::now(), f.clone()));
                    f
                }
            }
        };
        flight.await
    }

    /// One probe of its own.
    async fn probe_alone(&self, target: &Target, timeout: Duration) -> Outcome<PgState> {
        let key = target.fingerprint();
        let mut used = None;
        let res = tokio::time::timeout(timeout, self.probe_inner(key, target, &mut used)).await;
        let outcome = match res {
            Ok(Ok(state)) => return Outcome::Up(state),
            // A refused TLS handshake is a configuration problem, not evidence the site is down.
            Ok(Err(ConnectError::Tls(msg))) => Outcome::NotRun(reasons::TLS_HANDSHAKE_FAILED, msg),
            Ok(Err(ConnectError::Other(msg))) => Outcome::Down(msg),
            Err(_) => Outcome::Down(format!("no answer within {}ms", timeout.as_millis())),
        };
        // Drop the connection this probe used (not one another probe has put there since).
        let mut conns = self.conns.lock().await;
        if conns.get(&key).is_some_and(|(c, _)| used.as_ref().is_none_or(|u| Arc::ptr_eq(c, u))) {
            conns.remove(&key);
        }
        outcome
    }

    /// Drops connections no probe used for `idle` (servers of deleted pairs, rotated logins).
    pub async fn prune(&self, idle: Duration) {
        self.conns.lock().await.retain(|_, (_, at)| at.elapsed() < idle);
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, (at, _)| at.elapsed() < SHARE);
    }

    async fn probe_inner(
        &self,
        key: u64,
        target: &Target,
        used: &mut Option<Arc<Client>>,
    ) -> Result<PgState, ConnectError> {
        let cached = self.conns.lock().await.get(&key).map(|(c, _)| c.clone()).filter(|c| !c.is_closed());
        let client = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(conn::connect(target).await?);
                self.conns.lock().await.insert(key, (c.clone(), Instant::now()));
                c
            }
        };
        *used = Some(client.clone());
        let state = read_state(&client).await.map_err(|e| ConnectError::Other(e.to_string()))?;
        if let Some(entry) = self.conns.lock().await.get_mut(&key) {
            entry.1 = Instant::now();
        }
        Ok(state)
    }
}

/// Why the state query's answer could not be read.
#[derive(Debug, thiserror::Error)]
enum StateError {
    /// The query failed (the server's words, `conn::describe`).
    #[error("{0}")]
    Sql(String),
    #[error(transparent)]
    Lsn(#[from] crate::pg::lsn::ParseLsnError),
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> Self {
        StateError::Sql(describe(&e))
    }
}

async fn read_state(client: &Client) -> Result<PgState, StateError> {
    let row = client.query_one(STATE_QUERY, &[]).await?;
    let lsn = |i: usize| -> Result<Option<crate::pg::Lsn>, StateError> {
        Ok(row.try_get::<_, Option<String>>(i)?.map(|s| s.parse()).transpose()?)
    };
    Ok(PgState {
        in_recovery: row.try_get(0)?,
        current_lsn: lsn(1)?,
        receive_lsn: lsn(2)?,
        replay_lsn: lsn(3)?,
        streaming: row.try_get::<_, Option<String>>(4)?.as_deref() == Some("streaming"),
        timeline: row.try_get(5)?,
        fenced: row.try_get(6)?,
        synchronous_standby_names: row.try_get(7)?,
        synchronous_standby: row.try_get(8)?,
    })
}
