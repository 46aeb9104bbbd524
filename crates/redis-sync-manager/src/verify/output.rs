//! What the user sees: a table of counts per category, the first differing
//! keys of each (binary-safe: printable ASCII as is, anything else `\xHH`),
//! and the same as JSON for `--report=FILE`.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;

use super::{Category, VerifyReport};

/// A key as `redis-cli` would show it inside quotes: bytes outside printable
/// ASCII, quotes and backslashes escaped, so any key prints on one line.
pub fn escape(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &c in key {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(c as char),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out
}

/// The summary printed at the end of a run.
pub fn render(report: &VerifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify ({}): {} source keys and {} target keys checked in {:.1}s ({:.0} keys/s)",
        report.mode,
        report.source_keys,
        report.target_keys,
        report.seconds,
        // An empty run can take no measurable time.
        report.source_keys as f64 / report.seconds.max(1e-3)
    );
    let _ = writeln!(out, "{:<10} {:>10}", "category", "keys");
    for cat in Category::ALL {
        let _ = writeln!(out, "{:<10} {:>10}", cat.name(), report.count(cat));
    }
    let _ = writeln!(
        out,
        "re-checked {} keys that differed at first; {} of them matched on a later look",
        report.rechecked, report.resolved
    );
    for cat in Category::ALL {
        let shown: Vec<_> = report
            .samples
            .iter()
            .filter(|d| d.category == cat)
            .collect();
        if shown.is_empty() {
            continue;
        }
        let _ = writeln!(out, "first {} {} keys:", cat.name(), shown.len());
        for d in shown {
            // Most deployments use db 0 only, where naming it is noise.
            let db = if d.db != 0 {
                format!(" (db {})", d.db)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  \"{}\"{db}: {}", escape(&d.key), d.detail);
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if report.equal() {
            "result: EQUAL"
        } else {
            "result: DIFFERENT"
        }
    );
    out
}

#[derive(Serialize)]
struct JsonDiff<'a> {
    category: &'static str,
    db: u32,
    /// Escaped for reading; `key_base64` has the exact bytes.
    key: String,
    key_base64: String,
    detail: &'a str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    mode: String,
    equal: bool,
    source_keys: u64,
    target_keys: u64,
    seconds: f64,
    // Sorted keys: the same result gives the same JSON, so reports diff well.
    counts: std::collections::BTreeMap<&'static str, u64>,
    rechecked: u64,
    resolved: u64,
    samples: Vec<JsonDiff<'a>>,
}

pub fn json(report: &VerifyReport) -> String {
    let j = JsonReport {
        mode: report.mode.to_string(),
        equal: report.equal(),
        source_keys: report.source_keys,
        target_keys: report.target_keys,
        seconds: report.seconds,
        counts: Category::ALL
            .iter()
            .map(|c| (c.name(), report.count(*c)))
            .collect(),
        rechecked: report.rechecked,
        resolved: report.resolved,
        samples: report
            .samples
            .iter()
            .map(|d| JsonDiff {
                category: d.category.name(),
                db: d.db,
                key: escape(&d.key),
                key_base64: base64::engine::general_purpose::STANDARD.encode(&d.key),
                detail: &d.detail,
            })
            .collect(),
    };
    // Cannot fail for these types (no maps with non-string keys); still, a
    // file that says what went wrong beats a panic after a long run.
    serde_json::to_string_pretty(&j).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_binary_keys() {
        assert_eq!(
            super::escape(b"a\x00\xff \r\n\"\\"),
            "a\\x00\\xff \\r\\n\\\"\\\\"
        );
    }
}
