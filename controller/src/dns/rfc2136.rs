//! RFC 2136 with TSIG. The update replaces the whole A (or AAAA) RRset of the name in one message
//! (delete RRset + add), so there is never a moment with two answers or none. `current` asks the
//! same authoritative server, so "done" means the server answers the new address.

use std::{net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::{
    dnssec::{rdata::tsig::TsigAlgorithm, tsig::TSigner},
    op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage},
    rr::{rdata, DNSClass, Name, RData, Record, RecordType},
    runtime::TokioRuntimeProvider,
    tcp::TcpClientStream,
    udp::UdpClientStream,
    xfer::DnsHandle,
};

/// The RFC 2136 provider of `spec.dns[j].rfc2136`.
pub struct Rfc2136 {
    index: usize,
    spec: crate::crd::Rfc2136Record,
    secrets: crate::secrets::Secrets,
    timeout: Duration,
}

impl Rfc2136 {
    pub fn new(index: usize, spec: &crate::crd::Rfc2136Record, env: &super::Env) -> Rfc2136 {
        Rfc2136 { index, spec: spec.clone(), secrets: env.secrets.clone(), timeout: env.timeout }
    }

    fn field(&self) -> String {
        format!("spec.dns[{}].rfc2136", self.index)
    }

    fn config(&self, source: Error) -> super::Error {
        super::Error::Config { field: self.field(), source }
    }

    fn server(&self, source: Error) -> super::Error {
        super::Error::Server { field: self.field(), source }
    }
}

#[async_trait]
impl super::DnsProvider for Rfc2136 {
    fn describe(&self) -> String {
        format!("{}.{} at {}", self.spec.name, self.spec.zone, self.spec.server)
    }

    /// Asks the server first and updates only when it answers something else; then asks until it
    /// answers the new address.
    async fn point_at(&self, to: &super::Target<'_>, _epoch: i64) -> Result<String, super::Error> {
        let (rfc, timeout, addr) = (&self.spec, self.timeout, to.addr);
        let server = server_addr(&rfc.server).map_err(|e| self.config(e))?;
        let name = fqdn(&rfc.name, &rfc.zone).map_err(|e| self.config(e))?;
        let now = current(server, &name, timeout).await.map_err(|e| self.server(e))?;
        if now != [addr] {
            let key = key_from_secret(&self.secrets, rfc, &self.field()).await?;
            let ttl = u32::try_from(rfc.ttl).unwrap_or(30);
            replace(server, &rfc.zone, &name, ttl, addr, &key, timeout).await.map_err(|e| self.server(e))?;
            // Confirm: the authoritative server must answer the new address.
            let deadline = tokio::time::Instant::now() + timeout.max(Duration::from_secs(5));
            loop {
                let answer = current(server, &name, timeout).await.map_err(|e| self.server(e))?;
                if answer == [addr] {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(super::Error::NotConfirmed {
                        field: self.field(),
                        server,
                        answer,
                        name: name.to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(format!("{name} A {addr} (confirmed at {server})"))
    }

    /// A signed no-op update: the server accepts the key for the zone.
    async fn check(&self) -> Result<(), super::Error> {
        let server = server_addr(&self.spec.server).map_err(|e| self.config(e))?;
        let key = key_from_secret(&self.secrets, &self.spec, &self.field()).await?;
        check_key(server, &self.spec.zone, &key, self.timeout).await.map_err(|e| self.server(e))
    }
}

/// A TSIG key. Not `Debug`: it holds the secret.
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    /// The shared secret, base64 as BIND's `tsig-keygen` prints it.
    pub secret_b64: String,
}

/// Why an update or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DNS server {server}: {reason}")]
    Server { server: String, reason: String },
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
}

/// Resolves `host:port` (an IP literal with port) to a socket address.
pub fn server_addr(server: &str) -> Result<SocketAddr, Error> {
    server
        .parse::<SocketAddr>()
        .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| Error::Config {
            field: "server".into(),
            reason: format!("{server:?} is not IP:port, e.g. 192.0.2.53:53"),
        })
}

/// The fully qualified name of `name` in `zone`.
pub fn fqdn(name: &str, zone: &str) -> Result<Name, Error> {
    let zone = zone.trim_end_matches('.');
    let full = if name == "@" || name.is_empty() { format!("{zone}.") } else { format!("{name}.{zone}.") };
    Name::from_ascii(&full)
        .map_err(|e| Error::Config { field: "name".into(), reason: format!("{full:?}: {e}") })
}

fn server_err(server: SocketAddr, reason: impl std::fmt::Display) -> Error {
    Error::Server { server: server.to_string(), reason: reason.to_string() }
}

/// The addresses the authoritative server answers for `name` (A and AAAA), asked over UDP.
pub async fn current(server: SocketAddr, name: &Name, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
    let stream =
        UdpClientStream::builder(server, TokioRuntimeProvider::new()).with_timeout(Some(timeout)).build();
    let (mut client, bg) = Client::connect(stream).await.map_err(|e| server_err(server, e))?;
    let bg = tokio::spawn(bg);
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let resp = tokio::time::timeout(timeout, client.query(name.clone(), DNSClass::IN, rtype))
            .await
            .map_err(|_| server_err(server, format!("no answer within {timeout:?}")))?
            .map_err(|e| server_err(server, e))?;
        for r in resp.answers() {
            match r.data() {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    bg.abort();
    Ok(out)
}

/// Replaces the address records of `name` with `addr` in one signed update.
pub async fn replace(
    server: SocketAddr,
    zone: &str,
    name: &Name,
    ttl: u32,
    addr: IpAddr,
    key: &TsigKey,
    timeout: Duration,
) -> Result<(), Error> {
    let rtype = if addr.is_ipv4() { RecordType::A } else { RecordType::AAAA };
    let mut msg = update_message(zone)?;
    // Delete the RRset (class ANY, TTL 0, no RDATA), then add the new record.
    let mut delete = Record::update0(name.clone(), 0, rtype);
    delete.set_dns_class(DNSClass::ANY);
    msg.add_update(delete);
    let rdata = match addr {
        IpAddr::V4(a) => RData::A(rdata::A(a)),
        IpAddr::V6(a) => RData::AAAA(rdata::AAAA(a)),
    };
    msg.add_update(Record::from_rdata(name.clone(), ttl, rdata));
    signed_update(server, zone, key, timeout, msg).await
}

/// An UPDATE message for `zone` with nothing in it yet.
fn update_message(zone: &str) -> Result<Message, Error> {
    let mut msg = Message::new();
    msg.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    let mut zq = Query::new();
    zq.set_name(fqdn("@", zone)?).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
    msg.add_zone(zq);
    Ok(msg)
}

/// Sends `msg` signed with `key` over TCP and maps the answer: NOERROR is success, anything else
/// an error saying what the server meant.
async fn signed_update(
    server: SocketAddr,
    zone: &str,
    key: &TsigKey,
    timeout: Duration,
    msg: Message,
) -> Result<(), Error> {
    let signer = signer(key)?;
    let (stream, handle) = TcpClientStream::new(server, None, Some(timeout), TokioRuntimeProvider::new());
    let (client, bg) = Client::with_timeout(stream, handle, timeout, Some(Arc::new(signer)))
        .await
        .map_err(|e| server_err(server, e))?;
    let bg = tokio::spawn(bg);
    let resp = tokio::time::timeout(timeout, client.send(msg).next()).await;
    bg.abort();
    let resp = resp
        .map_err(|_| server_err(server, format!("no answer to the update within {timeout:?}")))?
        .ok_or_else(|| server_err(server, "connection closed without an answer"))?
        .map_err(|e| server_err(server, describe_proto(&e)))?;
    match resp.response_code() {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth => Err(server_err(
            server,
            "NOTAUTH: the server rejected the TSIG key (wrong name, algorithm or secret)",
        )),
        ResponseCode::Refused => Err(server_err(
            server,
            format!("REFUSED: the server does not accept updates for zone {zone} with this key"),
        )),
        ResponseCode::NotZone => Err(server_err(server, format!("NOTZONE: the name is not in zone {zone}"))),
        other => Err(server_err(server, format!("update answered {other}"))),
    }
}

/// Builds the TSIG signer for `key`; errors name the Secret key to fix.
fn signer(key: &TsigKey) -> Result<TSigner, Error> {
    let algorithm = match key.algorithm.to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(Error::Config {
                field: "tsigSecret.algorithm".into(),
                reason: format!("{other:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"),
            })
        }
    };
    let secret = base64_decode(key.secret_b64.trim()).ok_or_else(|| Error::Config {
        field: "tsigSecret.secret".into(),
        reason: format!(
            "not valid base64 ({} characters; base64 comes in groups of 4, padded with =): copy the \
             secret from tsig-keygen's output whole",
            key.secret_b64.trim().len()
        ),
    })?;
    if secret.len() < MIN_TSIG_KEY_BYTES {
        return Err(Error::Config {
            field: "tsigSecret.secret".into(),
            reason: format!(
                "the key is {} bytes long; use at least {MIN_TSIG_KEY_BYTES} (`tsig-keygen -a {}` makes a \
                 fitting one, and the server must hold the same)",
                secret.len(),
                key.algorithm.to_ascii_lowercase()
            ),
        });
    }
    let key_name = Name::from_ascii(&key.name).map_err(|e| Error::Config {
        field: "tsigSecret.name".into(),
        reason: format!("invalid key name: {e}"),
    })?;
    TSigner::new(secret, algorithm, key_name, 300)
        .map_err(|e| Error::Config { field: "tsigSecret".into(), reason: e.to_string() })
}

/// Proves the server accepts `key` without changing anything: a TSIG-signed UPDATE for the zone
/// whose only content is the prerequisite "the zone's SOA exists" (true, and it changes nothing).
/// Only updates are signed, so a plain query would prove nothing. A wrong key is answered NOTAUTH.
pub async fn check_key(
    server: SocketAddr,
    zone: &str,
    key: &TsigKey,
    timeout: Duration,
) -> Result<(), Error> {
    let mut msg = update_message(zone)?;
    let mut exists = Record::update0(fqdn("@", zone)?, 0, RecordType::SOA);
    exists.set_dns_class(DNSClass::ANY);
    msg.add_pre_requisite(exists);
    signed_update(server, zone, key, timeout, msg).await
}

/// The TSIG key in the Secret `rfc.tsigSecret`; `field` names the record for error messages.
pub async fn key_from_secret(
    secrets: &crate::secrets::Secrets,
    rfc: &crate::crd::Rfc2136Record,
    field: &str,
) -> Result<TsigKey, crate::secrets::SecretError> {
    let k = secrets
        .get(&rfc.tsig_secret.name, &["name", "algorithm", "secret"], &format!("{field}.tsigSecret"))
        .await?;
    Ok(TsigKey {
        name: k.value("name").into(),
        algorithm: k.value("algorithm").into(),
        secret_b64: k.value("secret").into(),
    })
}

fn describe_proto(e: &hickory_proto::ProtoError) -> String {
    let s = e.to_string();
    if s.to_lowercase().contains("tsig") || s.contains("BADSIG") || s.contains("BADKEY") {
        format!("the server rejected the TSIG signature: {s}")
    } else {
        s
    }
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.finish() as u16
}

/// The shortest TSIG secret accepted: shorter keys are guessable (RFC 8945 asks for keys as long
/// as the hash), and a truncated copy-paste is the usual cause.
pub const MIN_TSIG_KEY_BYTES: usize = 16;

/// Standard base64, strictly: padding only at the end and only to a group of 4 (or none at all),
/// no leftover bits, so a truncated or mangled secret is refused instead of decoding to another key.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if pad > 2 || body.len() % 4 == 1 || (pad > 0 && s.len() % 4 != 0) {
        return None;
    }
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = T.iter().position(|t| *t == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    if s.is_empty() || buf != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("not base64!"), None);
        assert_eq!(base64_decode(""), None);
        assert_eq!(base64_decode("aGVsbG8h="), None, "padding that does not end a group of 4");
        assert_eq!(base64_decode("aGVsb"), None, "one character past a group cannot be base64");
        assert_eq!(base64_decode("aGVsbG9="), None, "leftover bits");
        assert_eq!(base64_decode("aGVs=bG8"), None, "padding in the middle");
    }

    #[test]
    fn names_and_servers_parse_or_explain() {
        assert_eq!(fqdn("chat", "example.com").expect("name").to_ascii(), "chat.example.com.");
        assert_eq!(fqdn("@", "example.com.").expect("apex").to_ascii(), "example.com.");
        assert_eq!(server_addr("127.0.0.1:5353").expect("addr").port(), 5353);
        assert_eq!(server_addr("192.0.2.1").expect("default port").port(), 53);
        assert!(server_addr("dns.example.com:53")
            .expect_err("names are not resolved")
            .to_string()
            .contains("IP:port"));
    }
}
