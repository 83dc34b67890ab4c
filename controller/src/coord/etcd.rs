//! The etcd witness: epoch compare-and-swap. Only this module talks to etcd.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, TlsOptions, Txn, TxnOp,
};

use super::{decode_epoch, encode_epoch, Swap};

/// Why the witness could not decide.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to the etcd witness at {endpoints}: {reason}")]
    Connect { endpoints: String, reason: String },
    #[error("etcd witness transaction on {key}: {reason}")]
    Txn { key: String, reason: String },
}

/// How to reach the witness beyond its endpoints: TLS material and an etcd user, each with the
/// spec field it came from (for the errors). Not `Debug`: it holds a private key and a password.
#[derive(Default)]
pub struct Access {
    /// `(field, ca.crt, tls.crt, tls.key)`, PEM.
    pub tls: Option<(String, String, String, String)>,
    /// `(field, username, password)`.
    pub user: Option<(String, String, String)>,
}

impl Access {
    /// Checks the material (PEM that parses, https endpoints with TLS) and builds the options.
    fn options(&self, endpoints: &[String], timeout: Duration) -> Result<ConnectOptions, String> {
        let mut opts = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
        if let Some((field, ca, cert, key)) = &self.tls {
            crate::tls::roots(ca)
                .map_err(|e| format!("{field} key ca.crt {e}: put the witness's CA there"))?;
            crate::tls::certs(cert)
                .map_err(|e| format!("{field} key tls.crt {e}: put the client certificate there"))?;
            crate::tls::private_key(key)
                .map_err(|e| format!("{field} key tls.key {e}: put the client key there"))?;
            if let Some((i, e)) = endpoints.iter().enumerate().find(|(_, e)| !e.starts_with("https://")) {
                return Err(format!(
                    "spec.coordination.etcd.endpoints[{i}] is {e:?} but {field} asks for TLS: use https:// endpoints"
                ));
            }
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .identity(Identity::from_pem(cert, key)),
            );
        } else if let Some((i, e)) = endpoints.iter().enumerate().find(|(_, e)| e.starts_with("https://")) {
            return Err(format!(
                "spec.coordination.etcd.endpoints[{i}] is {e:?} but spec.coordination.etcd.tlsSecret is not set: \
                 set tlsSecret (ca.crt, tls.crt, tls.key) or use an http:// endpoint"
            ));
        }
        if let Some((_, user, password)) = &self.user {
            opts = opts.with_user(user.as_str(), password.as_str());
        }
        Ok(opts)
    }

    /// An etcd error in words, naming the field to fix when it is an authentication or TLS failure.
    fn explain(&self, e: &etcd_client::Error) -> String {
        let tls_field = self.tls.as_ref().map(|t| t.0.as_str()).unwrap_or("spec.coordination.etcd.tlsSecret");
        if let Some(r) = crate::tls::find_rustls_error(e) {
            return crate::tls::explain(
                r,
                &format!("{tls_field} key ca.crt"),
                &format!("{tls_field} keys tls.crt and tls.key"),
                "spec.coordination.etcd.endpoints",
                "the endpoint's host",
            );
        }
        let text = chain(e);
        if let Some((field, _, _)) = &self.user {
            if ["authentication failed", "invalid auth token", "permission denied", "user name"]
                .iter()
                .any(|n| text.contains(n))
            {
                return format!("etcd refused the user in {field}: {text}: check its username and password");
            }
        }
        // With TLS 1.3 the server's verdict on our certificate arrives after the handshake: as an
        // alert, or only as a closed connection, inside the gRPC error.
        if self.tls.is_some() {
            if ["fatal alert: BadCertificate", "fatal alert: UnknownCA", "fatal alert: CertificateRequired"]
                .iter()
                .any(|n| text.contains(n))
            {
                return format!(
                    "the witness refused understudy's client certificate: set {tls_field} keys tls.crt and \
                     tls.key to a certificate issued by the CA the witness trusts ({text})"
                );
            }
            if text.contains("connection closed") || text.contains("reset") || text.contains("alert") {
                return format!(
                    "the witness closed the TLS connection, as it does for a client certificate it does not \
                     trust: check {tls_field} keys tls.crt and tls.key ({text})"
                );
            }
            if text.contains("certificate") {
                return format!("{text} (check {tls_field} key ca.crt)");
            }
        }
        text
    }
}

/// An error and its sources in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out.chars().take(500).collect()
}

/// A connection to the witness for one pair.
pub struct Witness {
    client: Client,
    key: String,
    access: Access,
}

impl Witness {
    /// Connects within `timeout`. `prefix`/`namespace`/`name` make the pair's key space.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
        access: Access,
    ) -> Result<Witness, Error> {
        let err = |reason| Error::Connect { endpoints: endpoints.join(","), reason };
        let opts = access.options(endpoints, timeout).map_err(err)?;
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| err(format!("no answer within {timeout:?}")))?
            .map_err(|e| err(access.explain(&e)))?;
        let key = format!("{}/{namespace}/{name}/epoch", prefix.trim_end_matches('/'));
        Ok(Witness { client, key, access })
    }

    /// The epoch etcd holds (0 when the key does not exist yet).
    pub async fn epoch(&mut self) -> Result<(i64, String, String), Error> {
        let resp = self
            .client
            .get(self.key.as_str(), None)
            .await
            .map_err(|e| Error::Txn { key: self.key.clone(), reason: self.access.explain(&e) })?;
        Ok(resp.kvs().first().and_then(|kv| kv.value_str().ok()).and_then(decode_epoch).unwrap_or((
            0,
            String::new(),
            String::new(),
        )))
    }

    /// Moves the epoch from `from` to `from + 1` for `holder`'s transition `transition`, in one
    /// transaction: compare the current value (or absence, when `from` is 0), then put. A retry of
    /// the same transition after a crash finds its own value and counts as won.
    pub async fn swap(&mut self, from: i64, holder: &str, transition: &str) -> Result<Swap, Error> {
        let to = from + 1;
        let new = encode_epoch(to, holder, transition);
        let (cur_epoch, cur_holder, cur_transition) = self.epoch().await?;
        if cur_epoch == to && cur_holder == holder && cur_transition == transition {
            return Ok(Swap::Won);
        }
        if cur_epoch != from {
            return Ok(Swap::Lost { epoch: cur_epoch, holder: cur_holder });
        }
        let cmp = if from == 0 && cur_holder.is_empty() {
            Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                self.key.as_str(),
                CompareOp::Equal,
                encode_epoch(from, &cur_holder, &cur_transition),
            )
        };
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(self.key.as_str(), new, None)]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| Error::Txn { key: self.key.clone(), reason: self.access.explain(&e) })?;
        if resp.succeeded() {
            return Ok(Swap::Won);
        }
        let (epoch, holder, _) = self.epoch().await?;
        Ok(Swap::Lost { epoch, holder })
    }
}
