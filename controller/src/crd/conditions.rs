//! Condition types and reasons, as constants. A reason is also the Event reason, verbatim.

/// The primary site answers its SQL and HTTP probes and is not in recovery.
pub const PRIMARY_HEALTHY: &str = "PrimaryHealthy";
/// The standby site answers, is in recovery and its WAL receiver is streaming.
pub const STANDBY_STREAMING: &str = "StandbyStreaming";
/// The standby's replay lag is within `spec.failover.maxLagBytes`.
pub const LAG_WITHIN_BUDGET: &str = "LagWithinBudget";
/// Every Secret the spec references exists and has the keys it needs.
pub const SECRETS_RESOLVED: &str = "SecretsResolved";
/// True while a wanted failover is refused by a guard; the reason names the guard.
pub const FAILOVER_BLOCKED: &str = "FailoverBlocked";
/// Everything a failover needs answers now (checked every 30 s and on a dry-run request).
pub const READY_FOR_FAILOVER: &str = "ReadyForFailover";
/// Set by the primary site's controller (run with `--site`) when a witness is configured: whether
/// it holds the pair's leader key in etcd, or has fenced its own database because it could not.
pub const LEADER_KEY: &str = "LeaderKey";
/// The outcome of the latest command given by annotation: `True` when it was accepted, `False`
/// with the refusal's reason and full message when it was refused (an Event says the same).
pub const LAST_COMMAND: &str = "LastCommand";
/// Whether the spec can be acted on as written; `False` names the field and the fix for a rule
/// that the API server did not check when the object was stored (an object older than the rule).
pub const SPEC_VALID: &str = "SpecValid";
/// `spec.failover.replication` Sync or SyncPreferred: whether the serving primary commits
/// synchronously with a synchronous standby (`True`, reason `Synchronous`), waits for a standby that
/// is away (`False`, `WaitingForStandby`: commits block) or fell back to asynchronous commits
/// (`False`, `Degraded`). Absent under `Async`.
pub const SYNCHRONOUS_REPLICATION: &str = "SynchronousReplication";
/// Summary: the pair is protected (all of the above hold).
pub const READY: &str = "Ready";

/// Reasons.
pub mod reasons {
    pub const PROBES_PASSING: &str = "ProbesPassing";
    pub const PROBE_FAILED: &str = "ProbeFailed";
    pub const PRIMARY_DOWN: &str = "PrimaryDown";
    pub const NOT_PRIMARY: &str = "NotPrimary";
    pub const STREAMING: &str = "Streaming";
    pub const NOT_STREAMING: &str = "NotStreaming";
    pub const NOT_IN_RECOVERY: &str = "NotInRecovery";
    pub const STANDBY_UNREACHABLE: &str = "StandbyUnreachable";
    pub const LAG_OK: &str = "LagOk";
    pub const LAG_OVER_BUDGET: &str = "LagOverBudget";
    pub const LAG_UNKNOWN: &str = "LagUnknown";
    pub const SECRETS_FOUND: &str = "SecretsFound";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    /// A TLS setting cannot be used: a PEM that does not parse, a key that does not fit its
    /// certificate, an endpoint scheme that contradicts the TLS setting.
    pub const TLS_CONFIG_INVALID: &str = "TlsConfigInvalid";
    /// The TLS handshake was refused: wrong CA, a certificate for another name, a server without
    /// TLS, or a client certificate the server rejects. A configuration problem, never a failed probe.
    pub const TLS_HANDSHAKE_FAILED: &str = "TlsHandshakeFailed";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SPEC_OK: &str = "SpecOk";
    pub const ACCEPTED: &str = "Accepted";
    pub const PROTECTED: &str = "Protected";
    pub const NOT_NEEDED: &str = "NotNeeded";
    pub const FAILING_OVER: &str = "FailingOver";
    pub const MANUAL_MODE: &str = "ManualMode";
    pub const PAUSED: &str = "Paused";
    pub const IN_COOLDOWN: &str = "InCooldown";
    pub const STANDBY_UNAVAILABLE: &str = "StandbyUnavailable";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const LOST_EPOCH_SWAP: &str = "LostEpochSwap";
    /// The witness held a newer epoch than the status (a pair created again under an old name):
    /// the status took the witness's epoch and primary.
    pub const EPOCH_ADOPTED: &str = "EpochAdopted";
    /// The transition journal in status holds something understudy did not write (an unknown step).
    pub const INVALID_JOURNAL: &str = "InvalidJournal";
    pub const WITNESS_UNAVAILABLE: &str = "WitnessUnavailable";
    pub const NOT_PROTECTED: &str = "NotProtected";
    pub const LEADER_KEY_HELD: &str = "LeaderKeyHeld";
    pub const ACQUIRING: &str = "Acquiring";
    pub const SELF_FENCED: &str = "SelfFenced";
    /// The primary site gave up its key; SQL could not fence its database, its site fence hook
    /// did, and the key was released at once.
    pub const SITE_FENCE_CONFIRMED: &str = "SiteFenceConfirmed";
    /// As `SiteFenceConfirmed`, but the hook failed, hung or timed out: the key is left to expire.
    pub const SITE_FENCE_FAILED: &str = "SiteFenceFailed";
    /// `ReadyForFailover`: a failover could run now, but could not meet `spec.objectives` (the
    /// message names the figure: the lag over the RPO, or detection + lease + cutover over the RTO).
    pub const OBJECTIVES_AT_RISK: &str = "ObjectivesAtRisk";
    pub const SITE_DEMOTED: &str = "SiteDemoted";
    /// The copies of the pair in the two sites' clusters differ.
    pub const SPEC_DRIFT: &str = "SpecDrift";
    /// This controller's site is the standby: it keeps no leader key.
    pub const STANDBY: &str = "Standby";
    /// A standby is synchronous on the primary.
    pub const SYNCHRONOUS: &str = "Synchronous";
    /// Synchronous commits wait for a standby that is not there.
    pub const WAITING_FOR_STANDBY: &str = "WaitingForStandby";
    /// `SyncPreferred` fell back to asynchronous commits (also the Event `SyncDegraded`).
    pub const DEGRADED: &str = "Degraded";
    /// The failover guard: the standby was not the synchronous one (Sync, SyncPreferred).
    pub const NOT_SYNCHRONOUS: &str = "NotSynchronous";
}

/// Sets a condition; `lastTransitionTime` moves only when the status flips.
pub fn set_condition(
    list: &mut Vec<super::Condition>,
    type_: &str,
    status: super::ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let msg: String = message.chars().take(1024).collect();
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.to_string();
            }
            c.status = status;
            c.reason = reason.into();
            c.message = msg;
            c.observed_generation = generation;
        }
        None => list.push(super::Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: msg,
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }),
    }
}
