//! The `DisasterRecoveryPair` status: what understudy observed and did. Progress of a transition lives
//! here, never only in memory, so a restarted controller resumes from what the status says. No field
//! ever holds a credential: messages name Secrets and hosts, never their contents.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a pair.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoveryPairStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The pair's phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The site that serves writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// The site a transition in progress is moving the primary to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// Fencing token: increased by one on every promotion and never reused.
    #[serde(default)]
    pub epoch: Epoch,
    /// Bytes of WAL the standby has yet to replay (primary's current LSN minus the standby's replay LSN).
    /// A change of this and the sites' LSNs alone is written every 10 s at most (less often when the
    /// controller tends more than 50 pairs: 5 such writes a second in all); `understudy_replication_lag_bytes` is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_bytes: Option<i64>,
    /// Per-site probe results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteStatus>,
    /// Kubernetes-style conditions; see the `conditions` module for types and reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The most recent failover or switchover, with its step journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<Transition>,
    /// In `Approve` mode, the failover waiting for a human: annotate the pair with
    /// `dr.understudy.dev/approve=<nonce>` to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    /// The site that served before the last transition, until it follows the new primary again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_primary: Option<FormerPrimary>,
    /// Per site: the epoch whose primary that site's own entries (`spec.*[*].site`) were last
    /// pointed at by that site's controller, in this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub site_objects: Vec<SiteObjects>,
    /// What `spec.activate` did in this cluster: each workload's state and replica count, and the
    /// epoch it was scaled for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub activated: Vec<Activated>,
    /// The last plan written by a `dr.understudy.dev/dry-run` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    /// The last annotation value acted on or refused, per annotation key (values over 64
    /// characters are kept as their first 32 characters and a digest).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub handled: std::collections::BTreeMap<String, String>,
    /// Every command token (`switchover`, `failover`, `dry-run`) this pair has ever acted on or
    /// refused, so that each acts at most once, forever, in bounded space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_tokens: Option<TokenFilter>,
    /// `spec.failover.replication` other than `Async`: what the serving site's controller last
    /// decided about synchronous commits (absent under `Async`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// The drill in progress (`dr.understudy.dev/drill`, or `spec.drills.every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRun>,
    /// The last drills, newest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub drills: Vec<DrillReport>,
}

/// Synchronous replication as the serving site's controller keeps it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// The `synchronous_standby_names` understudy wants on the primary: `*` (commits wait for the
    /// standby) or empty (asynchronous: `SyncPreferred` degraded).
    pub wanted_names: String,
    /// Since when the primary has shown no synchronous standby (RFC 3339); absent while one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynchronized_since: Option<String>,
    /// `SyncPreferred`: since when the primary commits asynchronously because the standby stayed
    /// away for `syncDegradeAfter` (RFC 3339); absent while synchronous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_since: Option<String>,
}

/// The fencing token: moved N → N+1 by exactly one compare-and-swap per promotion, never reused.
/// In the schema an `int64` from 0 to 2^53 − 1 (what a JSON number carries exactly); any `i64` is
/// read, so a status edited out of range still decodes and is refused with a message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct Epoch(pub i64);

impl Epoch {
    /// The largest epoch the schema allows (2^53 − 1).
    pub const MAX: i64 = 9_007_199_254_740_991;

    /// The epoch after this one; `None` for a negative or the last `i64` (only a hand-edited
    /// status holds one).
    pub fn next(self) -> Option<Epoch> {
        self.0.checked_add(1).filter(|_| self.0 >= 0).map(Epoch)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Epoch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Epoch".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "format": "int64",
            "minimum": 0.0,
            "maximum": 9_007_199_254_740_991.0
        })
    }
}

/// A Bloom filter of handled tokens: 8,192 bits, 3 hashes of SHA-256(`<annotation>\0<token>`).
/// It never forgets a token; a token never seen may, rarely, look seen (about 0.1 % after 300
/// tokens, 3 % after 1,000), and is then refused with a request for another token: a command
/// never acts twice, and at worst asks for a fresh token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenFilter {
    /// The 8,192 bits as 2,048 hexadecimal digits.
    #[schemars(length(max = 2048))]
    pub bits: String,
    /// How many tokens were added.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub count: i64,
}

/// A failover that waits for approval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// The value the `dr.understudy.dev/approve` annotation must carry.
    pub nonce: String,
    /// The site that would be promoted.
    pub to: String,
    /// When the approval was first requested (RFC 3339).
    pub requested_at: String,
}

/// The pair's phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Primary serving, standby streaming.
    Healthy,
    /// Something is wrong but nothing is being done (standby down, lag, primary failing, bad spec).
    Degraded,
    /// An unplanned failover is running.
    FailingOver,
    /// A planned switchover is running.
    SwitchingOver,
    /// Automation is paused by annotation; probes still report.
    Paused,
    /// A transition stopped and needs a human.
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the last probe saw of one site.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// The site's name.
    pub name: String,
    /// Whether the SQL probe succeeded.
    pub reachable: bool,
    /// `pg_is_in_recovery()`: true on a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_recovery: Option<bool>,
    /// Whether a standby's WAL receiver is streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// `pg_current_wal_lsn()` on a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_lsn: Option<String>,
    /// `pg_last_wal_receive_lsn()` on a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<String>,
    /// `pg_last_wal_replay_lsn()` on a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// `default_transaction_read_only` is on: the server is fenced. A fenced server that is not in
    /// recovery does not take writes, so for the current primary it counts as a failed probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<bool>,
    /// The server's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// On a primary: `synchronous_standby_names` (empty: asynchronous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_standby_names: Option<String>,
    /// On a primary: whether a standby was synchronous (`sync_state` `sync` or `quorum` in
    /// `pg_stat_replication`). Kept as last seen while the site does not answer: the failover guard
    /// and the lost-WAL figure of `Sync` read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_standby: Option<bool>,
    /// Whether every HTTP health check passed (absent when none are configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_healthy: Option<bool>,
    /// Consecutive failed probes (SQL or HTTP); reset by a passing probe.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub consecutive_failures: i32,
    /// When the current run of failures began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// Why the last probe failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A condition in the Kubernetes style.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, such as `PrimaryHealthy`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A PascalCase reason.
    pub reason: String,
    /// A human-readable message that names what failed and how to fix it.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition's status, spelled as Kubernetes spells it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It could not be told (a site that could not be probed).
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The kind of a transition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// Unplanned: the primary failed (or an operator forced it); the epoch is taken first.
    /// Also what a journal without `kind` was (it predates switchovers; such a status may hold
    /// `kind: ""`, read as `Failover`).
    #[default]
    #[serde(alias = "")]
    Failover,
    /// Planned: writers quiesced, the standby caught up, then the epoch taken; rolled back on the way.
    Switchover,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Failover => "Failover",
            TransitionKind::Switchover => "Switchover",
        }
    }
}

/// What started a transition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `Automatic` mode: the primary was confirmed dead and every guard passed.
    #[default]
    Automatic,
    /// `Approve` mode: a human annotated the pair with the nonce the status asked for.
    Approved,
    /// The `dr.understudy.dev/failover` annotation: past every guard but the epoch.
    Forced,
    /// The `dr.understudy.dev/switchover` annotation: a planned switchover.
    Switchover,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Automatic => "Automatic",
            Trigger::Approved => "Approved",
            Trigger::Forced => "Forced",
            Trigger::Switchover => "Switchover",
        }
    }
}

/// Whether `lostWalBytes` is `Exact` (a switchover's quiesced final position, a fenced old primary's
/// position read after the fence, or `0` under `replication: Sync` with the standby synchronous at
/// the last observation: no acknowledged commit can be missing) or `AtLeast` (the old primary died
/// unreachable: commits acknowledged after its last observed position may be lost too, uncounted).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossBound {
    /// The figure is what was lost.
    Exact,
    /// At least this much was lost: commits acknowledged after the last observed position of the
    /// old primary may be lost too.
    AtLeast,
}

impl LossBound {
    pub fn as_str(self) -> &'static str {
        match self {
            LossBound::Exact => "Exact",
            LossBound::AtLeast => "AtLeast",
        }
    }

    /// The figure in words, for the Event and the log line.
    pub fn describe(bound: Option<LossBound>, bytes: Option<i64>) -> String {
        match (bytes, bound) {
            (None, _) => "lost WAL unknown (the old primary's position was never read)".into(),
            (Some(b), Some(LossBound::Exact)) => format!("lost WAL {b} bytes (exact)"),
            (Some(b), _) => format!(
                "lost WAL at least {b} bytes; commits acknowledged after the last observed position may be lost"
            ),
        }
    }
}

/// How a transition ended: `Completed` (the new primary serves) or `RolledBack` (a switchover
/// undone before its epoch was taken: nothing promoted); `RollingBack` while that undoing runs.
/// Absent while the transition runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransitionOutcome {
    /// Every step finished: the new primary serves.
    Completed,
    /// A switchover stopped before `TakeEpoch` and is being undone (old primary writable again,
    /// PgBouncer resumed); `finishedAt` is set once that is done.
    RollingBack,
    /// A switchover undone: nothing was promoted.
    RolledBack,
}

impl TransitionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionOutcome::Completed => "Completed",
            TransitionOutcome::RollingBack => "RollingBack",
            TransitionOutcome::RolledBack => "RolledBack",
        }
    }
}

/// How a step finished: `Succeeded`, `Skipped` (nothing to do: nothing configured, the old
/// primary unreachable, or a fence that kept failing) or `Aborted` (it stopped a switchover before
/// `TakeEpoch`, which is then rolled back). Absent while the step runs or is retried after a
/// failure (`message` says why, `attempts` how often).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// It did what it does (or found it already done).
    Succeeded,
    /// There was nothing to do (nothing configured, the old primary unreachable, a fence that
    /// kept failing).
    Skipped,
    /// It stopped a switchover before `TakeEpoch`, which is then rolled back.
    Aborted,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "Succeeded",
            StepOutcome::Skipped => "Skipped",
            StepOutcome::Aborted => "Aborted",
        }
    }
}

/// Whether the former primary can follow the new one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Assessment {
    /// Not assessed yet (the transition just finished).
    #[default]
    Pending,
    /// It does not answer.
    Unreachable,
    /// Its WAL ends at or before the fork point: it can follow (after its shutdown checkpoint is
    /// rewound).
    CleanFollower,
    /// It wrote past the fork point: `pg_rewind` first.
    NeedsRewind,
    /// The rejoin hook failed every attempt: re-create it from a base backup.
    NeedsReclone,
    /// The rejoin hook ran; waiting for it to stream.
    Rejoining,
    /// It streams from the new primary: the pair is protected again.
    Following,
}

impl Assessment {
    pub fn as_str(self) -> &'static str {
        match self {
            Assessment::Pending => "Pending",
            Assessment::Unreachable => "Unreachable",
            Assessment::CleanFollower => "CleanFollower",
            Assessment::NeedsRewind => "NeedsRewind",
            Assessment::NeedsReclone => "NeedsReclone",
            Assessment::Rejoining => "Rejoining",
            Assessment::Following => "Following",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(ConditionStatus, TransitionKind, Trigger, TransitionOutcome, StepOutcome, Assessment);

/// A failover or switchover and its journal.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// What started it: `Automatic` (Automatic mode, past every guard), `Approved` (Approve mode,
    /// by the nonce), `Forced` (the `dr.understudy.dev/failover` annotation) or `Switchover` (the
    /// `dr.understudy.dev/switchover` annotation).
    pub trigger: Trigger,
    /// The site that served before.
    pub from: String,
    /// The site promoted.
    pub to: String,
    /// The epoch this transition took.
    pub epoch: Epoch,
    /// Unique id of the transition (`<pair uid>/<epoch>/<site promoted>`), also stored with the
    /// epoch in etcd.
    #[serde(default)]
    pub id: String,
    /// The controller that ran it (its `--site`, or instance name).
    #[serde(default)]
    pub holder: String,
    /// When the primary was first seen failing (failover) or the request was accepted (switchover).
    pub started_at: String,
    /// When the last step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Recovery time: from `startedAt` to the last step done, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// WAL bytes written on the old primary that the promoted standby had not received, counted from
    /// the last position a probe read on the old primary: a lower bound after an unplanned failover
    /// (WAL written after that probe cannot be seen; 0 for a switchover, which waits for it).
    /// Absent when the old primary's position was never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_wal_bytes: Option<i64>,
    /// Whether `lostWalBytes` is `Exact` (a switchover's quiesced final position, a fenced old
    /// primary's position read after the fence, or `0` under `replication: Sync` with the standby
    /// synchronous at the last observation: no acknowledged commit can be missing) or `AtLeast` (the
    /// old primary died unreachable: commits acknowledged after the last observed position may be
    /// lost too, and are not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_wal_bound: Option<LossBound>,
    /// `Failover` (unplanned: the epoch is taken first) or `Switchover` (planned: writers
    /// quiesced and the standby caught up first).
    #[serde(default)]
    pub kind: TransitionKind,
    /// How it ended: `Completed` or `RolledBack`; `RollingBack` while a switchover is being
    /// undone; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TransitionOutcome>,
    /// The old primary's final WAL position: a switchover's after writers were quiesced, a
    /// failover's when its `Fence` step fenced a reachable old primary (then `lostWalBound` is `Exact`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_lsn: Option<String>,
    /// The new primary's WAL position when it was promoted (the fork point of the timelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at_lsn: Option<String>,
    /// The step journal, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// How the transition did against `spec.objectives`, judged when it completed (absent without
    /// objectives, and for a rolled-back switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<ObjectivesVerdict>,
}

/// A transition judged against `spec.objectives`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectivesVerdict {
    /// `Missed` when any objective was missed, else `Unknown` when one could not be judged, else `Met`.
    pub verdict: Verdict,
    /// `spec.objectives.rto` against `rtoSeconds` (absent when no RTO is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<Verdict>,
    /// `spec.objectives.rpo` against `lostWalBytes` and its bound (absent when no RPO is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Verdict>,
    /// The figures, in words.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// One objective's verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum Verdict {
    /// Within the objective.
    #[default]
    Met,
    /// The figure could not show it either way (a loss known only as a lower bound within the
    /// objective, or never measured).
    Unknown,
    /// Over the objective.
    Missed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "Met",
            Verdict::Unknown => "Unknown",
            Verdict::Missed => "Missed",
        }
    }
}

/// A drill in progress: a switchover from `home` to `away` and back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrillRun {
    /// The `dr.understudy.dev/drill` token, or `scheduled-<time>`.
    #[schemars(length(max = 80))]
    pub token: String,
    /// When the drill was accepted (RFC 3339).
    pub started_at: String,
    /// The site that served when the drill began, and serves again at its end.
    pub home: String,
    /// The standby site the drill switches to and back from.
    pub away: String,
    /// The leg running: 1 (home → away) or 2 (away → home); 0 before leg 1's switchover started.
    #[schemars(range(min = 0, max = 2))]
    pub leg: i32,
    /// The epoch before the running leg: its switchover is the first transition past it.
    pub after_epoch: Epoch,
    /// Since when leg 1 has waited for the former primary to follow and the pair to be `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<String>,
    /// The legs done so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub legs: Vec<DrillLeg>,
}

/// One switchover of a drill, with its figures.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillLeg {
    /// The site that served before this switchover.
    pub from: String,
    /// The site this switchover promoted.
    pub to: String,
    /// The epoch the switchover took (absent when it rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    /// `Completed` or `RolledBack`.
    pub outcome: TransitionOutcome,
    /// The switchover's `rtoSeconds` (request accepted → last step done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// How long understudy held the application's writes, at most: from the `Quiesce` step's start
    /// (PgBouncer paused, old primary fenced) to the `Recycle` step's end (PgBouncer repointed and
    /// resumed — and every other recycler done, so PgBouncer's clients may resume a little earlier).
    /// A client that is not behind PgBouncer adds its own reconnect; `kubectl understudy drill
    /// --writer-dsn` measures the gap a client sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_held_seconds: Option<f64>,
    /// `lostWalBytes` of the switchover (exact: a switchover waits for the standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_wal_bytes: Option<i64>,
    /// The switchover judged against `spec.objectives`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<ObjectivesVerdict>,
}

/// A finished drill.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// The `dr.understudy.dev/drill` token, or `scheduled-<time>`.
    #[schemars(length(max = 80))]
    pub token: String,
    /// When the drill was accepted (or refused), RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339.
    pub finished_at: String,
    /// `Passed` (both switchovers completed and no objective was missed), `Failed` (one rolled
    /// back, the return timed out, an objective was missed, or a failover cut in) or `Refused`
    /// (the pair was not ready: nothing was done).
    pub outcome: DrillOutcome,
    /// The worst verdict of the legs against `spec.objectives` (absent without objectives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Verdict>,
    /// Its switchovers (none when refused), with their figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub legs: Vec<DrillLeg>,
    /// What happened, in words (the refusal's or failure's reason).
    #[serde(default)]
    #[schemars(length(max = 2048))]
    pub message: String,
}

/// How a drill ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DrillOutcome {
    #[default]
    Passed,
    Failed,
    Refused,
}

impl DrillOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillOutcome::Passed => "Passed",
            DrillOutcome::Failed => "Failed",
            DrillOutcome::Refused => "Refused",
        }
    }
}

/// One step of a transition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Step name, such as `Promote`.
    pub name: String,
    /// When the step was started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the step finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `Succeeded`, `Skipped` or `Aborted`; absent while it runs or is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
    /// Details, such as the target that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts made so far.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub attempts: i32,
}

/// The old primary after a transition, and whether it can follow the new one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FormerPrimary {
    /// The site.
    pub site: String,
    /// `Pending` (not assessed yet), `Unreachable`, `CleanFollower` (its WAL ends at or before the
    /// fork point), `NeedsRewind` (it wrote past the fork point: `pg_rewind` first),
    /// `NeedsReclone` (the rejoin hook failed every attempt), `Rejoining` (the rejoin hook ran) or
    /// `Following` (it streams from the new primary).
    pub assessment: Assessment,
    /// Details: LSNs, timelines, the hook's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Times the rejoin hook was run for this transition.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub rejoin_attempts: i32,
    /// When it was last assessed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessed_at: Option<String>,
}

/// One `spec.activate` workload as understudy last scaled it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Activated {
    /// The site whose cluster holds the workload.
    pub site: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// The workload's name.
    pub name: String,
    /// Whether it runs as the serving site's application.
    pub active: bool,
    /// The replicas understudy set.
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,
    /// The epoch it was scaled for.
    pub epoch: Epoch,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Where one site's own entries point.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SiteObjects {
    /// The site whose entries these are.
    pub site: String,
    /// They point at the primary of this epoch.
    pub epoch: Epoch,
    /// The primary they point at.
    pub primary: String,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// A failover plan computed without acting.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The request token.
    pub token: String,
    /// When the plan was made (RFC 3339).
    pub at: String,
    /// The site that would be promoted.
    pub to: String,
    /// The steps, each with its targets.
    pub steps: Vec<String>,
    /// The standby's lag when the plan was made, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Everything that would stop or break the failover now; empty means ready.
    #[serde(default)]
    pub blockers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as the string-typed journal wrote it (every value it ever wrote), plus the shapes
    /// an older one left: a journal without `kind`, or with `kind: ""` (the old schema default).
    #[test]
    fn every_value_the_string_journal_wrote_still_decodes_and_is_written_back_the_same() {
        let step =
            |outcome: &str| serde_json::json!({ "name": "Promote", "outcome": outcome, "attempts": 1 });
        for (trigger, kind, outcome, steps, assessment) in [
            ("Automatic", "Failover", "Completed", ["Succeeded", "Skipped"], "Pending"),
            ("Approved", "Failover", "Completed", ["Succeeded", "Succeeded"], "Unreachable"),
            ("Forced", "Failover", "Completed", ["Skipped", "Succeeded"], "CleanFollower"),
            ("Switchover", "Switchover", "RollingBack", ["Succeeded", "Aborted"], "NeedsRewind"),
            ("Switchover", "Switchover", "RolledBack", ["Aborted", "Succeeded"], "NeedsReclone"),
            ("Automatic", "Failover", "Completed", ["Succeeded", "Succeeded"], "Rejoining"),
            ("Automatic", "Failover", "Completed", ["Succeeded", "Succeeded"], "Following"),
        ] {
            let raw = serde_json::json!({
                "epoch": 3,
                "lastTransition": {
                    "trigger": trigger, "kind": kind, "outcome": outcome, "from": "east", "to": "west",
                    "epoch": 3, "startedAt": "2026-01-01T00:00:00Z", "steps": [step(steps[0]), step(steps[1])]
                },
                "formerPrimary": { "site": "east", "assessment": assessment }
            });
            let st: DisasterRecoveryPairStatus = serde_json::from_value(raw.clone()).expect("decodes");
            let t = st.last_transition.clone().unwrap_or_default();
            assert_eq!((t.trigger.as_str(), t.kind.as_str(), t.epoch), (trigger, kind, Epoch(3)));
            assert_eq!(t.outcome.map(TransitionOutcome::as_str), Some(outcome));
            assert_eq!(st.former_primary.clone().map(|f| f.assessment.as_str()), Some(assessment));
            let back = serde_json::to_value(&st).expect("encodes");
            assert_eq!(
                back["lastTransition"]["steps"][1]["outcome"],
                raw["lastTransition"]["steps"][1]["outcome"]
            );
            assert_eq!(back["lastTransition"]["kind"], kind);
            assert_eq!(back["epoch"], 3);
        }
        for kind in [serde_json::json!({}), serde_json::json!({ "kind": "" })] {
            let mut t = serde_json::json!({ "trigger": "Automatic", "from": "east", "to": "west", "epoch": 1, "startedAt": "x" });
            if let (Some(t), Some(k)) = (t.as_object_mut(), kind.as_object()) {
                t.extend(k.clone());
            }
            let t: Transition = serde_json::from_value(t).expect("an old journal decodes");
            assert_eq!(t.kind, TransitionKind::Failover);
        }
        // Out-of-range epochs a hand edit can store still decode (and are refused at run time).
        for e in [-5, i64::MAX] {
            let st: DisasterRecoveryPairStatus =
                serde_json::from_value(serde_json::json!({ "epoch": e })).expect("decodes");
            assert_eq!((st.epoch, st.epoch.next()), (Epoch(e), None));
        }
        assert_eq!(Epoch(0).next(), Some(Epoch(1)));
        // A value the journal never wrote is refused by name (the CRD lists the values).
        let bad = serde_json::json!({ "name": "Promote", "outcome": "Failed" });
        assert!(serde_json::from_value::<StepRecord>(bad).is_err());
    }

    /// Conditions stored when `status` was a string read as the enum and are written back the same.
    #[test]
    fn every_condition_status_ever_written_still_decodes_and_is_written_back_the_same() {
        for (raw, want) in [
            ("True", ConditionStatus::True),
            ("False", ConditionStatus::False),
            ("Unknown", ConditionStatus::Unknown),
        ] {
            let stored = serde_json::json!({ "epoch": 0, "conditions": [{
                "type": "Ready", "status": raw, "reason": "Protected", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2
            }] });
            let st: DisasterRecoveryPairStatus = serde_json::from_value(stored.clone()).expect("decodes");
            assert_eq!((st.conditions[0].status, want.as_str()), (want, raw));
            assert_eq!(serde_json::to_value(&st).expect("encodes"), stored);
        }
        let bad = serde_json::json!({ "type": "Ready", "status": "true", "reason": "R", "message": "", "lastTransitionTime": "" });
        assert!(serde_json::from_value::<Condition>(bad).is_err(), "Kubernetes spells it True");
    }

    #[test]
    fn the_epoch_keeps_its_schema_and_the_journal_lists_its_values() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::crd::DisasterRecoveryPair::crd()).expect("crd");
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        let t = &status["lastTransition"]["properties"];
        for epoch in [&status["epoch"], &t["epoch"]] {
            assert_eq!((epoch["type"].as_str(), epoch["format"].as_str()), (Some("integer"), Some("int64")));
            assert_eq!(
                (epoch["minimum"].as_f64(), epoch["maximum"].as_f64()),
                (Some(0.0), Some(Epoch::MAX as f64))
            );
        }
        let values = |v: &serde_json::Value| -> Vec<String> {
            v["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(
            values(&status["conditions"]["items"]["properties"]["status"]),
            ["True", "False", "Unknown"]
        );
        assert_eq!(values(&t["kind"]), ["Failover", "Switchover"]);
        assert_eq!(values(&t["trigger"]), ["Automatic", "Approved", "Forced", "Switchover"]);
        assert_eq!(values(&t["outcome"]), ["Completed", "RollingBack", "RolledBack"]);
        assert_eq!(
            values(&t["steps"]["items"]["properties"]["outcome"]),
            ["Succeeded", "Skipped", "Aborted"]
        );
        assert_eq!(
            values(&status["formerPrimary"]["properties"]["assessment"]),
            [
                "Pending",
                "Unreachable",
                "CleanFollower",
                "NeedsRewind",
                "NeedsReclone",
                "Rejoining",
                "Following"
            ]
        );
    }
}
