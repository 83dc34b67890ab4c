//! PostgreSQL: the LSN type and the admin connection settings built from a site and its Secret.

pub mod admin;
pub mod lsn;

pub use lsn::Lsn;
