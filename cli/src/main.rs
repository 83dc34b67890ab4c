//! `kubectl-understudy`: a kubectl plugin for understudy's `DisasterRecoveryPair`s across one
//! cluster per site. `status` reads every given context's copy of the pair side by side with the
//! witness's truth as the controllers mirror it; `switchover`, `failover`, `approve`, `pause`,
//! `resume` and `dry-run` write the command annotation with a fresh token in the right cluster,
//! and with `--wait` follow it to its outcome.

mod act;
mod clusters;
mod complete;
mod exit;
mod view;
mod witness;
mod writer;

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::exit::{Exit, Failure};

const EXIT_CODES: &str = "\
Exit codes:
  0  done: status read from at least one cluster; the command was written (and, with --wait, succeeded)
  1  refused or failed: the pair is paused, a transition is running, it is not ready, the controller
     refused the command, the transition rolled back, the pair does not exist, or you declined
  2  usage: a bad flag or argument
  3  unreachable: no given cluster answered (or the kubeconfig could not be read)
  4  timeout: --wait gave up before the command's outcome was known (it may still finish)";

/// Both clusters' view of a DisasterRecoveryPair, and its commands.
#[derive(Parser, Debug)]
#[command(name = "kubectl-understudy", bin_name = "kubectl-understudy", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// A kubeconfig context: one per cluster (repeat it: --context east --context west). Default:
    /// the current context.
    #[arg(long = "context", global = true, value_name = "CONTEXT")]
    pub contexts: Vec<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The pair's namespace (default: each context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// How long one cluster may take to answer before it is shown as unreachable.
    #[arg(long, global = true, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Args, Debug, Clone)]
pub struct Wait {
    /// Wait for the command's outcome and print it (the transition's timeline, RTO, lost WAL).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "180s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every cluster's view of the pair and the witness's truth (read in etcd when possible):
    /// primary, epoch, phase, lag, readiness and its blockers, the last transition's timeline, RTO
    /// and lost WAL.
    Status {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        /// Do not read the witness etcd directly (it is read at the spec's endpoints with the
        /// access its Secrets hold, when you may read them); show it as the clusters mirror it.
        #[arg(long)]
        no_witness: bool,
    },
    /// A planned switchover (zero acknowledged commits lost; rolled back if the standby cannot
    /// catch up). Refused here when paused, during a transition or when the pair is not Ready
    /// (--force skips these checks; the controller still judges).
    Switchover {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        /// The site to move the primary to (default: the other site).
        #[arg(long)]
        to: Option<String>,
        /// Write the command even when this tool's checks say it would be refused.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Fail over now, past every guard except the epoch (recorded as Forced). Needs --force and
    /// asks for confirmation unless --yes.
    Failover {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        /// Required: this promotes the standby whatever the guards say.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Approve the failover waiting in Approve mode (the nonce from status.pendingApproval).
    Approve {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Suspend every automatic action (on every reachable copy); probes keep reporting.
    Pause {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Resume automatic actions (on every reachable copy).
    Resume {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Ask the controller for its plan and every blocker, acting on nothing; waits for the plan.
    /// Exits 1 when something would block a failover.
    DryRun {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        /// How long to wait for the plan.
        #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// A DR drill: a planned switchover to the standby site and, once the former primary follows
    /// again, back; waits for the controller's report (each leg's RTO, how long writes were held,
    /// lost WAL, the verdict against spec.objectives). Refused here when paused, during a
    /// transition or a drill, or when the pair is not Ready. Exits 1 unless the drill passed.
    Drill {
        /// The DisasterRecoveryPair's name (`kubectl get drp`).
        pair: String,
        /// Write every 20 ms through this PostgreSQL connection string (the application's path, such
        /// as its PgBouncer; no TLS) during the drill, and report the write gap a client saw and the
        /// acknowledged writes lost. Uses a table of its own, dropped afterwards. Without a password
        /// in the DSN, $PGPASSWORD is used.
        #[arg(long, value_name = "DSN")]
        writer_dsn: Option<String>,
        /// Write the command even when this tool's checks say it would be refused.
        #[arg(long)]
        force: bool,
        /// How long to wait for the report.
        #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) for `kubectl-understudy`.
    /// For `kubectl understudy <TAB>` link `kubectl_complete-understudy` to this binary in PATH.
    Completion { shell: clap_complete::Shell },
}

/// `500ms`, `3s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 500ms, 30s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} has unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{s:?} is not between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    // Called by kubectl as `kubectl_complete-understudy` (a symlink): complete, do not run.
    let argv0 = std::env::args().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name().is_some_and(|n| n == complete::COMPLETER) {
        complete::run(&std::env::args().skip(1).collect::<Vec<_>>());
        return;
    }
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => Exit::Ok,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.exit
        }
    };
    std::process::exit(code as i32);
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Cmd::Completion { shell } = cli.cmd {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "kubectl-understudy", &mut std::io::stdout());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Refused, format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let g = cli.global;
        match cli.cmd {
            Cmd::Status { pair, no_witness } => act::status(&g, &pair, !no_witness).await,
            Cmd::Switchover { pair, to, force, wait } => {
                act::command(&g, &pair, act::Verb::Switchover { to, force }, &wait).await
            }
            Cmd::Failover { pair, force, yes, wait } => {
                if !force {
                    return Err(Failure::new(
                        Exit::Usage,
                        "failover promotes the standby past every guard but the epoch: pass --force \
                         (for a planned, lossless move use `switchover`)",
                    ));
                }
                act::command(&g, &pair, act::Verb::Failover { yes }, &wait).await
            }
            Cmd::Approve { pair, wait } => act::command(&g, &pair, act::Verb::Approve, &wait).await,
            Cmd::Pause { pair, wait } => act::command(&g, &pair, act::Verb::Pause, &wait).await,
            Cmd::Resume { pair, wait } => act::command(&g, &pair, act::Verb::Resume, &wait).await,
            Cmd::DryRun { pair, timeout } => {
                act::command(&g, &pair, act::Verb::DryRun, &Wait { wait: true, timeout }).await
            }
            Cmd::Drill { pair, writer_dsn, force, timeout } => {
                act::command(&g, &pair, act::Verb::Drill { force, writer_dsn }, &Wait { wait: true, timeout })
                    .await
            }
            Cmd::Completion { .. } => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_or_say_why_not() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("3d").expect_err("3d").contains("unknown unit"));
        assert!(parse_duration("soon").expect_err("soon").contains("not a duration"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn the_command_line_parses_and_documents_its_exit_codes() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kubectl-understudy",
            "status",
            "chat",
            "--context",
            "east",
            "--context",
            "west",
            "-o",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.global.contexts, ["east", "west"]);
        assert_eq!(cli.global.output, Output::Json);
        let err = Cli::try_parse_from(["kubectl-understudy", "switchover"]).expect_err("PAIR is required");
        assert_eq!(err.exit_code(), Exit::Usage as i32, "clap's usage errors exit 2");
        let help = Cli::command().render_long_help().to_string();
        for code in ["0  done", "1  refused", "2  usage", "3  unreachable", "4  timeout"] {
            assert!(help.contains(code), "--help documents exit code {code:?}");
        }
    }
}
