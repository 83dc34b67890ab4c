//! Readiness for failover: everything that would stop or break a failover if it had to run now,
//! found without changing anything. The same checks back the `dr.understudy.dev/dry-run` plan and
//! the continuous `ReadyForFailover` condition: the standby streams within the lag budget, every
//! Secret is there, the witness answers, the DataSource targets can be rewritten, the recyclers
//! answer, and each DNS server accepts the TSIG key (a signed SOA query).

use std::time::Duration;

use kube::ResourceExt;

use crate::context::Context;
use crate::{
    coord::witness,
    crd::{conditions, DisasterRecoveryPair, DisasterRecoveryPairStatus, FailoverMode},
    datasource, dns, recycle,
    secrets::Secrets,
};

/// The plan's steps with their targets, and the blockers found.
pub async fn assess(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    ctx: &Context,
) -> (String, Vec<String>, Vec<String>) {
    let spec = &drp.spec;
    let ns = drp.namespace().unwrap_or_default();
    let who = crate::authority::primary(spec, Some(st));
    let (from, to) = (who.site.to_string(), who.standby.to_string());
    let timeout: Duration = spec.failover.probe_timeout();
    let mut plan = Vec::new();
    let mut blockers = Vec::new();

    // Standby and lag, as the probes last saw them.
    match st.sites.iter().find(|s| s.name == to) {
        Some(s) if s.reachable && s.in_recovery == Some(true) && s.streaming == Some(true) => {}
        Some(s) => blockers.push(format!(
            "standby {to} is not streaming (reachable {}, in recovery {:?}, streaming {:?}){}",
            s.reachable,
            s.in_recovery,
            s.streaming,
            s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        )),
        None => blockers.push(format!("standby {to} has not been probed yet")),
    }
    if let Some(c) =
        st.conditions.iter().find(|c| c.type_ == conditions::LAG_WITHIN_BUDGET && c.status != "True")
    {
        blockers.push(c.message.clone());
    }
    if let Some(c) =
        st.conditions.iter().find(|c| c.type_ == conditions::SECRETS_RESOLVED && c.status == "False")
    {
        blockers.push(c.message.clone());
    }
    if spec.failover.mode == FailoverMode::Manual {
        blockers.push(
            "spec.failover.mode is Manual: no automatic failover (forced failover and switchover still work)"
                .into(),
        );
    }
    if drp.annotations().get(crate::crd::annotations::PAUSED).map(String::as_str) == Some("true") {
        blockers.push("automation is paused (dr.understudy.dev/paused=true)".into());
    }

    match witness(drp, &ctx.client).await {
        Ok(Some(mut w)) => match w.epoch().await {
            Ok((e, holder, _)) => plan.push(format!(
                "TakeEpoch: etcd epoch {e} ({}) → {}",
                if holder.is_empty() { "unset" } else { &holder },
                e.saturating_add(1)
            )),
            Err(e) => blockers.push(format!("spec.coordination.etcd: {e}")),
        },
        Ok(None) => {
            plan.push(format!("TakeEpoch: status epoch {} → {}", st.epoch, st.epoch.0.saturating_add(1)))
        }
        Err(e) => blockers.push(format!("spec.coordination.etcd: {e}")),
    }
    let site = |n: &str| spec.sites.iter().find(|s| s.name == n);
    if let Some(p) = site(&from) {
        plan.push(format!(
            "Fence: {from} ({}:{}) read-only, writers terminated, PgBouncer paused",
            p.postgres.host, p.postgres.port
        ));
    }
    if let Some(s) = site(&to) {
        plan.push(format!("Promote: {to} ({}:{}) with pg_promote", s.postgres.host, s.postgres.port));
    }
    plan.push(format!("VerifyWritable: epoch marker on {to}"));

    let planned = match datasource::plan(&ctx.client, &ns, spec, &to, st.epoch.0.saturating_add(1)).await {
        Ok(w) => datasource::check(&ctx.client, &ns, &w).await.map(|()| w),
        Err(e) => Err(e),
    };
    match planned {
        Ok(w) => plan.push(format!(
            "RewriteDataSource: {} object(s) to change for {} target(s) (each write accepted in a server-side dry run)",
            w.len(),
            spec.data_source.len()
        )),
        Err(e) => blockers.push(e.to_string()),
    }

    let secrets = Secrets::new(ctx.client.clone(), &ns);
    let renv = recycle::Env {
        client: ctx.client.clone(),
        http: ctx.http.clone(),
        secrets: secrets.clone(),
        ns: ns.clone(),
        timeout,
    };
    let recyclers = recycle::build_all(spec, &renv);
    for r in &recyclers {
        if let Err(e) = r.check().await {
            blockers.push(e.to_string());
        }
    }
    if !recyclers.is_empty() {
        plan.push(format!(
            "Recycle: {}",
            recyclers.iter().map(|r| r.describe()).collect::<Vec<_>>().join(", ")
        ));
    }

    let target = site(&to).and_then(|s| s.dns_target.clone());
    let denv = dns::Env { client: ctx.client.clone(), secrets, ns: ns.clone(), timeout };
    let mut records = Vec::new();
    for (j, r) in spec.dns.iter().enumerate() {
        if target.is_none() {
            blockers.push(format!("spec.dns[{j}]: site {to} has no dnsTarget"));
        }
        let Some(p) = dns::build(j, r, &denv) else { continue };
        if let Err(e) = p.check().await {
            blockers.push(e.to_string());
        }
        records.push(p.describe());
    }
    if !records.is_empty() {
        plan.push(format!("FlipDns: {} → {}", records.join(", "), target.unwrap_or_else(|| "?".into())));
    }
    (to, plan, blockers)
}
