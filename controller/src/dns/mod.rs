//! DNS records that follow the serving site: RFC 2136 dynamic updates signed with TSIG (confirmed by
//! asking the authoritative server), and ExternalDNS `DNSEndpoint` objects.
//!
//! One port, `DnsProvider`, with one implementation per kind (`rfc2136::Rfc2136`,
//! `dns_endpoint::DnsEndpoint`); `build` is the one place that maps a `spec.dns` entry to its kind.

pub mod dns_endpoint;
pub mod rfc2136;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    crd,
    secrets::{SecretError, Secrets},
};

/// Where a record is pointed: the site's `dnsTarget`, as written and as an address.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub text: &'a str,
    pub addr: IpAddr,
}

/// One `spec.dns` entry. `point_at` is idempotent: a record already right is left alone.
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// The record, for plans and messages (`chat.example.com at 192.0.2.53:53`).
    fn describe(&self) -> String;

    /// Points the record at `to` for the transition of `epoch` and confirms it; says what it did.
    async fn point_at(&self, to: &Target<'_>, epoch: i64) -> Result<String, Error>;

    /// Proves, without changing anything, that the change would be accepted (readiness).
    async fn check(&self) -> Result<(), Error>;
}

/// What the real providers need from the cluster.
#[derive(Clone)]
pub struct Env {
    pub client: kube::Client,
    pub secrets: Secrets,
    pub ns: String,
    /// Bound for each remote call.
    pub timeout: Duration,
}

/// The provider of `spec.dns[j]`: the one match over the kinds. `None` for an entry that names no
/// kind (the CRD's CEL rule refuses one).
pub fn build(j: usize, r: &crd::DnsRecord, env: &Env) -> Option<Box<dyn DnsProvider>> {
    match r {
        crd::DnsRecord { rfc2136: Some(rfc), .. } => Some(Box::new(rfc2136::Rfc2136::new(j, rfc, env))),
        crd::DnsRecord { dns_endpoint: Some(de), .. } => {
            Some(Box::new(dns_endpoint::DnsEndpoint::new(j, de, env)))
        }
        crd::DnsRecord { rfc2136: None, dns_endpoint: None, .. } => None,
    }
}

/// The providers of every `spec.dns` entry a controller serving `here` acts on (its own site's
/// and the shared ones; all for a controller without `--site`), in order.
pub fn build_all(
    spec: &crd::DisasterRecoveryPairSpec,
    env: &Env,
    here: Option<&str>,
) -> Vec<Box<dyn DnsProvider>> {
    spec.dns
        .iter()
        .enumerate()
        .filter(|(_, r)| crd::acts_here(r.site.as_deref(), here))
        .filter_map(|(j, r)| build(j, r, env))
        .collect()
}

/// Why a record could not be moved. Every variant names the spec field; none carries the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the record does not parse (`field` is the record, the source names the key).
    #[error("{field}.{source}")]
    Config { field: String, source: rfc2136::Error },
    /// The TSIG Secret is missing or incomplete.
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{field}: {source}")]
    Server { field: String, source: rfc2136::Error },
    #[error("{field}: {server} still answers {answer:?} for {name} after the update")]
    NotConfirmed { field: String, server: SocketAddr, answer: Vec<IpAddr>, name: String },
    #[error("{field}: DNSEndpoint {name} carries epoch {held}, newer than ours ({ours})")]
    Stale { field: String, name: String, held: i64, ours: i64 },
    #[error("{field}: {source}")]
    Endpoint { field: String, source: dns_endpoint::Error },
}

impl Error {
    /// A problem of the spec or its Secrets (a malformed field, a refused key), which waiting
    /// alone does not fix.
    pub fn is_config(&self) -> bool {
        match self {
            Error::Config { .. } | Error::Secret(_) => true,
            Error::Server { source, .. } => matches!(source, rfc2136::Error::Config { .. }),
            _ => false,
        }
    }
}
