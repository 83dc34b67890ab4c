//! Test certificates made with the `openssl` command line (Debian package, installed by
//! `install-deps.sh`): a CA per test and server or client certificates it issues.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use super::{proc::run, scratch_dir};

/// A certificate and its private key, as files and as PEM text.
#[derive(Clone)]
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: String,
    pub key: String,
}

/// A self-signed CA.
pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
    pub cert_path: PathBuf,
    key_path: PathBuf,
    /// The CA certificate, PEM.
    pub cert: String,
}

impl Ca {
    /// A new CA called `name` (its own key, valid one day).
    pub fn new(name: &str) -> Result<Ca> {
        super::ensure_packages()?;
        let dir = scratch_dir(&format!("ca-{name}"))?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", &format!("/CN={name}")])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path))
        .context("openssl: make the CA")?;
        let cert = std::fs::read_to_string(&cert_path)?;
        Ok(Ca { dir, name: name.into(), cert_path, key_path, cert })
    }

    /// Issues a certificate for `cn` with the subjectAltNames `sans` (such as `IP:127.0.0.1`), for
    /// a server (`client` false) or a client.
    pub fn issue(&self, cn: &str, sans: &[&str], client: bool) -> Result<Issued> {
        let stem = format!("{}-{cn}", if client { "client" } else { "server" });
        let key_path = self.dir.join(format!("{stem}.key"));
        let csr = self.dir.join(format!("{stem}.csr"));
        let cert_path = self.dir.join(format!("{stem}.crt"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let mut text = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={}\n",
            if client { "clientAuth" } else { "serverAuth" }
        );
        if !sans.is_empty() {
            text.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        std::fs::write(&ext, text)?;
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", &format!("/CN={cn}")])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&csr))
        .context("openssl: make a key and CSR")?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert_path)
            .arg("-CAkey")
            .arg(&self.key_path)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert_path))
        .context("openssl: sign the certificate")?;
        Ok(Issued {
            cert: std::fs::read_to_string(&cert_path)?,
            key: std::fs::read_to_string(&key_path)?,
            cert_path,
            key_path,
        })
    }
}
