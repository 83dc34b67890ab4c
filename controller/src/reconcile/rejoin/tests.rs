//! The rejoin against fakes: the servers (`FakePg`), the hook (`FakeHook` below), the status
//! store and the Events. Each round runs as the reconciler runs it: on the stored object, and the
//! round's status written back afterwards with the object's resourceVersion (so it meets a 409
//! when a claimed hook run wrote the status first).

use std::{
    collections::VecDeque,
    os::unix::process::ExitStatusExt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use super::{
    hook::{HookCall, HookError, HookRunner},
    step_with, RejoinPorts, HOOK_ATTEMPTS,
};
use crate::{
    crd::{
        test_spec, Assessment, DisasterRecoveryPairStatus, Epoch, FormerPrimary, RejoinHook, SiteStatus,
        Transition,
    },
    events::EventNote,
    failover::fakes::{FakeEvents, FakePg, FakeStore, Server, INJECTED},
    pg::Lsn,
    store::StatusStore,
};

/// The new primary's position when it was promoted.
const FORK: Lsn = Lsn(0x500_0000);

/// A fake hook: records every call, answers with the scripted outcomes in order, then succeeds.
#[derive(Clone, Default)]
struct FakeHook {
    calls: Arc<Mutex<Vec<HookCall>>>,
    script: Arc<Mutex<VecDeque<Result<String, HookError>>>>,
}

impl FakeHook {
    fn calls(&self) -> Vec<HookCall> {
        self.calls.lock().expect("calls").clone()
    }

    /// The next `n` runs fail as a hook that exits with status 1 does.
    fn fail(&self, n: usize) {
        let mut s = self.script.lock().expect("script");
        s.extend((0..n).map(|_| {
            Err(HookError::Exited {
                program: "rejoin.sh".into(),
                status: std::process::ExitStatus::from_raw(1 << 8),
                tail: format!("pg_rewind: {INJECTED}"),
            })
        }));
    }
}

#[async_trait]
impl HookRunner for FakeHook {
    async fn run(&self, _: &RejoinHook, call: &HookCall) -> Result<String, HookError> {
        self.calls.lock().expect("calls").push(call.clone());
        self.script.lock().expect("script").pop_front().unwrap_or_else(|| Ok("east follows west".into()))
    }
}

/// East served until a failover to west (epoch 1, forked at `FORK`); the transition is finished
/// and east is the former primary, not assessed yet. West's server is the new primary.
struct Rig {
    pg: FakePg,
    hook: FakeHook,
    store: FakeStore,
    events: FakeEvents,
}

/// What the probes last saw of east.
fn east(reachable: bool, in_recovery: bool, streaming: bool) -> SiteStatus {
    SiteStatus {
        name: "east".into(),
        reachable,
        in_recovery: reachable.then_some(in_recovery),
        streaming: reachable.then_some(streaming),
        message: (!reachable).then(|| "sql: connection refused".into()),
        ..Default::default()
    }
}

impl Rig {
    /// With east's rejoin hook configured or not, and the probes' view of east.
    fn new(hook: bool, seen: SiteStatus) -> Rig {
        let rejoin = RejoinHook {
            command: Some(vec!["rejoin.sh".into()]),
            job: None,
            timeout: Duration::from_secs(60).into(),
        };
        let mut drp = test_spec().with_site("east", |s| s.rejoin = hook.then_some(rejoin)).pair("chat");
        drp.status = Some(DisasterRecoveryPairStatus {
            current_primary: Some("west".into()),
            epoch: Epoch(1),
            last_transition: Some(Transition {
                from: "east".into(),
                to: "west".into(),
                epoch: Epoch(1),
                promoted_at_lsn: Some(FORK.to_string()),
                started_at: "2027-01-15T10:00:00Z".into(),
                finished_at: Some("2027-01-15T10:00:03Z".into()),
                ..Default::default()
            }),
            former_primary: Some(FormerPrimary {
                site: "east".into(),
                assessment: Assessment::Pending,
                ..Default::default()
            }),
            sites: vec![seen, SiteStatus { name: "west".into(), reachable: true, ..Default::default() }],
            ..Default::default()
        });
        let pg = FakePg::default();
        pg.set("west", |s| *s = Server { reachable: true, lsn: Lsn(FORK.0 + 0x1000), ..Default::default() });
        Rig { pg, hook: FakeHook::default(), store: FakeStore::new(drp), events: FakeEvents::default() }
    }

    /// East's server as it is now.
    fn east_server(&self, f: impl FnOnce(&mut Server)) {
        self.pg.set("east", f)
    }

    /// What the probes see of east from now on.
    fn probes_see(&self, seen: SiteStatus) {
        self.store.edit(|st| st.sites[0] = seen);
    }

    fn ports(&self, site: Option<&str>) -> RejoinPorts<'_> {
        RejoinPorts {
            identity: site.unwrap_or("understudy-0").into(),
            site: site.map(str::to_string),
            pg: Arc::new(self.pg.clone()),
            hook: Arc::new(self.hook.clone()),
            store: Arc::new(self.store.clone()),
            events: Arc::new(self.events.clone()),
        }
    }

    /// One round of the controller at `site` (`None`: one controller for both sites): the
    /// former primary's record after it, and the Events the round returned for its caller.
    async fn round(&self, site: Option<&str>) -> (FormerPrimary, Vec<EventNote>) {
        let drp = self.store.get();
        let mut st = drp.status.clone().unwrap_or_default();
        let events = step_with(&drp, &mut st, &self.ports(site)).await;
        // The caller's status write: a 409 when a claimed hook run wrote first.
        let _ = self.store.write_status(&drp, &st).await;
        (st.former_primary.unwrap_or_default(), events)
    }

    /// The former primary's record as stored.
    fn stored(&self) -> FormerPrimary {
        self.store.status().former_primary.unwrap_or_default()
    }

    /// The statuses written by claimed hook runs (the claim, then the outcome), as
    /// (assessment, message).
    fn hook_writes(&self) -> Vec<(Assessment, String)> {
        self.store
            .writes()
            .into_iter()
            .filter_map(|s| s.former_primary)
            .filter(|f| f.rejoin_attempts > 0)
            .map(|f| (f.assessment, f.message.unwrap_or_default()))
            .collect()
    }
}

fn reasons(events: &[EventNote]) -> Vec<&str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

#[tokio::test]
async fn a_former_primary_back_writable_is_fenced_once_and_assessed_against_the_fork_point() {
    for (head, fork, want, why) in [
        (
            FORK,
            Some(FORK),
            Assessment::CleanFollower,
            "its WAL ends at 0/5000000, at or before the fork point 0/5000000",
        ),
        (
            Lsn(FORK.0 + 256),
            Some(FORK),
            Assessment::NeedsRewind,
            "256 bytes past the fork point 0/5000000: pg_rewind first",
        ),
        (FORK, None, Assessment::NeedsRewind, "the fork point is unknown: pg_rewind first"),
    ] {
        let rig = Rig::new(false, east(true, false, false));
        rig.east_server(|s| *s = Server { reachable: true, lsn: head, ..Default::default() });
        if fork.is_none() {
            rig.store.edit(|st| {
                if let Some(t) = st.last_transition.as_mut() {
                    t.promoted_at_lsn = None;
                }
            });
        }
        let (fp, events) = rig.round(None).await;
        assert_eq!(fp.assessment, want, "{head} {fork:?}");
        let msg = fp.message.unwrap_or_default();
        assert!(
            msg.starts_with("east came back writable and was fenced (read-only, 2 sessions terminated); "),
            "{msg}"
        );
        assert!(msg.contains(why), "{msg}");
        assert!(fp.assessed_at.is_some());
        let server = rig.pg.server("east");
        assert_eq!((server.fenced, server.fences), (true, 1), "fenced once");
        assert_eq!(reasons(&events), ["FormerPrimaryFenced", format!("FormerPrimary{want}").as_str()]);
        assert!(events[0].warning && !events[1].warning);
        assert!(rig.hook.calls().is_empty(), "no hook configured");
        assert!(rig.events.all().is_empty(), "a round that claimed nothing leaves its Events to the caller");
    }
}

#[tokio::test]
async fn a_fence_that_fails_is_reported_and_nothing_is_assessed() {
    let rig = Rig::new(false, east(true, false, false));
    rig.east_server(|s| *s = Server { reachable: true, lsn: FORK, ..Default::default() });
    rig.pg.faults.fail("east:fence", 1);
    let (fp, events) = rig.round(None).await;
    assert_eq!(fp.assessment, Assessment::Pending);
    assert_eq!(fp.message.as_deref(), Some(format!("fence former primary east: fence: {INJECTED}").as_str()));
    assert!(events.is_empty() && rig.hook.calls().is_empty());
    // The next round fences it.
    let (fp, _) = rig.round(None).await;
    assert_eq!((fp.assessment, rig.pg.server("east").fences), (Assessment::CleanFollower, 1));
}

#[tokio::test]
async fn one_back_behind_its_boot_gate_gets_the_hook_then_follows_once_it_streams() {
    let rig = Rig::new(true, east(true, true, false));
    rig.east_server(|s| {
        *s = Server {
            reachable: true,
            in_recovery: true,
            replayed: Some(Lsn(FORK.0 + 64)),
            ..Default::default()
        }
    });
    let (fp, events) = rig.round(None).await;
    assert_eq!(
        rig.hook.calls(),
        [HookCall { site: "east".into(), epoch: Epoch(1), primary: "west".into(), rewind: true, attempt: 1 }]
    );
    assert_eq!(rig.pg.server("west").checkpoints, 1, "the new primary checkpointed before the hook");
    assert_eq!(rig.pg.server("east").fences, 0, "a standby is not fenced");
    assert_eq!((fp.assessment, fp.rejoin_attempts), (Assessment::Rejoining, 1));
    assert_eq!(
        rig.hook_writes(),
        [
            (Assessment::Rejoining, "rejoin hook attempt 1 started by understudy-0".to_string()),
            (
                Assessment::Rejoining,
                "rejoin hook succeeded (rewind: true): east follows west; waiting for east to stream from west"
                    .to_string()
            ),
        ],
        "claimed, then the outcome"
    );
    // The caller's own write met the newer resourceVersion: the stored record is the outcome's.
    let stored = rig.stored();
    assert_eq!((stored.assessment, stored.message, stored.rejoin_attempts), (fp.assessment, fp.message, 1));
    assert!(events.is_empty(), "a claimed round publishes its Events itself");
    assert_eq!(rig.events.reasons(), ["FormerPrimaryNeedsRewind", "RejoinHookSucceeded"]);
    let gate = &rig.events.all()[0].note;
    assert!(gate.contains("behind its boot gate") && gate.contains("0/5000040"), "{gate}");

    // Still restarting, not streaming yet: nothing more is done.
    let (fp, events) = rig.round(None).await;
    assert_eq!((fp.assessment, rig.hook.calls().len()), (Assessment::Rejoining, 1));
    assert!(events.is_empty());

    rig.probes_see(east(true, true, true));
    let (fp, events) = rig.round(None).await;
    assert_eq!(fp.assessment, Assessment::Following);
    assert_eq!(fp.message.as_deref(), Some("east streams from west again: the pair is protected"));
    assert_eq!(reasons(&events), ["FormerPrimaryFollowing"]);
    // Following is the end: later rounds do nothing.
    let (_, events) = rig.round(None).await;
    assert!(events.is_empty());
    assert_eq!(rig.hook.calls().len(), 1);
}

#[tokio::test]
async fn only_the_former_primarys_own_controller_runs_its_hook() {
    for (site, runs) in [(Some("west"), false), (Some("east"), true), (None, true)] {
        let rig = Rig::new(true, east(true, true, false));
        rig.east_server(|s| *s = Server { reachable: true, in_recovery: true, ..Default::default() });
        let (fp, _) = rig.round(site).await;
        assert_eq!(rig.hook.calls().len(), usize::from(runs), "{site:?}");
        assert_eq!(rig.hook_writes().is_empty(), !runs, "{site:?}");
        let want = if runs { Assessment::Rejoining } else { Assessment::NeedsRewind };
        assert_eq!(fp.assessment, want, "{site:?}");
    }
}

#[tokio::test]
async fn a_failing_hook_is_retried_up_to_its_attempts_then_the_standby_needs_a_reclone() {
    let rig = Rig::new(true, east(true, false, false));
    rig.east_server(|s| *s = Server { reachable: true, lsn: FORK, ..Default::default() });
    rig.hook.fail(HOOK_ATTEMPTS as usize + 1);
    for attempt in 1..=HOOK_ATTEMPTS {
        rig.round(Some("east")).await;
        let fp = rig.stored();
        assert_eq!(fp.rejoin_attempts, attempt);
        let msg = fp.message.unwrap_or_default();
        assert!(
            msg.starts_with(&format!(
                "rejoin hook attempt {attempt}: rejoin.sh exited with exit status: 1: pg_rewind: {INJECTED}"
            )),
            "{msg}"
        );
        let last = attempt == HOOK_ATTEMPTS;
        assert_eq!(msg.ends_with("giving up: re-create this standby from a base backup"), last, "{msg}");
        let want = if last { Assessment::NeedsReclone } else { Assessment::CleanFollower };
        assert_eq!(fp.assessment, want, "attempt {attempt}");
        assert_eq!(rig.pg.server("east").fences, attempt as u32, "fenced again before every attempt");
    }
    assert_eq!(rig.events.reasons().iter().filter(|r| *r == "RejoinHookFailed").count(), 3);
    assert!(rig.events.all().iter().filter(|e| e.reason == "RejoinHookFailed").all(|e| e.warning));
    // No attempt past the last; and, once the probes read it read-only, no fence every round
    // either (each one would terminate its sessions again): it waits fenced for a re-clone.
    rig.probes_see(SiteStatus { fenced: Some(true), ..east(true, false, false) });
    for _ in 0..3 {
        rig.round(Some("east")).await;
    }
    assert_eq!(rig.hook.calls().len(), HOOK_ATTEMPTS as usize);
    let attempts: Vec<i32> = rig.hook.calls().iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, (1..=HOOK_ATTEMPTS).collect::<Vec<_>>(), "each attempt named (a Job's name)");
    assert_eq!(rig.pg.server("east").fences, HOOK_ATTEMPTS as u32, "fenced again after the last attempt");
    assert_eq!(rig.stored().assessment, Assessment::NeedsReclone);
}

#[tokio::test]
async fn the_other_sites_controller_fences_a_writable_former_primary_once_not_every_round() {
    // West's controller (with one cluster per site, east's hook is east's controller's to run).
    let rig = Rig::new(true, east(true, false, false));
    rig.east_server(|s| *s = Server { reachable: true, lsn: FORK, ..Default::default() });
    rig.round(Some("west")).await;
    assert_eq!(rig.pg.server("east").fences, 1);
    rig.probes_see(SiteStatus { fenced: Some(true), ..east(true, false, false) });
    for _ in 0..3 {
        rig.round(Some("west")).await;
    }
    assert_eq!(rig.pg.server("east").fences, 1, "fenced every round");
    assert!(rig.hook.calls().is_empty());
    // Writable again (somebody lifted the fence): fenced again.
    rig.probes_see(SiteStatus { fenced: Some(false), ..east(true, false, false) });
    rig.round(Some("west")).await;
    assert_eq!(rig.pg.server("east").fences, 2);
}

#[tokio::test]
async fn a_new_primary_that_cannot_checkpoint_fails_the_attempt_before_the_hook_runs() {
    let rig = Rig::new(true, east(true, true, false));
    rig.east_server(|s| *s = Server { reachable: true, in_recovery: true, ..Default::default() });
    rig.pg.faults.fail("west:checkpoint", 1);
    rig.round(None).await;
    let fp = rig.stored();
    assert_eq!(
        fp.message.as_deref(),
        Some(format!("rejoin hook attempt 1: CHECKPOINT on new primary west: {INJECTED}").as_str())
    );
    assert!(rig.hook.calls().is_empty());
}

#[tokio::test]
async fn a_claim_another_controller_wrote_first_runs_nothing_and_records_nothing() {
    let rig = Rig::new(true, east(true, true, false));
    rig.east_server(|s| *s = Server { reachable: true, in_recovery: true, ..Default::default() });
    rig.store.conflict(1);
    let drp = rig.store.get();
    let mut st = drp.status.clone().unwrap_or_default();
    let events = step_with(&drp, &mut st, &rig.ports(None)).await;
    assert!(rig.hook.calls().is_empty());
    assert_eq!(st.former_primary.map(|f| (f.assessment, f.rejoin_attempts)), Some((Assessment::Pending, 0)));
    assert_eq!(reasons(&events), ["FormerPrimaryNeedsRewind"]);
}

#[tokio::test]
async fn an_unreachable_former_primary_stays_unreachable_and_is_not_contacted() {
    let rig = Rig::new(true, east(false, false, false));
    rig.pg.faults.fail("east:connect", u32::MAX);
    let (fp, events) = rig.round(None).await;
    assert_eq!(fp.assessment, Assessment::Unreachable);
    assert_eq!(fp.message.as_deref(), Some("sql: connection refused"));
    assert!(events.is_empty());
    let (again, events) = rig.round(None).await;
    assert_eq!(again, fp, "nothing changes, not even assessedAt");
    assert!(events.is_empty() && rig.hook.calls().is_empty());
    assert_eq!(rig.pg.server("east").fences, 0);

    // One whose hook is restarting it stays Rejoining while it is down.
    rig.store.edit(|st| {
        if let Some(f) = st.former_primary.as_mut() {
            f.assessment = Assessment::Rejoining;
        }
    });
    let (fp, _) = rig.round(None).await;
    assert_eq!(fp.assessment, Assessment::Rejoining);
}

#[tokio::test]
async fn nothing_is_done_while_a_transition_runs() {
    let rig = Rig::new(true, east(true, false, false));
    rig.east_server(|s| *s = Server { reachable: true, lsn: FORK, ..Default::default() });
    rig.store.edit(|st| {
        if let Some(t) = st.last_transition.as_mut() {
            t.finished_at = None;
        }
    });
    let (fp, events) = rig.round(None).await;
    assert_eq!(fp.assessment, Assessment::Pending);
    assert!(events.is_empty());
    assert_eq!(rig.pg.server("east").fences, 0);
}
