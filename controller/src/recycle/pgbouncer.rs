//! PgBouncer through its admin console (simple query protocol only). `PAUSE` waits for in-flight
//! transactions and holds new ones; the repoint rewrites the `[databases]` include file and sends
//! `RELOAD` (which moves server connections to the new host), or sends `RECONNECT` when PgBouncer
//! points at a name that moves; `RESUME` lets the held clients through to the new primary.
//! Measured here (shared/notes): RELOAD immediately followed by RECONNECT can stall 15 s on a
//! half-done login, so the two are never combined. After the repoint the login retry delay that the
//! dead primary's refused logins armed is skipped (`Console::retry_logins_now`).

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{Env, NewPrimary};
use crate::{
    crd::PgBouncerRecycler,
    pg::conn::describe,
    secrets::{SecretError, Secrets},
};

/// The admin user and password of `spec.recycle[i].pgBouncer`, from its `adminSecret`.
pub async fn admin_credentials(
    secrets: &Secrets,
    i: usize,
    r: &PgBouncerRecycler,
) -> Result<(String, String), SecretError> {
    let field = format!("spec.recycle[{i}].pgBouncer.adminSecret");
    let d = secrets.get(&r.admin_secret.name, &["username", "password"], &field).await?;
    Ok((d.value("username").to_string(), d.value("password").to_string()))
}

/// The PgBouncer recycler: holds and releases clients (PAUSE/RESUME) and repoints the database
/// entry (the `[databases]` file and RELOAD, else RECONNECT). Each call opens its own console
/// session with the admin Secret as it is now.
pub struct PgBouncer {
    index: usize,
    spec: PgBouncerRecycler,
    secrets: Secrets,
    timeout: Duration,
}

impl PgBouncer {
    pub fn new(index: usize, spec: &PgBouncerRecycler, env: &Env) -> PgBouncer {
        PgBouncer { index, spec: spec.clone(), secrets: env.secrets.clone(), timeout: env.timeout }
    }

    fn field(&self) -> String {
        format!("spec.recycle[{}].pgBouncer", self.index)
    }

    fn fail(&self, source: Error) -> super::Error {
        super::Error::PgBouncer { field: self.field(), source }
    }

    async fn console(&self) -> Result<Console, super::Error> {
        let (user, password) = admin_credentials(&self.secrets, self.index, &self.spec).await?;
        Console::connect(&self.spec, &user, &password, self.timeout).await.map_err(|e| self.fail(e))
    }
}

#[async_trait]
impl super::Recycler for PgBouncer {
    fn reads_data_source(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("PgBouncer {}:{}", self.spec.host, self.spec.port)
    }

    async fn hold(&self, wait: Duration) -> Result<bool, super::Error> {
        self.console().await?.pause(wait).await.map_err(|e| self.fail(e))?;
        Ok(true)
    }

    async fn release(&self, wait: Duration) -> Result<bool, super::Error> {
        self.console().await?.resume(wait).await.map_err(|e| self.fail(e))?;
        Ok(true)
    }

    async fn recycle(&self, to: &NewPrimary<'_>) -> Result<String, super::Error> {
        let console = self.console().await?;
        let pgb = &self.spec;
        match &pgb.databases_file {
            Some(path) => {
                let dbname = pgb.backend_database.clone().unwrap_or_else(|| to.postgres.database.clone());
                let content =
                    databases_file(&pgb.database, &to.postgres.host, to.postgres.port, &dbname, to.epoch);
                write_databases_file(path, &content).map_err(|source| super::Error::DatabasesFile {
                    field: self.field(),
                    path: path.clone(),
                    source,
                })?;
                // Always RELOAD: a crash between write and reload must not leave PgBouncer on the old file.
                console.reload(self.timeout).await.map_err(|e| self.fail(e))?;
            }
            None => console.reconnect(self.timeout).await.map_err(|e| self.fail(e))?,
        }
        // Best effort: the repoint is done; without this the clients wait out the retry delay.
        let hurried = match console.retry_logins_now(self.timeout).await {
            Ok(_) => "",
            Err(e) => {
                tracing::warn!(error = %e, "PgBouncer's login retry delay left as it is");
                " (its login retry delay could not be skipped; clients may wait server_login_retry)"
            }
        };
        console.resume(self.timeout).await.map_err(|e| self.fail(e))?;
        Ok(format!("pgbouncer {}:{} → {}{hurried}", pgb.host, pgb.port, to.site))
    }

    async fn check(&self) -> Result<(), super::Error> {
        self.console().await.map(drop)
    }
}

/// A failed console command.
#[derive(Debug, thiserror::Error)]
#[error("PgBouncer {target}: {action}: {reason}")]
pub struct Error {
    pub target: String,
    pub action: String,
    pub reason: String,
}

/// An admin-console session.
pub struct Console {
    client: Client,
    target: String,
    database: String,
}

impl Console {
    /// Connects to the admin console (`pgbouncer` database) within `timeout`.
    pub async fn connect(
        r: &PgBouncerRecycler,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Console, Error> {
        let target = format!("{}:{}", r.host, r.port);
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&r.host)
            .port(r.port)
            .dbname("pgbouncer")
            .user(user)
            .password(password)
            .connect_timeout(timeout);
        let fail = |reason: String| Error {
            target: target.clone(),
            action: "connect to the admin console".into(),
            reason,
        };
        let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(describe(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Console { client, target, database: r.database.clone() })
    }

    async fn cmd(&self, sql: &str, timeout: Duration) -> Result<(), Error> {
        let fail = |reason: String| Error { target: self.target.clone(), action: sql.into(), reason };
        tokio::time::timeout(timeout, self.client.simple_query(sql))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(describe(&e)))?;
        Ok(())
    }

    /// Holds new transactions for the database once the running ones finish.
    pub async fn pause(&self, timeout: Duration) -> Result<(), Error> {
        match self.cmd(&format!("PAUSE {}", self.database), timeout).await {
            Err(e) if e.reason.contains("already") => Ok(()),
            other => other,
        }
    }

    /// Lets held and new clients through. Not paused is success.
    pub async fn resume(&self, timeout: Duration) -> Result<(), Error> {
        match self.cmd(&format!("RESUME {}", self.database), timeout).await {
            Err(e) if e.reason.contains("not paused") || e.reason.contains("not suspended") => Ok(()),
            other => other,
        }
    }

    /// Re-reads the configuration files.
    pub async fn reload(&self, timeout: Duration) -> Result<(), Error> {
        self.cmd("RELOAD", timeout).await
    }

    /// Lets the pool log in to the new server now. After a failed login PgBouncer waits
    /// `server_login_retry` (15 s by default) before the next one, and the dead primary's refused
    /// logins count against the new primary too: clients waiting for a server sat out the rest of
    /// that delay after the repoint (0.2–1.3 s measured here with `server_login_retry = 1`, 10 ms
    /// with this). `SET server_login_retry = 0` makes PgBouncer launch the waiting clients' login at
    /// once; the configured value (read first from `SHOW CONFIG`) is set back straight after, so a
    /// server that refuses logins is not hammered (and the next RELOAD rereads it anyway). Returns
    /// the value restored, or `None` when it was already 0.
    pub async fn retry_logins_now(&self, timeout: Duration) -> Result<Option<String>, Error> {
        let fail = |action: &str, reason: String| Error {
            target: self.target.clone(),
            action: action.into(),
            reason,
        };
        let rows = tokio::time::timeout(timeout, self.client.simple_query("SHOW CONFIG"))
            .await
            .map_err(|_| fail("SHOW CONFIG", format!("no answer within {timeout:?}")))?
            .map_err(|e| fail("SHOW CONFIG", describe(&e)))?;
        let configured = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r)
                if r.try_get("key").ok().flatten() == Some("server_login_retry") =>
            {
                r.try_get("value").ok().flatten().map(str::to_string)
            }
            _ => None,
        });
        let Some(value) = configured else {
            return Err(fail("SHOW CONFIG", "no server_login_retry in its answer".into()));
        };
        // Only a number goes back into a command.
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(fail("SHOW CONFIG", format!("server_login_retry is {value:?}, not a number")));
        }
        if value.trim_matches(|c| c == '0' || c == '.').is_empty() {
            return Ok(None);
        }
        self.cmd("SET server_login_retry = 0", timeout).await?;
        self.cmd(&format!("SET server_login_retry = {value}"), timeout).await?;
        Ok(Some(value))
    }

    /// Closes server connections once released, so new ones resolve the host again.
    pub async fn reconnect(&self, timeout: Duration) -> Result<(), Error> {
        self.cmd(&format!("RECONNECT {}", self.database), timeout).await
    }
}

/// The `[databases]` include file content pointing `database` at `host:port/dbname`.
pub fn databases_file(database: &str, host: &str, port: u16, dbname: &str, epoch: i64) -> String {
    format!("; managed by understudy: rewritten on every promotion (epoch {epoch})\n{database} = host={host} port={port} dbname={dbname}\n")
}

/// Writes `content` to `path` atomically (temp file + rename) unless it already holds it.
/// Returns whether it wrote.
pub fn write_databases_file(path: &str, content: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    let tmp = format!("{path}.understudy.tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_file_points_at_the_new_primary() {
        let f = databases_file("app", "10.0.0.7", 5433, "mattermost", 4);
        assert!(f.ends_with("app = host=10.0.0.7 port=5433 dbname=mattermost\n"), "{f}");
        assert!(f.contains("epoch 4"));
    }

    #[test]
    fn writing_twice_is_a_no_op() {
        let dir = std::env::temp_dir().join(format!("us-pgb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("databases.ini").display().to_string();
        assert!(write_databases_file(&p, "a\n").expect("write"));
        assert!(!write_databases_file(&p, "a\n").expect("write"));
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a\n");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
