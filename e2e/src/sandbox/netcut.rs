//! Network partitions on loopback, with nftables: every process of a "site" runs under its own
//! user id, and a cut drops the TCP packets that user's sockets send to a port (the way a real
//! partition loses packets: connects and established connections both hang until they time out).
//! Packets are dropped in the output hook by socket owner (`meta skuid`), so a cut is one-way by
//! construction and says exactly which actor loses which peer.
//!
//! Each `Partition` owns one nftables table named after this test process; the sandbox reaper
//! deletes the tables of a test process that died, so no rule outlives its test.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};

use super::proc::run;

/// Prefix of the nftables tables the sandbox creates (`<prefix><pid>_<n>`).
pub const TABLE_PREFIX: &str = "understudy_";

/// User ids for the site actors of this test process: distinct per process, so that concurrent
/// test processes never match each other's rules. No passwd entry is needed for a numeric uid.
pub fn site_uid(slot: u32) -> u32 {
    200_000 + (std::process::id() % 100_000) * 8 + slot % 8
}

/// One set of cuts, removed when dropped.
pub struct Partition {
    table: String,
}

impl Partition {
    pub fn new() -> Result<Partition> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        super::ensure_packages()?;
        let table = format!("{TABLE_PREFIX}{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        nft(&["add", "table", "inet", &table])?;
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        ])?;
        Ok(Partition { table })
    }

    /// Drops every TCP packet that sockets owned by `uid` send to `port` on loopback.
    pub fn cut(&self, uid: u32, port: u16) -> Result<()> {
        let rule = format!("meta skuid {uid} ip daddr 127.0.0.0/8 tcp dport {port} drop");
        nft(&["add", "rule", "inet", &self.table, "out", &rule])?;
        Ok(())
    }

    /// Black-holes a server: every TCP packet to or from `port` on loopback is dropped, whoever
    /// sends it (no RST: connects and established connections hang until their own timeouts, as
    /// when a host is lost).
    pub fn black_hole(&self, port: u16) -> Result<()> {
        for dir in ["dport", "sport"] {
            let rule = format!("ip daddr 127.0.0.0/8 tcp {dir} {port} drop");
            nft(&["add", "rule", "inet", &self.table, "out", &rule])?;
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<()> {
        nft(&["flush", "chain", "inet", &self.table, "out"])?;
        Ok(())
    }

    /// The rules in force, for failure messages.
    pub fn describe(&self) -> String {
        nft(&["list", "table", "inet", &self.table]).unwrap_or_else(|e| format!("{e:#}"))
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

fn nft(args: &[&str]) -> Result<String> {
    run(Command::new("nft").args(args)).with_context(|| format!("nft {}", args.join(" ")))
}

/// The shell snippet the reaper runs to delete the tables of a dead test process.
pub fn reaper_snippet(owner: u32) -> String {
    format!(
        "for t in $(nft list tables 2>/dev/null | awk '{{print $3}}' | grep '^{TABLE_PREFIX}{owner}_'); do \
         nft delete table inet \"$t\"; done;"
    )
}
