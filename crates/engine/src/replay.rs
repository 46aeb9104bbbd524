//! Stream commands on their way to the writer: relative TTLs made absolute
//! (a replay that runs late must not extend a key's life), `RESTORE-ASKING`
//! made plain, then the command table and `--filterkey` decide what is kept.
//!
//! Pure apart from the counters it returns: the shard loop applies the verdicts.

use std::fmt;

use rsm_command::entry::{Command, Entry, ReplOffset};
use rsm_command::filter::commands::{route_command, DropReason};
use rsm_command::filter::KeyPrefixes;
use rsm_command::table::{rewrite_for_replay, CommandTable};
use rsm_writer::sync_marker::FlushScope;

/// What to do with one stream entry.
#[derive(Debug)]
pub enum Replay {
    /// Give this to the writer.
    Write(Entry),
    /// Nothing to write; the offset still moves past it.
    Dropped {
        offset: ReplOffset,
        dropped: Vec<Dropped>,
    },
}

/// One dropped command, for the log and the counters.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub command: String,
    pub reason: DropReason,
}

impl Dropped {
    /// Skips (PING, PUBLISH…) are routine; the rest is data the operator
    /// should hear about.
    pub fn is_routine(&self) -> bool {
        matches!(
            self.reason,
            DropReason::Skipped(_) | DropReason::NoKeyMatches
        )
    }
}

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
    let which = if name.eq_ignore_ascii_case(b"FLUSHALL") {
        FlushScope::All
    } else if name.eq_ignore_ascii_case(b"FLUSHDB") {
        FlushScope::Db(c.db)
    } else {
        return None;
    };
    Some((which, c.offset))
}

/// Decide what happens to a stream entry. `now_ms` is when it was received.
pub fn prepare(
    table: &CommandTable,
    prefixes: &KeyPrefixes,
    entry: Entry,
    now_ms: i64,
) -> (Replay, Vec<Dropped>) {
    match entry {
        Entry::Command(cmd) => {
            let offset = cmd.offset;
            let mut dropped = Vec::new();
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
            let offset = cmds.last().map(|c| c.offset).unwrap_or_default();
            let mut dropped = Vec::new();
            let kept: Vec<Command> = cmds
                .into_iter()
                .filter_map(|c| prepare_one(table, prefixes, c, now_ms, &mut dropped))
                .collect();
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
        other => (Replay::Write(other), Vec::new()),
    }
}

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
        Ok((cut, route)) => Some(Command {
            db,
            args: cut.unwrap_or(args),
            offset,
            route,
        }),
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

    fn cmd(args: &[&str]) -> Command {
        Command::new(
            0,
            args.iter().map(|a| Bytes::from(a.to_string())).collect(),
            ReplOffset(10),
        )
    }

    #[test]
    fn relative_ttls_become_absolute_and_pings_drop() {
        let table = CommandTable::builtin();
        let (r, _) = prepare(
            &table,
            &KeyPrefixes::default(),
            Entry::Command(cmd(&["SET", "k", "v", "EX", "10"])),
            1_000_000,
        );
        let Replay::Write(Entry::Command(c)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(c.args[3], Bytes::from("PXAT"));
        assert_eq!(c.args[4], Bytes::from("1010000"));

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
        let prefixes = KeyPrefixes::parse("k").unwrap();
        let slot = |k: &[u8]| rsm_cluster::key_slot(k).get();
        let write = |args: &[&str]| match prepare(&table, &prefixes, Entry::Command(cmd(args)), 0).0
        {
            Replay::Write(Entry::Command(c)) => c,
            other => panic!("{other:?}"),
        };
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
        assert_eq!(
            write(&["FLUSHALL"]).route,
            rsm_command::entry::Route::Broadcast
        );
    }

    #[test]
    fn filter_inside_transactions() {
        let table = CommandTable::builtin();
        let prefixes = KeyPrefixes::parse("keep:").unwrap();
        let tx = Entry::Transaction(vec![
            cmd(&["SET", "keep:a", "1"]),
            cmd(&["SET", "drop:b", "2"]),
        ]);
        let (r, dropped) = prepare(&table, &prefixes, tx, 0);
        let Replay::Write(Entry::Transaction(kept)) = r else {
            panic!()
        };
        assert_eq!(kept.len(), 1);
        assert_eq!(dropped.len(), 1);
    }
}
