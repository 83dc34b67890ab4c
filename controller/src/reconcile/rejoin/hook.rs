//! The rejoin hook port: runs a site's `spec.sites[*].rejoin` to turn the former primary into a
//! standby of the new one. Two real ones: `CommandHook` (`rejoin.command`, a child process given
//! the new primary's address and credentials in its environment) and `super::job::JobHook`
//! (`rejoin.job`, a Kubernetes Job); `SiteHook` picks by which field is set. The tests' fake
//! records every call and answers as scripted.

use std::{process::Stdio, time::Duration};

use async_trait::async_trait;
use tracing::warn;

use crate::{
    crd::{DisasterRecoveryPairSpec, Epoch, NoSuchSite, RejoinHook},
    pg::conn::{self, ResolveError},
    secrets::Secrets,
};

/// One run of the hook: what it is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    /// The former primary, to be rejoined (`UNDERSTUDY_SITE`).
    pub site: String,
    /// The pair's epoch (`UNDERSTUDY_EPOCH`).
    pub epoch: Epoch,
    /// The new primary, whose address and admin credentials the hook is given.
    pub primary: String,
    /// Whether `pg_rewind` must run first (`UNDERSTUDY_REWIND`).
    pub rewind: bool,
    /// Which attempt of this transition's rejoin this is (1, 2, ...): part of a Job's name.
    pub attempt: i32,
}

/// Why a hook run failed. The texts are what the status and the `RejoinHookFailed` Event show.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The new primary is not in `spec.sites`.
    #[error("new primary {0}")]
    NoSuchSite(#[from] NoSuchSite),
    /// The new primary's credentials cannot be read.
    #[error("new primary {0}")]
    Credentials(#[from] ResolveError),
    #[error("spec.sites[*].rejoin.command is empty")]
    EmptyCommand,
    /// Neither `command` nor `job` (the schema refuses such a pair; one stored before it may exist).
    #[error("spec.sites[*].rejoin sets neither command nor job: set one of them")]
    NoHook,
    /// The new primary's credentials Secret, which the Job refers to, cannot be used.
    #[error("new primary {0}")]
    Secret(#[from] crate::secrets::SecretError),
    /// `rejoin.job` is not a JobSpec understudy can read (the field path and what is wrong there).
    #[error("spec.sites[*].rejoin.job{path}: {reason}")]
    JobTemplate { path: String, reason: String },
    /// The API server refused or failed a request about the Job (its own message).
    #[error("Job {name}: {reason}")]
    JobApi { name: String, reason: String },
    /// The Job finished with its `Failed` condition: the condition's reason and message.
    #[error("Job {name} failed: {reason}: {message}")]
    JobFailed { name: String, reason: String, message: String },
    /// The Job was still running at the hook's timeout; it was deleted.
    #[error("Job {name} did not finish within {timeout:?}; deleted it")]
    JobTimeout { name: String, timeout: Duration },
    /// The Job disappeared while it was waited for (deleted by someone else).
    #[error("Job {name} was deleted before it finished")]
    JobGone { name: String },
    #[error("start {program}: {source}")]
    Start { program: String, source: std::io::Error },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    /// Waiting for the child failed.
    #[error("{0}")]
    Wait(std::io::Error),
    /// It ran and failed: its exit status and the last lines of its standard error (credentials
    /// removed).
    #[error("{program} exited with {status}: {tail}")]
    Exited { program: String, status: std::process::ExitStatus, tail: String },
}

/// The rejoin hook port.
#[async_trait]
pub trait HookRunner: Send + Sync {
    /// Runs `hook` once; on success, the last line it printed (at most 200 characters).
    async fn run(&self, hook: &RejoinHook, call: &HookCall) -> Result<String, HookError>;
}

/// The real hook for a pair: `rejoin.command` through `CommandHook`, `rejoin.job` through `JobHook`.
pub struct SiteHook {
    pub command: CommandHook,
    pub job: super::job::JobHook,
}

#[async_trait]
impl HookRunner for SiteHook {
    async fn run(&self, hook: &RejoinHook, call: &HookCall) -> Result<String, HookError> {
        match (&hook.command, &hook.job) {
            (Some(_), _) => self.command.run(hook, call).await,
            (None, Some(_)) => self.job.run(hook, call).await,
            (None, None) => Err(HookError::NoHook),
        }
    }
}

/// The real hook for `rejoin.command`: a child process, killed when it outlives `hook.timeout`.
pub struct CommandHook {
    pub secrets: Secrets,
    pub spec: DisasterRecoveryPairSpec,
    /// For reading the new primary's Secrets.
    pub timeout: Duration,
}

#[async_trait]
impl HookRunner for CommandHook {
    async fn run(&self, hook: &RejoinHook, call: &HookCall) -> Result<String, HookError> {
        let (i, s) = self.spec.site(&call.primary)?;
        let (_, creds) = conn::resolve(&self.secrets, i, s, self.timeout).await?;
        let command = hook.command.as_deref().ok_or(HookError::NoHook)?;
        let (program, args) = command.split_first().ok_or(HookError::EmptyCommand)?;
        let timeout: Duration = hook.timeout.into();
        let child = tokio::process::Command::new(program)
            .args(args)
            .env("UNDERSTUDY_SITE", &call.site)
            .env("UNDERSTUDY_EPOCH", call.epoch.to_string())
            .env("UNDERSTUDY_PRIMARY_HOST", &s.postgres.host)
            .env("UNDERSTUDY_PRIMARY_PORT", s.postgres.port.to_string())
            .env("UNDERSTUDY_PRIMARY_USER", &creds.username)
            .env("UNDERSTUDY_PRIMARY_PASSWORD", &creds.password)
            .env("UNDERSTUDY_REWIND", if call.rewind { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HookError::Start { program: program.clone(), source })?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| HookError::Timeout { program: program.clone(), timeout })?
            .map_err(HookError::Wait)?;
        if out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout).replace(&creds.password, "<redacted>");
            return Ok(said.lines().last().unwrap_or_default().chars().take(200).collect());
        }
        // The hook's own words, minus anything that could be the credentials it was given.
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .replace(&creds.password, "<redacted>")
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        warn!(%program, status = %out.status, "rejoin hook failed");
        Err(HookError::Exited {
            program: program.clone(),
            status: out.status,
            tail: tail.chars().take(300).collect(),
        })
    }
}
