//! A stand-in for the Job controller and the kubelet, for rejoin Jobs only.
//!
//! The sandbox runs a real kube-apiserver and etcd but no kube-controller-manager and no kubelet,
//! so a Job understudy creates never runs by itself. `JobRunner` plays both parts for the Jobs
//! understudy labels as rejoin Jobs (`app.kubernetes.io/managed-by=understudy`,
//! `app.kubernetes.io/component=rejoin`) in one namespace, and nothing more:
//!
//! - it runs the **first container's** `command` + `args` as a local process (no image, no volume:
//!   the sandbox's data directories are on this machine), with an environment made only of
//!   `PATH` and the container's `env`: literal `value`s, and `valueFrom.secretKeyRef` read from the
//!   real Secret through the API (anything else — `envFrom`, field or resource references — fails
//!   the Job with reason `CreateContainerConfigError`, as a kubelet would refuse the Pod);
//! - it writes the Job's status through the status subresource as the Job controller does
//!   (Kubernetes ≥ 1.31 validates these transitions): `startTime` and `active: 1` when it starts;
//!   then `succeeded: 1`, `completionTime` and the `SuccessCriteriaMet` and `Complete` conditions,
//!   or `failed: n` and the `FailureTarget` and `Failed` conditions with reason
//!   `BackoffLimitExceeded` (the process failed `backoffLimit + 1` times) or `DeadlineExceeded`
//!   (it outran `activeDeadlineSeconds`; it is killed);
//! - a Job deleted while its process runs (understudy deletes one that outlives the hook's
//!   timeout) has its process group killed, as the garbage collector would delete its Pod.
//!
//! Each process's standard output and error go to `<log dir>/<job>.log`. What ran is in `runs()`.
//! `hold(true)` keeps new Jobs pending (as a cluster without a free node would) until `hold(false)`.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api, Client, ResourceExt,
};
use serde_json::json;
use tokio::task::JoinSet;

/// The label selector of the Jobs the stand-in runs.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=understudy,app.kubernetes.io/component=rejoin";

/// How one Job's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The process exited with this status (the last try's, with `backoffLimit` > 0).
    Exited(i32),
    /// The Job was deleted while the process ran; it was killed.
    Deleted,
    /// `activeDeadlineSeconds` passed; the process was killed.
    Deadline,
    /// The Pod could not have been made (an env source the stand-in does not resolve, no command).
    Refused(String),
}

/// One Job the stand-in ran.
#[derive(Clone, Debug)]
pub struct Run {
    pub job: String,
    pub ended: Ended,
}

/// The stand-in, watching one namespace until dropped (its processes are killed then).
pub struct JobRunner {
    task: tokio::task::JoinHandle<()>,
    runs: Arc<Mutex<Vec<Run>>>,
    held: Arc<AtomicBool>,
    log_dir: PathBuf,
}

impl JobRunner {
    /// Starts running the rejoin Jobs of namespace `ns`, logging their output under `log_dir`.
    pub fn start(client: Client, ns: &str, log_dir: PathBuf) -> Result<JobRunner> {
        std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
        let runs = Arc::new(Mutex::new(Vec::new()));
        let api: Api<Job> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client, ns);
        let (r, dir) = (runs.clone(), log_dir.clone());
        let held = Arc::new(AtomicBool::new(false));
        let hold = held.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (the runner aborted) aborts every run and kills its process.
            let mut running = JoinSet::new();
            let mut seen = HashSet::new();
            loop {
                let jobs = match hold.load(Ordering::SeqCst) {
                    true => Err(()),
                    false => api.list(&ListParams::default().labels(SELECTOR)).await.map_err(|_| ()),
                };
                if let Ok(jobs) = jobs {
                    for job in jobs.items {
                        let uid = job.uid().unwrap_or_default();
                        let started = job.status.as_ref().is_some_and(|s| s.start_time.is_some());
                        if started || job.metadata.deletion_timestamp.is_some() || !seen.insert(uid) {
                            continue;
                        }
                        let (api, secrets, r, dir) = (api.clone(), secrets.clone(), r.clone(), dir.clone());
                        running.spawn(async move {
                            let name = job.name_any();
                            let ended = match run(&api, &secrets, &job, &dir).await {
                                Ok(ended) => ended,
                                Err(e) => Ended::Refused(format!("stand-in: {e:#}")),
                            };
                            r.lock().expect("runs").push(Run { job: name, ended });
                        });
                    }
                }
                while running.try_join_next().is_some() {}
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(JobRunner { task, runs, held, log_dir })
    }

    /// While `on`, Jobs not started yet stay pending.
    pub fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
    }

    /// The Jobs run so far, in the order they ended.
    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().expect("runs").clone()
    }

    /// What a Job's process printed.
    pub fn log(&self, job: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{job}.log"))).unwrap_or_default()
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `2027-01-15T10:00:03Z`, as `metav1.Time` is written.
fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn patch_status(api: &Api<Job>, name: &str, status: serde_json::Value) -> Result<()> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
        .await
        .with_context(|| format!("write the status of Job {name}"))?;
    Ok(())
}

/// Runs one Job to its end and writes its final status.
async fn run(api: &Api<Job>, secrets: &Api<Secret>, job: &Job, dir: &std::path::Path) -> Result<Ended> {
    let name = job.name_any();
    let spec = job.spec.clone().context("a Job without spec")?;
    let started = now();
    patch_status(api, &name, json!({ "startTime": started, "active": 1 })).await?;
    let tries = spec.backoff_limit.unwrap_or(6).max(0) + 1;
    let deadline = spec.active_deadline_seconds.map(|s| Duration::from_secs(s.max(0) as u64));
    let begun = tokio::time::Instant::now();
    let mut failed = 0;
    let ended = match command(secrets, job).await {
        Err(e) => Ended::Refused(format!("{e:#}")),
        Ok(mut cmd) => loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))?;
            cmd.stdout(log.try_clone()?).stderr(log);
            let mut child = cmd.spawn().with_context(|| format!("start the process of Job {name}"))?;
            // Whatever way this run ends (the runner dropped too), its whole process group goes,
            // as a Pod's containers do.
            let _group = child.id().map(Group);
            let ended = loop {
                let left = deadline.map(|d| d.saturating_sub(begun.elapsed()));
                let tick = left.unwrap_or(Duration::MAX).min(Duration::from_millis(300));
                tokio::select! {
                    st = child.wait() => break Ended::Exited(st?.code().unwrap_or(-1)),
                    _ = tokio::time::sleep(tick) => {}
                }
                if left.is_some_and(|l| l.is_zero()) {
                    break Ended::Deadline;
                }
                let gone = api
                    .get_opt(&name)
                    .await
                    .ok()
                    .is_some_and(|j| j.is_none_or(|j| j.metadata.deletion_timestamp.is_some()));
                if gone {
                    break Ended::Deleted;
                }
            };
            match ended {
                Ended::Exited(0) => break ended,
                Ended::Exited(_) => {
                    failed += 1;
                    if failed >= tries {
                        break ended;
                    }
                }
                _ => break ended,
            }
        },
    };
    let finished = now();
    let cond = |type_: &str, reason: &str, message: &str| {
        json!({ "type": type_, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": finished, "lastTransitionTime": finished })
    };
    let status = match &ended {
        Ended::Deleted => return Ok(ended),
        Ended::Exited(0) => {
            let msg = "Reached expected number of succeeded pods";
            json!({ "active": 0, "ready": 0, "succeeded": 1, "failed": failed, "completionTime": finished,
                    "conditions": [cond("SuccessCriteriaMet", "CompletionsReached", msg),
                                   cond("Complete", "CompletionsReached", msg)] })
        }
        Ended::Exited(_) => {
            let msg = "Job has reached the specified backoff limit";
            json!({ "active": 0, "ready": 0, "failed": failed,
                    "conditions": [cond("FailureTarget", "BackoffLimitExceeded", msg),
                                   cond("Failed", "BackoffLimitExceeded", msg)] })
        }
        Ended::Deadline => {
            let msg = "Job was active longer than specified deadline";
            json!({ "active": 0, "ready": 0, "failed": failed + 1,
                    "conditions": [cond("FailureTarget", "DeadlineExceeded", msg),
                                   cond("Failed", "DeadlineExceeded", msg)] })
        }
        Ended::Refused(why) => {
            json!({ "active": 0, "ready": 0, "failed": 1,
                    "conditions": [cond("FailureTarget", "CreateContainerConfigError", why),
                                   cond("Failed", "CreateContainerConfigError", why)] })
        }
    };
    patch_status(api, &name, status).await?;
    Ok(ended)
}

/// A run's process group (its leader's pid), killed when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

/// The first container's process, its environment resolved as the kubelet would.
async fn command(secrets: &Api<Secret>, job: &Job) -> Result<tokio::process::Command> {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).context("no Pod spec")?;
    let c = pod.containers.first().context("no container")?;
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        bail!("container {}: envFrom is not supported by the stand-in", c.name);
    }
    let argv: Vec<String> = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
    let (program, args) = argv.split_first().context("the stand-in needs the container's command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for v in c.env.iter().flatten() {
        let value = match (&v.value, &v.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                let r = from.secret_key_ref.as_ref().with_context(|| {
                    format!("env {}: only secretKeyRef is resolved by the stand-in", v.name)
                })?;
                let s = secrets
                    .get(&r.name)
                    .await
                    .with_context(|| format!("env {}: Secret {}", v.name, r.name))?;
                let bytes = s
                    .data
                    .and_then(|d| d.get(&r.key).cloned())
                    .with_context(|| format!("env {}: Secret {} has no key {}", v.name, r.name, r.key))?;
                String::from_utf8(bytes.0)?
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => bail!("env {}: both value and valueFrom", v.name),
        };
        cmd.env(&v.name, value);
    }
    Ok(cmd)
}
