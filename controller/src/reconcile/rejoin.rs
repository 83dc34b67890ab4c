//! The way back: after a transition the former primary is watched until it follows the new one.
//! When it answers and is still writable (it was down during the failover and came back), it is
//! fenced at once — two writable primaries is the one state understudy must never leave standing.
//! Then it is assessed against the fork point (the new primary's position at promotion): at or
//! before it, it can simply follow (`CleanFollower`); past it, the timelines diverged and it needs
//! `pg_rewind` (`NeedsRewind`). When the site names a rejoin hook, the hook is run with what it
//! needs, and the site is `Following` once the probes see it streaming.

use std::{process::Stdio, time::Duration};

use jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::{context::Context, events::EventNote};
use crate::{
    crd::{Assessment, DisasterRecoveryPair, DisasterRecoveryPairStatus},
    pg::{
        admin,
        conn::{self, Credentials},
        Lsn,
    },
    secrets::Secrets,
};

/// How many times the hook is tried for one transition.
pub const HOOK_ATTEMPTS: i32 = 3;

/// Advances the former primary's record; returns the Events to publish. Mutates `st` only.
pub async fn step(
    drp: &DisasterRecoveryPair,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    let Some(mut fp) = st.former_primary.clone() else { return events };
    if fp.assessment == Assessment::Following
        || st.last_transition.as_ref().is_some_and(|t| t.finished_at.is_none())
    {
        return events;
    }
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
    } else if site_status.in_recovery == Some(false)
        || fp.assessment == Assessment::Pending
        || fp.assessment == Assessment::Unreachable
    {
        // A standby that nobody rejoined yet is the old primary back behind its boot gate.
        let gated = site_status.in_recovery == Some(true)
            && site_status.streaming != Some(true)
            && matches!(prev, Assessment::Pending | Assessment::Unreachable);
        let writable = assess_and_fence(drp, st, &mut fp, gated, &mut events, ctx).await;
        // The hook restarts the server: only for one that is (fenced but) still a primary or came
        // back behind its gate, never for one that is already a standby on its way to streaming.
        // With a controller per site only the former primary's own controller runs it: the hook
        // acts on that site's server and storage, which with one cluster per site only it reaches.
        let own = ctx.site.as_deref().is_none_or(|s| s == fp.site);
        let hook = drp.spec.sites.iter().find(|s| s.name == fp.site).and_then(|s| s.rejoin.clone());
        if let Some(hook) = hook.filter(|_| {
            own && (writable || gated)
                && matches!(fp.assessment, Assessment::CleanFollower | Assessment::NeedsRewind)
                && fp.rejoin_attempts < HOOK_ATTEMPTS
        }) {
            if !run_hook_claimed(drp, st, &mut fp, &hook, &new_primary, &mut events, ctx).await {
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

/// Assesses the former primary against the fork point, fencing it first when it is writable;
/// records the assessment in `fp` and its Events. Returns whether it was writable.
async fn assess_and_fence(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    fp: &mut crate::crd::FormerPrimary,
    gated: bool,
    events: &mut Vec<EventNote>,
    ctx: &Context,
) -> bool {
    match assess(drp, st, &fp.site, gated, ctx).await {
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
            fp.message = Some(e);
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
    fp: &mut crate::crd::FormerPrimary,
    hook: &crate::crd::RejoinHook,
    new_primary: &str,
    events: &mut Vec<EventNote>,
    ctx: &Context,
) -> bool {
    fp.rejoin_attempts = fp.rejoin_attempts.saturating_add(1);
    let mut claim = st.clone();
    claim.former_primary = Some(crate::crd::FormerPrimary {
        assessment: Assessment::Rejoining,
        message: Some(format!("rejoin hook attempt {} started by {}", fp.rejoin_attempts, ctx.identity)),
        ..fp.clone()
    });
    let Ok(claimed) = crate::store::write_status(ctx, drp, &claim).await else { return false };
    // A server that was still a primary after the fork writes a shutdown checkpoint past it when
    // the hook stops it: always rewind (pg_rewind is a no-op when not needed).
    let rewind = true;
    match run_hook(drp, st, &fp.site, hook, rewind, ctx).await {
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
    if let Err(e) = crate::store::write_status(ctx, &claimed, &done).await {
        warn!(error = %e, "recording the rejoin hook's outcome");
    }
    for ev in events.drain(..) {
        info!(reason = %ev.reason, note = %ev.note, "event");
        ctx.publish(&claimed, ev).await;
    }
    true
}

async fn connect(
    drp: &DisasterRecoveryPair,
    site: &str,
    ctx: &Context,
) -> Result<(tokio_postgres::Client, Credentials, String, u16), String> {
    let ns = drp.namespace().unwrap_or_default();
    let (i, s) = drp.spec.site(site)?;
    let timeout: Duration = drp.spec.failover.probe_timeout();
    let (target, creds) = conn::resolve(&Secrets::new(ctx.client.clone(), &ns), i, s, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let c = tokio::time::timeout(timeout, conn::connect(&target))
        .await
        .map_err(|_| format!("{site}: no answer"))?
        .map_err(|e| e.to_string())?;
    Ok((c, creds, s.postgres.host.clone(), s.postgres.port))
}

/// Fences a writable former primary and compares its WAL position with the fork point.
/// Returns (assessment, message, whether it was still a primary).
async fn assess(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    site: &str,
    gated: bool,
    ctx: &Context,
) -> Result<(Assessment, String, bool), String> {
    let (c, _, _, _) = connect(drp, site, ctx).await?;
    let mut notes = Vec::new();
    if !admin::in_recovery(&c).await.map_err(|e| e.to_string())? {
        let fenced = admin::fence(&c).await.map_err(|e| format!("fence former primary {site}: {e}"))?;
        notes.push(format!(
            "{site} came back writable and was fenced (read-only, {fenced} sessions terminated)"
        ));
        let head = admin::current_lsn(&c).await.map_err(|e| e.to_string())?;
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
        let (_, replayed) = admin::standby_lsns(&c).await.map_err(|e| e.to_string())?;
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

async fn run_hook(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    site: &str,
    hook: &crate::crd::RejoinHook,
    rewind: bool,
    ctx: &Context,
) -> Result<String, String> {
    let primary = crate::authority::primary(&drp.spec, Some(st)).site.to_string();
    let (c, creds, host, port) = connect(drp, &primary, ctx).await.map_err(|e| format!("new primary {e}"))?;
    // A fast promotion records the new timeline in pg_control only at its next checkpoint; until
    // then pg_rewind sees "the same timeline" and wrongly skips the rewind. Checkpoint first.
    c.batch_execute("CHECKPOINT")
        .await
        .map_err(|e| format!("CHECKPOINT on new primary {primary}: {}", conn::describe(&e)))?;
    let (program, args) = hook.command.split_first().ok_or("spec.sites[*].rejoin.command is empty")?;
    let timeout: Duration = hook.timeout.into();
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("UNDERSTUDY_SITE", site)
        .env("UNDERSTUDY_EPOCH", st.epoch.to_string())
        .env("UNDERSTUDY_PRIMARY_HOST", &host)
        .env("UNDERSTUDY_PRIMARY_PORT", port.to_string())
        .env("UNDERSTUDY_PRIMARY_USER", &creds.username)
        .env("UNDERSTUDY_PRIMARY_PASSWORD", &creds.password)
        .env("UNDERSTUDY_REWIND", if rewind { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {program}: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not finish within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).replace(&creds.password, "<redacted>");
        return Ok(said.lines().last().unwrap_or_default().chars().take(200).collect());
    }
    // The hook's own words, minus anything that could be the credentials it was given.
    let tail: String = String::from_utf8_lossy(&out.stderr)
        .replace(&creds.password, "<redacted>")
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    warn!(%program, status = %out.status, "rejoin hook failed");
    Err(format!("{program} exited with {}: {}", out.status, tail.chars().take(300).collect::<String>()))
}
