//! DUMP / RESTORE payloads: `<type byte> <value> <u16 LE RDB version> <u64 LE CRC64>`,
//! where the CRC covers everything before it. The value is byte-identical to an RDB
//! record's value, so a raw-mode [`crate::Event::RawValue`] plus its type byte makes a
//! payload without decoding anything.

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::RDB_OPCODE_KEY_META;
use crate::crc::crc64;
use crate::cursor::{Cursor, PErr};
use crate::decoder::{key_meta_block, Decoder};
use crate::error::RdbError;
use crate::event::{Elements, Event, KeyMetaClass};
use crate::version::RdbVersion;

/// A checked DUMP payload, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub rdb_type: u8,
    /// The serialized value (no type byte, no trailer).
    pub value: Bytes,
    /// The 2-byte version trailer.
    pub trailer: u16,
    /// Module key-metadata classes a Redis 8.6+ `DUMP` puts before the type byte
    /// (`RDB_OPCODE_KEY_META`); not part of `value`, so a payload rebuilt from the parts
    /// (e.g. by [`rewrite_trailer`]) leaves them out.
    pub key_meta: Vec<KeyMetaClass>,
}

impl Payload {
    /// The flavor/version the trailer implies (80+ is Valkey).
    pub fn version(&self) -> RdbVersion {
        RdbVersion::from_dump_trailer(self.trailer)
    }
}

/// Build a payload from a type byte and a value serialization.
pub fn build_payload(rdb_type: u8, value: &[u8], trailer: u16) -> Bytes {
    let mut b = BytesMut::with_capacity(value.len() + 11);
    b.put_u8(rdb_type);
    b.put_slice(value);
    b.put_u16_le(trailer);
    let crc = crc64(&b);
    b.put_u64_le(crc);
    b.freeze()
}

/// Split a payload and verify its checksum.
pub fn parse_payload(payload: &Bytes) -> Result<Payload, RdbError> {
    let n = payload.len();
    let too_short = || RdbError::Truncated {
        offset: n as u64,
        expected: "a DUMP payload of at least 11 bytes (type, trailer, CRC64)".into(),
    };
    if n < 11 {
        return Err(too_short());
    }
    // Checked before anything in the payload is believed. Unlike an RDB file's, a DUMP
    // checksum is always written (`rdbchecksum` does not apply), so 0 is no exemption.
    let (body, crc_bytes) = payload.split_at(n - 8);
    let stored = u64::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
    let computed = crc64(body);
    if stored != computed {
        return Err(RdbError::Checksum {
            offset: (n - 8) as u64,
            stored,
            computed,
        });
    }
    let Some(&[t0, t1]) = payload.get(n - 10..n - 8) else {
        return Err(too_short());
    };
    let trailer = u16::from_le_bytes([t0, t1]);
    let body = payload.slice(..n - 10);
    let mut start = 0;
    let mut key_meta = Vec::new();
    // Only a Redis 8.6+ trailer makes byte 243 a KEY_META prefix; elsewhere it stays a
    // (bad) type byte and the caller's decode reports it as such.
    if payload.first() == Some(&RDB_OPCODE_KEY_META)
        && RdbVersion::from_dump_trailer(trailer).has_key_meta()
    {
        let mut c = Cursor::new(&body, 1, 0, usize::MAX);
        key_meta = key_meta_block(&mut c).map_err(|e| match e {
            PErr::Fail(e) => e,
            _ => RdbError::Truncated {
                offset: c.pos as u64,
                expected: "the rest of the payload's KEY_META block and a type byte".into(),
            },
        })?;
        start = c.pos;
    }
    let Some(&rdb_type) = body.get(start) else {
        return Err(RdbError::Truncated {
            offset: start as u64,
            expected: "the type byte after the payload's KEY_META block".into(),
        });
    };
    Ok(Payload {
        rdb_type,
        value: body.slice(start + 1..),
        trailer,
        key_meta,
    })
}

/// Verify a payload and give it a new version trailer (with a recomputed CRC), e.g. to
/// RESTORE into an older server that knows every type inside.
pub fn rewrite_trailer(payload: &Bytes, trailer: u16) -> Result<Bytes, RdbError> {
    let p = parse_payload(payload)?;
    Ok(build_payload(p.rdb_type, &p.value, trailer))
}

/// Decode a payload's value into element chunks (e.g. to turn a RESTORE that the target
/// refused into ordinary commands). The trailer decides the flavor (Valkey for 80+).
pub fn decode_payload(payload: &Bytes) -> Result<(u8, Vec<Elements>), RdbError> {
    let p = parse_payload(payload)?;
    let version = p.version();
    let els = decode_value(p.rdb_type, p.value, version)?;
    Ok((p.rdb_type, els))
}

/// Decode one serialized value (no type byte, no trailer) into element chunks. Error
/// offsets count from the first byte of `value`.
pub fn decode_value(
    rdb_type: u8,
    value: Bytes,
    version: RdbVersion,
) -> Result<Vec<Elements>, RdbError> {
    let mut d = Decoder::for_value(rdb_type, version)?;
    let mut events = Vec::new();
    d.feed(value, &mut events)?;
    d.finish()?;
    Ok(events
        .into_iter()
        .filter_map(|e| match e {
            Event::Elements(e) => Some(e),
            _ => None,
        })
        .collect())
}

/// The lowest RDB version whose loader knows `rdb_type` (reference §C3), with the flavor:
/// `None` for ids no released server writes. Use it to decide between rewriting the
/// trailer and transcoding into commands.
pub fn min_version(rdb_type: u8, valkey: bool) -> Option<RdbVersion> {
    use crate::constants::*;
    let v = match rdb_type {
        0..=4 => 1,
        RDB_TYPE_HASH_ZIPMAP..=RDB_TYPE_ZSET_ZIPLIST => 2,
        RDB_TYPE_HASH_ZIPLIST => 4,
        RDB_TYPE_LIST_QUICKLIST => 7,
        RDB_TYPE_ZSET_2 | RDB_TYPE_MODULE_2 => 8,
        RDB_TYPE_STREAM_LISTPACKS => 9,
        16..=19 => 10,
        20 | 21 => 11,
        RDB_TYPE_HASH_2 if valkey => return Some(RdbVersion::Valkey(80)),
        24 | 25 if !valkey => return Some(RdbVersion::Redis(12)),
        RDB_TYPE_STREAM_LISTPACKS_4 if !valkey => return Some(RdbVersion::Redis(13)),
        RDB_TYPE_STREAM_LISTPACKS_5 if !valkey => return Some(RdbVersion::Redis(14)),
        _ => return None,
    };
    Some(RdbVersion::Redis(v))
}
