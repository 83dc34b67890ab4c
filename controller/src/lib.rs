//! understudy: active/passive disaster recovery for PostgreSQL-backed applications on Kubernetes.
//!
//! `crd` is the API (types only); `probe` looks at sites; `reconcile` turns observations into status.

pub mod cli;
pub mod crd;
pub mod pg;
pub mod probe;
pub mod reconcile;
pub mod secrets;
pub mod telemetry;
