//! Synchronous replication (`spec.failover.replication` `Sync` or `SyncPreferred`): the serving
//! primary's `synchronous_standby_names`, kept by the controller that acts on the primary's site
//! (any controller without `--site`; with one controller per site, the primary site's own), every
//! round, from what the probes saw on it.
//!
//! `Sync` keeps `*` whatever happens: with the standby away, commits wait. `SyncPreferred` keeps
//! `*` while a synchronous standby is seen, and when none has been for `syncDegradeAfter` sets the
//! empty string (asynchronous commits; condition `SynchronousReplication` `Degraded`, Warning Event
//! `SyncDegraded`, metric `understudy_sync_degraded`); once the standby streams again within
//! `maxLagBytes` it sets `*` again (Event `SyncRestored`). The decision is `plan` (pure); `converge`
//! applies it. Under `Async` nothing is touched, except once after leaving a synchronous mode
//! (the setting understudy made is cleared).

use jiff::Timestamp;
use tracing::warn;

use crate::{
    context::Context,
    crd::{
        conditions::{self, reasons, set_condition},
        ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus,
        ReplicationMode, SyncStatus,
    },
    events::EventNote,
    failover::steps::wanted_names,
    pg::admin::{PgAdmin, SiteAdmin},
    secrets::Secrets,
    units::quantity_bytes,
};

/// What a round does about synchronous replication.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The value to set on the primary, when it differs from what the probe saw.
    pub apply: Option<String>,
    pub events: Vec<EventNote>,
}

/// Decides the round (pure): updates `st.sync` and the `SynchronousReplication` condition, and
/// says what to set on the primary. `acting`: this controller acts on the primary's site.
pub fn plan(
    spec: &DisasterRecoveryPairSpec,
    st: &mut DisasterRecoveryPairStatus,
    acting: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> Plan {
    let mode = spec.failover.replication;
    let who = crate::authority::primary(spec, Some(st));
    let (from, to) = (who.site.to_string(), who.standby.to_string());
    let p = st.sites.iter().find(|s| s.name == from).cloned();
    let s = st.sites.iter().find(|s| s.name == to).cloned();
    let mut out = Plan::default();
    // Only a primary that answers, serves and is not fenced is acted on.
    let Some(p) = p.filter(|p| p.reachable && p.in_recovery == Some(false) && p.fenced != Some(true)) else {
        return out;
    };
    let seen_names = p.synchronous_standby_names.clone().unwrap_or_default();
    let Some(star) = wanted_names(mode) else {
        // Async: clear what a synchronous mode set, once.
        if st.sync.take().is_some() && acting && !seen_names.is_empty() {
            out.apply = Some(String::new());
        }
        st.conditions.retain(|c| c.type_ != conditions::SYNCHRONOUS_REPLICATION);
        return out;
    };
    let synced = p.synchronous_standby == Some(true);
    let condition = |st: &mut DisasterRecoveryPairStatus, status, reason, msg: String| {
        set_condition(
            &mut st.conditions,
            conditions::SYNCHRONOUS_REPLICATION,
            status,
            reason,
            &msg,
            generation,
            now,
        )
    };
    if !acting {
        // The other site's controller reports what its probes see and changes nothing.
        let (status, reason, msg) = if synced {
            (
                ConditionStatus::True,
                reasons::SYNCHRONOUS,
                format!("{from} commits synchronously: {to} is its synchronous standby"),
            )
        } else if seen_names.is_empty() {
            (
                ConditionStatus::False,
                reasons::DEGRADED,
                format!("{from} commits asynchronously (synchronous_standby_names is empty)"),
            )
        } else {
            (ConditionStatus::False, reasons::WAITING_FOR_STANDBY, format!("{from}'s commits wait: it shows no synchronous standby (synchronous_standby_names = '{seen_names}')"))
        };
        // With both sites' controllers in one cluster the serving site's controller writes the same
        // condition in its own words: a matching status and reason is left as it is (no flapping).
        let same = st.conditions.iter().any(|c| {
            c.type_ == conditions::SYNCHRONOUS_REPLICATION && c.status == status && c.reason == reason
        });
        if !same {
            condition(st, status, reason, msg);
        }
        return out;
    }
    let prev = st.sync.clone().unwrap_or_default();
    let mut next = SyncStatus {
        wanted_names: star.to_string(),
        unsynchronized_since: if synced {
            None
        } else {
            prev.unsynchronized_since.clone().or(Some(now.to_string()))
        },
        degraded_since: None,
    };
    let since = next.unsynchronized_since.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let after = spec.failover.sync_degrade_after();
    let standby_why = s
        .as_ref()
        .map(|s| match (&s.message, s.reachable, s.streaming) {
            (Some(m), _, _) => m.clone(),
            (None, false, _) => "unreachable".into(),
            (None, true, Some(true)) => "streaming, not yet synchronous".into(),
            (None, true, _) => "not streaming".into(),
        })
        .unwrap_or_else(|| "never probed".into());
    if mode == ReplicationMode::SyncPreferred {
        let streaming_within_budget = s.as_ref().is_some_and(|s| s.reachable && s.streaming == Some(true))
            && matches!((st.replication_lag_bytes, quantity_bytes(&spec.failover.max_lag_bytes.0)),
                (Some(lag), Ok(max)) if lag >= 0 && lag as u64 <= max);
        if let Some(d) = prev.degraded_since.clone() {
            if streaming_within_budget {
                // Back to synchronous; the standby gets `syncDegradeAfter` again to become synchronous.
                next.unsynchronized_since = if synced { None } else { Some(now.to_string()) };
                out.events.push(EventNote {
                    warning: false,
                    reason: "SyncRestored".into(),
                    note: format!("{to} streams again within maxLagBytes: {from} commits synchronously again (synchronous_standby_names = '{star}')"),
                });
            } else {
                next.degraded_since = Some(d);
                next.wanted_names = String::new();
            }
        } else if let Some(since) = since.filter(|t| {
            jiff::SignedDuration::try_from(after)
                .ok()
                .and_then(|a| t.checked_add(a).ok())
                .is_some_and(|end| now >= end)
        }) {
            next.degraded_since = Some(now.to_string());
            next.wanted_names = String::new();
            out.events.push(EventNote {
                warning: true,
                reason: "SyncDegraded".into(),
                note: format!(
                    "{to} has not been a synchronous standby since {since} (syncDegradeAfter {after:?}; {to}: {standby_why}): \
                     {from} now commits asynchronously, so a failover could lose commits acknowledged from now on \
                     (automatic failover: spec.failover.degradedFailover)"
                ),
            });
        }
    }
    let (status, reason, msg) = if let Some(d) = &next.degraded_since {
        (ConditionStatus::False, reasons::DEGRADED, format!(
            "SyncPreferred fell back to asynchronous commits at {d}: {to} was not synchronous for syncDegradeAfter \
             {after:?} ({standby_why}); synchronous again once {to} streams within maxLagBytes"
        ))
    } else if synced && seen_names == star {
        (ConditionStatus::True, reasons::SYNCHRONOUS, format!(
            "{from} commits synchronously: {to} is its synchronous standby (synchronous_standby_names = '{star}')"
        ))
    } else {
        let fallback = if mode == ReplicationMode::SyncPreferred {
            format!("; SyncPreferred falls back to asynchronous commits after syncDegradeAfter {after:?}")
        } else {
            "; Sync waits as long as it takes".into()
        };
        (
            ConditionStatus::False,
            reasons::WAITING_FOR_STANDBY,
            format!(
                "{from}'s commits wait for a synchronous standby since {} ({to}: {standby_why}){fallback}",
                next.unsynchronized_since.as_deref().unwrap_or("now")
            ),
        )
    };
    condition(st, status, reason, msg);
    if seen_names != next.wanted_names {
        out.apply = Some(next.wanted_names.clone());
    }
    st.sync = Some(next);
    out
}

/// Plans the round and sets `synchronous_standby_names` on the primary when this controller acts
/// on its site; returns the Events.
pub async fn converge(
    drp: &DisasterRecoveryPair,
    key: &str,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
    now: Timestamp,
) -> Vec<EventNote> {
    if drp.spec.failover.replication.is_async()
        && st.sync.is_none()
        && !st.conditions.iter().any(|c| c.type_ == conditions::SYNCHRONOUS_REPLICATION)
    {
        return vec![];
    }
    let primary = crate::authority::primary(&drp.spec, Some(st)).site.to_string();
    let acting = crate::crd::acts_here(Some(&primary), ctx.site.as_deref());
    let mut plan = plan(&drp.spec, st, acting, drp.metadata.generation, now);
    let label = crate::metrics::PairLabels { pair: key.to_string() };
    let synced =
        st.sites.iter().find(|s| s.name == primary).and_then(|s| s.synchronous_standby) == Some(true);
    ctx.metrics.synchronous_standby.get_or_create(&label).set(i64::from(synced));
    let degraded = st.sync.as_ref().is_some_and(|s| s.degraded_since.is_some());
    ctx.metrics.sync_degraded.get_or_create(&label).set(i64::from(degraded));
    if let Some(names) = plan.apply.take() {
        let ns = drp.metadata.namespace.clone().unwrap_or_default();
        let admin = SiteAdmin {
            secrets: Secrets::new(ctx.client.clone(), &ns),
            spec: drp.spec.clone(),
            timeout: drp.spec.failover.effective_probe_timeout(),
        };
        let res = match admin.connect(&primary).await {
            Ok(c) => c.set_synchronous_standby_names(&names).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = res {
            // Tried again next round; the condition keeps saying what the primary does.
            warn!(pair = key, site = %primary, error = %e, "setting synchronous_standby_names = '{names}'");
        }
    }
    plan.events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{test_spec, SiteStatus};

    fn spec(mode: ReplicationMode) -> DisasterRecoveryPairSpec {
        let mut s = test_spec().with_witness("http://w:2379");
        s.failover.replication = mode;
        s
    }

    /// East serving with `names` and a synchronous standby or not; west streaming or not.
    fn status(names: &str, synced: bool, west_streams: bool) -> DisasterRecoveryPairStatus {
        DisasterRecoveryPairStatus {
            current_primary: Some("east".into()),
            replication_lag_bytes: Some(0),
            sites: vec![
                SiteStatus {
                    name: "east".into(),
                    reachable: true,
                    in_recovery: Some(false),
                    fenced: Some(false),
                    synchronous_standby_names: Some(names.into()),
                    synchronous_standby: Some(synced),
                    ..Default::default()
                },
                SiteStatus {
                    name: "west".into(),
                    reachable: west_streams,
                    in_recovery: Some(true),
                    streaming: Some(west_streams),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("ts")
    }

    fn cond(st: &DisasterRecoveryPairStatus) -> (ConditionStatus, String) {
        let c =
            st.conditions.iter().find(|c| c.type_ == conditions::SYNCHRONOUS_REPLICATION).expect("condition");
        (c.status, c.reason.clone())
    }

    #[test]
    fn async_touches_nothing_and_sync_sets_star_and_waits() {
        let mut st = status("", false, true);
        assert_eq!(plan(&spec(ReplicationMode::Async), &mut st, true, None, at(0)), Plan::default());
        assert!(st.conditions.is_empty() && st.sync.is_none());

        let sync = spec(ReplicationMode::Sync);
        let p = plan(&sync, &mut st, true, None, at(0));
        assert_eq!(p.apply.as_deref(), Some("*"));
        assert_eq!(cond(&st), (ConditionStatus::False, reasons::WAITING_FOR_STANDBY.into()));
        // West synchronous: True, nothing to set. Gone for an hour: Sync still waits, never degrades.
        let mut st = status("*", true, true);
        assert_eq!(plan(&sync, &mut st, true, None, at(1)).apply, None);
        assert_eq!(cond(&st), (ConditionStatus::True, reasons::SYNCHRONOUS.into()));
        let mut gone = status("*", false, false);
        gone.sync = st.sync.clone();
        plan(&sync, &mut gone, true, None, at(2));
        let p = plan(&sync, &mut gone, true, None, at(3600));
        assert_eq!((p.apply, p.events.len()), (None, 0));
        assert_eq!(cond(&gone), (ConditionStatus::False, reasons::WAITING_FOR_STANDBY.into()));
        assert_eq!(gone.sync.as_ref().and_then(|s| s.unsynchronized_since.clone()), Some(at(2).to_string()));

        // Back to Async: the setting understudy made is cleared once, the condition removed.
        let p = plan(&spec(ReplicationMode::Async), &mut gone, true, None, at(3601));
        assert_eq!(p.apply.as_deref(), Some(""));
        assert!(gone.sync.is_none() && gone.conditions.is_empty());
    }

    #[test]
    fn sync_preferred_degrades_after_the_set_time_and_recovers_when_the_standby_streams() {
        let pref = spec(ReplicationMode::SyncPreferred); // syncDegradeAfter: 10s by default
        let mut st = status("*", true, true);
        plan(&pref, &mut st, true, None, at(0));
        // West stops: the primary waits, then degrades 10 s later, once, with a Warning.
        let carry = |from: &DisasterRecoveryPairStatus, mut to: DisasterRecoveryPairStatus| {
            to.sync = from.sync.clone();
            to.conditions = from.conditions.clone();
            to
        };
        let mut st = carry(&st, status("*", false, false));
        let p = plan(&pref, &mut st, true, None, at(1));
        assert_eq!((p.apply, p.events.len()), (None, 0));
        let p = plan(&pref, &mut st, true, None, at(10));
        assert_eq!((p.apply, p.events.len()), (None, 0), "9 s: still waiting");
        let p = plan(&pref, &mut st, true, None, at(11));
        assert_eq!(p.apply.as_deref(), Some(""));
        assert_eq!(
            p.events.iter().map(|e| (e.warning, e.reason.as_str())).collect::<Vec<_>>(),
            [(true, "SyncDegraded")]
        );
        assert!(
            p.events[0].note.contains("west has not been a synchronous standby since"),
            "{}",
            p.events[0].note
        );
        assert_eq!(cond(&st), (ConditionStatus::False, reasons::DEGRADED.into()));
        // Degraded, applied, west still away: nothing more.
        let mut st = carry(&st, status("", false, false));
        let p = plan(&pref, &mut st, true, None, at(20));
        assert_eq!(p, Plan::default());
        // West streams again within budget: synchronous again, with a Normal Event.
        let mut st = carry(&st, status("", false, true));
        let p = plan(&pref, &mut st, true, None, at(30));
        assert_eq!(p.apply.as_deref(), Some("*"));
        assert_eq!(
            p.events.iter().map(|e| (e.warning, e.reason.as_str())).collect::<Vec<_>>(),
            [(false, "SyncRestored")]
        );
        assert_eq!(cond(&st), (ConditionStatus::False, reasons::WAITING_FOR_STANDBY.into()));
        // It gets syncDegradeAfter afresh: not degraded again at once.
        let mut st = carry(&st, status("*", false, true));
        assert_eq!(plan(&pref, &mut st, true, None, at(31)), Plan::default());
        let mut st = carry(&st, status("*", true, true));
        assert_eq!(plan(&pref, &mut st, true, None, at(32)), Plan::default());
        assert_eq!(cond(&st), (ConditionStatus::True, reasons::SYNCHRONOUS.into()));
        assert_eq!(
            st.sync.as_ref().map(|s| (s.unsynchronized_since.clone(), s.degraded_since.clone())),
            Some((None, None))
        );
    }

    #[test]
    fn only_the_controller_of_the_primary_site_acts_and_a_down_primary_is_left_alone() {
        let pref = spec(ReplicationMode::SyncPreferred);
        let mut st = status("", false, false);
        let p = plan(&pref, &mut st, false, None, at(0));
        assert_eq!(p, Plan::default());
        assert_eq!(cond(&st), (ConditionStatus::False, reasons::DEGRADED.into()));
        assert!(st.sync.is_none());
        let mut down = status("*", true, true);
        down.sites[0].reachable = false;
        assert_eq!(plan(&pref, &mut down, true, None, at(0)), Plan::default());
        assert!(down.conditions.is_empty());
    }
}
