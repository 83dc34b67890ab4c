//! BIND9 serving one zone that accepts RFC 2136 updates signed with a TSIG key (hmac-sha256).
//! `controls { };` keeps named from opening rndc on port 953; it runs as the `bind` user.

use std::{net::IpAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::{
    proc::{free_port, run, wait_until, Proc},
    scratch_dir,
};

/// A running named.
pub struct Bind {
    pub dir: PathBuf,
    pub port: u16,
    pub zone: String,
    pub key_name: String,
    pub key_algorithm: String,
    /// The TSIG secret, base64.
    pub key_secret: String,
    proc: Proc,
}

impl Bind {
    /// Serves `zone` with the A records given (name relative to the zone → address).
    pub fn start(zone: &str, records: &[(&str, IpAddr)]) -> Result<Bind> {
        super::ensure_packages()?;
        let dir = scratch_dir("bind")?;
        let port = free_port()?;
        let key_name = "understudy-key".to_string();
        let keygen = run(Command::new("tsig-keygen").args(["-a", "hmac-sha256", &key_name]))?;
        let key_secret = keygen
            .lines()
            .find_map(|l| l.trim().strip_prefix("secret \"").and_then(|s| s.strip_suffix("\";")))
            .context("parse tsig-keygen output")?
            .to_string();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
                 pid-file none;\n  recursion no;\n  allow-query {{ any; }};\n  dnssec-validation no;\n\
                 session-keyfile \"{d}/session.key\";\n  notify no;\n}};\ncontrols {{ }};\n{keygen}\n\
                 zone \"{zone}\" {{\n  type primary;\n  file \"{d}/{zone}.zone\";\n  allow-update {{ key \"{key_name}\"; }};\n}};\n"
            ),
        )?;
        let mut zonefile = format!(
            "$TTL 30\n@ IN SOA ns.{zone}. hostmaster.{zone}. ( 1 60 30 3600 30 )\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
        );
        for (name, addr) in records {
            let rtype = if addr.is_ipv4() { "A" } else { "AAAA" };
            zonefile.push_str(&format!("{name} IN {rtype} {addr}\n"));
        }
        std::fs::write(dir.join(format!("{zone}.zone")), zonefile)?;
        run(Command::new("chown").args(["-R", "bind:bind"]).arg(&dir))?;
        let mut cmd = Command::new("named");
        cmd.args(["-g", "-u", "bind", "-c"]).arg(dir.join("named.conf"));
        let proc = Proc::spawn("named", cmd, &dir.join("named.log"))?;
        let bind = Bind {
            dir,
            port,
            zone: zone.into(),
            key_name,
            key_algorithm: "hmac-sha256".into(),
            key_secret,
            proc,
        };
        wait_until("named to answer", Duration::from_secs(30), || {
            bind.dig("ns").map(|a| !a.is_empty()).unwrap_or(false)
        })
        .with_context(|| format!("named log:\n{}", bind.proc.tail(20)))?;
        Ok(bind)
    }

    /// The authoritative A/AAAA answers for `name` (relative to the zone).
    pub fn dig(&self, name: &str) -> Result<Vec<String>> {
        let fqdn = format!("{name}.{}", self.zone);
        let out = run(Command::new("dig").args([
            "@127.0.0.1",
            "-p",
            &self.port.to_string(),
            &fqdn,
            "A",
            "+short",
            "+time=1",
            "+tries=1",
        ]))?;
        Ok(out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
    }

    /// Sends a signed update with `nsupdate` (the reference client), replacing `name`'s A record.
    pub fn nsupdate_a(&self, name: &str, addr: &str, key_secret: &str) -> Result<()> {
        let script = format!(
            "server 127.0.0.1 {}\nzone {}\nupdate delete {name}.{} A\nupdate add {name}.{} 30 A {addr}\nsend\n",
            self.port, self.zone, self.zone, self.zone
        );
        let script_path = self.dir.join("nsupdate.txt");
        std::fs::write(&script_path, script)?;
        let out = Command::new("nsupdate")
            .arg("-y")
            .arg(format!("{}:{}:{}", self.key_algorithm, self.key_name, key_secret))
            .arg(&script_path)
            .output()?;
        if !out.status.success() {
            bail!("nsupdate failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Stops named (SIGKILL), for outage tests; `restart` brings it back with the same zone.
    pub fn kill(&mut self) {
        self.proc.kill9();
    }

    /// Starts named again on the same port with the same configuration and zone journal.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill9();
        let mut cmd = Command::new("named");
        cmd.args(["-g", "-u", "bind", "-c"]).arg(self.dir.join("named.conf"));
        self.proc = Proc::spawn("named", cmd, &self.dir.join("named.log"))?;
        wait_until("named to answer again", Duration::from_secs(30), || {
            self.dig("ns").map(|a| !a.is_empty()).unwrap_or(false)
        })
    }

    /// The zone's SOA serial (BIND increments it once per applied update).
    pub fn serial(&self) -> Result<u32> {
        let out = run(Command::new("dig").args([
            "@127.0.0.1",
            "-p",
            &self.port.to_string(),
            &self.zone,
            "SOA",
            "+short",
            "+time=1",
            "+tries=1",
        ]))?;
        out.split_whitespace().nth(2).and_then(|s| s.parse().ok()).context("parse the SOA serial")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}
