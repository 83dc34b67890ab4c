//! The reconciler's side of the primary site's leader key: a controller run with `--site` starts
//! the keeper (`coord::keeper`) of every pair whose current primary is its site and that has a
//! witness, hands it fresh credentials each round, stops it when the site no longer serves, and
//! copies what the keeper reports into the `LeaderKey` condition and the `leader_key` metric.

use jiff::Timestamp;

use crate::context::Context;
use crate::{
    coord::{keeper, Timing},
    crd::{
        conditions::{self, reasons},
        ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus,
    },
    pg::conn,
    secrets::Secrets,
};

/// Starts, refreshes or stops the keeper of one pair and records its state.
pub async fn tend(
    drp: &DisasterRecoveryPair,
    ns: &str,
    name: &str,
    st: &mut DisasterRecoveryPairStatus,
    events: &mut Vec<crate::events::EventNote>,
    ctx: &Context,
    now: Timestamp,
) {
    let pair = format!("{ns}/{name}");
    let etcd = drp.spec.coordination.as_ref().and_then(|c| c.etcd.as_ref());
    let (Some(site), Some(etcd)) = (ctx.site.as_deref(), etcd) else {
        ctx.keepers.stop(&pair);
        return;
    };
    let primary = crate::authority::primary(&drp.spec, Some(st));
    if primary.site != site {
        // The other site took over, maybe before a reconcile recorded how this site's keeper let
        // the key go: a site fence hook's outcome is announced now, before its state goes.
        let hook_run = ctx.keepers.state(&pair).and_then(|k| k.site_fence.zip(k.self_fenced));
        ctx.keepers.stop(&pair);
        if let Some((run, (_, msg))) = hook_run {
            let reason =
                if run.confirmed { reasons::SITE_FENCE_CONFIRMED } else { reasons::SITE_FENCE_FAILED };
            let told = st.conditions.iter().any(|c| c.type_ == conditions::LEADER_KEY && c.reason == reason);
            if !told {
                events.push(crate::events::EventNote {
                    warning: true,
                    reason: reason.into(),
                    note: format!("{site} fenced itself: {msg}"),
                });
            }
        }
        // Say so where this site's key was held (or fenced) before: it does not serve any more. (With
        // both sites' controllers in one cluster the condition is shared: only this site's own
        // words are replaced.)
        let was_ours = st.conditions.iter().any(|c| {
            c.type_ == conditions::LEADER_KEY
                && c.reason != reasons::SITE_DEMOTED
                && c.reason != reasons::STANDBY
                && c.message.starts_with(&format!("{site} "))
        });
        if was_ours || st.conditions.iter().all(|c| c.type_ != conditions::LEADER_KEY) {
            let (reason, msg) = if was_ours {
                (
                    reasons::SITE_DEMOTED,
                    format!(
                        "{site} no longer serves: {} does at epoch {}; {site} keeps no key, its database \
                         stays fenced and follows {} (formerPrimary)",
                        primary.site, primary.epoch, primary.site
                    ),
                )
            } else {
                (
                    reasons::STANDBY,
                    format!("{site} is the standby; {} serves at epoch {}", primary.site, primary.epoch),
                )
            };
            // Being the standby is the normal state: recorded without an Event; a demotion is announced.
            let mut quiet = Vec::new();
            crate::events::upsert(
                &mut st.conditions,
                if was_ours { events } else { &mut quiet },
                conditions::LEADER_KEY,
                ConditionStatus::False,
                reason,
                &msg,
                drp.metadata.generation,
                now,
                false,
            );
        }
        return;
    }
    // Only a fence this site made itself (in an earlier life) is lifted when it takes the key again.
    let lift_on_acquire = st.conditions.iter().any(|c| {
        c.type_ == conditions::LEADER_KEY
            && [reasons::SELF_FENCED, reasons::SITE_FENCE_CONFIRMED, reasons::SITE_FENCE_FAILED]
                .contains(&c.reason.as_str())
            && c.message.starts_with(&format!("{site} fenced itself"))
    });
    let epoch = st.epoch.0;
    let threshold = drp.spec.failover.failure_threshold.max(1);
    let site_failed = st.sites.iter().find(|s| s.name == site).is_some_and(|s| {
        s.consecutive_failures >= threshold && (!s.reachable || s.http_healthy == Some(false))
    });
    let mut set = |status: ConditionStatus, reason: &str, msg: &str| {
        crate::events::upsert(
            &mut st.conditions,
            events,
            conditions::LEADER_KEY,
            status,
            reason,
            msg,
            drp.metadata.generation,
            now,
            false,
        )
    };
    let timing = match Timing::new(etcd.lease_ttl.into(), drp.spec.failover.probe_timeout()) {
        Ok(t) => t,
        Err(e) => {
            ctx.keepers.stop(&pair);
            set(ConditionStatus::False, reasons::INVALID_SPEC, &e.to_string());
            return;
        }
    };
    let in_recovery = st.sites.iter().any(|s| s.name == site && s.reachable && s.in_recovery == Some(true));
    let cfg = match config(drp, ns, site, etcd, timing, ctx).await {
        Ok(cfg) => keeper::Config { epoch, lift_on_acquire, site_failed, in_recovery, ..cfg },
        Err(e) => {
            // Without credentials the keeper could not fence; say so instead of pretending.
            set(
                ConditionStatus::False,
                reasons::SECRET_MISSING,
                &format!("{site} cannot keep the leader key: {e}"),
            );
            return;
        }
    };
    let state = ctx.keepers.ensure(&pair, cfg);
    // A site fence hook's outcome is announced once per run, by an Event of its own: by the time a
    // round sees it the site may already be demoted (the standby took the epoch the moment the key
    // went), and a round whose status write meets a 409 publishes none of its Events.
    if let Some(run) = &state.site_fence {
        let id = format!("{} #{}", run.at, run.attempt);
        let new = ctx.memory.with(&pair, |m| {
            let new = m.fence_announced.as_deref() != Some(id.as_str());
            m.fence_announced = Some(id);
            new
        });
        if new {
            let reason =
                if run.confirmed { reasons::SITE_FENCE_CONFIRMED } else { reasons::SITE_FENCE_FAILED };
            ctx.publish_detached(
                drp,
                crate::events::EventNote {
                    warning: true,
                    reason: reason.into(),
                    note: format!("{site}: {}", run.note),
                },
            );
        }
    }
    let gauge = ctx.metrics.leader_key.get_or_create(&crate::metrics::PairLabels { pair });
    match (&state.self_fenced, &state.ended, state.holding) {
        (_, Some(why), _) => {
            gauge.set(-1);
            set(ConditionStatus::False, reasons::SITE_DEMOTED, &format!("{site} stopped serving: {why}"));
        }
        (Some((at, msg)), None, _) => {
            gauge.set(-1);
            // A give-up that ran the site fence hook says how it went in its reason, so that each
            // outcome is announced by its own Event.
            let reason = match &state.site_fence {
                Some(run) if run.confirmed => reasons::SITE_FENCE_CONFIRMED,
                Some(_) => reasons::SITE_FENCE_FAILED,
                None => reasons::SELF_FENCED,
            };
            set(ConditionStatus::False, reason, &format!("{site} fenced itself at {at}: {msg}"));
            if reason != reasons::SELF_FENCED {
                // Announced above, once per hook run.
                events.retain(|e| e.reason != reason);
            }
        }
        (None, None, true) => {
            gauge.set(1);
            set(
                ConditionStatus::True,
                reasons::LEADER_KEY_HELD,
                &format!(
                    "{site} holds the leader key in etcd (lease {:?}, renewed every {:?}; without renewal for \
                     {:?} it fences its own database, {:?} before the standby may promote at the earliest){}",
                    timing.lease_ttl,
                    timing.renew_every,
                    timing.self_fence_after,
                    timing.margin(),
                    state.primary_held.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
                ),
            );
        }
        (None, None, false) => {
            gauge.set(0);
            let why = state.witness_error.unwrap_or_else(|| "starting".into());
            set(
                ConditionStatus::False,
                reasons::ACQUIRING,
                &format!("{site} is taking the leader key: {why}"),
            );
        }
    }
}

/// Why the keeper cannot be configured: its site, a Secret or the TLS material (the text goes to
/// the `LeaderKey` condition).
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error(transparent)]
    NoSuchSite(#[from] crate::crd::NoSuchSite),
    #[error(transparent)]
    Resolve(#[from] conn::ResolveError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
}

/// The keeper's configuration: the witness, this site's admin connection and the PgBouncers.
async fn config(
    drp: &DisasterRecoveryPair,
    ns: &str,
    site: &str,
    etcd: &crate::crd::EtcdWitness,
    timing: Timing,
    ctx: &Context,
) -> Result<keeper::Config, ConfigError> {
    let secrets = Secrets::new(ctx.client.clone(), ns);
    let (i, s) = drp.spec.site(site)?;
    let fence_hook = s.fence_hook.clone().map(|hook| keeper::SiteHook {
        hook,
        pg_host: s.postgres.host.clone(),
        pg_port: s.postgres.port,
    });
    let (postgres, _) = conn::resolve(&secrets, i, s, timing.fence_budget).await?;
    let access = crate::coord::witness_access(etcd, &secrets).await?;
    let mut bouncers = Vec::new();
    // Its own site's PgBouncers and the shared ones, never the other site's.
    for (i, r) in drp.spec.recycle.iter().enumerate() {
        let Some(pgb) =
            r.pg_bouncer.as_ref().filter(|_| crate::crd::acts_here(r.site.as_deref(), Some(site)))
        else {
            continue;
        };
        let (user, password) = crate::recycle::pgbouncer::admin_credentials(&secrets, i, pgb).await?;
        bouncers.push((pgb.clone(), user, password));
    }
    Ok(keeper::Config {
        endpoints: etcd.endpoints.clone(),
        access,
        prefix: etcd.prefix.clone(),
        namespace: ns.to_string(),
        name: drp.metadata.name.clone().unwrap_or_default(),
        site: site.to_string(),
        epoch: 0,
        timing,
        postgres: std::sync::Arc::new(postgres),
        bouncers,
        lift_on_acquire: false,
        site_failed: false,
        in_recovery: false,
        fence_hook,
        hook_runs: ctx.metrics.fence_hook_runs.clone(),
    })
}
