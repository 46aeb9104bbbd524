//! What the decoder emits. An RDB becomes a flat sequence of [`Event`]s; a key is
//! `KeyStart`, then either one `RawValue` or any number of `Elements` chunks, then `KeyEnd`.
//! Chunks are bounded (≤ [`MAX_CHUNK_ITEMS`] members or about [`MAX_CHUNK_BYTES`] bytes) so a
//! key with ten million members never has to exist in memory at once.
//!
//! Chunk boundaries depend only on the content, never on how the input was split into
//! `feed` calls: feeding a file in one piece or byte by byte yields identical events.

use bytes::Bytes;

use crate::version::RdbVersion;

/// At most this many members per [`Elements`] chunk.
pub const MAX_CHUNK_ITEMS: usize = 1024;
/// A chunk is closed once its members add up to this many bytes (a single member may exceed
/// it). Big top-level strings come as [`Elements::StringPart`]s of exactly this size, the last
/// one shorter.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Everything a key carries besides its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// The database selected by the last `SELECTDB` (0 if none).
    pub db: u64,
    /// The key, decompressed if it was LZF- or int-encoded in the file.
    pub key: Bytes,
    /// The value's type byte as written in the file (the first byte of a DUMP payload).
    pub rdb_type: u8,
    /// Absolute expiry in Unix milliseconds (EXPIRETIME seconds are multiplied by 1000).
    pub expire_at_ms: Option<i64>,
    /// LRU idle time in seconds (`RDB_OPCODE_IDLE`), written under an LRU maxmemory policy.
    pub idle: Option<u64>,
    /// LFU counter (`RDB_OPCODE_FREQ`), written under an LFU maxmemory policy.
    pub freq: Option<u8>,
    /// Module key-metadata classes (`RDB_OPCODE_KEY_META`, Redis 8.6+ / RDB 13+) whose
    /// module lets servers without it drop them (`ALLOW_IGNORE`); a class without that
    /// flag stops the decoder with [`crate::RdbError::RequiredKeyMeta`]. Only the module
    /// can interpret or write them, so they are carried opaque and no target gets them.
    /// The key's expiry never travels here (Redis still writes it with `EXPIRETIME_MS`).
    pub meta_classes: Vec<KeyMetaClass>,
}

/// One class of a key's module metadata: the 32-bit class spec (4-character name, 5-bit
/// version, 3-bit flags) and the module's tagged values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetaClass {
    /// The 4-character class name (the module registered `META-<name>`).
    pub name: String,
    pub version: u8,
    /// Flag bit 0 is `ALLOW_IGNORE`: a server without the class may drop it on load.
    pub flags: u8,
    /// The class's module-style tagged values, up to and including the EOF marker.
    pub raw: Bytes,
}

/// A stream entry id `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One hash field; `expire_at_ms` is set only for the per-field-TTL hash types
/// (Redis 7.4+ types 24/25, Valkey 9 type 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashField {
    pub field: Bytes,
    pub value: Bytes,
    pub expire_at_ms: Option<i64>,
}

/// One live stream entry (tombstones are not emitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Bytes, Bytes)>,
}

/// Stream-level metadata, emitted once after all entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// Number of live entries (`XLEN`).
    pub length: u64,
    pub last_id: StreamId,
    /// RDB stream v2+ (types 19/21) only.
    pub first_id: Option<StreamId>,
    /// RDB stream v2+ only.
    pub max_deleted_id: Option<StreamId>,
    /// RDB stream v2+ only.
    pub entries_added: Option<u64>,
}

/// One entry of a consumer group's pending entries list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub delivery_time_ms: i64,
    pub delivery_count: u64,
    /// The consumer owning the entry; empty if no consumer lists it (a NACKed entry in
    /// Redis 8.8+, otherwise not written by any known server; kept rather than dropped).
    pub consumer: Bytes,
    /// Listed in the group's NACK zone (stream type 27, Redis 8.8+): released by `XNACK`.
    pub nacked: bool,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: Bytes,
    pub seen_time_ms: i64,
    /// RDB stream v3 (type 21) only.
    pub active_time_ms: Option<i64>,
    /// How many PEL entries this consumer owns.
    pub pending_count: u64,
}

/// A consumer group. `pending` holds the first (up to [`MAX_CHUNK_ITEMS`]) PEL entries in
/// id order; the rest follow as [`Elements::StreamPending`] chunks naming the same group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    pub name: Bytes,
    pub last_id: StreamId,
    /// RDB stream v2+ only.
    pub entries_read: Option<u64>,
    /// Total PEL size of the group (≥ `pending.len()`).
    pub pending_total: u64,
    pub pending: Vec<PendingEntry>,
    pub consumers: Vec<Consumer>,
}

/// One idempotency record of a producer: the producer's idempotent id and the entry it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmpEntry {
    pub iid: Bytes,
    pub id: StreamId,
}

/// A producer and (some of) its idempotency records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmpProducer {
    pub pid: Bytes,
    pub entries: Vec<IdmpEntry>,
}

/// Idempotent-producer (IDMP) state of a Redis 8.6+ stream (types 26/27), written after
/// the last group. Comes in one or more chunks of at most [`MAX_CHUNK_ITEMS`] records: a
/// producer whose records span chunks is named again at the start of the next one, and
/// the two counters are set on the last chunk only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdmp {
    /// How long ids are remembered, as stored (seconds).
    pub duration: u64,
    /// The most records kept per producer.
    pub max_entries: u64,
    pub producers: Vec<IdmpProducer>,
    pub iids_added: Option<u64>,
    pub iids_duplicates: Option<u64>,
}

/// A bounded chunk of a value's decoded content.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// A piece of a string value; concatenate the pieces in order.
    StringPart(Bytes),
    /// List items, head to tail.
    ListItems(Vec<Bytes>),
    SetMembers(Vec<Bytes>),
    /// Members with scores, in file order (which is not necessarily score order).
    ZSetMembers(Vec<(Bytes, f64)>),
    HashFields(Vec<HashField>),
    /// Live entries in id order.
    StreamEntries(Vec<StreamEntry>),
    /// After all entries of a stream.
    StreamMeta(StreamMeta),
    /// After `StreamMeta`, one per group.
    StreamGroup(StreamGroup),
    /// Continuation of the PEL of the group named `group`.
    StreamPending {
        group: Bytes,
        entries: Vec<PendingEntry>,
    },
    /// After the last group of a type 26/27 stream.
    StreamIdmp(StreamIdmp),
    /// A module value (type 7), kept opaque: the exact serialization after the type byte,
    /// starting with the 64-bit module id, usable as a DUMP payload body.
    Module {
        module_id: u64,
        raw: Bytes,
    },
}

/// One step of the decoded RDB.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The magic; always the first event.
    Header { version: RdbVersion },
    /// `RDB_OPCODE_AUX`. Int-encoded values are given as their decimal text.
    Aux { key: Bytes, value: Bytes },
    /// `RDB_OPCODE_SELECTDB`.
    SelectDb(u64),
    /// `RDB_OPCODE_RESIZEDB`: hints for the db's hash tables.
    ResizeDb { db_size: u64, expires_size: u64 },
    /// `RDB_OPCODE_SLOT_INFO` (Redis 7.4+ cluster).
    SlotInfo { slot: u64, keys: u64, expires: u64 },
    /// `RDB_OPCODE_MODULE_AUX`: `raw` is everything after the opcode byte (module id,
    /// when-opcode, when, module data, EOF marker).
    ModuleAux {
        module_id: u64,
        when: u64,
        raw: Bytes,
    },
    /// A function library (`RDB_OPCODE_FUNCTION2`, or the 7.0-RC `FUNCTION_PRE_GA`): the
    /// full library source, loadable with `FUNCTION LOAD`.
    Function { code: Bytes },
    /// A key begins.
    KeyStart(KeyMeta),
    /// Raw mode: the value's exact serialization, without the type byte.
    RawValue(Bytes),
    /// Elements mode (or raw mode above the big-value threshold): a chunk of the value.
    Elements(Elements),
    /// The current key is complete.
    KeyEnd,
    /// The EOF opcode was reached and the checksum (if any) verified.
    Eof,
}
