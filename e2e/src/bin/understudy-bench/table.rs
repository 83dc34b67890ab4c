//! Every table the bench prints, each as Markdown (`target/bench/bench.md`) and as aligned text
//! (stdout): the cells (`median (min–max)`), the rows of each table, its header and its notes.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    footprint::Footprint,
    patroni::{self, Timing},
    switchover::{self, Run},
    two_site, understudy_failover as us,
};

/// One table: a measurement column and three systems' columns, and footnotes.
pub struct Table {
    pub head: [String; 4],
    pub rows: Vec<[String; 4]>,
    pub notes: String,
}

impl Table {
    /// Appends the table, Markdown to `md` and aligned text to `text`, each with the notes.
    pub fn render(&self, md: &mut String, text: &mut String) {
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| r.to_vec()).collect();
        render_grid(&self.head, &rows, &self.notes, md, text);
    }
}

/// A table with any number of columns (the first names the measurement).
pub struct Grid {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: String,
}

impl Grid {
    /// As `Table::render`.
    pub fn render(&self, md: &mut String, text: &mut String) {
        render_grid(&self.head, &self.rows, &self.notes, md, text);
    }
}

/// Renders a header and rows of as many cells as the header, Markdown to `md` and aligned text to
/// `text`, each followed by `notes`.
fn render_grid(head: &[String], rows: &[Vec<String>], notes: &str, md: &mut String, text: &mut String) {
    let n = head.len();
    let _ = writeln!(md, "\n| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(n));
    for r in rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    let _ = write!(md, "\n{notes}");
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    text.push('\n');
    text.push_str(line(head).trim_end());
    text.push('\n');
    text.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    text.push('\n');
    for r in rows {
        text.push_str(line(r).trim_end());
        text.push('\n');
    }
    text.push_str(notes);
}

/// `median (min–max)` of a set of samples; `None` when there are none.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Summary { n, median, min: v[0], max: v[n - 1] })
    }

    /// Formatted with `digits` decimals and a unit suffix (e.g. " s").
    pub fn fmt(&self, digits: usize, unit: &str) -> String {
        format!("{:.d$}{unit} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = digits)
    }
}

/// Formats an optional summary, `–` when missing, with `n=` appended when fewer samples than `runs`.
pub fn cell(s: Option<Summary>, digits: usize, unit: &str, runs: usize) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n < runs => format!("{} n={}", s.fmt(digits, unit), s.n),
        Some(s) => s.fmt(digits, unit),
    }
}

/// The summary of the samples present.
fn summary(v: impl Iterator<Item = Option<f64>>) -> Option<Summary> {
    Summary::of(&v.flatten().collect::<Vec<_>>())
}

/// The ratio of two medians, `–` when either is missing.
fn ratio(u: Option<Summary>, p: Option<Summary>) -> String {
    match (u, p) {
        (Some(u), Some(p)) if p.median > 0.0 => format!("{:.2}", u.median / p.median),
        _ => "–".into(),
    }
}

/// The difference of two medians in seconds, `–` when either is missing.
fn diff(u: Option<Summary>, p: Option<Summary>) -> String {
    match (u, p) {
        (Some(u), Some(p)) => format!("{:+.2} s", u.median - p.median),
        _ => "–".into(),
    }
}

/// The journal steps of understudy runs, in order of first appearance: (name, its outcomes joined
/// by `/`, the summary of its durations).
fn steps<'a>(runs: impl Iterator<Item = &'a us::Run> + Clone) -> Vec<(String, String, Option<Summary>)> {
    let mut names: Vec<String> = Vec::new();
    for r in runs.clone() {
        for (name, _, _) in &r.steps {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let outcomes: std::collections::BTreeSet<&str> = runs
                .clone()
                .flat_map(|r| r.steps.iter().filter(|(n, _, _)| *n == name).map(|(_, _, o)| o.as_str()))
                .collect();
            let v = summary(
                runs.clone().map(|r| r.steps.iter().find(|(n, _, _)| *n == name).and_then(|(_, d, _)| *d)),
            );
            let outcomes = outcomes.into_iter().collect::<Vec<_>>().join("/");
            (name, outcomes, v)
        })
        .collect()
}

/// The failover runs the tables are made of.
pub struct Runs<'a> {
    /// Runs per configuration asked for (a cell says `n=` when it has fewer).
    pub runs: usize,
    /// understudy with one controller.
    pub us: &'a [us::Run],
    /// understudy with one controller per site, by `Topology::key`.
    pub two: &'a BTreeMap<String, Vec<us::Run>>,
    /// Patroni's, by `<timing>/<scenario>`.
    pub pat: &'a BTreeMap<String, Vec<patroni::Run>>,
    /// Patroni's aggressive timing as measured (after a fallback, if it had one).
    pub aggressive: Timing,
}

impl Runs<'_> {
    fn pat(&self, key: &str) -> &[patroni::Run] {
        self.pat.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn pat_write(&self, key: &str) -> Option<Summary> {
        summary(self.pat(key).iter().map(|r| r.kill_to_write))
    }

    fn pat_decision(&self, key: &str) -> Option<Summary> {
        summary(self.pat(key).iter().map(|r| r.kill_to_decision))
    }

    fn pat_after_decision(&self, key: &str) -> Option<Summary> {
        summary(self.pat(key).iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)))
    }

    fn us_write(&self) -> Option<Summary> {
        summary(self.us.iter().map(|r| r.kill_to_write))
    }

    fn us_cutover(&self) -> Option<Summary> {
        summary(self.us.iter().map(|r| r.kill_to_dns.zip(r.kill_to_decision).map(|(d, k)| d - k)))
    }

    /// The main table: one-controller failovers next to Patroni's (with `failover`), and the
    /// controller's footprint (with `fp`); `None` when it has neither.
    pub fn failover(&self, failover: bool, fp: Option<&Footprint>) -> Option<Table> {
        let n = self.runs;
        let c = |x: Option<Summary>| cell(x, 2, " s", n);
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |m: &str, u: String, d: String, g: String| rows.push([m.into(), u, d, g]);
        let dash = String::new;
        if failover {
            let uw = self.us_write();
            row(
                "(a) primary postmaster SIGKILL → first write acked on the new primary",
                c(uw),
                c(self.pat_write("defaults/a-failover")),
                c(self.pat_write("aggressive/a-failover")),
            );
            row(
        "(a′) same kill, Patroni restarts the postmaster in place (primary_start_timeout 300) → first write",
        "– (never restarts in place)".into(),
        c(self.pat_write("defaults/a-restart")),
        c(self.pat_write("aggressive/a-restart")),
    );
            row(
                "(b) node loss (Patroni + postmaster SIGKILLed) → first write acked on the new primary",
                format!("{} ¹", c(uw)),
                c(self.pat_write("defaults/b-node-loss")),
                c(self.pat_write("aggressive/b-node-loss")),
            );
            row(
                "ratio understudy / Patroni (a), medians",
                "".into(),
                ratio(uw, self.pat_write("defaults/a-failover")),
                ratio(uw, self.pat_write("aggressive/a-failover")),
            );
            row(
                "ratio understudy / Patroni (b), medians",
                "".into(),
                ratio(uw, self.pat_write("defaults/b-node-loss")),
                ratio(uw, self.pat_write("aggressive/b-node-loss")),
            );
            row(
                "kill → failover decided (understudy: TakeEpoch start; Patroni: leader-lock log line) (a)",
                c(summary(self.us.iter().map(|r| r.kill_to_decision))),
                c(self.pat_decision("defaults/a-failover")),
                c(self.pat_decision("aggressive/a-failover")),
            );
            row(
                "kill → failover decided (b)",
                format!("{} ¹", c(summary(self.us.iter().map(|r| r.kill_to_decision)))),
                c(self.pat_decision("defaults/b-node-loss")),
                c(self.pat_decision("aggressive/b-node-loss")),
            );
            row(
                "decided → first write acked (understudy: through PgBouncer; Patroni: multi-host DSN) (a)",
                c(summary(
                    self.us.iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)),
                )),
                c(self.pat_after_decision("defaults/a-failover")),
                c(self.pat_after_decision("aggressive/a-failover")),
            );
            row(
                "decided → first write acked (b)",
                "same as (a) ¹".into(),
                c(self.pat_after_decision("defaults/b-node-loss")),
                c(self.pat_after_decision("aggressive/b-node-loss")),
            );
            let cut = self.us_cutover();
            row(
        "equal detection: understudy whole cutover (decided → DNS confirmed) − Patroni DB-only promotion (decided → write) (a)",
        c(cut),
        diff(cut, self.pat_after_decision("defaults/a-failover")),
        diff(cut, self.pat_after_decision("aggressive/a-failover")),
    );
            row(
                "equal detection: same difference (b)",
                "".into(),
                diff(cut, self.pat_after_decision("defaults/b-node-loss")),
                diff(cut, self.pat_after_decision("aggressive/b-node-loss")),
            );
            row(
                "understudy: kill → first failed probe",
                c(summary(self.us.iter().map(|r| r.kill_to_first_failed_probe))),
                dash(),
                dash(),
            );
            row(
                "understudy: detection window (first failed probe → TakeEpoch start)",
                c(summary(self.us.iter().map(|r| r.detection))),
                dash(),
                dash(),
            );
            for (name, outcomes, v) in steps(self.us.iter()) {
                row(&format!("understudy step {name} ({outcomes})"), cell(v, 3, " s", n), dash(), dash());
            }
            row(
                "understudy: controller's share (TakeEpoch start → last step end)",
                c(summary(self.us.iter().map(|r| r.controller_share))),
                dash(),
                dash(),
            );
            row(
                "understudy: RTO (rtoSeconds: first failed probe → DNS confirmed)",
                c(summary(self.us.iter().map(|r| r.rto))),
                dash(),
                dash(),
            );
            row(
                "lost WAL bytes (understudy: lostWalBytes)",
                cell(summary(self.us.iter().map(|r| r.lost_wal_bytes.map(|b| b as f64))), 0, " B", n),
                dash(),
                dash(),
            );
            let lost = |v: &[patroni::Run]| {
                cell(Summary::of(&v.iter().map(|r| r.lost_acked as f64).collect::<Vec<_>>()), 0, "", n)
            };
            row(
                "lost acknowledged commits (a) (acked ids missing on the new primary)",
                cell(Summary::of(&self.us.iter().map(|r| r.lost_acked as f64).collect::<Vec<_>>()), 0, "", n),
                lost(self.pat("defaults/a-failover")),
                lost(self.pat("aggressive/a-failover")),
            );
            row(
                "lost acknowledged commits (b)",
                "same as (a) ¹".into(),
                lost(self.pat("defaults/b-node-loss")),
                lost(self.pat("aggressive/b-node-loss")),
            );
        }
        if let Some(f) = fp {
            let (i, l) = (&f.idle, &f.loaded);
            let both = |x: f64, y: f64, unit: &str, d: usize| format!("{x:.d$}{unit} / {y:.d$}{unit}");
            let pct = |x: Option<f64>| x.map(|x| format!("{x:.3} s")).unwrap_or_else(|| "–".into());
            let m = format!("(1 pair / {} pairs)", l.pairs);
            row(&format!("controller RSS {m}"), both(i.rss_mib, l.rss_mib, " MiB", 1), dash(), dash());
            row(
                &format!("controller CPU, % of one core over {:.0} s {m}", l.seconds),
                both(i.cpu_pct, l.cpu_pct, " %", 1),
                dash(),
                dash(),
            );
            row(
                &format!("kube-apiserver CPU, % of one core {m}"),
                both(i.apiserver_cpu_pct, l.apiserver_cpu_pct, " %", 1),
                dash(),
                dash(),
            );
            row(
                &format!("API requests/s sent by the controller {m}"),
                both(i.api_rps_total, l.api_rps_total, "", 1),
                dash(),
                dash(),
            );
            let top: Vec<String> = l.api_rps.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            row(&format!("  of which at {} pairs", l.pairs), top.join(", "), dash(), dash());
            row(
                &format!("probe round interval per pair, mean at {} pairs (probeInterval 1 s) ²", l.pairs),
                format!(
                    "{} ({:.0} reconciles in {:.0} s)",
                    pct(l.mean_round_interval),
                    l.reconciles,
                    l.seconds
                ),
                dash(),
                dash(),
            );
            row(
                &format!("reconcile duration p50 / p99 at {} pairs ²", l.pairs),
                format!("{} / {}", pct(l.reconcile_p50), pct(l.reconcile_p99)),
                dash(),
                dash(),
            );
            let phases: Vec<String> = crate::footprint::PHASES
                .iter()
                .filter_map(|p| l.phase_p99.get(*p).map(|v| format!("{p} {v:.3} s")))
                .collect();
            row(
                &format!("  p99 of each phase of a round at {} pairs ³", l.pairs),
                phases.join(", "),
                dash(),
                dash(),
            );
            row(
                "reconcile duration p50 / p99 at 1 pair ²",
                format!("{} / {}", pct(i.reconcile_p50), pct(i.reconcile_p99)),
                dash(),
                dash(),
            );
            row(
                &format!(
                    "pairs Healthy after the window; probe connections held on the primary ({} pairs)",
                    l.pairs
                ),
                format!(
                    "{} Healthy{}; {} connections",
                    l.healthy,
                    l.not_healthy.iter().map(|(k, v)| format!(", {v} {k}")).collect::<String>(),
                    l.probe_connections
                ),
                dash(),
                dash(),
            );
        }
        if rows.is_empty() {
            return None;
        }
        let mut notes = String::new();
        if failover {
            notes.push_str("¹ understudy's node loss is the same experiment as (a): the \"node\" of the primary runs only the postmaster (the only controller runs at the standby's site), so there is nothing else to kill; the same runs are shown. With one controller per site, see the two-site table.\n");
        }
        if fp.is_some() {
            notes.push_str("² the controller's own /metrics: understudy_reconcile_duration_seconds (histogram, quantiles interpolated within its buckets) and its count over the window; the controller starts a pair's next round probeInterval after its last one began, so the round interval per pair is 1 s unless a round outlasts it or waits in the queue.\n");
            notes.push_str("³ understudy_reconcile_phase_seconds: read (the pair from the watch cache), observe (Secrets and both probes), effects (keeper, witness, readiness every 30 s), write (status and Events), start (a transition, or the requeue).\n");
        }
        Some(Table {
            head: [
                "measurement".to_string(),
                "understudy".to_string(),
                format!("Patroni {}", Timing::DEFAULTS.label()),
                format!("Patroni {}", self.aggressive.label()),
            ],
            rows,
            notes,
        })
    }

    /// The two-site table: failovers with one controller per site, for each leader-key lease TTL,
    /// next to Patroni's (a) and (b).
    pub fn two_site(&self, ttls: &[u32]) -> Table {
        let runs = self.runs;
        let c = |x: Option<Summary>| cell(x, 2, " s", runs);
        let get = |k: &str| self.two.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let pat = |k: &str| self.pat(k);
        let pw = |k: &str| self.pat_write(k);
        let pd = |k: &str| self.pat_decision(k);
        let pad = |k: &str| self.pat_after_decision(k);
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |m: String, u: String, d: String, g: String| rows.push([m, u, d, g]);
        let e = String::new;
        let scen = [
            ("(a)", "primary postmaster SIGKILL", "a-failover"),
            ("(b)", "node loss (east controller + postmaster SIGKILLed)", "b-node-loss"),
            (
                "(c)",
                "black-holed node (east controller SIGSTOPped, PostgreSQL port DROPped, no RST)",
                "c-black-hole",
            ),
        ];
        for &ttl in ttls {
            let keys = two_site::keys(ttl);
            for ((tag, what, pk), key) in scen.iter().zip(&keys) {
                let r = get(key);
                let w = summary(r.iter().map(|r| r.kill_to_write));
                row(
                    format!("{tag} leaseTTL {ttl} s: {what} → first write acked on the new primary"),
                    c(w),
                    c(pw(&format!("defaults/{pk}"))),
                    c(pw(&format!("aggressive/{pk}"))),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s: ratio understudy two-site / Patroni, medians"),
                    e(),
                    ratio(w, pw(&format!("defaults/{pk}"))),
                    ratio(w, pw(&format!("aggressive/{pk}"))),
                );
                for (p, col) in [(Timing::DEFAULTS, 2usize), (self.aggressive, 3)] {
                    if p.ttl != ttl {
                        continue;
                    }
                    let pk = format!("{}/{pk}", if col == 2 { "defaults" } else { "aggressive" });
                    let mut cells = [e(), e()];
                    cells[col - 2] = match (w, pw(&pk)) {
                        (Some(u), Some(q)) => format!(
                            "{:+.2} s (understudy {:.2} s vs Patroni {:.2} s)",
                            u.median - q.median,
                            u.median,
                            q.median
                        ),
                        _ => "–".into(),
                    };
                    let [d, g] = cells;
                    row(
                        format!("{tag} equal detection window (leaseTTL {ttl} s = Patroni ttl {ttl} s): understudy two-site − Patroni, kill → first write, medians"),
                        c(w),
                        d,
                        g,
                    );
                }
                row(
                    format!("{tag} leaseTTL {ttl} s: kill → failover decided (understudy: TakeEpoch start; Patroni: leader-lock log line)"),
                    c(summary(r.iter().map(|r| r.kill_to_decision))),
                    c(pd(&format!("defaults/{pk}"))),
                    c(pd(&format!("aggressive/{pk}"))),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s: decided → first write acked (understudy: through PgBouncer; Patroni: multi-host DSN)"),
                    c(summary(r.iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)))),
                    c(pad(&format!("defaults/{pk}"))),
                    c(pad(&format!("aggressive/{pk}"))),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s:   kill → first failed probe"),
                    c(summary(r.iter().map(|r| r.kill_to_first_failed_probe))),
                    e(),
                    e(),
                );
                if tag == &"(a)" {
                    let released = r
                        .iter()
                        .filter(|r| r.east_gave_up.as_deref().is_some_and(|m| m.contains("key released")))
                        .count();
                    let expire = r
                        .iter()
                        .filter(|r| r.east_gave_up.as_deref().is_some_and(|m| m.contains("left to expire")))
                        .count();
                    row(
                        format!("{tag} leaseTTL {ttl} s:   kill → east gives up the key (its probes failed; key released / left to expire)"),
                        format!("{}; {released} / {expire}", c(summary(r.iter().map(|r| r.kill_to_east_gave_up)))),
                        e(),
                        e(),
                    );
                }
                row(
                    format!("{tag} leaseTTL {ttl} s:   kill → leader key gone from etcd (the lease wait) ⁴"),
                    c(summary(r.iter().map(|r| r.kill_to_key_gone))),
                    e(),
                    e(),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s:   east's last renewal reaching etcd (key gone − leaseTTL), since the kill ⁴"),
                    c(summary(r.iter().map(|r| r.kill_to_key_gone.map(|g| g - f64::from(ttl))))),
                    e(),
                    e(),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s:   key gone → TakeEpoch start (west's next reconcile wins the swap)"),
                    c(summary(r.iter().map(|r| r.key_gone_to_decision))),
                    e(),
                    e(),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s:   decided → DNS confirmed (the controller's share)"),
                    c(summary(r.iter().map(|r| r.controller_share))),
                    e(),
                    e(),
                );
                row(
                    format!("{tag} leaseTTL {ttl} s:   RTO (rtoSeconds: first failed probe → DNS confirmed)"),
                    c(summary(r.iter().map(|r| r.rto))),
                    e(),
                    e(),
                );
                let lost = |v: Vec<f64>| cell(Summary::of(&v), 0, "", runs);
                row(
                    format!("{tag} leaseTTL {ttl} s: lost acknowledged commits (understudy: + lostWalBytes)"),
                    format!(
                        "{}; {}",
                        lost(r.iter().map(|r| r.lost_acked as f64).collect()),
                        cell(summary(r.iter().map(|r| r.lost_wal_bytes.map(|b| b as f64))), 0, " B", runs)
                    ),
                    lost(pat(&format!("defaults/{pk}")).iter().map(|r| r.lost_acked as f64).collect()),
                    lost(pat(&format!("aggressive/{pk}")).iter().map(|r| r.lost_acked as f64).collect()),
                );
            }
        }
        // Steps after the decision do not depend on the lease: pooled over every two-site run.
        let pooled = ttls.len() * scen.len() * runs;
        for (name, outcomes, v) in steps(self.two.values().flatten()) {
            row(
                format!("two-site step {name} ({outcomes}), every two-site run pooled"),
                cell(v, 3, " s", pooled),
                e(),
                e(),
            );
        }
        Table {
            head: [
                "measurement (failover, one controller per site)".to_string(),
                "understudy two-site".to_string(),
                format!("Patroni {}", Timing::DEFAULTS.label()),
                format!("Patroni {}", self.aggressive.label()),
            ],
            rows,
            notes: TWO_SITE_NOTES.into(),
        }
    }
}

/// The switchover table: measurement, understudy, Patroni via PgBouncer, Patroni multi-host (`–`
/// without `patroni`).
pub fn switchover(rep: &switchover::Report, runs: usize, patroni: bool) -> Table {
    let head = [
        "planned switchover".to_string(),
        "understudy (client via PgBouncer, repointed by the controller)".to_string(),
        "Patroni, client via PgBouncer (repointed by on_role_change)".to_string(),
        "Patroni, client multi-host DSN (target_session_attrs=read-write)".to_string(),
    ];
    let cols: [(&str, &[Run]); 3] = [
        ("understudy", &rep.understudy),
        ("patroni_pgbouncer", &rep.patroni_pgbouncer),
        ("patroni_multihost", &rep.patroni_multihost),
    ];
    let sum =
        |v: &[Run], f: &dyn Fn(&Run) -> Option<f64>| Summary::of(&v.iter().filter_map(f).collect::<Vec<_>>());
    let na = |i: usize| i > 0 && !patroni;
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |m: &str, f: &dyn Fn(usize, &[Run]) -> String| {
        let c: Vec<String> =
            cols.iter().enumerate().map(|(i, (_, v))| if na(i) { "–".into() } else { f(i, v) }).collect();
        rows.push([m.to_string(), c[0].clone(), c[1].clone(), c[2].clone()]);
    };
    let gap = |r: &Run| Some(r.gap);
    let write = |r: &Run| r.request_to_write;
    row("write-unavailability window: longest gap between two acknowledged commits in [request − 1 s, end of run] ¹", &|_, v| {
        cell(sum(v, &gap), 3, " s", runs)
    });
    let ratio_of = |f: &dyn Fn(&Run) -> Option<f64>, i: usize, v: &[Run]| -> String {
        if i == 0 {
            return String::new();
        }
        ratio(sum(&rep.understudy, f), sum(v, f))
    };
    row("ratio understudy / Patroni, write-unavailability window (medians)", &|i, v| ratio_of(&gap, i, v));
    row(
        "request → first commit acknowledged by the new primary (inet_server_port() of the ack)",
        &|_, v| cell(sum(v, &write), 3, " s", runs),
    );
    row("ratio understudy / Patroni, request → first write on the new primary (medians)", &|i, v| {
        ratio_of(&write, i, v)
    });
    row("request → the system's own \"done\" ²", &|_, v| {
        cell(sum(v, &|r| r.request_to_done), 3, " s", runs)
    });
    row(
        "request → promotion began (understudy: Promote step; Patroni: \"promoted self to leader\" log line)",
        &|_, v| cell(sum(v, &|r| r.request_to_promote), 3, " s", runs),
    );
    row(
        "request → PgBouncer repointed (understudy: Recycle step start; Patroni: on_role_change ran)",
        &|i, v| {
            if i == 2 {
                return "– (no PgBouncer)".into();
            }
            cell(sum(v, &|r| r.request_to_repoint), 3, " s", runs)
        },
    );
    row("gap position relative to the request: last ack before → first ack after (medians)", &|_, v| match (
        sum(v, &|r| Some(r.gap_from)),
        sum(v, &|r| Some(r.gap_to)),
    ) {
        (Some(a), Some(b)) => format!("{:+.3} s → {:+.3} s", a.median, b.median),
        _ => "–".into(),
    });
    row(
        "lost acknowledged commits per switchover (acked ids missing on the new primary); total / acked",
        &|_, v| {
            format!(
                "{}; {} / {}",
                cell(sum(v, &|r| Some(r.lost_acked as f64)), 0, "", runs),
                v.iter().map(|r| r.lost_acked).sum::<usize>(),
                v.iter().map(|r| r.acked).sum::<usize>()
            )
        },
    );
    row("client errors per switchover (failed queries + failed connects); total", &|_, v| {
        format!(
            "{}; {}",
            cell(sum(v, &|r| Some(r.errors as f64)), 0, "", runs),
            v.iter().map(|r| r.errors).sum::<u64>()
        )
    });
    row("understudy: journal startedAt → finishedAt; lostWalBytes", &|i, v| {
        if i > 0 {
            return String::new();
        }
        format!(
            "{}; {}",
            cell(sum(v, &|r| r.journal), 3, " s", runs),
            cell(sum(v, &|r| r.lost_wal_bytes.map(|b| b as f64)), 0, " B", runs)
        )
    });
    row("switchovers measured / failed", &|i, v| {
        format!("{} / {}", v.len(), rep.failed.get(cols[i].0).copied().unwrap_or(0))
    });
    Table { head, rows, notes: SWITCHOVER_NOTES.into() }
}

/// Footnotes of the two-site table.
const TWO_SITE_NOTES: &str = "³ one controller per site (`--site east`, `--site west`). (a) only the primary postmaster is SIGKILLed: east's controller stays up, sees its own database fail failureThreshold probes, tries to fence it (a dead postmaster cannot be fenced: connection refused), pauses PgBouncer and leaves the key to expire (with `--fence-hook`, east's site fence hook confirms the fence instead and east releases the key at once). (b) east's controller process is SIGKILLed, then the postmaster, as Patroni's node loss kills Patroni and its postmaster. (c) a black-holed node: east's controller is SIGSTOPped and nftables drops every packet to or from the primary's PostgreSQL port (for Patroni: the member SIGSTOPped, its PostgreSQL and REST ports dropped), so probes, clients and the WAL stream hang until their own timeouts instead of getting RST; the clients' timeouts count in the first write (understudy's workload: 5 s per query through PgBouncer; Patroni's poller: 2 s per query, 1 s per connect to the dead first host). In all three, west may take the epoch only after the leader key's lease expired in etcd: that wait is there so that a primary site that is merely cut off has fenced itself before anything is promoted (no split brain), and it is the same wait Patroni's replica does for the leader lock's ttl.\n⁴ key gone = the DELETE of `<prefix>/<ns>/chat/leader` seen by `etcdctl watch`; etcd checks lease expiry every 500 ms, so it can lag the TTL by up to ~0.5 s. East's last renewal is derived (key gone − leaseTTL), as the lease restarts when a keepalive reaches etcd.\n";

/// Footnotes of the switchover table.
const SWITCHOVER_NOTES: &str = "¹ the same definition for every column: the workload's acknowledged commits, consecutive pairs, longest interval between two acks whose first ack is at most 1 s before the request; it includes the client's own retry delays (10 ms after a failed query, 50 ms after a failed connect), the same code on both sides.\n\
² understudy: lastTransition.finishedAt (after DNS and the recycles) − request; Patroni: patronictl switchover returned − request, which includes patronictl's Python start-up and Patroni's REST API polling the DCS once a second for the result (api.py poll_failover_result), so it is coarse.\n";

#[cfg(test)]
mod tests {
    use super::{cell, Summary, Table};

    #[test]
    fn a_table_renders_as_markdown_and_as_aligned_text() {
        let t = Table {
            head: ["measurement", "understudy", "Patroni", "other"].map(String::from),
            rows: vec![
                [
                    "kill → write".into(),
                    cell(Summary::of(&[1.0, 3.0, 2.0]), 2, " s", 3),
                    "–".into(),
                    "".into(),
                ],
                ["lost".into(), cell(Summary::of(&[0.0]), 0, "", 3), "0".into(), "".into()],
            ],
            notes: "¹ a note\n".into(),
        };
        let (mut md, mut text) = (String::new(), String::new());
        t.render(&mut md, &mut text);
        assert_eq!(
            md,
            "\n| measurement | understudy | Patroni | other |\n|---|---|---|---|\n\
             | kill → write | 2.00 s (1.00–3.00) | – |  |\n| lost | 0 (0–0) n=1 | 0 |  |\n\n¹ a note\n"
        );
        assert_eq!(
            text,
            "\nmeasurement  | understudy         | Patroni | other\n\
             -------------|--------------------|---------|------\n\
             kill → write | 2.00 s (1.00–3.00) | –       |\n\
             lost         | 0 (0–0) n=1        | 0       |\n¹ a note\n"
        );
    }
}
