//! Transitions: the ordered steps of a failover, each idempotent, journalled in
//! `.status.lastTransition.steps` before and after it runs (see `executor`).

pub mod executor;
#[cfg(test)]
pub(crate) mod fakes;
pub mod ports;
#[cfg(test)]
mod scenarios;
pub mod steps;

use std::{fmt, time::Duration};

use crate::{
    coord::WitnessError,
    crd::{conditions::reasons, StepOutcome},
    datasource::{self, RewriteError},
    dns,
    pg::{
        admin::{self, OpenError},
        Lsn,
    },
    recycle,
};

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

    /// The cutover's moves after the new primary is proven writable: independent of one another
    /// (each only points something at the new primary), so consecutive ones run concurrently, each
    /// still journalled on its own.
    pub fn is_cutover(self) -> bool {
        matches!(self, Step::RewriteDataSource | Step::Recycle | Step::FlipDns)
    }

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

impl Outcome {
    /// The journal's value and the message.
    pub fn parts(self) -> (StepOutcome, String) {
        match self {
            Outcome::Succeeded(m) => (StepOutcome::Succeeded, m),
            Outcome::Skipped(m) => (StepOutcome::Skipped, m),
        }
    }
}

/// What a step error calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// The spec or a Secret is wrong (a missing key, a field that does not parse): retried with
    /// backoff, since the fix can land at any moment.
    Configuration,
    /// A target did not answer or a write conflicted: retried with backoff.
    Transient,
    /// Trying again cannot help. A switchover stops here and is rolled back while it still can
    /// (before `TakeEpoch`); after the epoch is taken nothing can be undone, so the step is
    /// retried like any other until a human steps in.
    Fatal,
}

/// Why a step did not finish. The message is one line naming the target (never a credential).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// No admin session on a site; `context` is what the message starts with (`standby `).
    #[error("{context}{source}")]
    Connect { context: String, source: Box<OpenError> },
    /// A statement failed on a site; `context` is what the message starts with (`fence east: `).
    #[error("{context}{source}")]
    Sql { context: String, source: admin::Error },
    #[error(transparent)]
    Recycle(Box<recycle::Error>),
    #[error(transparent)]
    Dns(Box<dns::Error>),
    #[error(transparent)]
    DataSource(Box<RewriteError>),
    #[error(transparent)]
    Epoch(Box<EpochRefusal>),
    /// A field of the spec that the step cannot use (a site, `dnsTarget`, `maxLagBytes`).
    #[error("{0}")]
    Spec(String),
    #[error("standby {standby} is not in recovery: it does not follow {primary}")]
    NotInRecovery { standby: String, primary: String },
    #[error("standby {standby} is not streaming from {primary} (WAL receiver: {receiver})")]
    NotStreaming { standby: String, primary: String, receiver: String },
    #[error(
        "lag {} > maxLagBytes {}: the catch-up would hold writers too long",
        crate::units::human_bytes(*.lag),
        crate::units::human_bytes(*.max)
    )]
    LagOverBudget { lag: u64, max: u64 },
    #[error("no final LSN recorded by Quiesce")]
    NoFinalLsn,
    #[error("{standby} replayed only up to {replayed} of {target} within catchUpTimeout {timeout:?} ({} bytes short)", .target.bytes_after(*.replayed))]
    CatchUpTimeout { standby: String, replayed: Lsn, target: Lsn, timeout: Duration },
    #[error("{site} marker holds epoch {held}, newer than ours ({ours}): a newer transition owns this pair")]
    NewerMarker { site: String, held: i64, ours: i64 },
    /// A switchover step that kept failing: it stops, so that the switchover can be rolled back.
    #[error("{source} (after {attempts} attempts)")]
    GaveUp { attempts: i32, source: Box<StepError> },
    /// The switchover's pre-check: any doubt stops it before anything changed.
    #[error(transparent)]
    NotReady(Box<StepError>),
    /// Recycle ran beside RewriteDataSource, which failed: the application is recycled only once
    /// its DataSource names the new primary (PgBouncers were repointed already).
    #[error("the application's recyclers wait for RewriteDataSource, which has not succeeded yet")]
    DataSourceNotWritten,
}

impl StepError {
    pub fn category(&self) -> Category {
        use Category::*;
        match self {
            StepError::Connect { source, .. } if source.is_config() => Configuration,
            StepError::Connect { .. } | StepError::Sql { .. } => Transient,
            StepError::Recycle(e) if e.is_config() => Configuration,
            StepError::Recycle(_) => Transient,
            StepError::Dns(e) if matches!(**e, dns::Error::Stale { .. }) => Fatal,
            StepError::Dns(e) if e.is_config() => Configuration,
            StepError::Dns(_) => Transient,
            StepError::DataSource(e) => match e.target() {
                datasource::Error::Stale { .. } => Fatal,
                datasource::Error::Target { .. } => Configuration,
                datasource::Error::Api { .. } => Transient,
            },
            StepError::Epoch(e) => e.category(),
            StepError::DataSourceNotWritten => Transient,
            StepError::Spec(_) => Configuration,
            StepError::NotInRecovery { .. }
            | StepError::NotStreaming { .. }
            | StepError::LagOverBudget { .. }
            | StepError::NoFinalLsn
            | StepError::CatchUpTimeout { .. }
            | StepError::NewerMarker { .. }
            | StepError::GaveUp { .. }
            | StepError::NotReady(_) => Fatal,
        }
    }

    /// `source` with what the step was doing with a site.
    pub fn connect(context: impl Into<String>, source: OpenError) -> StepError {
        StepError::Connect { context: context.into(), source: Box::new(source) }
    }

    /// `source` with what the step was doing on a site.
    pub fn sql(context: impl Into<String>, source: admin::Error) -> StepError {
        StepError::Sql { context: context.into(), source }
    }
}

impl From<recycle::Error> for StepError {
    fn from(e: recycle::Error) -> Self {
        StepError::Recycle(Box::new(e))
    }
}

impl From<dns::Error> for StepError {
    fn from(e: dns::Error) -> Self {
        StepError::Dns(Box::new(e))
    }
}

impl From<RewriteError> for StepError {
    fn from(e: RewriteError) -> Self {
        StepError::DataSource(Box::new(e))
    }
}

impl From<EpochRefusal> for StepError {
    fn from(e: EpochRefusal) -> Self {
        StepError::Epoch(Box::new(e))
    }
}

/// The start of `EpochRefusal::Ahead`'s message.
pub const AHEAD: &str = "the witness is ahead of this pair's status";

/// Why the epoch could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum EpochRefusal {
    #[error("cannot take the epoch: {0}")]
    WitnessUnavailable(WitnessError),
    #[error(
        "{holder} still holds the primary site's leader key in etcd (lease {ttl_left_s}s left): it has not given \
         up serving, so nothing is promoted until the lease expires (by then {holder} has fenced its own database)"
    )]
    LeaderKeyHeld { holder: String, ttl_left_s: i64 },
    /// The witness holds a newer epoch than this status (a pair created again, or another controller).
    #[error("{AHEAD}: etcd holds epoch {held}, this status {ours}")]
    Ahead { held: i64, ours: i64 },
    #[error("epoch {held} is held by {holder} in etcd (ours was {ours}): another controller acted")]
    Lost { held: i64, holder: String, ours: i64 },
}

impl EpochRefusal {
    /// The `FailoverBlocked` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EpochRefusal::WitnessUnavailable(_) => reasons::WITNESS_UNAVAILABLE,
            EpochRefusal::LeaderKeyHeld { .. } => reasons::LEADER_KEY_HELD,
            EpochRefusal::Ahead { .. } | EpochRefusal::Lost { .. } => reasons::LOST_EPOCH_SWAP,
        }
    }

    pub fn category(&self) -> Category {
        match self {
            EpochRefusal::WitnessUnavailable(e) if e.is_config() => Category::Configuration,
            EpochRefusal::WitnessUnavailable(_) | EpochRefusal::LeaderKeyHeld { .. } => Category::Transient,
            EpochRefusal::Ahead { .. } | EpochRefusal::Lost { .. } => Category::Fatal,
        }
    }
}

/// The kind of a transition (the journal's own type).
pub use crate::crd::TransitionKind as Kind;

impl Kind {
    /// The steps of a transition of this kind, in order.
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
