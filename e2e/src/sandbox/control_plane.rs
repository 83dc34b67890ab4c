//! A real Kubernetes control plane: etcd and kube-apiserver built from Go modules by
//! `e2e/scripts/build-k8s.sh` (cached), started the way envtest starts them: an own CA, a static
//! admin token, RBAC on, service-account keys. No kubelet, so no Pods run; the controller under test
//! runs as a local process or task with the kubeconfig this writes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{
    proc::{free_port, run, wait_until, Proc},
    random_hex, repo_root, scratch_dir,
};

/// A running etcd + kube-apiserver. Either can be stopped and started again in place (same flags,
/// ports, certificates and etcd data directory), so a test can take the API server away for a while
/// (`stop_apiserver`/`start_apiserver`, `restart_apiserver`) or lose the whole control plane and
/// bring it back with its objects (`kill`/`revive`). Dropping it kills both processes.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub version: String,
    pub bin_dir: PathBuf,
    etcd: Mutex<Proc>,
    etcd_args: Vec<String>,
    etcd_health: String,
    apiserver: Mutex<Proc>,
    apiserver_args: Vec<String>,
    readyz: (String, String, String),
}

/// Builds (or finds cached) kube-apiserver, etcd and kubectl; returns their directory.
pub fn binaries() -> Result<PathBuf> {
    let out = run(Command::new("bash").arg(repo_root().join("e2e/scripts/build-k8s.sh")))
        .context("build the control plane with e2e/scripts/build-k8s.sh")?;
    let dir = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    for b in ["kube-apiserver", "etcd", "kubectl"] {
        if !dir.join(b).is_file() {
            bail!("build-k8s.sh did not produce {}", dir.join(b).display());
        }
    }
    Ok(dir)
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits for `/readyz`.
    pub fn start() -> Result<ControlPlane> {
        let bin_dir = binaries()?;
        let dir = scratch_dir("k8s")?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        make_certs(&pki)?;
        let token = random_hex(16);
        std::fs::write(pki.join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))?;

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_args = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let etcd_health = format!("http://127.0.0.1:{etcd_port}/health");
        let etcd = spawn_etcd(&bin_dir, &dir, &etcd_args, &etcd_health)?;

        let p = |f: &str| pki.join(f).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", pki.display()),
            format!("--tls-cert-file={}", p("server.crt")),
            format!("--tls-private-key-file={}", p("server.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc".to_string(),
            format!("--service-account-key-file={}", p("sa.key")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--allow-privileged=true".to_string(),
            "--v=1".to_string(),
        ];
        let url = format!("https://127.0.0.1:{api_port}");
        let ca = p("ca.crt");
        let auth = format!("Authorization: Bearer {token}");
        let readyz = (ca.clone(), auth.clone(), format!("{url}/readyz"));
        let apiserver = spawn_apiserver(&bin_dir, &dir, &apiserver_args)?;
        wait_ready(&readyz, &apiserver, "kube-apiserver /readyz")?;
        let version =
            run(Command::new("curl").args(["-sf", "--cacert", &ca, "-H", &auth, &format!("{url}/version")]))?;
        let version = serde_json::from_str::<serde_json::Value>(&version)?["gitVersion"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
                 users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: admin\n    namespace: default\n\
                 current-context: sandbox\n"
            ),
        )?;
        Ok(ControlPlane {
            dir,
            kubeconfig,
            url,
            version,
            bin_dir,
            etcd: Mutex::new(etcd),
            etcd_args,
            etcd_health,
            apiserver: Mutex::new(apiserver),
            apiserver_args,
            readyz,
        })
    }

    /// A kube client for this control plane (bound to the calling tokio runtime).
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin_dir.join("kubectl"));
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c
    }

    /// The kube-apiserver process id (0 while it is down).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.lock().map(|p| p.pid()).unwrap_or(0)
    }

    /// The etcd process id (0 while it is down).
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.lock().map(|p| p.pid()).unwrap_or(0)
    }

    /// SIGKILLs kube-apiserver, waits `down`, starts it again with the same flags (same port, etcd
    /// and certificates) and waits for `/readyz`: an API outage in the middle of whatever runs.
    pub fn restart_apiserver(&self, down: Duration) -> Result<()> {
        self.stop_apiserver();
        std::thread::sleep(down);
        self.start_apiserver()
    }

    /// SIGKILLs kube-apiserver and returns at once; etcd keeps running. The API stays down until
    /// `start_apiserver` (or `revive`).
    pub fn stop_apiserver(&self) {
        if let Ok(mut a) = self.apiserver.lock() {
            a.kill9();
        }
    }

    /// Starts kube-apiserver again with the same flags (port, etcd, certificates) and waits for
    /// `/readyz`. A running one is killed first.
    pub fn start_apiserver(&self) -> Result<()> {
        let mut guard = self.apiserver.lock().map_err(|_| anyhow!("apiserver lock poisoned"))?;
        guard.kill9();
        *guard = spawn_apiserver(&self.bin_dir, &self.dir, &self.apiserver_args)?;
        wait_ready(&self.readyz, &guard, "kube-apiserver /readyz after a restart")
    }

    /// Loses the whole control plane: SIGKILL to kube-apiserver and its etcd, both signals sent
    /// before either is reaped. Returns at once; `revive` brings it back with its data.
    pub fn kill(&self) {
        let (mut api, mut etcd) = match (self.apiserver.lock(), self.etcd.lock()) {
            (Ok(a), Ok(e)) => (a, e),
            _ => return,
        };
        api.send_kill();
        etcd.send_kill();
        api.kill9();
        etcd.kill9();
    }

    /// Brings a killed control plane back: etcd with the same flags and data directory (every
    /// namespace, CRD, object and Secret written before the loss is still there), then
    /// kube-apiserver with the same flags, port and certificates; waits for `/readyz`. Running
    /// processes are killed first.
    pub fn revive(&self) -> Result<()> {
        let mut api = self.apiserver.lock().map_err(|_| anyhow!("apiserver lock poisoned"))?;
        let mut etcd = self.etcd.lock().map_err(|_| anyhow!("etcd lock poisoned"))?;
        api.kill9();
        etcd.kill9();
        *etcd = spawn_etcd(&self.bin_dir, &self.dir, &self.etcd_args, &self.etcd_health)?;
        *api = spawn_apiserver(&self.bin_dir, &self.dir, &self.apiserver_args)?;
        wait_ready(&self.readyz, &api, "kube-apiserver /readyz after a revive")
    }

    /// Whether kube-apiserver answers `/readyz` now.
    pub fn is_ready(&self) -> bool {
        readyz_ok(&self.readyz)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_etcd(bin_dir: &Path, dir: &Path, args: &[String], health: &str) -> Result<Proc> {
    let mut cmd = Command::new(bin_dir.join("etcd"));
    cmd.args(args);
    let etcd = Proc::spawn("etcd", cmd, &dir.join("etcd.log"))?;
    wait_until("etcd /health", Duration::from_secs(30), || {
        Command::new("curl")
            .args(["-sf", "-m", "1", health])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
    .with_context(|| format!("etcd log:\n{}", etcd.tail(20)))?;
    Ok(etcd)
}

fn spawn_apiserver(bin_dir: &Path, dir: &Path, args: &[String]) -> Result<Proc> {
    let mut cmd = Command::new(bin_dir.join("kube-apiserver"));
    cmd.args(args);
    Proc::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))
}

fn readyz_ok((ca, auth, readyz): &(String, String, String)) -> bool {
    Command::new("curl")
        .args(["-sf", "-m", "2", "--cacert", ca, "-H", auth, readyz])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn wait_ready(readyz: &(String, String, String), apiserver: &Proc, what: &str) -> Result<()> {
    wait_until(what, Duration::from_secs(90), || readyz_ok(readyz))
        .with_context(|| format!("kube-apiserver log:\n{}", apiserver.tail(30)))
}

fn make_certs(pki: &Path) -> Result<()> {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(pki));
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3",
        "-subj",
        "/CN=understudy-sandbox-ca",
    ])?;
    std::fs::write(
        pki.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
    )?;
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3",
        "-extfile",
        "san.cnf",
    ])?;
    ossl(&["genrsa", "-out", "sa.key", "2048"])?;
    Ok(())
}
