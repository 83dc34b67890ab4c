//! A complete test bed for one pair: the PostgreSQL pair, PgBouncer (with a `[databases]` include
//! file understudy rewrites), BIND9 with the `chat` record, the witness etcd, a namespace with every
//! Secret and the Mattermost-style ConfigMap, and the pair (`Bed::pair`). Also the controller as a real
//! process, for tests that SIGKILL it.

use std::{path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{ObjectMeta, Patch, PatchParams},
    Api, Client,
};
use understudy::crd::{DisasterRecoveryPair, EtcdWitness, PgBouncerRecycler, Recycler};

use crate::{
    app::App,
    pair::{self, Failover, Pair},
    sandbox::{
        certs::{Ca, Issued},
        proc::Proc,
        repo_root,
        witness::WitnessTls,
        Bind, ControlPlane, PgBouncer, PgPair, Witness,
    },
    support::{self, wait_for},
};

/// `config.json` as Mattermost keeps it (abridged), pointing at `dsn`.
pub fn mattermost_config(dsn: &str) -> String {
    format!(
        "{{\n    \"ServiceSettings\": {{\n        \"SiteURL\": \"https://chat.example.test\",\n        \"ListenAddress\": \":8065\"\n    }},\n    \
         \"SqlSettings\": {{\n        \"DriverName\": \"postgres\",\n        \"DataSource\": {},\n        \"DataSourceReplicas\": [],\n        \
         \"MaxIdleConns\": 20,\n        \"MaxOpenConns\": 300\n    }},\n    \"JobSettings\": {{\"RunJobs\": true, \"RunScheduler\": true}}\n}}\n",
        serde_json::Value::String(dsn.into())
    )
}

/// Everything one pair needs, started.
pub struct Bed {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: String,
    pub pg: PgPair,
    pub pgb: PgBouncer,
    pub bind: Bind,
    pub witness: Witness,
    /// The application's HTTP side (ping and recycle endpoints).
    pub app: App,
    /// Set by `start_tls`: PostgreSQL and the witness speak TLS, and the pair uses it.
    pub tls: Option<BedTls>,
    /// The controller binary the `controller_process…` methods run; `None`: the workspace's debug
    /// build (`controller_binary`). The bench sets its release build here.
    pub controller_bin: Option<PathBuf>,
}

/// The certificates of a TLS bed: one CA issued PostgreSQL's and the witness's server certificate
/// (`IP:127.0.0.1`) and the client certificate (`CN=root`) understudy and etcdctl present.
pub struct BedTls {
    pub ca: Ca,
    pub server: Issued,
    pub client: Issued,
    /// The witness's `root` password (etcd authentication is on).
    pub root_password: String,
}

/// The bearer token the app accepts on its recycle endpoint.
pub const APP_TOKEN: &str = "mm-token-5e3f";

impl Bed {
    pub async fn start(label: &str) -> Result<Bed> {
        Self::start_with(label, false).await
    }

    /// A bed whose PostgreSQL servers run `ssl = on` and whose witness etcd requires TLS client
    /// certificates and a password (`root`); `pair` then asks for `VerifyFull` and gives the
    /// witness `tlsSecret` and `authSecret`. Secrets `pg-ca`, `witness-tls` and `witness-auth`.
    pub async fn start_tls(label: &str) -> Result<Bed> {
        Self::start_with(label, true).await
    }

    async fn start_with(label: &str, tls: bool) -> Result<Bed> {
        let client = support::client_with_crd().await?;
        let cp = tokio::task::spawn_blocking(support::control_plane).await?;
        let label2 = label.to_string();
        let (pg, pgb, bind, witness, tls) = tokio::task::spawn_blocking(move || -> Result<_> {
            let tls = match tls {
                false => None,
                true => {
                    let ca = Ca::new("understudy-test-ca")?;
                    let server = ca.issue("127.0.0.1", &["IP:127.0.0.1"], false)?;
                    let client = ca.issue("root", &[], true)?;
                    Some(BedTls { ca, server, client, root_password: crate::sandbox::random_hex(10) })
                }
            };
            let pg = PgPair::start_with(&label2, tls.as_ref().map(|t| &t.server))?;
            let pgb = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
            let bind = Bind::start("example.test", &[("chat", "127.0.0.11".parse()?)])?;
            let witness = Witness::start_with(tls.as_ref().map(|t| WitnessTls {
                ca: t.ca.cert_path.clone(),
                server: t.server.clone(),
                client: t.client.clone(),
                root_password: Some(t.root_password.clone()),
            }))?;
            Ok((pg, pgb, bind, witness, tls))
        })
        .await??;
        let ns = support::namespace(&client, label).await?;
        support::pair_secrets(&client, &ns, &pg).await?;
        support::put_secret(
            &client,
            &ns,
            "pgb-admin",
            &[("username", &pgb.admin_user), ("password", &pgb.admin_password)],
        )
        .await?;
        support::put_secret(
            &client,
            &ns,
            "dns-tsig",
            &[("name", &bind.key_name), ("algorithm", &bind.key_algorithm), ("secret", &bind.key_secret)],
        )
        .await?;
        let app = App::start(APP_TOKEN).await?;
        support::put_secret(&client, &ns, "mm-token", &[("token", APP_TOKEN)]).await?;
        apply_dnsendpoint_crd(&client).await?;
        apply_mattermost_deployment(&client, &ns).await?;
        if let Some(t) = &tls {
            support::put_secret(&client, &ns, "pg-ca", &[("ca.crt", &t.ca.cert)]).await?;
            support::put_secret(
                &client,
                &ns,
                "witness-tls",
                &[("ca.crt", &t.ca.cert), ("tls.crt", &t.client.cert), ("tls.key", &t.client.key)],
            )
            .await?;
            support::put_secret(
                &client,
                &ns,
                "witness-auth",
                &[("username", "root"), ("password", &t.root_password)],
            )
            .await?;
        }
        let bed = Bed { cp, client, ns, pg, pgb, bind, witness, app, tls, controller_bin: None };
        apply_mattermost_data_source(&bed.client, &bed.ns, &bed.dsn("east")).await?;
        Ok(bed)
    }

    /// The DSN of a site, as its `dsn-<site>` Secret holds it.
    pub fn dsn(&self, site: &str) -> String {
        let port = if site == "east" { self.pg.primary.port } else { self.pg.standby.port };
        format!("postgres://{}:{}@127.0.0.1:{port}/postgres?sslmode=disable", self.pg.user, self.pg.password)
    }

    /// The full pair `name` on this bed: both sites (`Pair::on`, logging in with `pg-admin`) with an
    /// HTTP health check and the sandbox's rejoin hook; DataSource (the Mattermost ConfigMap pointer
    /// and the `mattermost-db` Secret), PgBouncer, HTTP and rollout recyclers, the RFC 2136 record
    /// and its DNSEndpoint, and the etcd witness. Default failover policy (Manual). On a TLS bed both
    /// sites use `VerifyFull` with `pg-ca`, and the witness `witness-tls` and `witness-auth`.
    pub fn pair(&self, name: &str) -> Pair {
        use understudy::crd::{
            DnsEndpointRecord, DnsRecord, HttpCheck, HttpRecycler, RejoinHook, Rfc2136Record, RolloutRestart,
            SiteHealth, WorkloadKind,
        };
        let hook = repo_root().join("e2e/scripts/rejoin-local.sh").display().to_string();
        let app = self.app.port;
        let tls = self.tls.is_some();
        let recycler = Recycler { site: None, pg_bouncer: None, http: None, rollout_restart: None };
        let dns = DnsRecord { site: None, rfc2136: None, dns_endpoint: None };
        Pair::on(name, &self.pg, "pg-admin")
            .each_site(|s| {
                let server = self.server(&s.name);
                s.postgres.tls = tls.then(|| pair::verify_full("pg-ca"));
                s.health = Some(SiteHealth {
                    http: vec![HttpCheck { url: format!("http://127.0.0.1:{app}/api/v4/system/ping") }],
                });
                s.rejoin = Some(RejoinHook {
                    command: Some(vec![
                        "bash".into(),
                        hook.clone(),
                        server.data.display().to_string(),
                        server.log_path().display().to_string(),
                    ]),
                    job: None,
                    timeout: pair::duration("2m"),
                });
            })
            .data_source([
                pair::mattermost_config_target("mattermost-config"),
                pair::secret_target("mattermost-db", "dsn"),
            ])
            .recycle([
                Recycler {
                    pg_bouncer: Some(PgBouncerRecycler {
                        host: "127.0.0.1".into(),
                        port: self.pgb.port,
                        admin_secret: pair::secret("pgb-admin"),
                        database: "app".into(),
                        databases_file: Some(self.pgb.databases_file().display().to_string()),
                        backend_database: None,
                    }),
                    ..recycler.clone()
                },
                Recycler {
                    http: Some(HttpRecycler {
                        url: format!("http://127.0.0.1:{app}/api/v4/database/recycle"),
                        method: "POST".into(),
                        token_secret: Some(pair::secret("mm-token")),
                    }),
                    ..recycler.clone()
                },
                Recycler {
                    rollout_restart: Some(RolloutRestart {
                        kind: WorkloadKind::Deployment,
                        name: "mattermost".into(),
                    }),
                    ..recycler
                },
            ])
            .dns([
                DnsRecord {
                    rfc2136: Some(Rfc2136Record {
                        server: format!("127.0.0.1:{}", self.bind.port),
                        zone: "example.test".into(),
                        name: "chat".into(),
                        ttl: 30,
                        tsig_secret: pair::secret("dns-tsig"),
                    }),
                    ..dns.clone()
                },
                DnsRecord {
                    dns_endpoint: Some(DnsEndpointRecord {
                        name: "chat".into(),
                        dns_name: "chat.example.test".into(),
                        ttl: 30,
                    }),
                    ..dns
                },
            ])
            .set_witness(Some(EtcdWitness {
                endpoints: vec![self.witness.endpoint.clone()],
                prefix: "/understudy".into(),
                tls_secret: tls.then(|| pair::secret("witness-tls")),
                auth_secret: tls.then(|| pair::secret("witness-auth")),
                lease_ttl: pair::duration("10s"),
            }))
    }

    /// A bed with the pair `chat` (`pair("chat")` with its failover policy edited by `failover`)
    /// created, the controller running in-process, and the pair Healthy: the opening of most
    /// end-to-end tests.
    pub async fn with_pair(
        label: &str,
        failover: impl FnOnce(Failover) -> Failover,
    ) -> Result<(Bed, support::RunningController)> {
        Self::with_pair_on(Bed::start(label).await?, failover).await
    }

    /// `with_pair` on a TLS bed (`start_tls`): PostgreSQL over `VerifyFull`, the witness over TLS
    /// with a client certificate and a password.
    pub async fn with_tls_pair(
        label: &str,
        failover: impl FnOnce(Failover) -> Failover,
    ) -> Result<(Bed, support::RunningController)> {
        Self::with_pair_on(Bed::start_tls(label).await?, failover).await
    }

    async fn with_pair_on(
        bed: Bed,
        failover: impl FnOnce(Failover) -> Failover,
    ) -> Result<(Bed, support::RunningController)> {
        let ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
        bed.pair("chat").failover(failover).create(&bed.client, &bed.ns).await?;
        bed.wait_healthy("chat").await?;
        Ok((bed, ctl))
    }

    /// A workload writing to `table` through PgBouncer with the pair's credentials, the way the
    /// application does.
    pub async fn workload(&self, table: &str, every: Duration) -> Result<crate::workload::Workload> {
        crate::workload::Workload::start(
            "127.0.0.1",
            self.pgb.port,
            "app",
            &self.pg.user,
            &self.pg.password,
            table,
            every,
        )
        .await
    }

    pub fn api(&self) -> Api<DisasterRecoveryPair> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until the pair reports Healthy.
    pub async fn wait_healthy(&self, name: &str) -> Result<()> {
        let api = self.api();
        wait_for("pair Healthy", Duration::from_secs(30), || async {
            Ok(api.get(name).await?.status.and_then(|s| s.phase) == Some(understudy::crd::Phase::Healthy))
        })
        .await
    }

    /// Waits until the pair's last transition has finished and returns the pair.
    pub async fn wait_transition_finished(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<DisasterRecoveryPair> {
        let api = self.api();
        let res = wait_for("the transition to finish", timeout, || async {
            Ok(api
                .get(name)
                .await?
                .status
                .and_then(|s| s.last_transition)
                .is_some_and(|t| t.finished_at.is_some()))
        })
        .await;
        let drp = api.get(name).await?;
        if let Err(e) = res {
            bail!("{e:#}\nstatus: {}", serde_json::to_string_pretty(&drp.status)?);
        }
        Ok(drp)
    }

    /// Waits until the transition that took `epoch` has finished (completed or rolled back).
    pub async fn wait_epoch_finished(
        &self,
        name: &str,
        epoch: i64,
        timeout: Duration,
    ) -> Result<DisasterRecoveryPair> {
        let api = self.api();
        let res = wait_for(&format!("the transition of epoch {epoch} to finish"), timeout, || async {
            Ok(api
                .get(name)
                .await?
                .status
                .and_then(|s| s.last_transition)
                .is_some_and(|t| t.epoch.0 == epoch && t.finished_at.is_some()))
        })
        .await;
        let drp = api.get(name).await?;
        if let Err(e) = res {
            bail!("{e:#}\nstatus: {}", serde_json::to_string_pretty(&drp.status)?);
        }
        Ok(drp)
    }

    /// Whether an Event with `reason` was recorded in the bed's namespace.
    pub async fn has_event(&self, reason: &str) -> Result<bool> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(events.list(&Default::default()).await?.items.iter().any(|e| e.reason.as_deref() == Some(reason)))
    }

    /// The value of a Secret key.
    pub async fn secret_value(&self, name: &str, key: &str) -> Result<String> {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns).get(name).await?;
        let v = s.data.and_then(|d| d.get(key).cloned()).context("key missing")?;
        Ok(String::from_utf8(v.0)?)
    }

    /// The text of a ConfigMap key.
    pub async fn config_map_value(&self, name: &str, key: &str) -> Result<String> {
        let c = Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns).get(name).await?;
        c.data.and_then(|d| d.get(key).cloned()).context("key missing")
    }

    /// The TSIG key name BIND accepts.
    pub fn key_name(&self) -> String {
        self.bind.key_name.clone()
    }

    /// Annotates the pair (merge patch).
    pub async fn annotate(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// The server currently serving as `site`.
    pub fn server(&self, site: &str) -> &crate::sandbox::postgres::PgServer {
        if site == "east" {
            &self.pg.primary
        } else {
            &self.pg.standby
        }
    }

    /// Waits until the former primary of the last transition streams from the new one.
    pub async fn wait_rejoined(&self, name: &str, timeout: Duration) -> Result<()> {
        let api = self.api();
        let res = wait_for("the former primary to follow", timeout, || async {
            Ok(api
                .get(name)
                .await?
                .status
                .and_then(|s| s.former_primary)
                .is_some_and(|f| f.assessment.as_str() == "Following"))
        })
        .await;
        if let Err(e) = res {
            let st = api.get(name).await?.status;
            bail!(
                "{e:#}\nformerPrimary: {:?}\neast log:\n{}\nwest log:\n{}",
                st.and_then(|s| s.former_primary),
                self.pg.primary.log_tail(15),
                self.pg.standby.log_tail(15)
            );
        }
        Ok(())
    }

    /// The epoch value the witness holds for a pair, as `<epoch> <holder> <id>`.
    pub fn witness_epoch(&self, name: &str) -> Result<String> {
        Ok(self
            .witness
            .etcdctl(&["get", &format!("/understudy/{}/{name}/epoch", self.ns), "--print-value-only"])?
            .trim()
            .to_string())
    }

    /// The primary site's leader key (`<epoch> <site>`), empty when nobody holds it.
    pub fn witness_leader(&self, name: &str) -> Result<String> {
        Ok(self
            .witness
            .etcdctl(&["get", &format!("/understudy/{}/{name}/leader", self.ns), "--print-value-only"])?
            .trim()
            .to_string())
    }

    /// Runs the controller binary as a process watching this namespace.
    pub fn controller_process(&self, site: &str, env: &[(&str, &str)]) -> Result<Proc> {
        self.controller_process_with(site, &[], env)
    }

    /// The controller as a process with extra arguments (a later `--metrics-addr` wins).
    pub fn controller_process_with(&self, site: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
        self.controller_command(site, extra, env, None)
    }

    /// The controller of `site` running under user id `uid`, so that `sandbox::netcut` can cut
    /// that site's controller off from its peers.
    pub fn controller_process_as(&self, site: &str, uid: u32, extra: &[&str]) -> Result<Proc> {
        self.controller_command(site, extra, &[], Some(uid))
    }

    /// The controller as a process acting for both sites (no `--site`: no leader key, and it runs
    /// either site's rejoin hook), as one controller for a pair in one cluster runs.
    pub fn controller_process_both_sites(&self) -> Result<Proc> {
        let mut cmd = Command::new(controller_binary()?);
        cmd.args(["run", "--namespace", &self.ns, "--instance", &format!("both-{}", self.ns)])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("UNDERSTUDY_LOG", "info");
        Proc::spawn("understudy", cmd, &self.pg.dir.join("understudy-both.log"))
    }

    /// A replica of `site`'s controller named `replica` (its instance name and log file), for leader
    /// election among the replicas of one site's release.
    pub fn controller_replica(&self, site: &str, replica: &str, extra: &[&str]) -> Result<Proc> {
        self.controller_command_named(site, replica, extra, &[], None)
    }

    fn controller_command(
        &self,
        site: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Result<Proc> {
        self.controller_command_named(site, site, extra, env, uid)
    }

    fn controller_command_named(
        &self,
        site: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Result<Proc> {
        let bin = match &self.controller_bin {
            Some(b) => b.clone(),
            None => controller_binary()?,
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--namespace",
            &self.ns,
            "--site",
            site,
            "--instance",
            &format!("{name}-{}", self.ns),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("KUBECONFIG", &self.cp.kubeconfig)
        .env("UNDERSTUDY_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        Proc::spawn("understudy", cmd, &self.pg.dir.join(format!("understudy-{name}.log")))
    }
}

/// The `understudy` binary, built once per test process.
pub fn controller_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| workspace_binary("understudy", "understudy")).clone().map_err(|e| anyhow::anyhow!(e))
}

/// Builds the workspace's `package`/`bin` (debug) and returns its path. Callers keep the result in
/// a `OnceLock` so a test process builds each binary once.
pub fn workspace_binary(package: &str, bin: &str) -> std::result::Result<PathBuf, String> {
    let root = repo_root();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "-q", "-p", package, "--bin", bin]).current_dir(&root);
    // What cargo sets for the test being run, not for a build: a build script that watches one of
    // them (ring's watches CARGO_MANIFEST_DIR) would rebuild half the dependency graph here
    // (~25 s), and again at the next build outside a test.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cargo.env_remove(k.as_ref());
        }
    }
    let st = cargo.status().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("cargo build -p {package} failed"));
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    Ok(target.join("debug").join(bin))
}

/// Waits for a process to exit by itself.
pub fn wait_exit(p: &mut Proc, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while p.is_running() {
        if std::time::Instant::now() > deadline {
            bail!("{} still running after {timeout:?}; log:\n{}", p.name, p.tail(30));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The `mattermost` Deployment (never rolled out: no kubelet) a rollout-restart recycler restarts.
pub async fn apply_mattermost_deployment(client: &Client, ns: &str) -> Result<()> {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "mattermost" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "mattermost" } },
            "template": {
                "metadata": { "labels": { "app": "mattermost" } },
                "spec": { "containers": [ { "name": "mattermost", "image": "mattermost/mattermost-team-edition:10" } ] }
            }
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("mattermost", &PatchParams::apply("understudy-e2e").force(), &Patch::Apply(&deployment))
        .await?;
    Ok(())
}

/// Where the application reads its DSN, both pointing at `dsn`: Secret `mattermost-db` (key `dsn`)
/// and ConfigMap `mattermost-config` (Mattermost's `config.json`).
pub async fn apply_mattermost_data_source(client: &Client, ns: &str, dsn: &str) -> Result<()> {
    support::put_secret(client, ns, "mattermost-db", &[("dsn", dsn)]).await?;
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("mattermost-config".into()), ..Default::default() },
        data: Some([("config.json".to_string(), mattermost_config(dsn))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch("mattermost-config", &PatchParams::apply("understudy-e2e").force(), &Patch::Apply(&cm))
        .await?;
    Ok(())
}

/// Applies the ExternalDNS DNSEndpoint CRD (from `e2e/manifests/`) and waits until it is served.
pub async fn apply_dnsendpoint_crd(client: &Client) -> Result<()> {
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(include_str!("../manifests/dnsendpoint-crd.yaml"))
            .context("parse the DNSEndpoint CRD")?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "dnsendpoints.externaldns.k8s.io",
        &PatchParams::apply("understudy-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_for("DNSEndpoint CRD Established", Duration::from_secs(30), || async {
        let c = api.get("dnsendpoints.externaldns.k8s.io").await?;
        Ok(c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await
}
