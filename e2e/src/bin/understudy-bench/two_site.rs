//! The failover table for understudy with one controller per site (the production topology): the
//! east controller keeps the primary site's leader key on an etcd lease of `leaseTTL`, and west may
//! take the epoch only once that key is gone. The runs themselves are `understudy::run_once` with
//! `Topology::TwoSite`; this module turns them into rows next to Patroni's (a) and (b) runs.

use std::collections::BTreeMap;

use crate::{
    measure::{cell, Summary},
    patroni::{self, Timing},
    understudy_failover::{self as us, Topology},
};

/// The leader-key lease TTLs measured by default (seconds): Patroni's aggressive `ttl`, and the least
/// the pair's `probeTimeout: 1s` allows (leaseTTL ≥ 4 × probeTimeout).
pub const DEFAULT_TTLS: [u32; 2] = [10, 4];

/// Footnotes of the table.
pub const NOTES: &str = "³ one controller per site (`--site east`, `--site west`). (a) only the primary postmaster is SIGKILLed: east's controller stays up, sees its own database fail failureThreshold probes, tries to fence it (a dead postmaster cannot be fenced: connection refused), pauses PgBouncer and leaves the key to expire. (b) east's controller process is SIGKILLed, then the postmaster, as Patroni's node loss kills Patroni and its postmaster. In both, west may take the epoch only after the leader key's lease expired in etcd: that wait is there so that a primary site that is merely cut off has fenced itself before anything is promoted (no split brain), and it is the same wait Patroni's replica does for the leader lock's ttl.\n⁴ key gone = the DELETE of `<prefix>/<ns>/chat/leader` seen by `etcdctl watch`; etcd checks lease expiry every 500 ms, so it can lag the TTL by up to ~0.5 s. East's last renewal is derived (key gone − leaseTTL), as the lease restarts when a keepalive reaches etcd.\n";

/// The settings line of this part.
pub fn settings(ttls: &[u32]) -> String {
    format!(
        "understudy two-site ³: controllers --site east and --site west (target/debug/understudy as processes, bed.controller_process), the pair as above plus spec.coordination.etcd.leaseTTL {} (keepalive every leaseTTL/5, self-fence after leaseTTL/2); east holds the leader key before the kill; (a) SIGKILL of the primary postmaster; (b) SIGKILL of east's controller process, then of the primary postmaster; first write = first ack through PgBouncer after the kill and after the Promote step started, as for one controller\n",
        ttls.iter().map(|t| format!("{t}s")).collect::<Vec<_>>().join(" / ")
    )
}

/// The keys of one TTL's two scenarios.
pub fn keys(ttl: u32) -> [String; 2] {
    [
        Topology::TwoSite { lease_ttl_s: ttl, node_loss: false }.key(),
        Topology::TwoSite { lease_ttl_s: ttl, node_loss: true }.key(),
    ]
}

fn s(v: impl Iterator<Item = Option<f64>>) -> Option<Summary> {
    Summary::of(&v.flatten().collect::<Vec<_>>())
}

/// Rows (measurement, understudy two-site, Patroni defaults, Patroni aggressive).
pub fn rows(
    two: &BTreeMap<String, Vec<us::Run>>,
    ttls: &[u32],
    runs: usize,
    pat: &BTreeMap<String, Vec<patroni::Run>>,
    aggressive: Timing,
) -> Vec<[String; 4]> {
    let c = |x: Option<Summary>| cell(x, 2, " s", runs);
    let get = |k: &str| two.get(k).map(Vec::as_slice).unwrap_or(&[]);
    let pat = |k: &str| pat.get(k).map(Vec::as_slice).unwrap_or(&[]);
    let pw = |k: &str| s(pat(k).iter().map(|r| r.kill_to_write));
    let pd = |k: &str| s(pat(k).iter().map(|r| r.kill_to_decision));
    let pad = |k: &str| s(pat(k).iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)));
    let ratio = |u: Option<Summary>, p: Option<Summary>| match (u, p) {
        (Some(u), Some(p)) if p.median > 0.0 => format!("{:.2}", u.median / p.median),
        _ => "–".into(),
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |m: String, u: String, d: String, g: String| rows.push([m, u, d, g]);
    let e = String::new;
    let scen = [
        ("(a)", "primary postmaster SIGKILL", "a-failover"),
        ("(b)", "node loss (east controller + postmaster SIGKILLed)", "b-node-loss"),
    ];
    for &ttl in ttls {
        let keys = keys(ttl);
        for ((tag, what, pk), key) in scen.iter().zip(&keys) {
            let r = get(key);
            let w = s(r.iter().map(|r| r.kill_to_write));
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
            for (p, col) in [(Timing::DEFAULTS, 2usize), (aggressive, 3)] {
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
                c(s(r.iter().map(|r| r.kill_to_decision))),
                c(pd(&format!("defaults/{pk}"))),
                c(pd(&format!("aggressive/{pk}"))),
            );
            row(
                format!("{tag} leaseTTL {ttl} s: decided → first write acked (understudy: through PgBouncer; Patroni: multi-host DSN)"),
                c(s(r.iter().map(|r| r.kill_to_write.zip(r.kill_to_decision).map(|(w, d)| w - d)))),
                c(pad(&format!("defaults/{pk}"))),
                c(pad(&format!("aggressive/{pk}"))),
            );
            row(
                format!("{tag} leaseTTL {ttl} s:   kill → first failed probe"),
                c(s(r.iter().map(|r| r.kill_to_first_failed_probe))),
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
                    format!("{}; {released} / {expire}", c(s(r.iter().map(|r| r.kill_to_east_gave_up)))),
                    e(),
                    e(),
                );
            }
            row(
                format!("{tag} leaseTTL {ttl} s:   kill → leader key gone from etcd (the lease wait) ⁴"),
                c(s(r.iter().map(|r| r.kill_to_key_gone))),
                e(),
                e(),
            );
            row(
                format!("{tag} leaseTTL {ttl} s:   east's last renewal reaching etcd (key gone − leaseTTL), since the kill ⁴"),
                c(s(r.iter().map(|r| r.kill_to_key_gone.map(|g| g - f64::from(ttl))))),
                e(),
                e(),
            );
            row(
                format!("{tag} leaseTTL {ttl} s:   key gone → TakeEpoch start (west's next reconcile wins the swap)"),
                c(s(r.iter().map(|r| r.key_gone_to_decision))),
                e(),
                e(),
            );
            row(
                format!("{tag} leaseTTL {ttl} s:   decided → DNS confirmed (the controller's share)"),
                c(s(r.iter().map(|r| r.controller_share))),
                e(),
                e(),
            );
            row(
                format!("{tag} leaseTTL {ttl} s:   RTO (rtoSeconds: first failed probe → DNS confirmed)"),
                c(s(r.iter().map(|r| r.rto))),
                e(),
                e(),
            );
            let lost = |v: Vec<f64>| cell(Summary::of(&v), 0, "", runs);
            row(
                format!("{tag} leaseTTL {ttl} s: lost acknowledged commits (understudy: + lostWalBytes)"),
                format!(
                    "{}; {}",
                    lost(r.iter().map(|r| r.lost_acked as f64).collect()),
                    cell(s(r.iter().map(|r| r.lost_wal_bytes.map(|b| b as f64))), 0, " B", runs)
                ),
                lost(pat(&format!("defaults/{pk}")).iter().map(|r| r.lost_acked as f64).collect()),
                lost(pat(&format!("aggressive/{pk}")).iter().map(|r| r.lost_acked as f64).collect()),
            );
        }
    }
    // Steps after the decision do not depend on the lease: pooled over every two-site run.
    let all: Vec<&us::Run> = two.values().flatten().collect();
    let pooled = ttls.len() * 2 * runs;
    let mut names: Vec<String> = Vec::new();
    for r in &all {
        for (name, _, _) in &r.steps {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    for name in &names {
        let outcomes: std::collections::BTreeSet<&str> = all
            .iter()
            .flat_map(|r| r.steps.iter().filter(|(n, _, _)| n == name).map(|(_, _, o)| o.as_str()))
            .collect();
        let v = s(all.iter().map(|r| r.steps.iter().find(|(n, _, _)| n == name).and_then(|(_, d, _)| *d)));
        row(
            format!(
                "two-site step {name} ({}), every two-site run pooled",
                outcomes.into_iter().collect::<Vec<_>>().join("/")
            ),
            cell(v, 3, " s", pooled),
            e(),
            e(),
        );
    }
    rows
}
