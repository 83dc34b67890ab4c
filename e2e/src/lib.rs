//! understudy's end-to-end harness: the real local sandbox and helpers for tests against it.

pub mod app;
pub mod bed;
pub mod job_runner;
pub mod pair;
pub mod sandbox;
pub mod site_loss;
pub mod support;
pub mod two_sites;
pub mod workload;
