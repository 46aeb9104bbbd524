//! `--filterkey` for stream commands, and the drop of commands the target must
//! not see. Pure: the command table says which arguments are keys, the
//! prefixes say which keys pass; the caller counts every `Drop` by reason.
//!
//! - every key matches → `Keep`; none → `Drop(NoKeyMatches)`;
//! - mixed → the matching keys only, where the command splits per key
//!   (`MSET k1 v1 k2 v2` → `MSET k1 v1`), otherwise `Drop(MixedKeys)`: an
//!   all-or-nothing command (RENAME, SMOVE, MSETNX …) cannot be half-applied;
//! - keyless: `Broadcast` kept, `Skip` dropped, unreadable commands dropped.
//! - cross-db commands (`MOVE`, `COPY … DB`, `SWAPDB`) are judged by their keys
//!   like any other; whether the target can take them is the writer's call.

use std::fmt;

use bytes::Bytes;

use crate::entry::Route;
use crate::filter::KeyPrefixes;
use crate::table::{CommandClass, CommandTable, SkipReason, SplitError, UnsupportedReason};

/// The filter's answer for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterVerdict {
    Keep,
    Drop(DropReason),
    /// Keep this reduced command instead (only the matching keys).
    Rewrite(Vec<Bytes>),
}

/// Why a command was dropped; one counter per variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Not for the target at all (PING, REPLCONF, PUBLISH …).
    Skipped(SkipReason),
    /// No key passes `--filterkey`.
    NoKeyMatches,
    /// Some keys pass and some do not, and the command cannot be split.
    MixedKeys { command: String },
    /// Unknown command, bad arguments, or a keyless write.
    Unsupported(UnsupportedReason),
    /// Its slot is not one of the shard's: a slot moving into the shard's node (a
    /// reshard's `RESTORE-ASKING`, a Valkey 9 slot import) is not the shard's until the
    /// move has settled, and then the shard is copied again with it.
    OtherShard { slot: u16 },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Skipped(r) => write!(f, "skipped: {r}"),
            DropReason::NoKeyMatches => f.write_str("no key matches --filterkey"),
            DropReason::MixedKeys { command } => write!(
                f,
                "{command}: only some keys match --filterkey and the command cannot be split"
            ),
            DropReason::Unsupported(r) => write!(f, "unsupported: {r}"),
            DropReason::OtherShard { slot } => write!(
                f,
                "slot {slot} is not this shard's (moving in the source: copied from its new owner once settled)"
            ),
        }
    }
}

/// Decide what happens to one stream command (`args[0]` is the name).
pub fn filter_command(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    args: &[Bytes],
) -> FilterVerdict {
    verdict(table, prefixes, args, table.class(args))
}

/// The filter's verdict and, for what is kept, where it goes on the target: one table
/// lookup for both. `Ok((Some(args), _))` when the filter cut the command.
pub fn route_command(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    args: &[Bytes],
) -> Result<(Option<Vec<Bytes>>, Route), DropReason> {
    let class = table.class(args);
    let (cut, class) = match verdict(table, prefixes, args, class.clone()) {
        FilterVerdict::Keep => (None, class),
        FilterVerdict::Rewrite(cut) => {
            let class = table.class(&cut);
            (Some(cut), class)
        }
        FilterVerdict::Drop(reason) => return Err(reason),
    };
    let routed = cut.as_deref().unwrap_or(args);
    match table.route_of(routed, class) {
        Some(route) => Ok((cut, route)),
        None => Err(DropReason::Skipped(SkipReason::NoDataEffect)),
    }
}

fn verdict(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    args: &[Bytes],
    class: CommandClass,
) -> FilterVerdict {
    let keys = match class {
        CommandClass::Keyed { keys } => keys,
        CommandClass::Broadcast => return FilterVerdict::Keep,
        CommandClass::Skip(r) => return FilterVerdict::Drop(DropReason::Skipped(r)),
        CommandClass::Unsupported(UnsupportedReason::CrossDb) => match table.key_indices(args) {
            Ok(keys) if !keys.is_empty() => keys,
            // SWAPDB: nothing to filter by.
            _ => return FilterVerdict::Keep,
        },
        CommandClass::Unsupported(r) => return FilterVerdict::Drop(DropReason::Unsupported(r)),
    };
    if prefixes.is_empty() {
        return FilterVerdict::Keep;
    }
    let matching = keys
        .iter()
        .filter(|&&k| args.get(k).is_some_and(|key| prefixes.keeps(key)))
        .count();
    if matching == keys.len() {
        return FilterVerdict::Keep;
    }
    if matching == 0 {
        return FilterVerdict::Drop(DropReason::NoKeyMatches);
    }
    match table.partition(args, |key| prefixes.keeps(key)) {
        Ok(parts) => match parts.into_iter().find(|(keep, _)| *keep) {
            Some((_, cmd)) => FilterVerdict::Rewrite(cmd),
            None => FilterVerdict::Drop(DropReason::NoKeyMatches),
        },
        Err(SplitError::Keys(e)) => {
            FilterVerdict::Drop(DropReason::Unsupported(UnsupportedReason::Keys(e)))
        }
        Err(_) => FilterVerdict::Drop(DropReason::MixedKeys {
            command: args
                .first()
                .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                .unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn verdict(prefixes: &str, words: &[&str]) -> FilterVerdict {
        let t = CommandTable::builtin();
        let p = if prefixes.is_empty() {
            KeyPrefixes::default()
        } else {
            KeyPrefixes::parse(prefixes).expect("valid prefixes")
        };
        filter_command(&t, &p, &a(words))
    }

    #[test]
    fn all_keys_match_or_none() {
        assert_eq!(verdict("u:", &["SET", "u:1", "v"]), FilterVerdict::Keep);
        assert_eq!(
            verdict("u:|o:", &["RENAME", "u:1", "o:1"]),
            FilterVerdict::Keep
        );
        assert_eq!(
            verdict("u:", &["SET", "x:1", "v"]),
            FilterVerdict::Drop(DropReason::NoKeyMatches)
        );
        // No prefixes: every keyed command passes.
        assert_eq!(verdict("", &["SET", "x:1", "v"]), FilterVerdict::Keep);
    }

    #[test]
    fn mixed_splittable_keeps_matching_keys() {
        assert_eq!(
            verdict("k1", &["MSET", "k1", "v1", "k2", "v2"]),
            FilterVerdict::Rewrite(a(&["MSET", "k1", "v1"]))
        );
        assert_eq!(
            verdict("u:", &["DEL", "u:1", "x", "u:2", "y"]),
            FilterVerdict::Rewrite(a(&["DEL", "u:1", "u:2"]))
        );
        assert_eq!(
            verdict("u:", &["UNLINK", "x", "u:2"]),
            FilterVerdict::Rewrite(a(&["UNLINK", "u:2"]))
        );
    }

    #[test]
    fn mixed_all_or_nothing_is_dropped_with_reason() {
        for cmd in [
            &["MSETNX", "u:1", "a", "x", "b"][..],
            &["RENAME", "u:1", "x"],
            &["SMOVE", "x", "u:1", "m"],
            &["SINTERSTORE", "u:d", "u:a", "x"],
            &["EVAL", "s", "2", "u:1", "x"],
        ] {
            match verdict("u:", cmd) {
                FilterVerdict::Drop(DropReason::MixedKeys { command }) => {
                    assert_eq!(command, cmd[0], "{cmd:?}")
                }
                other => panic!("{cmd:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn keyless_commands() {
        assert_eq!(verdict("u:", &["FLUSHALL"]), FilterVerdict::Keep);
        assert_eq!(
            verdict("u:", &["FUNCTION", "LOAD", "x"]),
            FilterVerdict::Keep
        );
        assert_eq!(
            verdict("u:", &["PING"]),
            FilterVerdict::Drop(DropReason::Skipped(SkipReason::Heartbeat))
        );
        assert_eq!(
            verdict("", &["PUBLISH", "__sentinel__:hello", "x"]),
            FilterVerdict::Drop(DropReason::Skipped(SkipReason::PubSub))
        );
        assert_eq!(verdict("u:", &["SWAPDB", "0", "1"]), FilterVerdict::Keep);
        assert!(matches!(
            verdict("", &["NOSUCH", "a"]),
            FilterVerdict::Drop(DropReason::Unsupported(UnsupportedReason::Keys(_)))
        ));
    }

    #[test]
    fn cross_db_commands_are_filtered_by_key() {
        assert_eq!(verdict("u:", &["MOVE", "u:1", "2"]), FilterVerdict::Keep);
        assert_eq!(
            verdict("u:", &["MOVE", "x", "2"]),
            FilterVerdict::Drop(DropReason::NoKeyMatches)
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let r = DropReason::MixedKeys {
            command: "RENAME".into(),
        };
        assert!(r.to_string().contains("cannot be split"));
        assert!(DropReason::NoKeyMatches.to_string().contains("--filterkey"));
    }
}
