//! `Entry`: the one type that flows from the sources (snapshot decoder,
//! command stream) through the filter into the writer.
//!
//! A snapshot key normally travels whole as a DUMP payload (`Restore`), the
//! fast path. A key too big to hold, or one the target cannot RESTORE, travels
//! as `BigKeyStart`, element chunks, `BigKeyEnd`, and the writer turns the
//! chunks into ordinary commands. A replicated command carries the source
//! replication offset just after it, so the writer can say how far it applied.

use bytes::Bytes;

/// A logical database number (`SELECT n`).
pub type DbIndex = u32;

/// A byte offset in the source's replication stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplOffset(pub u64);

/// How a snapshot key was last used on the source, carried to the target when
/// it supports it (`RESTORE … IDLETIME n` / `FREQ n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub idle_secs: Option<u64>,
    pub freq: Option<u8>,
}

/// One unit of work for the writer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A whole snapshot key as a DUMP payload (type byte + value + version + CRC64),
    /// built for the source's RDB version; the writer rewrites the trailer if needed.
    Restore {
        db: DbIndex,
        key: Bytes,
        payload: Bytes,
        /// Absolute expiry in unix milliseconds.
        expire_at_ms: Option<i64>,
        usage: KeyUsage,
    },
    /// A snapshot key whose value follows as element chunks.
    BigKeyStart {
        db: DbIndex,
        key: Bytes,
        /// The RDB type id of the value (`RDB_TYPE_*`).
        rdb_type: u8,
        expire_at_ms: Option<i64>,
    },
    /// The next members of the key opened by `BigKeyStart`.
    BigKeyChunk(rsm_rdb::Elements),
    /// The key opened by `BigKeyStart` is complete: apply its expiry.
    BigKeyEnd,
    /// A command from the replication stream (or any ordinary write).
    Command(Command),
    /// The commands of one `MULTI … EXEC` block, in order (without MULTI/EXEC),
    /// with the offset just after the EXEC. Sent as a transaction when every
    /// key lives on one target node, otherwise split in order.
    Transaction(Vec<Command>),
}

/// One command, in the database it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub db: DbIndex,
    /// The command name and its arguments, exactly as received.
    pub args: Vec<Bytes>,
    /// The source replication offset just after this command (0 for commands
    /// that do not come from a replication stream).
    pub offset: ReplOffset,
    /// Where its keys are, found once by whoever read the command against a command
    /// table (replay for the stream); the writer routes by it.
    pub route: Route,
}

/// Where a command goes on the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Route {
    /// Not looked up yet (a command made outside replay): the writer classifies it with
    /// the built-in table and the key filter.
    #[default]
    Unclassified,
    /// Keys at these argument positions; `slot` when they all hash to one slot.
    Keys { at: Vec<usize>, slot: Option<u16> },
    /// No key, meant for every master (`FLUSHALL`, `FUNCTION LOAD` …).
    Broadcast,
    /// No key that routes it (a keyless write, arguments that do not fit the command's
    /// spec): any one master, which answers for it.
    AnyNode,
}

impl Route {
    /// Keys at `at` in `args`, with their common slot if they share one.
    pub fn keys(args: &[Bytes], at: Vec<usize>) -> Route {
        let mut slots = at
            .iter()
            .filter_map(|&i| args.get(i))
            .map(|k| rsm_cluster::key_slot(k).get());
        let first = slots.next();
        let slot = match first {
            Some(s) if slots.all(|x| x == s) => Some(s),
            _ => None,
        };
        Route::Keys { at, slot }
    }
}

impl Command {
    pub fn new(db: DbIndex, args: Vec<Bytes>, offset: ReplOffset) -> Command {
        Command {
            db,
            args,
            offset,
            route: Route::Unclassified,
        }
    }

    /// The command name in upper case (names arrive in any case).
    pub fn name(&self) -> String {
        self.args
            .first()
            .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
            .unwrap_or_default()
    }
}
