//! Commands given by annotation (`kubectl annotate drp NAME dr.understudy.dev/<verb>=<token>`),
//! pure: which one to run now, and which values to refuse. Every token acts once: the value acted
//! on (or refused) is recorded in `status.handled`, so re-applying it does nothing. A bad or
//! unknown value gets a Warning Event and changes nothing.

use std::collections::BTreeMap;

use super::decide::{current_primary, EventNote};
use crate::crd::{annotations, DisasterRecoveryPairSpec, DisasterRecoveryPairStatus};

/// A command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Planned, zero-loss move of the primary to `to`.
    Switchover { to: String },
    /// Fail over to `to` now, past every guard except the epoch.
    ForcedFailover { to: String },
    /// Write the plan and its blockers to status without acting.
    DryRun { token: String },
}

/// What the annotations ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    /// The command to run now (at most one per reconcile; the rest wait their turn).
    pub run: Option<Command>,
    /// Warning Events for refused values.
    pub events: Vec<EventNote>,
    /// (annotation, value) pairs to record as handled.
    pub handled: Vec<(String, String)>,
}

const KNOWN: [&str; 7] = [
    annotations::SWITCHOVER,
    annotations::SWITCHOVER_TO,
    annotations::FAILOVER,
    annotations::APPROVE,
    annotations::PAUSED,
    annotations::DRY_RUN,
    annotations::EPOCH,
];

/// A token: 1–63 characters of `[A-Za-z0-9._-]`.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 63
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Reads the annotations against what was already handled.
pub fn read(
    spec: &DisasterRecoveryPairSpec,
    st: &DisasterRecoveryPairStatus,
    ann: &BTreeMap<String, String>,
) -> Commands {
    let mut out = Commands::default();
    let busy = st.last_transition.as_ref().filter(|t| t.finished_at.is_none()).map(|t| t.kind.clone());
    let primary = current_primary(spec, Some(st)).to_string();
    let handled = |k: &str, v: &str| st.handled.get(k).map(String::as_str) == Some(v);
    let refuse = |out: &mut Commands, key: &str, value: &str, reason: &str, note: String| {
        out.events.push(EventNote { warning: true, reason: reason.into(), note });
        out.handled.push((key.into(), value.into()));
    };

    for (key, value) in ann {
        let Some(verb) = key.strip_prefix("dr.understudy.dev/") else { continue };
        if !KNOWN.contains(&key.as_str()) {
            if !handled(key, value) {
                refuse(&mut out, key, value, "UnknownAnnotation", format!(
                    "annotation {key} is not one understudy knows ({verb:?}); known: switchover, switchover-to, failover, approve, paused, dry-run; nothing was done"
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
                format!("{key}={value:?}: use true or false; automation is unchanged"),
            );
        }
    }

    let target = |want: Option<&String>| -> Result<String, String> {
        match want {
            Some(site) if !spec.sites.iter().any(|s| &s.name == site) => Err(format!(
                "{}={site:?} names no site; sites are {}",
                annotations::SWITCHOVER_TO,
                spec.sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Some(site) if *site == primary => {
                Err(format!("{}={site:?} already serves", annotations::SWITCHOVER_TO))
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
    ] {
        let Some(token) = ann.get(key) else { continue };
        if handled(key, token) {
            continue;
        }
        if !valid_token(token) {
            refuse(
                &mut out,
                key,
                token,
                reason,
                format!("{key}={token:?} is not a token (1-63 of A-Z a-z 0-9 . _ -); nothing was done"),
            );
            continue;
        }
        if key != annotations::DRY_RUN {
            if let Some(kind) = &busy {
                refuse(&mut out, key, token, reason, format!("{key}={token}: a {kind} is in progress; nothing was done. Annotate again with a new token once it has finished"));
                continue;
            }
        }
        if out.run.is_some() {
            continue; // one command per reconcile; this token waits for the next
        }
        let cmd = match key {
            k if k == annotations::DRY_RUN => Ok(Command::DryRun { token: token.clone() }),
            k if k == annotations::SWITCHOVER => {
                target(ann.get(annotations::SWITCHOVER_TO)).map(|to| Command::Switchover { to })
            }
            _ => target(None).map(|to| Command::ForcedFailover { to }),
        };
        match cmd {
            Ok(c) => {
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
    use crate::crd::Transition;

    fn spec() -> DisasterRecoveryPairSpec {
        serde_json::from_value(serde_json::json!({
            "primary": "east",
            "sites": [
                { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
                { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } }
            ]
        }))
        .expect("spec")
    }

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn a_switchover_token_acts_once() {
        let mut st = DisasterRecoveryPairStatus::default();
        let a = ann(&[(annotations::SWITCHOVER, "drill-1")]);
        let c = read(&spec(), &st, &a);
        assert_eq!(c.run, Some(Command::Switchover { to: "west".into() }));
        assert_eq!(c.handled, vec![(annotations::SWITCHOVER.to_string(), "drill-1".to_string())]);
        st.handled.insert(annotations::SWITCHOVER.into(), "drill-1".into());
        assert_eq!(read(&spec(), &st, &a), Commands::default(), "a replayed token is a no-op");
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
            let c = read(&spec(), &st, &a);
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
            assert!(read(&spec(), &st2, &a).events.is_empty(), "{a:?}");
        }
        // Foreign annotations are none of our business.
        assert_eq!(
            read(&spec(), &st, &ann(&[("kubectl.kubernetes.io/last-applied-configuration", "{}")])),
            Commands::default()
        );
    }

    #[test]
    fn nothing_starts_during_a_transition_but_a_dry_run() {
        let st = DisasterRecoveryPairStatus {
            last_transition: Some(Transition { kind: "Failover".into(), ..Default::default() }),
            ..Default::default()
        };
        let c = read(&spec(), &st, &ann(&[(annotations::SWITCHOVER, "s1"), (annotations::FAILOVER, "f1")]));
        assert_eq!(c.run, None);
        assert_eq!(c.events.iter().filter(|e| e.note.contains("a Failover is in progress")).count(), 2);
        let c = read(&spec(), &st, &ann(&[(annotations::DRY_RUN, "d1")]));
        assert_eq!(c.run, Some(Command::DryRun { token: "d1".into() }));
    }

    #[test]
    fn forced_failover_goes_first_and_targets_the_other_site() {
        let st = DisasterRecoveryPairStatus { current_primary: Some("west".into()), ..Default::default() };
        let c = read(&spec(), &st, &ann(&[(annotations::SWITCHOVER, "s1"), (annotations::FAILOVER, "f1")]));
        assert_eq!(c.run, Some(Command::ForcedFailover { to: "east".into() }));
        assert_eq!(c.handled.len(), 1, "the switchover token waits for its turn");
    }
}
