//! Streaming RESP decoder: check a complete frame is buffered, then slice it out.
//!
//! Two passes, as in mini-redis: `check` walks the buffer and finds where the
//! next frame ends (or says more bytes are needed) without allocating; `parse`
//! then builds the frame from a frozen `Bytes`, so bulk strings are zero-copy
//! slices. "Need more bytes" is `Ok(None)`, never an error, and the buffer is
//! untouched until a whole frame is there. The number of bytes each frame took
//! is returned because replication offsets count exactly those bytes.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

use crate::frame::Frame;

/// Largest bulk string we accept; Redis's own `proto-max-bulk-len` tops out at 512 MB
/// by default but can be raised, so allow up to 4 GiB before calling it corrupt.
pub const MAX_BULK_LEN: u64 = 4 << 30;
/// Largest aggregate length we accept (elements, not bytes).
pub const MAX_ARRAY_LEN: u64 = 1 << 32;
/// Nesting limit: server replies are at most a few levels deep.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RespError {
    #[error("protocol error at byte {offset}: unknown type byte 0x{byte:02x}")]
    UnknownType { offset: usize, byte: u8 },
    #[error("protocol error at byte {offset}: invalid length {text:?}")]
    BadLength { offset: usize, text: String },
    #[error("protocol error at byte {offset}: invalid integer {text:?}")]
    BadInteger { offset: usize, text: String },
    #[error("protocol error at byte {offset}: bulk string not followed by CRLF")]
    MissingCrlf { offset: usize },
    #[error("protocol error at byte {offset}: frames nested deeper than {MAX_DEPTH}")]
    TooDeep { offset: usize },
}

/// Decode one frame from the front of `buf`. On success the frame's bytes are
/// removed from `buf` and the frame is returned with the number of bytes it took.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(Frame, usize)>, RespError> {
    let Some(end) = check(buf, 0, 0)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(end).freeze();
    let (frame, used) = parse(&bytes, 0)?;
    debug_assert_eq!(used, end);
    Ok(Some((frame, end)))
}

/// Decode one frame from an immutable buffer starting at `pos`; returns the frame
/// and the position just after it. Used when the caller already holds `Bytes`.
pub fn decode_at(bytes: &Bytes, pos: usize) -> Result<Option<(Frame, usize)>, RespError> {
    match check(bytes, pos, 0)? {
        None => Ok(None),
        Some(end) => {
            let (frame, used) = parse(bytes, pos)?;
            debug_assert_eq!(used, end);
            Ok(Some((frame, end)))
        }
    }
}

/// Find the end of the line starting at `pos`: returns the index of `\r`.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let mut from = pos;
    loop {
        let rel = memchr(b'\n', buf.get(from..)?)?;
        let nl = from + rel;
        if nl > pos && buf.get(nl - 1) == Some(&b'\r') {
            return Some(nl - 1);
        }
        // A bare '\n' inside a simple line: keep looking (servers never send it,
        // but treating it as data keeps the check and parse passes in agreement).
        from = nl + 1;
    }
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    // Hand-rolled: str::parse would accept a leading '+', which RESP does not.
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

/// A length header: `-1` means null, otherwise 0..=limit.
fn parse_len(buf: &[u8], start: usize, end: usize, limit: u64) -> Result<Option<u64>, RespError> {
    let text = buf.get(start..end).unwrap_or_default();
    match parse_i64(text) {
        Some(-1) => Ok(None),
        Some(n) if n >= 0 && (n as u64) <= limit => Ok(Some(n as u64)),
        _ => Err(RespError::BadLength {
            offset: start,
            text: String::from_utf8_lossy(text.get(..32).unwrap_or(text)).into_owned(),
        }),
    }
}

/// Walk one frame starting at `pos`; `Ok(Some(end))` when complete.
fn check(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::TooDeep { offset: pos });
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, pos + 1) else {
        return Ok(None);
    };
    let after_line = eol + 2;
    match kind {
        b'+' | b'-' | b'(' => Ok(Some(after_line)),
        b',' | b'#' | b'_' => Ok(Some(after_line)),
        b':' => {
            let text = buf.get(pos + 1..eol).unwrap_or_default();
            parse_i64(text).ok_or_else(|| RespError::BadInteger {
                offset: pos + 1,
                text: String::from_utf8_lossy(text.get(..32).unwrap_or(text)).into_owned(),
            })?;
            Ok(Some(after_line))
        }
        b'$' | b'=' | b'!' => match parse_len(buf, pos + 1, eol, MAX_BULK_LEN)? {
            None => Ok(Some(after_line)),
            Some(len) => {
                let end = after_line as u64 + len + 2;
                if (buf.len() as u64) < end {
                    return Ok(None);
                }
                let end = end as usize;
                if buf.get(end - 2..end) != Some(b"\r\n".as_slice()) {
                    return Err(RespError::MissingCrlf { offset: end - 2 });
                }
                Ok(Some(end))
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = parse_len(buf, pos + 1, eol, MAX_ARRAY_LEN)? else {
                return Ok(Some(after_line));
            };
            let items = if matches!(kind, b'%' | b'|') {
                n * 2
            } else {
                n
            };
            let mut at = after_line;
            for _ in 0..items {
                match check(buf, at, depth + 1)? {
                    Some(next) => at = next,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute describes the frame that follows it; both travel together.
                return check(buf, at, depth + 1);
            }
            Ok(Some(at))
        }
        other => Err(RespError::UnknownType {
            offset: pos,
            byte: other,
        }),
    }
}

/// Build the frame at `pos` from a buffer `check` has accepted.
fn parse(bytes: &Bytes, pos: usize) -> Result<(Frame, usize), RespError> {
    let buf: &[u8] = bytes;
    // `check` guarantees the type byte and the line end exist; recompute rather than
    // thread them through.
    let kind = *buf.get(pos).ok_or(RespError::MissingCrlf { offset: pos })?;
    let eol = line_end(buf, pos + 1).ok_or(RespError::MissingCrlf { offset: pos })?;
    let after_line = eol + 2;
    let line = || bytes.slice(pos + 1..eol);
    Ok(match kind {
        b'+' => (Frame::Simple(line()), after_line),
        b'-' => (Frame::Error(line()), after_line),
        b'(' => (Frame::BigNumber(line()), after_line),
        b',' => (Frame::Double(line()), after_line),
        b'#' => (Frame::Boolean(buf.get(pos + 1) == Some(&b't')), after_line),
        b'_' => (Frame::Null, after_line),
        b':' => {
            let text = buf.get(pos + 1..eol).unwrap_or_default();
            let n = parse_i64(text).ok_or(RespError::BadInteger {
                offset: pos + 1,
                text: String::new(),
            })?;
            (Frame::Integer(n), after_line)
        }
        b'$' | b'=' | b'!' => match parse_len(buf, pos + 1, eol, MAX_BULK_LEN)? {
            None => (Frame::Null, after_line),
            Some(len) => {
                let end = after_line + len as usize;
                let data = bytes.slice(after_line..end);
                let frame = match kind {
                    b'$' => Frame::Bulk(data),
                    b'=' => Frame::Verbatim(data),
                    _ => Frame::BlobError(data),
                };
                (frame, end + 2)
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = parse_len(buf, pos + 1, eol, MAX_ARRAY_LEN)? else {
                return Ok((Frame::Null, after_line));
            };
            let mut at = after_line;
            if matches!(kind, b'%' | b'|') {
                let mut pairs = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    let (k, next) = parse(bytes, at)?;
                    let (v, next) = parse(bytes, next)?;
                    pairs.push((k, v));
                    at = next;
                }
                if kind == b'|' {
                    // Attributes carry hints we do not use; return the annotated frame.
                    return parse(bytes, at);
                }
                (Frame::Map(pairs), at)
            } else {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    let (item, next) = parse(bytes, at)?;
                    items.push(item);
                    at = next;
                }
                let frame = match kind {
                    b'*' => Frame::Array(items),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                };
                (frame, at)
            }
        }
        other => {
            return Err(RespError::UnknownType {
                offset: pos,
                byte: other,
            })
        }
    })
}

/// Drop leading bare `\n` bytes, which a master sends as keep-alives while it
/// prepares a snapshot. Returns how many were dropped.
pub fn skip_newlines(buf: &mut BytesMut) -> usize {
    let n = buf.iter().take_while(|&&b| b == b'\n').count();
    buf.advance(n);
    n
}
