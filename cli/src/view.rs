//! What `status` shows, computed from the copies read (pure), and how it is written for people.

use serde::Serialize;
use understudy::crd::{
    annotations, conditions, ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus, DryRun,
    PendingApproval, Transition, TransitionKind,
};
use understudy::units::human_bytes;

use crate::{clusters::Read, witness::Etcd};

/// The whole `status` answer (`-o json|yaml` prints it as is).
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub pair: String,
    /// Wall time to read every cluster, in milliseconds.
    pub took_ms: u64,
    pub clusters: Vec<ClusterView>,
    /// The witness's truth: read from etcd when it could be, else as the most advanced copy
    /// mirrors it; absent when no copy was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessView>,
    /// The witness read directly in etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    /// Why etcd was not read directly (`--no-witness`, no witness in the spec, no access).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_not_read: Option<String>,
}

/// One cluster's copy.
#[derive(Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub context: String,
    pub namespace: String,
    /// The cluster answered.
    pub reachable: bool,
    /// The pair exists there.
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub read_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Cond>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_for_failover: Option<Cond>,
    /// `dr.understudy.dev/paused=true` on this copy.
    pub paused: bool,
    /// Why this copy says the pair is not protected or a failover would not run.
    pub blockers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_key: Option<Cond>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_command: Option<Cond>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub former_primary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    /// This copy's epoch is older than the witness's as another copy mirrors it.
    pub behind: bool,
    /// `spec.objectives` of this copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<understudy::crd::Objectives>,
    /// Why a failover now could not meet them (`ReadyForFailover` reason `ObjectivesAtRisk`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives_at_risk: Option<String>,
    /// The drill in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<understudy::crd::DrillRun>,
    /// The newest drill report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<understudy::crd::DrillReport>,
}

/// A condition, shortened.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Cond {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Who serves according to the witness, as the controllers mirror it into their cluster's status.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WitnessView {
    pub epoch: i64,
    pub primary: String,
    /// `etcd` when read directly, else the context whose copy holds the newest epoch (ties: the
    /// first given).
    pub mirrored_by: String,
    /// Contexts whose copy holds an older epoch (or another primary).
    pub behind: Vec<String>,
    /// Contexts that could not be read.
    pub unknown: Vec<String>,
}

pub fn cond(st: &DisasterRecoveryPairStatus, type_: &str) -> Option<Cond> {
    st.conditions.iter().find(|c| c.type_ == type_).map(|c| Cond {
        status: c.status.as_str().into(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    })
}

/// Whether `dr.understudy.dev/paused=true` is set on this copy.
pub fn paused(p: &DisasterRecoveryPair) -> bool {
    p.metadata.annotations.as_ref().and_then(|a| a.get(annotations::PAUSED)).map(String::as_str)
        == Some("true")
}

/// Everything that says the pair is not protected now, or that a failover would be refused.
pub fn blockers(p: &DisasterRecoveryPair) -> Vec<String> {
    let Some(st) = p.status.as_ref() else { return vec!["no status yet: is the controller running?".into()] };
    let mut out = Vec::new();
    for c in &st.conditions {
        let bad = match c.type_.as_str() {
            conditions::FAILOVER_BLOCKED => c.status == ConditionStatus::True,
            conditions::PRIMARY_HEALTHY
            | conditions::STANDBY_STREAMING
            | conditions::LAG_WITHIN_BUDGET
            | conditions::SECRETS_RESOLVED
            | conditions::SPEC_VALID
            | conditions::READY_FOR_FAILOVER => c.status != ConditionStatus::True,
            _ => false,
        };
        if bad {
            out.push(format!("{} {} {}: {}", c.type_, c.status.as_str(), c.reason, c.message));
        }
    }
    if paused(p) {
        out.push(format!("automation is paused ({}=true on this copy)", annotations::PAUSED));
    }
    out
}

/// What was learnt of etcd directly: `Ok(Some)` read, `Ok(None)` the pair has no witness, `Err` why not.
pub type EtcdRead = Result<Option<Etcd>, String>;

pub fn report(pair: &str, reads: &[Read], etcd: EtcdRead, took: std::time::Duration) -> Report {
    let mut clusters: Vec<ClusterView> = reads.iter().map(|r| cluster_view(pair, r)).collect();
    let (etcd, etcd_not_read) = match etcd {
        Ok(Some(e)) => (Some(e), None),
        Ok(None) => (None, Some("the pair has no witness (spec.coordination.etcd)".to_string())),
        Err(e) => (None, Some(e)),
    };
    let witness = witness(&clusters, etcd.as_ref());
    if let Some(w) = &witness {
        for c in &mut clusters {
            c.behind = w.behind.contains(&c.context);
        }
    }
    Report { pair: pair.into(), took_ms: took.as_millis() as u64, clusters, witness, etcd, etcd_not_read }
}

fn cluster_view(name: &str, r: &Read) -> ClusterView {
    let mut v = ClusterView {
        context: r.context.clone(),
        namespace: r.namespace.clone(),
        read_ms: r.took.as_millis() as u64,
        ..Default::default()
    };
    match &r.pair {
        Err(e) => v.error = Some(e.clone()),
        Ok(None) => {
            v.reachable = true;
            v.error = Some(format!("no DisasterRecoveryPair {name:?} in namespace {}", r.namespace));
        }
        Ok(Some(p)) => {
            v.reachable = true;
            v.found = true;
            v.paused = paused(p);
            v.blockers = blockers(p);
            let st = p.status.clone().unwrap_or_default();
            let primary = understudy::authority::primary(&p.spec, Some(&st));
            v.primary = Some(primary.site.to_string());
            v.epoch = Some(st.epoch.0);
            v.phase = st.phase.map(|ph| ph.to_string());
            v.lag_bytes = st.replication_lag_bytes;
            v.ready = cond(&st, conditions::READY);
            v.ready_for_failover = cond(&st, conditions::READY_FOR_FAILOVER);
            v.leader_key = cond(&st, conditions::LEADER_KEY);
            v.last_command = cond(&st, conditions::LAST_COMMAND);
            v.former_primary = st.former_primary.as_ref().map(|f| format!("{} {}", f.site, f.assessment));
            v.pending_approval = st.pending_approval.clone();
            v.last_transition = st.last_transition.clone();
            v.dry_run = st.dry_run.clone();
            v.objectives = p.spec.objectives.clone();
            v.objectives_at_risk = st
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == conditions::READY_FOR_FAILOVER && c.message.contains("objectives at risk: ")
                })
                .and_then(|c| c.message.split_once("objectives at risk: ").map(|(_, r)| r.to_string()));
            v.drill = st.drill.clone();
            v.last_drill = st.drills.first().cloned();
        }
    }
    v
}

/// The witness's truth: etcd's when read, else the newest epoch any copy mirrors.
pub fn witness(clusters: &[ClusterView], etcd: Option<&Etcd>) -> Option<WitnessView> {
    let (epoch, primary, mirrored_by) = match etcd {
        Some(e) => (e.epoch, e.primary.clone(), "etcd".to_string()),
        None => {
            let best =
                clusters.iter().filter(|c| c.found).fold(None::<&ClusterView>, |best, c| match best {
                    Some(b) if b.epoch >= c.epoch => Some(b),
                    _ => Some(c),
                })?;
            (best.epoch.unwrap_or_default(), best.primary.clone().unwrap_or_default(), best.context.clone())
        }
    };
    Some(WitnessView {
        epoch,
        mirrored_by,
        behind: clusters
            .iter()
            .filter(|c| c.found && (c.epoch != Some(epoch) || c.primary.as_deref() != Some(primary.as_str())))
            .map(|c| c.context.clone())
            .collect(),
        unknown: clusters.iter().filter(|c| !c.found).map(|c| c.context.clone()).collect(),
        primary,
    })
}

/// Seconds between two RFC 3339 times.
fn secs_between(from: &str, to: &str) -> Option<f64> {
    let a: jiff::Timestamp = from.parse().ok()?;
    let b: jiff::Timestamp = to.parse().ok()?;
    Some(b.duration_since(a).as_secs_f64())
}

fn cut(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

/// A transition and its journal: offsets from `startedAt`, each step's duration, RTO and lost WAL.
pub fn timeline(t: &Transition) -> String {
    let mut out = format!(
        "{} {} → {}, epoch {}, trigger {}, {} by {}\n",
        t.kind,
        t.from,
        t.to,
        t.epoch,
        t.trigger,
        t.outcome.map_or("running".to_string(), |o| o.to_string()),
        if t.holder.is_empty() { "?" } else { &t.holder },
    );
    out.push_str(&format!(
        "  started {}{}\n",
        t.started_at,
        t.finished_at.as_deref().map(|f| format!(", finished {f}")).unwrap_or_default()
    ));
    let width = t.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &t.steps {
        let at = |x: &Option<String>| x.as_deref().and_then(|x| secs_between(&t.started_at, x));
        let (a, b) = (at(&s.started_at), at(&s.finished_at));
        let span = match (a, b) {
            (Some(a), Some(b)) => {
                format!("{a:+8.3}s → {b:+8.3}s {:>7}", format!("{:.0} ms", (b - a) * 1000.0))
            }
            (Some(a), None) => format!("{a:+8.3}s → {:>9} {:>7}", "…", ""),
            _ => format!("{:>30}", ""),
        };
        let outcome = s.outcome.map_or_else(
            || if s.attempts > 1 { format!("retrying ({} attempts)", s.attempts) } else { "running".into() },
            |o| o.to_string(),
        );
        out.push_str(&format!(
            "  {span}  {:<width$}  {:<9} {}\n",
            s.name,
            outcome,
            cut(s.message.as_deref().unwrap_or(""), 90)
        ));
    }
    out.push_str(&format!("  {}\n", figures(t)));
    if let Some(v) = &t.objectives {
        out.push_str(&format!("  objectives {}: {}\n", v.verdict.as_str(), v.message));
    }
    out
}

/// `RTO 1.23 s, lost WAL 0 B`.
pub fn figures(t: &Transition) -> String {
    // After an unplanned failover, WAL written after the old primary's last probe cannot be seen.
    let bound = if t.kind == TransitionKind::Failover { ", a lower bound" } else { "" };
    format!(
        "RTO {}, lost WAL (RPO{bound}) {}",
        t.rto_seconds.map_or("-".into(), |r| format!("{r:.2} s")),
        t.lost_wal_bytes.map_or("unknown".into(), |b| human_bytes(b.max(0) as u64))
    )
}

/// `status` for people: a column per cluster, then the witness, blockers and the last transition.
pub fn render(r: &Report) -> String {
    let mut out = format!("pair {}: {} cluster(s) read in {} ms\n\n", r.pair, r.clusters.len(), r.took_ms);
    let dash = || "-".to_string();
    let c = |f: &dyn Fn(&ClusterView) -> String| -> Vec<String> {
        r.clusters
            .iter()
            .map(|c| {
                if c.found {
                    f(c)
                } else if c.reachable {
                    "not found".into()
                } else {
                    dash()
                }
            })
            .collect()
    };
    let cond_s = |x: &Option<Cond>| x.as_ref().map_or(dash(), |x| format!("{} {}", x.status, x.reason));
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("", r.clusters.iter().map(|c| c.context.clone()).collect()),
        (
            "reachable",
            r.clusters
                .iter()
                .map(|c| {
                    if c.reachable {
                        format!("yes ({} ms)", c.read_ms)
                    } else {
                        format!("NO ({} ms)", c.read_ms)
                    }
                })
                .collect(),
        ),
        ("namespace", r.clusters.iter().map(|c| c.namespace.clone()).collect()),
        ("primary", c(&|c| c.primary.clone().unwrap_or_else(dash))),
        (
            "epoch",
            c(&|c| {
                format!(
                    "{}{}",
                    c.epoch.map_or(dash(), |e| e.to_string()),
                    if c.behind { " (behind)" } else { "" }
                )
            }),
        ),
        ("phase", c(&|c| c.phase.clone().unwrap_or_else(dash))),
        ("lag", c(&|c| c.lag_bytes.map_or(dash(), |b| human_bytes(b.max(0) as u64)))),
        ("ready", c(&|c| cond_s(&c.ready))),
        ("ready for failover", c(&|c| cond_s(&c.ready_for_failover))),
        ("paused", c(&|c| if c.paused { "yes".into() } else { "no".into() })),
        ("leader key", c(&|c| cond_s(&c.leader_key))),
        ("former primary", c(&|c| c.former_primary.clone().unwrap_or_else(dash))),
        (
            "pending approval",
            c(&|c| c.pending_approval.as_ref().map_or(dash(), |p| format!("to {} ({})", p.to, p.nonce))),
        ),
        ("last command", c(&|c| cond_s(&c.last_command))),
    ];
    let label_w = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..r.clusters.len())
        .map(|i| rows.iter().map(|(_, v)| v[i].chars().count()).max().unwrap_or(0))
        .collect();
    for (label, vals) in &rows {
        let mut line = format!("  {label:<label_w$}");
        for (v, w) in vals.iter().zip(&col_w) {
            line.push_str(&format!("   {v:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    match &r.witness {
        Some(w) => {
            match &r.etcd {
                Some(e) => out.push_str(&format!(
                    "witness: epoch {}, primary {}{}, leader key {} (etcd {}, read in {} ms",
                    w.epoch,
                    w.primary,
                    if e.taken_by.is_empty() { String::new() } else { format!(" (taken by {})", e.taken_by) },
                    e.leader_key.as_deref().unwrap_or("none"),
                    e.endpoints,
                    e.took_ms
                )),
                None => out.push_str(&format!(
                    "witness: epoch {}, primary {} (as mirrored by {}",
                    w.epoch, w.primary, w.mirrored_by
                )),
            }
            if w.behind.is_empty() && w.unknown.is_empty() {
                out.push_str("; every cluster agrees)\n");
            } else {
                if !w.behind.is_empty() {
                    out.push_str(&format!("; behind: {}", w.behind.join(", ")));
                }
                if !w.unknown.is_empty() {
                    out.push_str(&format!("; not read: {}", w.unknown.join(", ")));
                }
                out.push_str(")\n");
            }
        }
        None => out.push_str("witness: unknown (no copy of the pair could be read)\n"),
    }
    if let (Some(why), Some(_)) = (&r.etcd_not_read, &r.witness) {
        out.push_str(&format!("  etcd not read directly: {}\n", cut(why, 200)));
    }
    for c in &r.clusters {
        if let Some(e) = &c.error {
            out.push_str(&format!("{}: {}\n", c.context, cut(e, 200)));
        } else if c.blockers.is_empty() {
            out.push_str(&format!("blockers ({}): none\n", c.context));
        } else {
            out.push_str(&format!("blockers ({}):\n", c.context));
            for b in &c.blockers {
                out.push_str(&format!("  - {}\n", cut(b, 200)));
            }
        }
    }
    // The last transition from the most advanced copy (it holds the newest journal).
    let newest = r
        .clusters
        .iter()
        .filter_map(|c| c.last_transition.as_ref().map(|t| (c, t)))
        .max_by_key(|(_, t)| (t.epoch, t.finished_at.is_some()));
    match newest {
        Some((c, t)) => {
            out.push_str(&format!("\nlast transition (journal in {}): ", c.context));
            out.push_str(&timeline(t));
        }
        None => out.push_str("\nlast transition: none\n"),
    }
    // Objectives, the drill running and the last drill, from the first copy that has them.
    if let Some(c) = r.clusters.iter().find(|c| c.objectives.is_some()) {
        let o = c.objectives.as_ref().map(|o| {
            format!(
                "RTO {}, RPO {}",
                o.rto.map_or("not set".into(), |d| format!("{:?}", std::time::Duration::from(d))),
                o.rpo.as_ref().map_or("not set".into(), |q| q.0.clone())
            )
        });
        out.push_str(&format!(
            "\nobjectives ({}): {}\n",
            o.unwrap_or_default(),
            c.objectives_at_risk
                .as_deref()
                .map_or("a failover now could meet them".into(), |r| format!("at risk — {r}"))
        ));
    }
    if let Some((c, d)) = r.clusters.iter().find_map(|c| c.drill.as_ref().map(|d| (c, d))) {
        out.push_str(&format!(
            "drill {} running (in {}): leg {} of 2, {} → {} → {}\n",
            d.token, c.context, d.leg, d.home, d.away, d.home
        ));
    }
    if let Some((c, d)) = r
        .clusters
        .iter()
        .filter_map(|c| c.last_drill.as_ref().map(|d| (c, d)))
        .max_by(|a, b| a.1.finished_at.cmp(&b.1.finished_at))
    {
        out.push_str(&format!("last drill (in {}): ", c.context));
        out.push_str(&crate::act::render_drill(d, None, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use understudy::crd::{Condition, Epoch, Phase, StepOutcome, StepRecord, TransitionOutcome};

    fn pair(primary: &str, epoch: i64, ready: bool) -> DisasterRecoveryPair {
        let spec: understudy::crd::DisasterRecoveryPairSpec = serde_yaml::from_str(
            "primary: east\nsites:\n- name: east\n  postgres: {host: pg-east, credentialsSecret: {name: pg}}\n  dataSourceSecret: {name: ds, key: dsn}\n\
             - name: west\n  postgres: {host: pg-west, credentialsSecret: {name: pg}}\n  dataSourceSecret: {name: ds, key: dsn}\n",
        )
        .expect("spec");
        let mut p = DisasterRecoveryPair::new("chat", spec);
        let cond = |t: &str, ok: bool, reason: &str, msg: &str| Condition {
            type_: t.into(),
            status: if ok { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.into(),
            message: msg.into(),
            last_transition_time: "2026-12-02T10:00:00Z".into(),
            observed_generation: None,
        };
        p.status = Some(DisasterRecoveryPairStatus {
            phase: Some(if ready { Phase::Healthy } else { Phase::Degraded }),
            current_primary: Some(primary.into()),
            epoch: Epoch(epoch),
            replication_lag_bytes: Some(0),
            conditions: vec![
                cond("Ready", ready, if ready { "Protected" } else { "NotProtected" }, "m"),
                cond("StandbyStreaming", ready, "NotStreaming", "west's WAL receiver is not streaming"),
            ],
            last_transition: Some(Transition {
                kind: TransitionKind::Switchover,
                from: "west".into(),
                to: primary.into(),
                epoch: Epoch(epoch),
                holder: "east".into(),
                started_at: "2026-12-02T10:00:00Z".into(),
                finished_at: Some("2026-12-02T10:00:01.5Z".into()),
                rto_seconds: Some(1.5),
                lost_wal_bytes: Some(0),
                outcome: Some(TransitionOutcome::Completed),
                steps: vec![StepRecord {
                    name: "Promote".into(),
                    started_at: Some("2026-12-02T10:00:00.250Z".into()),
                    finished_at: Some("2026-12-02T10:00:00.400Z".into()),
                    outcome: Some(StepOutcome::Succeeded),
                    message: Some("east promoted".into()),
                    attempts: 1,
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn read(context: &str, p: Result<Option<DisasterRecoveryPair>, String>) -> Read {
        Read { context: context.into(), namespace: "chat".into(), pair: p, took: Duration::from_millis(12) }
    }

    #[test]
    fn both_clusters_side_by_side_and_the_one_behind_named() {
        let r = report(
            "chat",
            &[read("east", Ok(Some(pair("east", 2, true)))), read("west", Ok(Some(pair("west", 1, false))))],
            Err("--no-witness".into()),
            Duration::from_millis(40),
        );
        let w = r.witness.clone().expect("witness");
        assert_eq!((w.epoch, w.primary.as_str(), w.mirrored_by.as_str()), (2, "east", "east"));
        assert_eq!(w.behind, ["west"]);
        assert!(r.clusters[1].behind && !r.clusters[0].behind);
        assert!(r.clusters[1].blockers.iter().any(|b| b.contains("StandbyStreaming False")));
        let text = render(&r);
        assert!(
            text.contains("witness: epoch 2, primary east (as mirrored by east; behind: west)"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.contains("epoch") && l.contains("2") && l.contains("1 (behind)")),
            "{text}"
        );
        assert!(text.contains("RTO 1.50 s, lost WAL (RPO) 0 B"), "{text}");
        assert!(text.contains("+0.250s →   +0.400s  150 ms  Promote"), "{text}");
        // Scripts get the same as JSON.
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["clusters"][0]["epoch"], 2);
        assert_eq!(json["witness"]["behind"][0], "west");
        let yaml: serde_json::Value =
            serde_yaml::from_str(&serde_yaml::to_string(&r).expect("yaml")).expect("yaml parses");
        assert_eq!(yaml, json, "-o yaml says the same as -o json");
    }

    #[test]
    fn etcd_read_directly_is_the_truth_both_copies_are_measured_against() {
        let etcd = Etcd {
            epoch: 3,
            primary: "west".into(),
            taken_by: "west".into(),
            leader_key: Some("west (epoch 3)".into()),
            endpoints: "https://witness:2379".into(),
            took_ms: 4,
        };
        let r = report(
            "chat",
            &[read("east", Ok(Some(pair("east", 2, true)))), read("west", Ok(Some(pair("west", 3, true))))],
            Ok(Some(etcd)),
            Duration::from_millis(40),
        );
        let w = r.witness.clone().expect("witness");
        assert_eq!((w.mirrored_by.as_str(), w.behind.clone()), ("etcd", vec!["east".to_string()]));
        let text = render(&r);
        assert!(
            text.contains(
                "witness: epoch 3, primary west (taken by west), leader key west (epoch 3) \
                 (etcd https://witness:2379, read in 4 ms; behind: east)"
            ),
            "{text}"
        );
        let no = report("chat", &[read("east", Ok(Some(pair("east", 0, true))))], Ok(None), Duration::ZERO);
        assert!(render(&no).contains("etcd not read directly: the pair has no witness"), "{}", render(&no));
    }

    #[test]
    fn an_unreachable_cluster_is_shown_not_fatal() {
        let r = report(
            "chat",
            &[read("east", Err("connection refused".into())), read("west", Ok(Some(pair("west", 1, true))))],
            Err("--no-witness".into()),
            Duration::from_millis(40),
        );
        let w = r.witness.clone().expect("west answers");
        assert_eq!((w.primary.as_str(), w.unknown.clone()), ("west", vec!["east".to_string()]));
        let text = render(&r);
        assert!(text.contains("NO (12 ms)") && text.contains("east: connection refused"), "{text}");
        assert!(text.contains("not read: east"), "{text}");
        let none = report("chat", &[read("east", Ok(None))], Ok(None), Duration::ZERO);
        assert!(none.witness.is_none());
        assert!(render(&none).contains("not found"));
    }
}
