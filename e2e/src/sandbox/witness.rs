//! The witness etcd (Debian's etcd-server, 3.4): a separate etcd from the control plane's, acting
//! as the third site that breaks ties between primary and standby.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    certs::Issued,
    proc::{free_port, run, wait_until, Proc},
    scratch_dir,
};

/// TLS for the witness: its server certificate, the CA clients must chain to and that signs the
/// client certificates it accepts (`--client-cert-auth`), the client certificate `etcdctl` uses,
/// and optionally etcd authentication with a `root` user.
pub struct WitnessTls {
    pub ca: PathBuf,
    pub server: Issued,
    pub client: Issued,
    /// `auth enable` with user `root` and this password.
    pub root_password: Option<String>,
}

/// A running witness etcd.
pub struct Witness {
    pub dir: PathBuf,
    pub endpoint: String,
    /// The client port (partition tests cut it).
    pub port: u16,
    args: Vec<String>,
    proc: Proc,
    tls: Option<WitnessTls>,
}

impl Witness {
    pub fn start() -> Result<Witness> {
        Self::start_with(None)
    }

    /// As `start`; with `tls` the client URL is `https://`, only clients with a certificate from
    /// the CA get in, and with `root_password` etcd authentication is enabled.
    pub fn start_with(tls: Option<WitnessTls>) -> Result<Witness> {
        super::ensure_packages()?;
        let dir = scratch_dir("witness")?;
        let (port, peer) = (free_port()?, free_port()?);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{port}");
        let mut args = Vec::new();
        if let Some(t) = &tls {
            args.extend([
                format!("--cert-file={}", t.server.cert_path.display()),
                format!("--key-file={}", t.server.key_path.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth".to_string(),
            ]);
        }
        args.extend([
            "--name=witness".to_string(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=witness=http://127.0.0.1:{peer}"),
            "--log-level=warn".to_string(),
            "--logger=zap".to_string(),
        ]);
        let proc = Self::spawn(&dir, &args)?;
        let w = Witness { dir, endpoint, port, args, proc, tls };
        w.wait_healthy()?;
        if let Some(pw) = w.tls.as_ref().and_then(|t| t.root_password.clone()) {
            w.etcdctl(&["user", "add", &format!("root:{pw}"), "--interactive=false"])?;
            w.etcdctl(&["user", "grant-role", "root", "root"]).ok();
            w.etcdctl(&["auth", "enable"])?;
        }
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

    /// Runs `etcdctl` (v3 API) against the witness (with the client certificate, and as `root`
    /// when authentication is on).
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoint));
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client.cert_path.display()))
                .arg(format!("--key={}", t.client.key_path.display()));
            let enabling =
                args.first() == Some(&"user") || args == ["auth", "enable"] || args == ["endpoint", "health"];
            if let (Some(pw), false) = (&t.root_password, enabling) {
                cmd.arg(format!("--user=root:{pw}"));
            }
        }
        run(cmd.args(args))
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
