//! Failovers of understudy with one controller per site (the production topology): the east
//! controller keeps the primary site's leader key on an etcd lease of `leaseTTL`, and west may take
//! the epoch only once that key is gone. The runs themselves are `understudy_failover::run_once`
//! with `Topology::TwoSite`; `table::Runs::two_site` puts them next to Patroni's (a) and (b) runs.

use crate::understudy_failover::Topology;

/// The settings line of this part.
pub fn settings(ttls: &[u32]) -> String {
    format!(
        "understudy two-site ³: controllers --site east and --site west (target/debug/understudy as processes, bed.controller_process), the pair as above plus spec.coordination.etcd.leaseTTL {} (keepalive every leaseTTL/5, self-fence after leaseTTL/2); east holds the leader key before the kill; (a) SIGKILL of the primary postmaster; (b) SIGKILL of east's controller process, then of the primary postmaster; first write = first ack through PgBouncer after the kill and after the Promote step started, as for one controller\n",
        ttls.iter().map(|t| format!("{t}s")).collect::<Vec<_>>().join(" / ")
    )
}

/// The keys of one TTL's two scenarios.
pub fn keys(ttl: u32) -> [String; 2] {
    [
        Topology::TwoSite { lease_ttl_s: ttl, node_loss: false }.key(),
        Topology::TwoSite { lease_ttl_s: ttl, node_loss: true }.key(),
    ]
}
