//! The side effects of each step. Every function is safe to call again after a crash or a failed
//! attempt: it checks what is already true and does only the rest. Errors are one line that names
//! the target (never a credential), so the journal and the Warning Event say what to fix.

use std::{net::IpAddr, time::Duration};

use kube::Client;

use super::{Outcome, Step};
use crate::{
    crd::{DisasterRecoveryPairSpec, Site},
    datasource,
    dns::{dns_endpoint, rfc2136},
    pg::{admin, Lsn},
    probe::sql::{self, Credentials},
    recycle::{self, pgbouncer::Console},
    secrets::Secrets,
};

/// Everything a step needs.
pub struct StepCtx<'a> {
    pub client: &'a Client,
    pub http: &'a reqwest::Client,
    pub ns: &'a str,
    pub pair: &'a str,
    pub spec: &'a DisasterRecoveryPairSpec,
    pub from: &'a str,
    pub to: &'a str,
    pub epoch: i64,
    /// Bound for each remote call.
    pub timeout: Duration,
    /// Attempts already made at this step (0 on the first).
    pub attempts: i32,
    /// The last WAL position seen on the old primary (for the lost-WAL figure).
    pub last_primary_lsn: Option<Lsn>,
}

/// A step's result: its outcome, and for `Promote` the WAL bytes lost.
pub struct Done {
    pub outcome: Outcome,
    pub lost_wal_bytes: Option<i64>,
}

impl Done {
    fn ok(msg: impl Into<String>) -> Done {
        Done { outcome: Outcome::Succeeded(msg.into()), lost_wal_bytes: None }
    }
    fn skipped(msg: impl Into<String>) -> Done {
        Done { outcome: Outcome::Skipped(msg.into()), lost_wal_bytes: None }
    }
}

/// Fencing a reachable old primary is retried this many times before the failover goes on without
/// it: the primary was confirmed dead by the probes, and a half-dead server must not block recovery.
pub const FENCE_ATTEMPTS: i32 = 3;

/// Runs one step (never `TakeEpoch`, which the executor does itself).
pub async fn run(step: Step, cx: &StepCtx<'_>) -> Result<Done, String> {
    match step {
        Step::TakeEpoch => Ok(Done::ok("epoch taken when the transition started")),
        Step::Fence => fence(cx).await,
        Step::Promote => promote(cx).await,
        Step::VerifyWritable => verify_writable(cx).await,
        Step::RewriteDataSource => rewrite(cx).await,
        Step::Recycle => recycle_all(cx).await,
        Step::FlipDns => flip_dns(cx).await,
    }
}

fn site<'a>(cx: &'a StepCtx<'_>, name: &str) -> Result<(usize, &'a Site), String> {
    cx.spec
        .sites
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .ok_or_else(|| format!("no site named {name} in spec.sites"))
}

async fn connect_site(cx: &StepCtx<'_>, name: &str) -> Result<tokio_postgres::Client, String> {
    let (i, s) = site(cx, name)?;
    let data = Secrets::new(cx.client.clone(), cx.ns)
        .get(
            &s.postgres.credentials_secret.name,
            &["username", "password"],
            &format!("spec.sites[{i}].postgres.credentialsSecret"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let creds =
        Credentials { username: data.value("username").into(), password: data.value("password").into() };
    let cfg = sql::config(&s.postgres, &creds, cx.timeout);
    tokio::time::timeout(cx.timeout, sql::connect(&cfg))
        .await
        .map_err(|_| {
            format!("{name} ({}:{}): no answer within {:?}", s.postgres.host, s.postgres.port, cx.timeout)
        })?
        .map_err(|e| format!("{name} ({}:{}): {e}", s.postgres.host, s.postgres.port))
}

async fn consoles(cx: &StepCtx<'_>) -> Vec<Result<Console, String>> {
    let secrets = Secrets::new(cx.client.clone(), cx.ns);
    let mut out = Vec::new();
    for (i, r) in cx.spec.recycle.iter().enumerate() {
        let Some(pgb) = &r.pg_bouncer else { continue };
        let field = format!("spec.recycle[{i}].pgBouncer.adminSecret");
        let c = match secrets.get(&pgb.admin_secret.name, &["username", "password"], &field).await {
            Ok(d) => Console::connect(pgb, d.value("username"), d.value("password"), cx.timeout)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(c);
    }
    out
}

async fn fence(cx: &StepCtx<'_>) -> Result<Done, String> {
    let old = match connect_site(cx, cx.from).await {
        Ok(c) => c,
        Err(e) => return Ok(Done::skipped(format!("old primary unreachable, nothing to fence: {e}"))),
    };
    // Hold new transactions at the poolers first, so nothing new starts on the old primary.
    let mut notes = Vec::new();
    for c in consoles(cx).await {
        match c {
            Ok(c) => {
                if let Err(e) = c.pause(cx.timeout).await {
                    notes.push(format!("pause skipped: {e}"));
                }
            }
            Err(e) => notes.push(format!("pause skipped: {e}")),
        }
    }
    match admin::fence(&old).await {
        Ok(n) => {
            let mut msg = format!("{} read-only, {n} client sessions terminated", cx.from);
            if !notes.is_empty() {
                msg.push_str(&format!(" ({})", notes.join("; ")));
            }
            Ok(Done::ok(msg))
        }
        Err(e) if cx.attempts + 1 >= FENCE_ATTEMPTS => Ok(Done::skipped(format!(
            "fencing {} failed {FENCE_ATTEMPTS} times, going on without it: {e}",
            cx.from
        ))),
        Err(e) => Err(format!("fence {}: {e}", cx.from)),
    }
}

async fn promote(cx: &StepCtx<'_>) -> Result<Done, String> {
    let c = connect_site(cx, cx.to).await?;
    let mut lost = None;
    if admin::in_recovery(&c).await.map_err(|e| e.to_string())? {
        // What the standby holds now is what survives the promotion (it replays all it received).
        let (recv, replay) = admin::standby_lsns(&c).await.map_err(|e| e.to_string())?;
        let kept = recv.max(replay);
        if let (Some(last), Some(kept)) = (cx.last_primary_lsn, kept) {
            lost = Some(i64::try_from(last.bytes_after(kept)).unwrap_or(i64::MAX));
        }
    }
    let promoted = admin::promote(&c, cx.timeout.max(Duration::from_secs(30)))
        .await
        .map_err(|e| format!("{}: {e}", cx.to))?;
    let msg =
        if promoted { format!("{} promoted", cx.to) } else { format!("{} was already promoted", cx.to) };
    Ok(Done { outcome: Outcome::Succeeded(msg), lost_wal_bytes: lost })
}

async fn verify_writable(cx: &StepCtx<'_>) -> Result<Done, String> {
    let c = connect_site(cx, cx.to).await?;
    let held = admin::write_epoch_marker(&c, cx.pair, cx.to, cx.epoch)
        .await
        .map_err(|e| format!("{}: {e}", cx.to))?;
    if held != cx.epoch {
        return Err(format!(
            "{} marker holds epoch {held}, newer than ours ({}): a newer transition owns this pair",
            cx.to, cx.epoch
        ));
    }
    Ok(Done::ok(format!("{} committed the epoch {} marker", cx.to, cx.epoch)))
}

async fn rewrite(cx: &StepCtx<'_>) -> Result<Done, String> {
    if cx.spec.data_source.is_empty() {
        return Ok(Done::skipped("no spec.dataSource targets"));
    }
    let plan =
        datasource::plan(cx.client, cx.ns, cx.spec, cx.to, cx.epoch).await.map_err(|e| e.to_string())?;
    if plan.is_empty() {
        return Ok(Done::ok(format!("every DataSource target already points at {}", cx.to)));
    }
    let n = datasource::apply(cx.client, cx.ns, plan).await.map_err(|e| e.to_string())?;
    Ok(Done::ok(format!("{n} of {} DataSource targets rewritten to {}", cx.spec.data_source.len(), cx.to)))
}

async fn recycle_all(cx: &StepCtx<'_>) -> Result<Done, String> {
    if cx.spec.recycle.is_empty() {
        return Ok(Done::skipped("no spec.recycle entries"));
    }
    let (_, to) = site(cx, cx.to)?;
    let secrets = Secrets::new(cx.client.clone(), cx.ns);
    let mut done = Vec::new();
    for (i, r) in cx.spec.recycle.iter().enumerate() {
        if let Some(pgb) = &r.pg_bouncer {
            let field = format!("spec.recycle[{i}].pgBouncer");
            let creds = secrets
                .get(&pgb.admin_secret.name, &["username", "password"], &format!("{field}.adminSecret"))
                .await
                .map_err(|e| e.to_string())?;
            let console = Console::connect(pgb, creds.value("username"), creds.value("password"), cx.timeout)
                .await
                .map_err(|e| format!("{field}: {e}"))?;
            match &pgb.databases_file {
                Some(path) => {
                    let dbname = pgb.backend_database.clone().unwrap_or_else(|| to.postgres.database.clone());
                    let content = recycle::pgbouncer::databases_file(
                        &pgb.database,
                        &to.postgres.host,
                        to.postgres.port,
                        &dbname,
                        cx.epoch,
                    );
                    recycle::pgbouncer::write_databases_file(path, &content)
                        .map_err(|e| format!("{field}.databasesFile {path}: {e}"))?;
                    // Always RELOAD: a crash between write and reload must not leave PgBouncer on the old file.
                    console.reload(cx.timeout).await.map_err(|e| format!("{field}: {e}"))?;
                }
                None => console.reconnect(cx.timeout).await.map_err(|e| format!("{field}: {e}"))?,
            }
            console.resume(cx.timeout).await.map_err(|e| format!("{field}: {e}"))?;
            done.push(format!("pgbouncer {}:{} → {}", pgb.host, pgb.port, cx.to));
        }
        if let Some(h) = &r.http {
            let field = format!("spec.recycle[{i}].http");
            let token = match &h.token_secret {
                Some(t) => Some(
                    secrets
                        .get(&t.name, &["token"], &format!("{field}.tokenSecret"))
                        .await
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            recycle::http::call(cx.http, h, token.as_ref().map(|t| t.value("token")), cx.timeout)
                .await
                .map_err(|e| format!("{field}: {e}"))?;
            done.push(format!("{} {}", h.method, crate::probe::http::redact(&h.url)));
        }
        if let Some(rr) = &r.rollout_restart {
            recycle::rollout::restart(cx.client, cx.ns, rr.kind, &rr.name, cx.epoch)
                .await
                .map_err(|e| format!("spec.recycle[{i}].rolloutRestart: {e}"))?;
            done.push(format!("restarted {:?} {}", rr.kind, rr.name));
        }
    }
    Ok(Done::ok(done.join(", ")))
}

async fn flip_dns(cx: &StepCtx<'_>) -> Result<Done, String> {
    if cx.spec.dns.is_empty() {
        return Ok(Done::skipped("no spec.dns records"));
    }
    let (i, to) = site(cx, cx.to)?;
    let target = to
        .dns_target
        .as_deref()
        .ok_or_else(|| format!("spec.sites[{i}].dnsTarget is required when spec.dns lists records"))?;
    let addr: IpAddr =
        target.parse().map_err(|_| format!("spec.sites[{i}].dnsTarget {target:?} is not an IP address"))?;
    let secrets = Secrets::new(cx.client.clone(), cx.ns);
    let mut done = Vec::new();
    for (j, r) in cx.spec.dns.iter().enumerate() {
        if let Some(rfc) = &r.rfc2136 {
            let field = format!("spec.dns[{j}].rfc2136");
            let server = rfc2136::server_addr(&rfc.server).map_err(|e| format!("{field}.{e}"))?;
            let name = rfc2136::fqdn(&rfc.name, &rfc.zone).map_err(|e| format!("{field}.{e}"))?;
            let now =
                rfc2136::current(server, &name, cx.timeout).await.map_err(|e| format!("{field}: {e}"))?;
            if now != [addr] {
                let k = secrets
                    .get(
                        &rfc.tsig_secret.name,
                        &["name", "algorithm", "secret"],
                        &format!("{field}.tsigSecret"),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let key = rfc2136::TsigKey {
                    name: k.value("name").into(),
                    algorithm: k.value("algorithm").into(),
                    secret_b64: k.value("secret").into(),
                };
                let ttl = u32::try_from(rfc.ttl).unwrap_or(30);
                rfc2136::replace(server, &rfc.zone, &name, ttl, addr, &key, cx.timeout)
                    .await
                    .map_err(|e| format!("{field}: {e}"))?;
                // Confirm: the authoritative server must answer the new address.
                let deadline = tokio::time::Instant::now() + cx.timeout.max(Duration::from_secs(5));
                loop {
                    let answer = rfc2136::current(server, &name, cx.timeout)
                        .await
                        .map_err(|e| format!("{field}: {e}"))?;
                    if answer == [addr] {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!(
                            "{field}: {server} still answers {answer:?} for {name} after the update"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            done.push(format!("{name} A {addr} (confirmed at {server})"));
        }
        if let Some(de) = &r.dns_endpoint {
            let field = format!("spec.dns[{j}].dnsEndpoint");
            let cur =
                dns_endpoint::current(cx.client, cx.ns, de).await.map_err(|e| format!("{field}: {e}"))?;
            if let Some((_, held)) = &cur {
                if *held > cx.epoch {
                    return Err(format!(
                        "{field}: DNSEndpoint {} carries epoch {held}, newer than ours ({})",
                        de.name, cx.epoch
                    ));
                }
            }
            if cur.map(|(t, _)| t) != Some(vec![target.to_string()]) {
                dns_endpoint::apply(cx.client, cx.ns, de, target, cx.epoch)
                    .await
                    .map_err(|e| format!("{field}: {e}"))?;
            }
            done.push(format!("DNSEndpoint {} → {target}", de.name));
        }
    }
    Ok(Done::ok(done.join(", ")))
}
