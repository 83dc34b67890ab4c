//! The one way understudy connects to a site's PostgreSQL server: `resolve` reads the site's
//! Secrets (credentials, CA, client certificate) into a `Target`, `connect` opens the connection.
//! Probes, fencing, promotion, the epoch marker, switchover catch-up, rejoin and readiness all go
//! through here, so every connection honours `spec.sites[*].postgres.tls`.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use tokio_postgres::{config::SslMode, Client, NoTls};

use super::tls::{self, Material, Part};
use crate::{
    crd::{conditions::reasons, PostgresTlsMode, Site},
    secrets::{SecretError, Secrets},
};

/// Why a site's connection settings cannot be built: a configuration problem, never evidence that
/// the site is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{field}: {reason}")]
    Tls { field: String, reason: String },
}

impl ResolveError {
    /// The condition (and Event) reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Secret(e) => e.reason(),
            ResolveError::Tls { .. } => reasons::TLS_CONFIG_INVALID,
        }
    }
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// TLS was refused (wrong CA, another name, no TLS on the server, client certificate
    /// rejected): a configuration problem, reported and never counted as a failed probe.
    Tls(String),
    /// Anything else: refused, reset, authentication, timeout.
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tls(m) | ConnectError::Other(m) => f.write_str(m),
        }
    }
}

/// Everything needed to connect to one site. Not `Debug`: it holds the credentials.
pub struct Target {
    cfg: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    fields: Fields,
    fingerprint: u64,
}

struct Fields {
    base: String,
    mode: PostgresTlsMode,
    host: String,
}

impl Target {
    /// Changes whenever anything that shapes the connection changes (host, credentials, TLS
    /// material), so a cached connection is replaced after a rotation.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Reads site `i`'s Secrets and builds its connection settings.
pub async fn resolve(
    secrets: &Secrets,
    i: usize,
    site: &Site,
    timeout: Duration,
) -> Result<(Target, Credentials), ResolveError> {
    let pg = &site.postgres;
    let base = format!("spec.sites[{i}].postgres");
    let d = secrets
        .get(&pg.credentials_secret.name, &["username", "password"], &format!("{base}.credentialsSecret"))
        .await?;
    let creds = Credentials { username: d.value("username").into(), password: d.value("password").into() };
    let mode = pg.tls.as_ref().map(|t| t.mode).unwrap_or(PostgresTlsMode::Disable);
    let mut material = Material { mode, ca: None, client: None };
    if let Some(t) = pg.tls.as_ref().filter(|_| mode != PostgresTlsMode::Disable) {
        if let Some(ca) = &t.ca_secret {
            let d = secrets.get(&ca.name, &[&ca.key], &format!("{base}.tls.caSecret")).await?;
            material.ca = Some(d.value(&ca.key).to_string());
        }
        if let Some(c) = &t.client_cert_secret {
            let d = secrets
                .get(&c.name, &["tls.crt", "tls.key"], &format!("{base}.tls.clientCertSecret"))
                .await?;
            material.client = Some((d.value("tls.crt").to_string(), d.value("tls.key").to_string()));
        }
    }
    let tls = if mode == PostgresTlsMode::Disable {
        None
    } else {
        let config = tls::client_config(&material).map_err(|(part, reason)| {
            let field = match (part, pg.tls.as_ref().and_then(|t| t.ca_secret.as_ref())) {
                (Part::Ca, Some(ca)) => format!("{base}.tls.caSecret (Secret {}, key {})", ca.name, ca.key),
                (Part::Ca, None) => format!("{base}.tls.caSecret"),
                (Part::ClientCert, _) => format!("{base}.tls.clientCertSecret key tls.crt"),
                (Part::ClientKey, _) => format!("{base}.tls.clientCertSecret key tls.key"),
            };
            ResolveError::Tls { field, reason: format!("{reason}: put a valid PEM there") }
        })?;
        Some(tls::make_connect(config))
    };
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&pg.host)
        .port(pg.port)
        .dbname(&pg.database)
        .user(&creds.username)
        .password(&creds.password)
        .application_name("understudy")
        .connect_timeout(timeout)
        // Require, never Prefer: with TLS asked for, a server without it is an error.
        .ssl_mode(if tls.is_some() { SslMode::Require } else { SslMode::Disable });
    let mut h = DefaultHasher::new();
    (&pg.host, pg.port, &pg.database, &creds.username, &creds.password, mode, &material.ca, &material.client)
        .hash(&mut h);
    let fields = Fields { base, mode, host: pg.host.clone() };
    Ok((Target { cfg, tls, fields, fingerprint: h.finish() }, creds))
}

/// Opens a connection (TLS as the site asks) and drives it on a background task.
pub async fn connect(t: &Target) -> Result<Client, ConnectError> {
    let res = match &t.tls {
        None => t.cfg.connect(NoTls).await.map(|(client, conn)| {
            tokio::spawn(async move {
                // The connection ends with an error when the server goes away; the next query reports it.
                let _ = conn.await;
            });
            client
        }),
        Some(make) => t.cfg.connect(make.clone()).await.map(|(client, conn)| {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }),
    };
    res.map_err(|e| classify(&e, &t.fields))
}

fn classify(e: &tokio_postgres::Error, f: &Fields) -> ConnectError {
    use std::error::Error as _;
    let Some(src) = e.source() else { return ConnectError::Other(describe(e)) };
    if let Some(r) = crate::tls::find_rustls_error(src) {
        let ca = format!("{}.tls.caSecret", f.base);
        let client = format!("{}.tls.clientCertSecret", f.base);
        let host = format!("{}.host", f.base);
        let why = crate::tls::explain(r, &ca, &client, &host, &f.host);
        return ConnectError::Tls(format!("{}.tls (mode {:?}): {why}", f.base, f.mode));
    }
    if e.to_string().contains("TLS") && src.to_string() == "server does not support TLS" {
        return ConnectError::Tls(format!(
            "{}.tls (mode {:?}): the server does not accept TLS connections: turn on ssl on the \
             server, or set {}.tls.mode to Disable to connect in plaintext",
            f.base, f.mode, f.base
        ));
    }
    ConnectError::Other(describe(e))
}

/// Credentials for one site; not `Debug`, so they cannot end up in a log line.
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A PostgreSQL error in one line: the server's message when there is one, else the client's.
/// Neither includes the password (tokio-postgres never echoes it).
pub fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

// At the end of the file: `module_graph` reads a file only up to its first test attribute.
#[cfg(test)]
impl Target {
    /// A target nobody connects to: tests whose database is a fake still need a `Target`.
    pub(crate) fn unreachable() -> Target {
        let fields =
            Fields { base: "test".into(), mode: PostgresTlsMode::Disable, host: "unreachable".into() };
        Target { cfg: tokio_postgres::Config::new(), tls: None, fields, fingerprint: 0 }
    }
}
