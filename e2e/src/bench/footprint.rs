//! The controller's footprint: RSS and CPU over a 30 s window with 1 pair and with many pairs
//! probing every second, the probe cadence each pair actually gets, and the API requests the
//! controller sends (kube-apiserver's own `apiserver_request_total`).
//!
//! Every pair points at the same sandbox PostgreSQL pair. The SQL prober keeps one connection per
//! (pair, site), so both servers get `max_connections` raised to fit `pairs` connections each.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use kube::{api::ListParams, Api};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use understudy::crd::DisasterRecoveryPair;

use super::{cpu_seconds, http_get, quantile, rss_mib};
use crate::{
    sandbox::{proc::Proc, repo_root, PgPair},
    support,
};

/// The measurement window.
pub const WINDOW: Duration = Duration::from_secs(30);

/// The failover settings of every footprint pair (Manual: probing is the same as Automatic, and
/// a thousand pairs sharing one PostgreSQL pair must never promote it).
pub const FAILOVER: &str =
    "mode: Manual, probeInterval: 1s, probeTimeout: 1s, failureThreshold: 3, maxLagBytes: 16Mi";

/// What one window measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Window {
    pub pairs: usize,
    pub seconds: f64,
    pub rss_mib: f64,
    /// Controller CPU, % of one core.
    pub cpu_pct: f64,
    pub apiserver_cpu_pct: f64,
    /// Requests per second the controller sent, by "VERB resource[/subresource]".
    pub api_rps: BTreeMap<String, f64>,
    pub api_rps_total: f64,
    /// Time between two probes of the same (pair, primary site), as PostgreSQL saw them.
    pub probe_interval_p50: Option<f64>,
    pub probe_interval_p99: Option<f64>,
    pub probe_interval_max: Option<f64>,
    pub probe_intervals: usize,
    /// Probe connections the controller held on the primary at the end of the window.
    pub probe_connections: usize,
    /// Pairs whose status said Healthy / anything else after the window.
    pub healthy: usize,
    pub not_healthy: BTreeMap<String, usize>,
}

impl Window {
    /// Reconcile latency proxy: probe interval − probeInterval (1 s), p50.
    pub fn reconcile_p50(&self) -> Option<f64> {
        self.probe_interval_p50.map(|x| (x - 1.0).max(0.0))
    }

    pub fn reconcile_p99(&self) -> Option<f64> {
        self.probe_interval_p99.map(|x| (x - 1.0).max(0.0))
    }
}

/// The whole footprint measurement.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Footprint {
    pub binary: String,
    pub idle: Window,
    pub loaded: Window,
    pub create_seconds: f64,
    pub all_observed_seconds: Option<f64>,
    pub observed: usize,
    pub max_connections: usize,
}

/// The release controller binary (`make bench` builds it first); built here when missing.
pub fn release_binary() -> Result<PathBuf> {
    let root = repo_root();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let bin = target.join("release/understudy");
    if !bin.is_file() {
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "--release", "-p", "understudy", "--bin", "understudy"])
            .current_dir(&root)
            .status()?;
        if !st.success() {
            bail!("cargo build --release -p understudy failed");
        }
    }
    Ok(bin)
}

fn pair_yaml(name: &str, pg: &PgPair) -> String {
    format!(
        "apiVersion: dr.understudy.dev/v1alpha1
kind: DisasterRecoveryPair
metadata:
  name: {name}
spec:
  primary: east
  sites:
    - name: east
      postgres: {{ host: 127.0.0.1, port: {p}, database: postgres, credentialsSecret: {{ name: pg-admin }} }}
      dataSourceSecret: {{ name: dsn-east, key: dsn }}
      dnsTarget: 127.0.0.11
    - name: west
      postgres: {{ host: 127.0.0.1, port: {s}, database: postgres, credentialsSecret: {{ name: pg-admin }} }}
      dataSourceSecret: {{ name: dsn-west, key: dsn }}
      dnsTarget: 127.0.0.12
  failover: {{ {FAILOVER} }}
",
        p = pg.primary.port,
        s = pg.standby.port
    )
}

/// `apiserver_request_total` summed by "VERB resource[/subresource]" for the resources the
/// controller uses.
fn request_totals(metrics: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let get = |k: &str| -> String {
            labels
                .split(',')
                .find_map(|kv| {
                    kv.trim_start_matches("apiserver_request_total{").strip_prefix(&format!("{k}=\""))
                })
                .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let resource = get("resource");
        if !matches!(resource.as_str(), "disasterrecoverypairs" | "secrets" | "events") {
            continue;
        }
        let sub = get("subresource");
        let key = if sub.is_empty() {
            format!("{} {resource}", get("verb"))
        } else {
            format!("{} {resource}/{sub}", get("verb"))
        };
        *out.entry(key).or_default() += value;
    }
    out
}

/// Scrapes kube-apiserver's `/metrics` with the sandbox's admin token.
fn scrape(kubeconfig: &std::path::Path) -> Result<HashMap<String, f64>> {
    let kc = std::fs::read_to_string(kubeconfig)?;
    let field = |k: &str| -> Option<String> {
        kc.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: ")).map(str::to_string))
    };
    let (server, ca, token) = (
        field("server").context("server")?,
        field("certificate-authority").context("ca")?,
        field("token").context("token")?,
    );
    let auth = format!("Authorization: Bearer {token}");
    let (code, body) = http_get(&format!("{server}/metrics"), &["--cacert", &ca, "-H", &auth])?;
    if code != 200 {
        bail!("kube-apiserver /metrics answered {code}");
    }
    Ok(request_totals(&body))
}

/// Samples `query_start` of the controller's probe connections on the primary every 200 ms and
/// returns the intervals between successive probes of each connection, and the connection count.
async fn probe_cadence(cfg: &tokio_postgres::Config, window: Duration) -> Result<(Vec<f64>, usize)> {
    let (c, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    let mut last: HashMap<String, f64> = HashMap::new();
    let mut intervals = Vec::new();
    let mut conns = 0;
    let end = Instant::now() + window;
    while Instant::now() < end {
        let rows = c
            .simple_query(
                "SELECT pid, extract(epoch from query_start) FROM pg_stat_activity \
                 WHERE application_name = 'understudy' AND query_start IS NOT NULL",
            )
            .await?;
        conns = 0;
        for m in rows {
            if let SimpleQueryMessage::Row(r) = m {
                conns += 1;
                let (Some(pid), Some(Ok(at))) = (r.get(0), r.get(1).map(str::parse::<f64>)) else { continue };
                match last.insert(pid.to_string(), at) {
                    Some(prev) if at > prev => intervals.push(at - prev),
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((intervals, conns))
}

async fn measure(
    ctl: &Proc,
    apiserver_pid: u32,
    kubeconfig: &std::path::Path,
    pg_cfg: &tokio_postgres::Config,
    api: &Api<DisasterRecoveryPair>,
    pairs: usize,
) -> Result<Window> {
    let pid = ctl.pid();
    let m0 = tokio::task::block_in_place(|| scrape(kubeconfig))?;
    let (c0, a0, t0) = (cpu_seconds(pid)?, cpu_seconds(apiserver_pid)?, Instant::now());
    let (intervals, conns) = probe_cadence(pg_cfg, WINDOW).await?;
    let (c1, a1, secs) = (cpu_seconds(pid)?, cpu_seconds(apiserver_pid)?, t0.elapsed().as_secs_f64());
    let m1 = tokio::task::block_in_place(|| scrape(kubeconfig))?;
    let rss = rss_mib(pid)?;
    let mut api_rps = BTreeMap::new();
    for (k, v1) in &m1 {
        let d = v1 - m0.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            api_rps.insert(k.clone(), d / secs);
        }
    }
    let list = api.list(&ListParams::default()).await?;
    let mut healthy = 0;
    let mut not_healthy = BTreeMap::new();
    for d in &list.items {
        match d.status.as_ref().and_then(|s| s.phase) {
            Some(understudy::crd::Phase::Healthy) => healthy += 1,
            other => *not_healthy.entry(format!("{other:?}")).or_insert(0) += 1,
        }
    }
    Ok(Window {
        pairs,
        seconds: secs,
        rss_mib: rss,
        cpu_pct: 100.0 * (c1 - c0) / secs,
        apiserver_cpu_pct: 100.0 * (a1 - a0) / secs,
        api_rps_total: api_rps.values().sum(),
        api_rps,
        probe_interval_p50: quantile(&intervals, 0.5),
        probe_interval_p99: quantile(&intervals, 0.99),
        probe_interval_max: quantile(&intervals, 1.0),
        probe_intervals: intervals.len(),
        probe_connections: conns,
        healthy,
        not_healthy,
    })
}

/// Runs the footprint measurement with `pairs` pairs.
pub async fn run(pairs: usize, log: &mut impl FnMut(String)) -> Result<Footprint> {
    let binary = release_binary()?;
    let max_connections = (pairs + 60).max(200);
    let mut pg = tokio::task::spawn_blocking(|| PgPair::start("bench-fp")).await??;
    // One cached probe connection per (pair, site): each server needs room for `pairs` of them.
    // The standby first (a hot standby needs max_connections >= the primary's).
    tokio::task::block_in_place(|| -> Result<()> {
        for srv in [&mut pg.standby, &mut pg.primary] {
            let conf = srv.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf)?;
            text.push_str(&format!("max_connections = {max_connections}\n"));
            std::fs::write(&conf, text)?;
            srv.stop();
            srv.start()?;
        }
        pg.wait_streaming(Duration::from_secs(60))
    })?;
    let client = support::client_with_crd().await?;
    let cp = support::control_plane();
    let ns = support::namespace(&client, "bench-fp").await?;
    support::pair_secrets(&client, &ns, &pg).await?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);
    support::create_pair(&client, &ns, &pair_yaml("fp-0000", &pg)).await?;

    let mut cmd = Command::new(&binary);
    cmd.args([
        "run",
        "--namespace",
        &ns,
        "--site",
        "west",
        "--instance",
        &format!("bench-{ns}"),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .env("KUBECONFIG", &cp.kubeconfig)
    .env("UNDERSTUDY_LOG", "info");
    let ctl = Proc::spawn("understudy", cmd, &pg.dir.join("understudy-footprint.log"))?;
    support::wait_for("pair fp-0000 Healthy", Duration::from_secs(60), || async {
        Ok(api.get("fp-0000").await?.status.and_then(|s| s.phase) == Some(understudy::crd::Phase::Healthy))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut pg_cfg = tokio_postgres::Config::new();
    pg_cfg
        .host("127.0.0.1")
        .port(pg.primary.port)
        .dbname("postgres")
        .user(&pg.user)
        .password(&pg.password)
        .application_name("understudy-bench");
    log(format!("footprint: idle window ({}s, 1 pair)", WINDOW.as_secs()));
    let idle = measure(&ctl, cp.apiserver_pid(), &cp.kubeconfig, &pg_cfg, &api, 1).await?;

    log(format!("footprint: creating {} more pairs through the API server", pairs - 1));
    let t0 = Instant::now();
    let results: Vec<Result<DisasterRecoveryPair>> = futures::stream::iter(1..pairs)
        .map(|i| {
            let (client, ns, yaml) = (client.clone(), ns.clone(), pair_yaml(&format!("fp-{i:04}"), &pg));
            async move { support::create_pair(&client, &ns, &yaml).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e.context("create footprint pairs"));
    }
    let create_seconds = t0.elapsed().as_secs_f64();
    // Until every pair has a status (bounded): how long the controller takes to reach them all.
    let mut observed = 0;
    let mut all_observed_seconds = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let list = api.list(&ListParams::default()).await?;
        observed = list.items.iter().filter(|d| d.status.as_ref().and_then(|s| s.phase).is_some()).count();
        if observed >= pairs {
            all_observed_seconds = Some(t0.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    log(format!(
        "footprint: {observed}/{pairs} pairs have a status after {:.0}s; settling 10s, then the loaded window",
        t0.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let loaded = measure(&ctl, cp.apiserver_pid(), &cp.kubeconfig, &pg_cfg, &api, pairs).await?;
    drop(ctl);
    Ok(Footprint {
        binary: binary.display().to_string(),
        idle,
        loaded,
        create_seconds,
        all_observed_seconds,
        observed,
        max_connections,
    })
}
