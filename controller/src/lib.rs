//! understudy: active/passive disaster recovery for PostgreSQL-backed applications on Kubernetes.
//!
//! `crd` is the API (types only); `probe` looks at sites; `reconcile` turns observations into
//! status and decisions; `failover` runs a transition step by step through the side-effect modules
//! (`pg`, `datasource`, `recycle`, `dns`, `coord`).

pub mod admin;
pub mod cli;
pub mod coord;
pub mod crd;
pub mod datasource;
pub mod dns;
pub mod failover;
pub mod lease;
pub mod metrics;
pub mod pg;
pub mod probe;
pub mod reconcile;
pub mod recycle;
pub mod secrets;
pub mod telemetry;
pub mod tls;
