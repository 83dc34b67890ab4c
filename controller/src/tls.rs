//! PEM material from Secrets, checked before anything connects with it, and TLS failures explained.
//! Errors name what is wrong (never the material itself: a private key never reaches a message).

use std::error::Error as StdError;

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// What is wrong with a PEM text; the message follows the field that holds it ("spec.x key
/// ca.crt holds no PEM certificate ...") and never echoes the material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("is not PEM: {0}")]
    NotPem(&'static str),
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("holds no PEM private key (-----BEGIN PRIVATE KEY-----)")]
    NoPrivateKey,
    #[error("is not a PEM private key: {0}")]
    NotPrivateKey(&'static str),
    /// Certificate `index` (1-based) cannot be a trust anchor.
    #[error("certificate {index} is not a usable CA certificate: {reason}")]
    NotCa { index: usize, reason: String },
}

/// The certificates of a PEM text (one or more `CERTIFICATE` blocks).
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::NotPem(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::NoPrivateKey,
        other => PemError::NotPrivateKey(pem_error(&other)),
    })
}

/// A root store holding the CA certificates of a PEM text; each must be a usable trust anchor.
pub fn roots(pem: &str) -> Result<rustls::RootCertStore, PemError> {
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs(pem)?.into_iter().enumerate() {
        store.add(c).map_err(|e| PemError::NotCa { index: i + 1, reason: e.to_string() })?;
    }
    Ok(store)
}

// A PEM error's words without echoing the input (the pki-types errors carry no data, but be sure).
fn pem_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        E::Base64Decode(_) => "a section is not valid base64",
        E::NoItemsFound => "no PEM section found",
        _ => "cannot be read",
    }
}

/// The rustls error somewhere in an error's source chain (io errors wrap it), if any.
pub fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = find_rustls_error(inner) {
                    return Some(r);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// What a refused handshake means for the operator, and which field to fix. `ca` names the field
/// holding the CA, `client` the one holding the client certificate, `host` the host field.
pub fn explain(e: &rustls::Error, ca: &str, client: &str, host: &str, host_value: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not valid for {host_value:?} ({host}): connect by a name or \
             address the certificate carries in its subjectAltName, or reissue the server certificate \
             for {host_value:?} ({e})"
        ),
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension) => format!(
            "the server's certificate was not issued by the CA in {ca}: put the CA that signed the \
             server's certificate there ({e})"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the server's certificate has expired: renew it on the server ({e})")
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the server's certificate is not valid yet: check the clocks or the certificate ({e})")
        }
        E::InvalidCertificate(_) => format!("the server's certificate was refused, check {ca} ({e})"),
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        ) => format!(
            "the server refused understudy's client certificate: set {client} to a certificate the \
             server trusts ({e})"
        ),
        other => format!("TLS handshake failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate_and_the_message_says_so() {
        let said = |r: Result<Vec<CertificateDer<'static>>, PemError>| r.err().map(|e| e.to_string());
        assert!(said(certs("hello")).unwrap_or_default().contains("no PEM certificate"));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(said(certs(broken)).unwrap_or_default().contains("base64"), "{:?}", certs(broken));
        assert!(roots("").is_err());
    }

    #[test]
    fn a_key_error_never_echoes_the_key() {
        let secretish = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\nno end";
        let said =
            |r: Result<PrivateKeyDer<'static>, PemError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let e = said(private_key(secretish));
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(said(private_key("nothing")).contains("no PEM private key"));
    }

    #[test]
    fn handshake_refusals_name_the_field_to_fix() {
        use rustls::{CertificateError, Error};
        let f = |e: Error| explain(&e, "spec.x.caSecret", "spec.x.clientCertSecret", "spec.x.host", "db");
        assert!(f(Error::InvalidCertificate(CertificateError::UnknownIssuer)).contains("spec.x.caSecret"));
        assert!(f(Error::InvalidCertificate(CertificateError::NotValidForName)).contains("spec.x.host"));
        assert!(
            f(Error::AlertReceived(rustls::AlertDescription::UnknownCA)).contains("spec.x.clientCertSecret")
        );
    }

    #[test]
    fn the_rustls_error_is_found_inside_an_io_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(find_rustls_error(&io), Some(rustls::Error::InvalidCertificate(_))));
        assert!(find_rustls_error(&std::io::Error::other("reset")).is_none());
    }
}
