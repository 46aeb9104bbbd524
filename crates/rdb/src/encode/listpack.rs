//! A listpack builder that appends elements the way `listpack.c`'s `lpAppend` and
//! `lpAppendInteger` do: text that `lpStringToInt64` accepts is stored as the smallest
//! integer form, everything else as a 6-, 12- or 32-bit-length string, each element
//! followed by its back-length. The stream encoder needs `bytes()` while building, because
//! `streamAppendItem` decides where a node ends from the listpack's current size.

use bytes::{BufMut, BytesMut};

use super::rdbio::canonical_i64;

/// Header: u32 total bytes + u16 element count.
const LP_HDR_SIZE: usize = 6;
const LP_EOF: u8 = 0xff;
/// The header's count saturates here: "unknown, walk to count" (`LP_HDR_NUMELE_UNKNOWN`).
const LP_HDR_NUMELE_UNKNOWN: usize = u16::MAX as usize;

/// A listpack under construction; elements only, the header and end byte are added by
/// [`Listpack::finish`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Listpack {
    body: BytesMut,
    count: usize,
}

impl Listpack {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `lpBytes` of the finished listpack.
    pub(crate) fn bytes(&self) -> usize {
        LP_HDR_SIZE + self.body.len() + 1
    }

    /// `lpAppend`: a string, integer-encoded when it is canonical integer text.
    pub(crate) fn push_str(&mut self, s: &[u8]) {
        // lpStringToInt64 takes at most 20 bytes; canonical_i64 applies the same bound.
        match canonical_i64(s) {
            Some(v) => self.push_int(v),
            None => {
                let start = self.body.len();
                let n = s.len();
                if n < 64 {
                    self.body.put_u8(0x80 | n as u8);
                } else if n < 4096 {
                    self.body.put_u8(0xe0 | (n >> 8) as u8);
                    self.body.put_u8(n as u8);
                } else {
                    self.body.put_u8(0xf0);
                    self.body.put_u32_le(n as u32);
                }
                self.body.put_slice(s);
                self.end_element(start);
            }
        }
    }

    /// `lpAppendInteger`: the smallest of the 7-, 13-, 16-, 24-, 32- and 64-bit forms.
    pub(crate) fn push_int(&mut self, v: i64) {
        let start = self.body.len();
        let b = &mut self.body;
        if (0..=127).contains(&v) {
            b.put_u8(v as u8);
        } else if (-4096..=4095).contains(&v) {
            // two's complement in 13 bits
            let u = (v as u64) & 0x1fff;
            b.put_u8(0xc0 | (u >> 8) as u8);
            b.put_u8(u as u8);
        } else if (-32768..=32767).contains(&v) {
            b.put_u8(0xf1);
            b.put_i16_le(v as i16);
        } else if (-8_388_608..=8_388_607).contains(&v) {
            b.put_u8(0xf2);
            b.put_slice(&(v as i32).to_le_bytes()[..3]);
        } else if let Ok(v) = i32::try_from(v) {
            b.put_u8(0xf3);
            b.put_i32_le(v);
        } else {
            b.put_u8(0xf4);
            b.put_i64_le(v);
        }
        self.end_element(start);
    }

    /// Append the back-length of the element that starts at `start`.
    fn end_element(&mut self, start: usize) {
        let l = (self.body.len() - start) as u64;
        put_backlen(&mut self.body, l);
        self.count += 1;
    }

    /// Move `other`'s elements to the end of this one.
    pub(crate) fn append(&mut self, other: Listpack) {
        self.body.extend_from_slice(&other.body);
        self.count += other.count;
    }

    /// The complete listpack: header, elements, end byte.
    pub(crate) fn finish(self) -> BytesMut {
        let total = self.bytes();
        let mut out = BytesMut::with_capacity(total);
        out.put_u32_le(total as u32);
        out.put_u16_le(self.count.min(LP_HDR_NUMELE_UNKNOWN) as u16);
        out.put_slice(&self.body);
        out.put_u8(LP_EOF);
        out
    }
}

/// `lpEncodeBacklen`: 7 bits per byte, most significant first; every byte but the first
/// has bit 7 set, so a reader walking backwards knows where the length ends.
fn put_backlen(out: &mut BytesMut, l: u64) {
    let n = if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2_097_151 {
        3
    } else if l < 268_435_455 {
        4
    } else {
        5
    };
    for i in (0..n).rev() {
        let byte = ((l >> (7 * i)) & 127) as u8;
        out.put_u8(if i == n - 1 { byte } else { byte | 128 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::{listpack, Item};

    fn one_int(v: i64) -> Vec<u8> {
        let mut lp = Listpack::new();
        lp.push_int(v);
        let b = lp.finish();
        b[LP_HDR_SIZE..b.len() - 1].to_vec()
    }

    #[test]
    fn integers_take_the_smallest_form() {
        assert_eq!(one_int(0), [0x00, 1]);
        assert_eq!(one_int(127), [0x7f, 1]);
        assert_eq!(one_int(128), [0xc0, 0x80, 2]);
        // the reference's worked example: -200 is int13 df 38
        assert_eq!(one_int(-200), [0xdf, 0x38, 2]);
        assert_eq!(one_int(-4096), [0xd0, 0x00, 2]);
        assert_eq!(one_int(4095), [0xcf, 0xff, 2]);
        assert_eq!(one_int(4096), [0xf1, 0x00, 0x10, 3]);
        assert_eq!(one_int(-32768), [0xf1, 0x00, 0x80, 3]);
        assert_eq!(one_int(32768), [0xf2, 0x00, 0x80, 0x00, 4]);
        assert_eq!(one_int(-8_388_608), [0xf2, 0x00, 0x00, 0x80, 4]);
        assert_eq!(one_int(8_388_608), [0xf3, 0, 0, 0x80, 0, 5]);
        assert_eq!(one_int(i64::from(i32::MIN))[..5], [0xf3, 0, 0, 0, 0x80]);
        assert_eq!(one_int(1 << 31)[0], 0xf4);
        let m = one_int(i64::MIN);
        assert_eq!(m.len(), 10);
        assert_eq!(m[9], 9);
    }

    #[test]
    fn strings_use_the_three_length_classes_and_backlens() {
        for (n, hdr, backlen) in [
            (0usize, &[0x80u8][..], &[1u8][..]),
            (63, &[0xbf], &[64]),
            (64, &[0xe0, 0x40], &[66]),
            (125, &[0xe0, 125], &[127]),
            (126, &[0xe0, 126], &[1, 0x80]),
            (4095, &[0xef, 0xff], &[0x20, 0x80 | 1]),
            (4096, &[0xf0, 0x00, 0x10, 0, 0], &[0x20, 0x80 | 5]),
            (16377, &[0xf0, 0xf9, 0x3f, 0, 0], &[0x7f, 0xfe]),
            (16378, &[0xf0, 0xfa, 0x3f, 0, 0], &[0x00, 0xff, 0xff]),
        ] {
            let s = vec![b'x'; n];
            let mut lp = Listpack::new();
            lp.push_str(&s);
            let b = lp.finish();
            let el = &b[LP_HDR_SIZE..b.len() - 1];
            assert_eq!(&el[..hdr.len()], hdr, "len {n}");
            assert_eq!(&el[el.len() - backlen.len()..], backlen, "len {n}");
            assert_eq!(el.len(), hdr.len() + n + backlen.len(), "len {n}");
        }
    }

    #[test]
    fn a_big_backlen_uses_every_byte() {
        let mut b = BytesMut::new();
        put_backlen(&mut b, 268_435_455);
        assert_eq!(b.as_ref(), [0x00, 0xff, 0xff, 0xff, 0xff]);
        b.clear();
        put_backlen(&mut b, 2_097_151);
        assert_eq!(b.as_ref(), [0x00, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn reads_back_through_the_decoder() {
        let mut lp = Listpack::new();
        let texts: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"12".to_vec(),
            b"-200".to_vec(),
            b"007".to_vec(),
            b"9223372036854775807".to_vec(),
            b"9223372036854775808".to_vec(),
            vec![b'y'; 5000],
        ];
        for t in &texts {
            lp.push_str(t);
        }
        let total = lp.bytes();
        let b = lp.finish();
        assert_eq!(b.len(), total);
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), texts.len() as u16);
        let items: Vec<Vec<u8>> = listpack(&b)
            .unwrap()
            .map(|i| match i.unwrap() {
                Item::Int(v) => v.to_string().into_bytes(),
                other => other.to_bytes().to_vec(),
            })
            .collect();
        assert_eq!(items, texts);
    }

    #[test]
    fn the_count_saturates_at_unknown() {
        let mut lp = Listpack::new();
        for _ in 0..70_000 {
            lp.push_int(1);
        }
        let b = lp.finish();
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), u16::MAX);
    }
}
