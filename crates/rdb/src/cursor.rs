//! A bounds-checked reader over the decoder's buffer. Every read either succeeds, asks for
//! more bytes ([`PErr::More`]: the caller rolls back to the start of the current unit and
//! waits), asks to leave raw mode ([`PErr::Switch`]: the value outgrew the big-value
//! threshold), or fails with an [`RdbError`] at the exact offset.

use std::borrow::Cow;

use bytes::Bytes;

use crate::blobs::Item;
use crate::constants::*;
use crate::error::RdbError;
use crate::lzf;

/// Why a unit did not parse. `More` and `Switch` are not errors of the input, which is
/// why they are no `RdbError`: the decoder handles both and goes on.
pub(crate) enum PErr {
    /// The buffer ends inside the unit: retry it whole when more bytes have arrived.
    More,
    /// A raw-mode value would grow past its threshold: parse it again as elements.
    Switch,
    Fail(RdbError),
}

impl From<RdbError> for PErr {
    fn from(e: RdbError) -> Self {
        PErr::Fail(e)
    }
}

pub(crate) type P<T> = Result<T, PErr>;

/// A length field, or the special string encoding that may stand in its place. The two
/// share the first byte's top bits (`11` marks an encoding), so a string header has to be
/// read as this before it is known to be a length.
pub(crate) enum LenEnc {
    Len(u64),
    Enc(u8),
}

/// How a string is stored.
pub(crate) enum StrHdr {
    /// Decimal text a server stored as an 8-, 16- or 32-bit integer (`rdbTryIntegerEncoding`).
    Int(i64),
    /// LZF-compressed (`rdbcompression yes`, strings over 20 bytes that compress by at
    /// least 4): the compressed and the expanded length.
    Lzf { clen: u64, ulen: u64 },
    /// Plain: a length, then that many bytes.
    Raw(u64),
}

/// A cursor lives for one unit: the decoder makes a fresh one per attempt, and only a unit
/// that parsed whole gets its position back (see [`PErr::More`]).
pub(crate) struct Cursor<'a> {
    /// `Bytes`, not `&[u8]`, so that strings can be handed out as zero-copy slices.
    data: &'a Bytes,
    pub(crate) pos: usize,
    base: u64,
    /// Reads may not extend past this index (raw-mode threshold); `usize::MAX` = no limit.
    limit: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a Bytes, pos: usize, base: u64, limit: usize) -> Self {
        Cursor {
            data,
            pos,
            base,
            limit,
        }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The absolute offset of a buffer position: errors name the offset in the file,
    /// which stays meaningful after the buffer has dropped what came before.
    pub(crate) fn offset_at(&self, pos: usize) -> u64 {
        self.base + pos as u64
    }

    pub(crate) fn fail<T>(&self, at: usize, expected: impl Into<String>) -> P<T> {
        Err(PErr::Fail(RdbError::invalid(self.offset_at(at), expected)))
    }

    /// The bytes between two positions already read.
    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        self.data.get(from..to).unwrap_or(&[])
    }

    /// The next `n` bytes. A length comes from the file and may be anything: one that
    /// cannot be a position is an error here, before any arithmetic can overflow; one past
    /// the buffer only asks for more bytes (the decoder checks the whole file's end).
    pub(crate) fn take(&mut self, n: u64) -> P<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .ok_or_else(|| {
                PErr::Fail(RdbError::invalid(
                    self.offset(),
                    "a length that fits in memory",
                ))
            })?;
        if end > self.limit {
            return Err(PErr::Switch);
        }
        let s = self.data.get(self.pos..end).ok_or(PErr::More)?;
        self.pos = end;
        Ok(s)
    }

    /// Like [`Self::take`], as a zero-copy slice of the buffer.
    pub(crate) fn take_bytes(&mut self, n: u64) -> P<Bytes> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..self.pos))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> P<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> P<u8> {
        Ok(self.array::<1>()?[0])
    }

    // Fixed-width numbers are little-endian (`rdbSaveMillisecondTime`, binary doubles,
    // the CRC): Redis converts on big-endian hosts, so files are portable. Lengths are the
    // exception, see `len_enc`.

    pub(crate) fn i64_le(&mut self) -> P<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32_le(&mut self) -> P<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64_le(&mut self) -> P<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A stream id stored as 16 raw bytes (big-endian ms, big-endian seq): PEL entries are
    /// written as their rax keys, whose byte order is id order.
    pub(crate) fn stream_id_raw(&mut self) -> P<crate::StreamId> {
        let b: [u8; 16] = self.array()?;
        let (ms, seq) = b.split_at(8);
        Ok(crate::StreamId {
            ms: u64::from_be_bytes(ms.try_into().unwrap_or_default()),
            seq: u64::from_be_bytes(seq.try_into().unwrap_or_default()),
        })
    }

    /// `rdbLoadLenByRef`: the top two bits of the first byte pick 6 bits, 14 bits, or a
    /// special encoding; `10` plus the low bits pick a 32- or 64-bit length. The 14-, 32-
    /// and 64-bit forms are big-endian, unlike the rest of the format.
    pub(crate) fn len_enc(&mut self) -> P<LenEnc> {
        let at = self.pos;
        let b = self.u8()?;
        match b >> 6 {
            RDB_6BITLEN => Ok(LenEnc::Len(u64::from(b & 0x3F))),
            RDB_14BITLEN => {
                let lo = self.u8()?;
                Ok(LenEnc::Len((u64::from(b & 0x3F) << 8) | u64::from(lo)))
            }
            RDB_ENCVAL => Ok(LenEnc::Enc(b & 0x3F)),
            _ => match b {
                RDB_32BITLEN => Ok(LenEnc::Len(u64::from(u32::from_be_bytes(self.array()?)))),
                RDB_64BITLEN => Ok(LenEnc::Len(u64::from_be_bytes(self.array()?))),
                _ => self.fail(
                    at,
                    format!("a length (byte {b:#04x} is not a length encoding)"),
                ),
            },
        }
    }

    /// A plain length (special encodings are an error here: only string headers may hold
    /// one, and taking it for a count would misread everything after it).
    pub(crate) fn length(&mut self, what: &str) -> P<u64> {
        let at = self.pos;
        match self.len_enc()? {
            LenEnc::Len(n) => Ok(n),
            LenEnc::Enc(_) => self.fail(at, format!("a length ({what})")),
        }
    }

    /// A string's header, without its bytes: lets a caller take a big string in pieces or
    /// step over it.
    pub(crate) fn string_hdr(&mut self) -> P<StrHdr> {
        let at = self.pos;
        match self.len_enc()? {
            LenEnc::Len(n) => Ok(StrHdr::Raw(n)),
            LenEnc::Enc(RDB_ENC_INT8) => Ok(StrHdr::Int(i64::from(self.u8()? as i8))),
            LenEnc::Enc(RDB_ENC_INT16) => {
                Ok(StrHdr::Int(i64::from(i16::from_le_bytes(self.array()?))))
            }
            LenEnc::Enc(RDB_ENC_INT32) => Ok(StrHdr::Int(i64::from(self.i32_le()?))),
            LenEnc::Enc(RDB_ENC_LZF) => {
                let clen = self.length("LZF compressed length")?;
                let ulen = self.length("LZF uncompressed length")?;
                // Checked before anything is buffered or allocated: a corrupt header could
                // otherwise ask for gigabytes that a few compressed bytes can never fill.
                if !lzf::plausible(clen, ulen) {
                    return self.fail(at, format!("an LZF uncompressed length possible for {clen} compressed bytes (got {ulen})"));
                }
                Ok(StrHdr::Lzf { clen, ulen })
            }
            LenEnc::Enc(e) => {
                self.fail(at, format!("a string encoding (got special encoding {e})"))
            }
        }
    }

    /// A whole string, decoded (borrowed when stored plainly).
    pub(crate) fn string(&mut self) -> P<Cow<'a, [u8]>> {
        let at = self.pos;
        match self.string_hdr()? {
            StrHdr::Raw(n) => Ok(Cow::Borrowed(self.take(n)?)),
            // The server hands such a string out as its decimal text, so that is its value.
            StrHdr::Int(i) => Ok(Cow::Owned(
                itoa::Buffer::new().format(i).as_bytes().to_vec(),
            )),
            StrHdr::Lzf { clen, ulen } => {
                let c = self.take(clen)?;
                let ulen = usize::try_from(ulen).map_err(|_| {
                    PErr::Fail(RdbError::invalid(
                        self.offset_at(at),
                        "an LZF length that fits in memory",
                    ))
                })?;
                match lzf::decompress(c, ulen) {
                    Ok(v) => Ok(Cow::Owned(v)),
                    Err(e) => self.fail(at, e.to_string()),
                }
            }
        }
    }

    /// A whole string as `Bytes`: a zero-copy slice of the buffer when stored plainly.
    pub(crate) fn string_bytes(&mut self) -> P<Bytes> {
        Ok(match self.string()? {
            // `string` just read these bytes, so they end at `self.pos`
            Cow::Borrowed(b) => self.data.slice(self.pos - b.len()..self.pos),
            Cow::Owned(v) => Bytes::from(v),
        })
    }

    /// A whole string as an owned copy (for keys: a small copy does not pin the buffer,
    /// which lets a big raw value grow the buffer in place).
    pub(crate) fn string_copy(&mut self) -> P<Bytes> {
        Ok(match self.string()? {
            Cow::Borrowed(b) => Bytes::copy_from_slice(b),
            Cow::Owned(v) => Bytes::from(v),
        })
    }

    /// Step over a string without decoding it (raw mode): an LZF string is not expanded,
    /// as its compressed bytes are what a raw value carries.
    pub(crate) fn skip_string(&mut self) -> P<()> {
        match self.string_hdr()? {
            StrHdr::Raw(n) => self.take(n).map(drop),
            StrHdr::Int(_) => Ok(()),
            StrHdr::Lzf { clen, .. } => self.take(clen).map(drop),
        }
    }
}

/// A container element as `Bytes`: strings are zero-copy slices of the container (which
/// is itself usually a slice of the input), integers their decimal text, as a server
/// would return them.
pub(crate) fn item_bytes(blob: &Bytes, it: Item<'_>) -> Bytes {
    match it {
        Item::Str([]) => Bytes::new(),
        Item::Str(s) => blob.slice_ref(s),
        Item::Int(_) => it.to_bytes(),
    }
}
