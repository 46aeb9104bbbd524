//! Protocol numbers of the RDB format, named exactly as in the Redis / Valkey sources
//! (`rdb.h`), so a reader can grep both code bases for the same identifier.
//!
//! Type ids 22 and 23 mean different things in Redis (7.4 release candidates) and in
//! Valkey 9 (`HASH_2`); which one applies is decided by the file magic, see
//! [`crate::RdbVersion`].

// ---- value types -------------------------------------------------------------------------
// Which servers write each type matters twice: a decoder must read every type some
// supported source still writes, and a target loads only the types its version knows
// (see `dump::min_version`). A server writes the compact types while a value is small and
// the plain ones (1-5) once it outgrows them.
pub const RDB_TYPE_STRING: u8 = 0;
/// Plain list: Redis 3.0 and older only (since 3.2 every list is a quicklist).
pub const RDB_TYPE_LIST: u8 = 1;
pub const RDB_TYPE_SET: u8 = 2;
/// Scores as decimal text: Redis before 4.0 (RDB < 8), replaced by [`RDB_TYPE_ZSET_2`].
pub const RDB_TYPE_ZSET: u8 = 3;
pub const RDB_TYPE_HASH: u8 = 4;
/// Scores as binary doubles: RDB 8 (Redis 4.0) and later.
pub const RDB_TYPE_ZSET_2: u8 = 5;
/// Redis 4.0 release candidates: module values without type tags, which no reader can
/// step over without the module; Redis itself refuses them, and so does this decoder.
pub const RDB_TYPE_MODULE_PRE_GA: u8 = 6;
/// RDB 8 (Redis 4.0) and later: module values with tagged fields.
pub const RDB_TYPE_MODULE_2: u8 = 7;
/// Small hashes of Redis 2.4 and older; later servers still load them.
pub const RDB_TYPE_HASH_ZIPMAP: u8 = 9;
/// Small lists of Redis 2.4 to 3.0.
pub const RDB_TYPE_LIST_ZIPLIST: u8 = 10;
/// Sets of integers only, small enough (`set-max-intset-entries`): every version since 2.4.
pub const RDB_TYPE_SET_INTSET: u8 = 11;
/// Small sorted sets of Redis 2.4 to 6.2.
pub const RDB_TYPE_ZSET_ZIPLIST: u8 = 12;
/// Small hashes of Redis 2.6 to 6.2.
pub const RDB_TYPE_HASH_ZIPLIST: u8 = 13;
/// Lists of Redis 3.2 to 6.2 (RDB 7 to 9): a list of ziplist nodes.
pub const RDB_TYPE_LIST_QUICKLIST: u8 = 14;
/// Streams of Redis 5.0 to 6.2 (RDB 9).
pub const RDB_TYPE_STREAM_LISTPACKS: u8 = 15;
/// Redis 7.0 (RDB 10) replaced ziplists by listpacks: small hashes from then on.
pub const RDB_TYPE_HASH_LISTPACK: u8 = 16;
/// Small sorted sets of Redis 7.0 and later.
pub const RDB_TYPE_ZSET_LISTPACK: u8 = 17;
/// Lists of Redis 7.0 and later: PLAIN or PACKED (listpack) nodes.
pub const RDB_TYPE_LIST_QUICKLIST_2: u8 = 18;
/// Streams of Redis 7.0 (RDB 10): adds first id, max deleted id, entries added, and
/// each group's entries read.
pub const RDB_TYPE_STREAM_LISTPACKS_2: u8 = 19;
/// Small sets of strings, Redis 7.2 (RDB 11) and later.
pub const RDB_TYPE_SET_LISTPACK: u8 = 20;
/// Streams of Redis 7.2+ (RDB 11, also Valkey): adds each consumer's active time.
pub const RDB_TYPE_STREAM_LISTPACKS_3: u8 = 21;
/// Redis 7.4 release candidates only (Redis files). In Valkey files id 22 is [`RDB_TYPE_HASH_2`].
pub const RDB_TYPE_HASH_METADATA_PRE_GA: u8 = 22;
/// Redis 7.4 release candidates only (Redis files).
pub const RDB_TYPE_HASH_LISTPACK_EX_PRE_GA: u8 = 23;
/// Redis 7.4+ (RDB 12): a hash with field TTLs, stored field by field.
pub const RDB_TYPE_HASH_METADATA: u8 = 24;
/// Redis 7.4+ (RDB 12): a small hash with field TTLs, one listpack of triples.
pub const RDB_TYPE_HASH_LISTPACK_EX: u8 = 25;
/// Valkey 9 (`VALKEY080` files): hash whose fields may carry an absolute expiry.
pub const RDB_TYPE_HASH_2: u8 = 22;
/// Valkey 9.2 (`VALKEY081`): not decoded, see [`refused_type`].
pub const RDB_TYPE_PATH_HASH: u8 = 23;
/// Redis 8.6 (RDB 13): type 21 plus the idempotent-producer (IDMP) state after the groups.
pub const RDB_TYPE_STREAM_LISTPACKS_4: u8 = 26;
/// Redis 8.8 (RDB 14): type 26 plus a per-group NACK zone after each group's consumers.
pub const RDB_TYPE_STREAM_LISTPACKS_5: u8 = 27;
/// Redis 8.8 (RDB 14): the sparse array data type. Not decoded, see [`refused_type`].
pub const RDB_TYPE_ARRAY: u8 = 28;
/// Redis development builds after 8.8 (RDB 15): hash templates and the GCRA limiter.
pub const RDB_TYPE_HASH_TMPL_LP: u8 = 29;
pub const RDB_TYPE_HASH_TMPL_LP_REF: u8 = 30;
pub const RDB_TYPE_HASH_TMPL_ARRAY: u8 = 31;
pub const RDB_TYPE_HASH_TMPL_ARRAY_REF: u8 = 32;
pub const RDB_TYPE_GCRA: u8 = 33;

// ---- opcodes -----------------------------------------------------------------------------
/// Redis RDB 13+ files only: a key's module metadata classes, before its type byte (also at
/// the start of a DUMP payload). In Valkey files the same number is [`RDB_OPCODE_SLOT_IMPORT`].
pub const RDB_OPCODE_KEY_META: u8 = 243;
/// Valkey 9.x atomic slot migration state (format unverified; rejected by this decoder).
pub const RDB_OPCODE_SLOT_IMPORT: u8 = 243;
pub const RDB_OPCODE_SLOT_INFO: u8 = 244;
/// Function libraries, Redis 7.0 GA and later.
pub const RDB_OPCODE_FUNCTION2: u8 = 245;
/// Function libraries as the Redis 7.0 release candidates wrote them.
pub const RDB_OPCODE_FUNCTION_PRE_GA: u8 = 246;
/// RDB 9 (Redis 5.0) and later: a module's global data.
pub const RDB_OPCODE_MODULE_AUX: u8 = 247;
/// RDB 9 (Redis 5.0) and later, under an LRU `maxmemory-policy`.
pub const RDB_OPCODE_IDLE: u8 = 248;
/// RDB 9 (Redis 5.0) and later, under an LFU `maxmemory-policy`.
pub const RDB_OPCODE_FREQ: u8 = 249;
/// RDB 7 (Redis 3.2) and later: `redis-ver`, `ctime`, replication ids and the like.
pub const RDB_OPCODE_AUX: u8 = 250;
/// RDB 7 (Redis 3.2) and later.
pub const RDB_OPCODE_RESIZEDB: u8 = 251;
/// RDB 3 and later; older files have [`RDB_OPCODE_EXPIRETIME`] (seconds).
pub const RDB_OPCODE_EXPIRETIME_MS: u8 = 252;
pub const RDB_OPCODE_EXPIRETIME: u8 = 253;
pub const RDB_OPCODE_SELECTDB: u8 = 254;
pub const RDB_OPCODE_EOF: u8 = 255;

/// `KEY_META` class flag (bit 0 of the class spec): a server without the class's module
/// may drop the class on load.
pub const KEY_META_FLAG_ALLOW_IGNORE: u8 = 1 << 0;

// ---- module value opcodes (inside type 7 and MODULE_AUX) ---------------------------------
pub const RDB_MODULE_OPCODE_EOF: u64 = 0;
pub const RDB_MODULE_OPCODE_SINT: u64 = 1;
pub const RDB_MODULE_OPCODE_UINT: u64 = 2;
pub const RDB_MODULE_OPCODE_FLOAT: u64 = 3;
pub const RDB_MODULE_OPCODE_DOUBLE: u64 = 4;
pub const RDB_MODULE_OPCODE_STRING: u64 = 5;

// ---- length / string encodings -----------------------------------------------------------
pub const RDB_6BITLEN: u8 = 0;
pub const RDB_14BITLEN: u8 = 1;
pub const RDB_32BITLEN: u8 = 0x80;
pub const RDB_64BITLEN: u8 = 0x81;
pub const RDB_ENCVAL: u8 = 3;
pub const RDB_ENC_INT8: u8 = 0;
pub const RDB_ENC_INT16: u8 = 1;
pub const RDB_ENC_INT32: u8 = 2;
pub const RDB_ENC_LZF: u8 = 3;

// ---- quicklist 2 containers --------------------------------------------------------------
/// A node holding one element too big for a listpack, stored as it is.
pub const QUICKLIST_NODE_CONTAINER_PLAIN: u64 = 1;
/// A node holding a listpack of elements.
pub const QUICKLIST_NODE_CONTAINER_PACKED: u64 = 2;

// ---- stream listpack entry flags ---------------------------------------------------------
/// A tombstone: XDEL marks the entry in place and leaves it in its node.
pub const STREAM_ITEM_FLAG_DELETED: i64 = 1;
/// The entry has the master entry's field names and stores only its values.
pub const STREAM_ITEM_FLAG_SAMEFIELDS: i64 = 2;

/// Highest `REDIS00NN` version this decoder reads (14 = Redis 8.8).
pub const RDB_VERSION_MAX_REDIS: u16 = 14;
/// The first Redis RDB version with `RDB_OPCODE_KEY_META` and stream type 26 (Redis 8.6).
pub const RDB_VERSION_KEY_META: u16 = 13;
/// The Valkey versions (`VALKEY0NN`) this decoder reads.
pub const RDB_VERSION_VALKEY_9: u16 = 80;

/// A stream of any version (15, 19, 21; Redis 8.6/8.8's 26, 27).
pub fn is_stream_type(rdb_type: u8) -> bool {
    matches!(
        rdb_type,
        RDB_TYPE_STREAM_LISTPACKS
            | RDB_TYPE_STREAM_LISTPACKS_2
            | RDB_TYPE_STREAM_LISTPACKS_3
            | RDB_TYPE_STREAM_LISTPACKS_4
            | RDB_TYPE_STREAM_LISTPACKS_5
    )
}

/// Human name of a value type id, for errors and `decode` output.
pub fn type_name(rdb_type: u8, valkey: bool) -> &'static str {
    match rdb_type {
        RDB_TYPE_STRING => "string",
        RDB_TYPE_LIST
        | RDB_TYPE_LIST_ZIPLIST
        | RDB_TYPE_LIST_QUICKLIST
        | RDB_TYPE_LIST_QUICKLIST_2 => "list",
        RDB_TYPE_SET | RDB_TYPE_SET_INTSET | RDB_TYPE_SET_LISTPACK => "set",
        RDB_TYPE_ZSET | RDB_TYPE_ZSET_2 | RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_ZSET_LISTPACK => "zset",
        RDB_TYPE_HASH
        | RDB_TYPE_HASH_ZIPMAP
        | RDB_TYPE_HASH_ZIPLIST
        | RDB_TYPE_HASH_LISTPACK
        | RDB_TYPE_HASH_METADATA
        | RDB_TYPE_HASH_LISTPACK_EX => "hash",
        22 | 23 if !valkey => "hash",
        RDB_TYPE_HASH_2 if valkey => "hash",
        RDB_TYPE_MODULE_2 | RDB_TYPE_MODULE_PRE_GA => "module",
        RDB_TYPE_STREAM_LISTPACKS
        | RDB_TYPE_STREAM_LISTPACKS_2
        | RDB_TYPE_STREAM_LISTPACKS_3
        | RDB_TYPE_STREAM_LISTPACKS_4
        | RDB_TYPE_STREAM_LISTPACKS_5 => "stream",
        _ => "unknown",
    }
}

/// A type id that a newer server writes and this decoder cannot carry anywhere, for a
/// one-line refusal instead of "unknown type": its name, which server writes it, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedType {
    pub name: &'static str,
    pub writer: &'static str,
    pub reason: &'static str,
}

pub fn refused_type(rdb_type: u8, valkey: bool) -> Option<RefusedType> {
    const LATER: &str = "Redis development builds after 8.8, RDB 15";
    let (name, writer, reason) = match rdb_type {
        RDB_TYPE_PATH_HASH if valkey => (
            "path hash (PATH_HASH)",
            "Valkey 9.2, RDB 81",
            "this version does not decode Valkey 9.2 path hashes",
        ),
        RDB_TYPE_ARRAY if !valkey => (
            "array (sparse array)",
            "Redis 8.8, RDB 14",
            "no type an older target loads can hold a sparse array",
        ),
        RDB_TYPE_HASH_TMPL_LP..=RDB_TYPE_HASH_TMPL_ARRAY_REF if !valkey => (
            "hash template (HASH_TMPL_*)",
            LATER,
            "this version does not decode hash templates (an unreleased format)",
        ),
        RDB_TYPE_GCRA if !valkey => (
            "GCRA rate limiter",
            LATER,
            "no type an older target loads can hold a GCRA limiter",
        ),
        _ => return None,
    };
    Some(RefusedType {
        name,
        writer,
        reason,
    })
}
