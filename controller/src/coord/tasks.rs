//! One background task per pair, fed a fresh configuration by every reconcile and publishing its
//! state: the shape the leader-key keepers (`keeper`) and the witness views (`view`) share. A task
//! is started on the first `ensure`, handed each later configuration, restarted when the
//! configuration asks for another task (or it ended, unless its state says to leave it ended), and
//! aborted when dropped from the map.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::{sync::watch, task::JoinHandle};

struct Handle<C, S> {
    config: watch::Sender<C>,
    state: Arc<Mutex<S>>,
    task: JoinHandle<()>,
}

impl<C, S> Drop for Handle<C, S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tasks of this controller, by pair (`ns/name`).
pub struct PairTasks<C, S> {
    tasks: Arc<Mutex<HashMap<String, Handle<C, S>>>>,
}

impl<C, S> Default for PairTasks<C, S> {
    fn default() -> Self {
        PairTasks { tasks: Default::default() }
    }
}

impl<C, S> Clone for PairTasks<C, S> {
    fn clone(&self) -> Self {
        PairTasks { tasks: self.tasks.clone() }
    }
}

impl<C: Send + Sync + 'static, S: Clone + Default + Send + 'static> PairTasks<C, S> {
    /// Hands `pair`'s running task `cfg` when `same_task` says it is still the same task, else
    /// starts `run` afresh; returns the task's state (empty right after a start). A finished task
    /// is started again unless `stay_ended` says its state should stand.
    pub fn ensure<F>(
        &self,
        pair: &str,
        cfg: C,
        same_task: impl Fn(&C, &C) -> bool,
        stay_ended: impl Fn(&S) -> bool,
        run: impl FnOnce(watch::Receiver<C>, Arc<Mutex<S>>) -> F,
    ) -> S
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(mut tasks) = self.tasks.lock() else { return S::default() };
        if let Some(h) = tasks.get(pair) {
            let state = h.state.lock().map(|s| s.clone()).unwrap_or_default();
            let same = same_task(&h.config.borrow(), &cfg);
            if same && !h.task.is_finished() {
                h.config.send_replace(cfg);
                return state;
            }
            if same && stay_ended(&state) {
                return state;
            }
        }
        let (tx, rx) = watch::channel(cfg);
        let state = Arc::new(Mutex::new(S::default()));
        let task = tokio::spawn(run(rx, state.clone()));
        tasks.insert(pair.to_string(), Handle { config: tx, state, task });
        S::default()
    }

    /// The state of `pair`'s task, when one runs.
    pub fn state(&self, pair: &str) -> Option<S> {
        let tasks = self.tasks.lock().ok()?;
        tasks.get(pair).and_then(|h| h.state.lock().ok().map(|s| s.clone()))
    }

    /// Stops the tasks of every pair for which `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|pair, _| keep(pair));
        }
    }

    /// Stops `pair`'s task.
    pub fn stop(&self, pair: &str) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.remove(pair);
        }
    }
}
