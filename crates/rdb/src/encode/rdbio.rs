//! The RDB primitives an encoder writes: lengths, strings, millisecond times, binary
//! doubles and raw stream ids. Each writer produces exactly the bytes `rdb.c` would
//! (`rdbSaveLen`, `rdbSaveRawString` with `rdbcompression no`, `rdbSaveMillisecondTime`,
//! `rdbSaveBinaryDoubleValue`), so an encoded value can equal a server's own DUMP.

use bytes::{BufMut, BytesMut};

use crate::constants::{
    RDB_14BITLEN, RDB_32BITLEN, RDB_64BITLEN, RDB_ENCVAL, RDB_ENC_INT16, RDB_ENC_INT32,
    RDB_ENC_INT8,
};
use crate::event::StreamId;

/// `rdbSaveLen`: the shortest of the 6-, 14-, 32- and 64-bit forms.
pub(crate) fn put_len(out: &mut BytesMut, n: u64) {
    if n < 1 << 6 {
        out.put_u8(n as u8);
    } else if n < 1 << 14 {
        out.put_u8(((n >> 8) as u8) | (RDB_14BITLEN << 6));
        out.put_u8(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.put_u8(RDB_32BITLEN);
        out.put_u32(n as u32);
    } else {
        out.put_u8(RDB_64BITLEN);
        out.put_u64(n);
    }
}

/// The value of `s` if it is the canonical decimal text of an i64 — what `string2ll`
/// accepts *and* `ll2string` gives back unchanged (no sign `+`, no leading zero, no `-0`).
/// Shared by the RDB int encoding and the listpack's `lpStringToInt64`, which agree.
pub(crate) fn canonical_i64(s: &[u8]) -> Option<i64> {
    // 20 = len("-9223372036854775808"); longer text cannot be an i64.
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        // i64::MIN's magnitude is one more than i64::MAX.
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// `rdbSaveRawString` with compression off: `rdbTryIntegerEncoding` for text of at most
/// 11 bytes that is a canonical integer fitting 32 bits, else length + bytes.
pub(crate) fn put_string(out: &mut BytesMut, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(v) = canonical_i64(s) {
            if let Ok(v) = i8::try_from(v) {
                out.put_u8((RDB_ENCVAL << 6) | RDB_ENC_INT8);
                out.put_i8(v);
                return;
            }
            if let Ok(v) = i16::try_from(v) {
                out.put_u8((RDB_ENCVAL << 6) | RDB_ENC_INT16);
                out.put_i16_le(v);
                return;
            }
            if let Ok(v) = i32::try_from(v) {
                out.put_u8((RDB_ENCVAL << 6) | RDB_ENC_INT32);
                out.put_i32_le(v);
                return;
            }
        }
    }
    put_len(out, s.len() as u64);
    out.put_slice(s);
}

/// `rdbSaveMillisecondTime`: int64 little-endian.
pub(crate) fn put_ms(out: &mut BytesMut, ms: i64) {
    out.put_i64_le(ms);
}

/// `rdbSaveBinaryDoubleValue`: IEEE-754 little-endian (type 5 scores).
pub(crate) fn put_double(out: &mut BytesMut, d: f64) {
    out.put_f64_le(d);
}

/// A stream id as the 16-byte big-endian rax key (`streamEncodeID`): big-endian because
/// the rax compares keys as bytes, and so keeps them in id order.
pub(crate) fn id_key(id: StreamId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.ms.to_be_bytes());
    k[8..].copy_from_slice(&id.seq.to_be_bytes());
    k
}

/// A stream id as two lengths (`last_id`, `first_id`, group ids…).
pub(crate) fn put_id_lens(out: &mut BytesMut, id: StreamId) {
    put_len(out, id.ms);
    put_len(out, id.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_string(&mut b, s);
        b.to_vec()
    }

    fn len(n: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_len(&mut b, n);
        b.to_vec()
    }

    #[test]
    fn lengths_take_the_shortest_form() {
        assert_eq!(len(0), [0x00]);
        assert_eq!(len(63), [0x3f]);
        assert_eq!(len(64), [0x40, 0x40]);
        assert_eq!(len(16383), [0x7f, 0xff]);
        assert_eq!(len(16384), [0x80, 0, 0, 0x40, 0]);
        assert_eq!(len(u64::from(u32::MAX)), [0x80, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(len(1 << 32), [0x81, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn strings_use_int_encodings_only_for_canonical_32_bit_text() {
        // the reference's observations: 12345 → int16, -2000000000 → int32
        assert_eq!(string(b"-5"), [0xc0, 0xfb]);
        assert_eq!(string(b"12345"), [0xc1, 0x39, 0x30]);
        assert_eq!(string(b"-2000000000"), [0xc2, 0x00, 0x6c, 0xca, 0x88]);
        assert_eq!(string(b"-2147483648")[0], 0xc2);
        // 2^31 fits no RDB int form; not canonical text stays text
        for s in [
            &b"2147483648"[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"1e3",
        ] {
            let mut want = vec![s.len() as u8];
            want.extend_from_slice(s);
            assert_eq!(string(s), want, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn canonical_integers_cover_the_i64_range() {
        assert_eq!(canonical_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(canonical_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(canonical_i64(b"9223372036854775808"), None);
        assert_eq!(canonical_i64(b"-9223372036854775809"), None);
        assert_eq!(canonical_i64(b"18446744073709551616"), None);
        assert_eq!(canonical_i64(b"0"), Some(0));
        assert_eq!(canonical_i64(b"00"), None);
    }
}
