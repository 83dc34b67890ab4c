//! The witness etcd (Debian's etcd-server, 3.4): a separate etcd from the control plane's, acting
//! as the third site that breaks ties between primary and standby.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    proc::{free_port, run, wait_until, Proc},
    scratch_dir,
};

/// A running witness etcd.
pub struct Witness {
    pub dir: PathBuf,
    pub endpoint: String,
    /// The client port (partition tests cut it).
    pub port: u16,
    args: Vec<String>,
    proc: Proc,
}

impl Witness {
    pub fn start() -> Result<Witness> {
        super::ensure_packages()?;
        let dir = scratch_dir("witness")?;
        let (port, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{port}");
        let args = vec![
            "--name=witness".to_string(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=witness=http://127.0.0.1:{peer}"),
            "--log-level=warn".to_string(),
            "--logger=zap".to_string(),
        ];
        let proc = Self::spawn(&dir, &args)?;
        let w = Witness { dir, endpoint, port, args, proc };
        w.wait_healthy()?;
        Ok(w)
    }

    fn spawn(dir: &std::path::Path, args: &[String]) -> Result<Proc> {
        let mut cmd = Command::new("etcd");
        cmd.args(args);
        Proc::spawn("witness-etcd", cmd, &dir.join("etcd.log"))
    }

    fn wait_healthy(&self) -> Result<()> {
        wait_until("witness etcd health", Duration::from_secs(30), || {
            self.etcdctl(&["endpoint", "health"]).is_ok()
        })
        .with_context(|| format!("witness etcd log:\n{}", self.proc.tail(20)))
    }

    /// Starts a killed witness again on the same port with the same data (its keys and leases
    /// survive; etcd extends unexpired leases across a restart).
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill9();
        self.proc = Self::spawn(&self.dir, &self.args)?;
        self.wait_healthy()
    }

    /// Runs `etcdctl` (v3 API) against the witness.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        run(Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args))
    }

    /// SIGKILL the witness (outage tests).
    pub fn kill(&mut self) {
        self.proc.kill9();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}
