//! One RESP value, as a server sends it or as we send a command.
//!
//! Bulk strings are `Bytes` slices of the read buffer, so a 512 MB value read
//! from a socket is never copied on its way to the writer.

use bytes::Bytes;

/// A decoded RESP2 or RESP3 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR message` (the text after the dash, code included).
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3).
    Null,
    /// `*2\r\n…`
    Array(Vec<Frame>),
    /// RESP3 `,3.14`; kept as text so that `inf`/`nan` and exact digits survive.
    Double(Bytes),
    /// RESP3 `#t` / `#f`
    Boolean(bool),
    /// RESP3 `(12345678901234567890`
    BigNumber(Bytes),
    /// RESP3 `=15\r\ntxt:Some string` (the 3-letter format is kept in front).
    Verbatim(Bytes),
    /// RESP3 `!21\r\nSYNTAX invalid syntax`
    BlobError(Bytes),
    /// RESP3 `%2\r\n…` as key/value pairs in order.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~3\r\n…`
    Set(Vec<Frame>),
    /// RESP3 `>3\r\n…` (out-of-band messages).
    Push(Vec<Frame>),
}

impl Frame {
    /// The bytes of a simple or bulk string, the only shapes a command argument
    /// or a textual reply can take.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(b) => Some(b),
            _ => None,
        }
    }

    /// The text of an error reply (`Error` or RESP3 `BlobError`).
    pub fn as_error(&self) -> Option<&Bytes> {
        match self {
            Frame::Error(b) | Frame::BlobError(b) => Some(b),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        self.as_error().is_some()
    }

    /// An integer reply, or a string that spells one (servers differ in which they send).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Frame::Integer(n) => Some(*n),
            Frame::Simple(b) | Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// Elements of an array-like reply.
    pub fn as_array(&self) -> Option<&[Frame]> {
        match self {
            Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Some(v),
            _ => None,
        }
    }

    pub fn into_array(self) -> Option<Vec<Frame>> {
        match self {
            Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Some(v),
            _ => None,
        }
    }

    /// A command as an argument vector, when every element is a string.
    pub fn into_args(self) -> Option<Vec<Bytes>> {
        let items = self.into_array()?;
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Frame::Bulk(b) | Frame::Simple(b) => args.push(b),
                Frame::Integer(n) => args.push(Bytes::from(n.to_string())),
                _ => return None,
            }
        }
        Some(args)
    }

    /// A short human description for error messages; never the whole value.
    pub fn describe(&self) -> String {
        fn clip(b: &[u8]) -> String {
            // Bytes from the network, bound for a log line: escaped.
            let s = crate::escape_controls(b.get(..120).unwrap_or(b));
            if b.len() > 120 {
                format!("{s}…")
            } else {
                s
            }
        }
        match self {
            Frame::Simple(b) => format!("+{}", clip(b)),
            Frame::Error(b) | Frame::BlobError(b) => format!("-{}", clip(b)),
            Frame::Integer(n) => format!(":{n}"),
            Frame::Bulk(b) => format!("bulk({} bytes) {:?}", b.len(), clip(b)),
            Frame::Null => "null".into(),
            Frame::Array(v) => format!("array of {}", v.len()),
            Frame::Double(b) => format!(",{}", clip(b)),
            Frame::Boolean(b) => format!("#{b}"),
            Frame::BigNumber(b) => format!("({}", clip(b)),
            Frame::Verbatim(b) => format!("verbatim {:?}", clip(b)),
            Frame::Map(v) => format!("map of {}", v.len()),
            Frame::Set(v) => format!("set of {}", v.len()),
            Frame::Push(v) => format!("push of {}", v.len()),
        }
    }
}
