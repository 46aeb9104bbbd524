//! What to do with a replicated command, and how a multi-key command may be
//! cut into per-slot (or per-node, or per-filter-verdict) commands.
//!
//! Broadcast choice (documented for operators): `FLUSHALL`/`FLUSHDB`,
//! `FUNCTION LOAD/DELETE/FLUSH/RESTORE` and `SCRIPT LOAD/FLUSH` carry no key,
//! so they cannot be routed; they go to every target master. For functions and
//! scripts that is what the source cluster looks like (each master holds the
//! library). For `FLUSHALL`/`FLUSHDB` it is the conservative choice for data:
//! a source cluster is flushed master by master, and a target that kept keys
//! the source removed would be a silent divergence. The price: a flush run on
//! one source master only also empties the target's copy of the other
//! masters' keys. The caller counts and logs every broadcast.

use std::fmt;

use bytes::Bytes;

use super::{CommandError, CommandFlags, CommandTable};
use crate::entry::Route;

/// The decision for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandClass {
    /// Route by these keys (indices into the arguments, key-spec order).
    Keyed { keys: Vec<usize> },
    /// Keyless; must reach every target master.
    Broadcast,
    /// Not applied to the target; count it.
    Skip(SkipReason),
    /// Cannot be replayed as is; count it and say why.
    Unsupported(UnsupportedReason),
}

/// Why a command is not applied to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `PING` (the source's keep-alive).
    Heartbeat,
    /// `REPLCONF …` (replication control between source and replica).
    ReplicationControl,
    /// `PUBLISH`/`SPUBLISH`: a message, not data (e.g. sentinel hellos).
    PubSub,
    /// `CLUSTER …` (e.g. Valkey 9 `CLUSTER SYNCSLOTS`): node-local.
    ClusterInternal,
    /// `SELECT`: the stream reader tracks the database itself.
    Select,
    /// `MULTI`/`EXEC`/`DISCARD`: the stream reader groups transactions itself.
    Transaction,
    /// A keyless command that changes no data (`SCRIPT KILL`, `CONFIG …`, `ECHO` …).
    NoDataEffect,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Heartbeat => "keep-alive PING",
            SkipReason::ReplicationControl => "replication control (REPLCONF)",
            SkipReason::PubSub => "pub/sub message, not data",
            SkipReason::ClusterInternal => "cluster-internal command",
            SkipReason::Select => "SELECT is tracked by the stream reader",
            SkipReason::Transaction => "MULTI/EXEC is grouped by the stream reader",
            SkipReason::NoDataEffect => "keyless command without effect on data",
        })
    }
}

/// Why a command cannot be replayed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsupportedReason {
    /// `SWAPDB`, `MOVE`, `COPY … DB n`: crosses databases. A cluster target has
    /// only db 0 (unless Valkey's `cluster-databases` gives it more) and `--targetdb`
    /// folds every db into one; a target with the dbs and without `--targetdb` can
    /// still take it, which is the writer's call (the target answers for it).
    CrossDb,
    /// A write with no key (e.g. a 0-key `EVAL` from an old source): it cannot be
    /// routed, and sending it everywhere would repeat its effect.
    KeylessWrite,
    /// Neither the source nor the built-in table knows the command, or its
    /// arguments do not fit its spec.
    Keys(CommandError),
}

impl fmt::Display for UnsupportedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsupportedReason::CrossDb => {
                f.write_str("moves data between databases, which a target with one db cannot do")
            }
            UnsupportedReason::KeylessWrite => {
                f.write_str("a write without keys cannot be routed to one node")
            }
            UnsupportedReason::Keys(e) => write!(f, "{e}"),
        }
    }
}

/// How a multi-key command may be cut when its keys fall into different groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// Each key with the `step - 1` arguments after it is an independent unit:
    /// `DEL a b` = `DEL a` + `DEL b`, `MSET a 1 b 2` = `MSET a 1` + `MSET b 2`.
    PerKey(usize),
    /// The command means something only as a whole (MSETNX, RENAME, SMOVE,
    /// LMOVE, SINTERSTORE …): all keys must be in one group.
    AllOrNothing,
}

/// Why a command could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error(transparent)]
    Keys(#[from] CommandError),
    #[error("'{name}' has no keys to split by")]
    NoKeys { name: String },
    #[error("'{name}' cannot be split: its keys must stay together but fall into {groups} groups")]
    CrossGroup { name: String, groups: usize },
}

/// Commands whose keys are independent units, and the arguments per unit.
fn per_key_step(name: &str) -> Option<usize> {
    match name {
        "del" | "unlink" | "touch" | "exists" | "mget" => Some(1),
        "mset" => Some(2),
        _ => None,
    }
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

impl CommandTable {
    /// Classify one command (`args[0]` is the name). Never fails: a command we
    /// cannot read is `Unsupported` with the reason.
    pub fn class(&self, args: &[Bytes]) -> CommandClass {
        let Some(name) = args.first().map(|n| lower(n)) else {
            return CommandClass::Unsupported(UnsupportedReason::Keys(CommandError::Empty));
        };
        let sub = args.get(1).map(|s| lower(s)).unwrap_or_default();
        match name.as_str() {
            "ping" => return CommandClass::Skip(SkipReason::Heartbeat),
            "replconf" => return CommandClass::Skip(SkipReason::ReplicationControl),
            "publish" | "spublish" => return CommandClass::Skip(SkipReason::PubSub),
            "cluster" => return CommandClass::Skip(SkipReason::ClusterInternal),
            "select" => return CommandClass::Skip(SkipReason::Select),
            "multi" | "exec" | "discard" => return CommandClass::Skip(SkipReason::Transaction),
            "flushall" | "flushdb" => return CommandClass::Broadcast,
            "function" if matches!(sub.as_str(), "load" | "delete" | "flush" | "restore") => {
                return CommandClass::Broadcast
            }
            "script" if matches!(sub.as_str(), "load" | "flush") => return CommandClass::Broadcast,
            "swapdb" | "move" => return CommandClass::Unsupported(UnsupportedReason::CrossDb),
            // COPY src dst [DB n] [REPLACE]
            "copy" if args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db")) => {
                return CommandClass::Unsupported(UnsupportedReason::CrossDb)
            }
            _ => {}
        }
        let spec = match self.lookup(args) {
            Ok(s) => s,
            Err(e) => return CommandClass::Unsupported(UnsupportedReason::Keys(e)),
        };
        match self.key_indices(args) {
            Err(e) => CommandClass::Unsupported(UnsupportedReason::Keys(e)),
            Ok(keys) if !keys.is_empty() => CommandClass::Keyed { keys },
            // Scripts carry no `write` flag, yet a 0-key script may write.
            Ok(_)
                if spec.flags.contains(CommandFlags::WRITE)
                    || matches!(name.as_str(), "eval" | "evalsha" | "fcall") =>
            {
                CommandClass::Unsupported(UnsupportedReason::KeylessWrite)
            }
            Ok(_) => CommandClass::Skip(SkipReason::NoDataEffect),
        }
    }

    /// Where a command of this class goes on the target (`None`: nowhere, it is skipped).
    pub fn route_of(&self, args: &[Bytes], class: CommandClass) -> Option<Route> {
        match class {
            CommandClass::Keyed { keys } => Some(Route::keys(args, keys)),
            CommandClass::Broadcast => Some(Route::Broadcast),
            CommandClass::Skip(_) => None,
            CommandClass::Unsupported(UnsupportedReason::CrossDb) => {
                Some(match self.key_indices(args) {
                    Ok(keys) if !keys.is_empty() => Route::keys(args, keys),
                    _ => Route::AnyNode,
                })
            }
            CommandClass::Unsupported(_) => Some(Route::AnyNode),
        }
    }

    /// How this command may be split when its keys fall into different groups.
    pub fn split_kind(&self, args: &[Bytes]) -> SplitKind {
        let name = args.first().map(|n| lower(n)).unwrap_or_default();
        per_key_step(&name).map_or(SplitKind::AllOrNothing, SplitKind::PerKey)
    }

    /// Cut `args` into one command per group of keys (`group_of_key` gives a
    /// key's slot, node or filter verdict), groups in the order of their first
    /// key, arguments in their original order. One group → the command itself.
    pub fn split_by<G: PartialEq>(
        &self,
        args: &[Bytes],
        group_of_key: impl Fn(&[u8]) -> G,
    ) -> Result<Vec<Vec<Bytes>>, SplitError> {
        Ok(self
            .partition(args, group_of_key)?
            .into_iter()
            .map(|(_, cmd)| cmd)
            .collect())
    }

    /// Like [`CommandTable::split_by`], keeping each command's group.
    pub fn partition<G: PartialEq>(
        &self,
        args: &[Bytes],
        group_of_key: impl Fn(&[u8]) -> G,
    ) -> Result<Vec<(G, Vec<Bytes>)>, SplitError> {
        let keys = self.key_indices(args)?;
        self.partition_keys(args, &keys, group_of_key)
    }

    /// Like [`CommandTable::partition`], with the key positions already known.
    pub fn partition_keys<G: PartialEq>(
        &self,
        args: &[Bytes],
        keys: &[usize],
        group_of_key: impl Fn(&[u8]) -> G,
    ) -> Result<Vec<(G, Vec<Bytes>)>, SplitError> {
        let name = || args.first().map(|n| lower(n)).unwrap_or_default();
        let mut groups: Vec<(G, Vec<usize>)> = Vec::new();
        for &k in keys {
            let g = group_of_key(args.get(k).map_or(&[][..], |b| &b[..]));
            match groups.iter_mut().find(|(x, _)| *x == g) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((g, vec![k])),
            }
        }
        if groups.is_empty() {
            return Err(SplitError::NoKeys { name: name() });
        }
        if groups.len() == 1 {
            let (g, _) = groups.remove(0);
            return Ok(vec![(g, args.to_vec())]);
        }
        let step = match self.split_kind(args) {
            SplitKind::PerKey(step) if per_key_layout(keys, step, args.len()) => step,
            _ => {
                return Err(SplitError::CrossGroup {
                    name: name(),
                    groups: groups.len(),
                })
            }
        };
        // `per_key_layout` held: the keys are non-empty and every `k..k + step` unit lies
        // inside the command, so `get` finds each; a miss would be a bug, not data.
        let first = keys.first().copied().unwrap_or(args.len());
        let head = args.get(..first).unwrap_or(args);
        Ok(groups
            .into_iter()
            .map(|(g, ks)| {
                let mut cmd = head.to_vec();
                for k in ks {
                    cmd.extend_from_slice(args.get(k..k + step).unwrap_or_default());
                }
                (g, cmd)
            })
            .collect())
    }
}

/// True when the keys are `first, first+step, …` and each unit of `step`
/// arguments ends exactly at the end of the command (nothing trails the keys),
/// which is what makes `args[k..k+step]` safe and the split faithful.
fn per_key_layout(keys: &[usize], step: usize, argc: usize) -> bool {
    let Some(&first) = keys.first() else {
        return false;
    };
    step > 0
        && keys.iter().enumerate().all(|(i, &k)| k == first + i * step)
        && first + keys.len() * step == argc
}
