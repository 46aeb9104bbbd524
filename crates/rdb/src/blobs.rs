//! Parsers for the compact containers Redis stores as one RDB string: listpack, ziplist,
//! intset and zipmap. They work on a complete blob in memory (a container is one parse
//! unit of the streaming decoder) and report problems as `expected …` strings, which the
//! decoder turns into an [`crate::RdbError`] at the blob's offset.
//!
//! Each is an iterator of `Result<Item, &'static str>` that stops after the first error.

/// One element of a listpack or ziplist: a byte string or an integer. Integers are kept
/// as numbers, not text: a score or a stream id is read from them directly, and only a
/// member the caller hands out becomes text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl Item<'_> {
    /// The element as Redis would return it (integers as decimal text).
    pub fn to_bytes(self) -> bytes::Bytes {
        match self {
            Item::Str(s) => bytes::Bytes::copy_from_slice(s),
            Item::Int(i) => bytes::Bytes::copy_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        }
    }

    /// The element as an integer (stream ids and flags are stored as integers, but a
    /// string holding a decimal integer is accepted too, as the server's own reader,
    /// `lpGetInteger`, falls back to parsing text).
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Item::Int(i) => Some(i),
            Item::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }

    /// The element as a zset score: servers store a whole-number score as an integer
    /// element and any other as decimal text.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Item::Int(i) => Some(i as f64),
            Item::Str(s) => parse_double(s),
        }
    }

    /// Size in bytes, for chunk accounting.
    pub fn len(self) -> usize {
        match self {
            Item::Str(s) => s.len(),
            Item::Int(_) => 8,
        }
    }

    pub fn is_empty(self) -> bool {
        matches!(self, Item::Str(s) if s.is_empty())
    }
}

/// Parse a score written as text (`%.17g` style, `inf`, `-inf`, `nan`).
pub fn parse_double(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    match t {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// Every fixed-width integer in these containers is a signed little-endian `intN_t`,
/// including the 24-bit forms no Rust type has, hence the explicit sign extension.
fn le_int(b: &[u8]) -> i64 {
    // sign-extend a little-endian integer of 1..=8 bytes
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(*byte) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if bits >= 64 {
        v as i64
    } else {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    }
}

// ---------------------------------------------------------------------------------------
// listpack

/// Iterator over a listpack's elements.
pub struct Listpack<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

/// Start walking a listpack; checks the header's total-bytes field. The field must equal
/// the string's length: a listpack is stored as one RDB string, so any difference means
/// a corrupt or truncated blob, and checking it first bounds every later read. The
/// element count (bytes 4-5) is not checked: it saturates at 65535 ("walk to count").
pub fn listpack(data: &[u8]) -> Result<Listpack<'_>, &'static str> {
    let total = data
        .get(0..4)
        .map(le_int)
        .ok_or("a listpack header (6 bytes)")? as u32;
    if data.len() < 7 {
        return Err("a listpack header (6 bytes) and terminator");
    }
    if total as usize != data.len() {
        return Err("listpack total-bytes equal to the string length");
    }
    Ok(Listpack {
        data,
        pos: 6,
        done: false,
    })
}

/// Size of the back-length after an element of `l` encoded bytes: 7 bits per byte. It lets
/// a server walk a listpack backwards; reading forwards it is only stepped over.
fn lp_backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

impl<'a> Listpack<'a> {
    fn next_item(&mut self) -> Result<Option<Item<'a>>, &'static str> {
        let d = self.data;
        let p = self.pos;
        let b = *d.get(p).ok_or("a listpack element or 0xFF terminator")?;
        let get =
            |from: usize, n: usize| d.get(from..from + n).ok_or("a complete listpack element");
        let (item, size) = if b == 0xFF {
            // An early terminator would silently drop the bytes after it.
            if p + 1 != d.len() {
                return Err("the listpack terminator at the end of the string");
            }
            return Ok(None);
        } else if b & 0x80 == 0 {
            (Item::Int(i64::from(b & 0x7F)), 1)
        } else if b & 0xC0 == 0x80 {
            let n = usize::from(b & 0x3F);
            (Item::Str(get(p + 1, n)?), 1 + n)
        } else if b & 0xE0 == 0xC0 {
            // 13-bit two's complement: 4096 and up are the negatives.
            let lo = *get(p + 1, 1)?.first().unwrap_or(&0);
            let v = (i64::from(b & 0x1F) << 8) | i64::from(lo);
            (Item::Int(if v >= 1 << 12 { v - (1 << 13) } else { v }), 2)
        } else if b & 0xF0 == 0xE0 {
            let lo = *get(p + 1, 1)?.first().unwrap_or(&0);
            let n = (usize::from(b & 0x0F) << 8) | usize::from(lo);
            (Item::Str(get(p + 2, n)?), 2 + n)
        } else {
            match b {
                0xF0 => {
                    let n = le_int(get(p + 1, 4)?) as u32 as usize;
                    (Item::Str(get(p + 5, n)?), 5 + n)
                }
                0xF1 => (Item::Int(le_int(get(p + 1, 2)?)), 3),
                0xF2 => (Item::Int(le_int(get(p + 1, 3)?)), 4),
                0xF3 => (Item::Int(le_int(get(p + 1, 4)?)), 5),
                0xF4 => (Item::Int(le_int(get(p + 1, 8)?)), 9),
                _ => return Err("a valid listpack element encoding"),
            }
        };
        let next = p + size + lp_backlen_size(size);
        // The terminator must still follow, so landing exactly on the end is an error
        // too, found by the next call.
        if next > d.len() {
            return Err("a listpack element's back-length");
        }
        self.pos = next;
        Ok(Some(item))
    }
}

impl<'a> Iterator for Listpack<'a> {
    type Item = Result<Item<'a>, &'static str>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(i)) => Some(Ok(i)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ziplist

/// Iterator over a ziplist's entries.
pub struct Ziplist<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

/// Start walking a ziplist; checks the header's total-bytes field (`zlbytes`) against the
/// string's length, for the reasons given at [`listpack`]. The tail offset and the count
/// (`zllen`, which saturates at 65535 as well) are not needed to read forwards.
pub fn ziplist(data: &[u8]) -> Result<Ziplist<'_>, &'static str> {
    let total = data
        .get(0..4)
        .map(le_int)
        .ok_or("a ziplist header (10 bytes)")? as u32;
    if data.len() < 11 {
        return Err("a ziplist header (10 bytes) and terminator");
    }
    if total as usize != data.len() {
        return Err("ziplist zlbytes equal to the string length");
    }
    Ok(Ziplist {
        data,
        pos: 10,
        done: false,
    })
}

impl<'a> Ziplist<'a> {
    fn next_item(&mut self) -> Result<Option<Item<'a>>, &'static str> {
        let d = self.data;
        let mut p = self.pos;
        let get = |from: usize, n: usize| d.get(from..from + n).ok_or("a complete ziplist entry");
        let first = *d.get(p).ok_or("a ziplist entry or 0xFF terminator")?;
        if first == 0xFF {
            // An early terminator would silently drop the bytes after it.
            if p + 1 != d.len() {
                return Err("the ziplist terminator at the end of the string");
            }
            return Ok(None);
        }
        // prevlen: 1 byte, or 0xFE + u32 for a previous entry of 254 bytes or more. Like
        // a listpack's back-length it serves backward walks and is only stepped over.
        p += if first == 0xFE { 5 } else { 1 };
        let enc = *get(p, 1)?.first().unwrap_or(&0);
        let (item, size) = match enc >> 6 {
            0 => {
                let n = usize::from(enc & 0x3F);
                (Item::Str(get(p + 1, n)?), 1 + n)
            }
            1 => {
                let lo = *get(p + 1, 1)?.first().unwrap_or(&0);
                let n = (usize::from(enc & 0x3F) << 8) | usize::from(lo);
                (Item::Str(get(p + 2, n)?), 2 + n)
            }
            2 => {
                // 32-bit big-endian length
                let n = get(p + 1, 4)?
                    .iter()
                    .fold(0usize, |n, &b| (n << 8) | usize::from(b));
                (Item::Str(get(p + 5, n)?), 5 + n)
            }
            _ => match enc {
                0xC0 => (Item::Int(le_int(get(p + 1, 2)?)), 3),
                0xD0 => (Item::Int(le_int(get(p + 1, 4)?)), 5),
                0xE0 => (Item::Int(le_int(get(p + 1, 8)?)), 9),
                0xF0 => (Item::Int(le_int(get(p + 1, 3)?)), 4),
                0xFE => (Item::Int(le_int(get(p + 1, 1)?)), 2),
                // 0..=12 packed into the encoding byte itself: its low nibble minus one,
                // as nibble 0000 is the 24-bit form's (0xF0) and 1110/1111 are the 8-bit
                // form's and the terminator's
                0xF1..=0xFD => (Item::Int(i64::from(enc & 0x0F) - 1), 1),
                _ => return Err("a valid ziplist entry encoding"),
            },
        };
        self.pos = p + size;
        Ok(Some(item))
    }
}

impl<'a> Iterator for Ziplist<'a> {
    type Item = Result<Item<'a>, &'static str>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(i)) => Some(Ok(i)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// intset

/// The members of an intset, in stored (ascending) order. The header's encoding is the
/// width of every member (2, 4 or 8 bytes: the whole set is upgraded when one member
/// needs more), so the body's length must be exactly count times width.
pub fn intset(data: &[u8]) -> Result<impl Iterator<Item = i64> + '_, &'static str> {
    let enc = data
        .get(0..4)
        .map(le_int)
        .ok_or("an intset header (8 bytes)")? as u32 as usize;
    let count = data
        .get(4..8)
        .map(le_int)
        .ok_or("an intset header (8 bytes)")? as u32 as usize;
    if !matches!(enc, 2 | 4 | 8) {
        return Err("an intset encoding of 2, 4 or 8");
    }
    let body = data.get(8..).unwrap_or(&[]);
    if Some(body.len()) != count.checked_mul(enc) {
        return Err("an intset length matching its count");
    }
    Ok(body.chunks_exact(enc).map(le_int))
}

// ---------------------------------------------------------------------------------------
// zipmap

/// The field/value pairs of a zipmap (RDB type 9, Redis 2.4).
/// Field/value pairs borrowed from a blob.
pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

pub fn zipmap(data: &[u8]) -> Result<Pairs<'_>, &'static str> {
    // zmlen is the pair count only below 254 and is not trusted: the walk finds the end
    let mut p = 1usize; // skip zmlen
    if data.is_empty() {
        return Err("a zipmap header");
    }
    let mut out = Vec::new();
    let len_at = |p: usize| -> Result<(usize, usize), &'static str> {
        let b = *data.get(p).ok_or("a zipmap length")?;
        if b < 254 {
            Ok((usize::from(b), 1))
        } else if b == 254 {
            let l = data.get(p + 1..p + 5).ok_or("a zipmap 4-byte length")?;
            Ok((le_int(l) as u32 as usize, 5))
        } else {
            Err("a zipmap length")
        }
    };
    loop {
        if *data.get(p).ok_or("a zipmap entry or 0xFF terminator")? == 0xFF {
            if p + 1 != data.len() {
                return Err("the zipmap terminator at the end of the string");
            }
            return Ok(out);
        }
        let (klen, s) = len_at(p)?;
        p += s;
        let key = data.get(p..p + klen).ok_or("a complete zipmap key")?;
        p += klen;
        let (vlen, s) = len_at(p)?;
        p += s;
        // `free`: unused bytes after the value, left when a value was overwritten in place
        // by a shorter one; they belong to no field.
        let free = usize::from(*data.get(p).ok_or("a zipmap free byte")?);
        p += 1;
        let val = data.get(p..p + vlen).ok_or("a complete zipmap value")?;
        p += vlen + free;
        out.push((key, val));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_worked_example() {
        // RPUSH l a 12 -200 on Redis 7.4.1 (reference §B5)
        let lp = [
            0x0f, 0, 0, 0, 3, 0, 0x81, 0x61, 0x02, 0x0c, 0x01, 0xdf, 0x38, 0x02, 0xff,
        ];
        let items: Vec<_> = listpack(&lp).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(items, vec![Item::Str(b"a"), Item::Int(12), Item::Int(-200)]);
    }

    #[test]
    fn ziplist_worked_example() {
        let zl = [
            0x14, 0, 0, 0, 0x0f, 0, 0, 0, 3, 0, 0x00, 0x01, 0x61, 0x03, 0xfd, 0x02, 0xc0, 0x38,
            0xff, 0xff,
        ];
        let items: Vec<_> = ziplist(&zl).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(items, vec![Item::Str(b"a"), Item::Int(12), Item::Int(-200)]);
    }

    #[test]
    fn intset_example() {
        let is = [
            4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0x70, 0x11, 1, 0,
        ];
        assert_eq!(intset(&is).unwrap().collect::<Vec<_>>(), vec![1, 2, 70000]);
    }

    #[test]
    fn zipmap_example() {
        // zmlen 2, "a"->"1" (free 0), "bb"->"22" (free 1 + pad)
        let zm = [
            2, 1, b'a', 1, 0, b'1', 2, b'b', b'b', 2, 1, b'2', b'2', 0, 0xff,
        ];
        let pairs = zipmap(&zm).unwrap();
        assert_eq!(
            pairs,
            vec![(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b"22"[..])]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..40usize {
            for seed in 0..20u8 {
                let junk: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed) ^ 0xA5)
                    .collect();
                if let Ok(lp) = listpack(&junk) {
                    lp.for_each(drop);
                }
                if let Ok(zl) = ziplist(&junk) {
                    zl.for_each(drop);
                }
                if let Ok(is) = intset(&junk) {
                    is.for_each(drop);
                }
                let _ = zipmap(&junk);
            }
        }
    }
}
