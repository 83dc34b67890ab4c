//! Commands given by annotation (`kubectl annotate drp NAME dr.understudy.dev/<verb>=<token>`),
//! pure: which one to run now, and which values to refuse. Every token acts at most once, forever:
//! a token acted on (or refused) is added to `status.handledTokens`, a Bloom filter that never
//! forgets, and the last value per annotation stays in `status.handled` (bounded). A bad or
//! unknown value gets a Warning Event and changes nothing; the latest outcome is also kept in the
//! `LastCommand` condition, so `kubectl describe drp` shows why this command was refused.

use std::collections::BTreeMap;

use sha2::Digest;

use crate::crd::{annotations, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, TokenFilter};
use crate::events::EventNote;

/// A command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Planned, zero-loss move of the primary to `to`.
    Switchover { to: String },
    /// Fail over to `to` now, past every guard except the epoch.
    ForcedFailover { to: String },
    /// Write the plan and its blockers to status without acting.
    DryRun { token: String },
    /// A DR drill: a switchover to the standby and back (`reconcile::drill`).
    Drill { token: String },
}

/// What the annotations ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    /// The command to run now (at most one per reconcile; the rest wait their turn).
    pub run: Option<Command>,
    /// Warning Events for refused values.
    pub events: Vec<EventNote>,
    /// (annotation, value) pairs to record as handled (`record`).
    pub handled: Vec<(String, String)>,
    /// The latest outcome for the `LastCommand` condition: (accepted, reason, message).
    pub last: Option<(bool, String, String)>,
}

const KNOWN: [&str; 8] = [
    annotations::DRILL,
    annotations::SWITCHOVER,
    annotations::SWITCHOVER_TO,
    annotations::FAILOVER,
    annotations::APPROVE,
    annotations::PAUSED,
    annotations::DRY_RUN,
    annotations::EPOCH,
];

/// The annotations whose values are one-shot tokens.
const TOKENS: [&str; 4] =
    [annotations::FAILOVER, annotations::SWITCHOVER, annotations::DRY_RUN, annotations::DRILL];

/// A token: 1–63 characters of `[A-Za-z0-9._-]`.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 63
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A value as status keeps it: itself up to 64 characters, else its first 32 characters and a digest.
pub fn bounded(value: &str) -> String {
    if value.chars().count() <= 64 {
        return value.to_string();
    }
    let head: String = value.chars().take(32).collect();
    let d = sha2::Sha256::digest(value.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{head}…sha256:{hex}")
}

/// A value as a message echoes it: quoted, at most 64 characters, with its length when cut.
pub fn echo(value: &str) -> String {
    let n = value.chars().count();
    if n <= 64 {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(64).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

const FILTER_BITS: usize = 8192;

fn filter_indexes(key: &str, token: &str) -> [usize; 3] {
    let mut h = sha2::Sha256::new();
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update(token.as_bytes());
    let d = h.finalize();
    let at = |i: usize| (usize::from(d[2 * i]) << 8 | usize::from(d[2 * i + 1])) % FILTER_BITS;
    [at(0), at(1), at(2)]
}

fn filter_bytes(f: Option<&TokenFilter>) -> Vec<u8> {
    let mut out = vec![0u8; FILTER_BITS / 8];
    if let Some(f) = f {
        for (i, b) in out.iter_mut().enumerate() {
            if let Some(pair) = f.bits.get(2 * i..2 * i + 2) {
                *b = u8::from_str_radix(pair, 16).unwrap_or(0);
            }
        }
    }
    out
}

/// Whether `token` of annotation `key` was ever handled (or, rarely, collides with one that was).
pub fn seen(st: &DisasterRecoveryPairStatus, key: &str, token: &str) -> bool {
    if st.handled.get(key).is_some_and(|v| *v == bounded(token)) {
        return true;
    }
    let Some(f) = st.handled_tokens.as_ref() else { return false };
    let bytes = filter_bytes(Some(f));
    filter_indexes(key, token).iter().all(|&i| bytes[i / 8] & (1 << (i % 8)) != 0)
}

/// Records what `read` handled: the bounded last value per annotation, and every token in the filter.
pub fn record(st: &mut DisasterRecoveryPairStatus, handled: &[(String, String)]) {
    for (key, value) in handled {
        st.handled.insert(key.clone(), bounded(value));
        if TOKENS.contains(&key.as_str()) {
            let mut bytes = filter_bytes(st.handled_tokens.as_ref());
            for i in filter_indexes(key, value) {
                bytes[i / 8] |= 1 << (i % 8);
            }
            let count = st.handled_tokens.as_ref().map(|f| f.count).unwrap_or(0).saturating_add(1);
            st.handled_tokens =
                Some(TokenFilter { bits: bytes.iter().map(|b| format!("{b:02x}")).collect(), count });
        }
    }
}

/// Reads the annotations against what was already handled.
pub fn read(
    spec: &DisasterRecoveryPairSpec,
    st: &DisasterRecoveryPairStatus,
    ann: &BTreeMap<String, String>,
) -> Commands {
    let mut out = Commands::default();
    let busy = st.last_transition.as_ref().filter(|t| t.finished_at.is_none()).map(|t| t.kind);
    let primary = crate::authority::primary(spec, Some(st)).site.to_string();
    let handled = |k: &str, v: &str| st.handled.get(k).is_some_and(|h| *h == bounded(v));
    let refuse = |out: &mut Commands, key: &str, value: &str, reason: &str, note: String| {
        out.last = Some((false, reason.into(), note.clone()));
        out.events.push(EventNote { warning: true, reason: reason.into(), note });
        out.handled.push((key.into(), value.into()));
    };

    for (key, value) in ann {
        let Some(verb) = key.strip_prefix("dr.understudy.dev/") else { continue };
        if !KNOWN.contains(&key.as_str()) {
            if !handled(key, value) {
                refuse(&mut out, key, value, "UnknownAnnotation", format!(
                    "annotation {key} is not one understudy knows ({}); known: switchover, switchover-to, failover, approve, paused, dry-run, drill; nothing was done",
                    echo(verb)
                ));
            }
            continue;
        }
        if key == annotations::PAUSED && value != "true" && value != "false" && !handled(key, value) {
            refuse(
                &mut out,
                key,
                value,
                "InvalidAnnotation",
                format!("{key} must be true or false, not {}; automation is unchanged", echo(value)),
            );
        }
    }

    let target = |want: Option<&String>| -> Result<String, String> {
        match want {
            Some(site) if !spec.sites.iter().any(|s| &s.name == site) => Err(format!(
                "{} names no site ({}); sites are {}",
                annotations::SWITCHOVER_TO,
                echo(site),
                spec.sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Some(site) if *site == primary => {
                Err(format!("{}={site} already serves: there is nothing to move", annotations::SWITCHOVER_TO))
            }
            Some(site) => Ok(site.clone()),
            None => spec
                .sites
                .iter()
                .map(|s| s.name.clone())
                .find(|n| *n != primary)
                .ok_or_else(|| "the pair has no other site".into()),
        }
    };

    for (key, reason) in [
        (annotations::FAILOVER, "FailoverRejected"),
        (annotations::SWITCHOVER, "SwitchoverRejected"),
        (annotations::DRY_RUN, "DryRunRejected"),
        (annotations::DRILL, "DrillRejected"),
    ] {
        let Some(token) = ann.get(key) else { continue };
        if seen(st, key, token) {
            continue;
        }
        if !valid_token(token) {
            refuse(
                &mut out,
                key,
                token,
                reason,
                format!(
                    "{key}: the value is not a token (1-63 of A-Z a-z 0-9 . _ -), so nothing was done: {}",
                    echo(token)
                ),
            );
            continue;
        }
        if key != annotations::DRY_RUN {
            if let Some(kind) = &busy {
                refuse(&mut out, key, token, reason, format!("{key}={token}: a {kind} is in progress; nothing was done. Annotate again with a new token once it has finished"));
                continue;
            }
        }
        // A forced failover is never held back by a drill (it ends the drill instead).
        if key == annotations::SWITCHOVER || key == annotations::DRILL {
            if let Some(d) = &st.drill {
                refuse(&mut out, key, token, reason, format!("{key}={token}: drill {} is in progress (leg {} of 2); nothing was done. Annotate again with a new token once it has finished", d.token, d.leg));
                continue;
            }
        }
        if out.run.is_some() {
            continue; // one command per reconcile; this token waits for the next
        }
        let cmd = match key {
            k if k == annotations::DRY_RUN => Ok(Command::DryRun { token: token.clone() }),
            k if k == annotations::DRILL => Ok(Command::Drill { token: token.clone() }),
            k if k == annotations::SWITCHOVER => {
                target(ann.get(annotations::SWITCHOVER_TO)).map(|to| Command::Switchover { to })
            }
            _ => target(None).map(|to| Command::ForcedFailover { to }),
        };
        match cmd {
            Ok(c) => {
                let what = match &c {
                    Command::Switchover { to } => format!("switchover to {to}"),
                    Command::ForcedFailover { to } => format!("forced failover to {to}"),
                    Command::DryRun { .. } => "dry-run".to_string(),
                    Command::Drill { .. } => "drill (a switchover to the standby and back)".to_string(),
                };
                out.last = Some((true, "Accepted".into(), format!("{key}={token}: {what} accepted")));
                out.run = Some(c);
                out.handled.push((key.into(), token.clone()));
            }
            Err(why) => {
                refuse(&mut out, key, token, reason, format!("{key}={token}: {why}; nothing was done"))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{test_spec, Transition};

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn a_drill_token_acts_once_and_holds_switchovers_but_never_a_forced_failover() {
        let mut st = DisasterRecoveryPairStatus::default();
        let c = read(&test_spec(), &st, &ann(&[(annotations::DRILL, "d1")]));
        assert_eq!(c.run, Some(Command::Drill { token: "d1".into() }));
        assert_eq!(c.last.as_ref().map(|l| l.0), Some(true));
        record(&mut st, &c.handled);
        assert!(seen(&st, annotations::DRILL, "d1"));
        st.drill = Some(crate::crd::DrillRun { token: "d1".into(), leg: 1, ..Default::default() });
        for (key, reason) in
            [(annotations::SWITCHOVER, "SwitchoverRejected"), (annotations::DRILL, "DrillRejected")]
        {
            let c = read(&test_spec(), &st, &ann(&[(key, "t2")]));
            assert_eq!(c.run, None);
            assert_eq!(c.events[0].reason, reason);
            assert!(
                c.events[0].note.contains("drill d1 is in progress (leg 1 of 2)"),
                "{}",
                c.events[0].note
            );
        }
        let c = read(&test_spec(), &st, &ann(&[(annotations::FAILOVER, "f1")]));
        assert_eq!(c.run, Some(Command::ForcedFailover { to: "west".into() }));
    }

    #[test]
    fn a_switchover_token_acts_once() {
        let mut st = DisasterRecoveryPairStatus::default();
        let a = ann(&[(annotations::SWITCHOVER, "drill-1")]);
        let c = read(&test_spec(), &st, &a);
        assert_eq!(c.run, Some(Command::Switchover { to: "west".into() }));
        assert_eq!(c.handled, vec![(annotations::SWITCHOVER.to_string(), "drill-1".to_string())]);
        st.handled.insert(annotations::SWITCHOVER.into(), "drill-1".into());
        assert_eq!(read(&test_spec(), &st, &a), Commands::default(), "a replayed token is a no-op");
    }

    #[test]
    fn bad_values_are_refused_with_a_warning_once() {
        let st = DisasterRecoveryPairStatus::default();
        let cases = [
            (ann(&[(annotations::SWITCHOVER, "has space")]), "SwitchoverRejected"),
            (
                ann(&[(annotations::SWITCHOVER, "t"), (annotations::SWITCHOVER_TO, "north")]),
                "SwitchoverRejected",
            ),
            (
                ann(&[(annotations::SWITCHOVER, "t"), (annotations::SWITCHOVER_TO, "east")]),
                "SwitchoverRejected",
            ),
            (ann(&[(annotations::PAUSED, "yes")]), "InvalidAnnotation"),
            (ann(&[("dr.understudy.dev/failback", "now")]), "UnknownAnnotation"),
            (ann(&[(annotations::FAILOVER, "")]), "FailoverRejected"),
        ];
        for (a, reason) in cases {
            let c = read(&test_spec(), &st, &a);
            assert_eq!(c.run, None, "{a:?}");
            assert_eq!(c.events.len(), 1, "{a:?}");
            assert_eq!(c.events[0].reason, reason, "{a:?}");
            assert!(
                c.events[0].warning && c.events[0].note.contains("nothing was done")
                    || reason == "InvalidAnnotation",
                "{:?}",
                c.events[0]
            );
            // Recorded as handled, so the Warning is not repeated.
            let mut st2 = st.clone();
            for (k, v) in c.handled {
                st2.handled.insert(k, v);
            }
            assert!(read(&test_spec(), &st2, &a).events.is_empty(), "{a:?}");
        }
        // Foreign annotations are none of our business.
        assert_eq!(
            read(&test_spec(), &st, &ann(&[("kubectl.kubernetes.io/last-applied-configuration", "{}")])),
            Commands::default()
        );
    }

    #[test]
    fn nothing_starts_during_a_transition_but_a_dry_run() {
        let st = DisasterRecoveryPairStatus {
            last_transition: Some(Transition {
                kind: crate::crd::TransitionKind::Failover,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c =
            read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, "s1"), (annotations::FAILOVER, "f1")]));
        assert_eq!(c.run, None);
        assert_eq!(c.events.iter().filter(|e| e.note.contains("a Failover is in progress")).count(), 2);
        let c = read(&test_spec(), &st, &ann(&[(annotations::DRY_RUN, "d1")]));
        assert_eq!(c.run, Some(Command::DryRun { token: "d1".into() }));
    }

    #[test]
    fn forced_failover_goes_first_and_targets_the_other_site() {
        let st = DisasterRecoveryPairStatus { current_primary: Some("west".into()), ..Default::default() };
        let c =
            read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, "s1"), (annotations::FAILOVER, "f1")]));
        assert_eq!(c.run, Some(Command::ForcedFailover { to: "east".into() }));
        assert_eq!(c.handled.len(), 1, "the switchover token waits for its turn");
    }

    #[test]
    fn a_token_acts_once_forever_even_after_others() {
        let mut st = DisasterRecoveryPairStatus::default();
        for t in ["d1", "d2"] {
            let c = read(&test_spec(), &st, &ann(&[(annotations::DRY_RUN, t)]));
            assert_eq!(c.run, Some(Command::DryRun { token: t.into() }), "{t} runs the first time");
            record(&mut st, &c.handled);
        }
        let again = read(&test_spec(), &st, &ann(&[(annotations::DRY_RUN, "d1")]));
        assert_eq!(again, Commands::default(), "d1 came back after d2 and must not run again");
        // Switchover and failover tokens share the rule, and a token of one command does not
        // block the same token of another.
        let c = read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, "d1")]));
        assert_eq!(c.run, Some(Command::Switchover { to: "west".into() }));
        record(&mut st, &c.handled);
        let c = read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, "s2")]));
        record(&mut st, &c.handled);
        assert_eq!(read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, "d1")])).run, None);
        assert_eq!(st.handled_tokens.as_ref().map(|f| f.count), Some(4));
        assert_eq!(st.handled_tokens.as_ref().map(|f| f.bits.len()), Some(2048));
    }

    #[test]
    fn the_token_filter_never_forgets_and_rarely_collides() {
        let mut st = DisasterRecoveryPairStatus::default();
        let used: Vec<String> = (0..300).map(|i| format!("drill-{i}")).collect();
        for t in &used {
            record(&mut st, &[(annotations::SWITCHOVER.to_string(), t.clone())]);
        }
        assert!(used.iter().all(|t| seen(&st, annotations::SWITCHOVER, t)), "no false negative");
        let fresh = (0..10_000).filter(|i| seen(&st, annotations::SWITCHOVER, &format!("new-{i}"))).count();
        assert!(fresh < 50, "{fresh} of 10000 fresh tokens looked used after 300 (expected about 0.1 %)");
    }

    #[test]
    fn a_long_value_is_refused_with_its_reason_first_and_stored_bounded() {
        let st = DisasterRecoveryPairStatus::default();
        let long = "x".repeat(10_240);
        let c = read(&test_spec(), &st, &ann(&[(annotations::SWITCHOVER, &long)]));
        assert_eq!(c.run, None);
        let note = &c.events[0].note;
        assert!(note.contains("not a token") && note.contains("nothing was done"), "{note}");
        assert!(note.contains("(10240 bytes)"), "{note}");
        assert!(note.len() < 300, "the reason is not cut off: {} bytes", note.len());
        let mut st2 = st.clone();
        record(&mut st2, &c.handled);
        let kept = &st2.handled[annotations::SWITCHOVER];
        assert!(kept.len() < 120 && kept.contains("sha256:"), "{kept}");
        assert!(read(&test_spec(), &st2, &ann(&[(annotations::SWITCHOVER, &long)])).events.is_empty());
    }

    #[test]
    fn each_refusal_says_its_own_reason_in_last_command() {
        let mut st = DisasterRecoveryPairStatus::default();
        let c = read(
            &test_spec(),
            &st,
            &ann(&[(annotations::SWITCHOVER, "a"), (annotations::SWITCHOVER_TO, "east")]),
        );
        assert!(c.last.as_ref().is_some_and(|l| !l.0 && l.2.contains("already serves")), "{:?}", c.last);
        record(&mut st, &c.handled);
        let c = read(
            &test_spec(),
            &st,
            &ann(&[(annotations::SWITCHOVER, "b"), (annotations::SWITCHOVER_TO, "north")]),
        );
        assert!(c.last.as_ref().is_some_and(|l| !l.0 && l.2.contains("names no site")), "{:?}", c.last);
        assert_ne!(c.events[0].note, "", "the Event carries the same text");
    }
}
