//! What the controller remembers about each pair between rounds, in one place: nothing here is
//! the truth (the status and the witness are); it saves work and keeps figures fresh. One map,
//! one entry per pair, dropped when the pair is deleted or gone from the watch.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{crd::DisasterRecoveryPairStatus, pg::Lsn};

/// One pair's memory.
#[derive(Clone, Debug, Default)]
pub struct PairMemory {
    /// When the readiness checks last ran (they touch every target, so they run every 30 s).
    pub readiness_at: Option<Instant>,
    /// When the status was last written.
    pub written_at: Option<Instant>,
    /// The last status computed, maybe unwritten (WAL positions are written at most every `record::positions_every`).
    pub unwritten: Option<DisasterRecoveryPairStatus>,
    /// Per site: the highest WAL insert position a probe read on its current timeline, the
    /// freshest "last known primary LSN" for a failover's lost-WAL figure.
    pub seen_lsn: HashMap<String, (Option<i64>, Lsn)>,
    /// The stored object cannot be read (reported as `Undecodable`).
    pub undecodable: bool,
    /// The lease of another controller's registration for this controller's site (`site_lock`).
    pub other_site_controller: Option<i64>,
    /// When this site's own objects were last repointed (`reconcile::local_objects`; a failure is
    /// retried after a while).
    pub local_tried_at: Option<Instant>,
    /// When `spec.activate` was last tried (`reconcile::activation`).
    pub activation_tried_at: Option<Instant>,
    /// A status write met a 409: the watch cache's copy is behind, so the next round reads the
    /// pair from the API server instead of writing against the stale copy again.
    pub stale: bool,
    /// The site fence hook run (`at #attempt`) whose outcome was last announced by an Event.
    pub fence_announced: Option<String>,
}

/// Every pair's memory, by `namespace/name`.
#[derive(Default)]
pub struct Memory {
    pairs: Mutex<HashMap<String, PairMemory>>,
}

impl Memory {
    /// Reads or changes `pair`'s memory (created empty on first use).
    pub fn with<T>(&self, pair: &str, f: impl FnOnce(&mut PairMemory) -> T) -> T {
        let mut pairs = self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(pairs.entry(pair.to_string()).or_default())
    }

    /// How many pairs this controller remembers (the pairs it tends).
    pub fn len(&self) -> usize {
        self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether it remembers no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of `pair`'s memory, if it has one.
    pub fn get(&self, pair: &str) -> Option<PairMemory> {
        self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(pair).cloned()
    }

    /// Forgets `pair` (deleted; a pair created again under its name starts afresh).
    pub fn forget(&self, pair: &str) -> Option<PairMemory> {
        self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(pair)
    }

    /// Keeps the pairs `keep` says yes to; returns the ones dropped.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, PairMemory)> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let gone: Vec<String> = pairs.keys().filter(|k| !keep(k)).cloned().collect();
        gone.into_iter().filter_map(|k| pairs.remove(&k).map(|m| (k, m))).collect()
    }

    /// Whether `pair`'s readiness checks are due (never run, or `every` ago); marks them as run.
    pub fn readiness_due(&self, pair: &str, every: Duration) -> bool {
        self.with(pair, |m| {
            let due = m.readiness_at.is_none_or(|t| t.elapsed() >= every);
            if due {
                m.readiness_at = Some(Instant::now());
            }
            due
        })
    }

    /// Records a probe's WAL position of `site`: the highest on the server's current timeline (a
    /// rewound server starts over).
    pub fn saw_lsn(&self, pair: &str, site: &str, timeline: Option<i64>, lsn: Lsn) {
        self.with(pair, |m| {
            let e = m.seen_lsn.entry(site.to_string()).or_insert((timeline, lsn));
            *e = if e.0 == timeline { (e.0, e.1.max(lsn)) } else { (timeline, lsn) };
        })
    }

    /// The highest WAL position seen on `site`.
    pub fn seen_lsn(&self, pair: &str, site: &str) -> Option<Lsn> {
        self.with(pair, |m| m.seen_lsn.get(site).map(|(_, l)| *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_pair_dropped_in_one_place() {
        let m = Memory::default();
        assert!(m.readiness_due("ns/a", Duration::from_secs(30)), "first round");
        assert!(!m.readiness_due("ns/a", Duration::from_secs(30)), "not again within 30 s");
        m.saw_lsn("ns/a", "east", Some(1), Lsn(100));
        m.saw_lsn("ns/a", "east", Some(1), Lsn(50));
        assert_eq!(m.seen_lsn("ns/a", "east"), Some(Lsn(100)), "the highest on one timeline");
        m.saw_lsn("ns/a", "east", Some(2), Lsn(10));
        assert_eq!(m.seen_lsn("ns/a", "east"), Some(Lsn(10)), "a new timeline starts over");
        m.with("ns/b", |p| p.undecodable = true);
        let gone = m.retain(|k| k == "ns/a");
        assert_eq!(gone.len(), 1);
        assert!(gone[0].1.undecodable);
        assert!(m.forget("ns/a").is_some());
        assert!(m.get("ns/a").is_none());
    }
}
