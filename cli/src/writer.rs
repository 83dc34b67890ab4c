//! `drill --writer-dsn`: the application's traffic, measured as a client sees it. A writer inserts
//! one row every 20 ms into a table of its own (`understudy_drill_<8 hex>`, dropped afterwards)
//! through the DSN given — the application's path, e.g. its PgBouncer — reconnecting whenever a
//! write fails. After the drill every acknowledged row is looked up again: the longest time between
//! two acknowledged writes is the write gap the application saw, and an acknowledged row that is
//! missing is a lost commit.
//!
//! The connection is made without TLS (`sslmode=disable` semantics): point the DSN at a PgBouncer or
//! server reachable in plain text (inside the cluster network, or through `kubectl port-forward`).
//! The DSN's password is never printed; without one in the DSN, `$PGPASSWORD` is used (as libpq
//! does), which keeps it out of process lists.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::{Client, Config, NoTls};

/// What the writer saw.
#[derive(Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Writes that failed (each followed by a reconnect).
    pub errors: u64,
    /// The longest time between two acknowledged writes, in seconds.
    pub longest_gap_seconds: f64,
    /// Acknowledged writes missing afterwards (`None` when they could not be checked).
    pub lost: Option<usize>,
    /// Why the check could not be made, or the table could not be dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A running writer.
pub struct Writer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Vec<i64>, u64, Duration)>,
    config: Config,
    table: String,
}

const EVERY: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(config: &Config) -> Result<Client, String> {
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

impl Writer {
    /// Parses `dsn`, creates the table and starts writing. `Err` says why (never the password).
    pub async fn start(dsn: &str) -> Result<Writer, String> {
        let mut config: Config =
            dsn.parse().map_err(|e| format!("--writer-dsn is not a PostgreSQL connection string: {e}"))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        // As libpq: a DSN without a password takes $PGPASSWORD (keeping it out of process lists).
        if config.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                config.password(pw);
            }
        }
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        let table = format!("understudy_drill_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        let client = connect(&config).await.map_err(|e| format!("--writer-dsn: cannot connect: {e}"))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(|e| format!("--writer-dsn: cannot create the table {table}: {e}"))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (cfg, t) = (config.clone(), table.clone());
        let task = tokio::spawn(async move {
            let insert = format!("INSERT INTO {t} (id) VALUES ($1)");
            let (mut client, mut acked, mut errors) = (Some(client), Vec::new(), 0u64);
            let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut id = 0i64;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                if client.is_none() {
                    client = connect(&cfg).await.ok();
                }
                let Some(c) = client.as_ref() else {
                    errors += 1;
                    continue;
                };
                id += 1;
                match tokio::time::timeout(Duration::from_secs(5), c.execute(&insert, &[&id])).await {
                    Ok(Ok(_)) => {
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                        acked.push(id);
                    }
                    _ => {
                        errors += 1;
                        client = None;
                    }
                }
            }
            (acked, errors, longest)
        });
        Ok(Writer { stop, task, config, table })
    }

    /// Stops writing, checks every acknowledged row and drops the table.
    pub async fn finish(self) -> Traffic {
        let _ = self.stop.send(());
        let (acked, errors, longest) = self.task.await.unwrap_or_default();
        let mut out = Traffic {
            acknowledged: acked.len(),
            errors,
            longest_gap_seconds: longest.as_secs_f64(),
            ..Default::default()
        };
        let checked = async {
            let c = connect(&self.config).await?;
            let present = c
                .query(&format!("SELECT id FROM {} WHERE id = ANY($1)", self.table), &[&acked])
                .await
                .map_err(|e| e.to_string())?
                .len();
            let dropped = c.batch_execute(&format!("DROP TABLE {}", self.table)).await;
            Ok::<_, String>((acked.len().saturating_sub(present), dropped.err()))
        };
        match checked.await {
            Ok((lost, dropped)) => {
                out.lost = Some(lost);
                out.note = dropped.map(|e| format!("the table {} was not dropped: {e}", self.table));
            }
            Err(e) => out.note = Some(format!("could not check the acknowledged writes: {e}")),
        }
        out
    }
}
