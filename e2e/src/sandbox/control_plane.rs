//! A real Kubernetes control plane: etcd and kube-apiserver built from Go modules by
//! `e2e/scripts/build-k8s.sh` (cached), started the way envtest starts them: an own CA, a static
//! admin token, RBAC on, service-account keys. No kubelet, so no Pods run; the controller under test
//! runs as a local process or task with the kubeconfig this writes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{
    proc::{free_port, run, wait_until, Proc},
    random_hex, repo_root, scratch_dir,
};

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub version: String,
    pub bin_dir: PathBuf,
    etcd: Proc,
    apiserver: std::sync::Mutex<Proc>,
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
        let mut cmd = Command::new(bin_dir.join("etcd"));
        cmd.arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let etcd = Proc::spawn("etcd", cmd, &dir.join("etcd.log"))?;
        wait_until("etcd /health", Duration::from_secs(30), || {
            Command::new("curl")
                .args(["-sf", "-m", "1", &format!("http://127.0.0.1:{etcd_port}/health")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .with_context(|| format!("etcd log:\n{}", etcd.tail(20)))?;

        let p = |f: &str| pki.join(f).display().to_string();
        let mut cmd = Command::new(bin_dir.join("kube-apiserver"));
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", pki.display()))
            .arg(format!("--tls-cert-file={}", p("server.crt")))
            .arg(format!("--tls-private-key-file={}", p("server.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", p("sa.key")))
            .arg(format!("--service-account-signing-key-file={}", p("sa.key")))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--allow-privileged=true")
            .arg("--v=1");
        let apiserver_args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let apiserver = Proc::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))?;
        let url = format!("https://127.0.0.1:{api_port}");
        let ca = p("ca.crt");
        let auth = format!("Authorization: Bearer {token}");
        let readyz = format!("{url}/readyz");
        wait_until("kube-apiserver /readyz", Duration::from_secs(90), || {
            Command::new("curl")
                .args(["-sf", "-m", "2", "--cacert", &ca, "-H", &auth, &readyz])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .with_context(|| format!("kube-apiserver log:\n{}", apiserver.tail(30)))?;
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
        let readyz = (ca.clone(), auth.clone(), readyz.clone());
        Ok(ControlPlane {
            dir,
            kubeconfig,
            url,
            version,
            bin_dir,
            etcd,
            apiserver: std::sync::Mutex::new(apiserver),
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

    /// The kube-apiserver process id.
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.lock().map(|p| p.pid()).unwrap_or(0)
    }

    /// SIGKILLs kube-apiserver, waits `down`, starts it again with the same flags (same port, etcd
    /// and certificates) and waits for `/readyz`: an API outage in the middle of whatever runs.
    pub fn restart_apiserver(&self, down: Duration) -> Result<()> {
        let mut guard = self.apiserver.lock().map_err(|_| anyhow::anyhow!("apiserver lock poisoned"))?;
        guard.kill9();
        std::thread::sleep(down);
        let mut cmd = Command::new(self.bin_dir.join("kube-apiserver"));
        cmd.args(&self.apiserver_args);
        *guard = Proc::spawn("kube-apiserver", cmd, &self.dir.join("kube-apiserver.log"))?;
        let (ca, auth, readyz) = &self.readyz;
        wait_until("kube-apiserver /readyz after restart", Duration::from_secs(90), || {
            Command::new("curl")
                .args(["-sf", "-m", "2", "--cacert", ca, "-H", auth, readyz])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    /// The etcd process id.
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.pid()
    }
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
