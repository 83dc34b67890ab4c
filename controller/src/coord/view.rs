//! The witness's view of a pair: a task per pair reads the epoch record from etcd once per probe
//! interval over one kept connection and publishes the last answer, so that every reconcile round
//! knows who the witness says serves — without waiting on the witness itself (a witness that hangs
//! costs the task a timeout, never the round).
//!
//! This is what makes the witness, not a cluster's status, the authority: a cluster whose API
//! server was down during a failover, or a controller starting on a site that lost its place, sees
//! the epoch moved within one probe interval of reaching the witness, and its round mirrors it into
//! its own cluster's status before it decides anything (`authority::mirror`).
//!
//! The task never talks to the Kubernetes API. It polls *and* watches: an etcd watch on the pair's
//! keys wakes it within milliseconds of a change (the primary site's leader key deleted, the epoch
//! moved by the other site's controller), and it then reads the keys again and asks for a
//! reconcile of the pair at once (`Views::new`'s trigger) instead of at the next probe round. The
//! bounded read per interval stays, because a watch on a connection whose packets are dropped
//! waits silently, while a read with a deadline notices.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use super::etcd::{Access, Changes, Witness};

/// What the task needs; rebuilt by every reconcile (credentials may rotate). Not `Debug`: it
/// holds the witness's credentials.
#[derive(Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub access: Access,
    pub prefix: String,
    pub namespace: String,
    pub name: String,
    /// How often the record is read.
    pub every: Duration,
    /// Bound for connecting and for each read.
    pub timeout: Duration,
    /// This controller's site and the spec it reads (canonical JSON), published for the other
    /// site's controller to compare (`spec/<site>`); `None` for a controller without `--site`.
    pub publish: Option<(String, String)>,
    /// Whether this site's copy is paused (published with the spec).
    pub paused: bool,
}

impl Config {
    fn same_task(&self, other: &Config) -> bool {
        self.endpoints == other.endpoints
            && self.prefix == other.prefix
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

/// The epoch record as the witness holds it: `(epoch, holder, transition id)`; `(0, "", "")` when
/// no epoch was ever taken.
pub type Record = (i64, String, String);

/// The last answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The last record read, and when.
    pub record: Option<(Record, Instant)>,
    /// Why the last read failed, when it did.
    pub error: Option<String>,
    /// The specs the sites' controllers published, by site (from the last read).
    pub specs: Vec<(String, String)>,
    /// The last finished transition's journal (JSON), as its controller published it.
    pub journal: Option<String>,
    /// The sites whose copy is paused.
    pub paused: Vec<String>,
    /// The leader key's value (`<epoch> <site>`), when somebody holds it.
    pub leader: Option<String>,
}

impl State {
    /// What a reconcile must see at once when it changes: the epoch record, the leader key, the
    /// pauses and the journal (not the read's time).
    fn decisive(&self) -> (Option<&Record>, &Option<String>, &[String], &Option<String>) {
        (self.record.as_ref().map(|(r, _)| r), &self.leader, &self.paused, &self.journal)
    }
}

/// Asks for a reconcile of a pair (`ns/name`).
pub type Trigger = tokio::sync::mpsc::UnboundedSender<String>;

/// The views of this controller, by pair (`ns/name`).
#[derive(Default, Clone)]
pub struct Views {
    tasks: super::tasks::PairTasks<Config, State>,
    /// Where a view asks for its pair's reconcile when the witness changed.
    trigger: Option<Trigger>,
}

impl Views {
    /// Views that ask for a reconcile through `trigger` when what the witness holds changes.
    pub fn new(trigger: Trigger) -> Views {
        Views { tasks: Default::default(), trigger: Some(trigger) }
    }

    /// Starts the view of `pair`, or hands the running one its new configuration; returns the
    /// last answer (empty right after the start).
    pub fn ensure(&self, pair: &str, cfg: Config) -> State {
        let trigger = self.trigger.clone().map(|t| (t, pair.to_string()));
        self.tasks.ensure(pair, cfg, Config::same_task, |_| false, move |rx, st| run(rx, st, trigger))
    }

    /// The last answer of `pair`'s view, when one runs.
    pub fn state(&self, pair: &str) -> Option<State> {
        self.tasks.state(pair)
    }

    /// Waits until `pair`'s view has a first answer or `limit` passed; returns what it has.
    pub async fn first_answer(&self, pair: &str, limit: Duration) -> State {
        let until = Instant::now() + limit;
        loop {
            let st = self.tasks.state(pair).unwrap_or_default();
            if st.record.is_some() || st.error.is_some() || Instant::now() >= until {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the views of every pair for which `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.tasks.retain(keep)
    }

    /// Stops `pair`'s view.
    pub fn stop(&self, pair: &str) {
        self.tasks.stop(pair)
    }
}

async fn run(
    mut cfg_rx: watch::Receiver<Config>,
    state: Arc<Mutex<State>>,
    trigger: Option<(Trigger, String)>,
) {
    let mut conn: Option<Witness> = None;
    let mut changes: Option<Changes> = None;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        let began = Instant::now();
        let res = tokio::time::timeout(cfg.timeout, read(&cfg, &mut conn, &mut changes)).await;
        let res = match res {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("etcd witness: no answer within {:?}", cfg.timeout)),
        };
        let mut changed = false;
        if let Ok(mut s) = state.lock() {
            match res {
                Ok(snap) => {
                    let before = s.clone();
                    s.record = Some((snap.epoch, began));
                    s.specs = snap.specs;
                    s.journal = snap.journal;
                    s.paused = snap.paused;
                    s.leader = snap.leader;
                    s.error = None;
                    changed = before.record.is_some() && before.decisive() != s.decisive();
                }
                Err(e) => {
                    conn = None;
                    changes = None;
                    s.error = Some(e);
                }
            }
        }
        if let Some((tx, pair)) = trigger.as_ref().filter(|_| changed) {
            let _ = tx.send(pair.clone());
        }
        // Until the next read: the interval's end, a change the watch reports, or a new
        // configuration after a failed read (every reconcile hands one over; when the last read
        // went well it changes nothing here).
        let wake = began + cfg.every;
        let mut broken = false;
        loop {
            let change = async {
                match changes.as_mut() {
                    Some(c) => c.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                woke = change => {
                    // Read again at once; a broken watch is made again by that read.
                    broken = woke.is_err();
                    break;
                }
                changed = cfg_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if state.lock().map(|s| s.error.is_some()).unwrap_or(false) {
                        break;
                    }
                }
            }
        }
        if broken {
            changes = None;
            // A watch that breaks as soon as it is made must not turn the loop into a busy one.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One read of the pair's keys; this site's spec is published first when the witness holds
/// another (or none).
/// The pair's keys are watched from before the read, so no change after it goes unseen.
async fn read(
    cfg: &Config,
    conn: &mut Option<Witness>,
    changes: &mut Option<Changes>,
) -> Result<super::etcd::Snapshot, super::etcd::Error> {
    let w = match conn {
        Some(w) => w,
        None => conn.insert(
            Witness::connect(
                &cfg.endpoints,
                &cfg.prefix,
                &cfg.namespace,
                &cfg.name,
                cfg.timeout,
                cfg.access.clone(),
            )
            .await?,
        ),
    };
    if changes.is_none() {
        *changes = Some(w.watch().await?);
    }
    let mut snap = w.snapshot().await?;
    if let Some((site, spec)) = &cfg.publish {
        if !snap.specs.iter().any(|(s, v)| s == site && v == spec) {
            w.put_spec(site, spec).await?;
            snap.specs.retain(|(s, _)| s != site);
            snap.specs.push((site.clone(), spec.clone()));
        }
        if snap.paused.contains(site) != cfg.paused {
            w.put_paused(site, cfg.paused).await?;
            snap.paused.retain(|s| s != site);
            if cfg.paused {
                snap.paused.push(site.clone());
            }
        }
    }
    Ok(snap)
}

/// Where two copies of a spec differ: the JSON paths whose values differ, with both values (at
/// most `limit`, then how many more). Empty when they are equal.
pub fn spec_differences(here: &serde_json::Value, there: &serde_json::Value, limit: usize) -> Vec<String> {
    fn walk(
        path: &str,
        a: &serde_json::Value,
        b: &serde_json::Value,
        out: &mut Vec<(String, String, String)>,
    ) {
        use serde_json::Value::{Array, Object};
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    walk(&format!("{path}.{k}"), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            (Array(x), Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), p, q, out);
                }
            }
            _ if a != b => {
                let show = |v: &serde_json::Value| {
                    let t = if v.is_null() { "unset".to_string() } else { v.to_string() };
                    if t.chars().count() > 60 {
                        format!("{}…", t.chars().take(60).collect::<String>())
                    } else {
                        t
                    }
                };
                out.push((path.to_string(), show(a), show(b)));
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    walk("spec", here, there, &mut all);
    let more = all.len().saturating_sub(limit);
    let mut out: Vec<String> =
        all.into_iter().take(limit).map(|(p, a, b)| format!("{p} (here {a}, there {b})")).collect();
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::spec_differences;
    use serde_json::json;

    #[test]
    fn differences_name_the_paths_and_both_values() {
        let a =
            json!({"primary": "east", "failover": {"probeInterval": "1s"}, "recycle": [{"site": "east"}]});
        let b = json!({"primary": "east", "failover": {"probeInterval": "2s", "mode": "Manual"}, "recycle": [{"site": "west"}]});
        let d = spec_differences(&a, &b, 5);
        assert_eq!(
            d,
            vec![
                "spec.failover.mode (here unset, there \"Manual\")",
                "spec.failover.probeInterval (here \"1s\", there \"2s\")",
                "spec.recycle[0].site (here \"east\", there \"west\")",
            ]
        );
        assert!(spec_differences(&a, &a, 5).is_empty());
        assert_eq!(spec_differences(&a, &b, 1).last().map(String::as_str), Some("and 2 more"));
    }
}
