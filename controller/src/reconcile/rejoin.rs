//! The way back: after a transition the former primary is watched until it follows the new one.
//! When it answers and is still writable (it was down during the failover and came back), it is
//! fenced at once — two writable primaries is the one state understudy must never leave standing.
//! Then it is assessed against the fork point (the new primary's position at promotion): at or
//! before it, it can simply follow (`CleanFollower`); past it, the timelines diverged and it needs
//! `pg_rewind` (`NeedsRewind`). When the site names a rejoin hook, the hook is run with what it
//! needs, and the site is `Following` once the probes see it streaming.
//!
//! Every side effect goes through a port (`RejoinPorts`): the server through `PgAdmin`, the hook
//! through `hook::HookRunner`, the claim and outcome writes through the status store, the Events
//! of a claimed round through `Events`; `RejoinPorts::real` wires the controller's, the tests' fakes.

pub mod hook;
pub mod job;

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use self::hook::{CommandHook, HookCall, HookError, HookRunner, SiteHook};
use crate::{
    context::Context,
    crd::{Assessment, DisasterRecoveryPair, DisasterRecoveryPairStatus, FormerPrimary, RejoinHook},
    events::EventNote,
    failover::ports::{ContextEvents, Events},
    pg::{
        admin::{self, OpenError, PgAdmin, SiteAdmin},
        Lsn,
    },
    secrets::Secrets,
    store::{KubeStore, StatusStore},
};

/// How many times the hook is tried for one transition.
pub const HOOK_ATTEMPTS: i32 = 3;

/// What the rejoin acts through, for one pair.
pub struct RejoinPorts<'a> {
    /// Who claims a hook run (the journal's `holder`: `--site`, else the instance name).
    pub identity: String,
    /// The site this controller runs at (`--site`): with one, only the former primary's own
    /// controller runs its hook.
    pub site: Option<String>,
    pub pg: Arc<dyn PgAdmin + 'a>,
    pub hook: Arc<dyn HookRunner + 'a>,
    pub store: Arc<dyn StatusStore + 'a>,
    pub events: Arc<dyn Events + 'a>,
}

impl<'a> RejoinPorts<'a> {
    /// The real ports of `drp`, on the controller's clients (the probe timeout bounds every
    /// connection and Secret read).
    pub fn real(ctx: &'a Context, drp: &DisasterRecoveryPair) -> RejoinPorts<'a> {
        let secrets = Secrets::new(ctx.client.clone(), &drp.namespace().unwrap_or_default());
        let timeout = drp.spec.failover.probe_timeout();
        RejoinPorts {
            identity: ctx.identity.clone(),
            site: ctx.site.clone(),
            pg: Arc::new(SiteAdmin { secrets: secrets.clone(), spec: drp.spec.clone(), timeout }),
            // `rejoin.command` runs here, `rejoin.job` as a Job in the pair's namespace.
            hook: Arc::new(SiteHook {
                command: CommandHook { secrets: secrets.clone(), spec: drp.spec.clone(), timeout },
                job: job::JobHook { client: ctx.client.clone(), secrets, pair: drp.clone(), poll: job::POLL },
            }),
            store: Arc::new(KubeStore(ctx.client.clone())),
            events: Arc::new(ContextEvents(ctx)),
        }
    }
}

/// Why the former primary could not be assessed (the text goes to `formerPrimary.message`).
#[derive(Debug, thiserror::Error)]
enum AssessError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("fence former primary {site}: {source}")]
    Fence { site: String, source: admin::Error },
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// Why a hook attempt failed before or while the hook ran.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("new primary {0}")]
    Open(OpenError),
    #[error("CHECKPOINT on new primary {primary}: {reason}")]
    Checkpoint { primary: String, reason: String },
    #[error(transparent)]
    Hook(#[from] HookError),
}

/// Advances the former primary's record; returns the Events to publish. Mutates `st` only (a
/// claimed hook run also writes the status and publishes its Events itself, see `run_hook_claimed`).
pub async fn step(
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Vec<EventNote> {
    if !due(st) {
        return Vec::new();
    }
    step_with(drp, st, &RejoinPorts::real(ctx, drp)).await
}

/// Whether there is a former primary to watch: one recorded and probed, not following yet, and no
/// transition running.
fn due(st: &DisasterRecoveryPairStatus) -> bool {
    st.former_primary.as_ref().is_some_and(|fp| {
        fp.assessment != Assessment::Following && st.sites.iter().any(|s| s.name == fp.site)
    }) && st.last_transition.as_ref().is_none_or(|t| t.finished_at.is_some())
}

/// `step` through the given ports.
pub async fn step_with(
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    ports: &RejoinPorts<'_>,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    if !due(st) {
        return events;
    }
    let Some(mut fp) = st.former_primary.clone() else { return events };
    let Some(site_status) = st.sites.iter().find(|s| s.name == fp.site).cloned() else { return events };
    let now = Timestamp::now();
    let new_primary = crate::authority::primary(&drp.spec, Some(st)).site.to_string();
    let prev = fp.assessment;

    if site_status.reachable && site_status.in_recovery == Some(true) && site_status.streaming == Some(true) {
        fp.assessment = Assessment::Following;
        fp.message = Some(format!("{} streams from {new_primary} again: the pair is protected", fp.site));
    } else if !site_status.reachable {
        if fp.assessment != Assessment::Rejoining {
            fp.assessment = Assessment::Unreachable;
            fp.message = site_status.message.clone();
        }
    } else if settled(drp, &fp, &site_status, ports) {
        // Fenced and assessed, and no hook of ours to run: it stays fenced (its own controller
        // rejoins it, or a person re-clones it). Fencing it again every round would only terminate
        // its sessions once a round.
    } else if site_status.in_recovery == Some(false)
        || fp.assessment == Assessment::Pending
        || fp.assessment == Assessment::Unreachable
    {
        // A standby that nobody rejoined yet is the old primary back behind its boot gate.
        let gated = site_status.in_recovery == Some(true)
            && site_status.streaming != Some(true)
            && matches!(prev, Assessment::Pending | Assessment::Unreachable);
        let writable = assess_and_fence(st, &mut fp, gated, &mut events, ports).await;
        // The hook restarts the server: only for one that is (fenced but) still a primary or came
        // back behind its gate, never for one that is already a standby on its way to streaming.
        // With a controller per site only the former primary's own controller runs it: the hook
        // acts on that site's server and storage, which with one cluster per site only it reaches.
        let own = ports.site.as_deref().is_none_or(|s| s == fp.site);
        let hook = drp.spec.sites.iter().find(|s| s.name == fp.site).and_then(|s| s.rejoin.clone());
        if let Some(hook) = hook.filter(|_| {
            own && (writable || gated)
                && matches!(fp.assessment, Assessment::CleanFollower | Assessment::NeedsRewind)
                && fp.rejoin_attempts < HOOK_ATTEMPTS
        }) {
            if !run_hook_claimed(drp, st, &mut fp, &hook, &new_primary, &mut events, ports).await {
                // Another controller claimed this attempt (or the claim could not be written):
                // nothing is recorded this round.
                return events;
            }
        }
    }
    if fp.assessment != prev {
        fp.assessed_at = Some(now.to_string());
        info!(site = %fp.site, assessment = %fp.assessment, "former primary");
        if fp.assessment == Assessment::Following {
            events.push(EventNote {
                warning: false,
                reason: format!("FormerPrimary{}", fp.assessment),
                note: fp.message.clone().unwrap_or_default(),
            });
        }
    }
    st.former_primary = Some(fp);
    events
}

/// A former primary already fenced (the probes read it read-only) and assessed, whose hook is not
/// this controller's to run (none, another site's controller, or its attempts used up).
fn settled(
    drp: &DisasterRecoveryPair,
    fp: &FormerPrimary,
    site: &crate::crd::SiteStatus,
    ports: &RejoinPorts<'_>,
) -> bool {
    let assessed = matches!(
        fp.assessment,
        Assessment::CleanFollower | Assessment::NeedsRewind | Assessment::NeedsReclone
    );
    let own = ports.site.as_deref().is_none_or(|s| s == fp.site);
    let has_hook = drp.spec.sites.iter().any(|s| s.name == fp.site && s.rejoin.is_some());
    let hook_left =
        own && has_hook && fp.assessment != Assessment::NeedsReclone && fp.rejoin_attempts < HOOK_ATTEMPTS;
    site.fenced == Some(true) && site.in_recovery == Some(false) && assessed && !hook_left
}

/// Assesses the former primary against the fork point, fencing it first when it is writable;
/// records the assessment in `fp` and its Events. Returns whether it was writable.
async fn assess_and_fence(
    st: &DisasterRecoveryPairStatus,
    fp: &mut FormerPrimary,
    gated: bool,
    events: &mut Vec<EventNote>,
    ports: &RejoinPorts<'_>,
) -> bool {
    match assess(st, &fp.site, gated, ports).await {
        Ok((assessment, msg, was_writable)) => {
            if was_writable {
                events.push(EventNote {
                    warning: true,
                    reason: "FormerPrimaryFenced".into(),
                    note: msg.clone(),
                });
            }
            if assessment != fp.assessment {
                events.push(EventNote {
                    warning: false,
                    reason: format!("FormerPrimary{assessment}"),
                    note: msg.clone(),
                });
            }
            fp.assessment = assessment;
            fp.message = Some(msg);
            was_writable
        }
        Err(e) => {
            fp.message = Some(e.to_string());
            false
        }
    }
}

/// Runs the site's rejoin hook once, claimed first: the attempt is written to the status (a
/// resourceVersion-guarded write) so that with a controller per site only the one whose write
/// lands runs it; the other sees `Rejoining` and leaves it alone. The outcome is written on top of
/// the claim, and this round's Events are published here (the caller's own status write then
/// meets a newer resourceVersion, and its Events would be dropped with it). Returns whether the
/// claim was written (and the hook run).
async fn run_hook_claimed(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    fp: &mut FormerPrimary,
    hook: &RejoinHook,
    new_primary: &str,
    events: &mut Vec<EventNote>,
    ports: &RejoinPorts<'_>,
) -> bool {
    fp.rejoin_attempts = fp.rejoin_attempts.saturating_add(1);
    let mut claim = st.clone();
    claim.former_primary = Some(FormerPrimary {
        assessment: Assessment::Rejoining,
        message: Some(format!("rejoin hook attempt {} started by {}", fp.rejoin_attempts, ports.identity)),
        ..fp.clone()
    });
    let Ok(claimed) = ports.store.write_status(drp, &claim).await else { return false };
    // A server that was still a primary after the fork writes a shutdown checkpoint past it when
    // the hook stops it: always rewind (pg_rewind is a no-op when not needed).
    let rewind = true;
    match run_hook(drp, st, &fp.site, hook, rewind, fp.rejoin_attempts, ports).await {
        Ok(said) => {
            fp.assessment = Assessment::Rejoining;
            fp.message = Some(format!(
                "rejoin hook succeeded (rewind: {rewind}): {said}; waiting for {} to stream from {new_primary}",
                fp.site
            ));
            events.push(EventNote {
                warning: false,
                reason: "RejoinHookSucceeded".into(),
                note: fp.message.clone().unwrap_or_default(),
            });
        }
        Err(e) => {
            let last = fp.rejoin_attempts >= HOOK_ATTEMPTS;
            if last {
                fp.assessment = Assessment::NeedsReclone;
            }
            let msg = format!(
                "rejoin hook attempt {}: {e}{}",
                fp.rejoin_attempts,
                if last { "; giving up: re-create this standby from a base backup" } else { "" }
            );
            events.push(EventNote { warning: true, reason: "RejoinHookFailed".into(), note: msg.clone() });
            fp.message = Some(msg);
        }
    }
    let mut done = st.clone();
    done.former_primary = Some(fp.clone());
    if let Err(e) = ports.store.write_status(&claimed, &done).await {
        warn!(error = %e, "recording the rejoin hook's outcome");
    }
    for ev in events.drain(..) {
        info!(reason = %ev.reason, note = %ev.note, "event");
        ports.events.publish(&claimed, ev).await;
    }
    true
}

/// Fences a writable former primary and compares its WAL position with the fork point.
/// Returns (assessment, message, whether it was still a primary).
async fn assess(
    st: &DisasterRecoveryPairStatus,
    site: &str,
    gated: bool,
    ports: &RejoinPorts<'_>,
) -> Result<(Assessment, String, bool), AssessError> {
    let c = ports.pg.connect(site).await?;
    let mut notes = Vec::new();
    if !c.in_recovery().await? {
        let fenced = c.fence().await.map_err(|source| AssessError::Fence { site: site.into(), source })?;
        notes.push(format!(
            "{site} came back writable and was fenced (read-only, {fenced} sessions terminated)"
        ));
        let head = c.current_lsn().await?;
        let fork: Option<Lsn> = st
            .last_transition
            .as_ref()
            .and_then(|t| t.promoted_at_lsn.as_deref())
            .and_then(|l| l.parse().ok());
        let (assessment, why) = match fork {
            Some(f) if head <= f => (Assessment::CleanFollower, format!("its WAL ends at {head}, at or before the fork point {f} (its shutdown checkpoint will be rewound)")),
            Some(f) => (Assessment::NeedsRewind, format!("its WAL reaches {head}, {} bytes past the fork point {f}: pg_rewind first", head.bytes_after(f))),
            None => (Assessment::NeedsRewind, format!("its WAL reaches {head} and the fork point is unknown: pg_rewind first")),
        };
        notes.push(why);
        return Ok((assessment, notes.join("; "), true));
    }
    if gated {
        let (_, replayed) = c.standby_lsns().await?;
        let at = replayed.map(|l| l.to_string()).unwrap_or_else(|| "an unknown position".into());
        return Ok((
            Assessment::NeedsRewind,
            format!(
                "{site} came back as a standby behind its boot gate (it accepts no write); its WAL reaches \
                 {at} on its old timeline: pg_rewind first"
            ),
            false,
        ));
    }
    Ok((Assessment::CleanFollower, format!("{site} is in recovery but not streaming yet"), false))
}

/// One hook attempt: the new primary checkpointed, then the hook run.
async fn run_hook(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    site: &str,
    hook: &RejoinHook,
    rewind: bool,
    attempt: i32,
    ports: &RejoinPorts<'_>,
) -> Result<String, AttemptError> {
    let primary = crate::authority::primary(&drp.spec, Some(st)).site.to_string();
    let c = ports.pg.connect(&primary).await.map_err(AttemptError::Open)?;
    // A fast promotion records the new timeline in pg_control only at its next checkpoint; until
    // then pg_rewind sees "the same timeline" and wrongly skips the rewind. Checkpoint first.
    c.checkpoint()
        .await
        .map_err(|e| AttemptError::Checkpoint { primary: primary.clone(), reason: e.reason })?;
    let call = HookCall { site: site.into(), epoch: st.epoch, primary, rewind, attempt };
    Ok(ports.hook.run(hook, &call).await?)
}

#[cfg(test)]
mod tests;
