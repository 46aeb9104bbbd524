//! Re-encoding a decoded value for a target whose RDB version cannot load the value's own
//! type: the engine decodes a DUMP payload into [`Elements`] chunks, [`encode_for`] writes
//! the same value in a type the target knows, and the engine sends one `RESTORE`. Unlike
//! replaying commands, this keeps a stream's exact ids, pending entries (even those whose
//! message was deleted), delivery counts and times, consumers and counters.
//!
//! What it promises:
//! - the payload loads on the target (it uses only types the target's loader knows, and the
//!   target's version number in the trailer);
//! - what the target's format cannot hold is dropped and counted in [`Losses`], never
//!   silently: field TTLs, expired fields, stream counters, consumer active times, and a
//!   Redis 8.6/8.8 stream's IDMP state, NACK marks and pending entries without an owner;
//! - strings and streams that never lost an entry come out byte-identical to the server's
//!   own `DUMP` (`rdbcompression no`), so nothing depends on this crate's reading of the
//!   format alone (see `tests/encode_servers.rs`).
//!
//! The value is built in memory: the caller bounds what it hands in (the chunks are already
//! in memory), and the payload is about as big as the value's decoded size.

mod hash;
mod listpack;
mod plain;
mod rdbio;
mod stream;

use bytes::Bytes;

use crate::constants::{
    type_name, RDB_TYPE_LIST, RDB_TYPE_MODULE_2, RDB_TYPE_MODULE_PRE_GA, RDB_TYPE_SET,
};
use crate::dump::build_payload;
use crate::event::Elements;
use crate::version::RdbVersion;

/// What could not travel into the target's format (counted, per kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    /// Live hash fields whose TTL was dropped (target has no field TTLs).
    pub field_ttls: u64,
    /// Hash fields already expired at `now_ms`: dropped (as the server itself would).
    pub expired_fields: u64,
    /// Stream counters the target's format has no room for (entries_read per group,
    /// entries_added, max_deleted_entry_id, first_id): one per counter per key.
    pub stream_counters: u64,
    /// Consumers whose active-time the target's format cannot hold (type 21 → 15/19).
    pub consumer_active_times: u64,
    /// Streams whose idempotent-producer (IDMP) state was dropped: only Redis 8.6+ (types
    /// 26/27) holds it, and every format written here is older. One per key.
    pub stream_idmp: u64,
    /// Pending entries owned by no consumer (NACKed ones from Redis 8.8, type 27): left
    /// out, because an older server loads such an entry with no consumer and then
    /// dereferences it (`XPENDING … IDLE`, `XCLAIM`).
    pub pending_unowned: u64,
    /// NACKed pending entries that still had an owner: written as that consumer's pending
    /// entry, without the NACK mark no older format holds.
    pub nack_marks: u64,
}

/// The result of [`encode_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// A complete DUMP payload (type byte, value, 2-byte LE trailer = the target's RDB
    /// version number, CRC64), or None when nothing remains (every hash field expired).
    pub payload: Option<Bytes>,
    pub losses: Losses,
}

/// Why a value could not be encoded. None of these is worth retrying with the same input.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Module values are opaque: only the module can write them (the engine handles them).
    #[error("a module value (type {0}) cannot be re-encoded")]
    Module(u8),
    #[error("type {0} is not a value type this encoder knows")]
    UnknownType(u8),
    /// No chunks for a type that needs at least one (every value but a stream has content).
    #[error("no content for a {0} value")]
    Empty(&'static str),
    /// A chunk of another kind than the value's type.
    #[error("a {found} chunk in a {expected} value (type {source_type})")]
    MixedChunks {
        source_type: u8,
        expected: &'static str,
        found: &'static str,
    },
    /// The chunks contradict each other (out of order, duplicates, wrong counts).
    #[error("inconsistent chunks: {0}")]
    Inconsistent(String),
    /// The target's RDB version has no type at all for this kind of value.
    #[error("a {kind} cannot be written for {target}")]
    TargetTooOld {
        kind: &'static str,
        target: RdbVersion,
    },
}

/// Encode a decoded value (the chunks `dump::decode_value` returns, in order) for a target
/// whose RDB version is `target`. `source_type` is the value's original type byte.
pub fn encode_for(
    target: RdbVersion,
    source_type: u8,
    chunks: &[Elements],
    now_ms: i64,
) -> Result<Encoded, EncodeError> {
    if source_type == RDB_TYPE_MODULE_2 || source_type == RDB_TYPE_MODULE_PRE_GA {
        return Err(EncodeError::Module(source_type));
    }
    let kind = Kind::of_type(source_type)?;
    for c in chunks {
        match Kind::of_chunk(c) {
            None => return Err(EncodeError::Module(source_type)),
            Some(k) if k != kind => {
                return Err(EncodeError::MixedChunks {
                    source_type,
                    expected: kind.name(),
                    found: k.name(),
                })
            }
            Some(_) => {}
        }
    }
    if chunks.is_empty() {
        return Err(EncodeError::Empty(kind.name()));
    }
    let mut losses = Losses::default();
    let value = encode_value(kind, target, chunks, now_ms, &mut losses)?;
    let payload = value.map(|(t, v)| build_payload(t, &v, target.dump_trailer()));
    Ok(Encoded { payload, losses })
}

/// The type byte and serialization (no trailer); None if nothing remains.
fn encode_value(
    kind: Kind,
    target: RdbVersion,
    chunks: &[Elements],
    now_ms: i64,
    losses: &mut Losses,
) -> Result<Option<(u8, Bytes)>, EncodeError> {
    Ok(match kind {
        Kind::String => Some(plain::string(&collect(chunks, |c| match c {
            Elements::StringPart(p) => Some(std::slice::from_ref(p)),
            _ => None,
        }))),
        Kind::List => Some(plain::strings(
            RDB_TYPE_LIST,
            &collect(chunks, |c| match c {
                Elements::ListItems(v) => Some(v.as_slice()),
                _ => None,
            }),
        )),
        Kind::Set => Some(plain::strings(
            RDB_TYPE_SET,
            &collect(chunks, |c| match c {
                Elements::SetMembers(v) => Some(v.as_slice()),
                _ => None,
            }),
        )),
        // ZSET_2 (binary scores) is RDB 8; nothing older is a supported target
        Kind::ZSet if matches!(target, RdbVersion::Redis(v) if v < 8) => {
            return Err(EncodeError::TargetTooOld {
                kind: kind.name(),
                target,
            })
        }
        Kind::ZSet => Some(plain::zset(&collect(chunks, |c| match c {
            Elements::ZSetMembers(v) => Some(v.as_slice()),
            _ => None,
        }))),
        Kind::Hash => {
            let fields = collect(chunks, |c| match c {
                Elements::HashFields(v) => Some(v.as_slice()),
                _ => None,
            });
            hash::encode(target, &fields, now_ms, losses)
        }
        Kind::Stream => {
            let v = stream_version(target)?;
            Some(stream::Stream::collect(chunks)?.encode(v, losses)?)
        }
    })
}

/// The kinds of value this encoder writes (modules are not among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
}

impl Kind {
    /// From the value's type byte. Ids 22/23 are hashes in both flavors' files.
    fn of_type(source_type: u8) -> Result<Kind, EncodeError> {
        let name = match type_name(source_type, false) {
            "unknown" => type_name(source_type, true),
            n => n,
        };
        Ok(match name {
            "string" => Kind::String,
            "list" => Kind::List,
            "set" => Kind::Set,
            "zset" => Kind::ZSet,
            "hash" => Kind::Hash,
            "stream" => Kind::Stream,
            _ => return Err(EncodeError::UnknownType(source_type)),
        })
    }

    /// None for a module chunk.
    fn of_chunk(c: &Elements) -> Option<Kind> {
        Some(match c {
            Elements::StringPart(_) => Kind::String,
            Elements::ListItems(_) => Kind::List,
            Elements::SetMembers(_) => Kind::Set,
            Elements::ZSetMembers(_) => Kind::ZSet,
            Elements::HashFields(_) => Kind::Hash,
            Elements::StreamEntries(_)
            | Elements::StreamMeta(_)
            | Elements::StreamGroup(_)
            | Elements::StreamPending { .. }
            | Elements::StreamIdmp(_) => Kind::Stream,
            Elements::Module { .. } => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
        }
    }
}

/// References to every member of every chunk, in order (`pick` has checked the kind).
fn collect<'a, T>(
    chunks: &'a [Elements],
    pick: impl Fn(&'a Elements) -> Option<&'a [T]>,
) -> Vec<&'a T> {
    chunks.iter().filter_map(pick).flatten().collect()
}

/// The stream format (1 = type 15, 2 = 19, 3 = 21) a target reads best.
fn stream_version(target: RdbVersion) -> Result<u8, EncodeError> {
    match target {
        // Valkey 9 (80) reads every Redis type up to 21.
        RdbVersion::Valkey(_) => Ok(3),
        RdbVersion::Redis(v) if v >= 11 => Ok(3),
        RdbVersion::Redis(10) => Ok(2),
        RdbVersion::Redis(9) => Ok(1),
        RdbVersion::Redis(_) => Err(EncodeError::TargetTooOld {
            kind: "stream",
            target,
        }),
    }
}

#[cfg(test)]
mod tests;
