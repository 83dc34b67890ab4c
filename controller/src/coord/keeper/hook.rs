//! The site fence hook (`spec.sites[*].fenceHook`): a command this site's own controller runs when
//! its database failed and SQL cannot fence it. It runs in a process group of its own, so that a
//! hook that outlives its timeout is killed with everything it started; it is given the site, the
//! pair and the epoch in its environment, never a credential.

use std::{process::Stdio, time::Duration};

use tracing::warn;

use crate::crd::FenceHook;

/// What a hook is told about the fence it must make (`UNDERSTUDY_*` in its environment).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteHook {
    pub hook: FenceHook,
    /// This site's PostgreSQL server (`UNDERSTUDY_PGHOST`, `UNDERSTUDY_PGPORT`).
    pub pg_host: String,
    pub pg_port: u16,
}

/// Why a hook run did not confirm the fence. The texts go to the status and the Event.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("spec.sites[*].fenceHook.command is empty")]
    EmptyCommand,
    #[error("start {program}: {source}")]
    Start { program: String, source: std::io::Error },
    #[error("{program} did not finish within {timeout:?} (killed)")]
    Timeout { program: String, timeout: Duration },
    #[error("{program}: {source}")]
    Wait { program: String, source: std::io::Error },
    /// It ran and failed: its exit status and the last lines of its standard error.
    #[error("{program} exited with {status}: {tail}")]
    Exited { program: String, status: std::process::ExitStatus, tail: String },
}

/// Runs the hook once, killed (with its process group) when it outlives its timeout. On success,
/// the last line it printed (at most 200 characters).
pub async fn run(
    hook: &SiteHook,
    site: &str,
    namespace: &str,
    pair: &str,
    epoch: i64,
) -> Result<String, HookError> {
    let (program, args) = hook.hook.command.split_first().ok_or(HookError::EmptyCommand)?;
    let timeout: Duration = hook.hook.timeout.into();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("UNDERSTUDY_SITE", site)
        .env("UNDERSTUDY_NAMESPACE", namespace)
        .env("UNDERSTUDY_PAIR", pair)
        .env("UNDERSTUDY_EPOCH", epoch.to_string())
        .env("UNDERSTUDY_PGHOST", &hook.pg_host)
        .env("UNDERSTUDY_PGPORT", hook.pg_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Start { program: program.clone(), source })?;
    // Killed with its whole group when the caller gives up on it (the keeper's own bound) or at
    // the timeout: a hook left running could still act after the keeper reported it failed.
    let group = Group(child.id());
    // Read while it runs (a hook that fills a pipe must not block), kept only briefly after it exits.
    let stdout = tokio::spawn(drain(child.stdout.take()));
    let stderr = tokio::spawn(drain(child.stderr.take()));
    let waited = tokio::time::timeout(timeout, async {
        // The exit of the hook itself counts; a descendant it left behind holding the pipes does not
        // keep the keeper waiting.
        let status = child.wait().await;
        let outputs = tokio::time::timeout(Duration::from_millis(500), async {
            let (o, e) = tokio::join!(stdout, stderr);
            (o.unwrap_or_default(), e.unwrap_or_default())
        })
        .await
        .unwrap_or_default();
        (status, outputs)
    })
    .await;
    let (status, (out, err)) = match waited {
        Ok(r) => r,
        Err(_) => {
            warn!(%program, ?timeout, "site fence hook timed out; killing its process group");
            return Err(HookError::Timeout { program: program.clone(), timeout });
        }
    };
    drop(group);
    let status = status.map_err(|source| HookError::Wait { program: program.clone(), source })?;
    if status.success() {
        let said = String::from_utf8_lossy(&out);
        return Ok(said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect());
    }
    let tail: String = String::from_utf8_lossy(&err)
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    Err(HookError::Exited { program: program.clone(), status, tail: tail.chars().take(300).collect() })
}

async fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
    }
    buf
}

/// The hook's process group, killed when dropped (a finished hook's group may hold descendants).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // The group the hook leads (started with `process_group(0)`); gone already is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Duration) -> SiteHook {
        SiteHook {
            hook: FenceHook {
                command: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout: timeout.into(),
            },
            pg_host: "127.0.0.1".into(),
            pg_port: 5432,
        }
    }

    #[tokio::test]
    async fn success_answers_its_last_line_with_the_site_in_its_environment() {
        let h = hook(
            r#"echo first; echo "fenced $UNDERSTUDY_SITE $UNDERSTUDY_NAMESPACE/$UNDERSTUDY_PAIR epoch $UNDERSTUDY_EPOCH $UNDERSTUDY_PGHOST:$UNDERSTUDY_PGPORT""#,
            Duration::from_secs(5),
        );
        let said = run(&h, "east", "db", "orders", 3).await.expect("hook ok");
        assert_eq!(said, "fenced east db/orders epoch 3 127.0.0.1:5432");
    }

    #[tokio::test]
    async fn failure_reports_its_status_and_stderr() {
        let h = hook("echo 'no BMC answer' >&2; exit 3", Duration::from_secs(5));
        let e = run(&h, "east", "db", "orders", 3).await.expect_err("hook fails").to_string();
        assert!(e.contains("exit status: 3") && e.contains("no BMC answer"), "{e}");
    }

    #[tokio::test]
    async fn a_hang_is_cut_at_the_timeout_and_its_group_killed() {
        let dir = std::env::temp_dir().join(format!("fence-hook-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pidfile = dir.join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let h = hook(&script, Duration::from_secs(1));
        let started = std::time::Instant::now();
        let e = run(&h, "east", "db", "orders", 3).await.expect_err("hook hangs");
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let pid = std::fs::read_to_string(&pidfile).expect("pid").trim().to_string();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The descendant is gone too (a zombie of a killed shell is reaped by init).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z"), "sleep {pid} still runs: {state}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
