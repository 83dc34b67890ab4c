//! Observation: read the Secrets a pair references and probe both sites, concurrently, each probe
//! bounded by `probeTimeout`. Nothing here writes anything.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use futures::future::join_all;

use super::{decide::Observed, Context};
use crate::{
    crd::DisasterRecoveryPair,
    probe::{self, sql::Credentials, Outcome, SiteObservation},
    secrets::{SecretError, Secrets},
};

/// Probes both sites of `drp` and checks every referenced Secret.
pub async fn collect(drp: &DisasterRecoveryPair, ns: &str, ctx: &Context) -> Observed {
    let spec = &drp.spec;
    let secrets = Secrets::new(ctx.client.clone(), ns);
    let timeout: Duration = spec.failover.probe_timeout.into();
    let mut problems: Vec<SecretError> = Vec::new();

    // References other than the probe credentials: checked so that a failover never discovers a
    // missing Secret half-way through.
    for (i, site) in spec.sites.iter().enumerate() {
        if let Some(r) = &site.data_source_secret {
            if let Err(e) =
                secrets.get(&r.name, &[&r.key], &format!("spec.sites[{i}].dataSourceSecret")).await
            {
                problems.push(e);
            }
        }
    }
    for (i, r) in spec.data_source.iter().enumerate() {
        if let Some(k) = &r.secret_key {
            // The target Secret is rewritten on failover; it must exist (its key may be created).
            if let Err(e @ (SecretError::Missing { .. } | SecretError::Api { .. })) =
                secrets.get(&k.name, &[], &format!("spec.dataSource[{i}].secretKey")).await
            {
                problems.push(e);
            }
        }
    }
    for (i, r) in spec.recycle.iter().enumerate() {
        if let Some(pgb) = &r.pg_bouncer {
            let field = format!("spec.recycle[{i}].pgBouncer.adminSecret");
            if let Err(e) = secrets.get(&pgb.admin_secret.name, &["username", "password"], &field).await {
                problems.push(e);
            }
        }
        if let Some(t) = r.http.as_ref().and_then(|h| h.token_secret.as_ref()) {
            if let Err(e) =
                secrets.get(&t.name, &["token"], &format!("spec.recycle[{i}].http.tokenSecret")).await
            {
                problems.push(e);
            }
        }
    }
    for (i, r) in spec.dns.iter().enumerate() {
        if let Some(rfc) = &r.rfc2136 {
            let field = format!("spec.dns[{i}].rfc2136.tsigSecret");
            if let Err(e) = secrets.get(&rfc.tsig_secret.name, &["name", "algorithm", "secret"], &field).await
            {
                problems.push(e);
            }
        }
    }

    let pair_key = format!("{ns}/{}/", drp.metadata.name.as_deref().unwrap_or_default());
    let probes = spec.sites.iter().enumerate().map(|(i, site)| {
        let secrets = secrets.clone();
        let pair_key = pair_key.clone();
        async move {
            let field = format!("spec.sites[{i}].postgres.credentialsSecret");
            let creds =
                secrets.get(&site.postgres.credentials_secret.name, &["username", "password"], &field).await;
            let (sql, problem) = match creds {
                Err(e) => (Outcome::NotRun(e.to_string()), Some(e)),
                Ok(data) => {
                    let creds = Credentials {
                        username: data.value("username").into(),
                        password: data.value("password").into(),
                    };
                    let cfg = probe::sql::config(&site.postgres, &creds, timeout);
                    // The cache key changes with the credentials, so a rotated password reconnects.
                    let mut h = DefaultHasher::new();
                    (
                        &site.postgres.host,
                        site.postgres.port,
                        &site.postgres.database,
                        &creds.username,
                        &creds.password,
                    )
                        .hash(&mut h);
                    let key = format!("{pair_key}{}/{:x}", site.name, h.finish());
                    (ctx.sql.probe(&key, &cfg, timeout).await, None)
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
        problems.extend(problem);
    }
    Observed {
        sites,
        secret_problems: problems.iter().map(|e| (e.reason(), e.to_string())).collect(),
        generation: drp.metadata.generation,
    }
}
