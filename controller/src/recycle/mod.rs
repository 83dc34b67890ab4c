//! Recyclers: how the application lets go of connections to the old primary.
//!
//! One port, `Recycler`, with one implementation per kind (`pgbouncer::PgBouncer`, `http::Http`,
//! `rollout::RolloutRestart`); `build` is the one place that maps a `spec.recycle` entry to its
//! kind. Adding a kind is the CRD field, its file and an arm of that match.

pub mod http;
pub mod pgbouncer;
pub mod rollout;

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    crd::{self, PostgresEndpoint},
    secrets::{SecretError, Secrets},
};

/// The new primary, as a recycler points the application at it.
pub struct NewPrimary<'a> {
    /// The site's name.
    pub site: &'a str,
    /// Its PostgreSQL endpoint (host, port, database).
    pub postgres: &'a PostgresEndpoint,
    /// The epoch of the transition (stamped where the kind keeps a stamp).
    pub epoch: i64,
}

/// One `spec.recycle` entry. Every call is idempotent: a retry after a crash does no harm.
#[async_trait]
pub trait Recycler: Send + Sync {
    /// What it acts on, for plans and messages (`PgBouncer 10.0.0.5:6432`).
    fn describe(&self) -> String;

    /// Holds new transactions where the kind can (PgBouncer `PAUSE`, waiting up to `wait` for
    /// running ones); the other kinds do nothing. Whether anything was held.
    async fn hold(&self, _wait: Duration) -> Result<bool, Error> {
        Ok(false)
    }

    /// Lets held transactions through (PgBouncer `RESUME`); nothing for the other kinds.
    async fn release(&self, _wait: Duration) -> Result<bool, Error> {
        Ok(false)
    }

    /// Whether what it makes the application do reads the DataSource (an HTTP recycle call, a
    /// rollout restart): such a recycler runs only after the DataSource names the new primary. A
    /// pooler that is itself repointed (PgBouncer) does not.
    fn reads_data_source(&self) -> bool {
        true
    }

    /// Points the application at the new primary and drops its old connections; says what it did.
    async fn recycle(&self, to: &NewPrimary<'_>) -> Result<String, Error>;

    /// Proves, without changing anything, that the recycle could run now (readiness).
    async fn check(&self) -> Result<(), Error>;
}

/// What the real recyclers need from the cluster.
#[derive(Clone)]
pub struct Env {
    pub client: kube::Client,
    pub http: reqwest::Client,
    pub secrets: Secrets,
    pub ns: String,
    /// Bound for each remote call.
    pub timeout: Duration,
}

/// The recycler of `spec.recycle[i]`: the one match over the kinds. `None` for an entry that
/// names no kind (the CRD's CEL rule refuses one; an object stored before it may have one).
pub fn build(i: usize, r: &crd::Recycler, env: &Env) -> Option<Box<dyn Recycler>> {
    match r {
        crd::Recycler { pg_bouncer: Some(p), .. } => Some(Box::new(pgbouncer::PgBouncer::new(i, p, env))),
        crd::Recycler { http: Some(h), .. } => Some(Box::new(http::Http::new(i, h, env))),
        crd::Recycler { rollout_restart: Some(rr), .. } => {
            Some(Box::new(rollout::RolloutRestart::new(i, rr, env)))
        }
        crd::Recycler { pg_bouncer: None, http: None, rollout_restart: None, .. } => None,
    }
}

/// The recyclers of every `spec.recycle` entry a controller serving `here` acts on (its own
/// site's and the shared ones; all for a controller without `--site`), in order.
pub fn build_all(
    spec: &crd::DisasterRecoveryPairSpec,
    env: &Env,
    here: Option<&str>,
) -> Vec<Box<dyn Recycler>> {
    spec.recycle
        .iter()
        .enumerate()
        .filter(|(_, r)| crd::acts_here(r.site.as_deref(), here))
        .filter_map(|(i, r)| build(i, r, env))
        .collect()
}

/// Why a recycler could not act. Every variant names the spec field; none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Secret it reads is missing or incomplete.
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{field}: {source}")]
    PgBouncer { field: String, source: pgbouncer::Error },
    #[error("{field}.databasesFile {path}: {source}")]
    DatabasesFile { field: String, path: String, source: std::io::Error },
    #[error("{field}: {source}")]
    Http { field: String, source: http::Error },
    #[error("{field}: {url} does not accept connections")]
    HttpUnreachable { field: String, url: String },
    #[error("{field}.url: {url} has no host")]
    HttpNoHost { field: String, url: String },
    #[error("{field}: {source}")]
    Rollout { field: String, source: rollout::Error },
}

impl Error {
    /// A problem of the spec or its Secrets, which waiting alone does not fix.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Secret(_) | Error::DatabasesFile { .. } | Error::HttpNoHost { .. })
    }
}
