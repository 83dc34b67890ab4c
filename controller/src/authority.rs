//! One answer to "who serves writes, and at which epoch", used by every caller (commands, the
//! guard, readiness, the leader key's keeper, rejoin, the executor's start).
//!
//! The status is the answer this module reads, and it is made to mirror the witness: with
//! `spec.coordination.etcd`, the epoch moves only by the witness's compare-and-swap, the status
//! records what the swap decided, and a witness record ahead of the status (a pair created again,
//! or the other site's controller acted) is adopted into it at the pair's first round, every
//! readiness round (30 s) and whenever a swap finds it (`failover::executor::adopt_witness_epoch`).
//! Before the first status, the spec's `primary` answers. Without a witness, the status is the
//! authority (its epoch moves by a resourceVersion-guarded write).

use crate::crd::{DisasterRecoveryPairSpec, DisasterRecoveryPairStatus, Epoch};

/// Where the answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `status.currentPrimary` and `status.epoch` (mirroring the witness when there is one).
    Status,
    /// No status yet: `spec.primary`, epoch 0.
    Spec,
}

/// Who serves writes, at which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Primary<'a> {
    pub site: &'a str,
    /// The other site of the pair (empty when the spec has only one, which CEL forbids).
    pub standby: &'a str,
    pub epoch: Epoch,
    pub source: Source,
}

/// The answer for a pair.
pub fn primary<'a>(
    spec: &'a DisasterRecoveryPairSpec,
    status: Option<&'a DisasterRecoveryPairStatus>,
) -> Primary<'a> {
    let (site, epoch, source) = match status.and_then(|s| s.current_primary.as_deref().map(|p| (p, s.epoch)))
    {
        Some((site, epoch)) => (site, epoch, Source::Status),
        None => (spec.primary.as_str(), status.map(|s| s.epoch).unwrap_or_default(), Source::Spec),
    };
    let standby = spec.sites.iter().map(|s| s.name.as_str()).find(|n| *n != site).unwrap_or_default();
    Primary { site, standby, epoch, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_answers_and_the_spec_only_before_it() {
        let spec = crate::crd::test_spec();
        let p = primary(&spec, None);
        assert_eq!((p.site, p.standby, p.epoch, p.source), ("east", "west", Epoch(0), Source::Spec));
        let st = DisasterRecoveryPairStatus {
            current_primary: Some("west".into()),
            epoch: Epoch(3),
            ..Default::default()
        };
        let p = primary(&spec, Some(&st));
        assert_eq!((p.site, p.standby, p.epoch, p.source), ("west", "east", Epoch(3), Source::Status));
    }
}
