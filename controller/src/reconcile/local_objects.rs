//! Each site keeps its own cluster's objects pointing at the site that serves. With one Kubernetes
//! cluster per site, a transition changes only the cluster of the controller that runs it and the
//! shared objects; the entries tagged with the other site (its DataSource Secret or ConfigMap, its
//! PgBouncer, its `DNSEndpoint`) live where only that site's controller reaches — and that site may
//! have been down during the transition. So a controller run with `--site` repoints its own site's
//! entries at the current primary once per epoch, as soon as its status mirrors the witness: the
//! DataSource is rewritten (stamped with the epoch, so an older epoch never overwrites a newer one),
//! its PgBouncers are repointed and resumed, its records moved. What was done is recorded in
//! `status.siteObjects` (per site, in this cluster), so it happens once, also across restarts; a
//! transition this controller ran itself already did it. Shared entries are left to the
//! transition that owns them.

use std::{net::IpAddr, time::Duration};

use tracing::{info, warn};

use crate::{
    context::Context,
    crd::{DisasterRecoveryPair, DisasterRecoveryPairStatus},
    datasource::Rewrite,
    dns,
    events::EventNote,
    failover::ports::Ports,
    recycle::NewPrimary,
};

/// How often a failed attempt is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(10);

/// Repoints this site's own entries at the serving site when they were not for this epoch yet;
/// records it in `st`; returns the Events to publish.
pub async fn converge(
    drp: &DisasterRecoveryPair,
    key: &str,
    st: &mut DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Vec<EventNote> {
    let Some(here) = ctx.site.as_deref() else { return vec![] };
    let primary = crate::authority::primary(&drp.spec, Some(st));
    if primary.source != crate::authority::Source::Status {
        return vec![];
    }
    let (epoch, serving) = (primary.epoch.0, primary.site.to_string());
    let recorded = st.site_objects.iter().find(|o| o.site == here).map(|o| o.epoch.0);
    if recorded.is_some_and(|e| e >= epoch) {
        return vec![];
    }
    let record = |st: &mut DisasterRecoveryPairStatus| {
        st.site_objects.retain(|o| o.site != here);
        st.site_objects.push(crate::crd::SiteObjects {
            site: here.to_string(),
            epoch: primary.epoch,
            primary: serving.clone(),
            at: Some(jiff::Timestamp::now().to_string()),
        });
        st.site_objects.sort_by(|a, b| a.site.cmp(&b.site));
    };
    // A transition to this site run by this site's controller did this site's entries itself (a
    // journal mirrored from the other cluster names the other site as its holder).
    let ran_here = st.last_transition.as_ref().is_some_and(|t| {
        t.epoch == primary.epoch
            && t.to == here
            && t.holder == here
            && t.outcome == Some(crate::crd::TransitionOutcome::Completed)
    });
    if ran_here || recorded.is_none() && epoch == 0 {
        record(st);
        return vec![];
    }
    // A failure is retried after a while, not every round.
    let tried = ctx.memory.with(key, |m| m.local_tried_at);
    if tried.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
        return vec![];
    }
    // Only the entries that name this site: the shared ones belong to the transition.
    let mut own = drp.clone();
    let mine = |s: &Option<String>| s.as_deref() == Some(here);
    own.spec.data_source.retain(|t| mine(&t.site));
    own.spec.recycle.retain(|r| mine(&r.site));
    own.spec.dns.retain(|r| mine(&r.site));
    let (i, to) = match drp.spec.site(&serving) {
        Ok(s) => s,
        Err(_) => return vec![],
    };
    let ports = Ports::real(ctx, &own);
    let mut said = Vec::new();
    let mut failed = Vec::new();
    if !own.spec.data_source.is_empty() {
        match ports.data_source.rewrite(&own.spec, &serving, epoch).await {
            Ok(Rewrite::Rewrote { objects, .. }) => {
                said.push(format!("{objects} DataSource object(s) rewritten"))
            }
            Ok(_) => said.push("DataSource already right".into()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let new_primary = NewPrimary { site: &serving, postgres: &to.postgres, epoch };
    for r in &ports.recyclers {
        match r.recycle(&new_primary).await {
            Ok(s) => said.push(s),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !ports.dns.is_empty() {
        match to.dns_target.as_deref().map(|t| (t, t.parse::<IpAddr>())) {
            Some((text, Ok(addr))) => {
                for p in &ports.dns {
                    match p.point_at(&dns::Target { text, addr }, epoch).await {
                        Ok(s) => said.push(s),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
            }
            _ => failed.push(format!("spec.sites[{i}].dnsTarget is missing or not an IP address")),
        }
    }
    if said.is_empty() && failed.is_empty() {
        record(st);
        return vec![];
    }
    if failed.is_empty() {
        record(st);
        let note = format!(
            "the witness names {serving} at epoch {epoch}: {here}'s own objects now point at {serving}: {}",
            said.join(", ")
        );
        info!(site = here, epoch, "{note}");
        return vec![EventNote { warning: false, reason: "SiteObjectsRepointed".into(), note }];
    }
    ctx.memory.with(key, |m| m.local_tried_at = Some(std::time::Instant::now()));
    let note = format!(
        "the witness names {serving} at epoch {epoch}; repointing {here}'s own objects failed, retried in \
         {RETRY_EVERY:?}: {}",
        failed.join("; ")
    );
    warn!(site = here, epoch, "{note}");
    vec![EventNote { warning: true, reason: "SiteObjectsNotRepointed".into(), note }]
}
