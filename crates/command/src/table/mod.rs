//! The command table: which arguments of a command are keys, and what kind of
//! command it is. Sits between the stream reader and the filter/writer: every
//! replicated command is looked up here to be filtered by key, routed by slot,
//! split across slots, broadcast or skipped.
//!
//! The table comes from the servers themselves: the source's `COMMAND` reply
//! (legacy first/last/step triple on every version, 7.0+ key specs) merged over
//! a built-in table generated from the `COMMAND` output of every supported
//! server (`scripts/gen-command-table.py` → `builtin.txt`). The source wins for
//! the names it reports; a source without key specs (≤ 6.2) inherits the
//! built-in specs, which are more precise than its triple.
//!
//! Key finding follows `getKeysUsingKeySpecs` in Redis's `db.c` so that our
//! answer equals the server's own `COMMAND GETKEYS` (the integration tests
//! check this against real servers). The few commands whose specs are
//! `unknown`/`incomplete` (SORT, SORT_RO, MIGRATE) or that predate specs and
//! have movable keys (STRALGO) get the same hand-written rules as the server.

mod class;
mod parse;
mod ttl;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;

pub use class::{CommandClass, SkipReason, SplitError, SplitKind, UnsupportedReason};
pub use parse::CommandTableError;
pub use ttl::{absolutize_ttl, restore_asking_to_restore, rewrite_for_replay};

/// Flags from the `COMMAND` reply that the engine looks at. Others are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommandFlags(u32);

impl CommandFlags {
    pub const WRITE: CommandFlags = CommandFlags(1 << 0);
    pub const READONLY: CommandFlags = CommandFlags(1 << 1);
    pub const DENYOOM: CommandFlags = CommandFlags(1 << 2);
    pub const ADMIN: CommandFlags = CommandFlags(1 << 3);
    pub const PUBSUB: CommandFlags = CommandFlags(1 << 4);
    pub const NOSCRIPT: CommandFlags = CommandFlags(1 << 5);
    pub const MOVABLEKEYS: CommandFlags = CommandFlags(1 << 6);
    pub const NO_MANDATORY_KEYS: CommandFlags = CommandFlags(1 << 7);
    pub const BLOCKING: CommandFlags = CommandFlags(1 << 8);
    pub const FAST: CommandFlags = CommandFlags(1 << 9);
    pub const MAY_REPLICATE: CommandFlags = CommandFlags(1 << 10);
    pub const MODULE: CommandFlags = CommandFlags(1 << 11);
    pub const ASKING: CommandFlags = CommandFlags(1 << 12);
    pub const NO_MULTI: CommandFlags = CommandFlags(1 << 13);

    /// The flag named as in the `COMMAND` reply (case-insensitive), if we track it.
    pub fn from_name(name: &[u8]) -> Option<CommandFlags> {
        let f = match name.to_ascii_lowercase().as_slice() {
            b"write" => Self::WRITE,
            b"readonly" => Self::READONLY,
            b"denyoom" => Self::DENYOOM,
            b"admin" => Self::ADMIN,
            b"pubsub" => Self::PUBSUB,
            b"noscript" => Self::NOSCRIPT,
            b"movablekeys" => Self::MOVABLEKEYS,
            b"no_mandatory_keys" => Self::NO_MANDATORY_KEYS,
            b"blocking" => Self::BLOCKING,
            b"fast" => Self::FAST,
            b"may_replicate" => Self::MAY_REPLICATE,
            b"module" => Self::MODULE,
            b"asking" => Self::ASKING,
            b"no_multi" => Self::NO_MULTI,
            _ => return None,
        };
        Some(f)
    }

    pub fn contains(self, other: CommandFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: CommandFlags) {
        self.0 |= other.0;
    }
}

/// Where a key spec starts looking (`begin_search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argument index (0 = the command name).
    Index(i32),
    /// The first key follows `keyword`, searched from `startfrom`
    /// (negative: from the end, backwards).
    Keyword { keyword: Bytes, startfrom: i32 },
    /// The server cannot describe it; hand-written rules apply.
    Unknown,
}

/// How a key spec finds its keys from the start point (`find_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// `lastkey` relative to the first key (negative: from the end),
    /// every `keystep`; with `limit` > 0 only `1/limit` of the remaining args.
    Range {
        lastkey: i32,
        keystep: i32,
        limit: i32,
    },
    /// The number of keys is at `keynumidx` (relative to the start), the first
    /// key `firstkey` after the start, every `keystep`.
    Keynum {
        keynumidx: i32,
        firstkey: i32,
        keystep: i32,
    },
    Unknown,
}

/// One key spec (Redis 7.0+ "Command key specifications").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// The spec's flags in lower case (`rw`, `ow`, `delete`, `incomplete`, `not_key`, …).
    pub flags: Vec<String>,
}

impl KeySpec {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// True when the server says this spec may miss keys or cannot describe them.
    fn is_incomplete(&self) -> bool {
        self.has_flag("incomplete")
            || self.begin == BeginSearch::Unknown
            || self.find == FindKeys::Unknown
    }
}

/// The legacy `first key, last key, step` triple every server version reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyKeys {
    pub first: i32,
    pub last: i32,
    pub step: i32,
}

/// What the table knows about one command or subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower case; subcommands as `container|sub` (`xgroup|create`).
    pub name: String,
    /// Positive: exact argument count (name included); negative: at least `-arity`.
    pub arity: i32,
    pub flags: CommandFlags,
    pub legacy: LegacyKeys,
    /// Empty for a source ≤ 6.2 (unless inherited from the built-in table).
    pub key_specs: Vec<KeySpec>,
}

/// Why the keys of a command could not be found. The caller counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("unknown command '{0}': neither the source nor the built-in table describe it")]
    Unknown(String),
    #[error("wrong number of arguments for '{name}': {got} given, arity {arity}")]
    Arity {
        name: String,
        arity: i32,
        got: usize,
    },
    #[error("'{name}': the number of keys at argument {index} is not a non-negative integer")]
    BadNumKeys { name: String, index: usize },
    #[error("'{name}': the key positions run past the {argc} arguments given")]
    OutOfRange { name: String, argc: usize },
    #[error("'{name}' has movable keys and no key specs; cannot find its keys")]
    MovableWithoutSpecs { name: String },
}

/// Name → spec. Cheap to clone (a few hundred entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandTable {
    commands: HashMap<String, CommandSpec>,
}

/// Text of the generated built-in table (see `scripts/gen-command-table.py`).
const BUILTIN: &str = include_str!("builtin.txt");

impl CommandTable {
    /// The table generated from Redis 5.0 → 8.2 and Valkey 8.1 → 9.1.
    pub fn builtin() -> CommandTable {
        CommandTable::builtin_ref().clone()
    }

    /// The built-in table without a copy, for per-command lookups on the hot path.
    pub fn builtin_ref() -> &'static CommandTable {
        static TABLE: OnceLock<CommandTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            // The text is compiled in; the unit test `builtin_table_parses`
            // proves it parses, so this cannot fail at run time.
            #[allow(clippy::expect_used)] // why: compiled-in text, proven by a unit test
            parse::parse_builtin(BUILTIN).expect("builtin.txt parses (unit-tested)")
        })
    }

    /// Parse a source's `COMMAND` reply (RESP2 or RESP3; any version).
    pub fn from_command_reply(reply: &rsm_resp::Frame) -> Result<CommandTable, CommandTableError> {
        parse::parse_command_reply(reply)
    }

    /// The built-in table overlaid with a source's `COMMAND` reply: what the
    /// source says wins, except that a source entry without key specs keeps
    /// the built-in ones (same command, older server: the positions agree and
    /// the specs also cover movable keys).
    pub fn for_source(reply: &rsm_resp::Frame) -> Result<CommandTable, CommandTableError> {
        let mut table = CommandTable::builtin();
        table.merge(CommandTable::from_command_reply(reply)?);
        Ok(table)
    }

    /// Overlay `other` on `self` (see [`CommandTable::for_source`]).
    pub fn merge(&mut self, other: CommandTable) {
        for (name, mut spec) in other.commands {
            if spec.key_specs.is_empty() {
                if let Some(old) = self.commands.get(&name) {
                    spec.key_specs = old.key_specs.clone();
                }
            }
            self.commands.insert(name, spec);
        }
    }

    pub fn insert(&mut self, spec: CommandSpec) {
        self.commands.insert(spec.name.clone(), spec);
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Every name in the table (commands and `container|sub` entries), unordered.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    /// Look up by exact table name (`get`, `xgroup|create`).
    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.get(name)
    }

    /// The spec for a command line: `container|sub` when the table has it,
    /// otherwise the command itself (a ≤ 6.2 source describes containers such
    /// as XGROUP as one command).
    pub fn lookup(&self, args: &[Bytes]) -> Result<&CommandSpec, CommandError> {
        let name = args.first().ok_or(CommandError::Empty)?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if let Some(sub) = args.get(1) {
            let full = format!(
                "{name}|{}",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            );
            if let Some(spec) = self.commands.get(&full) {
                return Ok(spec);
            }
        }
        self.commands.get(&name).ok_or(CommandError::Unknown(name))
    }

    /// The indices into `args` (0 = command name) of the keys, in the order
    /// the server's `COMMAND GETKEYS` lists them (key-spec order).
    pub fn key_indices(&self, args: &[Bytes]) -> Result<Vec<usize>, CommandError> {
        let spec = self.lookup(args)?;
        key_indices_of(spec, args)
    }

    /// The key arguments themselves, in [`CommandTable::key_indices`] order.
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> Result<Vec<&'a Bytes>, CommandError> {
        Ok(self
            .key_indices(args)?
            .into_iter()
            .filter_map(|i| args.get(i))
            .collect())
    }
}

fn key_indices_of(spec: &CommandSpec, args: &[Bytes]) -> Result<Vec<usize>, CommandError> {
    let argc = args.len();
    let arity_ok = if spec.arity >= 0 {
        argc == spec.arity as usize
    } else {
        argc >= spec.arity.unsigned_abs() as usize
    };
    if !arity_ok {
        return Err(CommandError::Arity {
            name: spec.name.clone(),
            arity: spec.arity,
            got: argc,
        });
    }
    let base = spec.name.split('|').next().unwrap_or(&spec.name);
    let incomplete = spec.key_specs.iter().any(KeySpec::is_incomplete);
    if spec.key_specs.is_empty() || incomplete {
        // The server falls back to its getkeys procedure here; so do we.
        if let Some(keys) = special_keys(base, args) {
            return Ok(keys);
        }
        if spec.key_specs.is_empty() {
            if spec.flags.contains(CommandFlags::MOVABLEKEYS) {
                return Err(CommandError::MovableWithoutSpecs {
                    name: spec.name.clone(),
                });
            }
            return legacy_keys(spec, argc);
        }
    }
    let mut keys = Vec::new();
    for ks in &spec.key_specs {
        if ks.has_flag("not_key") || ks.is_incomplete() {
            continue;
        }
        spec_keys(spec, ks, args, &mut keys)?;
    }
    Ok(keys)
}

/// The legacy triple: keys from `first` to `last` (negative: from the end) every `step`.
fn legacy_keys(spec: &CommandSpec, argc: usize) -> Result<Vec<usize>, CommandError> {
    let LegacyKeys { first, last, step } = spec.legacy;
    if first <= 0 {
        return Ok(Vec::new());
    }
    let last = if last < 0 {
        argc as i64 + last as i64
    } else {
        last as i64
    };
    let step = step.max(1) as usize;
    let first = first as usize;
    if last < first as i64 {
        return Ok(Vec::new());
    }
    if last as usize >= argc {
        return Err(CommandError::OutOfRange {
            name: spec.name.clone(),
            argc,
        });
    }
    Ok((first..=last as usize).step_by(step).collect())
}

/// One key spec, as `getKeysUsingKeySpecs` applies it: where the keys begin (an index,
/// or after a keyword), then how far they go (a range, or a count given in the command).
fn spec_keys(
    spec: &CommandSpec,
    ks: &KeySpec,
    args: &[Bytes],
    keys: &mut Vec<usize>,
) -> Result<(), CommandError> {
    let argc = args.len() as i64;
    let out_of_range = || CommandError::OutOfRange {
        name: spec.name.clone(),
        argc: args.len(),
    };
    let Some(first) = begin_search(&ks.begin, args) else {
        return Ok(());
    };
    if first < 1 {
        // Only a malformed reply says this: argument 0 is the command name.
        return Err(out_of_range());
    }
    let Some((first, last, step)) = find_keys(spec, &ks.find, args, first)? else {
        return Ok(());
    };
    if last < first {
        // e.g. `DEL` with its range past the end: nothing to find, as the server does
        // for a command whose arity already passed.
        return Ok(());
    }
    if last >= argc || first >= argc {
        return Err(out_of_range());
    }
    let mut i = first;
    while i <= last {
        keys.push(i as usize);
        i += step;
    }
    Ok(())
}

/// The index of a spec's first key; `None` when the spec finds none in this command (an
/// optional keyword absent, or a spec the server itself cannot apply).
fn begin_search(begin: &BeginSearch, args: &[Bytes]) -> Option<i64> {
    let argc = args.len() as i64;
    let (keyword, startfrom) = match begin {
        BeginSearch::Index(i) => return Some(*i as i64),
        BeginSearch::Keyword { keyword, startfrom } => (keyword, *startfrom as i64),
        BeginSearch::Unknown => return None,
    };
    // A negative start searches backwards from the end (e.g. `STREAMS` in XREAD is found
    // from the right, since a key may be spelled "STREAMS" too).
    let (start, end) = if startfrom > 0 {
        (startfrom, argc - 1)
    } else {
        (argc + startfrom, 1)
    };
    let mut i = start;
    // Like the server: the end index itself is not examined (a keyword
    // in last place has no key after it).
    while i != end {
        let arg = usize::try_from(i)
            .ok()
            .filter(|_| i >= 1)
            .and_then(|i| args.get(i))?;
        if arg.eq_ignore_ascii_case(keyword) {
            return Some(i + 1);
        }
        i += if start <= end { 1 } else { -1 };
    }
    None
}

/// From the first key, the (first, last, step) of the keys; `None` when the command
/// names no keys through this spec (`EVAL script 0`).
fn find_keys(
    spec: &CommandSpec,
    find: &FindKeys,
    args: &[Bytes],
    first: i64,
) -> Result<Option<(i64, i64, i64)>, CommandError> {
    let argc = args.len() as i64;
    match find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let lastkey = *lastkey as i64;
            let last = if lastkey >= 0 {
                first + lastkey
            } else if *limit <= 0 {
                argc + lastkey
            } else {
                first + ((argc - first) / *limit as i64 + lastkey)
            };
            Ok(Some((first, last, (*keystep).max(1) as i64)))
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let step = (*keystep).max(1) as i64;
            keynum_keys(spec, args, first, *keynumidx as i64, *firstkey as i64, step)
        }
        FindKeys::Unknown => Ok(None),
    }
}

/// Keys counted by an argument of the command (`numkeys` of EVAL, ZUNION, …).
fn keynum_keys(
    spec: &CommandSpec,
    args: &[Bytes],
    first: i64,
    keynumidx: i64,
    firstkey: i64,
    step: i64,
) -> Result<Option<(i64, i64, i64)>, CommandError> {
    let argc = args.len() as i64;
    let out_of_range = || CommandError::OutOfRange {
        name: spec.name.clone(),
        argc: args.len(),
    };
    let idx = first + keynumidx;
    let arg = usize::try_from(idx)
        .ok()
        .and_then(|i| args.get(i))
        .ok_or_else(out_of_range)?;
    let numkeys: i64 = std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n: &i64| *n >= 0)
        .ok_or_else(|| CommandError::BadNumKeys {
            name: spec.name.clone(),
            index: idx as usize,
        })?;
    if numkeys > argc {
        // Cannot fit; also keeps the arithmetic below from overflowing.
        return Err(out_of_range());
    }
    if numkeys == 0 {
        // EVAL script 0, ZUNION 0 …: the server's getkeys proc says no keys.
        return Ok(None);
    }
    let first = first + firstkey;
    // numkeys counts keys, each `keystep` arguments apart.
    Ok(Some((first, first + (numkeys - 1) * step, step)))
}

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// The server's hand-written getkeys procedures for the commands whose specs
/// cannot describe them. `None`: no such rule for this command.
fn special_keys(base: &str, args: &[Bytes]) -> Option<Vec<usize>> {
    match base {
        // sortGetKeys / sortROGetKeys: key 1, plus the last `STORE dst`.
        "sort" | "sort_ro" => {
            let mut keys = vec![1];
            let mut store = None;
            let mut i = 2;
            while let Some(a) = args.get(i) {
                if eq(a, "limit") {
                    i += 2;
                } else if eq(a, "get") || eq(a, "by") {
                    i += 1;
                } else if base == "sort" && eq(a, "store") && i + 1 < args.len() {
                    store = Some(i + 1);
                    i += 1;
                }
                i += 1;
            }
            keys.extend(store);
            Some(keys)
        }
        // migrateGetKeys: key 3, or with an empty key 3 the keys after `KEYS`.
        "migrate" => {
            let mut i = 6;
            while let Some(a) = args.get(i) {
                if eq(a, "keys") {
                    if args.get(3).is_some_and(|k| !k.is_empty()) {
                        return Some(Vec::new());
                    }
                    return Some((i + 1..args.len()).collect());
                }
                if eq(a, "auth") {
                    i += 1;
                } else if eq(a, "auth2") {
                    i += 2;
                }
                i += 1;
            }
            Some(if args.len() > 3 { vec![3] } else { Vec::new() })
        }
        // Redis 6.x `STRALGO LCS KEYS k1 k2` (removed in 7.0, no specs).
        "stralgo" => {
            let pos = args.iter().position(|a| eq(a, "keys"))?;
            Some((pos + 1..args.len().min(pos + 3)).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
