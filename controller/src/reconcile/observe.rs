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
pub async fn collect(drp: &DisasterRecoveryPair, ns: &str, ctx: &Context) -> Observed {
    let spec = &drp.spec;
    let secrets = Secrets::new(ctx.client.clone(), ns);
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
    for (i, r) in spec.data_source.iter().enumerate() {
        if let Some(k) = &r.secret_key {
            // The target Secret is rewritten on failover; it must exist (its key may be created).
            if let Err(e @ (SecretError::Missing { .. } | SecretError::Api { .. })) =
                secrets.get(&k.name, &[], &format!("spec.dataSource[{i}].secretKey")).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }
    for (i, r) in spec.recycle.iter().enumerate() {
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
    for (i, r) in spec.dns.iter().enumerate() {
        if let Some(rfc) = &r.rfc2136 {
            let field = format!("spec.dns[{i}].rfc2136.tsigSecret");
            if let Err(e) = secrets.get(&rfc.tsig_secret.name, &["name", "algorithm", "secret"], &field).await
            {
                problems.push((e.reason(), e.to_string()));
            }
        }
    }

    let probes = spec.sites.iter().enumerate().map(|(i, site)| {
        let secrets = secrets.clone();
        async move {
            let (sql, problem) = match pg::conn::resolve(&secrets, i, site, timeout).await {
                Err(e) => (Outcome::NotRun(e.reason(), e.to_string()), Some(e)),
                Ok((target, _)) => {
                    // Connections are shared by server and login (the target's fingerprint, which
                    // changes with the credentials and TLS material, so a rotation reconnects).
                    (ctx.sql.probe(&target, timeout).await, None)
                }
            };
            let http = match site.health.as_ref().filter(|h| !h.http.is_empty()) {
                Some(h) => Some(probe::http::probe(&ctx.http, &h.http, timeout).await),
                None => None,
            };
            (SiteObservation { name: site.name.clone(), sql, http }, problem)
        }
    });
    let mut sites = Vec::new();
    for (obs, problem) in join_all(probes).await {
        sites.push(obs);
        problems.extend(problem.map(|e| (e.reason(), e.to_string())));
    }
    Observed { sites, secret_problems: problems, generation: drp.metadata.generation }
}
