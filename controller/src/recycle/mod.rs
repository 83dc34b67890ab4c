//! Recyclers: how the application lets go of connections to the old primary.

pub mod http;
pub mod pgbouncer;
pub mod rollout;
