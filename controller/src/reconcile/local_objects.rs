//! A site that does not serve keeps its own cluster's objects pointing at the site that does. With
//! one Kubernetes cluster per site, the new primary's controller changes only its own cluster and
//! the shared objects; the entries tagged with the other site (its DataSource Secret or ConfigMap,
//! its PgBouncer, its `DNSEndpoint`) live where only that site's controller reaches — and that
//! site may have been down during the transition. So a controller run with `--site` whose site
//! does not serve repoints its own site's entries at the current primary, once per epoch, as soon as
//! its status mirrors the witness: the DataSource is rewritten (stamped with the epoch, so an older
//! epoch never overwrites a newer one), its PgBouncers are repointed and resumed, its records
//! moved. Shared entries are left to the transition that owns them.

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

/// Repoints this site's own entries when its site does not serve and they were not repointed
/// for this epoch yet; returns the Events to publish.
pub async fn converge(
    drp: &DisasterRecoveryPair,
    key: &str,
    st: &DisasterRecoveryPairStatus,
    ctx: &Context,
) -> Vec<EventNote> {
    let Some(here) = ctx.site.as_deref() else { return vec![] };
    let primary = crate::authority::primary(&drp.spec, Some(st));
    if primary.site == here || primary.source != crate::authority::Source::Status {
        return vec![];
    }
    let epoch = primary.epoch.0;
    let (done, tried) = ctx.memory.with(key, |m| (m.local_converged, m.local_tried_at));
    if done == Some(epoch) || tried.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
        return vec![];
    }
    ctx.memory.with(key, |m| m.local_tried_at = Some(std::time::Instant::now()));
    // Only the entries that name this site: the shared ones belong to the transition.
    let mut own = drp.clone();
    let mine = |s: &Option<String>| s.as_deref() == Some(here);
    own.spec.data_source.retain(|t| mine(&t.site));
    own.spec.recycle.retain(|r| mine(&r.site));
    own.spec.dns.retain(|r| mine(&r.site));
    let (i, to) = match drp.spec.site(primary.site) {
        Ok(s) => s,
        Err(_) => return vec![],
    };
    let ports = Ports::real(ctx, &own);
    let mut said = Vec::new();
    let mut failed = Vec::new();
    if !own.spec.data_source.is_empty() {
        match ports.data_source.rewrite(&own.spec, primary.site, epoch).await {
            Ok(Rewrite::Rewrote { objects, .. }) => {
                said.push(format!("{objects} DataSource object(s) rewritten"))
            }
            Ok(_) => said.push("DataSource already right".into()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let new_primary = NewPrimary { site: primary.site, postgres: &to.postgres, epoch };
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
        ctx.memory.with(key, |m| m.local_converged = Some(epoch));
        return vec![];
    }
    if failed.is_empty() {
        ctx.memory.with(key, |m| m.local_converged = Some(epoch));
        let note = format!(
            "{here} does not serve (the witness names {} at epoch {epoch}): {here}'s own objects now point at {}: {}",
            primary.site,
            primary.site,
            said.join(", ")
        );
        info!(site = here, epoch, "{note}");
        return vec![EventNote { warning: false, reason: "SiteObjectsRepointed".into(), note }];
    }
    let note = format!(
        "{here} does not serve (the witness names {} at epoch {epoch}); repointing {here}'s own objects failed, \
         retried in {RETRY_EVERY:?}: {}",
        primary.site,
        failed.join("; ")
    );
    warn!(site = here, epoch, "{note}");
    vec![EventNote { warning: true, reason: "SiteObjectsNotRepointed".into(), note }]
}
