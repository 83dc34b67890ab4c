//! Events on the pair: what a round wants to tell, and how it is published so that different
//! messages never hide each other.

use jiff::Timestamp;

use crate::crd::{conditions::set_condition, Condition, ConditionStatus};

/// An Event to publish on the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Event `action` for a note. kube's Recorder folds Events with the same reason and action
/// into one series that keeps the first note, so a later refusal for another cause would show an
/// earlier, different text; a digest of the note in the action folds only identical messages.
pub fn action_for(note: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(note.as_bytes());
    format!("Reconcile-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// Sets a condition and queues an Event when its status or reason changed (and, for a condition
/// seen for the first time, when it is not True or `announce_first` is set).
#[allow(clippy::too_many_arguments)]
pub fn upsert(
    list: &mut Vec<Condition>,
    events: &mut Vec<EventNote>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
    announce_first: bool,
) {
    let before = list.iter().find(|c| c.type_ == type_);
    let announce = match before {
        Some(b) => b.status != status || b.reason != reason,
        None => status != ConditionStatus::True || announce_first,
    };
    if announce {
        events.push(EventNote {
            warning: status != ConditionStatus::True,
            reason: reason.into(),
            note: message.into(),
        });
    }
    set_condition(list, type_, status, reason, message, generation, now);
}
