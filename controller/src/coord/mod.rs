//! Coordination: who may take the next epoch. The epoch is the fencing token: it moves from N to
//! N+1 by exactly one compare-and-swap per promotion, and whoever loses the swap stops.
//!
//! Without a witness the swap is the status write itself (a `resourceVersion` precondition on the
//! pair, done by the executor). With `spec.coordination.etcd` it is an etcd transaction on
//! `<prefix>/<namespace>/<name>/epoch`, and the status only records what etcd decided.

pub mod etcd;

/// The result of an epoch swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// We moved the epoch to the value asked for (or had already done so, before a restart).
    Won,
    /// Somebody else holds the epoch; nothing was changed.
    Lost { epoch: i64, holder: String },
}

/// What an etcd epoch key holds: `<epoch> <holder> <transition id>`.
pub fn encode_epoch(epoch: i64, holder: &str, transition: &str) -> String {
    format!("{epoch} {holder} {transition}")
}

/// Parses an epoch value; `None` for anything that is not ours.
pub fn decode_epoch(raw: &str) -> Option<(i64, String, String)> {
    let mut it = raw.splitn(3, ' ');
    let epoch = it.next()?.parse().ok()?;
    Some((epoch, it.next()?.to_string(), it.next().unwrap_or_default().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_values_round_trip() {
        let raw = encode_epoch(7, "west", "uid-1/7");
        assert_eq!(decode_epoch(&raw), Some((7, "west".into(), "uid-1/7".into())));
        assert_eq!(decode_epoch("garbage"), None);
    }
}
