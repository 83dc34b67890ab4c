//! TLS for tokio-postgres over rustls (ring), with libpq's `sslmode` semantics: `Require` encrypts
//! without checking the certificate, `VerifyCA` checks the chain, `VerifyFull` also checks that the
//! host is one of the certificate's names or IP addresses. tokio-postgres is always told
//! `sslmode=require` when TLS is on, so a server without TLS is an error, never plaintext.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, SignatureScheme,
};

use crate::crd::PostgresTlsMode;

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// The PEM texts a TLS setting resolved to. Not `Debug`: it may hold a private key.
pub struct Material {
    pub mode: PostgresTlsMode,
    /// CA certificates (VerifyCA, VerifyFull).
    pub ca: Option<String>,
    /// Client certificate chain and private key.
    pub client: Option<(String, String)>,
}

/// Which part of the material is unusable, for the error to name its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ca,
    ClientCert,
    ClientKey,
}

/// Builds (or reuses: the same material gives the same shared config) a rustls client config.
pub fn client_config(m: &Material) -> Result<Arc<ClientConfig>, (Part, String)> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    type Cache = Mutex<std::collections::HashMap<u64, Arc<ClientConfig>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut h = DefaultHasher::new();
    (m.mode, &m.ca, &m.client).hash(&mut h);
    let key = h.finish();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(c);
    }
    let config = Arc::new(build(m)?);
    if let Ok(mut c) = cache.lock() {
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(key, config.clone());
    }
    Ok(config)
}

fn build(m: &Material) -> Result<ClientConfig, (Part, String)> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| (Part::Ca, e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match m.mode {
        PostgresTlsMode::Disable | PostgresTlsMode::Require => Arc::new(NoCheck(provider())),
        PostgresTlsMode::VerifyCa | PostgresTlsMode::VerifyFull => {
            let pem = m.ca.as_deref().ok_or((Part::Ca, "is required for this mode".to_string()))?;
            let roots = crate::tls::roots(pem).map_err(|e| (Part::Ca, e.to_string()))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| (Part::Ca, e.to_string()))?;
            if m.mode == PostgresTlsMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    match &m.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = crate::tls::certs(cert).map_err(|e| (Part::ClientCert, e.to_string()))?;
            let key: PrivateKeyDer<'static> =
                crate::tls::private_key(key).map_err(|e| (Part::ClientKey, e.to_string()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (Part::ClientKey, format!("does not fit the certificate in tls.crt or is unsupported: {e}"))
            })
        }
    }
}

/// `sslmode=require`: encryption without a certificate check (handshake signatures still checked).
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must reach the CA; the name is not compared. webpki checks the
/// chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError as C, Error as E};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook over a rustls config: the maintained `tokio-postgres-rustls`, which also
/// gives SCRAM its channel binding (`tls-server-end-point`, so the server offers and the client uses
/// SCRAM-SHA-256-PLUS: a man in the middle that terminates TLS cannot relay the authentication).
pub fn make_connect(config: Arc<ClientConfig>) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_need_a_ca_and_refuse_garbage_naming_the_part() {
        let m = |mode, ca: Option<&str>| Material { mode, ca: ca.map(str::to_string), client: None };
        assert_eq!(client_config(&m(PostgresTlsMode::VerifyFull, None)).err().map(|e| e.0), Some(Part::Ca));
        assert_eq!(
            client_config(&m(PostgresTlsMode::VerifyCa, Some("not pem"))).err().map(|e| e.0),
            Some(Part::Ca)
        );
        assert!(client_config(&m(PostgresTlsMode::Require, None)).is_ok());
        let bad_client = Material {
            mode: PostgresTlsMode::Require,
            ca: None,
            client: Some((
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                "x".into(),
            )),
        };
        assert_eq!(client_config(&bad_client).err().map(|e| e.0), Some(Part::ClientKey));
    }
}
