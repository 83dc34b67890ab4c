//! PgBouncer in front of the primary, with an admin console user, run as `postgres`.

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

/// A running PgBouncer.
pub struct PgBouncer {
    pub dir: PathBuf,
    pub port: u16,
    /// The database name clients use.
    pub database: String,
    pub admin_user: String,
    pub admin_password: String,
    pub ini: PathBuf,
    proc: Proc,
}

impl PgBouncer {
    /// Serves database `database` → `127.0.0.1:backend_port/postgres`; `user`/`password` is the
    /// backend login that clients also use.
    pub fn start(database: &str, backend_port: u16, user: &str, password: &str) -> Result<PgBouncer> {
        super::ensure_packages()?;
        let dir = scratch_dir("pgbouncer")?;
        let port = free_port()?;
        let admin_password = random_hex(12);
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"{user}\" \"{password}\"\n\"pgbadmin\" \"{admin_password}\"\n"),
        )?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\n%include {d}/databases.ini\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\n\
                 auth_file = {d}/userlist.txt\nadmin_users = pgbadmin\npool_mode = transaction\n\
                 max_client_conn = 200\ndefault_pool_size = 20\nserver_login_retry = 1\n\
                 server_connect_timeout = 2\nquery_wait_timeout = 30\nignore_startup_parameters = extra_float_digits\n",
                d = dir.display()
            ),
        )?;
        std::fs::write(
            dir.join("databases.ini"),
            format!("{database} = host=127.0.0.1 port={backend_port} dbname=postgres\n"),
        )?;
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir))?;
        let proc = spawn(&ini, &dir, port)?;
        Ok(PgBouncer {
            dir,
            port,
            database: database.into(),
            admin_user: "pgbadmin".into(),
            admin_password,
            ini,
            proc,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The `[databases]` include file understudy may rewrite.
    pub fn databases_file(&self) -> PathBuf {
        self.dir.join("databases.ini")
    }

    /// One setting as the admin console's `SHOW CONFIG` reports it now.
    pub fn setting(&self, key: &str) -> Result<String> {
        let out = run(Command::new(format!("{}/psql", super::postgres::PG_BIN))
            .args(["-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", &self.admin_user, "-d", "pgbouncer", "-c", "SHOW CONFIG"])
            .env("PGPASSWORD", &self.admin_password))?;
        out.lines()
            .find_map(|l| {
                let mut cols = l.split('|');
                (cols.next() == Some(key)).then(|| cols.next().unwrap_or_default().to_string())
            })
            .with_context(|| format!("no {key} in SHOW CONFIG:\n{out}"))
    }

    /// SIGKILL, as a lost host leaves it (its `[databases]` file stays as it was).
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Starts a stopped PgBouncer again with the same configuration, port and `[databases]` file
    /// (whatever the file says now), and waits until it listens. A running one is killed first.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill9();
        self.proc = spawn(&self.ini, &self.dir, self.port)?;
        Ok(())
    }
}

fn spawn(ini: &Path, dir: &Path, port: u16) -> Result<Proc> {
    let mut cmd = as_user("postgres", "pgbouncer");
    cmd.arg(ini);
    let proc = Proc::spawn("pgbouncer", cmd, &dir.join("pgbouncer.log"))?;
    wait_until("pgbouncer to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .with_context(|| format!("pgbouncer log:\n{}", proc.tail(20)))?;
    Ok(proc)
}
