//! LZF decompression (liblzf format, as Redis writes it for strings with encoding
//! `RDB_ENC_LZF`). Written here rather than taken from the `lzf` crate so that a corrupt
//! length can be rejected before anything is allocated and every error is a value.

/// The largest output one input byte can produce: a 3-byte back-reference yields at most
/// 264 bytes, so no valid stream expands by more than 88x (plus a little for tiny inputs).
const MAX_EXPANSION: u64 = 88;

/// Why a compressed string could not be expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LzfError {
    /// The declared uncompressed length is impossible for this compressed length.
    ImpossibleLength,
    /// The stream ended inside a literal run or a back-reference.
    Truncated,
    /// A back-reference points before the start of the output.
    BadBackReference,
    /// The output does not have the declared length.
    LengthMismatch,
}

impl std::fmt::Display for LzfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LzfError::ImpossibleLength => "an uncompressed length possible for the input",
            LzfError::Truncated => "a complete LZF stream",
            LzfError::BadBackReference => "an LZF back-reference inside the output",
            LzfError::LengthMismatch => "LZF output of the declared length",
        })
    }
}

/// True if `ulen` bytes could come out of `clen` compressed bytes.
pub fn plausible(clen: u64, ulen: u64) -> bool {
    ulen <= clen.saturating_mul(MAX_EXPANSION).saturating_add(16)
}

/// Expand `input` into exactly `ulen` bytes.
pub fn decompress(input: &[u8], ulen: usize) -> Result<Vec<u8>, LzfError> {
    if !plausible(input.len() as u64, ulen as u64) {
        return Err(LzfError::ImpossibleLength);
    }
    // Zero-filled up front (calloc), then written by index: no capacity checks per copy.
    let mut out = vec![0u8; ulen];
    let mut op = 0usize;
    let mut i = 0usize;
    while let Some(&ctrl) = input.get(i) {
        let ctrl = usize::from(ctrl);
        i += 1;
        if ctrl < 32 {
            // literal run of ctrl + 1 bytes
            let n = ctrl + 1;
            let lit = input.get(i..i + n).ok_or(LzfError::Truncated)?;
            out.get_mut(op..op + n)
                .ok_or(LzfError::LengthMismatch)?
                .copy_from_slice(lit);
            op += n;
            i += n;
        } else {
            // A back-reference: 3 bits of length (7 = "continued in the next byte"), 13 bits
            // of distance back into the output.
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i).ok_or(LzfError::Truncated)?);
                i += 1;
            }
            len += 2;
            let low = usize::from(*input.get(i).ok_or(LzfError::Truncated)?);
            i += 1;
            let dist = ((ctrl & 0x1f) << 8 | low) + 1;
            if dist > op {
                return Err(LzfError::BadBackReference);
            }
            if op + len > ulen {
                return Err(LzfError::LengthMismatch);
            }
            let start = op - dist;
            // A long copy that does not overlap its own output is worth `memmove`'s setup.
            if dist >= len && len > 16 {
                out.copy_within(start..start + len, op);
            } else {
                // short or overlapping (a repeated pattern): byte by byte, as liblzf does
                // why: hot loop; start + k < op + k < op + len <= ulen == out.len() (checked above).
                #[allow(clippy::indexing_slicing)]
                for k in 0..len {
                    out[op + k] = out[start + k];
                }
            }
            op += len;
        }
    }
    if op != ulen {
        return Err(LzfError::LengthMismatch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_lzf_crate() {
        let mut data = Vec::new();
        for i in 0..5000u32 {
            data.extend_from_slice(format!("key:{} aaaaaaaaaaaaaaaa ", i % 97).as_bytes());
        }
        let c = ::lzf::compress(&data).unwrap();
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        let short =
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let c = ::lzf::compress(short).unwrap();
        assert_eq!(decompress(&c, short.len()).unwrap(), short.to_vec());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decompress(&[0xe0], 10), Err(LzfError::Truncated));
        assert_eq!(
            decompress(&[0x20, 0x00], 3),
            Err(LzfError::BadBackReference)
        );
        assert_eq!(
            decompress(&[0x00], 1 << 30),
            Err(LzfError::ImpossibleLength)
        );
        assert_eq!(decompress(&[0x01, b'a'], 2), Err(LzfError::Truncated));
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decompress(&junk, 100);
        }
    }
}
