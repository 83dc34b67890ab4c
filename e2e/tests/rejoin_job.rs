//! Rejoin as a Job (`spec.sites[*].rejoin.job`) against the real kube-apiserver: the controller
//! creates the attempt's Job (named after the pair, site, epoch and attempt, owned by the pair, the
//! new primary's credentials only as `secretKeyRef`s), and `job_runner::JobRunner` — the sandbox's
//! stand-in for the Job controller and the kubelet, which the sandbox does not run — runs its
//! container's command on this machine and writes the Job's status. A Job that completes makes the
//! former primary follow; Jobs that fail or run over the hook's timeout are reported with the Job's
//! reason and retried up to `HOOK_ATTEMPTS`, the timed-out one deleted; a controller restarted while
//! its Job has not run yet adopts that Job rather than start a second one on the same data directory.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::{batch::v1::Job, events::v1::Event};
use kube::{api::ListParams, Api};
use serde_json::{json, Value};
use understudy::{
    crd::{annotations::FAILOVER, Assessment, RejoinHook},
    reconcile::rejoin::HOOK_ATTEMPTS,
};
use understudy_e2e::{
    bed::Bed,
    job_runner::{Ended, JobRunner},
    pair::{self, Manual},
    sandbox::repo_root,
    support::{self, wait_for, RunningController},
};

/// A bed whose pair `chat` rejoins east with a Job built from `template` (west keeps the sandbox's
/// command hook), the stand-in running Jobs, the controller in-process, the pair Healthy.
async fn bed_with_rejoin_job(
    label: &str,
    template: impl FnOnce(&Bed) -> Value,
    timeout: &str,
) -> Result<(Bed, RunningController, JobRunner)> {
    bed_with_rejoin_job_under(label, template, timeout, |bed| {
        Ok(RunningController::start(bed.client.clone(), &bed.ns))
    })
    .await
}

/// `bed_with_rejoin_job` with the controller `controller` starts.
async fn bed_with_rejoin_job_under<C>(
    label: &str,
    template: impl FnOnce(&Bed) -> Value,
    timeout: &str,
    controller: impl FnOnce(&Bed) -> Result<C>,
) -> Result<(Bed, C, JobRunner)> {
    let bed = Bed::start(label).await?;
    let template = template(&bed);
    let runner = JobRunner::start(bed.client.clone(), &bed.ns, bed.pg.dir.join("jobs"))?;
    let ctl = controller(&bed)?;
    bed.pair("chat")
        .failover(|f| f.mode(Manual).probe_interval("500ms"))
        .site("east", |s| {
            s.rejoin =
                Some(RejoinHook { command: None, job: Some(template), timeout: pair::duration(timeout) })
        })
        .create(&bed.client, &bed.ns)
        .await?;
    bed.wait_healthy("chat").await?;
    Ok((bed, ctl, runner))
}

/// The sandbox's rejoin script for east's data directory, as a Job template.
fn rejoin_local(bed: &Bed) -> Value {
    let script = repo_root().join("e2e/scripts/rejoin-local.sh").display().to_string();
    let east = bed.server("east");
    let mut t = template(vec!["bash".into(), script]);
    t["template"]["spec"]["containers"][0]["args"] =
        json!([east.data.display().to_string(), east.log_path().display().to_string()]);
    t
}

/// A Job template whose one container runs `command`.
fn template(command: Vec<String>) -> Value {
    json!({
        "template": {
            "metadata": { "labels": { "app": "pg-rejoin" } },
            "spec": { "containers": [ { "name": "rejoin", "image": "postgres:15", "command": command } ] }
        }
    })
}

/// The forced failover to west (east stays up and writable: the failover fences it).
async fn fail_over(bed: &Bed) -> Result<()> {
    bed.annotate("chat", FAILOVER, "f1").await?;
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;
    let st = drp.status.unwrap_or_default();
    ensure!(st.current_primary.as_deref() == Some("west") && st.epoch.0 == 1, "{st:?}");
    Ok(())
}

async fn events(bed: &Bed, reason: &str) -> Result<Vec<String>> {
    Ok(Api::<Event>::namespaced(bed.client.clone(), &bed.ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_primary_is_rejoined_by_a_job_that_reads_the_credentials_from_the_secret() -> Result<()> {
    // The sandbox's rejoin script, as the command hook runs it, here as the container's command.
    let (bed, _ctl, runner) = bed_with_rejoin_job("rejoin-job", rejoin_local, "2m").await?;
    fail_over(&bed).await?;

    // The controller's Job, as the API server stores it.
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let name = "chat-rejoin-east-e1-a1";
    wait_for("the rejoin Job", Duration::from_secs(30), || async { Ok(jobs.get_opt(name).await?.is_some()) })
        .await?;
    let job = jobs.get(name).await?;
    let raw = serde_json::to_value(&job)?;
    let text = raw.to_string();
    ensure!(!text.contains(&bed.pg.password), "the password is nowhere in the Job");
    let env = raw["spec"]["template"]["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default();
    let var = |n: &str| env.iter().find(|e| e["name"] == n).cloned().unwrap_or_default();
    for (n, key) in [("UNDERSTUDY_PRIMARY_PASSWORD", "password"), ("UNDERSTUDY_PRIMARY_USER", "username")] {
        ensure!(var(n).get("value").is_none(), "{n} is no literal: {}", var(n));
        ensure!(
            var(n)["valueFrom"]["secretKeyRef"]
                == json!({ "name": "pg-admin", "key": key, "optional": false }),
            "{n}: {}",
            var(n)
        );
    }
    for (n, v) in [
        ("UNDERSTUDY_SITE", "east".to_string()),
        ("UNDERSTUDY_EPOCH", "1".into()),
        ("UNDERSTUDY_PRIMARY_HOST", "127.0.0.1".into()),
        ("UNDERSTUDY_PRIMARY_PORT", bed.pg.standby.port.to_string()),
        ("UNDERSTUDY_REWIND", "1".into()),
    ] {
        ensure!(var(n)["value"] == v.as_str(), "{n}: {}", var(n));
    }
    let pair = bed.api().get("chat").await?;
    let owners = job.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owners.len() == 1
            && owners[0].kind == "DisasterRecoveryPair"
            && owners[0].name == "chat"
            && Some(&owners[0].uid) == pair.metadata.uid.as_ref()
            && owners[0].controller == Some(true),
        "owned by the pair: {owners:?}"
    );
    let labels = job.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("dr.understudy.dev/pair", "chat"),
        ("dr.understudy.dev/site", "east"),
        ("dr.understudy.dev/epoch", "1"),
    ] {
        ensure!(labels.get(k).map(String::as_str) == Some(v), "label {k}: {labels:?}");
    }
    let spec = job.spec.clone().context("spec")?;
    ensure!(
        (spec.backoff_limit, spec.active_deadline_seconds, spec.ttl_seconds_after_finished)
            == (Some(0), Some(120), Some(86_400)),
        "defaults: {spec:?}"
    );

    // The stand-in runs it (pg_rewind, standby.signal, restart): east follows west.
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    let fp = bed.api().get("chat").await?.status.and_then(|s| s.former_primary).context("formerPrimary")?;
    ensure!(fp.rejoin_attempts == 1, "{fp:?}");
    let said = events(&bed, "RejoinHookSucceeded").await?;
    ensure!(said.len() == 1 && said[0].contains(&format!("Job {name} completed")), "{said:?}");
    ensure!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "t");
    let runs = runner.runs();
    ensure!(runs.len() == 1 && runs[0].job == name && runs[0].ended == Ended::Exited(0), "{runs:?}");
    // It ran with the variables resolved: west's address, and the credentials read from the Secret
    // (pg_rewind and the standby's primary_conninfo log in with them).
    let log = runner.log(name);
    ensure!(log.contains("rejoin-local: east rewound"), "{log}");
    ensure!(log.contains(&format!("follows 127.0.0.1:{}", bed.pg.standby.port)), "{log}");
    // The finished Job stays for inspection, Complete.
    let done = jobs.get(name).await?.status.and_then(|s| s.conditions).unwrap_or_default();
    ensure!(done.iter().any(|c| c.type_ == "Complete" && c.status == "True"), "{done:?}");
    // No secret in the pair's status or Events either.
    let status = serde_json::to_string(&bed.api().get("chat").await?.status)?;
    ensure!(!status.contains(&bed.pg.password));
    let all = Api::<Event>::namespaced(bed.client.clone(), &bed.ns).list(&ListParams::default()).await?;
    ensure!(!serde_json::to_string(&all.items)?.contains(&bed.pg.password), "no password in any Event");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_mid_run_adopts_the_unfinished_job_instead_of_starting_a_second() -> Result<()>
{
    // The controller as a real process (for both sites), so that it can die mid-run.
    let (bed, mut ctl, runner) = bed_with_rejoin_job_under("rejoin-job-adopt", rejoin_local, "2m", |bed| {
        bed.controller_process_both_sites()
    })
    .await?;
    // The Job is created but does not run yet (no node free, say); the controller dies meanwhile.
    runner.hold(true);
    fail_over(&bed).await?;
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let first = "chat-rejoin-east-e1-a1";
    wait_for("the first Job", Duration::from_secs(30), || async { Ok(jobs.get_opt(first).await?.is_some()) })
        .await?;
    ctl.kill9();
    let _ctl = bed.controller_process_both_sites()?;
    // The new controller claims attempt 2 and waits for the first Job instead of creating its own.
    let api = bed.api();
    wait_for("attempt 2 claimed", Duration::from_secs(30), || async {
        Ok(api
            .get("chat")
            .await?
            .status
            .and_then(|s| s.former_primary)
            .is_some_and(|f| f.rejoin_attempts == 2))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names = |list: kube::core::ObjectList<Job>| {
        list.items.iter().map(|j| j.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>()
    };
    let listed = names(jobs.list(&ListParams::default()).await?);
    ensure!(listed == [first], "one Job for the data directory, not two: {listed:?}");
    runner.hold(false);
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    let said = events(&bed, "RejoinHookSucceeded").await?;
    ensure!(said.len() == 1 && said[0].contains(&format!("Job {first} completed")), "{said:?}");
    let listed = names(jobs.list(&ListParams::default()).await?);
    ensure!(listed == [first], "{listed:?}");
    let runs = runner.runs();
    ensure!(runs.len() == 1 && runs[0].job == first && runs[0].ended == Ended::Exited(0), "{runs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_timed_out_rejoin_jobs_are_reported_with_the_jobs_reason_until_the_attempts_run_out(
) -> Result<()> {
    // The first run hangs (past the 3 s timeout: the Job is deleted), every later one exits 1. The
    // template sets its own activeDeadlineSeconds and ttlSecondsAfterFinished: they are kept.
    let mark = support::pair_name_suffix();
    let script = format!(
        "m=/tmp/understudy-rejoin-job-{mark}; if [ -e $m ]; then echo 'pg_rewind: no' >&2; exit 1; fi; touch $m; sleep 600"
    );
    let mut t = template(vec!["sh".into(), "-c".into(), script]);
    t["activeDeadlineSeconds"] = json!(600);
    t["ttlSecondsAfterFinished"] = json!(600);
    let (bed, _ctl, runner) = bed_with_rejoin_job("rejoin-job-fail", |_| t, "3s").await?;
    fail_over(&bed).await?;

    // The attempts count grows, one Job each, until it gives up.
    let api = bed.api();
    let seen = std::sync::Mutex::new(Vec::new());
    let res = wait_for("the attempts to run out", Duration::from_secs(45), || async {
        let fp = api.get("chat").await?.status.and_then(|s| s.former_primary).unwrap_or_default();
        let mut seen = seen.lock().expect("seen");
        if seen.last() != Some(&fp.rejoin_attempts) {
            seen.push(fp.rejoin_attempts);
        }
        Ok(fp.assessment == Assessment::NeedsReclone)
    })
    .await;
    let _ = std::fs::remove_file(format!("/tmp/understudy-rejoin-job-{mark}"));
    let fp = api.get("chat").await?.status.and_then(|s| s.former_primary).unwrap_or_default();
    res.with_context(|| format!("{fp:?}; stand-in runs: {:?}", runner.runs()))?;
    ensure!(fp.rejoin_attempts == HOOK_ATTEMPTS, "{fp:?}");
    let seen = seen.into_inner().expect("seen");
    ensure!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.len() >= 2, "attempts only grow: {seen:?}");
    let msg = fp.message.unwrap_or_default();
    ensure!(
        msg == "rejoin hook attempt 3: Job chat-rejoin-east-e1-a3 failed: BackoffLimitExceeded: Job has reached \
                the specified backoff limit; giving up: re-create this standby from a base backup",
        "{msg}"
    );

    let failed = events(&bed, "RejoinHookFailed").await?;
    ensure!(failed.len() == 3, "{failed:?}");
    ensure!(
        failed
            .iter()
            .any(|n| n
                == "rejoin hook attempt 1: Job chat-rejoin-east-e1-a1 did not finish within 3s; deleted it"),
        "{failed:?}"
    );
    for a in [2, 3] {
        let want =
            format!("rejoin hook attempt {a}: Job chat-rejoin-east-e1-a{a} failed: BackoffLimitExceeded");
        ensure!(failed.iter().any(|n| n.starts_with(&want)), "{want}: {failed:?}");
    }

    // The timed-out Job is gone (its process killed); the failed ones stay, with the template's own
    // settings and understudy's defaults for the rest.
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    wait_for("the timed-out Job to be gone", Duration::from_secs(10), || async {
        Ok(jobs.get_opt("chat-rejoin-east-e1-a1").await?.is_none())
    })
    .await?;
    for a in [2, 3] {
        let job = jobs.get(&format!("chat-rejoin-east-e1-a{a}")).await?;
        let spec = job.spec.context("spec")?;
        ensure!(
            (spec.backoff_limit, spec.active_deadline_seconds, spec.ttl_seconds_after_finished)
                == (Some(0), Some(600), Some(600)),
            "attempt {a}: {spec:?}"
        );
        let failed = job.status.and_then(|s| s.conditions).unwrap_or_default();
        ensure!(failed.iter().any(|c| c.type_ == "Failed" && c.status == "True"), "{failed:?}");
    }
    let mut ended: Vec<(String, Ended)> = runner.runs().into_iter().map(|r| (r.job, r.ended)).collect();
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        ended
            == vec![
                ("chat-rejoin-east-e1-a1".to_string(), Ended::Deleted),
                ("chat-rejoin-east-e1-a2".to_string(), Ended::Exited(1)),
                ("chat-rejoin-east-e1-a3".to_string(), Ended::Exited(1)),
            ],
        "{ended:?}"
    );
    // East was fenced, never rejoined: it is still a (read-only) primary.
    ensure!(bed.pg.primary.psql("SELECT pg_is_in_recovery()")?.trim() == "f");
    Ok(())
}
