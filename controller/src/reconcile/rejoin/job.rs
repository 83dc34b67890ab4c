//! The rejoin hook as a Kubernetes Job (`spec.sites[*].rejoin.job`): for a former primary whose
//! data directory only a Pod in the controller's cluster can reach (a StatefulSet's volume), where
//! a command run inside the controller's own container cannot act.
//!
//! `build` turns the site's JobSpec template into the Job of one attempt (pure, unit-tested):
//! a deterministic name from the pair, the site, the epoch and the attempt; labels naming them; the
//! pair as its controlling owner; the hook's variables in every container, the new primary's
//! credentials as `secretKeyRef`s to its credentials Secret (the Job object never holds a
//! password); and the defaults a hook needs where the template leaves them out (`backoffLimit: 0`,
//! `activeDeadlineSeconds` = the hook's timeout, `ttlSecondsAfterFinished` one day, the Pod's
//! `restartPolicy: Never`). `JobHook` creates it (or adopts an unfinished one of the same pair,
//! site and epoch, left by a controller restarted mid-run) and polls it until its `Complete` or
//! `Failed` condition, deleting it when it outlives the timeout.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvVar, EnvVarSource, SecretKeySelector},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    Api, Client, Resource, ResourceExt,
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::hook::{HookCall, HookError, HookRunner};
use crate::{
    crd::{DisasterRecoveryPair, Epoch, RejoinHook, Site},
    secrets::Secrets,
};

/// The label naming the pair (its name, hashed when longer than a label value may be).
pub const PAIR_LABEL: &str = "dr.understudy.dev/pair";
/// The label naming the site being rejoined.
pub const SITE_LABEL: &str = "dr.understudy.dev/site";
/// The label holding the pair's epoch.
pub const EPOCH_LABEL: &str = "dr.understudy.dev/epoch";
/// The label holding the attempt's number.
pub const ATTEMPT_LABEL: &str = "dr.understudy.dev/attempt";
/// `app.kubernetes.io/component` of every rejoin Job.
pub const COMPONENT: &str = "rejoin";

/// `ttlSecondsAfterFinished` unless the template sets it: a finished Job (and its Pod's log) stays
/// a day for inspection.
pub const DEFAULT_TTL_SECONDS: i32 = 86_400;

/// How often a running Job is read.
pub const POLL: Duration = Duration::from_millis(500);

/// Longest a single API request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Job hook of one pair.
pub struct JobHook {
    pub client: Client,
    /// The pair's namespace's Secrets, to check the credentials Secret before the Job refers to it.
    pub secrets: Secrets,
    /// The pair (name, namespace and uid for the Job's name and owner; the spec for the new primary).
    pub pair: DisasterRecoveryPair,
    /// How often the Job is read while it runs (`POLL`).
    pub poll: Duration,
}

#[async_trait]
impl HookRunner for JobHook {
    async fn run(&self, hook: &RejoinHook, call: &HookCall) -> Result<String, HookError> {
        let template = hook.job.as_ref().ok_or(HookError::NoHook)?;
        let timeout: Duration = hook.timeout.into();
        // The Job refers to the new primary's credentials Secret: a missing Secret or key is said
        // here, in the words the probes use, not as a Pod stuck in CreateContainerConfigError.
        let (i, primary) = self.pair.spec.site(&call.primary)?;
        let creds = &primary.postgres.credentials_secret.name;
        self.secrets
            .get(creds, &["username", "password"], &format!("spec.sites[{i}].postgres.credentialsSecret"))
            .await?;
        let job = build(&self.pair, template, timeout, call)?;
        let name = job.name_any();
        let api: Api<Job> = Api::namespaced(self.client.clone(), &self.pair.namespace().unwrap_or_default());
        let (name, created) = match self.unfinished(&api, &name, call).await? {
            Some(running) => {
                info!(job = %running, "adopting the unfinished rejoin Job of this epoch");
                (running, None)
            }
            None => match request(&name, api.create(&PostParams::default(), &job)).await {
                Ok(j) => {
                    info!(job = %name, site = %call.site, attempt = call.attempt, "rejoin Job created");
                    (name, j.metadata.creation_timestamp)
                }
                // Created by an earlier run of this attempt: adopted.
                Err(HookError::JobApi { reason, .. }) if reason.starts_with("409 ") => {
                    info!(job = %name, "adopting the existing rejoin Job");
                    (name, None)
                }
                Err(e) => return Err(e),
            },
        };
        self.wait(&api, &name, created, timeout).await
    }
}

impl JobHook {
    /// An unfinished Job of this pair, site and epoch (not being deleted), if any: two rejoins of
    /// one data directory must never run at once.
    async fn unfinished(
        &self,
        api: &Api<Job>,
        name: &str,
        call: &HookCall,
    ) -> Result<Option<String>, HookError> {
        let selector = format!(
            "{PAIR_LABEL}={},{SITE_LABEL}={},{EPOCH_LABEL}={}",
            label_value(&self.pair.name_any()),
            call.site,
            call.epoch.0
        );
        let jobs = request(name, api.list(&ListParams::default().labels(&selector))).await?;
        Ok(jobs
            .items
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none() && outcome(j).is_none())
            .map(|j| j.name_any())
            .min())
    }

    /// Polls Job `name` until it finishes, or deletes it once it has run for `timeout` (counted
    /// from its creation).
    async fn wait(
        &self,
        api: &Api<Job>,
        name: &str,
        created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
        timeout: Duration,
    ) -> Result<String, HookError> {
        let start = tokio::time::Instant::now();
        let mut deadline = start + timeout;
        let mut created = created;
        loop {
            match request(name, api.get_opt(name)).await {
                Ok(Some(job)) => {
                    if let Some(done) = outcome(&job) {
                        return done;
                    }
                    if created.is_none() {
                        // An adopted Job: its time counts from its creation.
                        created = job.metadata.creation_timestamp.clone();
                        if let Some(t) = &created {
                            let ran = jiff::Timestamp::now().duration_since(t.0).unsigned_abs();
                            deadline = start + timeout.saturating_sub(ran);
                        }
                    }
                }
                Ok(None) => return Err(HookError::JobGone { name: name.into() }),
                Err(e) => warn!(job = %name, error = %e, "reading the rejoin Job"),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // Background propagation: its Pod goes too, and the next attempt starts clean.
                if let Err(e) = request(name, api.delete(name, &DeleteParams::background())).await {
                    warn!(job = %name, error = %e, "deleting the timed-out rejoin Job");
                }
                return Err(HookError::JobTimeout { name: name.into(), timeout });
            }
            tokio::time::sleep(self.poll.min(deadline - now)).await;
        }
    }
}

/// One API request, bounded by `REQUEST_TIMEOUT`; errors as `JobApi` (an API error as
/// `<code> <reason>: <message>`, the way `409 ` is recognised above).
async fn request<T>(
    name: &str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, HookError> {
    let reason = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(kube::Error::Api(ae))) => format!("{} {}: {}", ae.code, ae.reason, ae.message),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer from the API server within {REQUEST_TIMEOUT:?}"),
    };
    Err(HookError::JobApi { name: name.into(), reason })
}

/// A finished Job's outcome: `Complete` → the message the status shows, `Failed` → its reason and
/// message. `None` while it runs (`SuccessCriteriaMet` or `FailureTarget` alone are not the end:
/// its Pods may still be terminating).
pub fn outcome(job: &Job) -> Option<Result<String, HookError>> {
    let name = job.name_any();
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref())?;
    let on = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if on("Complete").is_some() {
        return Some(Ok(format!("Job {name} completed")));
    }
    on("Failed").map(|c| {
        Err(HookError::JobFailed {
            name,
            reason: c.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: c.message.clone().unwrap_or_default(),
        })
    })
}

/// The Job of one attempt, built from the site's template (see the module).
pub fn build(
    pair: &DisasterRecoveryPair,
    template: &serde_json::Value,
    timeout: Duration,
    call: &HookCall,
) -> Result<Job, HookError> {
    let (_, primary) = pair.spec.site(&call.primary)?;
    let mut spec: JobSpec = serde_path_to_error::deserialize(template).map_err(|e| {
        let path = e.path().to_string();
        HookError::JobTemplate {
            path: if path == "." || path.is_empty() { String::new() } else { format!(".{path}") },
            reason: e.into_inner().to_string().chars().take(300).collect(),
        }
    })?;
    let name = job_name(&pair.name_any(), &call.site, call.epoch, call.attempt);
    let owner = pair.controller_owner_ref(&()).ok_or_else(|| HookError::JobApi {
        name: name.clone(),
        reason: "the pair has no uid to own the Job".into(),
    })?;
    let labels = labels(&pair.name_any(), call);

    spec.backoff_limit.get_or_insert(0);
    spec.active_deadline_seconds.get_or_insert(timeout.as_secs().max(1) as i64);
    spec.ttl_seconds_after_finished.get_or_insert(DEFAULT_TTL_SECONDS);
    let meta = spec.template.metadata.get_or_insert_with(Default::default);
    let pod_labels = meta.labels.get_or_insert_with(Default::default);
    for (k, v) in &labels {
        pod_labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let pod = spec.template.spec.as_mut().ok_or_else(|| HookError::JobTemplate {
        path: ".template.spec".into(),
        reason: "missing: the Pod spec with at least one container".into(),
    })?;
    if pod.containers.is_empty() {
        return Err(HookError::JobTemplate {
            path: ".template.spec.containers".into(),
            reason: "empty: give at least one container".into(),
        });
    }
    pod.restart_policy.get_or_insert_with(|| "Never".into());
    let env = env(call, primary);
    for c in pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten()) {
        inject(c, &env);
    }
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: pair.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The variables every container gets: what `CommandHook` gives its child, the credentials as
/// references to the new primary's credentials Secret.
fn env(call: &HookCall, primary: &Site) -> Vec<EnvVar> {
    let literal =
        |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    let secret = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: primary.postgres.credentials_secret.name.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    };
    vec![
        literal("UNDERSTUDY_SITE", call.site.clone()),
        literal("UNDERSTUDY_EPOCH", call.epoch.to_string()),
        literal("UNDERSTUDY_PRIMARY_HOST", primary.postgres.host.clone()),
        literal("UNDERSTUDY_PRIMARY_PORT", primary.postgres.port.to_string()),
        secret("UNDERSTUDY_PRIMARY_USER", "username"),
        secret("UNDERSTUDY_PRIMARY_PASSWORD", "password"),
        literal("UNDERSTUDY_REWIND", if call.rewind { "1" } else { "0" }.into()),
    ]
}

/// Sets `env` on a container: understudy's variables replace any of the same name the template
/// gives (they are facts of this attempt), the template's others stay.
fn inject(c: &mut Container, env: &[EnvVar]) {
    let vars = c.env.get_or_insert_with(Vec::new);
    vars.retain(|v| !env.iter().any(|e| e.name == v.name));
    vars.extend(env.iter().cloned());
}

/// The Job's labels: the pair, the site, the epoch and the attempt, and who made it.
pub fn labels(pair: &str, call: &HookCall) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/managed-by", "understudy".to_string()),
        ("app.kubernetes.io/component", COMPONENT.to_string()),
        (PAIR_LABEL, label_value(pair)),
        (SITE_LABEL, call.site.clone()),
        (EPOCH_LABEL, call.epoch.0.to_string()),
        (ATTEMPT_LABEL, call.attempt.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The Job's name: `<pair>-rejoin-<site>-e<epoch>-a<attempt>` when that is a DNS label (at most 63
/// characters of `a-z0-9-`, as a Job's name must be for the label its Pods get); otherwise its
/// first characters made DNS-safe and a hash of the whole, so that distinct attempts never share
/// a name.
pub fn job_name(pair: &str, site: &str, epoch: Epoch, attempt: i32) -> String {
    let full = format!("{pair}-rejoin-{site}-e{}-a{attempt}", epoch.0);
    let dns_label = full.len() <= 63
        && full.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !full.starts_with('-')
        && !full.ends_with('-');
    if dns_label {
        return full;
    }
    let safe: String = full
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(63 - 11)
        .collect();
    let safe = safe.trim_matches('-');
    let hash = short_hash(&full);
    if safe.is_empty() {
        hash
    } else {
        format!("{safe}-{hash}")
    }
}

/// A label value for `v`: itself when it fits (63 characters), else its first characters and a hash.
pub fn label_value(v: &str) -> String {
    if v.len() <= 63 {
        return v.to_string();
    }
    let head: String = v.chars().take(63 - 11).collect();
    format!("{}-{}", head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()), short_hash(v))
}

/// The first 10 hex digits of the SHA-256 of `s`.
fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(5).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
