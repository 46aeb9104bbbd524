//! Hash slots: the key → slot function and inclusive slot ranges.
//!
//! Pure and allocation-free on the hot path: the writer calls [`key_slot`] for every replayed
//! command to route it, so it must agree bit for bit with the server (`CLUSTER KEYSLOT`):
//! CRC16/XMODEM of the hash tag (the bytes between the first `{` and the first `}` after it,
//! when not empty) or of the whole key, modulo 16384.

use std::fmt;

use crc::{Crc, CRC_16_XMODEM};

/// Number of hash slots in a Redis Cluster (`CLUSTER_SLOTS` in the Redis sources).
pub const SLOT_COUNT: u16 = 16384;

/// A hash slot, always `< SLOT_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    /// The first slot.
    pub const MIN: Slot = Slot(0);
    /// The last slot.
    pub const MAX: Slot = Slot(SLOT_COUNT - 1);

    /// `Some` if `n < SLOT_COUNT`.
    pub const fn new(n: u16) -> Option<Slot> {
        if n < SLOT_COUNT {
            Some(Slot(n))
        } else {
            None
        }
    }

    /// The slot number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The slot number as an index into a `SLOT_COUNT`-long table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..SLOT_COUNT).map(Slot)
    }
}

impl TryFrom<u16> for Slot {
    type Error = u16;
    fn try_from(n: u16) -> Result<Slot, u16> {
        Slot::new(n).ok_or(n)
    }
}

impl From<Slot> for u16 {
    fn from(s: Slot) -> u16 {
        s.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The part of `key` that is hashed: its hash tag if it has a non-empty one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = memchr(b'{', key) else {
        return key;
    };
    let rest = key.get(open + 1..).unwrap_or_default();
    match memchr(b'}', rest).and_then(|len| rest.get(..len)) {
        Some(tag) if !tag.is_empty() => tag,
        _ => key,
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The slot of `key`, as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &[u8]) -> Slot {
    // CRC16 % 16384 is always < SLOT_COUNT.
    Slot(CRC16.checksum(hash_tag(key)) % SLOT_COUNT)
}

/// An inclusive range of slots, `start <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    start: Slot,
    end: Slot,
}

impl SlotRange {
    /// `Some` if `start <= end`.
    pub fn new(start: Slot, end: Slot) -> Option<SlotRange> {
        (start <= end).then_some(SlotRange { start, end })
    }

    /// A range of one slot.
    pub fn single(slot: Slot) -> SlotRange {
        SlotRange {
            start: slot,
            end: slot,
        }
    }

    /// All 16384 slots.
    pub fn full() -> SlotRange {
        SlotRange {
            start: Slot::MIN,
            end: Slot::MAX,
        }
    }

    /// First slot.
    pub fn start(&self) -> Slot {
        self.start
    }

    /// Last slot (inclusive).
    pub fn end(&self) -> Slot {
        self.end
    }

    /// Number of slots (at least 1).
    pub fn len(&self) -> usize {
        usize::from(self.end.0 - self.start.0) + 1
    }

    /// Always false: a range holds at least one slot. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `slot` is in the range.
    pub fn contains(&self, slot: Slot) -> bool {
        self.start <= slot && slot <= self.end
    }

    /// The slots in the range.
    pub fn iter(&self) -> impl Iterator<Item = Slot> {
        (self.start.0..=self.end.0).map(Slot)
    }
}

impl fmt::Display for SlotRange {
    /// `5` or `0-5460`, as `CLUSTER NODES` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Sorted, coalesced ranges covering exactly the given slots (in any order, duplicates allowed).
pub fn ranges_of(slots: impl IntoIterator<Item = Slot>) -> Vec<SlotRange> {
    let mut v: Vec<Slot> = slots.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<SlotRange> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some(r) if r.end.0 + 1 == s.0 => r.end = s,
            _ => out.push(SlotRange::single(s)),
        }
    }
    out
}

/// Writes ranges as `0-99, 200, 300-301`.
pub fn display_ranges(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
    }

    #[test]
    fn reference_vectors() {
        // redis-internals.md §E4, checked against CLUSTER KEYSLOT on every version.
        let cases: &[(&[u8], u16)] = &[
            (b"foo", 12182),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"123456789", 12739),
            (b"", 0),
        ];
        for (key, slot) in cases {
            assert_eq!(key_slot(key).get(), *slot, "{}", key.escape_ascii());
        }
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag(b"a{b}c"), b"b");
        assert_eq!(hash_tag(b"a{}c"), b"a{}c");
        assert_eq!(hash_tag(b"a{bc"), b"a{bc");
        assert_eq!(hash_tag(b"a}b{c}"), b"c");
        assert_eq!(hash_tag(b"{{}}"), b"{");
        assert_eq!(hash_tag(b"{"), b"{");
    }

    #[test]
    fn slot_bounds() {
        assert!(Slot::new(16383).is_some());
        assert!(Slot::new(16384).is_none());
        assert_eq!(Slot::try_from(16384), Err(16384));
        assert_eq!(Slot::all().count(), 16384);
    }

    #[test]
    fn ranges() {
        let s = |n| Slot::new(n).unwrap();
        let r = ranges_of([s(5), s(3), s(4), s(10), s(4), s(16383)]);
        assert_eq!(display_ranges(&r), "3-5, 10, 16383");
        assert_eq!(r[0].len(), 3);
        assert!(r[0].contains(s(4)) && !r[0].contains(s(6)));
        assert!(SlotRange::new(s(2), s(1)).is_none());
        assert_eq!(SlotRange::full().len(), 16384);
        assert_eq!(SlotRange::full().to_string(), "0-16383");
    }
}
