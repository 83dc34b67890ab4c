//! PostgreSQL: the LSN type and the admin connection settings built from a site and its Secret.

pub mod admin;
pub mod conn;
pub mod lsn;
pub mod tls;

pub use lsn::Lsn;
