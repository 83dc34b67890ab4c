//! Failovers of understudy with one controller per site (the production topology): the east
//! controller keeps the primary site's leader key on an etcd lease of `leaseTTL`, and west may take
//! the epoch only once that key is gone. The runs themselves are `understudy_failover::run_once`
//! with `Topology::TwoSite`; `table::Runs::two_site` puts them next to Patroni's (a) and (b) runs.

use crate::understudy_failover::{SiteKill, Topology};

/// The settings line of this part.
pub fn settings(ttls: &[u32]) -> String {
    format!(
        "understudy two-site ³: controllers --site east and --site west (target/release/understudy as processes, bed.controller_process), the pair as above plus spec.coordination.etcd.leaseTTL {} (keepalive every leaseTTL/5, self-fence after leaseTTL/2); east holds the leader key before the kill; (a) SIGKILL of the primary postmaster; (b) SIGKILL of east's controller process, then of the primary postmaster; (c) a black-holed node: east's controller SIGSTOPped and every packet to or from the primary's PostgreSQL port dropped by nftables (no RST; the same drop of the PostgreSQL and REST ports and SIGSTOP of Patroni for Patroni); first write = first ack through PgBouncer after the kill and after the Promote step started, as for one controller\n",
        ttls.iter().map(|t| format!("{t}s")).collect::<Vec<_>>().join(" / ")
    )
}

/// The keys of one TTL's scenarios, in `SiteKill::ALL`'s order.
pub fn keys(ttl: u32) -> [String; 3] {
    SiteKill::ALL.map(|kill| Topology::TwoSite { lease_ttl_s: ttl, kill }.key())
}
