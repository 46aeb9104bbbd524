//! Progress kept in the target, next to the data it describes.
//!
//! Every command of the stream that is not safe to apply twice is written in one
//! `MULTI … EXEC` with a *slot marker*: a key in the same slot (a precomputed hash tag per
//! slot) holding `<sync id>:<offset>`, the source offset of the last such command applied
//! to that slot. The target applies both or neither, so after any doubt (a restart, a lost
//! connection with writes in flight, a target failover) the marker says exactly which
//! commands of the slot are in: those at or before its offset are skipped, the rest
//! applied. Commands safe to apply twice (absolute, single-key writes: `SET`, `DEL`,
//! `HSET`, `PEXPIREAT` …) need no transaction: replayed in order after the slot's last
//! marked command, they leave the same value.
//!
//! The sync id changes with every full sync, so markers of an earlier copy never skip a
//! command of a new one. A slot moved to another target master keeps its marker (it is a
//! key of the slot), and a promoted replica holds the markers replicated with the data.
//!
//! Pure: no I/O.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use bytes::Bytes;
use rsm_cluster::SLOT_COUNT;

/// Slot markers are `__rsm:at:{TAG}`, TAG chosen so that the key hashes to its slot.
pub const SLOT_MARKER_PREFIX: &str = "__rsm:at:";

/// A hash tag for every slot: the shortest decimal numbers, in order, first to hit it.
/// A pure function of the slot, so every process and every later run names a slot's
/// marker the same way and finds the markers an earlier one wrote; short, since the
/// marker key travels in every marked transaction.
fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); usize::from(SLOT_COUNT)];
        let mut left = tags.len();
        let mut n: u64 = 0;
        while left > 0 {
            let t = n.to_string();
            let slot = rsm_cluster::key_slot(t.as_bytes()).index();
            if let Some(tag) = tags.get_mut(slot).filter(|tag| tag.is_empty()) {
                *tag = t;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// The hash tag that puts a key in `slot` (`slot` < 16384).
pub fn slot_tag(slot: usize) -> &'static str {
    slot_tags().get(slot).map_or("", |t| t.as_str())
}

/// The marker key of `slot` (`slot` < 16384).
pub fn slot_marker_key(slot: usize) -> Bytes {
    let tag = slot_tags().get(slot).map_or("", |t| t.as_str());
    Bytes::from(format!("{SLOT_MARKER_PREFIX}{{{tag}}}"))
}

/// The slot's set of marked writes that ran but failed (`EXEC` does not roll back): the
/// marker covers them, yet they are not in the target.
pub fn failed_key(slot: usize) -> Bytes {
    let tag = slot_tags().get(slot).map_or("", |t| t.as_str());
    Bytes::from(format!("{FAILED_PREFIX}{{{tag}}}"))
}

/// Failed sets are `__rsm:failed:{TAG}`, in the slot their marker is in: a failure record
/// goes on the marker's connection, right after it, and moves with it when the slot does.
const FAILED_PREFIX: &str = "__rsm:failed:";

/// A slot marker's value (also a failed set's member): the sync id as fixed-width hex,
/// so that a marker of another full sync is told apart and never skips a command of
/// this one, and the source offset in decimal.
pub fn marker_value(sync_id: u64, offset: u64) -> Bytes {
    Bytes::from(format!("{sync_id:016x}:{offset}"))
}

/// `(sync id, offset)` of a marker's value; `None` for any other value, which is then
/// no marker at all (nothing is skipped on its word).
pub fn parse_marker(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (id, offset) = text.split_once(':')?;
    Some((u64::from_str_radix(id, 16).ok()?, offset.parse().ok()?))
}

/// What the target says is applied of this sync: its id and, per slot, the offset of the
/// last marked command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The full sync the markers must belong to; markers of another one are ignored.
    pub sync_id: u64,
    /// Per slot, the offset in its marker; a slot without one has nothing marked applied.
    pub applied: HashMap<usize, u64>,
    /// Per slot, offsets of marked writes that failed (see [`failed_key`]).
    pub failed: HashMap<usize, HashSet<u64>>,
}

impl Progress {
    /// Is the command at `offset` in `slot` already in the target?
    pub fn has(&self, slot: usize, offset: u64) -> bool {
        // Offset 0 is a snapshot write: never marked, so never skipped on a marker's word.
        offset > 0
            && self.applied.get(&slot).is_some_and(|&m| offset <= m)
            && !self.failed_at(slot, offset)
    }

    /// Did the marked write at `offset` fail when it was first applied?
    pub fn failed_at(&self, slot: usize, offset: u64) -> bool {
        self.failed.get(&slot).is_some_and(|f| f.contains(&offset))
    }
}

/// Safe to apply twice, and to replay in order after a slot's last marked command: an
/// absolute write of keys given by name, whose result depends on nothing but its
/// arguments and the key's own state. Everything else (counters, lists, streams,
/// `APPEND`, `RENAME`, scripts, `*STORE` commands that read other keys, `RESTORE` …) is
/// written with its slot's marker. Unknown commands are treated as unsafe.
pub fn idempotent(args: &[Bytes]) -> bool {
    // Nothing to apply, nothing to apply twice.
    let Some(name) = args.first() else {
        return true;
    };
    // Every name below fits in 16 bytes: a longer one is not in the list, so unsafe.
    let mut upper = [0u8; 16];
    if name.len() > upper.len() {
        return false;
    }
    for (d, s) in upper.iter_mut().zip(name.iter()) {
        *d = s.to_ascii_uppercase();
    }
    let name = upper.get(..name.len()).unwrap_or_default();
    match name {
        b"SET" | b"SETNX" | b"SETEX" | b"PSETEX" | b"MSET" | b"GETDEL" | b"GETEX" => true,
        b"DEL" | b"UNLINK" | b"PEXPIREAT" | b"EXPIREAT" | b"PERSIST" => true,
        b"HSET" | b"HMSET" | b"HSETNX" | b"HDEL" | b"HPEXPIREAT" | b"HEXPIREAT" | b"HPERSIST" => {
            true
        }
        b"SADD" | b"SREM" | b"ZREM" | b"PFADD" => true,
        // ZADD … INCR adds to a score.
        b"ZADD" => !args.iter().skip(2).any(|a| a.eq_ignore_ascii_case(b"INCR")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn every_slot_has_a_marker_key_in_that_slot() {
        for slot in [0, 1, 5460, 5461, 12182, 16383] {
            let k = slot_marker_key(slot);
            assert!(k.starts_with(SLOT_MARKER_PREFIX.as_bytes()));
            assert_eq!(rsm_cluster::key_slot(&k).index(), slot, "{k:?}");
        }
        let distinct: std::collections::HashSet<Bytes> =
            (0..usize::from(SLOT_COUNT)).map(slot_marker_key).collect();
        assert_eq!(distinct.len(), usize::from(SLOT_COUNT));
    }

    #[test]
    fn marker_values_round_trip() {
        let v = marker_value(0xabc, 123_456);
        assert_eq!(&v[..], b"0000000000000abc:123456");
        assert_eq!(parse_marker(&v), Some((0xabc, 123_456)));
        assert_eq!(parse_marker(b"garbage"), None);
        assert_eq!(parse_marker(b"zz:1"), None);
    }

    #[test]
    fn what_is_safe_to_apply_twice() {
        for c in [
            "SET k v",
            "set k v PXAT 1",
            "DEL a b",
            "HSET h f v",
            "ZADD z 1 m",
            "PEXPIREAT k 1",
        ] {
            assert!(idempotent(&words(c)), "{c}");
        }
        for c in [
            "INCR k",
            "RPUSH l x",
            "LPOP l",
            "XADD s * f v",
            "RENAME a b",
            "APPEND k x",
            "ZADD z INCR 1 m",
            "HINCRBY h f 1",
            "SETRANGE k 0 x",
            "RESTORE k 0 x",
            "EVAL s 0",
            "SOMEFUTURECOMMAND k",
        ] {
            assert!(!idempotent(&words(c)), "{c}");
        }
    }

    #[test]
    fn the_target_has_what_its_marker_covers() {
        let p = Progress {
            sync_id: 1,
            applied: [(7, 100)].into(),
            failed: [(7, [60].into())].into(),
        };
        assert!(p.has(7, 100) && p.has(7, 50));
        assert!(!p.has(7, 101) && !p.has(8, 1));
        assert!(!p.has(7, 0), "snapshot entries carry no offset");
        assert!(!p.has(7, 60), "it ran but failed: to be applied again");
    }
}
