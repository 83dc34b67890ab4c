//! Administrative actions on a PostgreSQL server, each idempotent: fence (read-only, writers
//! terminated), unfence, promote and wait, prove writable with the epoch marker, read WAL positions.
//!
//! The transition steps reach a server through the `PgAdmin` port (an admin session on a named
//! site, `PgSession`); `SiteAdmin` is the real one, built from the pair's spec and Secrets. The
//! free functions are the SQL behind it, also used directly by the keeper.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Client;

use super::conn::{self, describe, ResolveError};
use super::Lsn;
use crate::{crd::DisasterRecoveryPairSpec, secrets::Secrets};

/// The PostgreSQL administration port: opens an admin session on a site's server.
#[async_trait]
pub trait PgAdmin: Send + Sync {
    /// A session on site `site` (by name), within the timeout the port was built with.
    async fn connect(&self, site: &str) -> Result<Box<dyn PgSession>, OpenError>;
}

/// What the steps do on a server, each call as the free function of the same name.
#[async_trait]
pub trait PgSession: Send + Sync {
    /// `pg_is_in_recovery()`.
    async fn in_recovery(&self) -> Result<bool, Error>;
    /// The WAL receiver's status (`streaming`, …), `None` without a receiver.
    async fn wal_receiver_status(&self) -> Result<Option<String>, Error>;
    /// The WAL insert position of a primary.
    async fn current_lsn(&self) -> Result<Lsn, Error>;
    /// A standby's received and replayed positions.
    async fn standby_lsns(&self) -> Result<(Option<Lsn>, Option<Lsn>), Error>;
    /// Read-only and writers terminated; how many sessions were terminated.
    async fn fence(&self) -> Result<u64, Error>;
    /// The fence lifted.
    async fn unfence(&self) -> Result<(), Error>;
    /// Promoted and out of recovery; whether this call promoted.
    async fn promote(&self, timeout: Duration) -> Result<bool, Error>;
    /// The epoch marker written (never lowered); the epoch the marker holds afterwards.
    async fn write_epoch_marker(&self, pair: &str, site: &str, epoch: i64) -> Result<i64, Error>;
    /// Where the current timeline forked, when the history file says.
    async fn timeline_switch_point(&self) -> Result<Option<Lsn>, Error>;
    /// `CHECKPOINT`.
    async fn checkpoint(&self) -> Result<(), Error>;
    /// `synchronous_standby_names` set to `names` (and, when not empty, `synchronous_commit` to
    /// `on`); whether anything changed.
    async fn set_synchronous_standby_names(&self, names: &str) -> Result<bool, Error>;
}

/// Why an admin session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The site is not in `spec.sites`.
    #[error("no site named {0} in spec.sites")]
    NoSuchSite(String),
    /// Its Secrets or TLS material cannot be used.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The server did not answer, refused, or refused TLS (`tls`).
    #[error("{site} ({host}:{port}): {reason}")]
    Unreachable { site: String, host: String, port: u16, reason: String, tls: bool },
}

impl OpenError {
    /// A problem of the spec or its Secrets, not of the server.
    pub fn is_config(&self) -> bool {
        match self {
            OpenError::NoSuchSite(_) | OpenError::Resolve(_) => true,
            OpenError::Unreachable { tls, .. } => *tls,
        }
    }
}

/// The real `PgAdmin`: the pair's sites, their Secrets (TLS as each site asks), one connection per
/// session.
pub struct SiteAdmin {
    pub secrets: Secrets,
    pub spec: DisasterRecoveryPairSpec,
    pub timeout: Duration,
}

#[async_trait]
impl PgAdmin for SiteAdmin {
    async fn connect(&self, name: &str) -> Result<Box<dyn PgSession>, OpenError> {
        let (i, s) = self.spec.site(name).map_err(|_| OpenError::NoSuchSite(name.into()))?;
        let (target, _) = conn::resolve(&self.secrets, i, s, self.timeout).await?;
        let unreachable = |reason: String, tls: bool| OpenError::Unreachable {
            site: name.into(),
            host: s.postgres.host.clone(),
            port: s.postgres.port,
            reason,
            tls,
        };
        let c = tokio::time::timeout(self.timeout, conn::connect(&target))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout), false))?
            .map_err(|e| {
                let tls = matches!(e, conn::ConnectError::Tls(_));
                unreachable(e.to_string(), tls)
            })?;
        Ok(Box::new(c))
    }
}

#[async_trait]
impl PgSession for Client {
    async fn in_recovery(&self) -> Result<bool, Error> {
        in_recovery(self).await
    }
    async fn wal_receiver_status(&self) -> Result<Option<String>, Error> {
        wal_receiver_status(self).await
    }
    async fn current_lsn(&self) -> Result<Lsn, Error> {
        current_lsn(self).await
    }
    async fn standby_lsns(&self) -> Result<(Option<Lsn>, Option<Lsn>), Error> {
        standby_lsns(self).await
    }
    async fn fence(&self) -> Result<u64, Error> {
        fence(self).await
    }
    async fn unfence(&self) -> Result<(), Error> {
        unfence(self).await
    }
    async fn promote(&self, timeout: Duration) -> Result<bool, Error> {
        promote(self, timeout).await
    }
    async fn write_epoch_marker(&self, pair: &str, site: &str, epoch: i64) -> Result<i64, Error> {
        write_epoch_marker(self, pair, site, epoch).await
    }
    async fn timeline_switch_point(&self) -> Result<Option<Lsn>, Error> {
        timeline_switch_point(self).await
    }
    async fn checkpoint(&self) -> Result<(), Error> {
        checkpoint(self).await
    }
    async fn set_synchronous_standby_names(&self, names: &str) -> Result<bool, Error> {
        set_synchronous_standby_names(self, names).await
    }
}

/// A failed admin action, with the server's message (never the credentials).
#[derive(Debug, thiserror::Error)]
#[error("{action}: {reason}")]
pub struct Error {
    pub action: &'static str,
    pub reason: String,
}

fn err(action: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error { action, reason: describe(&e) }
}

/// `pg_is_in_recovery()`.
pub async fn in_recovery(c: &Client) -> Result<bool, Error> {
    c.query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(err("read recovery state"))?
        .try_get(0)
        .map_err(err("read recovery state"))
}

/// The WAL receiver's status on a standby (`streaming`, `waiting`, …); `None` when it has none.
pub async fn wal_receiver_status(c: &Client) -> Result<Option<String>, Error> {
    Ok(c.query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
        .await
        .map_err(err("read WAL receiver status"))?
        .and_then(|r| r.try_get(0).ok()))
}

/// The current WAL insert position of a primary.
pub async fn current_lsn(c: &Client) -> Result<Lsn, Error> {
    let s: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(err("read current LSN"))?
        .try_get(0)
        .map_err(err("read current LSN"))?;
    s.parse()
        .map_err(|e: super::lsn::ParseLsnError| Error { action: "read current LSN", reason: e.to_string() })
}

/// The received and replayed positions of a standby (the larger of the two is what a promotion keeps).
pub async fn standby_lsns(c: &Client) -> Result<(Option<Lsn>, Option<Lsn>), Error> {
    let row = c
        .query_one("SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text", &[])
        .await
        .map_err(err("read standby LSNs"))?;
    let parse = |i: usize| -> Option<Lsn> {
        row.try_get::<_, Option<String>>(i).ok().flatten().and_then(|s| s.parse().ok())
    };
    Ok((parse(0), parse(1)))
}

/// Fences a primary: new transactions default to read-only (persisted with ALTER SYSTEM, so a restart
/// keeps it), then every other client session is terminated so no open transaction can still commit.
/// Returns how many sessions were terminated.
pub async fn fence(c: &Client) -> Result<u64, Error> {
    c.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .await
        .map_err(err("set read-only"))?;
    c.batch_execute("SELECT pg_reload_conf()").await.map_err(err("reload configuration"))?;
    let row = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND coalesce(application_name, '') <> 'understudy'",
            &[],
        )
        .await
        .map_err(err("terminate writing sessions"))?;
    Ok(row.try_get::<_, i64>(0).map_err(err("terminate writing sessions"))? as u64)
}

/// Lifts a fence: the persisted read-only default is removed and the configuration reloaded.
pub async fn unfence(c: &Client) -> Result<(), Error> {
    c.batch_execute("ALTER SYSTEM RESET default_transaction_read_only")
        .await
        .map_err(err("reset read-only"))?;
    c.batch_execute("SELECT pg_reload_conf()").await.map_err(err("reload configuration"))?;
    Ok(())
}

/// Arms the boot gate of a primary: an empty `standby.signal` in its data directory. PostgreSQL
/// reads it only when it starts, so the running server keeps serving; but whenever it starts again
/// — after a crash, a lost site coming back, a restart by hand — it comes up as a standby and
/// accepts no write until a controller that holds the epoch promotes it (the keeper does, after
/// the witness confirmed its site; a site that lost the epoch is rejoined instead). Promotion
/// removes the file, so the keeper arms it again once it holds the key of the new epoch. Only a
/// keeper arms it: without one, nothing would promote the server after a restart. Needs superuser
/// or `pg_write_server_files` and `pg_read_all_settings`.
pub async fn arm_boot_gate(c: &Client) -> Result<(), Error> {
    let dir: String = c
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .map_err(err("read data_directory"))?
        .try_get(0)
        .map_err(err("read data_directory"))?;
    let path = format!("{}/standby.signal", dir.trim_end_matches('/'));
    // COPY takes no bind parameter for its file name: quote it as a literal.
    let sql = format!("COPY (SELECT 1 WHERE false) TO '{}'", path.replace('\'', "''"));
    c.batch_execute(&sql).await.map_err(err("write standby.signal"))?;
    Ok(())
}

/// How long a promotion may take before the request is sent again (see `promote`).
pub const PROMOTE_NUDGE: Duration = Duration::from_millis(100);

/// Promotes a standby and waits until it leaves recovery. Already promoted is success.
/// Returns whether this call did the promotion.
///
/// `pg_promote(wait => true)` checks for the end of recovery ten times a second, so it returns
/// 0–100 ms after the promotion really ended; this asks without waiting and polls
/// `pg_is_in_recovery()` every 5 ms instead (measured here: pg_promote(true) 0.10–0.17 s), asking
/// again every `PROMOTE_NUDGE` while it is still in recovery.
pub async fn promote(c: &Client, timeout: Duration) -> Result<bool, Error> {
    if !in_recovery(c).await? {
        return Ok(false);
    }
    let asked: bool = c
        .query_one("SELECT pg_promote(false)", &[])
        .await
        .map_err(err("pg_promote"))?
        .try_get(0)
        .map_err(err("pg_promote"))?;
    if !asked {
        return Err(Error {
            action: "pg_promote",
            reason: "the server refused to signal its promotion".into(),
        });
    }
    let until = tokio::time::Instant::now() + timeout.max(Duration::from_secs(1));
    let mut nudge = tokio::time::Instant::now() + PROMOTE_NUDGE;
    while in_recovery(c).await? {
        let now = tokio::time::Instant::now();
        if now >= until {
            return Err(Error {
                action: "pg_promote",
                reason: format!("still in recovery after {:?}", timeout.max(Duration::from_secs(1))),
            });
        }
        if now >= nudge {
            // A request that reaches the startup process while it waits on a WAL receiver it just
            // started (after a reload's SIGHUP woke it, or its retry against the dead primary) is
            // taken, but the process then sleeps out wal_retrieve_retry_interval (5 s by default)
            // before it acts on it; any signal ends that sleep, so ask again (measured in
            // `sync.rs`: 5.02 s without, 0.02–0.17 s with). An error means recovery ended meanwhile
            // (the loop sees it); a signal file left by a late request is removed by the postmaster
            // at its next start.
            let _ = c.batch_execute("SELECT pg_promote(false)").await;
            nudge = now + PROMOTE_NUDGE;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(true)
}

/// Proves the server takes writes: lifts any fence a previous life left behind, then records the
/// epoch in the marker table. A marker with a higher epoch is never overwritten (a stale leader's
/// late write changes nothing); returns the epoch the table holds afterwards.
pub async fn write_epoch_marker(c: &Client, pair: &str, site: &str, epoch: i64) -> Result<i64, Error> {
    // One statement per call: a multi-statement string runs as one transaction, where ALTER SYSTEM is refused.
    // The marker is understudy's own proof of writability, not application data: it must not wait
    // for a synchronous standby that is away (a new primary under `replication: Sync` whose old
    // primary is dead would block the failover here).
    for sql in [
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
        "SET default_transaction_read_only = off",
        "SET synchronous_commit = local",
    ] {
        c.batch_execute(sql).await.map_err(err("lift read-only"))?;
    }
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS understudy_epoch (pair text PRIMARY KEY, epoch bigint NOT NULL, \
         site text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err("create epoch marker table"))?;
    c.execute(
        "INSERT INTO understudy_epoch (pair, epoch, site) VALUES ($1, $2, $3) \
         ON CONFLICT (pair) DO UPDATE SET epoch = EXCLUDED.epoch, site = EXCLUDED.site, written_at = now() \
         WHERE understudy_epoch.epoch <= EXCLUDED.epoch",
        &[&pair, &epoch, &site],
    )
    .await
    .map_err(err("write epoch marker"))?;
    let held: i64 = c
        .query_one("SELECT epoch FROM understudy_epoch WHERE pair = $1", &[&pair])
        .await
        .map_err(err("read epoch marker"))?
        .try_get(0)
        .map_err(err("read epoch marker"))?;
    Ok(held)
}

/// Where the server's current timeline forked from its parent (from the timeline history file),
/// or `None` on timeline 1 or when the file cannot be read (it needs superuser or
/// `pg_read_server_files`).
pub async fn timeline_switch_point(c: &Client) -> Result<Option<Lsn>, Error> {
    let row = c
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
            &[],
        )
        .await
        .map_err(err("read timeline"))?;
    let Some(tli) = row.try_get::<_, Option<i32>>(0).map_err(err("read timeline"))? else { return Ok(None) };
    if tli <= 1 {
        return Ok(None);
    }
    let path = format!("pg_wal/{tli:08X}.history");
    let text: Option<String> = match c.query_one("SELECT pg_read_file($1, 0, 1048576, true)", &[&path]).await
    {
        Ok(r) => r.try_get(0).ok().flatten(),
        Err(_) => None,
    };
    Ok(text.as_deref().and_then(parse_history_switch_point))
}

/// `CHECKPOINT`. After a fast promotion the new timeline reaches pg_control only at the next
/// checkpoint; until then `pg_rewind` against this server sees "the same timeline" and skips the
/// rewind, so the rejoin checkpoints the new primary before it runs the hook.
pub async fn checkpoint(c: &Client) -> Result<(), Error> {
    c.batch_execute("CHECKPOINT").await.map_err(err("CHECKPOINT"))
}

/// Sets `synchronous_standby_names` (with ALTER SYSTEM, then reloads): `*` makes every commit wait
/// until a standby has flushed it, the empty string makes commits asynchronous. A non-empty value
/// also sets `synchronous_commit = on` when it is `off` or `local` (which would acknowledge before
/// the standby has the commit). Works on a standby too (the setting only acts once it is
/// promoted). Returns whether anything changed; a value already in place is left alone.
pub async fn set_synchronous_standby_names(c: &Client, names: &str) -> Result<bool, Error> {
    let row = c
        .query_one(
            "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map_err(err("read synchronous_standby_names"))?;
    let now: String = row.try_get(0).map_err(err("read synchronous_standby_names"))?;
    let commit: String = row.try_get(1).map_err(err("read synchronous_commit"))?;
    let weak_commit = !names.is_empty() && matches!(commit.as_str(), "off" | "local");
    if now == names && !weak_commit {
        return Ok(false);
    }
    // SET to '' rather than RESET: a value in postgresql.conf would come back with RESET.
    let set = format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", names.replace('\'', "''"));
    c.batch_execute(&set).await.map_err(err("set synchronous_standby_names"))?;
    if weak_commit {
        c.batch_execute("ALTER SYSTEM SET synchronous_commit = on")
            .await
            .map_err(err("set synchronous_commit"))?;
    }
    c.batch_execute("SELECT pg_reload_conf()").await.map_err(err("reload configuration"))?;
    Ok(true)
}

/// The switch point of the last entry of a timeline history file (`<parent tli>\t<lsn>\t<reason>`).
pub fn parse_history_switch_point(history: &str) -> Option<Lsn> {
    history
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|lsn| lsn.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_point_is_the_last_entry() {
        let h = "1\t0/20001A0\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n";
        assert_eq!(parse_history_switch_point(h), Some(Lsn(0x5000000)));
        assert_eq!(parse_history_switch_point(""), None);
    }
}
