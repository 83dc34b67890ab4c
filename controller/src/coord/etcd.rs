//! The etcd witness: epoch compare-and-swap and the primary site's leader key. Only this module
//! talks to etcd.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
// Tokio's clock (the real one in production): the keeper's tests run on a paused clock.
use tokio::time::Instant;

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
#[derive(Default, Clone)]
pub struct Access {
    /// `(field, ca.crt, tls.crt, tls.key)`, PEM.
    pub tls: Option<(String, String, String, String)>,
    /// `(field, username, password)`.
    pub user: Option<(String, String, String)>,
}

/// Why the witness's access settings cannot be used: a PEM that does not parse, or endpoints whose
/// scheme contradicts the TLS setting. Each names the field to fix.
#[derive(Debug, thiserror::Error)]
enum AccessError {
    #[error("{field} key {key} {source}: put {what} there")]
    Pem { field: String, key: &'static str, source: crate::tls::PemError, what: &'static str },
    #[error("spec.coordination.etcd.endpoints[{index}] is {endpoint:?} but {field} asks for TLS: use https:// endpoints")]
    PlainEndpoint { index: usize, endpoint: String, field: String },
    #[error(
        "spec.coordination.etcd.endpoints[{index}] is {endpoint:?} but spec.coordination.etcd.tlsSecret is not set: \
         set tlsSecret (ca.crt, tls.crt, tls.key) or use an http:// endpoint"
    )]
    TlsEndpoint { index: usize, endpoint: String },
}

impl Access {
    /// Checks the material (PEM that parses, https endpoints with TLS) and builds the options.
    fn options(&self, endpoints: &[String], timeout: Duration) -> Result<ConnectOptions, AccessError> {
        let mut opts = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
        if let Some((field, ca, cert, key)) = &self.tls {
            let pem = |key, what| move |source| AccessError::Pem { field: field.clone(), key, source, what };
            crate::tls::roots(ca).map_err(pem("ca.crt", "the witness's CA"))?;
            crate::tls::certs(cert).map_err(pem("tls.crt", "the client certificate"))?;
            crate::tls::private_key(key).map_err(pem("tls.key", "the client key"))?;
            if let Some((i, e)) = endpoints.iter().enumerate().find(|(_, e)| !e.starts_with("https://")) {
                return Err(AccessError::PlainEndpoint {
                    index: i,
                    endpoint: e.clone(),
                    field: field.clone(),
                });
            }
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .identity(Identity::from_pem(cert, key)),
            );
        } else if let Some((i, e)) = endpoints.iter().enumerate().find(|(_, e)| e.starts_with("https://")) {
            return Err(AccessError::TlsEndpoint { index: i, endpoint: e.clone() });
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

/// What the witness holds for a pair, read at once (`Witness::snapshot`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// `(epoch, holder, transition id)`.
    pub epoch: (i64, String, String),
    /// `(site, spec JSON)` as each site's controller published it.
    pub specs: Vec<(String, String)>,
    /// The last finished transition's journal (JSON), as the controller that ran it published it.
    pub journal: Option<String>,
    /// The sites whose copy of the pair is paused (`dr.understudy.dev/paused=true`).
    pub paused: Vec<String>,
    /// The leader key's value (`<epoch> <site>`), when somebody holds it.
    pub leader: Option<String>,
}

/// A watch on every key of one pair (`Witness::watch`): it says that something changed, never
/// what — the reader reads the keys again, so a missed or coalesced event costs nothing.
pub struct Changes {
    stream: WatchStream,
}

impl Changes {
    /// Waits for the next change; an error when the watch broke (canceled, compacted, the
    /// connection lost), after which it is of no further use.
    pub async fn next(&mut self) -> Result<(), Error> {
        let broke = |reason: String| Error::Txn { key: "watch".into(), reason };
        loop {
            match self.stream.message().await {
                Ok(Some(resp)) if resp.canceled() => return Err(broke("the watch was canceled".into())),
                Ok(Some(resp)) if resp.events().is_empty() => continue,
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(broke("the watch stream ended".into())),
                Err(e) => return Err(broke(e.to_string())),
            }
        }
    }
}

/// A connection to the witness for one pair.
pub struct Witness {
    client: Client,
    /// `<prefix>/<namespace>/<name>/epoch`
    key: String,
    /// `<prefix>/<namespace>/<name>/leader`: `<epoch> <site>`, bound to the primary site's lease.
    leader_key: String,
    access: Access,
}

/// Who holds the leader key, when somebody does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub epoch: i64,
    pub holder: String,
    /// The etcd lease the key is bound to.
    pub lease: i64,
}

/// Whether an epoch swap may break a leader key that is still alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderKey {
    /// An unplanned failover: the primary site's lease must have expired first.
    MustBeAbsent,
    /// A planned switchover or a failover forced by an operator: the key is deleted with the swap,
    /// and the old primary's keeper, seeing the epoch move, fences its site.
    Break,
}

/// The outcome of taking (or re-taking) the leader key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The key is ours, bound to the lease given.
    Held,
    /// The epoch is no longer the one we serve: somebody promoted the other site.
    EpochMoved { epoch: i64, holder: String },
    /// Another site holds the key.
    HeldByOther { holder: String },
}

/// The outcome of one keepalive round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// etcd confirmed the lease and the key is still ours; `sent` starts the self-fence clock.
    Confirmed { sent: Instant },
    /// The lease (and with it the key) is gone.
    Expired,
    /// Somebody promoted the other site.
    EpochMoved { epoch: i64, holder: String },
    /// Another site holds the key.
    HeldByOther { holder: String },
}

/// A live keepalive stream for one lease.
pub struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
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
        let opts = access.options(endpoints, timeout).map_err(|e| err(e.to_string()))?;
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| err(format!("no answer within {timeout:?}")))?
            .map_err(|e| err(access.explain(&e)))?;
        let base = format!("{}/{namespace}/{name}", prefix.trim_end_matches('/'));
        Ok(Witness { client, key: format!("{base}/epoch"), leader_key: format!("{base}/leader"), access })
    }

    fn txn_err(&self, key: &str) -> impl Fn(etcd_client::Error) -> Error + '_ {
        let key = key.to_string();
        move |e| Error::Txn { key: key.clone(), reason: self.access.explain(&e) }
    }

    /// The epoch key's raw value and the leader key, read in one request.
    async fn read_both(&mut self) -> Result<(Option<String>, Option<Leader>), Error> {
        let base = self.key.trim_end_matches("epoch").to_string();
        let resp = self
            .client
            .get(base.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(self.txn_err(&base))?;
        let mut epoch = None;
        let mut leader = None;
        for kv in resp.kvs() {
            let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else { continue };
            if k == self.key {
                epoch = Some(v.to_string());
            } else if k == self.leader_key {
                let mut it = v.splitn(2, ' ');
                if let (Some(Ok(e)), Some(h)) = (it.next().map(str::parse), it.next()) {
                    leader = Some(Leader { epoch: e, holder: h.to_string(), lease: kv.lease() });
                }
            }
        }
        Ok((epoch, leader))
    }

    /// Publishes whether `site`'s copy of the pair is paused (`<base>/paused/<site>`), so that the
    /// other site's controller holds its automation too.
    pub async fn put_paused(&mut self, site: &str, paused: bool) -> Result<(), Error> {
        let key = format!("{}paused/{site}", self.key.trim_end_matches("epoch"));
        if paused {
            self.client.put(key.as_str(), "true", None).await.map_err(self.txn_err(&key))?;
        } else {
            self.client.delete(key.as_str(), None).await.map_err(self.txn_err(&key))?;
        }
        Ok(())
    }

    /// Publishes a finished transition's journal (`<base>/journal`, JSON).
    pub async fn put_journal(&mut self, journal: &str) -> Result<(), Error> {
        let key = format!("{}journal", self.key.trim_end_matches("epoch"));
        self.client.put(key.as_str(), journal, None).await.map_err(self.txn_err(&key))?;
        Ok(())
    }

    /// The epoch record, every site's published spec (`<base>/spec/<site>`) and the last published
    /// journal, in one read.
    pub async fn snapshot(&mut self) -> Result<Snapshot, Error> {
        let base = self.key.trim_end_matches("epoch").to_string();
        let resp = self
            .client
            .get(base.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(self.txn_err(&base))?;
        let mut snap = Snapshot::default();
        let paused_prefix = format!("{base}paused/");
        let spec_prefix = format!("{base}spec/");
        let journal_key = format!("{base}journal");
        for kv in resp.kvs() {
            let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else { continue };
            if k == self.key {
                snap.epoch = decode_epoch(v).unwrap_or(snap.epoch);
            } else if let Some(site) = k.strip_prefix(spec_prefix.as_str()) {
                snap.specs.push((site.to_string(), v.to_string()));
            } else if k == journal_key {
                snap.journal = Some(v.to_string());
            } else if let Some(site) = k.strip_prefix(paused_prefix.as_str()) {
                snap.paused.push(site.to_string());
            } else if k == self.leader_key {
                snap.leader = Some(v.to_string());
            }
        }
        Ok(snap)
    }

    /// Watches every key of the pair (epoch, leader key, specs, journal, pauses, claims).
    pub async fn watch(&mut self) -> Result<Changes, Error> {
        let base = self.key.trim_end_matches("epoch").to_string();
        let stream = self
            .client
            .watch(base.as_str(), Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(self.txn_err(&base))?;
        Ok(Changes { stream })
    }

    /// Publishes the spec `site`'s controller reads (`<base>/spec/<site>`), for the other site's
    /// controller to compare with its own copy.
    pub async fn put_spec(&mut self, site: &str, spec: &str) -> Result<(), Error> {
        let key = format!("{}spec/{site}", self.key.trim_end_matches("epoch"));
        self.client.put(key.as_str(), spec, None).await.map_err(self.txn_err(&key))?;
        Ok(())
    }

    /// Claims a command for `me` (`<base>/commands/<id>`, kept for `ttl`): `None` when the claim is
    /// ours (new, or ours already), else the other claimant's value. With one cluster per site the
    /// same annotation may be put on both copies of a pair; only the claimant acts on it.
    pub async fn claim_command(
        &mut self,
        id: &str,
        me: &str,
        ttl: Duration,
    ) -> Result<Option<String>, Error> {
        let key = format!("{}commands/{id}", self.key.trim_end_matches("epoch"));
        let resp = self.client.get(key.as_str(), None).await.map_err(self.txn_err(&key))?;
        if let Some(v) = resp.kvs().first().and_then(|kv| kv.value_str().ok()) {
            return Ok((v != me).then(|| v.to_string()));
        }
        let lease = self.grant(ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), me, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.client.txn(txn).await.map_err(self.txn_err(&key))?;
        if resp.succeeded() {
            return Ok(None);
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op {
                if let Some(v) = g.kvs().first().and_then(|kv| kv.value_str().ok()) {
                    return Ok((v != me).then(|| v.to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Who holds the leader key now (`None` when its lease expired or nobody ever took it).
    pub async fn leader(&mut self) -> Result<Option<Leader>, Error> {
        Ok(self.read_both().await?.1)
    }

    /// Seconds left on a lease (≤ 0 when it expired).
    pub async fn lease_ttl_left(&mut self, lease: i64) -> Result<i64, Error> {
        let r = self.client.lease_time_to_live(lease, None).await.map_err(self.txn_err("lease"))?;
        Ok(r.ttl())
    }

    /// A new lease of `ttl` (whole seconds, rounded up).
    pub async fn grant(&mut self, ttl: Duration) -> Result<i64, Error> {
        let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        Ok(self.client.lease_grant(secs, None).await.map_err(self.txn_err("lease grant"))?.id())
    }

    /// Opens the keepalive stream of `lease`.
    pub async fn keep_alive(&mut self, lease: i64) -> Result<KeepAlive, Error> {
        let (keeper, stream) =
            self.client.lease_keep_alive(lease).await.map_err(self.txn_err("lease keepalive"))?;
        Ok(KeepAlive { keeper, stream })
    }

    /// Takes the leader key for `holder` serving `epoch`, bound to `lease`, in one transaction
    /// that also checks the epoch: the key can only be taken (or re-taken after the lease
    /// expired) while nobody has promoted the other site.
    pub async fn acquire(&mut self, epoch: i64, holder: &str, lease: i64) -> Result<Acquire, Error> {
        let (raw, leader) = self.read_both().await?;
        let (cur, cur_holder, _) =
            raw.as_deref().and_then(decode_epoch).unwrap_or((0, String::new(), String::new()));
        if cur != epoch {
            return Ok(Acquire::EpochMoved { epoch: cur, holder: cur_holder });
        }
        let mine = format!("{epoch} {holder}");
        let epoch_cmp = match &raw {
            Some(v) => Compare::value(self.key.as_str(), CompareOp::Equal, v.as_str()),
            None => Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0),
        };
        let leader_cmp = match &leader {
            None => Compare::create_revision(self.leader_key.as_str(), CompareOp::Equal, 0),
            Some(l) if l.holder == holder && l.epoch == epoch => {
                if l.lease == lease {
                    return Ok(Acquire::Held);
                }
                Compare::value(self.leader_key.as_str(), CompareOp::Equal, mine.as_str())
            }
            Some(l) => return Ok(Acquire::HeldByOther { holder: l.holder.clone() }),
        };
        let put = TxnOp::put(self.leader_key.as_str(), mine, Some(PutOptions::new().with_lease(lease)));
        let txn = Txn::new().when([epoch_cmp, leader_cmp]).and_then([put]);
        let resp = self.client.txn(txn).await.map_err(self.txn_err(&self.leader_key.clone()))?;
        if resp.succeeded() {
            return Ok(Acquire::Held);
        }
        // Something moved between the read and the transaction: report what.
        let (raw, leader) = self.read_both().await?;
        let (cur, cur_holder, _) =
            raw.as_deref().and_then(decode_epoch).unwrap_or((0, String::new(), String::new()));
        if cur != epoch {
            return Ok(Acquire::EpochMoved { epoch: cur, holder: cur_holder });
        }
        Ok(Acquire::HeldByOther { holder: leader.map(|l| l.holder).unwrap_or_default() })
    }

    /// One keepalive round on `ka`: sends, waits for etcd's answer within `timeout`, then reads the
    /// epoch and leader key. Returns the instant the keepalive was *sent* when etcd confirmed the
    /// lease (TTL > 0) and we still hold the key for `epoch`; that instant starts the self-fence clock.
    pub async fn renew(
        &mut self,
        ka: &mut KeepAlive,
        epoch: i64,
        holder: &str,
        timeout: Duration,
    ) -> Result<Renewal, Error> {
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            ka.keeper.keep_alive().await?;
            ka.stream.message().await
        })
        .await
        .map_err(|_| Error::Txn {
            key: self.leader_key.clone(),
            reason: format!("keepalive: no answer within {timeout:?}"),
        })?
        .map_err(self.txn_err("lease keepalive"))?;
        let ttl = answer.map(|r| r.ttl()).unwrap_or(0);
        if ttl <= 0 {
            return Ok(Renewal::Expired);
        }
        let (raw, leader) = tokio::time::timeout(timeout, self.read_both()).await.map_err(|_| {
            Error::Txn { key: self.leader_key.clone(), reason: format!("read: no answer within {timeout:?}") }
        })??;
        let (cur, cur_holder, _) =
            raw.as_deref().and_then(decode_epoch).unwrap_or((0, String::new(), String::new()));
        if cur != epoch {
            return Ok(Renewal::EpochMoved { epoch: cur, holder: cur_holder });
        }
        match leader {
            Some(l) if l.holder == holder && l.epoch == epoch => Ok(Renewal::Confirmed { sent }),
            Some(l) => Ok(Renewal::HeldByOther { holder: l.holder }),
            None => Ok(Renewal::Expired),
        }
    }

    /// Deletes the leader key if it is ours (a primary site handing over cleanly).
    pub async fn release(&mut self, epoch: i64, holder: &str, note: Option<&str>) -> Result<(), Error> {
        let mine = format!("{epoch} {holder}");
        let mut ops = vec![TxnOp::delete(self.leader_key.as_str(), None)];
        if let Some(note) = note {
            // Why the key went early, for the standby's transition (`released_note`).
            ops.push(TxnOp::put(self.released_key().as_str(), format!("{mine} {note}"), None));
        }
        let txn =
            Txn::new().when([Compare::value(self.leader_key.as_str(), CompareOp::Equal, mine)]).and_then(ops);
        self.client.txn(txn).await.map_err(self.txn_err(&self.leader_key.clone()))?;
        Ok(())
    }

    /// `<prefix>/<ns>/<name>/released`: `<epoch> <site> <why>`, written with an early release of the
    /// leader key (a site fence confirmed by the site's hook).
    fn released_key(&self) -> String {
        format!("{}released", self.key.trim_end_matches("epoch"))
    }

    /// The last early release of the leader key for `epoch` (`<site> <why>`), if any.
    pub async fn released_note(&mut self, epoch: i64) -> Result<Option<String>, Error> {
        let key = self.released_key();
        let resp = self.client.get(key.as_str(), None).await.map_err(self.txn_err(&key))?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok())
            .and_then(|v| v.strip_prefix(&format!("{epoch} ")).map(str::to_string)))
    }

    /// Registers `me` as the controller of `site` for this pair, on a fresh lease of `ttl`
    /// (`<prefix>/<ns>/<name>/controllers/<site>`). Returns the other registration when another
    /// controller already holds it, with the lease it is bound to (a live controller re-registers
    /// on a fresh lease every round; a crashed one's lease only runs out).
    pub async fn register_site(
        &mut self,
        site: &str,
        me: &str,
        ttl: Duration,
    ) -> Result<Option<(String, i64)>, Error> {
        let base = self.key.trim_end_matches("epoch");
        let key = format!("{base}controllers/{site}");
        let resp = self.client.get(key.as_str(), None).await.map_err(self.txn_err(&key))?;
        let held = resp.kvs().first().and_then(|kv| kv.value_str().ok().map(|v| (v.to_string(), kv.lease())));
        if let Some(other) = held.filter(|(v, _)| v != me) {
            return Ok(Some(other));
        }
        let lease = self.grant(ttl).await?;
        // Put when absent or still ours; a controller that registered in between wins.
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), me, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::put(
                key.as_str(),
                me,
                Some(PutOptions::new().with_lease(lease).with_prev_key()),
            )]);
        let resp = self.client.txn(txn).await.map_err(self.txn_err(&key))?;
        if !resp.succeeded() {
            // It existed: it was ours (read above), or somebody else's that we just overwrote in
            // a race; say so either way.
            for op in resp.op_responses() {
                if let etcd_client::TxnOpResponse::Put(p) = op {
                    if let Some(prev) = p.prev_key() {
                        match prev.value_str() {
                            Ok(v) if v != me => return Ok(Some((v.to_string(), prev.lease()))),
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(None)
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
    /// transaction: compare the current value (or absence, when `from` is 0) and, for an unplanned
    /// failover, the absence of the leader key; then put (and delete the leader key). A retry of
    /// the same transition after a crash finds its own value and counts as won.
    pub async fn swap(
        &mut self,
        from: i64,
        holder: &str,
        transition: &str,
        leader: LeaderKey,
    ) -> Result<Swap, Error> {
        let to = from.checked_add(1).ok_or_else(|| Error::Txn {
            key: self.key.clone(),
            reason: format!("epoch {from} cannot be moved on"),
        })?;
        let new = encode_epoch(to, holder, transition);
        let (cur_epoch, cur_holder, cur_transition) = self.epoch().await?;
        // The same transition already moved it: a retry after a crash, or the other site's controller
        // running the same journal step (the journal, not the holder, owns the transition).
        if cur_epoch == to && cur_transition == transition {
            return Ok(Swap::Won);
        }
        if cur_epoch != from {
            return Ok(Swap::Lost { epoch: cur_epoch, holder: cur_holder, transition: cur_transition });
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
        let mut when = vec![cmp];
        if leader == LeaderKey::MustBeAbsent {
            when.push(Compare::create_revision(self.leader_key.as_str(), CompareOp::Equal, 0));
        }
        let ops = [TxnOp::put(self.key.as_str(), new, None), TxnOp::delete(self.leader_key.as_str(), None)];
        let txn = Txn::new().when(when).and_then(ops);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| Error::Txn { key: self.key.clone(), reason: self.access.explain(&e) })?;
        if resp.succeeded() {
            return Ok(Swap::Won);
        }
        let (raw, leader_now) = self.read_both().await?;
        let (epoch, cur_holder, cur_transition) =
            raw.as_deref().and_then(decode_epoch).unwrap_or((0, String::new(), String::new()));
        if epoch == from {
            if let Some(l) = leader_now {
                let ttl = self.lease_ttl_left(l.lease).await.unwrap_or(-1);
                return Ok(Swap::LeaderAlive { holder: l.holder, ttl_left_s: ttl });
            }
        }
        Ok(Swap::Lost { epoch, holder: cur_holder, transition: cur_transition })
    }
}
