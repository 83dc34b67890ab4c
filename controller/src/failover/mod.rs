//! Transitions: the ordered steps of a failover, each idempotent, journalled in
//! `.status.lastTransition.steps` before and after it runs (see `executor`).

pub mod executor;
#[cfg(test)]
pub(crate) mod fakes;
pub mod ports;
#[cfg(test)]
mod scenarios;
pub mod steps;

use std::fmt;

/// One step of a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Switchover: the standby streams and its lag is within budget.
    PreCheck,
    /// Switchover: PgBouncer PAUSE, the primary read-only and its writers terminated; final LSN read.
    Quiesce,
    /// Switchover: wait until the standby has replayed the final LSN (rolls back on timeout).
    CatchUp,
    /// Move the epoch N → N+1 (etcd compare-and-swap, or the status write itself).
    TakeEpoch,
    /// Old primary read-only and its writers terminated, PgBouncer paused; skipped when unreachable.
    Fence,
    /// `pg_promote()` on the standby and wait until it leaves recovery.
    Promote,
    /// Write the epoch into the marker table on the new primary.
    VerifyWritable,
    /// Point every DataSource target at the new primary's DSN.
    RewriteDataSource,
    /// PgBouncer repoint/RESUME, HTTP recycle calls, rollout restarts.
    Recycle,
    /// Move DNS records to the new site and confirm the authoritative answer.
    FlipDns,
}

impl Step {
    /// The steps of an unplanned failover, in order.
    pub const FAILOVER: [Step; 7] = [
        Step::TakeEpoch,
        Step::Fence,
        Step::Promote,
        Step::VerifyWritable,
        Step::RewriteDataSource,
        Step::Recycle,
        Step::FlipDns,
    ];

    /// The steps of a planned switchover, in order. Everything before `TakeEpoch` can be rolled
    /// back (primary writable again, PgBouncer resumed); nothing after it is.
    pub const SWITCHOVER: [Step; 9] = [
        Step::PreCheck,
        Step::Quiesce,
        Step::CatchUp,
        Step::TakeEpoch,
        Step::Promote,
        Step::VerifyWritable,
        Step::RewriteDataSource,
        Step::Recycle,
        Step::FlipDns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::PreCheck => "PreCheck",
            Step::Quiesce => "Quiesce",
            Step::CatchUp => "CatchUp",
            Step::TakeEpoch => "TakeEpoch",
            Step::Fence => "Fence",
            Step::Promote => "Promote",
            Step::VerifyWritable => "VerifyWritable",
            Step::RewriteDataSource => "RewriteDataSource",
            Step::Recycle => "Recycle",
            Step::FlipDns => "FlipDns",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::SWITCHOVER.into_iter().chain(Step::FAILOVER).find(|s| s.name() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(String),
    Skipped(String),
}

/// Why a step did not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again with backoff (a target is down, a write conflicted).
    Retry(String),
    /// Give up the transition and roll back what can be rolled back (switchover before TakeEpoch).
    Abort(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Retry(s)
    }
}

/// The kind of a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Failover,
    Switchover,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failover => "Failover",
            Kind::Switchover => "Switchover",
        }
    }

    pub fn steps(self) -> &'static [Step] {
        match self {
            Kind::Failover => &Step::FAILOVER,
            Kind::Switchover => &Step::SWITCHOVER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_order_is_safe() {
        for s in Step::FAILOVER.into_iter().chain(Step::SWITCHOVER) {
            assert_eq!(Step::from_name(s.name()), Some(s));
        }
        // A switchover cannot promote before the standby has caught up, nor take the epoch before it.
        let sw = |s| Step::SWITCHOVER.iter().position(|x| *x == s).expect("step");
        assert!(sw(Step::Quiesce) < sw(Step::CatchUp) && sw(Step::CatchUp) < sw(Step::TakeEpoch));
        assert!(sw(Step::TakeEpoch) < sw(Step::Promote));
        let pos = |s| Step::FAILOVER.iter().position(|x| *x == s).expect("step");
        // The epoch is taken before anything changes; fencing comes before promotion; writes are
        // proven before the application is pointed at the new primary.
        assert!(pos(Step::TakeEpoch) < pos(Step::Fence));
        assert!(pos(Step::Fence) < pos(Step::Promote));
        assert!(pos(Step::Promote) < pos(Step::VerifyWritable));
        assert!(pos(Step::VerifyWritable) < pos(Step::RewriteDataSource));
        assert!(pos(Step::RewriteDataSource) < pos(Step::FlipDns));
    }
}
