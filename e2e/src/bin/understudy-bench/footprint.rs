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

use understudy_e2e::{
    pair::{Failover, Manual, Pair},
    sandbox::{proc::Proc, repo_root, PgPair},
    support,
};

use crate::measure::{cpu_seconds, http_get, rss_mib};

/// The measurement window.
pub const WINDOW: Duration = Duration::from_secs(30);

/// The failover settings of every footprint pair (Manual: probing is the same as Automatic, and
/// a thousand pairs sharing one PostgreSQL pair must never promote it), as the report states them.
pub const FAILOVER: &str =
    "mode: Manual, probeInterval: 1s, probeTimeout: 1s, failureThreshold: 3, maxLagBytes: 16Mi";

/// `FAILOVER`, as the pairs get it.
pub fn failover(f: Failover) -> Failover {
    f.mode(Manual).probe_interval("1s").probe_timeout("1s").failure_threshold(3).max_lag_bytes("16Mi")
}

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
    /// Reconcile duration quantiles over the window, from the controller's own histogram
    /// (`understudy_reconcile_duration_seconds`, interpolated within its buckets).
    pub reconcile_p50: Option<f64>,
    pub reconcile_p99: Option<f64>,
    /// p99 of each phase of a steady round over the window (`understudy_reconcile_phase_seconds`).
    pub phase_p99: BTreeMap<String, f64>,
    /// Reconciles in the window, and the mean time between two probe rounds of one pair.
    pub reconciles: f64,
    pub mean_round_interval: Option<f64>,
    /// Probe connections the controller held on the primary at the end of the window.
    pub probe_connections: usize,
    /// Pairs whose status said Healthy / anything else after the window.
    pub healthy: usize,
    pub not_healthy: BTreeMap<String, usize>,
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

/// The controller `binary` as a process for namespace `ns` (`--site west`, the standby site's, so
/// no leader key is kept), logging to `log`; with the port of its `/metrics`.
pub fn spawn_controller(
    binary: &std::path::Path,
    ns: &str,
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
) -> Result<(Proc, u16)> {
    spawn_controller_at(binary, ns, kubeconfig, log, Some("west"))
}

/// As `spawn_controller`, with `--site` given (`None`: one controller acting on both sites).
pub fn spawn_controller_at(
    binary: &std::path::Path,
    ns: &str,
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    site: Option<&str>,
) -> Result<(Proc, u16)> {
    let metrics_port = understudy_e2e::sandbox::proc::free_port()?;
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--namespace", ns, "--instance", &format!("bench-{ns}")])
        .args(site.map(|s| ["--site", s]).into_iter().flatten())
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("KUBECONFIG", kubeconfig)
        .env("UNDERSTUDY_LOG", "info");
    Ok((Proc::spawn("understudy", cmd, log)?, metrics_port))
}

/// Footprint pair `name`: the bare PostgreSQL pair `pg`, nothing to rewrite or flip.
fn pair(name: &str, pg: &PgPair) -> Pair {
    Pair::on(name, pg, "pg-admin").failover(failover)
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
    // The API server's /metrics is large and slow to render at 1,000 pairs on a loaded machine:
    // a longer limit than http_get's 3 s (a later -m wins).
    let (code, body) = http_get(&format!("{server}/metrics"), &["-m", "20", "--cacert", &ca, "-H", &auth])?;
    if code != 200 {
        bail!("kube-apiserver /metrics answered {code}");
    }
    Ok(request_totals(&body))
}

/// The phases of a steady round the controller times (`understudy_reconcile_phase_seconds`).
pub const PHASES: [&str; 5] = ["read", "observe", "effects", "write", "start"];

/// Cumulative bucket counts by upper bound, and the total, of a histogram series.
pub type Buckets = (Vec<(f64, f64)>, f64);

/// The controller's reconcile histogram and its per-phase histograms (by phase), from one scrape.
fn reconcile_histograms(metrics_port: u16) -> Result<(Buckets, BTreeMap<&'static str, Buckets>)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .context("curl the controller's /metrics")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let whole = histogram_series(&text, "understudy_reconcile_duration_seconds", &[]);
    let phases = PHASES
        .iter()
        .map(|p| (*p, histogram_series(&text, "understudy_reconcile_phase_seconds", &[("phase", p)])))
        .collect();
    Ok((whole, phases))
}

/// The controller's reconcile histogram (cumulative counts by upper bound) and its count.
pub fn reconcile_histogram(metrics_port: u16) -> Result<Buckets> {
    Ok(reconcile_histograms(metrics_port)?.0)
}

/// One histogram series of `name`: the one whose labels other than `le` are exactly `labels`
/// (`[("phase", "observe")]`; none for an unlabelled histogram), whatever their order.
fn histogram_series(text: &str, name: &str, labels: &[(&str, &str)]) -> Buckets {
    let (bucket, count) = (format!("{name}_bucket"), format!("{name}_count"));
    let mut buckets = Vec::new();
    let mut total = 0.0;
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, set) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != bucket && metric != count {
            continue;
        }
        let mut le = None;
        let mut others: Vec<(&str, &str)> = Vec::new();
        for kv in set.split(',').filter(|kv| !kv.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let v = v.trim_matches('"');
            if k == "le" {
                le = Some(v);
            } else {
                others.push((k, v));
            }
        }
        others.sort();
        let mut want = labels.to_vec();
        want.sort();
        if others != want {
            continue;
        }
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        match le {
            Some(le) if metric == bucket => buckets.push((
                if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) },
                value,
            )),
            None if metric == count => total = value,
            _ => {}
        }
    }
    (buckets, total)
}

/// The `q` quantile of the reconciles between two histogram scrapes, linear within a bucket.
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| (*le, c - before.iter().find(|(l, _)| l == le).map(|(_, c)| *c).unwrap_or(0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, cum) in delta {
        if cum >= rank {
            if !le.is_finite() {
                return Some(lo);
            }
            let inside = (cum - below).max(1.0);
            return Some(lo + (le - lo) * ((rank - below) / inside).clamp(0.0, 1.0));
        }
        (lo, below) = (le, cum);
    }
    None
}

/// Probe connections the controller holds on a server.
async fn probe_connections(cfg: &tokio_postgres::Config) -> Result<usize> {
    let (c, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    let rows =
        c.simple_query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'understudy'").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0))
}

async fn measure(
    ctl: &Proc,
    metrics_port: u16,
    apiserver_pid: u32,
    kubeconfig: &std::path::Path,
    pg_cfg: &tokio_postgres::Config,
    api: &Api<DisasterRecoveryPair>,
    pairs: usize,
) -> Result<Window> {
    let pid = ctl.pid();
    let m0 = tokio::task::block_in_place(|| scrape(kubeconfig))?;
    let (h0, p0) = tokio::task::block_in_place(|| reconcile_histograms(metrics_port))?;
    let (c0, a0, t0) = (cpu_seconds(pid)?, cpu_seconds(apiserver_pid)?, Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (c1, a1, secs) = (cpu_seconds(pid)?, cpu_seconds(apiserver_pid)?, t0.elapsed().as_secs_f64());
    let (h1, p1) = tokio::task::block_in_place(|| reconcile_histograms(metrics_port))?;
    let phase_p99 = p1
        .iter()
        .filter_map(|(p, after)| {
            let before = p0.get(p).map(|b| b.0.as_slice()).unwrap_or(&[]);
            Some((p.to_string(), histogram_quantile(before, &after.0, 0.99)?))
        })
        .collect();
    let m1 = tokio::task::block_in_place(|| scrape(kubeconfig))?;
    let conns = probe_connections(pg_cfg).await?;
    let reconciles = h1.1 - h0.1;
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
        reconcile_p50: histogram_quantile(&h0.0, &h1.0, 0.5),
        reconcile_p99: histogram_quantile(&h0.0, &h1.0, 0.99),
        phase_p99,
        reconciles,
        mean_round_interval: (reconciles > 0.0).then(|| pairs as f64 * secs / reconciles),
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
    // Room for one probe connection per (pair, site), as older controllers held (today they are
    // shared per server and login). The standby first (a hot standby needs max_connections >= the primary's).
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
    pair("fp-0000", &pg).create(&client, &ns).await?;

    let (ctl, metrics_port) =
        spawn_controller(&binary, &ns, &cp.kubeconfig, &pg.dir.join("understudy-footprint.log"))?;
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
    let idle = measure(&ctl, metrics_port, cp.apiserver_pid(), &cp.kubeconfig, &pg_cfg, &api, 1).await?;

    log(format!("footprint: creating {} more pairs through the API server", pairs - 1));
    let t0 = Instant::now();
    let results: Vec<Result<DisasterRecoveryPair>> = futures::stream::iter(1..pairs)
        .map(|i| {
            let (client, ns, pair) = (client.clone(), ns.clone(), pair(&format!("fp-{i:04}"), &pg));
            async move { pair.create(&client, &ns).await }
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
    let loaded =
        measure(&ctl, metrics_port, cp.apiserver_pid(), &cp.kubeconfig, &pg_cfg, &api, pairs).await?;
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

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    #[test]
    fn a_labelled_series_is_read_whatever_the_label_order() {
        let text = "x_bucket{le=\"0.001\",phase=\"read\"} 2\nx_bucket{le=\"+Inf\",phase=\"read\"} 3\n\
                    x_bucket{le=\"0.001\",phase=\"write\"} 9\nx_count{phase=\"read\"} 3\nx_count{phase=\"write\"} 9\n\
                    y_bucket{le=\"0.5\"} 4\ny_count 4\n";
        let (b, n) = super::histogram_series(text, "x", &[("phase", "read")]);
        assert_eq!((b, n), (vec![(0.001, 2.0), (f64::INFINITY, 3.0)], 3.0));
        assert_eq!(super::histogram_series(text, "y", &[]), (vec![(0.5, 4.0)], 4.0));
        assert_eq!(super::histogram_series(text, "x", &[]), (vec![], 0.0));
    }

    #[test]
    fn quantiles_of_the_reconciles_between_two_scrapes() {
        let before = [(0.001, 10.0), (0.002, 10.0), (0.004, 10.0), (f64::INFINITY, 10.0)];
        // 100 more reconciles: 50 under 1 ms, 40 in (1, 2] ms, 10 in (2, 4] ms.
        let after = [(0.001, 60.0), (0.002, 100.0), (0.004, 110.0), (f64::INFINITY, 110.0)];
        assert_eq!(histogram_quantile(&before, &after, 0.5), Some(0.001));
        let p99 = histogram_quantile(&before, &after, 0.99).expect("p99");
        assert!((0.0038..=0.004).contains(&p99), "{p99}");
        assert_eq!(histogram_quantile(&after, &after, 0.5), None, "no reconciles, no quantile");
    }
}
