//! What a value lost on the way into a target that cannot hold all of it, per kind.
//!
//! An older target has no room for some details (hash field TTLs before 7.4, stream
//! counters before 7.0, consumers before 6.2), and commands cannot set others (a
//! consumer's seen-time, a pending entry whose message was deleted). Each such detail is
//! counted under its kind and the key is named in the log, so that "0 details lost" is
//! only ever said when nothing was lost.

use serde::Serialize;

/// Details that did not travel, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Losses {
    /// Live hash fields written without their TTL (the target has no field TTLs).
    pub field_ttls: u64,
    /// Stream counters the target cannot hold: a group's entries-read, the stream's
    /// entries-added and max-deleted-entry-id (targets before 7.0). Also counted here, for
    /// want of kinds of their own: a Redis 8.6+ stream's idempotent-producer state (one per
    /// key) and the NACK mark of a Redis 8.8 pending entry that kept its owner.
    pub stream_counters: u64,
    /// Consumers whose seen-time (and active-time) became the time of the copy: commands
    /// cannot set them, nor can RDB formats before 7.2 hold an active-time.
    pub consumer_times: u64,
    /// Consumers with nothing pending that the target cannot create (before 6.2).
    pub consumers: u64,
    /// Pending entries that could not be recreated: no owner, or (through commands) a
    /// message deleted from the stream, which `XCLAIM` refuses to claim.
    pub pending_entries: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.field_ttls
            + self.stream_counters
            + self.consumer_times
            + self.consumers
            + self.pending_entries
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn add(&mut self, o: &Losses) {
        self.field_ttls += o.field_ttls;
        self.stream_counters += o.stream_counters;
        self.consumer_times += o.consumer_times;
        self.consumers += o.consumers;
        self.pending_entries += o.pending_entries;
    }

    fn kinds(&self) -> [(u64, &'static str); 5] {
        [
            (self.field_ttls, "hash field TTLs"),
            (self.stream_counters, "stream counters"),
            (self.consumer_times, "consumer seen/active times"),
            (self.consumers, "consumers without pending entries"),
            (self.pending_entries, "pending entries"),
        ]
    }
}

/// `3 hash field TTLs, 1 stream counters`; `nothing` when empty.
impl std::fmt::Display for Losses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (n, what) in self.kinds() {
            if n == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {what}")?;
        }
        if first {
            f.write_str("nothing")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_per_kind() {
        let mut l = Losses::default();
        assert_eq!(l.to_string(), "nothing");
        l.add(&Losses {
            field_ttls: 2,
            pending_entries: 1,
            ..Losses::default()
        });
        assert_eq!(l.total(), 3);
        assert_eq!(l.to_string(), "2 hash field TTLs, 1 pending entries");
    }
}
