//! Stream commands on their way to the writer: relative TTLs made absolute
//! (a replay that runs late must not extend a key's life), `RESTORE-ASKING`
//! made plain, `FUNCTION LOAD` given `REPLACE` (a keyless command has no slot
//! marker to keep it from being applied twice), then the command table and
//! `--filterkey` decide what is kept.
//!
//! The rewrites come first: the route found after them holds argument positions, and
//! must be those of the arguments that will be sent.
//!
//! Nothing dropped silently: every command left out comes back as a [`Dropped`], which
//! the shard counts and, unless routine, logs; its offset still moves the watermark.
//!
//! Pure apart from the counters it returns: the shard loop applies the verdicts.

use std::fmt;

use rsm_command::entry::{Command, Entry, ReplOffset, Route};
use rsm_command::filter::commands::{route_command, DropReason};
use rsm_command::filter::KeyPrefixes;
use rsm_command::table::{rewrite_for_replay, CommandTable};
use rsm_writer::sync_marker::FlushScope;

/// What to do with one stream entry.
#[derive(Debug)]
pub enum Replay {
    /// Give this to the writer (a lone source flush excepted: see [`flush_of`]).
    Write(Entry),
    /// Nothing to write; the offset still moves past it, or the watermark would wait at
    /// the dropped command for ever.
    Dropped {
        /// Just after the entry: where the watermark may move once everything before it
        /// is acknowledged.
        offset: ReplOffset,
        /// What was left out, as also returned beside the verdict.
        dropped: Vec<Dropped>,
    },
}

/// One dropped command, for the log and the counters.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The command's name, upper case: what the log names.
    pub command: String,
    /// Why it was left out; it decides whether the operator is told.
    pub reason: DropReason,
}

impl Dropped {
    /// Skips (PING, PUBLISH…) are routine, and so is a command no key of which
    /// `--filterkey` keeps (the operator asked for that); the rest is data the
    /// operator should hear about.
    pub fn is_routine(&self) -> bool {
        matches!(
            self.reason,
            DropReason::Skipped(_) | DropReason::NoKeyMatches | DropReason::OtherShard { .. }
        )
    }
}

/// `NAME (reason)`, as the log shows it.
impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.command, self.reason)
    }
}

/// A source `FLUSHALL`/`FLUSHDB` given on its own (not inside a transaction): the shard
/// applies it to what it owns in the target, as a barrier in its stream, instead of
/// sending it on (see `writer::sync_marker::flush_shard_keys`). With the offset just
/// after it.
pub fn flush_of(entry: &Entry) -> Option<(FlushScope, ReplOffset)> {
    let Entry::Command(c) = entry else {
        return None;
    };
    let name = c.args.first()?;
    // Only a lone command: inside a transaction a flush is not a barrier, and the block
    // goes to the target as it is (a known limit, in the README).
    let which = if name.eq_ignore_ascii_case(b"FLUSHALL") {
        FlushScope::All
    } else if name.eq_ignore_ascii_case(b"FLUSHDB") {
        // The db the source ran it in, as the last SELECT before it said.
        FlushScope::Db(c.db)
    } else {
        return None;
    };
    Some((which, c.offset))
}

/// Decide what happens to a stream entry. `now_ms` is what relative TTLs count from: when
/// the entry was received (the shard passes the moment it takes it from its spool).
pub fn prepare(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    entry: Entry,
    now_ms: i64,
) -> (Replay, Vec<Dropped>) {
    match entry {
        Entry::Command(cmd) => {
            // Kept before the command is consumed: a dropped one still moves the offset.
            let offset = cmd.offset;
            let mut dropped = Vec::new();
            // The drops come back twice: in the verdict, and beside it for the counters,
            // which also count the drops inside a transaction that is kept.
            match prepare_one(table, prefixes, cmd, now_ms, &mut dropped) {
                Some(cmd) => (Replay::Write(Entry::Command(cmd)), dropped),
                None => (
                    Replay::Dropped {
                        offset,
                        dropped: dropped.clone(),
                    },
                    dropped,
                ),
            }
        }
        Entry::Transaction(cmds) => {
            // Every command of a block carries the offset just after its EXEC: the block
            // is applied whole, and its end is its place in the stream.
            let offset = cmds.last().map(|c| c.offset).unwrap_or_default();
            let mut dropped = Vec::new();
            // Filtered command by command; what is kept stays one entry.
            let kept: Vec<Command> = cmds
                .into_iter()
                .filter_map(|c| prepare_one(table, prefixes, c, now_ms, &mut dropped))
                .collect();
            // Nothing of the block kept: like a dropped command, its offset still moves.
            if kept.is_empty() {
                (
                    Replay::Dropped {
                        offset,
                        dropped: dropped.clone(),
                    },
                    dropped,
                )
            } else {
                (Replay::Write(Entry::Transaction(kept)), dropped)
            }
        }
        // The stream reader makes only commands and transactions; anything else passes.
        other => (Replay::Write(other), Vec::new()),
    }
}

/// A shard of a cluster source writes only the slots it was planned with. During a
/// move, the importing node's stream carries the moving slots too (`RESTORE-ASKING` of
/// each key, writes sent with `ASKING`, a Valkey 9 import), while the old owner's shard
/// still writes them: applying both would race two streams over one key. So the
/// importing shard leaves them out, and once the move has settled the manager copies
/// the shards that gained or lost slots again from their new owners.
pub fn own_slots_only(replay: Replay, own: &[bool], dropped: &mut Vec<Dropped>) -> Replay {
    let Replay::Write(entry) = replay else {
        return replay;
    };
    let (slot, offset, name) = match &entry {
        Entry::Command(c) => (route_slot(&c.route), c.offset, c.args.first()),
        Entry::Transaction(cmds) => (
            cmds.iter().find_map(|c| route_slot(&c.route)),
            cmds.last().map(|c| c.offset).unwrap_or_default(),
            cmds.first().and_then(|c| c.args.first()),
        ),
        _ => (None, ReplOffset::default(), None),
    };
    match slot {
        Some(slot) if !own.get(usize::from(slot)).copied().unwrap_or(true) => {
            let d = Dropped {
                command: name
                    .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                    .unwrap_or_default(),
                reason: DropReason::OtherShard { slot },
            };
            dropped.push(d.clone());
            Replay::Dropped {
                offset,
                dropped: vec![d],
            }
        }
        _ => Replay::Write(entry),
    }
}

fn route_slot(route: &Route) -> Option<u16> {
    match route {
        Route::Keys { slot, .. } => *slot,
        _ => None,
    }
}

/// One command, rewritten for replay, then filtered and routed by the table on the
/// rewritten arguments. `None` when it is left out, with the reason pushed to `dropped`.
fn prepare_one(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    cmd: Command,
    now_ms: i64,
    dropped: &mut Vec<Dropped>,
) -> Option<Command> {
    let Command {
        db, args, offset, ..
    } = cmd;
    let args = rewrite_for_replay(args, now_ms);
    match route_command(table, prefixes, &args) {
        // Cut by `--filterkey`: only the keys it keeps go, and the route is theirs.
        Ok((cut, route)) => Some(Command {
            db,
            args: cut.unwrap_or(args),
            offset,
            route,
        }),
        // Named as rewritten: a `RESTORE-ASKING` is logged as the `RESTORE` it became.
        Err(reason) => {
            dropped.push(Dropped {
                command: args
                    .first()
                    .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                    .unwrap_or_default(),
                reason,
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A stream command in db 0, with the offset just after it at 10.
    fn cmd(args: &[&str]) -> Command {
        Command::new(
            0,
            args.iter().map(|a| Bytes::from(a.to_string())).collect(),
            ReplOffset(10),
        )
    }

    #[test]
    fn a_shard_writes_only_its_own_slots() {
        let table = CommandTable::builtin();
        let mut own = vec![false; 16384];
        let mine = rsm_cluster::key_slot(b"mine").index();
        own[mine] = true;
        let write = |args: &[&str]| {
            let (r, _) = prepare(
                &table,
                &KeyPrefixes::default(),
                Entry::Command(cmd(args)),
                0,
            );
            r
        };
        let mut dropped = Vec::new();
        let kept = own_slots_only(write(&["INCR", "mine"]), &own, &mut dropped);
        assert!(matches!(kept, Replay::Write(_)));
        assert!(dropped.is_empty());
        // A key of a slot moving into this node: left out, routinely, its offset kept.
        let other = own_slots_only(write(&["RPUSH", "theirs", "x"]), &own, &mut dropped);
        assert!(matches!(
            other,
            Replay::Dropped {
                offset: ReplOffset(10),
                ..
            }
        ));
        assert_eq!(dropped.len(), 1);
        assert!(matches!(dropped[0].reason, DropReason::OtherShard { .. }));
        assert!(dropped[0].is_routine());
    }

    #[test]
    fn relative_ttls_become_absolute_and_pings_drop() {
        let table = CommandTable::builtin();
        // A 6.2 source's relative TTL, as its stream carries it.
        let (r, _) = prepare(
            &table,
            &KeyPrefixes::default(),
            Entry::Command(cmd(&["SET", "k", "v", "EX", "10"])),
            1_000_000,
        );
        let Replay::Write(Entry::Command(c)) = r else {
            panic!("{r:?}")
        };
        // Received at 1 000 000 ms with 10 s to live: it dies at 1 010 000 however late
        // the target gets it.
        assert_eq!(c.args[3], Bytes::from("PXAT"));
        assert_eq!(c.args[4], Bytes::from("1010000"));

        // Not data for the target, but its offset still moves, and the skip is routine.
        let (r, dropped) = prepare(
            &table,
            &KeyPrefixes::default(),
            Entry::Command(cmd(&["PUBLISH", "ch", "m"])),
            0,
        );
        assert!(matches!(
            r,
            Replay::Dropped {
                offset: ReplOffset(10),
                ..
            }
        ));
        assert!(dropped[0].is_routine());
    }

    #[test]
    fn the_route_is_found_here_once() {
        let table = CommandTable::builtin();
        // Under a filter, so that a cut command shows its route is that of what is left.
        let prefixes = KeyPrefixes::parse("k").unwrap();
        let slot = |k: &[u8]| rsm_cluster::key_slot(k).get();
        let write = |args: &[&str]| match prepare(&table, &prefixes, Entry::Command(cmd(args)), 0).0
        {
            Replay::Write(Entry::Command(c)) => c,
            other => panic!("{other:?}"),
        };
        // The route comes with the verdict: the writer never looks the command up again.
        let c = write(&["SET", "k1", "v"]);
        assert_eq!(
            c.route,
            rsm_command::entry::Route::Keys {
                at: vec![1],
                slot: Some(slot(b"k1"))
            }
        );
        // Cut by the filter: the route is that of what is left.
        let c = write(&["MSET", "x", "1", "k2", "2", "k3", "3"]);
        assert_eq!(c.args.len(), 5);
        assert_eq!(
            c.route,
            rsm_command::entry::Route::Keys {
                at: vec![1, 3],
                slot: None
            }
        );
        // Keyless: every master (the shard turns a lone flush into its own barrier).
        assert_eq!(
            write(&["FLUSHALL"]).route,
            rsm_command::entry::Route::Broadcast
        );
    }

    #[test]
    fn filter_inside_transactions() {
        let table = CommandTable::builtin();
        let prefixes = KeyPrefixes::parse("keep:").unwrap();
        // One key the filter keeps and one it does not, in one block.
        let tx = Entry::Transaction(vec![
            cmd(&["SET", "keep:a", "1"]),
            cmd(&["SET", "drop:b", "2"]),
        ]);
        let (r, dropped) = prepare(&table, &prefixes, tx, 0);
        // What the filter keeps of a block is still a block; what it leaves is counted.
        let Replay::Write(Entry::Transaction(kept)) = r else {
            panic!()
        };
        assert_eq!(kept.len(), 1);
        assert_eq!(dropped.len(), 1);
    }
}
