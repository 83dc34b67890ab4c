//! The SQL probe. Keeps one admin connection per (pair, site) and reuses it across probes, so that
//! a thousand pairs probing every second do not open a thousand connections a second; a connection
//! that errors or times out is dropped and the next probe reconnects.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{Outcome, PgState};
use crate::{
    crd::conditions::reasons,
    pg::conn::{self, ConnectError, Target},
};

/// Credentials for one site; not `Debug`, so they cannot end up in a log line.
pub struct Credentials {
    pub username: String,
    pub password: String,
}

const STATE_QUERY: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
    CASE WHEN pg_is_in_recovery() \
      THEN coalesce((SELECT received_tli::bigint FROM pg_stat_wal_receiver LIMIT 1), \
                    (SELECT timeline_id::bigint FROM pg_control_checkpoint())) \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END, \
    current_setting('default_transaction_read_only') = 'on'";

/// Probes sites over cached connections.
#[derive(Default, Clone)]
pub struct SqlProber {
    conns: Arc<Mutex<HashMap<String, Client>>>,
}

impl SqlProber {
    /// Reads the server's state within `timeout` (connecting included).
    pub async fn probe(&self, key: &str, target: &Target, timeout: Duration) -> Outcome<PgState> {
        match tokio::time::timeout(timeout, self.probe_inner(key, target)).await {
            Ok(Ok(state)) => Outcome::Up(state),
            // A refused TLS handshake is a configuration problem, not evidence the site is down.
            Ok(Err(ConnectError::Tls(msg))) => {
                self.conns.lock().await.remove(key);
                Outcome::NotRun(reasons::TLS_HANDSHAKE_FAILED, msg)
            }
            Ok(Err(ConnectError::Other(msg))) => {
                self.conns.lock().await.remove(key);
                Outcome::Down(msg)
            }
            Err(_) => {
                self.conns.lock().await.remove(key);
                Outcome::Down(format!("no answer within {}ms", timeout.as_millis()))
            }
        }
    }

    /// Drops every cached connection whose key starts with `prefix` (a deleted pair).
    pub async fn forget(&self, prefix: &str) {
        self.conns.lock().await.retain(|k, _| !k.starts_with(prefix));
    }

    async fn probe_inner(&self, key: &str, target: &Target) -> Result<PgState, ConnectError> {
        let cached = self.conns.lock().await.remove(key).filter(|c| !c.is_closed());
        let client = match cached {
            Some(c) => c,
            None => conn::connect(target).await?,
        };
        let state = read_state(&client).await.map_err(ConnectError::Other)?;
        self.conns.lock().await.insert(key.to_string(), client);
        Ok(state)
    }
}

async fn read_state(client: &Client) -> Result<PgState, String> {
    let row = client.query_one(STATE_QUERY, &[]).await.map_err(|e| describe(&e))?;
    let lsn = |i: usize| -> Result<Option<crate::pg::Lsn>, String> {
        row.try_get::<_, Option<String>>(i)
            .map_err(|e| describe(&e))?
            .map(|s| s.parse().map_err(|e: crate::pg::lsn::ParseLsnError| e.to_string()))
            .transpose()
    };
    Ok(PgState {
        in_recovery: row.try_get(0).map_err(|e| describe(&e))?,
        current_lsn: lsn(1)?,
        receive_lsn: lsn(2)?,
        replay_lsn: lsn(3)?,
        streaming: row.try_get::<_, Option<String>>(4).map_err(|e| describe(&e))?.as_deref()
            == Some("streaming"),
        timeline: row.try_get(5).map_err(|e| describe(&e))?,
        fenced: row.try_get(6).map_err(|e| describe(&e))?,
    })
}

/// A PostgreSQL error in one line: the server's message when there is one, else the client's.
/// Neither includes the password (tokio-postgres never echoes it).
pub fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}
