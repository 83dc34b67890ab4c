//! Prometheus metrics (prefix `understudy_`). Labels are bounded: the pair (`namespace/name`), the
//! site, the step, the outcome and the error category; never error text.

use std::sync::{
    atomic::{AtomicI64, AtomicU64},
    Arc,
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    pub pair: String,
}

/// One run of a site fence hook: `outcome` is `confirmed`, `failed` or `timed_out`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FenceHookLabels {
    pub pair: String,
    pub site: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub pair: String,
    pub site: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabels {
    pub pair: String,
    pub site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub pair: String,
    pub kind: String,
    pub trigger: String,
    pub outcome: String,
}

/// A transition's or drill's verdict: `objective` is `rto`, `rpo` or `drill`; `verdict` is
/// `Met`, `Missed`, `Unknown` (objectives) or `Passed`, `Failed`, `Refused` (drills).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub pair: String,
    pub objective: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconcile_runs: Counter,
    pub reconcile_failures: Family<CategoryLabels, Counter>,
    pub reconcile_duration: Histogram,
    /// Time spent in each phase of a steady round (`read`, `observe`, `effects`, `write`, `start`):
    /// where a slow reconcile spent its time.
    pub reconcile_phase: Family<PhaseLabels, Histogram>,
    pub probes: Family<ProbeLabels, Counter>,
    pub probe_latency: Family<SiteLabels, Gauge<f64, AtomicU64>>,
    pub lag_bytes: Family<PairLabels, Gauge<i64, AtomicI64>>,
    pub epoch: Family<PairLabels, Gauge<i64, AtomicI64>>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub rto_seconds: Family<PairLabels, Gauge<f64, AtomicU64>>,
    pub lost_wal_bytes: Family<PairLabels, Gauge<i64, AtomicI64>>,
    /// 1 when `lost_wal_bytes` is exact, 0 when it is a lower bound.
    pub lost_wal_exact: Family<PairLabels, Gauge<i64, AtomicI64>>,
    /// 1 while the pair's serving primary shows a synchronous standby (replication Sync or
    /// SyncPreferred; what this controller's probes last saw).
    pub synchronous_standby: Family<PairLabels, Gauge<i64, AtomicI64>>,
    /// 1 while a `SyncPreferred` pair's primary has fallen back to asynchronous commits.
    pub sync_degraded: Family<PairLabels, Gauge<i64, AtomicI64>>,
    pub is_leader: Gauge<i64, AtomicI64>,
    pub leader_key: Family<PairLabels, Gauge<i64, AtomicI64>>,
    /// Runs of the site fence hook (`spec.sites[*].fenceHook`), by outcome.
    pub fence_hook_runs: Family<FenceHookLabels, Counter>,
    /// 1 for each pair whose stored object the controller cannot read (it is skipped, the rest are not).
    pub undecodable: Family<PairLabels, Gauge<i64, AtomicI64>>,
    /// 1 while another controller is registered in the witness for this controller's `--site`.
    pub duplicate_site: Family<PairLabels, Gauge<i64, AtomicI64>>,
    pub objective_verdicts: Family<VerdictLabels, Counter>,
    pub objectives_at_risk: Family<PairLabels, Gauge<i64, AtomicI64>>,
    pub drills: Family<VerdictLabels, Counter>,
    pub drill_writes_held: Family<PairLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("understudy");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            reconcile_runs: Counter::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            reconcile_phase: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            probes: Family::default(),
            probe_latency: Family::default(),
            lag_bytes: Family::default(),
            epoch: Family::default(),
            transitions: Family::default(),
            step_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            rto_seconds: Family::default(),
            lost_wal_bytes: Family::default(),
            lost_wal_exact: Family::default(),
            synchronous_standby: Family::default(),
            sync_degraded: Family::default(),
            is_leader: Gauge::default(),
            leader_key: Family::default(),
            fence_hook_runs: Family::default(),
            undecodable: Family::default(),
            duplicate_site: Family::default(),
            objective_verdicts: Family::default(),
            objectives_at_risk: Family::default(),
            drills: Family::default(),
            drill_writes_held: Family::default(),
        };
        r.register("reconcile_runs", "Reconciles run", m.reconcile_runs.clone());
        r.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            m.reconcile_failures.clone(),
        );
        r.register("reconcile_duration_seconds", "Time one reconcile took", m.reconcile_duration.clone());
        r.register(
            "reconcile_phase_seconds",
            "Time one phase of a steady reconcile took (read, observe, effects, write, start)",
            m.reconcile_phase.clone(),
        );
        r.register("probes", "Probes of a site, by outcome (up, down, not_run)", m.probes.clone());
        r.register(
            "probe_latency_seconds",
            "Latency of the last SQL probe of a site",
            m.probe_latency.clone(),
        );
        r.register("replication_lag_bytes", "WAL bytes the standby has yet to replay", m.lag_bytes.clone());
        r.register("epoch", "The pair's fencing epoch", m.epoch.clone());
        r.register(
            "transitions",
            "Failovers and switchovers, by kind, trigger and outcome",
            m.transitions.clone(),
        );
        r.register(
            "failover_step_duration_seconds",
            "Duration of one transition step",
            m.step_duration.clone(),
        );
        r.register(
            "failover_rto_seconds",
            "Recovery time of the pair's last transition",
            m.rto_seconds.clone(),
        );
        r.register(
            "lost_wal_bytes",
            "WAL bytes lost by the pair's last transition: exact when understudy_lost_wal_exact is 1; \
             otherwise a lower bound (the old primary died unreachable: commits acknowledged after the \
             last observed position may be lost too)",
            m.lost_wal_bytes.clone(),
        );
        r.register(
            "lost_wal_exact",
            "1 when understudy_lost_wal_bytes is exact, 0 when it is a lower bound",
            m.lost_wal_exact.clone(),
        );
        r.register(
            "synchronous_standby",
            "1 while the serving primary shows a synchronous standby (spec.failover.replication Sync or SyncPreferred)",
            m.synchronous_standby.clone(),
        );
        r.register(
            "sync_degraded",
            "1 while a SyncPreferred pair's primary commits asynchronously because its standby stayed away",
            m.sync_degraded.clone(),
        );
        r.register(
            "is_leader",
            "1 when this replica holds the leader lease (or runs without election)",
            m.is_leader.clone(),
        );
        r.register(
            "leader_key",
            "Primary site's leader key in etcd: 1 held, 0 not held, -1 this site fenced itself",
            m.leader_key.clone(),
        );
        r.register(
            "site_fence_hook_runs",
            "Runs of the site fence hook by this site's keeper, by outcome (confirmed, failed, timed_out)",
            m.fence_hook_runs.clone(),
        );
        r.register(
            "undecodable_pair",
            "1 while the pair's stored object cannot be read by this controller (reported on the pair as an Undecodable Event; the other pairs are unaffected)",
            m.undecodable.clone(),
        );
        r.register(
            "duplicate_site_controller",
            "1 while another controller is registered in the witness with this controller's --site for the pair",
            m.duplicate_site.clone(),
        );
        r.register(
            "objective_verdicts",
            "Completed transitions judged against spec.objectives, by objective (rto, rpo) and verdict (Met, Missed, Unknown)",
            m.objective_verdicts.clone(),
        );
        r.register(
            "objectives_at_risk",
            "1 while the readiness checks find that a failover now could not meet spec.objectives (ReadyForFailover reason ObjectivesAtRisk)",
            m.objectives_at_risk.clone(),
        );
        r.register(
            "drills",
            "DR drills, by outcome (objective=\"drill\", verdict Passed, Failed or Refused)",
            m.drills.clone(),
        );
        r.register(
            "drill_writes_held_seconds",
            "The longest time understudy held the application's writes in the pair's last drill (Quiesce start to Recycle end, either leg)",
            m.drill_writes_held.clone(),
        );
        Metrics { registry: Arc::new(r), ..m }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_bounded_labels() {
        let m = Metrics::default();
        m.lag_bytes.get_or_create(&PairLabels { pair: "chat/mm".into() }).set(1024);
        m.step_duration
            .get_or_create(&StepLabels { step: "Promote".into(), outcome: "Succeeded".into() })
            .observe(0.1);
        m.is_leader.set(1);
        let text = m.render();
        assert!(text.contains("understudy_replication_lag_bytes{pair=\"chat/mm\"} 1024"), "{text}");
        assert!(
            text.contains(
                "understudy_failover_step_duration_seconds_count{step=\"Promote\",outcome=\"Succeeded\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("understudy_is_leader 1"), "{text}");
        assert!(text.contains("# TYPE understudy_reconcile_runs counter"), "{text}");
    }
}
