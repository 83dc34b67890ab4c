//! The commands: which copy to annotate and with what (`plan`, pure), the checks that refuse early,
//! a fresh token, the write, and `--wait`: polling every cluster until the command's outcome.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write as _},
    time::{Duration, Instant},
};

use serde::Serialize;
use understudy::crd::{
    annotations, conditions, ConditionStatus, DisasterRecoveryPair, DrillOutcome, DrillReport, DryRun,
    Objectives, Phase, Transition, TransitionOutcome,
};

use crate::{
    clusters::{self, Cluster, Read},
    exit::{Exit, Failure},
    view, Global, Output, Wait,
};

/// A command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Switchover {
        to: Option<String>,
        force: bool,
    },
    Failover {
        yes: bool,
    },
    Approve,
    Pause,
    Resume,
    DryRun,
    /// A drill: a switchover to the standby and back; `writer_dsn` measures the application's traffic.
    Drill {
        force: bool,
        writer_dsn: Option<String>,
    },
}

impl Verb {
    fn name(&self) -> &'static str {
        match self {
            Verb::Switchover { .. } => "switchover",
            Verb::Failover { .. } => "failover",
            Verb::Approve => "approve",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::DryRun => "dry-run",
            Verb::Drill { .. } => "drill",
        }
    }

    /// Whether it starts a transition (and `--wait` follows that transition).
    fn transitions(&self) -> bool {
        matches!(self, Verb::Switchover { .. } | Verb::Failover { .. } | Verb::Approve)
    }
}

/// What to write where.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Indexes of the copies (in the order the contexts were given) to annotate.
    pub on: Vec<usize>,
    /// Annotations to set (`Some`) or remove (`None`).
    pub set: Vec<(&'static str, Option<String>)>,
    /// When not empty, per copy in `on`, the value of the first annotation there (`approve`: each
    /// copy's own nonce).
    pub own_value: Vec<String>,
    /// What it asks for, in words.
    pub what: String,
    /// Worth saying before acting (not a refusal).
    pub notes: Vec<String>,
}

impl Plan {
    /// What to write on the `k`-th copy of `on`.
    pub fn writes(&self, k: usize) -> Vec<(&'static str, Option<String>)> {
        let mut set = self.set.clone();
        if let (Some(v), Some(first)) = (self.own_value.get(k), set.first_mut()) {
            first.1 = Some(v.clone());
        }
        set
    }
}

/// A copy read: its context and the pair.
pub type Copy<'a> = (&'a str, &'a DisasterRecoveryPair);

/// A fresh command token: `<verb>-<UTC time>-<random>`, valid by the controller's rules (1–63 of
/// `[A-Za-z0-9._-]`) and not already handled by any copy read (its Bloom filter can, rarely, say a
/// fresh token was seen: another one is drawn then).
pub fn fresh_token(verb: &str, key: &str, copies: &[Copy<'_>]) -> String {
    let mut token = String::new();
    for _ in 0..8 {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        let now = jiff::Timestamp::now().strftime("%Y%m%dt%H%M%S").to_string();
        token = format!("{verb}-{now}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        let seen = copies.iter().any(|(_, p)| {
            p.status.as_ref().is_some_and(|st| understudy::reconcile::commands::seen(st, key, &token))
        });
        if !seen {
            break;
        }
    }
    token
}

/// The running transition on any copy, in words.
fn running(copies: &[Copy<'_>]) -> Option<String> {
    copies.iter().find_map(|(ctx, p)| {
        let t = p.status.as_ref()?.last_transition.as_ref().filter(|t| t.finished_at.is_none())?;
        Some(format!(
            "a {} {} → {} (epoch {}) is running (journal in {ctx}); wait for it to finish \
             (`kubectl understudy status {}`)",
            t.kind,
            t.from,
            t.to,
            t.epoch,
            p.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

/// The copy whose status holds the newest epoch (the witness's truth as mirrored), as an index.
fn newest(copies: &[Copy<'_>]) -> usize {
    let epoch = |p: &DisasterRecoveryPair| p.status.as_ref().map(|s| s.epoch.0).unwrap_or(-1);
    let mut best = 0;
    for (i, (_, p)) in copies.iter().enumerate() {
        if epoch(p) > epoch(copies[best].1) {
            best = i;
        }
    }
    best
}

/// Decides what to write where, or why not (this tool's early refusal; the controller judges last).
pub fn plan(verb: &Verb, copies: &[Copy<'_>], token: &str) -> Result<Plan, String> {
    if copies.is_empty() {
        return Err("no copy of the pair was read".into());
    }
    let best = newest(copies);
    let (best_ctx, best_pair) = copies[best];
    let name = best_pair.metadata.name.clone().unwrap_or_default();
    let st = best_pair.status.clone().unwrap_or_default();
    let primary = understudy::authority::primary(&best_pair.spec, Some(&st)).site.to_string();
    let sites: Vec<&str> = best_pair.spec.sites.iter().map(|s| s.name.as_str()).collect();
    let paused_on: Vec<&str> = copies.iter().filter(|(_, p)| view::paused(p)).map(|(c, _)| *c).collect();
    let not_ready = |ctx: &str, p: &DisasterRecoveryPair| -> Option<String> {
        let st = p.status.as_ref()?;
        match view::cond(st, conditions::READY) {
            Some(c) if c.status == ConditionStatus::True.as_str() => None,
            Some(c) => Some(format!("{ctx}: Ready {} {}: {}", c.status, c.reason, c.message)),
            None => Some(format!("{ctx}: no Ready condition yet (is the controller running?)")),
        }
    };
    let mut notes = Vec::new();
    match verb {
        Verb::Switchover { to, force } => {
            let target = match to {
                Some(t) if !sites.contains(&t.as_str()) => {
                    return Err(format!(
                        "--to {t}: the pair has no such site; its sites are {}",
                        sites.join(", ")
                    ))
                }
                Some(t) if *t == primary => {
                    return Err(format!(
                        "--to {t}: {t} already serves (epoch {}): there is nothing to move",
                        st.epoch
                    ))
                }
                Some(t) => t.clone(),
                None => sites
                    .iter()
                    .find(|s| **s != primary)
                    .map(|s| s.to_string())
                    .ok_or("the pair has no site other than its primary")?,
            };
            if !force {
                if let Some(r) = running(copies) {
                    return Err(format!("switchover refused: {r}"));
                }
                if !paused_on.is_empty() {
                    return Err(format!(
                        "switchover refused: the pair is paused ({}=true on the copy in {}); \
                         `kubectl understudy resume {name}` first, or --force",
                        annotations::PAUSED,
                        paused_on.join(", ")
                    ));
                }
                if let Some(why) = not_ready(best_ctx, best_pair) {
                    return Err(format!(
                        "switchover refused: the pair is not ready ({why}); --force asks the controller anyway"
                    ));
                }
            }
            Ok(Plan {
                on: vec![best],
                set: vec![
                    (annotations::SWITCHOVER, Some(token.into())),
                    (annotations::SWITCHOVER_TO, to.clone()),
                ],
                own_value: vec![],
                what: format!("switchover {primary} → {target}"),
                notes,
            })
        }
        Verb::Failover { .. } => {
            if let Some(r) = running(copies) {
                return Err(format!("failover refused: {r}"));
            }
            if !paused_on.is_empty() {
                notes.push(format!(
                    "the pair is paused (on the copy in {}); a forced failover runs anyway",
                    paused_on.join(", ")
                ));
            }
            let target = sites.iter().find(|s| **s != primary).map(|s| s.to_string()).unwrap_or_default();
            Ok(Plan {
                on: vec![best],
                set: vec![(annotations::FAILOVER, Some(token.into()))],
                own_value: vec![],
                what: format!("forced failover {primary} → {target}"),
                notes,
            })
        }
        Verb::Approve => {
            if let Some(r) = running(copies) {
                return Err(format!("approve refused: {r}"));
            }
            if !paused_on.is_empty() {
                return Err(format!(
                    "approve refused: the pair is paused (on the copy in {}); `kubectl understudy resume {name}` first",
                    paused_on.join(", ")
                ));
            }
            // Each site's controller asks in its own cluster's copy with its own nonce; every copy
            // that asks is approved (the epoch's compare-and-swap in the witness lets one promote).
            let pending: Vec<(usize, understudy::crd::PendingApproval)> = copies
                .iter()
                .enumerate()
                .filter_map(|(i, (_, p))| p.status.as_ref()?.pending_approval.clone().map(|a| (i, a)))
                .collect();
            let Some((_, first)) = pending.first() else {
                return Err(format!(
                    "approve refused: nothing awaits approval (status.pendingApproval is empty in {}): \
                     a failover waits for one only in Approve mode with the primary down",
                    copies.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                ));
            };
            let targets: std::collections::BTreeSet<&str> =
                pending.iter().map(|(_, a)| a.to.as_str()).collect();
            if targets.len() > 1 {
                return Err(format!(
                    "approve refused: the copies ask for failovers to different sites ({}); approve one with \
                     `--context`",
                    targets.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(Plan {
                on: pending.iter().map(|(i, _)| *i).collect(),
                set: vec![(annotations::APPROVE, Some(first.nonce.clone()))],
                own_value: pending.iter().map(|(_, a)| a.nonce.clone()).collect(),
                what: format!("approved failover to {} (requested {})", first.to, first.requested_at),
                notes,
            })
        }
        Verb::Pause => {
            if paused_on.len() == copies.len() {
                notes.push("already paused on every copy read".into());
            }
            Ok(Plan {
                on: (0..copies.len()).collect(),
                set: vec![(annotations::PAUSED, Some("true".into()))],
                own_value: vec![],
                what: "pause automation".into(),
                notes,
            })
        }
        Verb::Resume => {
            let on: Vec<usize> = (0..copies.len()).filter(|i| view::paused(copies[*i].1)).collect();
            if on.is_empty() {
                notes.push("not paused on any copy read".into());
            }
            Ok(Plan {
                on,
                set: vec![(annotations::PAUSED, Some("false".into()))],
                own_value: vec![],
                what: "resume automation".into(),
                notes,
            })
        }
        Verb::DryRun => Ok(Plan {
            on: vec![best],
            set: vec![(annotations::DRY_RUN, Some(token.into()))],
            own_value: vec![],
            what: "dry-run".into(),
            notes,
        }),
        Verb::Drill { force, .. } => {
            let away = sites
                .iter()
                .find(|s| **s != primary)
                .map(|s| s.to_string())
                .ok_or("the pair has no site other than its primary")?;
            if let Some((ctx, d)) =
                copies.iter().find_map(|(c, p)| p.status.as_ref()?.drill.as_ref().map(|d| (*c, d)))
            {
                return Err(format!(
                    "drill refused: drill {} is in progress (leg {} of 2, in {ctx}); wait for its report",
                    d.token, d.leg
                ));
            }
            if !force {
                if let Some(r) = running(copies) {
                    return Err(format!("drill refused: {r}"));
                }
                if !paused_on.is_empty() {
                    return Err(format!(
                        "drill refused: the pair is paused (on the copy in {}); `kubectl understudy resume {name}` first",
                        paused_on.join(", ")
                    ));
                }
                if let Some(why) = not_ready(best_ctx, best_pair) {
                    return Err(format!(
                        "drill refused: the pair is not ready ({why}); --force asks the controller anyway"
                    ));
                }
            }
            Ok(Plan {
                on: vec![best],
                set: vec![(annotations::DRILL, Some(token.into()))],
                own_value: vec![],
                what: format!("drill {primary} → {away} → {primary}"),
                notes,
            })
        }
    }
}

/// What a command did (`-o json|yaml` prints it as is).
#[derive(Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub command: String,
    pub pair: String,
    /// What it asked for, in words.
    pub what: String,
    /// Context → the annotations written there.
    pub wrote: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// `written` (no --wait), `Completed`, `RolledBack`, `refused`, `paused`, `resumed`, `planned`,
    /// `timeout`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The epoch before and after.
    pub epoch_before: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    /// A drill's report, as the controller kept it in `status.drills`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
    /// The pair's `spec.objectives` the drill was judged against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// `drill --writer-dsn`: the application's traffic during the drill, as a client saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::writer::Traffic>,
    /// From the write to the outcome, in milliseconds (with --wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

fn emit<T: Serialize>(out: Output, v: &T, text: impl FnOnce(&T) -> String) -> Result<(), Failure> {
    let s = match out {
        Output::Text => text(v),
        Output::Json => serde_json::to_string_pretty(v).map(|s| s + "\n").unwrap_or_default(),
        Output::Yaml => serde_yaml::to_string(v).unwrap_or_default(),
    };
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes()).and_then(|_| o.flush()).map_err(|e| Failure::new(Exit::Refused, e.to_string()))
}

/// Text for people, and notes on stderr so that stdout stays parseable with `-o json|yaml`.
fn say(out: Output, line: &str) {
    if out == Output::Text {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

fn reachable_or_fail(reads: &[Read], pair: &str) -> Result<(), Failure> {
    if reads.iter().all(|r| r.pair.is_err()) {
        return Err(Failure::new(
            Exit::Unreachable,
            format!(
                "no cluster answered: {}",
                reads
                    .iter()
                    .map(|r| format!("{}: {}", r.context, r.pair.as_ref().err().cloned().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    if reads.iter().all(|r| r.found().is_none()) {
        return Err(Failure::new(
            Exit::Refused,
            format!(
                "no DisasterRecoveryPair {pair:?} in {}",
                reads
                    .iter()
                    .filter(|r| r.pair.is_ok())
                    .map(|r| format!("{} (namespace {})", r.context, r.namespace))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}

/// `status`; with `witness`, etcd is read directly through the newest copy's cluster.
pub async fn status(g: &Global, pair: &str, witness: bool) -> Result<(), Failure> {
    let cl = clusters::connect(g).await?;
    let t0 = Instant::now();
    let reads = clusters::read_all(&cl, pair).await;
    let found: Vec<(usize, Copy<'_>)> = reads
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.found().map(|p| (i, (r.context.as_str(), p))))
        .collect();
    let etcd = if !witness {
        Err("--no-witness".to_string())
    } else if found.is_empty() {
        Err("no copy of the pair was read".to_string())
    } else {
        let copies: Vec<Copy<'_>> = found.iter().map(|(_, c)| *c).collect();
        let (i, (ctx, p)) = found[newest(&copies)];
        crate::witness::read(p, cl[i].client.clone(), cl[i].timeout)
            .await
            .map_err(|e| format!("through {ctx}'s Secrets: {e}"))
    };
    let rep = view::report(pair, &reads, etcd, t0.elapsed());
    emit(g.output, &rep, view::render)?;
    reachable_or_fail(&reads, pair)
}

/// `switchover`, `failover`, `approve`, `pause`, `resume`, `dry-run`.
pub async fn command(g: &Global, pair: &str, verb: Verb, wait: &Wait) -> Result<(), Failure> {
    let cl = clusters::connect(g).await?;
    let reads = clusters::read_all(&cl, pair).await;
    reachable_or_fail(&reads, pair)?;
    for r in reads.iter().filter(|r| r.pair.is_err()) {
        say(
            g.output,
            &format!(
                "note: {} did not answer ({}); acting on the others",
                r.context,
                r.pair.as_ref().err().cloned().unwrap_or_default()
            ),
        );
    }
    let found: Vec<(usize, Copy<'_>)> = reads
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.found().map(|p| (i, (r.context.as_str(), p))))
        .collect();
    let copies: Vec<Copy<'_>> = found.iter().map(|(_, c)| *c).collect();
    let key = match verb {
        Verb::Switchover { .. } => annotations::SWITCHOVER,
        Verb::Failover { .. } => annotations::FAILOVER,
        Verb::Drill { .. } => annotations::DRILL,
        _ => annotations::DRY_RUN,
    };
    let token = fresh_token(verb.name(), key, &copies);
    let plan = plan(&verb, &copies, &token).map_err(|m| Failure::new(Exit::Refused, m))?;
    for n in &plan.notes {
        say(g.output, &format!("note: {n}"));
    }
    let before = copies[newest(&copies)].1.status.clone().unwrap_or_default();
    let before_key = before.last_transition.as_ref().map(transition_key);
    if let Verb::Failover { yes: false } = verb {
        confirm(&format!(
            "{} of {pair}: promote the standby now, past every guard but the epoch (epoch {} → {})? [y/N] ",
            plan.what,
            before.epoch,
            before.epoch.0 + 1
        ))?;
    }
    let mut outcome = Outcome {
        command: verb.name().into(),
        pair: pair.into(),
        what: plan.what.clone(),
        epoch_before: before.epoch.0,
        result: "written".into(),
        ..Default::default()
    };
    let targets: Vec<&Cluster> = plan.on.iter().map(|i| &cl[found[*i].0]).collect();
    // A drill under the application's traffic: the writer runs from before the annotation to the report.
    let writer = match &verb {
        Verb::Drill { writer_dsn: Some(dsn), .. } => {
            let w = crate::writer::Writer::start(dsn).await.map_err(|m| Failure::new(Exit::Refused, m))?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(w)
        }
        _ => None,
    };
    outcome.objectives = copies[newest(&copies)].1.spec.objectives.clone();
    let written_at = Instant::now();
    for (k, c) in targets.iter().enumerate() {
        let set = plan.writes(k);
        let kv: Vec<(&str, Option<&str>)> = set.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        c.annotate(pair, &kv).await.map_err(|e| {
            Failure::new(Exit::Refused, format!("could not annotate the pair in {}: {e}", c.context))
        })?;
        outcome
            .wrote
            .insert(c.context.clone(), set.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
        say(
            g.output,
            &format!(
                "{}: wrote {} in {} (namespace {})",
                plan.what,
                set.iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => format!("{k}-"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                c.context,
                c.namespace
            ),
        );
    }
    if !wait.wait {
        if verb.transitions() {
            say(g.output, &format!("follow it with `kubectl understudy status {pair}` (or pass --wait)"));
        }
        return emit(g.output, &outcome, |_| String::new());
    }
    let watched: Vec<String> = targets.iter().map(|c| c.context.clone()).collect();
    let deadline = written_at + wait.timeout;
    let mut accepted_said = false;
    let mut retries_said = std::collections::BTreeSet::new();
    let mut writer = writer;
    loop {
        let reads = clusters::read_all(&cl, pair).await;
        let copies: Vec<Copy<'_>> =
            reads.iter().filter_map(|r| r.found().map(|p| (r.context.as_str(), p))).collect();
        let mut done = judge(&verb, &copies, &watched, &token, before_key.as_ref(), &mut outcome);
        if done.is_none() && verb == Verb::Approve {
            if let Some(why) = approval_not_taken(&copies, &outcome.wrote) {
                outcome.result = "refused".into();
                outcome.message = Some(why.clone());
                done = Some(Err(Failure::new(Exit::Refused, why)));
            }
        }
        if verb.transitions() && !accepted_said {
            if let Some(m) = accepted(&copies, &watched, &plan, &token) {
                say(g.output, &format!("accepted: {m}"));
                accepted_said = true;
            }
        }
        // A step that is being retried says so while it is (its target down, the standby catching up).
        if verb.transitions() && done.is_none() {
            for line in retrying(&copies, before_key.as_ref()) {
                if retries_said.insert(line.clone()) {
                    say(g.output, &line);
                }
            }
        }
        if let Verb::Drill { .. } = verb {
            for line in drill_progress(&copies, &token) {
                if retries_said.insert(line.clone()) {
                    say(g.output, &line);
                }
            }
        }
        if let Some(res) = done {
            outcome.waited_ms = Some(written_at.elapsed().as_millis() as u64);
            if let Some(w) = writer.take() {
                // A moment of writes after the way back, then the check.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let t = w.finish().await;
                let lost = t.lost.unwrap_or(0);
                outcome.traffic = Some(t);
                if lost > 0 {
                    emit(g.output, &outcome, render_outcome)?;
                    return Err(Failure::new(
                        Exit::Refused,
                        format!("the drill lost {lost} acknowledged write(s) of --writer-dsn's traffic"),
                    ));
                }
            }
            emit(g.output, &outcome, render_outcome)?;
            return res;
        }
        if Instant::now() >= deadline {
            if let Some(w) = writer.take() {
                outcome.traffic = Some(w.finish().await);
            }
            outcome.result = "timeout".into();
            outcome.waited_ms = Some(written_at.elapsed().as_millis() as u64);
            emit(g.output, &outcome, render_outcome)?;
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "no outcome within {:?} (it may still finish: `kubectl understudy status {pair}`)",
                    wait.timeout
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(Exit::Refused, "not asking on a non-terminal: pass --yes to fail over"));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| Failure::new(Exit::Refused, e.to_string()))?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(Exit::Refused, "not confirmed: nothing was written"))
    }
}

/// Orders transitions: by epoch, then by start (a rolled-back switchover keeps the epoch).
pub type TransitionKey = (i64, Option<jiff::Timestamp>, String);

fn transition_key(t: &Transition) -> TransitionKey {
    (t.epoch.0, t.started_at.parse().ok(), t.started_at.clone())
}

/// Whether `t` came after the transition the status held before the command: a copy that lags
/// behind may still show an older one, finished, which is no answer.
fn is_new(t: &Transition, before: Option<&TransitionKey>) -> bool {
    before.is_none_or(|b| transition_key(t) > *b)
}

/// The `LastCommand` condition of a watched copy, when it is about this token.
fn last_command<'a>(
    copies: &'a [Copy<'_>],
    watched: &[String],
    token: &str,
) -> Option<(&'a str, view::Cond)> {
    copies.iter().filter(|(c, _)| watched.iter().any(|w| w == c)).find_map(|(c, p)| {
        let lc = view::cond(p.status.as_ref()?, conditions::LAST_COMMAND)?;
        lc.message.contains(&format!("={token}")).then_some((*c, lc))
    })
}

fn accepted(copies: &[Copy<'_>], watched: &[String], plan: &Plan, token: &str) -> Option<String> {
    if plan.set.iter().any(|(k, _)| *k == annotations::APPROVE) {
        return None;
    }
    let (ctx, lc) = last_command(copies, watched, token)?;
    (lc.status == "True").then(|| format!("{ctx}: {}", lc.message))
}

/// An approval the controller did not act on: the copy asks again, with a nonce other than the one
/// written there (the failover could not start; `FailoverBlocked` says why).
fn approval_not_taken(
    copies: &[Copy<'_>],
    wrote: &BTreeMap<String, BTreeMap<String, Option<String>>>,
) -> Option<String> {
    copies.iter().find_map(|(ctx, p)| {
        let given = wrote.get(*ctx)?.get(annotations::APPROVE)?.as_deref()?;
        let st = p.status.as_ref()?;
        let asks = st.pending_approval.as_ref().filter(|a| a.nonce != given)?;
        let blocked = view::cond(st, conditions::FAILOVER_BLOCKED).map(|c| c.message).unwrap_or_default();
        Some(format!(
            "the approval in {ctx} was not acted on: the controller asks again with nonce {} ({blocked})",
            asks.nonce
        ))
    })
}

/// The steps of the new, running transition that are being retried, one line per attempt.
fn retrying(copies: &[Copy<'_>], before: Option<&TransitionKey>) -> Vec<String> {
    let Some(t) = copies
        .iter()
        .filter_map(|(_, p)| p.status.as_ref()?.last_transition.as_ref())
        .filter(|t| t.finished_at.is_none() && is_new(t, before))
        .max_by_key(|t| transition_key(t))
    else {
        return vec![];
    };
    t.steps
        .iter()
        .filter(|s| s.outcome.is_none() && s.attempts > 1)
        .map(|s| {
            format!(
                "  {} retrying (attempt {}): {}",
                s.name,
                s.attempts,
                s.message.as_deref().unwrap_or("").chars().take(160).collect::<String>()
            )
        })
        .collect()
}

/// The running drill's progress, one line per state (said once each).
fn drill_progress(copies: &[Copy<'_>], token: &str) -> Vec<String> {
    copies
        .iter()
        .filter_map(|(ctx, p)| {
            let st = p.status.as_ref()?;
            let d = st.drill.as_ref().filter(|d| d.token == token)?;
            let (from, to) = if d.leg == 1 { (&d.home, &d.away) } else { (&d.away, &d.home) };
            let t = st.last_transition.as_ref();
            let state = if t.is_some_and(|t| t.finished_at.is_none()) {
                "switching over".to_string()
            } else if t.is_some_and(|t| {
                let ts = |s: &str| s.parse::<jiff::Timestamp>().ok();
                t.to == *to && ts(&t.started_at) >= d.waiting_since.as_deref().and_then(ts)
            }) {
                "switched over".to_string()
            } else if let Some(f) = st.former_primary.as_ref().filter(|f| {
                d.leg == 2 && f.site == d.home && f.assessment != understudy::crd::Assessment::Following
            }) {
                format!("waiting for {} to follow ({})", f.site, f.assessment)
            } else {
                "starting".to_string()
            };
            Some(format!("  {ctx}: drill leg {} of 2 ({from} → {to}): {state}", d.leg))
        })
        .collect()
}

/// Whether the command's outcome is known: `Some(Ok)` done, `Some(Err)` refused or failed.
pub fn judge(
    verb: &Verb,
    copies: &[Copy<'_>],
    watched: &[String],
    token: &str,
    before: Option<&TransitionKey>,
    out: &mut Outcome,
) -> Option<Result<(), Failure>> {
    if copies.is_empty() {
        return None;
    }
    let best = copies[newest(copies)].1;
    let st = best.status.clone().unwrap_or_default();
    out.epoch_after = Some(st.epoch.0);
    out.primary_after = Some(understudy::authority::primary(&best.spec, Some(&st)).site.to_string());
    let watched_copies = || copies.iter().filter(|(c, _)| watched.iter().any(|w| w == c));
    match verb {
        Verb::Switchover { .. } | Verb::Failover { .. } | Verb::Approve => {
            if let Some((ctx, lc)) = last_command(copies, watched, token) {
                if lc.status == "False" {
                    out.result = "refused".into();
                    out.message = Some(format!("{ctx}: {} {}", lc.reason, lc.message));
                    return Some(Err(Failure::new(
                        Exit::Refused,
                        format!("the controller refused it ({ctx}): {}", lc.message),
                    )));
                }
            }
            // A new transition, finished, in any copy (they mirror the journal).
            let t = copies
                .iter()
                .filter_map(|(_, p)| p.status.as_ref()?.last_transition.clone())
                .filter(|t| is_new(t, before))
                .max_by_key(|t| (t.epoch, t.finished_at.is_some()))?;
            t.finished_at.as_ref()?;
            out.transition = Some(t.clone());
            out.result = t.outcome.map_or("finished".into(), |o| o.to_string());
            match t.outcome {
                Some(TransitionOutcome::Completed) => {
                    // Wait for the copies to mirror the epoch the transition took.
                    if st.epoch < t.epoch {
                        return None;
                    }
                    out.message = Some(format!("{} serves at epoch {}", t.to, t.epoch));
                    Some(Ok(()))
                }
                _ => {
                    let why = t.steps.iter().rev().find_map(|s| s.message.clone()).unwrap_or_default();
                    out.message = Some(format!("{} {} → {} {}: {why}", t.kind, t.from, t.to, out.result));
                    Some(Err(Failure::new(
                        Exit::Refused,
                        format!("{} {} → {} was {}: {why}", t.kind, t.from, t.to, out.result),
                    )))
                }
            }
        }
        Verb::Pause | Verb::Resume => {
            let want = *verb == Verb::Pause;
            let all = watched_copies().all(|(_, p)| {
                let phase = p.status.as_ref().and_then(|s| s.phase);
                (phase == Some(Phase::Paused)) == want
            });
            all.then(|| {
                out.result = if want { "paused" } else { "resumed" }.into();
                out.message = Some(format!(
                    "phase {} in {}",
                    if want { "Paused" } else { "not Paused" },
                    watched.join(", ")
                ));
                Ok(())
            })
        }
        Verb::Drill { .. } => {
            if let Some((ctx, lc)) = last_command(copies, watched, token) {
                if lc.status == "False" {
                    out.result = "refused".into();
                    out.message = Some(format!("{ctx}: {} {}", lc.reason, lc.message));
                    return Some(Err(Failure::new(
                        Exit::Refused,
                        format!("the controller refused it ({ctx}): {}", lc.message),
                    )));
                }
            }
            let r = copies
                .iter()
                .find_map(|(_, p)| p.status.as_ref()?.drills.iter().find(|r| r.token == token).cloned())?;
            out.result = r.outcome.as_str().into();
            out.message = Some(r.message.clone());
            let ok = r.outcome == DrillOutcome::Passed;
            out.drill = Some(r);
            Some(if ok {
                Ok(())
            } else {
                Err(Failure::new(Exit::Refused, format!("the drill did not pass ({})", out.result)))
            })
        }
        Verb::DryRun => {
            let plan = watched_copies()
                .find_map(|(_, p)| p.status.as_ref()?.dry_run.clone().filter(|d| d.token == token))?;
            out.result = "planned".into();
            let blocked = !plan.blockers.is_empty();
            out.message = Some(if blocked {
                format!("{} blocker(s)", plan.blockers.len())
            } else {
                "no blocker: a failover would run now".into()
            });
            out.dry_run = Some(plan);
            Some(if blocked {
                Err(Failure::new(Exit::Refused, "the dry-run found blockers (listed above)"))
            } else {
                Ok(())
            })
        }
    }
}

/// The outcome for people.
pub fn render_outcome(o: &Outcome) -> String {
    let mut s = format!("result: {}", o.result);
    if let Some(m) = &o.message {
        s.push_str(&format!(" — {m}"));
    }
    if let Some(ms) = o.waited_ms {
        s.push_str(&format!(" (after {:.2} s)", ms as f64 / 1000.0));
    }
    s.push('\n');
    match (o.epoch_after, &o.primary_after) {
        (Some(e), Some(p)) if e != o.epoch_before => {
            s.push_str(&format!("primary {p}, epoch {} → {e}\n", o.epoch_before))
        }
        (Some(e), Some(p)) => s.push_str(&format!("primary {p}, epoch {e}\n")),
        _ => {}
    }
    if let Some(t) = &o.transition {
        s.push_str(&view::timeline(t));
    }
    if let Some(r) = &o.drill {
        s.push_str(&render_drill(r, o.objectives.as_ref(), o.traffic.as_ref()));
    }
    if let Some(d) = &o.dry_run {
        s.push_str(&format!(
            "plan (at {}, lag {}) to {}:\n",
            d.at,
            d.lag_bytes.map_or("unknown".into(), |b| understudy::units::human_bytes(b.max(0) as u64)),
            d.to
        ));
        for step in &d.steps {
            s.push_str(&format!("  {step}\n"));
        }
        if d.blockers.is_empty() {
            s.push_str("blockers: none\n");
        } else {
            s.push_str("blockers:\n");
            for b in &d.blockers {
                s.push_str(&format!("  - {b}\n"));
            }
        }
    }
    s
}

/// A drill's report for people: each leg's figures against the objectives, and the traffic seen.
pub fn render_drill(
    r: &DrillReport,
    objectives: Option<&Objectives>,
    traffic: Option<&crate::writer::Traffic>,
) -> String {
    let secs = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2} s"));
    let mut s = format!("drill {} ({} → {}): {}\n", r.token, r.started_at, r.finished_at, r.outcome.as_str());
    if let Some(o) = objectives {
        s.push_str(&format!(
            "objectives: RTO {}, RPO {}\n",
            o.rto.map_or("not set".into(), |d| format!("{:?}", std::time::Duration::from(d))),
            o.rpo.as_ref().map_or("not set".into(), |q| q.0.clone())
        ));
    }
    for l in &r.legs {
        s.push_str(&format!(
            "  {} → {}: {}, RTO {}, writes held {}, lost WAL {}{}\n",
            l.from,
            l.to,
            l.outcome,
            secs(l.rto_seconds),
            secs(l.writes_held_seconds),
            l.lost_wal_bytes.map_or("?".into(), |b| format!("{b} B")),
            l.objectives.as_ref().map_or(String::new(), |v| format!(
                " — objectives {}: {}",
                v.verdict.as_str(),
                v.message
            ))
        ));
    }
    if let Some(t) = traffic {
        s.push_str(&format!(
            "traffic (--writer-dsn, one write every 20 ms): {} acknowledged, {} failed, longest write gap {:.3} s, lost {}\n",
            t.acknowledged,
            t.errors,
            t.longest_gap_seconds,
            t.lost.map_or("unknown".into(), |l| l.to_string())
        ));
        if let Some(n) = &t.note {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    if r.legs.is_empty() || r.outcome != DrillOutcome::Passed {
        s.push_str(&format!("{}\n", r.message));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy::crd::{
        Condition, DisasterRecoveryPairStatus, Epoch, PendingApproval, StepOutcome, StepRecord,
        TransitionKind,
    };

    fn pair(primary: &str, epoch: i64) -> DisasterRecoveryPair {
        let spec: understudy::crd::DisasterRecoveryPairSpec = serde_yaml::from_str(
            "primary: east\nsites:\n- name: east\n  postgres: {host: pg-east, credentialsSecret: {name: pg}}\n  dataSourceSecret: {name: ds, key: dsn}\n\
             - name: west\n  postgres: {host: pg-west, credentialsSecret: {name: pg}}\n  dataSourceSecret: {name: ds, key: dsn}\n",
        )
        .expect("spec");
        let mut p = DisasterRecoveryPair::new("chat", spec);
        p.status = Some(DisasterRecoveryPairStatus {
            current_primary: Some(primary.into()),
            epoch: Epoch(epoch),
            phase: Some(Phase::Healthy),
            conditions: vec![condition("Ready", true, "Protected", "protected")],
            ..Default::default()
        });
        p
    }

    fn condition(t: &str, ok: bool, reason: &str, msg: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: if ok { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.into(),
            message: msg.into(),
            last_transition_time: "2026-12-02T10:00:00Z".into(),
            observed_generation: None,
        }
    }

    fn st(p: &mut DisasterRecoveryPair) -> &mut DisasterRecoveryPairStatus {
        p.status.get_or_insert_with(Default::default)
    }

    #[test]
    fn a_drill_goes_to_the_newest_copy_and_ends_on_its_report() {
        let drill = Verb::Drill { force: false, writer_dsn: None };
        let (a, b) = (pair("east", 0), pair("east", 2));
        let p = plan(&drill, &[("east", &a), ("west", &b)], "d1").expect("drill");
        assert_eq!((p.on.as_slice(), p.what.as_str()), (&[1][..], "drill east → west → east"));
        assert_eq!(p.set, [(annotations::DRILL, Some("d1".to_string()))]);

        // Refused while a drill runs (even with --force), and when not ready (unless --force).
        let mut busy = pair("east", 0);
        st(&mut busy).drill =
            Some(understudy::crd::DrillRun { token: "d0".into(), leg: 2, ..Default::default() });
        let e =
            plan(&Verb::Drill { force: true, writer_dsn: None }, &[("east", &busy)], "d1").expect_err("busy");
        assert!(e.contains("drill d0 is in progress (leg 2 of 2, in east)"), "{e}");
        let mut down = pair("east", 0);
        st(&mut down).conditions = vec![condition("Ready", false, "NotProtected", "standby down")];
        assert!(plan(&drill, &[("east", &down)], "d1").expect_err("not ready").contains("standby down"));
        assert!(plan(&Verb::Drill { force: true, writer_dsn: None }, &[("east", &down)], "d1").is_ok());

        // --wait: nothing until the report with this token; a Failed one exits 1.
        let w = ["east".to_string()];
        let mut out = Outcome::default();
        let mut p = pair("east", 2);
        assert!(judge(&drill, &[("east", &p)], &w, "d1", None, &mut out).is_none());
        let report =
            |token: &str, outcome| DrillReport { token: token.into(), outcome, ..Default::default() };
        st(&mut p).drills = vec![report("d1", DrillOutcome::Failed), report("d0", DrillOutcome::Passed)];
        let r = judge(&drill, &[("east", &p)], &w, "d1", None, &mut out).expect("done");
        assert_eq!(r.expect_err("failed").exit, Exit::Refused);
        assert_eq!(out.result, "Failed");
        st(&mut p).drills[0].outcome = DrillOutcome::Passed;
        assert!(judge(&drill, &[("east", &p)], &w, "d1", None, &mut out).expect("done").is_ok());
        let text = render_drill(out.drill.as_ref().expect("report"), None, None);
        assert!(text.starts_with("drill d1 ("), "{text}");
    }

    #[test]
    fn tokens_are_fresh_and_valid_by_the_controllers_rules() {
        let p = pair("east", 0);
        let copies = [("east", &p)];
        let a = fresh_token("switchover", annotations::SWITCHOVER, &copies);
        let b = fresh_token("switchover", annotations::SWITCHOVER, &copies);
        assert_ne!(a, b);
        for t in [&a, &b, &fresh_token("dry-run", annotations::DRY_RUN, &copies)] {
            assert!(understudy::reconcile::commands::valid_token(t), "{t}");
        }
        // One the pair handled already is never offered.
        let mut used = pair("east", 0);
        understudy::reconcile::commands::record(
            st(&mut used),
            &[(annotations::SWITCHOVER.into(), a.clone())],
        );
        assert!(understudy::reconcile::commands::seen(
            used.status.as_ref().expect("st"),
            annotations::SWITCHOVER,
            &a
        ));
        let c = fresh_token("switchover", annotations::SWITCHOVER, &[("east", &used)]);
        assert!(!understudy::reconcile::commands::seen(
            used.status.as_ref().expect("st"),
            annotations::SWITCHOVER,
            &c
        ));
    }

    #[test]
    fn a_switchover_goes_to_the_copy_with_the_newest_epoch_and_the_other_site() {
        let (a, b) = (pair("east", 1), pair("west", 2));
        let p = plan(&Verb::Switchover { to: None, force: false }, &[("east", &a), ("west", &b)], "t1")
            .expect("planned");
        assert_eq!(p.on, [1], "west's copy mirrors the newer epoch");
        assert_eq!(p.what, "switchover west → east");
        assert_eq!(p.set, [(annotations::SWITCHOVER, Some("t1".into())), (annotations::SWITCHOVER_TO, None)]);
        let e = plan(&Verb::Switchover { to: Some("west".into()), force: false }, &[("west", &b)], "t")
            .expect_err("west serves");
        assert!(e.contains("already serves"), "{e}");
        let e = plan(&Verb::Switchover { to: Some("north".into()), force: true }, &[("west", &b)], "t")
            .expect_err("no such site");
        assert!(e.contains("sites are east, west"), "{e}");
    }

    #[test]
    fn refusals_name_what_is_wrong_and_force_skips_them() {
        let mut paused = pair("east", 0);
        paused.metadata.annotations = Some([(annotations::PAUSED.to_string(), "true".to_string())].into());
        let other = pair("east", 0);
        let sw = Verb::Switchover { to: None, force: false };
        let e = plan(&sw, &[("a", &other), ("b", &paused)], "t").expect_err("paused");
        assert!(e.contains("paused") && e.contains("on the copy in b") && e.contains("resume chat"), "{e}");
        assert!(plan(&Verb::Switchover { to: None, force: true }, &[("b", &paused)], "t").is_ok());
        // A forced failover runs while paused, with a note.
        let f = plan(&Verb::Failover { yes: true }, &[("b", &paused)], "t").expect("forced");
        assert!(f.notes[0].contains("paused"), "{:?}", f.notes);

        let mut busy = pair("east", 0);
        st(&mut busy).last_transition = Some(Transition {
            kind: TransitionKind::Switchover,
            from: "east".into(),
            to: "west".into(),
            epoch: Epoch(1),
            started_at: "2026-12-02T10:00:00Z".into(),
            ..Default::default()
        });
        for v in [sw.clone(), Verb::Failover { yes: true }, Verb::Approve] {
            let e = plan(&v, &[("a", &busy)], "t").expect_err("running");
            assert!(e.contains("a Switchover east → west (epoch 1) is running"), "{e}");
        }
        assert!(plan(&Verb::DryRun, &[("a", &busy)], "t").is_ok(), "a dry-run is fine during a transition");

        let mut degraded = pair("east", 0);
        st(&mut degraded).conditions =
            vec![condition("Ready", false, "NotProtected", "west's WAL receiver is not streaming")];
        let e = plan(&sw, &[("a", &degraded)], "t").expect_err("not ready");
        assert!(e.contains("not ready") && e.contains("not streaming") && e.contains("--force"), "{e}");

        let e = plan(&Verb::Approve, &[("a", &other)], "t").expect_err("nothing pending");
        assert!(e.contains("nothing awaits approval"), "{e}");
        let mut pending = pair("east", 0);
        st(&mut pending).pending_approval =
            Some(PendingApproval { nonce: "n-42".into(), to: "west".into(), requested_at: "x".into() });
        let p = plan(&Verb::Approve, &[("a", &other), ("b", &pending)], "t").expect("approve");
        assert_eq!((p.on.clone(), p.writes(0)), (vec![1], vec![(annotations::APPROVE, Some("n-42".into()))]));
        // Each copy that asks gets its own nonce.
        let mut pending2 = pair("east", 0);
        st(&mut pending2).pending_approval =
            Some(PendingApproval { nonce: "n-7".into(), to: "west".into(), requested_at: "y".into() });
        let p = plan(&Verb::Approve, &[("a", &pending2), ("b", &pending)], "t").expect("approve both");
        assert_eq!(p.on, [0, 1]);
        assert_eq!((p.writes(0)[0].1.as_deref(), p.writes(1)[0].1.as_deref()), (Some("n-7"), Some("n-42")));
    }

    #[test]
    fn pause_goes_to_every_copy_and_resume_to_the_paused_ones() {
        let mut paused = pair("east", 0);
        paused.metadata.annotations = Some([(annotations::PAUSED.to_string(), "true".to_string())].into());
        let other = pair("east", 0);
        let copies = [("a", &other), ("b", &paused)];
        assert_eq!(plan(&Verb::Pause, &copies, "t").expect("pause").on, [0, 1]);
        let r = plan(&Verb::Resume, &copies, "t").expect("resume");
        assert_eq!((r.on, r.set), (vec![1], vec![(annotations::PAUSED, Some("false".into()))]));
    }

    #[test]
    fn an_approval_not_acted_on_is_told() {
        let mut p = pair("east", 0);
        st(&mut p).pending_approval =
            Some(PendingApproval { nonce: "n-2".into(), to: "west".into(), requested_at: "x".into() });
        let wrote = |n: &str| -> BTreeMap<String, BTreeMap<String, Option<String>>> {
            [("west".to_string(), [(annotations::APPROVE.to_string(), Some(n.to_string()))].into())].into()
        };
        assert!(approval_not_taken(&[("west", &p)], &wrote("n-2")).is_none(), "still the nonce written");
        let why = approval_not_taken(&[("west", &p)], &wrote("n-1")).expect("asks again");
        assert!(why.contains("in west was not acted on") && why.contains("nonce n-2"), "{why}");
        assert!(approval_not_taken(&[("east", &p)], &wrote("n-1")).is_none(), "not written in east");
    }

    #[test]
    fn a_step_being_retried_is_told_while_it_runs() {
        let mut p = pair("east", 0);
        st(&mut p).last_transition = Some(Transition {
            epoch: Epoch(1),
            started_at: "2026-12-02T10:00:00Z".into(),
            steps: vec![
                StepRecord {
                    name: "TakeEpoch".into(),
                    outcome: Some(StepOutcome::Succeeded),
                    ..Default::default()
                },
                StepRecord {
                    name: "Recycle".into(),
                    attempts: 3,
                    message: Some("pgbouncer 10.0.0.5:6432: connection refused".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            retrying(&[("east", &p)], None),
            ["  Recycle retrying (attempt 3): pgbouncer 10.0.0.5:6432: connection refused"]
        );
        let old = transition_key(p.status.as_ref().and_then(|s| s.last_transition.as_ref()).expect("t"));
        assert!(retrying(&[("east", &p)], Some(&old)).is_empty(), "not the command's transition");
    }

    #[test]
    fn wait_ends_on_the_new_transition_finished_and_mirrored_or_on_a_refusal() {
        let verb = Verb::Switchover { to: None, force: false };
        let before_t = Transition { started_at: "old".into(), epoch: Epoch(0), ..Default::default() };
        let before = transition_key(&before_t);
        let mut p = pair("east", 0);
        st(&mut p).last_transition = Some(before_t);
        let mut out = Outcome::default();
        let w = ["east".to_string()];
        assert!(judge(&verb, &[("east", &p)], &w, "tok", Some(&before), &mut out).is_none(), "nothing yet");

        st(&mut p).conditions.push(condition(
            "LastCommand",
            false,
            "SwitchoverRejected",
            "dr.understudy.dev/switchover=tok: a Failover is in progress; nothing was done",
        ));
        let r = judge(&verb, &[("east", &p)], &w, "tok", Some(&before), &mut out).expect("refused");
        assert_eq!(r.expect_err("refused").exit, Exit::Refused);
        assert_eq!(out.result, "refused");

        let mut q = pair("east", 0);
        st(&mut q).last_transition = Some(Transition {
            kind: TransitionKind::Switchover,
            from: "east".into(),
            to: "west".into(),
            epoch: Epoch(1),
            started_at: "new".into(),
            finished_at: Some("2026-12-02T10:00:02Z".into()),
            outcome: Some(TransitionOutcome::Completed),
            rto_seconds: Some(1.2),
            lost_wal_bytes: Some(0),
            steps: vec![StepRecord {
                name: "Promote".into(),
                outcome: Some(StepOutcome::Succeeded),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut out = Outcome::default();
        assert!(
            judge(&verb, &[("east", &q)], &w, "tok", Some(&before), &mut out).is_none(),
            "finished but the status still says epoch 0"
        );
        // A copy that lags shows an older transition, finished: no answer either.
        let mut lagging = pair("east", 1);
        st(&mut lagging).last_transition = Some(Transition {
            epoch: Epoch(1),
            started_at: "2026-12-02T09:00:00Z".into(),
            finished_at: Some("2026-12-02T09:00:02Z".into()),
            outcome: Some(TransitionOutcome::Completed),
            ..Default::default()
        });
        let mut newer = pair("west", 2);
        let now_t = Transition {
            epoch: Epoch(2),
            started_at: "2026-12-02T10:00:00Z".into(),
            finished_at: Some("2026-12-02T10:00:02Z".into()),
            ..Default::default()
        };
        st(&mut newer).last_transition = Some(now_t.clone());
        let b2 = transition_key(&now_t);
        let copies = [("east", &lagging), ("west", &newer)];
        assert!(judge(&verb, &copies, &w, "tok2", Some(&b2), &mut Outcome::default()).is_none());
        st(&mut q).epoch = Epoch(1);
        st(&mut q).current_primary = Some("west".into());
        let r = judge(&verb, &[("east", &q)], &w, "tok", Some(&before), &mut out).expect("done");
        assert!(r.is_ok());
        assert_eq!(
            (out.result.as_str(), out.epoch_after, out.primary_after.as_deref()),
            ("Completed", Some(1), Some("west"))
        );
        let text = render_outcome(&out);
        assert!(text.contains("west serves at epoch 1") && text.contains("RTO 1.20 s"), "{text}");
    }
}
