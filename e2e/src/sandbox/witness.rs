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
    proc: Proc,
}

impl Witness {
    pub fn start() -> Result<Witness> {
        super::ensure_packages()?;
        let dir = scratch_dir("witness")?;
        let (port, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=witness")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=witness=http://127.0.0.1:{peer}"))
            .arg("--log-level=warn")
            .arg("--logger=zap");
        let proc = Proc::spawn("witness-etcd", cmd, &dir.join("etcd.log"))?;
        let w = Witness { dir, endpoint, proc };
        wait_until("witness etcd health", Duration::from_secs(30), || {
            w.etcdctl(&["endpoint", "health"]).is_ok()
        })
        .with_context(|| format!("witness etcd log:\n{}", w.proc.tail(20)))?;
        Ok(w)
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
