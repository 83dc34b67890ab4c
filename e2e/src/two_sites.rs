//! Two sites, two Kubernetes clusters: a test bed in which each site has its own control plane
//! (A = east, B = west, each its own etcd + kube-apiserver), its own PgBouncer and application
//! stand-in, and its own controller (`understudy run --site <site>` with that cluster's
//! kubeconfig). What the sites share is what two data centres share: the PostgreSQL pair (east
//! primary, west streaming standby), BIND with the `chat` record, and the witness etcd.
//!
//! Both clusters hold the same namespace, the CRD, the same Secret and ConfigMap names (each
//! cluster's `pgb-admin` is its own PgBouncer's admin login), and the same pair spec (`pair`,
//! `apply`): every in-cluster or per-site entry (DataSource targets, recyclers, DNSEndpoint) is
//! given twice, once with `site: east` and once with `site: west`, and the RFC 2136 record is shared.
//!
//! A site can be lost and brought back: `kill_site` SIGKILLs its kube-apiserver, that cluster's
//! etcd, its controller, its PostgreSQL server (postmaster and backends) and its PgBouncer with one
//! `kill -9`, and closes its app's port; `revive_site` restarts the control plane (same data: the
//! pair and its Secrets are still there), its PgBouncer and app, then the controller and its
//! PostgreSQL server in the order asked (`Return`), each from where it was left.
//!
//! The async helpers that wait on processes block in place: run the tests on the multi-threaded
//! runtime (`#[tokio::test(flavor = "multi_thread")]`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use understudy::crd::{
    DataSourceTarget, DisasterRecoveryPair, DnsEndpointRecord, DnsRecord, EtcdWitness, HttpCheck,
    HttpRecycler, PgBouncerRecycler, Phase, Recycler, RejoinHook, Rfc2136Record, RolloutRestart, SiteHealth,
    WorkloadKind,
};

use crate::{
    app::App,
    bed::{self, APP_TOKEN},
    pair::{self, Automatic, Pair},
    sandbox::{
        postgres::PgServer, proc::Proc, random_hex, repo_root, scratch_dir, Bind, ControlPlane, PgBouncer,
        PgPair, Witness,
    },
    support::{self, wait_for},
    workload::Workload,
};

/// The two sites, in cluster order (A, B).
pub const SITES: [&str; 2] = ["east", "west"];

/// The witness's `leaseTTL` of `TwoSites::pair`.
pub const LEASE_TTL: &str = "4s";

/// One site: its Kubernetes cluster, the PgBouncer and app of its application, and its controller.
pub struct SiteCluster {
    /// `east` or `west`.
    pub name: String,
    pub cp: ControlPlane,
    /// A client of this cluster (replaced by a fresh one when the cluster is revived).
    pub client: Client,
    /// The site's own PgBouncer (initially pointing at east's primary); `databases.ini` is its own.
    pub pgb: PgBouncer,
    /// The site's application stand-in (health ping and recycle endpoint).
    pub app: App,
    controller: Option<Proc>,
    controller_log: PathBuf,
}

impl SiteCluster {
    /// This cluster's kubeconfig (what its controller gets as `KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.cp.kubeconfig
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> Command {
        self.cp.kubectl()
    }

    /// The controller's log file (every run of this site's controller appends to it, after a
    /// `=== sandbox: … ===` marker line).
    pub fn controller_log(&self) -> &Path {
        &self.controller_log
    }

    /// The controller's process id (0 when it is not running).
    pub fn controller_pid(&mut self) -> u32 {
        let running = self.controller.as_mut().is_some_and(Proc::is_running);
        self.controller.as_ref().filter(|_| running).map_or(0, Proc::pid)
    }
}

/// The order in which `revive_site` brings a site's controller and PostgreSQL server back (after
/// the control plane, PgBouncer and app), and the time between the two.
#[derive(Clone, Copy, Debug)]
pub enum Return {
    /// The controller first; the database stays unreachable for `gap`.
    ControllerFirst { gap: Duration },
    /// PostgreSQL first (as it was: a former primary comes back writable, with nobody watching it
    /// for `gap`); then the controller.
    PostgresFirst { gap: Duration },
}

/// When `revive_site` brought each part back.
#[derive(Clone, Copy, Debug)]
pub struct Revived {
    /// The cluster's kube-apiserver answered `/readyz` again.
    pub cluster_ready: Instant,
    /// The controller process was started.
    pub controller_started: Instant,
    /// PostgreSQL accepted connections again.
    pub postgres_ready: Instant,
}

/// The two-cluster bed.
pub struct TwoSites {
    /// The namespace, the same in both clusters.
    pub ns: String,
    /// Logs of the controllers and anything else of this bed.
    pub dir: PathBuf,
    /// East's server is `pg.primary`, west's `pg.standby` (whatever their roles are now).
    pub pg: PgPair,
    pub bind: Bind,
    pub witness: Witness,
    sites: [SiteCluster; 2],
}

impl TwoSites {
    /// Starts both control planes, the PostgreSQL pair, one PgBouncer and app per site, BIND and the
    /// witness; applies the CRDs and creates the namespace and every Secret and ConfigMap in both
    /// clusters. No pair and no controller yet (`pair`, `apply`, `start_controller`).
    pub async fn start(label: &str) -> Result<TwoSites> {
        let dir = scratch_dir(&format!("two-sites-{label}"))?;
        let label2 = label.to_string();
        let (cp_a, cp_b, pg, pgb_a, pgb_b, bind, witness) = tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| -> Result<_> {
                let a = s.spawn(ControlPlane::start);
                let b = s.spawn(ControlPlane::start);
                let rest = (|| -> Result<_> {
                    let pg = PgPair::start(&label2)?;
                    let pgb_a = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
                    let pgb_b = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
                    let bind = Bind::start("example.test", &[("chat", "127.0.0.11".parse()?)])?;
                    let witness = Witness::start()?;
                    Ok((pg, pgb_a, pgb_b, bind, witness))
                })();
                let join = |h: std::thread::ScopedJoinHandle<'_, Result<ControlPlane>>| {
                    h.join().map_err(|_| anyhow::anyhow!("a control plane thread panicked"))?
                };
                let (cp_a, cp_b) = (join(a).context("cluster A")?, join(b).context("cluster B")?);
                let (pg, pgb_a, pgb_b, bind, witness) = rest?;
                Ok((cp_a, cp_b, pg, pgb_a, pgb_b, bind, witness))
            })
        })
        .await??;
        let ns = format!("{label}-{}", random_hex(4));
        let mut sites = Vec::new();
        for (name, cp, pgb) in [("east", cp_a, pgb_a), ("west", cp_b, pgb_b)] {
            let client = cp.client().await?;
            let app = App::start(APP_TOKEN).await?;
            let controller_log = dir.join(format!("understudy-{name}.log"));
            sites.push(SiteCluster {
                name: name.into(),
                cp,
                client,
                pgb,
                app,
                controller: None,
                controller_log,
            });
        }
        let sites: [SiteCluster; 2] = sites.try_into().map_err(|_| anyhow::anyhow!("two sites"))?;
        let two = TwoSites { ns, dir, pg, bind, witness, sites };
        let (a, b) = futures::join!(two.prepare_cluster("east"), two.prepare_cluster("west"));
        a.context("prepare cluster A (east)")?;
        b.context("prepare cluster B (west)")?;
        Ok(two)
    }

    /// The CRDs, the namespace, the Secrets, the Mattermost Deployment and its DSN in one cluster.
    async fn prepare_cluster(&self, site: &str) -> Result<()> {
        let c = self.cluster(site);
        let (client, ns) = (&c.client, self.ns.as_str());
        support::apply_crd(client).await?;
        bed::apply_dnsendpoint_crd(client).await?;
        support::create_namespace(client, ns).await?;
        support::pair_secrets(client, ns, &self.pg).await?;
        support::put_secret(
            client,
            ns,
            "pgb-admin",
            &[("username", &c.pgb.admin_user), ("password", &c.pgb.admin_password)],
        )
        .await?;
        let b = &self.bind;
        support::put_secret(
            client,
            ns,
            "dns-tsig",
            &[("name", &b.key_name), ("algorithm", &b.key_algorithm), ("secret", &b.key_secret)],
        )
        .await?;
        support::put_secret(client, ns, "mm-token", &[("token", APP_TOKEN)]).await?;
        bed::apply_mattermost_deployment(client, ns).await?;
        bed::apply_mattermost_data_source(client, ns, &self.dsn("east")).await?;
        Ok(())
    }

    fn index(site: &str) -> usize {
        SITES.iter().position(|s| *s == site).unwrap_or_else(|| panic!("no site {site:?} (east or west)"))
    }

    /// The cluster of `site` (A for east, B for west).
    pub fn cluster(&self, site: &str) -> &SiteCluster {
        &self.sites[Self::index(site)]
    }

    /// The cluster of `site`, to change it.
    pub fn cluster_mut(&mut self, site: &str) -> &mut SiteCluster {
        &mut self.sites[Self::index(site)]
    }

    /// The pairs in `site`'s cluster.
    pub fn api(&self, site: &str) -> Api<DisasterRecoveryPair> {
        Api::namespaced(self.cluster(site).client.clone(), &self.ns)
    }

    /// The PostgreSQL server of `site` (east: the pair's first primary).
    pub fn server(&self, site: &str) -> &PgServer {
        match Self::index(site) {
            0 => &self.pg.primary,
            _ => &self.pg.standby,
        }
    }

    pub fn server_mut(&mut self, site: &str) -> &mut PgServer {
        match Self::index(site) {
            0 => &mut self.pg.primary,
            _ => &mut self.pg.standby,
        }
    }

    /// The DSN of `site`'s server, as its `dsn-<site>` Secret holds it.
    pub fn dsn(&self, site: &str) -> String {
        let (pg, port) = (&self.pg, self.server(site).port);
        format!("postgres://{}:{}@127.0.0.1:{port}/postgres?sslmode=disable", pg.user, pg.password)
    }

    /// The pair `name` for two clusters, the same spec for both: sites east and west on the
    /// PostgreSQL pair (`pg-admin`, `dsn-<site>`, DNS targets 127.0.0.11 / .12), each with its own
    /// app's health ping and the sandbox's rejoin hook; per site (`site: east` and `site: west`) the
    /// DataSource targets (`mattermost-config`, `mattermost-db`), the recyclers (the site's
    /// PgBouncer with its databases file, its app's recycle endpoint, the `mattermost` Deployment)
    /// and a DNSEndpoint; one shared RFC 2136 record; the witness with leaseTTL 4s; Automatic
    /// failover probing every 500 ms (timeout 500 ms, threshold 2).
    pub fn pair(&self, name: &str) -> Pair {
        let hook = repo_root().join("e2e/scripts/rejoin-local.sh").display().to_string();
        let recycler = Recycler { site: None, pg_bouncer: None, http: None, rollout_restart: None };
        let tagged = |site: &str, t: DataSourceTarget| DataSourceTarget { site: Some(site.into()), ..t };
        let mut data_source = Vec::new();
        let mut recycle = Vec::new();
        let mut dns = vec![DnsRecord {
            site: None,
            rfc2136: Some(Rfc2136Record {
                server: format!("127.0.0.1:{}", self.bind.port),
                zone: "example.test".into(),
                name: "chat".into(),
                ttl: 30,
                tsig_secret: pair::secret("dns-tsig"),
            }),
            dns_endpoint: None,
        }];
        for c in &self.sites {
            let site = Some(c.name.clone());
            data_source.push(tagged(&c.name, pair::mattermost_config_target("mattermost-config")));
            data_source.push(tagged(&c.name, pair::secret_target("mattermost-db", "dsn")));
            recycle.extend([
                Recycler {
                    site: site.clone(),
                    pg_bouncer: Some(PgBouncerRecycler {
                        host: "127.0.0.1".into(),
                        port: c.pgb.port,
                        admin_secret: pair::secret("pgb-admin"),
                        database: "app".into(),
                        databases_file: Some(c.pgb.databases_file().display().to_string()),
                        backend_database: None,
                    }),
                    ..recycler.clone()
                },
                Recycler {
                    site: site.clone(),
                    http: Some(HttpRecycler {
                        url: format!("http://127.0.0.1:{}/api/v4/database/recycle", c.app.port),
                        method: "POST".into(),
                        token_secret: Some(pair::secret("mm-token")),
                    }),
                    ..recycler.clone()
                },
                Recycler {
                    site: site.clone(),
                    rollout_restart: Some(RolloutRestart {
                        kind: WorkloadKind::Deployment,
                        name: "mattermost".into(),
                    }),
                    ..recycler.clone()
                },
            ]);
            dns.push(DnsRecord {
                site,
                rfc2136: None,
                dns_endpoint: Some(DnsEndpointRecord {
                    name: "chat".into(),
                    dns_name: "chat.example.test".into(),
                    ttl: 30,
                }),
            });
        }
        Pair::on(name, &self.pg, "pg-admin")
            .each_site(|s| {
                let server = self.server(&s.name);
                let app = self.cluster(&s.name).app.port;
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
            .data_source(data_source)
            .recycle(recycle)
            .dns(dns)
            .activate(SITES.map(|site| understudy::crd::Activation {
                site: site.into(),
                kind: WorkloadKind::Deployment,
                name: "mattermost".into(),
                passive_replicas: 0,
                active_replicas: 2,
            }))
            .set_witness(Some(EtcdWitness {
                endpoints: vec![self.witness.endpoint.clone()],
                prefix: "/understudy".into(),
                tls_secret: None,
                auth_secret: None,
                lease_ttl: pair::duration(LEASE_TTL),
            }))
            // Probes of 1 s (not 500 ms): with two control planes per test and tests side by side on
            // a loaded 2-core machine, a healthy east must never look down (detection, 2 s, stays
            // under the 4 s lease that bounds the RTO anyway).
            .failover(|f| f.mode(Automatic).probe_interval("1s").probe_timeout("1s").failure_threshold(2))
    }

    /// Applies `pair` (server-side) to both clusters.
    pub async fn apply(&self, pair: &Pair) -> Result<()> {
        for site in SITES {
            pair.apply(&self.cluster(site).client, &self.ns)
                .await
                .with_context(|| format!("in {site}'s cluster"))?;
        }
        Ok(())
    }

    /// Starts `site`'s controller: `understudy run --site <site> --namespace <ns>` with that
    /// cluster's kubeconfig, its log appended to `cluster(site).controller_log()`. Returns its pid.
    pub fn start_controller(&mut self, site: &str) -> Result<u32> {
        self.start_controller_with(site, &[], &[])
    }

    /// `start_controller` with extra arguments (a later flag wins) and environment.
    pub fn start_controller_with(&mut self, site: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<u32> {
        self.spawn_controller(site, extra, env, None)
    }

    /// `start_controller` under its own user id (`netcut::site_uid`), so that the network can be cut
    /// for this site's controller alone; its PgBouncer's databases file is made writable for it.
    pub fn start_controller_as(&mut self, site: &str, uid: u32) -> Result<u32> {
        let file = self.cluster(site).pgb.databases_file();
        for (mode, path) in [("0777", file.parent().context("databases file dir")?), ("0666", file.as_path())]
        {
            Command::new("chmod").arg(mode).arg(path).status()?;
        }
        self.spawn_controller(site, &[], &[], Some(uid))
    }

    fn spawn_controller(
        &mut self,
        site: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Result<u32> {
        let bin = bed::controller_binary()?;
        let ns = self.ns.clone();
        let c = self.cluster_mut(site);
        if c.controller_pid() != 0 {
            bail!("{site}'s controller is already running");
        }
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--namespace", &ns, "--site", site, "--instance", &format!("{site}-{ns}")])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", c.kubeconfig())
            .env("UNDERSTUDY_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        mark(&c.controller_log, &format!("{site}'s controller starting"));
        let p = Proc::spawn(&format!("understudy-{site}"), cmd, &c.controller_log)?;
        let pid = p.pid();
        c.controller = Some(p);
        Ok(pid)
    }

    /// Stops `site`'s controller (SIGTERM, then SIGKILL after 10 s).
    pub fn stop_controller(&mut self, site: &str) {
        let c = self.cluster_mut(site);
        if let Some(mut p) = c.controller.take() {
            p.stop("TERM", Duration::from_secs(10));
            mark(&c.controller_log, &format!("{site}'s controller stopped"));
        }
    }

    /// Loses `site` at once: one `kill -9` for its kube-apiserver and that cluster's etcd, its
    /// controller, its PostgreSQL postmaster and backends, and its PgBouncer; its app stops
    /// listening right after. Returns the moment just before the signals went out. The PostgreSQL
    /// data directory and PgBouncer's databases file stay as they were (`revive_site`).
    pub async fn kill_site(&mut self, site: &str) -> Result<Instant> {
        let postmaster = self.server(site).pid();
        let mut pids = Vec::new();
        if postmaster != 0 {
            pids.push(postmaster);
            // The backends: on a lost host they die with the postmaster, never finishing a commit.
            let children = Command::new("pgrep").args(["-P", &postmaster.to_string()]).output()?;
            pids.extend(
                String::from_utf8_lossy(&children.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
        let c = self.cluster_mut(site);
        let controller = c.controller_pid();
        pids.extend([c.cp.apiserver_pid(), c.cp.etcd_pid(), controller, c.pgb.pid()]);
        pids.retain(|p| *p != 0);
        let at = Instant::now();
        let status = Command::new("kill")
            .arg("-9")
            .args(pids.iter().map(u32::to_string))
            .stderr(std::process::Stdio::null())
            .status()?;
        c.app.stop();
        // Reap what was ours and mark it down.
        c.cp.kill();
        c.pgb.kill9();
        if let Some(mut p) = c.controller.take() {
            p.kill9();
        }
        mark(&c.controller_log, &format!("site {site} killed (controller pid {controller})"));
        tokio::task::block_in_place(|| self.server_mut(site).kill9());
        if !status.success() {
            bail!("kill -9 {pids:?} failed for a process of site {site}");
        }
        Ok(at)
    }

    /// Brings a lost `site` back: its control plane (same etcd data, same port and certificates;
    /// `cluster(site).client` is replaced by a fresh client), its PgBouncer with its databases file
    /// as it is on disk, its app, then its controller and its PostgreSQL server (started from the
    /// same data directory, as it was) in the order and with the gap `order` says.
    pub async fn revive_site(&mut self, site: &str, order: Return) -> Result<Revived> {
        let c = self.cluster_mut(site);
        tokio::task::block_in_place(|| c.cp.revive()).with_context(|| format!("revive {site}'s cluster"))?;
        let cluster_ready = Instant::now();
        c.client = c.cp.client().await?;
        tokio::task::block_in_place(|| c.pgb.restart())?;
        c.app.restart().await?;
        mark(&c.controller_log, &format!("site {site} revived ({order:?})"));
        let (controller_started, postgres_ready) = match order {
            Return::ControllerFirst { gap } => {
                self.start_controller(site)?;
                let started = Instant::now();
                tokio::time::sleep(gap).await;
                self.start_postgres(site)?;
                (started, Instant::now())
            }
            Return::PostgresFirst { gap } => {
                self.start_postgres(site)?;
                let ready = Instant::now();
                tokio::time::sleep(gap).await;
                self.start_controller(site)?;
                (Instant::now(), ready)
            }
        };
        Ok(Revived { cluster_ready, controller_started, postgres_ready })
    }

    fn start_postgres(&mut self, site: &str) -> Result<()> {
        let log = self.cluster(site).controller_log.clone();
        let server = self.server_mut(site);
        tokio::task::block_in_place(|| server.start())
            .with_context(|| format!("restart {site}'s PostgreSQL"))?;
        mark(&log, &format!("{site}'s PostgreSQL accepts connections again"));
        Ok(())
    }

    /// A workload writing to `table` every `every` the way a client of both sites does: a multi-host
    /// connection over both PgBouncers (east's first) with `target_session_attrs=read-write`.
    pub async fn workload(&self, table: &str, every: Duration) -> Result<Workload> {
        let mut cfg = tokio_postgres::Config::new();
        for site in SITES {
            cfg.host("127.0.0.1").port(self.cluster(site).pgb.port);
        }
        cfg.dbname("app")
            .user(&self.pg.user)
            .password(&self.pg.password)
            .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        Workload::start_with(cfg, table, every).await
    }

    /// A writer straight to `site`'s PostgreSQL server every 50 ms (`Workload::direct`): it counts
    /// exactly the writes that server acknowledges, also while it is down or coming back.
    pub fn direct_writer(&self, site: &str, table: &str) -> Workload {
        Workload::direct(self.server(site), &self.pg.user, &self.pg.password, table)
    }

    /// The epoch value the witness holds for a pair, as `<epoch> <holder> <id>`.
    pub fn witness_epoch(&self, name: &str) -> Result<String> {
        self.witness_get(&format!("/understudy/{}/{name}/epoch", self.ns))
    }

    /// The primary site's leader key (`<epoch> <site>`), empty when nobody holds it.
    pub fn witness_leader(&self, name: &str) -> Result<String> {
        self.witness_get(&format!("/understudy/{}/{name}/leader", self.ns))
    }

    fn witness_get(&self, key: &str) -> Result<String> {
        Ok(self.witness.etcdctl(&["get", key, "--print-value-only"])?.trim().to_string())
    }

    /// Waits until the pair in `site`'s cluster satisfies `check`; returns it. On timeout the error
    /// holds that cluster's status.
    pub async fn wait_pair(
        &self,
        site: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&DisasterRecoveryPair) -> bool,
    ) -> Result<DisasterRecoveryPair> {
        let api = self.api(site);
        let res = wait_for(&format!("{what} (in {site}'s cluster)"), timeout, || async {
            Ok(check(&api.get(name).await?))
        })
        .await;
        match res {
            Ok(()) => Ok(api.get(name).await?),
            Err(e) => {
                let status = api.get(name).await.ok().and_then(|p| p.status);
                bail!("{e:#}\nstatus in {site}'s cluster: {}", serde_json::to_string_pretty(&status)?)
            }
        }
    }

    /// Waits until the pair in `site`'s cluster is Healthy with `primary` serving, both sites
    /// reachable and the other site streaming.
    pub async fn wait_healthy(&self, site: &str, name: &str, primary: &str) -> Result<DisasterRecoveryPair> {
        let what = format!("pair Healthy with {primary} serving");
        self.wait_pair(site, name, &what, Duration::from_secs(30), |p| {
            let Some(st) = p.status.as_ref() else { return false };
            st.phase == Some(Phase::Healthy)
                && st.current_primary.as_deref() == Some(primary)
                && st.sites.len() == 2
                && st.sites.iter().all(|s| {
                    s.reachable
                        && s.http_healthy != Some(false)
                        && s.in_recovery == Some(s.name != primary)
                        && (s.name == primary || s.streaming == Some(true))
                })
        })
        .await
    }

    /// The opening of most two-cluster tests: `name` Healthy in both clusters with east serving,
    /// and east's controller holding the leader key at epoch 0.
    pub async fn wait_east_serving(&self, name: &str) -> Result<()> {
        for site in SITES {
            self.wait_healthy(site, name, "east").await?;
        }
        crate::support::wait_for("east to hold the leader key", Duration::from_secs(20), || async {
            Ok(self.witness_leader(name)? == "0 east")
        })
        .await
    }

    /// The value of key `key` of Secret `name` in `site`'s cluster.
    pub async fn secret_value(&self, site: &str, name: &str, key: &str) -> Result<String> {
        let s = Api::<Secret>::namespaced(self.cluster(site).client.clone(), &self.ns).get(name).await?;
        let v = s.data.and_then(|d| d.get(key).cloned()).context("key missing")?;
        Ok(String::from_utf8(v.0)?)
    }

    /// The text of key `key` of ConfigMap `name` in `site`'s cluster.
    pub async fn config_map_value(&self, site: &str, name: &str, key: &str) -> Result<String> {
        let c = Api::<ConfigMap>::namespaced(self.cluster(site).client.clone(), &self.ns).get(name).await?;
        c.data.and_then(|d| d.get(key).cloned()).context("key missing")
    }

    /// The last `n` lines of `site`'s controller log.
    pub fn controller_tail(&self, site: &str, n: usize) -> String {
        crate::sandbox::proc::tail_file(&self.cluster(site).controller_log, n)
    }
}

impl Drop for TwoSites {
    /// The controllers go first (nothing acts on a bed being torn down), then every process with its
    /// handle. With `UNDERSTUDY_E2E_LOGS=<dir>` set, the controllers' and PostgreSQL servers' logs
    /// are copied there as `<namespace>-<what>-<site>.log` (the sandbox's own directories are
    /// removed when the test process ends).
    fn drop(&mut self) {
        for c in &mut self.sites {
            if let Some(mut p) = c.controller.take() {
                p.kill9();
            }
        }
        let Ok(to) = std::env::var("UNDERSTUDY_E2E_LOGS") else { return };
        let to = PathBuf::from(to);
        let _ = std::fs::create_dir_all(&to);
        for site in SITES {
            let copy = |from: &Path, what: &str| {
                let _ = std::fs::copy(from, to.join(format!("{}-{what}-{site}.log", self.ns)));
            };
            copy(self.cluster(site).controller_log(), "understudy");
            copy(self.server(site).log_path(), "postgres");
        }
    }
}

/// A marker line in a log file, so a reader sees where the sandbox acted.
fn mark(log: &Path, what: &str) {
    use std::io::Write;
    let now = jiff::Timestamp::now();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "=== sandbox {now}: {what} ===");
    }
}
