//! Annotation keys users set with `kubectl annotate` to command a pair.

/// Run a planned switchover; the value is a token that makes the request act once.
pub const SWITCHOVER: &str = "dr.understudy.dev/switchover";
/// Optional target site of a switchover.
pub const SWITCHOVER_TO: &str = "dr.understudy.dev/switchover-to";
/// Fail over now, past the guards except the epoch.
pub const FAILOVER: &str = "dr.understudy.dev/failover";
/// Approve a pending failover in `Approve` mode; the value is the nonce the status asks for.
pub const APPROVE: &str = "dr.understudy.dev/approve";
/// `true` suspends every automatic action; `false` resumes.
pub const PAUSED: &str = "dr.understudy.dev/paused";
/// Write the plan to status without acting.
pub const DRY_RUN: &str = "dr.understudy.dev/dry-run";
/// A DR drill: `<token>` runs a switchover to the standby site and back (`status.drills`).
pub const DRILL: &str = "dr.understudy.dev/drill";
/// Stamped by understudy on every object it rewrites: the epoch of the transition that wrote it.
pub const EPOCH: &str = "dr.understudy.dev/epoch";
