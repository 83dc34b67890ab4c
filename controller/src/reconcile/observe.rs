//! Observation: read the Secrets a pair references and probe both sites, concurrently, each probe
//! bounded by `probeTimeout`. Nothing here writes anything.

use std::time::Duration;

use futures::future::join_all;

use super::decide::Observed;
use crate::context::Context;
use crate::{
    crd::DisasterRecoveryPair,
    pg,
    probe::{self, Outcome, SiteObservation},
    secrets::{SecretError, Secrets},
};

/// Probes both sites of `drp` and checks every referenced Secret.
pub async fn collect(drp: &DisasterRecoveryPair, pair: &super::Pair, ctx: &Context) -> Observed {
    let spec = &drp.spec;
    let secrets = Secrets::new(ctx.client.clone(), &pair.ns);
    let timeout: Duration = spec.failover.effective_probe_timeout();
    let mut problems: Vec<(&'static str, String)> = Vec::new();

    // References other than the probe credentials: checked so that a failover never discovers a
    // missing Secret half-way through.
    for (i, site) in spec.sites.iter().enumerate() {
        if let Some(r) = &site.data_source_secret {
            if let Err(e) =
                secrets.get(&r.name, &[&r.key], &format!("spec.sites[{i}].dataSourceSecret")).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }
    // Only the entries this controller acts on: another site's live in another cluster.
    let here = ctx.site.as_deref();
    let ours = |site: &Option<String>| crate::crd::acts_here(site.as_deref(), here);
    for (i, r) in spec.data_source.iter().enumerate().filter(|(_, r)| ours(&r.site)) {
        if let Some(k) = &r.secret_key {
            // The target Secret is rewritten on failover; it must exist (its key may be created).
            if let Err(e @ (SecretError::Missing { .. } | SecretError::Api { .. })) =
                secrets.get(&k.name, &[], &format!("spec.dataSource[{i}].secretKey")).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }
    for (i, r) in spec.recycle.iter().enumerate().filter(|(_, r)| ours(&r.site)) {
        if let Some(pgb) = &r.pg_bouncer {
            let field = format!("spec.recycle[{i}].pgBouncer.adminSecret");
            if let Err(e) = secrets.get(&pgb.admin_secret.name, &["username", "password"], &field).await {
                problems.push((e.reason(), e.to_string()));
            }
        }
        if let Some(t) = r.http.as_ref().and_then(|h| h.token_secret.as_ref()) {
            if let Err(e) =
                secrets.get(&t.name, &["token"], &format!("spec.recycle[{i}].http.tokenSecret")).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }
    for (i, r) in spec.dns.iter().enumerate().filter(|(_, r)| ours(&r.site)) {
        if let Some(rfc) = &r.rfc2136 {
            let field = format!("spec.dns[{i}].rfc2136.tsigSecret");
            if let Err(e) = secrets.get(&rfc.tsig_secret.name, &["name", "algorithm", "secret"], &field).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }

    let waiting = waiting_for_the_key(drp, &pair.key, ctx);
    let probes = spec.sites.iter().enumerate().map(|(i, site)| {
        let secrets = secrets.clone();
        let waiting = waiting.clone().filter(|(_, name)| *name == site.name);
        let probe = async move {
            let (sql, problem) = match pg::conn::resolve(&secrets, i, site, timeout).await {
                Err(e) => (Outcome::NotRun(e.reason(), e.to_string()), Some(e)),
                Ok((target, _)) => {
                    // Connections are shared by server and login (the target's fingerprint, which
                    // changes with the credentials and TLS material, so a rotation reconnects).
                    (ctx.sql.probe(target, timeout).await, None)
                }
            };
            let http = match site.health.as_ref().filter(|h| !h.http.is_empty()) {
                Some(h) => Some(probe::http::probe(&ctx.http, &h.http, timeout).await),
                None => None,
            };
            (SiteObservation { name: site.name.clone(), sql, http }, problem)
        };
        async move {
            let Some((key, name)) = waiting else { return probe.await };
            tokio::select! {
                done = probe => done,
                () = key_gone(ctx, &key) => {
                    let why = format!(
                        "no answer yet when the primary site's leader key was deleted in the witness \
                         (probe cut short: {name} had already failed failureThreshold probes)"
                    );
                    (SiteObservation { name, sql: Outcome::Down(why), http: None }, None)
                }
            }
        }
    });
    let mut sites = Vec::new();
    for (obs, problem) in join_all(probes).await {
        sites.push(obs);
        problems.extend(problem.map(|e| (e.reason(), e.to_string())));
    }
    Observed {
        sites,
        secret_problems: problems,
        generation: drp.metadata.generation,
        site_problems: site_problems(drp, &pair.key, ctx),
    }
}

/// When this controller is the standby site's, the primary has already failed `failureThreshold`
/// probes and the only thing the failover waits for is the primary site's leader key: the pair's
/// key and the primary's name. A probe of a primary whose packets are dropped waits out
/// `probeTimeout`; in this state its answer cannot change what happens once the key is gone (the
/// epoch and the Fence step guard the takeover, not this probe), so the round does not wait for it
/// after the key's deletion: the takeover starts within milliseconds of it, not at the round's end.
fn waiting_for_the_key(drp: &DisasterRecoveryPair, key: &str, ctx: &Context) -> Option<(String, String)> {
    let here = ctx.site.as_deref()?;
    let status = drp.status.as_ref()?;
    let primary = crate::authority::primary(&drp.spec, Some(status)).site;
    if primary == here {
        return None;
    }
    let threshold = drp.spec.failover.failure_threshold.max(1);
    let failing = status.sites.iter().any(|s| s.name == primary && s.consecutive_failures >= threshold);
    let view = ctx.views.state(key)?;
    (failing && view.record.is_some() && view.leader.is_some())
        .then(|| (key.to_string(), primary.to_string()))
}

/// Resolves once the pair's view reads no leader key (never while it holds one).
async fn key_gone(ctx: &Context, key: &str) {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if ctx.views.state(key).is_some_and(|v| v.record.is_some() && v.leader.is_none()) {
            return;
        }
    }
}

/// What this controller finds wrong with the pair that the spec alone cannot show: its `--site`
/// is not one of the pair's sites, or the copy of the pair the other site's controller published
/// through the witness differs from this one (`SpecValid` False; nothing is started on them).
fn site_problems(drp: &DisasterRecoveryPair, key: &str, ctx: &Context) -> Vec<(&'static str, String)> {
    let Some(here) = ctx.site.as_deref() else { return vec![] };
    if drp.spec.site(here).is_err() {
        let names: Vec<&str> = drp.spec.sites.iter().map(|s| s.name.as_str()).collect();
        return vec![(
            crate::crd::conditions::reasons::INVALID_SPEC,
            format!(
                "this controller runs with --site {here}, which is not in spec.sites ({}): it does nothing for \
                 this pair; run it with --site set to one of them, or fix spec.sites",
                names.join(", ")
            ),
        )];
    }
    let Some(view) = ctx.views.state(key) else { return vec![] };
    let Ok(mine) = serde_json::to_value(&drp.spec) else { return vec![] };
    let mut out = Vec::new();
    for (site, raw) in view.specs.iter().filter(|(s, _)| s != here) {
        let Ok(theirs) = serde_json::from_str::<serde_json::Value>(raw) else { continue };
        let diff = crate::coord::view::spec_differences(&mine, &theirs, 4);
        if !diff.is_empty() {
            out.push((
                crate::crd::conditions::reasons::SPEC_DRIFT,
                format!(
                    "the copy of this pair that {site}'s controller reads differs from this one ({here}): {}; no \
                     transition starts until both copies are the same (apply the same spec in both clusters)",
                    diff.join("; ")
                ),
            ));
        }
    }
    out
}
