//! Probes: what one look at a site returns. A probe that times out is a failed probe. A probe that
//! could not run because its configuration is broken (a missing Secret, a refused TLS handshake) is `NotRun`: that is a
//! configuration problem, never evidence that the site is down, so it never counts toward failover.

pub mod http;
pub mod sql;

use crate::pg::Lsn;

/// What the SQL probe read from a reachable server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PgState {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` (primary only).
    pub current_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` (standby only).
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` (standby only).
    pub replay_lsn: Option<Lsn>,
    /// The WAL receiver's status is `streaming`.
    pub streaming: bool,
    /// Timeline of the latest checkpoint.
    pub timeline: Option<i64>,
    /// `default_transaction_read_only` is on: the server was fenced (by understudy or by hand).
    pub fenced: bool,
    /// `synchronous_standby_names` (primary only).
    pub synchronous_standby_names: Option<String>,
    /// A standby is synchronous: `sync_state` `sync` or `quorum` in `pg_stat_replication`
    /// (primary only; needs `pg_monitor` or superuser, else it reads false).
    pub synchronous_standby: Option<bool>,
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The site answered.
    Up(T),
    /// The site did not answer in time, refused, or answered wrongly: evidence of failure.
    Down(String),
    /// The probe could not be run (configuration problem: a missing Secret, a TLS setting the
    /// server refuses): no evidence either way. The condition reason, and the message.
    NotRun(&'static str, String),
}

/// One probe round of one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteObservation {
    pub name: String,
    pub sql: Outcome<PgState>,
    /// `None` when the site has no HTTP checks.
    pub http: Option<Outcome<()>>,
}
