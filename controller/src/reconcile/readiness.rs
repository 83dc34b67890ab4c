//! Readiness for failover: everything that would stop or break a failover if it had to run now,
//! found without changing anything. The same checks back the `dr.understudy.dev/dry-run` plan and
//! the continuous `ReadyForFailover` condition: the standby streams within the lag budget, every
//! Secret is there, the witness answers, the DataSource targets can be rewritten, the recyclers
//! answer, and each DNS server accepts the TSIG key (a signed SOA query).

use kube::ResourceExt;

use crate::context::Context;
use crate::{
    crd::{conditions, ConditionStatus, DisasterRecoveryPair, DisasterRecoveryPairStatus, FailoverMode},
    datasource, dns, recycle,
    secrets::Secrets,
};

/// The plan's steps with their targets, and the blockers found.
/// `epoch` is what the round read from the witness: `None` without one, `Some(Err)` when it
/// could not be reached or read.
pub async fn assess(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    epoch: Option<&Result<(i64, String, String), String>>,
    ctx: &Context,
) -> (String, Vec<String>, Vec<String>) {
    let who = crate::authority::primary(&drp.spec, Some(st));
    let (from, to) = (who.site.to_string(), who.standby.to_string());
    let mut blockers = status_blockers(drp, st, &to);
    let mut plan = Vec::new();
    let mut add = |(line, found): Found| {
        plan.extend(line);
        blockers.extend(found);
    };
    add(epoch_plan(st, epoch));
    plan_sites(&drp.spec, &from, &to).into_iter().for_each(|l| add((Some(l), vec![])));
    add(data_source_plan(drp, st, &to, ctx).await);
    add(recycler_plan(drp, ctx).await);
    add(dns_plan(drp, &to, ctx).await);
    (to, plan, blockers)
}

/// A plan line (when the step has something to do) and the blockers found for it.
type Found = (Option<String>, Vec<String>);

/// What the last probes and the spec already say stands in the way (pure).
fn status_blockers(drp: &DisasterRecoveryPair, st: &DisasterRecoveryPairStatus, to: &str) -> Vec<String> {
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
    if let Some(c) = st
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::LAG_WITHIN_BUDGET && c.status != ConditionStatus::True)
    {
        blockers.push(c.message.clone());
    }
    if let Some(c) = st
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::SECRETS_RESOLVED && c.status == ConditionStatus::False)
    {
        blockers.push(c.message.clone());
    }
    if drp.spec.failover.mode == FailoverMode::Manual {
        blockers.push(
            "spec.failover.mode is Manual: no automatic failover (forced failover and switchover still work)"
                .into(),
        );
    }
    if drp.annotations().get(crate::crd::annotations::PAUSED).map(String::as_str) == Some("true") {
        blockers.push("automation is paused (dr.understudy.dev/paused=true)".into());
    }
    blockers
}

/// TakeEpoch: where the epoch would move (the witness's, or the status's without one).
fn epoch_plan(
    st: &DisasterRecoveryPairStatus,
    epoch: Option<&Result<(i64, String, String), String>>,
) -> Found {
    match epoch {
        Some(Ok((e, holder, _))) => (
            Some(format!(
                "TakeEpoch: etcd epoch {e} ({}) → {}",
                if holder.is_empty() { "unset" } else { holder },
                e.saturating_add(1)
            )),
            vec![],
        ),
        Some(Err(e)) => (None, vec![format!("spec.coordination.etcd: {e}")]),
        None => {
            (Some(format!("TakeEpoch: status epoch {} → {}", st.epoch, st.epoch.0.saturating_add(1))), vec![])
        }
    }
}

/// Fence, Promote and VerifyWritable with the servers they touch (pure).
fn plan_sites(spec: &crate::crd::DisasterRecoveryPairSpec, from: &str, to: &str) -> Vec<String> {
    let site = |n: &str| spec.sites.iter().find(|s| s.name == n);
    let mut plan = Vec::new();
    if let Some(p) = site(from) {
        plan.push(format!(
            "Fence: {from} ({}:{}) read-only, writers terminated, PgBouncer paused",
            p.postgres.host, p.postgres.port
        ));
    }
    if let Some(s) = site(to) {
        plan.push(format!("Promote: {to} ({}:{}) with pg_promote", s.postgres.host, s.postgres.port));
    }
    plan.push(format!("VerifyWritable: epoch marker on {to}"));
    plan
}

/// RewriteDataSource: the plan for `to`, proven by a server-side dry run.
async fn data_source_plan(
    drp: &DisasterRecoveryPair,
    st: &DisasterRecoveryPairStatus,
    to: &str,
    ctx: &Context,
) -> Found {
    let (spec, ns) = (&drp.spec, drp.namespace().unwrap_or_default());
    let writes =
        datasource::plan(&ctx.client, &ns, spec, to, st.epoch.0.saturating_add(1), ctx.site.as_deref()).await;
    let checked = match writes {
        Ok(w) => datasource::check(&ctx.client, &ns, &w).await.map(|()| w),
        Err(e) => Err(e),
    };
    match checked {
        Ok(w) => (
            Some(format!(
                "RewriteDataSource: {} object(s) to change for {} target(s) (each write accepted in a server-side dry run)",
                w.len(),
                spec.data_source.len()
            )),
            vec![],
        ),
        Err(e) => (None, vec![e.to_string()]),
    }
}

/// Recycle: every recycler answers its check.
async fn recycler_plan(drp: &DisasterRecoveryPair, ctx: &Context) -> Found {
    let ns = drp.namespace().unwrap_or_default();
    let renv = recycle::Env {
        client: ctx.client.clone(),
        http: ctx.http.clone(),
        secrets: Secrets::new(ctx.client.clone(), &ns),
        ns,
        timeout: drp.spec.failover.probe_timeout(),
    };
    let recyclers = recycle::build_all(&drp.spec, &renv, ctx.site.as_deref());
    let mut blockers = Vec::new();
    for r in &recyclers {
        if let Err(e) = r.check().await {
            blockers.push(e.to_string());
        }
    }
    let line = (!recyclers.is_empty()).then(|| {
        format!("Recycle: {}", recyclers.iter().map(|r| r.describe()).collect::<Vec<_>>().join(", "))
    });
    (line, blockers)
}

/// FlipDns: every record's provider accepts our credentials, and `to` has a target.
async fn dns_plan(drp: &DisasterRecoveryPair, to: &str, ctx: &Context) -> Found {
    let spec = &drp.spec;
    let ns = drp.namespace().unwrap_or_default();
    let target = spec.sites.iter().find(|s| s.name == to).and_then(|s| s.dns_target.clone());
    let denv = dns::Env {
        client: ctx.client.clone(),
        secrets: Secrets::new(ctx.client.clone(), &ns),
        ns,
        timeout: spec.failover.probe_timeout(),
    };
    let (mut records, mut blockers) = (Vec::new(), Vec::new());
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
    let line = (!records.is_empty())
        .then(|| format!("FlipDns: {} → {}", records.join(", "), target.unwrap_or_else(|| "?".into())));
    (line, blockers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{test_spec, Condition, SiteStatus};

    /// The test pair in `mode` (`west`'s server on port 5433), paused by annotation or not.
    fn pair(mode: FailoverMode, paused: bool) -> DisasterRecoveryPair {
        let mut drp = test_spec().with_mode(mode).with_site("west", |s| s.postgres.port = 5433).pair("p");
        if paused {
            drp.metadata.annotations =
                Some([(crate::crd::annotations::PAUSED.to_string(), "true".to_string())].into());
        }
        drp
    }

    fn cond(type_: &str, status: ConditionStatus, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: "R".into(),
            message: message.into(),
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }

    #[test]
    fn what_the_status_and_spec_say_is_a_blocker_each() {
        let streaming = SiteStatus {
            name: "west".into(),
            reachable: true,
            in_recovery: Some(true),
            streaming: Some(true),
            ..Default::default()
        };
        let ok = DisasterRecoveryPairStatus { sites: vec![streaming.clone()], ..Default::default() };
        assert!(status_blockers(&pair(FailoverMode::Automatic, false), &ok, "west").is_empty());

        let b = status_blockers(
            &pair(FailoverMode::Automatic, false),
            &DisasterRecoveryPairStatus::default(),
            "west",
        );
        assert_eq!(b, ["standby west has not been probed yet"]);

        let down = SiteStatus { reachable: false, message: Some("sql: refused".into()), ..streaming };
        let st = DisasterRecoveryPairStatus {
            sites: vec![down],
            conditions: vec![
                cond(
                    conditions::LAG_WITHIN_BUDGET,
                    ConditionStatus::False,
                    "lag 40.0 MiB > maxLagBytes 1.0 MiB",
                ),
                cond(conditions::SECRETS_RESOLVED, ConditionStatus::False, "Secret n/s not found"),
            ],
            ..Default::default()
        };
        let b = status_blockers(&pair(FailoverMode::Manual, true), &st, "west");
        assert_eq!(b.len(), 5, "{b:?}");
        assert!(b[0].contains("not streaming") && b[0].ends_with(": sql: refused"), "{b:?}");
        assert!(b[1].contains("maxLagBytes") && b[2].contains("not found"));
        assert!(b[3].contains("spec.failover.mode is Manual") && b[4].contains("paused"));
    }

    #[test]
    fn the_site_steps_name_the_servers_they_touch() {
        let plan = plan_sites(&pair(FailoverMode::Automatic, false).spec, "east", "west");
        assert_eq!(
            plan,
            [
                "Fence: east (pg-east:5432) read-only, writers terminated, PgBouncer paused",
                "Promote: west (pg-west:5433) with pg_promote",
                "VerifyWritable: epoch marker on west",
            ]
        );
    }
}
