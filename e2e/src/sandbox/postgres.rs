//! A PostgreSQL 15 primary and a streaming standby made with `pg_basebackup -R`, both on loopback,
//! run as the `postgres` user with password (SCRAM) authentication over TCP.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{
    proc::{as_user, free_port, run, wait_until, Proc},
    random_hex, scratch_dir,
};

/// The Debian PostgreSQL 15 binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// One PostgreSQL server of the sandbox.
pub struct PgServer {
    pub name: String,
    pub port: u16,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    proc: Option<Proc>,
    log: PathBuf,
}

/// A primary and its streaming standby.
pub struct PgPair {
    pub dir: PathBuf,
    pub user: String,
    pub password: String,
    pub primary: PgServer,
    pub standby: PgServer,
}

impl PgPair {
    /// initdb, start the primary, clone the standby with `pg_basebackup -R`, start it, and wait until
    /// it streams.
    pub fn start(label: &str) -> Result<PgPair> {
        Self::start_with(label, None)
    }

    /// As `start`, and with `tls` both servers run `ssl = on` with that certificate (issued for
    /// `IP:127.0.0.1`); plaintext connections are still accepted, as `pg_hba.conf` says `host`.
    pub fn start_with(label: &str, tls: Option<&super::certs::Issued>) -> Result<PgPair> {
        super::ensure_packages()?;
        let dir = scratch_dir(&format!("pg-{label}"))?;
        run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        let password = random_hex(12);
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        run(Command::new("chown").arg("postgres:postgres").arg(&pwfile))?;

        let pdata = dir.join("primary");
        run(as_user("postgres", &format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&pdata)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display())))?;
        let pport = free_port()?;
        // Sockets live outside the data directories: pg_rewind copies whatever it finds there.
        for sock in ["sock-primary", "sock-standby"] {
            std::fs::create_dir_all(dir.join(sock))?;
        }
        let ssl = match tls {
            None => String::new(),
            Some(t) => {
                // Outside the data directories, so the standby's copy of postgresql.conf finds them too.
                std::fs::write(dir.join("server.crt"), &t.cert)?;
                std::fs::write(dir.join("server.key"), &t.key)?;
                run(Command::new("chmod").arg("0600").arg(dir.join("server.key")))?;
                format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    dir.join("server.crt").display(),
                    dir.join("server.key").display()
                )
            }
        };
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir))?;
        let conf = format!(
            "\n# understudy sandbox\nport = {pport}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\n\
             wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '512MB'\nhot_standby = on\nfsync = off\n\
             full_page_writes = on\nlogging_collector = off\nshared_buffers = '32MB'\nmax_connections = 200\n\
             wal_receiver_status_interval = 1s\nhot_standby_feedback = on\nwal_log_hints = on\n{ssl}",
            d = dir.join("sock-primary").display()
        );
        append(&pdata.join("postgresql.conf"), &conf)?;
        let mut primary = PgServer {
            name: "primary".into(),
            port: pport,
            data: pdata.clone(),
            socket_dir: dir.join("sock-primary"),
            proc: None,
            log: dir.join("primary.log"),
        };
        primary.start()?;

        let sdata = dir.join("standby");
        run(as_user("postgres", &format!("{PG_BIN}/pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pport.to_string(),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
                "-D",
            ])
            .arg(&sdata)
            .env("PGPASSWORD", &password))?;
        let sport = free_port()?;
        append(
            &sdata.join("postgresql.conf"),
            &format!("port = {sport}\nunix_socket_directories = '{}'\n", dir.join("sock-standby").display()),
        )?;
        let mut standby = PgServer {
            name: "standby".into(),
            port: sport,
            data: sdata,
            socket_dir: dir.join("sock-standby"),
            proc: None,
            log: dir.join("standby.log"),
        };
        standby.start()?;
        let pair = PgPair { dir, user: "postgres".into(), password, primary, standby };
        pair.wait_streaming(Duration::from_secs(30))?;
        Ok(pair)
    }

    /// Waits until the standby's WAL receiver reports `streaming`.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        wait_until("standby streaming", timeout, || {
            self.standby
                .psql("SELECT status FROM pg_stat_wal_receiver")
                .map(|s| s.trim() == "streaming")
                .unwrap_or(false)
        })
    }
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited; only its entry is left).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) state …": the state follows the last ')' (comm may hold spaces and parens).
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

impl PgServer {
    /// Starts the postmaster (as `postgres`) and waits until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        // A SIGKILLed postmaster that a rejoin hook had started (with pg_ctl, so not our child) can
        // linger as a zombie until its new parent reaps it; PostgreSQL takes a zombie's pid in
        // `postmaster.pid` for a live postmaster and refuses to start ("lock file already exists").
        let pidfile = self.data.join("postmaster.pid");
        if pidfile.exists() && self.pid() == 0 {
            let _ = std::fs::remove_file(&pidfile);
            // The socket's lock file names the same pid.
            let _ = std::fs::remove_file(self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port)));
        }
        let mut cmd = as_user("postgres", &format!("{PG_BIN}/postgres"));
        cmd.arg("-D").arg(&self.data);
        let proc = Proc::spawn(&format!("postgres-{}", self.name), cmd, &self.log)?;
        self.proc = Some(proc);
        let port = self.port.to_string();
        wait_until(&format!("postgres {} on {}", self.name, self.port), Duration::from_secs(60), || {
            Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .with_context(|| format!("postgres {} log:\n{}", self.name, super::proc::tail_file(&self.log, 20)))
    }

    /// The postmaster's pid (0 when stopped). Read from `postmaster.pid`, because a rejoin hook may
    /// have restarted the server with `pg_ctl` behind our back.
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .filter(|pid: &u32| alive(*pid))
            .unwrap_or(0)
    }

    /// SIGKILL the postmaster, as a crashed host would leave it.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        if pid != 0 {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        // Gone means reaped too, as far as it is ours to wait for (a zombie is its new parent's).
        let _ = wait_until("the postmaster to exit", Duration::from_secs(5), || !alive(pid));
        // Backends notice the postmaster's death on their own; wait until the port is free.
        let port = self.port;
        let _ = wait_until("orphaned backends to exit", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
    }

    /// A fast shutdown (SIGINT): disconnects clients, writes a shutdown checkpoint.
    pub fn stop(&mut self) {
        let pid = self.pid();
        if let Some(mut p) = self.proc.take() {
            p.stop("INT", Duration::from_secs(30));
        } else if pid != 0 {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = wait_until("postgres to stop", Duration::from_secs(30), || self.pid() == 0);
        }
    }

    /// The `id` column of `table` (the workload's acknowledged-commit ids), to count lost commits.
    pub fn ids(&self, table: &str) -> Result<Vec<i64>> {
        Ok(self
            .psql(&format!("SELECT id FROM {table}"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Runs SQL through the local socket as `postgres` and returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        run(as_user("postgres", &format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql]))
    }

    /// The timeline a primary writes on (from its current WAL file name; the checkpoint's timeline
    /// lags behind a fast promotion).
    pub fn timeline(&self) -> Result<i64> {
        let out = self
            .psql("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint")?;
        out.trim().parse().with_context(|| format!("parse timeline from {out:?}"))
    }

    /// The server log.
    pub fn log_tail(&self, n: usize) -> String {
        super::proc::tail_file(&self.log, n)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pid = self.pid();
        if let Some(mut p) = self.proc.take() {
            // Immediate shutdown: no checkpoint to wait for in a throwaway cluster.
            p.stop("QUIT", Duration::from_secs(5));
        }
        if pid != 0 {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
