//! Which arguments of a command are keys, and how a command with keys in several slots (or
//! with keys the filter rejects) may be cut into pieces.
//!
//! Pure: no I/O. This is a small hand-written table of the commonly replicated write
//! commands. It sits behind [`key_layout`] so it can be swapped for the generated
//! key-spec table of `crate::command` once that lands; nothing else in the writer looks
//! at command names.

use bytes::Bytes;

/// Number of hash slots.
pub const SLOT_COUNT: usize = 16384;

/// `CLUSTER KEYSLOT` of a key (hash tags included), as a plain index.
pub fn key_slot(key: &[u8]) -> u16 {
    rsm_cluster::key_slot(key).get()
}

/// Where a command's keys are and what may be done when they disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLayout {
    /// No key: goes to every master (`FLUSHALL`, `FUNCTION …`) or to any one node.
    Keyless { broadcast: bool },
    /// The replication stream's housekeeping (`PING`, `REPLCONF`, `CLUSTER SYNCSLOTS`…):
    /// never written to a target.
    Skip,
    /// Keys at `first`, `first + step`, … up to `last` (inclusive; `None` = to the end).
    /// Each key owns `step` arguments (`MSET k v`), so the command can be cut into
    /// per-slot pieces when `splittable`.
    Keys {
        first: usize,
        last: Option<usize>,
        step: usize,
        splittable: bool,
    },
    /// `numkeys` at `at`, the keys after it (`EVAL`, `FCALL`, `ZUNIONSTORE` uses
    /// [`KeyLayout::DestAndNumKeys`]). All-or-nothing.
    NumKeys { at: usize },
    /// A destination key at 1, then `numkeys` at 2 and that many keys (`ZUNIONSTORE`…).
    DestAndNumKeys,
}

/// The key layout of a command, by name (case-insensitive). Unknown commands are assumed to
/// take one key at position 1, which is right for the large majority of write commands.
pub fn key_layout(args: &[Bytes]) -> KeyLayout {
    let Some(name) = args.first() else {
        return KeyLayout::Skip;
    };
    let mut upper = [0u8; 24];
    let n = name.len().min(upper.len());
    for (d, s) in upper.iter_mut().zip(name.iter()) {
        *d = s.to_ascii_uppercase();
    }
    let name = &upper[..n];
    let keys = |first, last, step, splittable| KeyLayout::Keys {
        first,
        last,
        step,
        splittable,
    };
    match name {
        b"PING" | b"REPLCONF" | b"SELECT" | b"MULTI" | b"EXEC" | b"DISCARD" => KeyLayout::Skip,
        b"CLUSTER" => KeyLayout::Skip,
        b"FLUSHALL" | b"FLUSHDB" | b"FUNCTION" | b"SCRIPT" => {
            KeyLayout::Keyless { broadcast: true }
        }
        b"PUBLISH" => KeyLayout::Keyless { broadcast: false },
        b"SPUBLISH" => keys(1, Some(1), 1, false),
        b"DEL" | b"UNLINK" | b"TOUCH" | b"EXISTS" => keys(1, None, 1, true),
        b"MSET" => keys(1, None, 2, true),
        b"MSETNX" => keys(1, None, 2, false),
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH"
        | b"BRPOPLPUSH" | b"COPY" | b"GEOSEARCHSTORE" | b"ZRANGESTORE" | b"LCS" => {
            keys(1, Some(2), 1, false)
        }
        b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFMERGE" | b"PFCOUNT" | b"SINTER"
        | b"SUNION" | b"SDIFF" => keys(1, None, 1, false),
        b"BITOP" => keys(2, None, 1, false),
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => KeyLayout::DestAndNumKeys,
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            KeyLayout::NumKeys { at: 2 }
        }
        b"SWAPDB" | b"MOVE" => keys(1, Some(1), 1, false),
        _ => from_command_table(args),
    }
}

/// Every other command: its key positions from the generated key-spec table
/// (Redis 5.0 → 8.2, Valkey 8.1 → 9.1), so `XGROUP CREATE key …` routes by
/// `key`, not by `CREATE`. Unknown commands keep the one-key-at-1 guess.
fn from_command_table(args: &[Bytes]) -> KeyLayout {
    use crate::command::{CommandClass, CommandTable, UnsupportedReason};
    match CommandTable::builtin_ref().class(args) {
        CommandClass::Keyed { keys } => match (keys.first(), keys.last()) {
            (Some(&first), Some(&last)) => {
                let step = if keys.len() > 1 { keys[1] - first } else { 1 };
                let uniform = keys.windows(2).all(|w| w[1] == w[0] + step);
                if uniform {
                    KeyLayout::Keys {
                        first,
                        last: Some(last),
                        step: step.max(1),
                        splittable: false,
                    }
                } else {
                    // Irregular positions: route by the first key; the cluster
                    // refuses the command (CROSSSLOT) if the others differ.
                    KeyLayout::Keys {
                        first,
                        last: Some(first),
                        step: 1,
                        splittable: false,
                    }
                }
            }
            _ => KeyLayout::Keyless { broadcast: false },
        },
        CommandClass::Broadcast => KeyLayout::Keyless { broadcast: true },
        CommandClass::Skip(_) => KeyLayout::Skip,
        CommandClass::Unsupported(UnsupportedReason::KeylessWrite) => {
            KeyLayout::Keyless { broadcast: false }
        }
        CommandClass::Unsupported(_) => KeyLayout::Keys {
            first: 1,
            last: Some(1),
            step: 1,
            splittable: false,
        },
    }
}

/// The key argument positions of a command (empty for keyless ones and for malformed
/// commands whose key count does not fit their arguments).
pub fn key_positions(args: &[Bytes]) -> Vec<usize> {
    match key_layout(args) {
        KeyLayout::Keyless { .. } | KeyLayout::Skip => Vec::new(),
        KeyLayout::Keys {
            first, last, step, ..
        } => {
            let end = last.map_or(args.len(), |l| (l + 1).min(args.len()));
            (first..end).step_by(step.max(1)).collect()
        }
        KeyLayout::NumKeys { at } => numkeys(args, at)
            .map(|n| (at + 1..at + 1 + n).collect())
            .unwrap_or_default(),
        KeyLayout::DestAndNumKeys => numkeys(args, 2)
            .map(|n| std::iter::once(1).chain(3..3 + n).collect())
            .unwrap_or_default(),
    }
}

fn numkeys(args: &[Bytes], at: usize) -> Option<usize> {
    let n: usize = std::str::from_utf8(args.get(at)?).ok()?.parse().ok()?;
    (at + 1 + n <= args.len()).then_some(n)
}

/// Cut a splittable command (`MSET`, `DEL`, …) into pieces whose keys each satisfy `group`
/// into the same group, keeping argument order inside each piece; keys for which `group`
/// returns `None` are dropped. Returns `None` when the command cannot be split.
pub fn split_by<G: Ord + Copy>(
    args: &[Bytes],
    mut group: impl FnMut(&[u8]) -> Option<G>,
) -> Option<Vec<(G, Vec<Bytes>)>> {
    let KeyLayout::Keys {
        first,
        last: None,
        step,
        splittable: true,
    } = key_layout(args)
    else {
        return None;
    };
    let head = args.get(..first)?;
    let mut pieces: Vec<(G, Vec<Bytes>)> = Vec::new();
    let mut i = first;
    while i < args.len() {
        let end = (i + step).min(args.len());
        if let Some(g) = group(&args[i]) {
            let piece = match pieces.iter_mut().find(|(pg, _)| *pg == g) {
                Some(p) => p,
                None => {
                    pieces.push((g, head.to_vec()));
                    // Just pushed: last_mut cannot be None.
                    pieces.last_mut()?
                }
            };
            piece.1.extend_from_slice(&args[i..end]);
        }
        i = end;
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn slots_match_the_server() {
        // Test vectors checked with CLUSTER KEYSLOT (reference §E4).
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"foo{bar}{zap}"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn positions() {
        assert_eq!(key_positions(&cmd("set k v")), vec![1]);
        assert_eq!(key_positions(&cmd("MSET a 1 b 2")), vec![1, 3]);
        assert_eq!(key_positions(&cmd("del a b c")), vec![1, 2, 3]);
        assert_eq!(key_positions(&cmd("rename a b")), vec![1, 2]);
        assert_eq!(key_positions(&cmd("eval s 2 a b x")), vec![3, 4]);
        assert_eq!(key_positions(&cmd("eval s 5 a")), Vec::<usize>::new());
        assert_eq!(
            key_positions(&cmd("zunionstore d 2 a b WEIGHTS 1 2")),
            vec![1, 3, 4]
        );
        assert_eq!(key_positions(&cmd("bitop AND d a b")), vec![2, 3, 4]);
        assert!(key_positions(&cmd("flushall")).is_empty());
    }

    #[test]
    fn splits_mset_by_group_and_drops_rejected() {
        let args = cmd("MSET a 1 b 2 ax 3");
        let pieces = split_by(&args, |k| (k[0] == b'a').then_some(k.len())).unwrap();
        assert_eq!(pieces, vec![(1, cmd("MSET a 1")), (2, cmd("MSET ax 3"))]);
        assert!(split_by(&cmd("MSETNX a 1 b 2"), |_| Some(0)).is_none());
        assert!(split_by(&cmd("RENAME a b"), |_| Some(0)).is_none());
    }
}
