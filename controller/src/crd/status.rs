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
    #[schemars(range(min = 0, max = 9_007_199_254_740_991_i64))]
    pub epoch: i64,
    /// Bytes of WAL the standby has yet to replay (primary's current LSN minus the standby's replay LSN).
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
    pub status: String,
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

/// A failover or switchover and its journal.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// What started it: `Automatic`, `Approved`, `Forced`, `Switchover`.
    pub trigger: String,
    /// The site that served before.
    pub from: String,
    /// The site promoted.
    pub to: String,
    /// The epoch this transition took.
    #[schemars(range(min = 0, max = 9_007_199_254_740_991_i64))]
    pub epoch: i64,
    /// Unique id of the transition (`<pair uid>/<epoch>`), also stored with the epoch in etcd.
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
    /// `Failover` or `Switchover`.
    #[serde(default)]
    pub kind: String,
    /// How it ended: `Completed` or `RolledBack` (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Switchover: the old primary's last WAL position after writers were quiesced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_lsn: Option<String>,
    /// The new primary's WAL position when it was promoted (the fork point of the timelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at_lsn: Option<String>,
    /// The step journal, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
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
    /// `Succeeded`, `Failed`, `Skipped`, or absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
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
    /// `Unreachable`, `CleanFollower` (its WAL ends at or before the fork point), `NeedsRewind`
    /// (it wrote past the fork point: `pg_rewind` first), `NeedsReclone` (it cannot be rewound),
    /// `Rejoining` (the rejoin hook ran) or `Following` (it streams from the new primary).
    pub assessment: String,
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
