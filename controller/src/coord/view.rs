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
//! The task never talks to the Kubernetes API. Polling rather than an etcd watch: a watch on a
//! connection whose packets are dropped waits silently, while a bounded read per interval notices.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use super::etcd::{Access, Witness};

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
}

/// The views of this controller, by pair (`ns/name`).
#[derive(Default, Clone)]
pub struct Views(super::tasks::PairTasks<Config, State>);

impl Views {
    /// Starts the view of `pair`, or hands the running one its new configuration; returns the
    /// last answer (empty right after the start).
    pub fn ensure(&self, pair: &str, cfg: Config) -> State {
        self.0.ensure(pair, cfg, Config::same_task, |_| false, run)
    }

    /// The last answer of `pair`'s view, when one runs.
    pub fn state(&self, pair: &str) -> Option<State> {
        self.0.state(pair)
    }

    /// Waits until `pair`'s view has a first answer or `limit` passed; returns what it has.
    pub async fn first_answer(&self, pair: &str, limit: Duration) -> State {
        let until = Instant::now() + limit;
        loop {
            let st = self.0.state(pair).unwrap_or_default();
            if st.record.is_some() || st.error.is_some() || Instant::now() >= until {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the views of every pair for which `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.retain(keep)
    }

    /// Stops `pair`'s view.
    pub fn stop(&self, pair: &str) {
        self.0.stop(pair)
    }
}

async fn run(mut cfg_rx: watch::Receiver<Config>, state: Arc<Mutex<State>>) {
    let mut conn: Option<Witness> = None;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        let began = Instant::now();
        let res = tokio::time::timeout(cfg.timeout, read(&cfg, &mut conn)).await;
        let res = match res {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("etcd witness: no answer within {:?}", cfg.timeout)),
        };
        if let Ok(mut s) = state.lock() {
            match res {
                Ok(snap) => {
                    s.record = Some((snap.epoch, began));
                    s.specs = snap.specs;
                    s.journal = snap.journal;
                    s.paused = snap.paused;
                    s.error = None;
                }
                Err(e) => {
                    conn = None;
                    s.error = Some(e);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(began + cfg.every) => {}
            changed = cfg_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new configuration only wakes the loop early when the old one had failed.
                let failed = state.lock().map(|s| s.error.is_some()).unwrap_or(false);
                if !failed {
                    tokio::time::sleep_until(began + cfg.every).await;
                }
            }
        }
    }
}

/// One read of the pair's keys; this site's spec is published first when the witness holds
/// another (or none).
async fn read(cfg: &Config, conn: &mut Option<Witness>) -> Result<super::etcd::Snapshot, super::etcd::Error> {
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
