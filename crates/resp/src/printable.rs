//! Text a server sent, made safe to print: the one place where bytes from the
//! network become a `String` for a log line, a console message or `/status`.
//!
//! A server (or anything pretending to be one) controls its error replies, and
//! some echo our own bytes back (`ERR unknown command '…'`), which echo a source's
//! key or command names. Written raw to a terminal, an ESC sequence could clear the
//! screen or rewrite earlier lines, and a `\n` could forge a log line. So every
//! control character (below 0x20, DEL, and the C1 range U+0080..U+009F) is written
//! as an escape (`\x1b`, `\n`, `\u{9b}`); the rest passes through, invalid UTF-8
//! as U+FFFD.

use std::fmt::Write as _;

/// `bytes` as printable text: lossy UTF-8 with every control character escaped.
pub fn escape_controls(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(char::is_control) {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `char::is_control` is exactly C0, DEL and C1.
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_unchanged() {
        assert_eq!(
            escape_controls(b"ERR unknown command 'x'"),
            "ERR unknown command 'x'"
        );
        assert_eq!(escape_controls("clé ü".as_bytes()), "clé ü");
        assert_eq!(escape_controls(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn controls_escaped() {
        assert_eq!(
            escape_controls(b"ERR unknown command '\x1b[2J\x07'"),
            "ERR unknown command '\\x1b[2J\\x07'"
        );
        assert_eq!(escape_controls(b"a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(escape_controls(b"\x00\x7f"), "\\x00\\x7f");
        assert_eq!(escape_controls("x\u{9b}2J".as_bytes()), "x\\u{9b}2J");
        // Every byte below 0x20 and DEL: nothing raw remains.
        let all: Vec<u8> = (0u8..0x20).chain([0x7f]).collect();
        let out = escape_controls(&all);
        assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out}");
    }
}
