//! The collection types every supported target reads: string (0), list (1), set (2),
//! zset (5, binary scores) and hash (4), written as `rdbSaveObject` writes its
//! hash-table / skiplist encodings. These load on every server from Redis 4.0 on, which
//! convert them to their compact encodings themselves when small enough.

use bytes::{Bytes, BytesMut};

use super::rdbio::{put_double, put_len, put_string};
use crate::constants::{
    RDB_TYPE_HASH, RDB_TYPE_LIST, RDB_TYPE_SET, RDB_TYPE_STRING, RDB_TYPE_ZSET_2,
};
use crate::event::HashField;

/// The whole string, from its parts.
pub(crate) fn string(parts: &[&Bytes]) -> (u8, Bytes) {
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut out = BytesMut::with_capacity(whole.len() + 5);
    put_string(&mut out, &whole);
    (RDB_TYPE_STRING, out.freeze())
}

/// Type 1 (list) or 2 (set): a count and that many strings.
pub(crate) fn strings(rdb_type: u8, items: &[&Bytes]) -> (u8, Bytes) {
    debug_assert!(rdb_type == RDB_TYPE_LIST || rdb_type == RDB_TYPE_SET);
    let mut out = BytesMut::new();
    put_len(&mut out, items.len() as u64);
    for i in items {
        put_string(&mut out, i);
    }
    (rdb_type, out.freeze())
}

/// Type 5: members with 8-byte scores. `rdbSaveObject` walks the skiplist from the
/// highest score down (so the loader's inserts are cheap); we keep that order.
pub(crate) fn zset(members: &[&(Bytes, f64)]) -> (u8, Bytes) {
    let mut sorted: Vec<&(Bytes, f64)> = members.to_vec();
    // ascending (score, member) is the skiplist order; written back to front
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = BytesMut::new();
    put_len(&mut out, sorted.len() as u64);
    for (m, s) in sorted.iter().rev() {
        put_string(&mut out, m);
        put_double(&mut out, *s);
    }
    (RDB_TYPE_ZSET_2, out.freeze())
}

/// Type 4: field/value pairs, without any TTLs (the caller counted what it dropped).
pub(crate) fn hash(fields: &[&HashField]) -> (u8, Bytes) {
    let mut out = BytesMut::new();
    put_len(&mut out, fields.len() as u64);
    for f in fields {
        put_string(&mut out, &f.field);
        put_string(&mut out, &f.value);
    }
    (RDB_TYPE_HASH, out.freeze())
}
