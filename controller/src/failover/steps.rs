//! The side effects of each step. Every function is safe to call again after a crash or a failed
//! attempt: it checks what is already true and does only the rest. Errors are one line that names
//! the target (never a credential), so the journal and the Warning Event say what to fix.

use std::{net::IpAddr, time::Duration};

use kube::Client;

use super::{Failure, Outcome, Step};
use crate::{
    crd::DisasterRecoveryPairSpec,
    datasource,
    dns::{dns_endpoint, rfc2136},
    pg::{admin, conn, Lsn},
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
    /// The last WAL position seen on the old primary (for the lost-WAL figure); for a switchover,
    /// the quiesced primary's final LSN.
    pub last_primary_lsn: Option<Lsn>,
    /// When this step was first started (survives restarts; deadlines count from it).
    pub step_started: Option<jiff::Timestamp>,
}

/// A step's result: its outcome and the figures some steps measure.
#[derive(Default)]
pub struct Done {
    pub outcome: Option<Outcome>,
    /// `Promote`: WAL bytes the promoted standby did not have.
    pub lost_wal_bytes: Option<i64>,
    /// `Promote`: the standby's position when promoted (the fork point).
    pub promoted_at_lsn: Option<Lsn>,
    /// `Quiesce`: the primary's last position once writers were stopped.
    pub final_lsn: Option<Lsn>,
}

impl Done {
    fn ok(msg: impl Into<String>) -> Done {
        Done { outcome: Some(Outcome::Succeeded(msg.into())), ..Default::default() }
    }
    fn skipped(msg: impl Into<String>) -> Done {
        Done { outcome: Some(Outcome::Skipped(msg.into())), ..Default::default() }
    }
}

/// Fencing a reachable old primary is retried this many times before the failover goes on without
/// it: the primary was confirmed dead by the probes, and a half-dead server must not block recovery.
pub const FENCE_ATTEMPTS: i32 = 3;

/// Runs one step (never `TakeEpoch`, which the executor does itself).
pub async fn run(step: Step, cx: &StepCtx<'_>) -> Result<Done, Failure> {
    match step {
        Step::TakeEpoch => Ok(Done::ok("epoch taken when the transition started")),
        Step::PreCheck => pre_check(cx).await,
        Step::Quiesce => quiesce(cx).await,
        Step::CatchUp => catch_up(cx).await,
        Step::Fence => Ok(fence(cx).await?),
        Step::Promote => Ok(promote(cx).await?),
        Step::VerifyWritable => Ok(verify_writable(cx).await?),
        Step::RewriteDataSource => Ok(rewrite(cx).await?),
        Step::Recycle => Ok(recycle_all(cx).await?),
        Step::FlipDns => Ok(flip_dns(cx).await?),
    }
}

/// Switchover attempts at a step that can still roll back before giving up.
pub const SWITCHOVER_ATTEMPTS: i32 = 3;

fn retry_or_abort(cx: &StepCtx<'_>, msg: String) -> Failure {
    if cx.attempts + 1 >= SWITCHOVER_ATTEMPTS {
        Failure::Abort(format!("{msg} (after {SWITCHOVER_ATTEMPTS} attempts)"))
    } else {
        Failure::Retry(msg)
    }
}

async fn pre_check(cx: &StepCtx<'_>) -> Result<Done, Failure> {
    let s = connect_site(cx, cx.to).await.map_err(|e| Failure::Abort(format!("standby {e}")))?;
    let streaming: Option<String> = s
        .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
        .await
        .map_err(|e| Failure::Abort(format!("standby {}: {}", cx.to, conn::describe(&e))))?
        .and_then(|r| r.try_get(0).ok());
    if !admin::in_recovery(&s).await.map_err(|e| Failure::Abort(e.to_string()))? {
        return Err(Failure::Abort(format!(
            "standby {} is not in recovery: it does not follow {}",
            cx.to, cx.from
        )));
    }
    if streaming.as_deref() != Some("streaming") {
        return Err(Failure::Abort(format!(
            "standby {} is not streaming from {} (WAL receiver: {})",
            cx.to,
            cx.from,
            streaming.as_deref().unwrap_or("none")
        )));
    }
    let p = connect_site(cx, cx.from).await.map_err(|e| Failure::Abort(format!("primary {e}")))?;
    let head = admin::current_lsn(&p).await.map_err(|e| Failure::Abort(e.to_string()))?;
    let (_, replay) = admin::standby_lsns(&s).await.map_err(|e| Failure::Abort(e.to_string()))?;
    let lag = head.bytes_after(replay.unwrap_or_default());
    let max = crate::units::quantity_bytes(&cx.spec.failover.max_lag_bytes.0).map_err(Failure::Abort)?;
    if lag > max {
        return Err(Failure::Abort(format!(
            "lag {} > maxLagBytes {}: the catch-up would hold writers too long",
            crate::units::human_bytes(lag),
            crate::units::human_bytes(max)
        )));
    }
    Ok(Done::ok(format!("{} streams from {}, lag {} bytes", cx.to, cx.from, lag)))
}

async fn quiesce(cx: &StepCtx<'_>) -> Result<Done, Failure> {
    // PgBouncer first: PAUSE waits for running transactions and holds new ones, so the clients
    // queue instead of failing; then the primary refuses writes from anyone who went around it.
    for c in consoles(cx).await {
        let c = c.map_err(|e| retry_or_abort(cx, e))?;
        c.pause(cx.timeout.max(Duration::from_secs(5)))
            .await
            .map_err(|e| retry_or_abort(cx, e.to_string()))?;
    }
    let p = connect_site(cx, cx.from).await.map_err(|e| retry_or_abort(cx, format!("primary {e}")))?;
    let n = admin::fence(&p).await.map_err(|e| retry_or_abort(cx, format!("fence {}: {e}", cx.from)))?;
    let lsn = admin::current_lsn(&p).await.map_err(|e| retry_or_abort(cx, e.to_string()))?;
    Ok(Done {
        outcome: Some(Outcome::Succeeded(format!(
            "writers held at PgBouncer, {} read-only ({n} sessions terminated), final LSN {lsn}",
            cx.from
        ))),
        final_lsn: Some(lsn),
        ..Default::default()
    })
}

async fn catch_up(cx: &StepCtx<'_>) -> Result<Done, Failure> {
    let Some(target) = cx.last_primary_lsn else {
        return Err(Failure::Abort("no final LSN recorded by Quiesce".into()));
    };
    let timeout: Duration = cx.spec.failover.catch_up_timeout.into();
    let started = cx.step_started.unwrap_or_else(jiff::Timestamp::now);
    let deadline =
        started.checked_add(jiff::SignedDuration::try_from(timeout).unwrap_or_default()).unwrap_or(started);
    let s = connect_site(cx, cx.to).await?;
    loop {
        let (_, replay) = admin::standby_lsns(&s).await.map_err(|e| e.to_string())?;
        let replay = replay.unwrap_or_default();
        if replay >= target {
            return Ok(Done::ok(format!("{} replayed {replay} ≥ final LSN {target}", cx.to)));
        }
        if jiff::Timestamp::now() > deadline {
            return Err(Failure::Abort(format!(
                "{} replayed only up to {replay} of {target} within catchUpTimeout {timeout:?} ({} bytes short)",
                cx.to,
                target.bytes_after(replay)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Undoes a switchover that stopped before `TakeEpoch`: the old primary writable again, PgBouncer
/// resumed. Safe to run more than once.
pub async fn roll_back(cx: &StepCtx<'_>) -> Result<String, String> {
    let p = connect_site(cx, cx.from).await?;
    admin::unfence(&p).await.map_err(|e| format!("unfence {}: {e}", cx.from))?;
    for c in consoles(cx).await {
        c?.resume(cx.timeout).await.map_err(|e| e.to_string())?;
    }
    Ok(format!("{} writable again, PgBouncer resumed", cx.from))
}

async fn connect_site(cx: &StepCtx<'_>, name: &str) -> Result<tokio_postgres::Client, String> {
    let (i, s) = cx.spec.site(name)?;
    let secrets = Secrets::new(cx.client.clone(), cx.ns);
    let (target, _) = conn::resolve(&secrets, i, s, cx.timeout).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(cx.timeout, conn::connect(&target))
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
    let mut fork = None;
    if admin::in_recovery(&c).await.map_err(|e| e.to_string())? {
        // What the standby holds now is what survives the promotion (it replays all it received).
        let (recv, replay) = admin::standby_lsns(&c).await.map_err(|e| e.to_string())?;
        let kept = recv.max(replay);
        fork = kept;
        if let (Some(last), Some(kept)) = (cx.last_primary_lsn, kept) {
            lost = Some(i64::try_from(last.bytes_after(kept)).unwrap_or(i64::MAX));
        }
    }
    let promoted = admin::promote(&c, cx.timeout.max(Duration::from_secs(30)))
        .await
        .map_err(|e| format!("{}: {e}", cx.to))?;
    let msg =
        if promoted { format!("{} promoted", cx.to) } else { format!("{} was already promoted", cx.to) };
    // The exact fork point, from the new timeline's history file; what the standby held is the
    // fallback (it can read as the start of a segment, past the real switch point).
    if let Ok(Some(switch)) = admin::timeline_switch_point(&c).await {
        fork = Some(switch);
    }
    Ok(Done {
        outcome: Some(Outcome::Succeeded(msg)),
        lost_wal_bytes: lost,
        promoted_at_lsn: fork,
        ..Default::default()
    })
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
    let plan = datasource::plan(cx.client, cx.ns, cx.spec, cx.to, cx.epoch)
        .await
        .map_err(|e| format!("nothing was written: {e}"))?;
    if plan.is_empty() {
        return Ok(Done::ok(format!("every DataSource target already points at {}", cx.to)));
    }
    datasource::check(cx.client, cx.ns, &plan).await.map_err(|e| format!("nothing was written: {e}"))?;
    let n = datasource::apply(cx.client, cx.ns, plan).await.map_err(|e| e.to_string())?;
    Ok(Done::ok(format!(
        "{n} object(s) holding {} DataSource target(s) rewritten to {}",
        cx.spec.data_source.len(),
        cx.to
    )))
}

async fn recycle_all(cx: &StepCtx<'_>) -> Result<Done, String> {
    if cx.spec.recycle.is_empty() {
        return Ok(Done::skipped("no spec.recycle entries"));
    }
    let (_, to) = cx.spec.site(cx.to)?;
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
    let (i, to) = cx.spec.site(cx.to)?;
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
                let key = rfc2136::key_from_secret(&secrets, rfc, &field).await?;
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
