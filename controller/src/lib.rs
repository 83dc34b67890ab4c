//! understudy: active/passive disaster recovery for PostgreSQL-backed applications on Kubernetes.
//!
//! `crd` is the API (types only); `probe` looks at sites; `reconcile` turns observations into
//! status and decisions; `failover` runs a transition step by step through the side-effect modules
//! (`pg`, `datasource`, `recycle`, `dns`, `coord`). `context` (what a round shares), `store` (the
//! status writes), `events` and `units` sit below both, so that `failover` and `reconcile` never
//! import each other; `module_graph` (a test) keeps the top-level modules free of cycles.

pub mod admin;
pub mod authority;
pub mod cli;
pub mod context;
pub mod coord;
pub mod crd;
pub mod datasource;
pub mod dns;
pub mod events;
pub mod failover;
pub mod memory;
pub mod metrics;
pub mod objectives;
pub mod pg;
pub mod probe;
pub mod reconcile;
pub mod recycle;
pub mod replica_lease;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;

#[cfg(test)]
mod module_graph;
