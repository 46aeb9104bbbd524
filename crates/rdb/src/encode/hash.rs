//! Hashes, with or without field TTLs. A field already expired at `now_ms` is dropped, as
//! the server would drop it; live TTLs travel in the target's own field-TTL type when it
//! has one (Redis 7.4+ `HASH_METADATA` 24, Valkey 9 `HASH_2` 22 — the two are mutually
//! unreadable), and are otherwise dropped into a plain type-4 hash and counted.

use bytes::{Bytes, BytesMut};

use super::plain;
use super::rdbio::{put_len, put_ms, put_string};
use super::Losses;
use crate::constants::{RDB_TYPE_HASH_2, RDB_TYPE_HASH_METADATA};
use crate::event::HashField;
use crate::version::RdbVersion;

/// Valkey's `EXPIRY_NONE`, written for a field without TTL in a `HASH_2`.
const EXPIRY_NONE: i64 = -1;

/// The type byte and value, or None when every field has expired.
pub(crate) fn encode(
    target: RdbVersion,
    fields: &[&HashField],
    now_ms: i64,
    losses: &mut Losses,
) -> Option<(u8, Bytes)> {
    let live: Vec<&HashField> = fields
        .iter()
        .copied()
        .filter(|f| f.expire_at_ms.is_none_or(|t| t > now_ms))
        .collect();
    losses.expired_fields += (fields.len() - live.len()) as u64;
    if live.is_empty() {
        return None;
    }
    let min_expire = live.iter().filter_map(|f| f.expire_at_ms).min();
    match (min_expire, target) {
        (None, _) => Some(plain::hash(&live)),
        (Some(min), RdbVersion::Redis(v)) if v >= 12 => Some(metadata(&live, min)),
        (Some(_), RdbVersion::Valkey(v)) if v >= 80 => Some(hash_2(&live)),
        (Some(_), _) => {
            losses.field_ttls += live.iter().filter(|f| f.expire_at_ms.is_some()).count() as u64;
            Some(plain::hash(&live))
        }
    }
}

/// Redis `RDB_TYPE_HASH_METADATA`: the smallest expiry, then per field a TTL relative to
/// it plus one (0 = none), the field and the value.
fn metadata(fields: &[&HashField], min_expire: i64) -> (u8, Bytes) {
    let mut out = BytesMut::new();
    put_ms(&mut out, min_expire);
    put_len(&mut out, fields.len() as u64);
    for f in fields {
        let ttl = f
            .expire_at_ms
            .map_or(0, |t| t.wrapping_sub(min_expire) as u64 + 1);
        put_len(&mut out, ttl);
        put_string(&mut out, &f.field);
        put_string(&mut out, &f.value);
    }
    (RDB_TYPE_HASH_METADATA, out.freeze())
}

/// Valkey `RDB_TYPE_HASH_2`: field, value, absolute expiry (-1 = none) per field.
fn hash_2(fields: &[&HashField]) -> (u8, Bytes) {
    let mut out = BytesMut::new();
    put_len(&mut out, fields.len() as u64);
    for f in fields {
        put_string(&mut out, &f.field);
        put_string(&mut out, &f.value);
        put_ms(&mut out, f.expire_at_ms.unwrap_or(EXPIRY_NONE));
    }
    (RDB_TYPE_HASH_2, out.freeze())
}
