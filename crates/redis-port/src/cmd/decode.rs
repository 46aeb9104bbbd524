//! `redis-port decode`: an RDB file (or stdin) to JSON lines, one object per key, plus one
//! line per aux field, function library and module aux record. The decoder runs in
//! elements mode, so the file is read in 1 MiB chunks and never held whole; a key's value is
//! assembled into one JSON line, so memory follows the largest key.
//!
//! Line shapes (byte strings are JSON strings when valid UTF-8, else `{"base64": "…"}`):
//! - `{"aux": <bytes>, "value": <bytes>}`
//! - `{"function": <bytes>}` (the library source)
//! - `{"module_aux": <module name>, "module_id": n, "when": n, "raw": {"base64": …}}`
//! - `{"slot_info": slot, "keys": n, "expires": n}`
//! - `{"db": n, "key": <bytes>, "type": "string"|"list"|"set"|"zset"|"hash"|"stream"|"module",
//!    "rdb_type": n, "expire_at_ms": n|null, ["idle": s], ["freq": n], "value": …}` where value is
//!   a string: `<bytes>`; list/set: `[<bytes>…]`; zset: `[[<bytes>, score]…]` (score a number,
//!   or "inf"/"-inf"/"nan"); hash: `[[field, value]…]`, `[field, value, expire_at_ms]` for a
//!   field with a TTL; stream: `{"entries": [{"id": "ms-seq", "fields": [[f, v]…]}…],
//!   "length", "last_id", "first_id", "max_deleted_id", "entries_added", "groups": [{"name",
//!   "last_id", "entries_read", "pending": [{"id", "consumer", "delivery_time_ms",
//!   "delivery_count"}…], "consumers": [{"name", "seen_time_ms", "active_time_ms",
//!   "pending_count"}…]}…]}`; module: `{"module": name, "module_id": n, "raw": {"base64": …}}`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::BytesMut;
use rsm_rdb::{constants, DecodeOptions, Decoder, Elements, Event, KeyMeta, RdbVersion};
use serde_json::{json, Map, Value};

const READ_CHUNK: usize = 1 << 20;

/// Decode `input` (a path, or "-" for stdin) and write JSON lines to `output` (a path, or
/// stdout when `None`). Returns an error naming the byte offset on bad or truncated input.
pub fn run(input: &str, output: Option<&str>) -> Result<()> {
    let mut reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).with_context(|| format!("cannot open {input}"))?)
    };
    let writer: Box<dyn Write> = match output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("cannot create {path}"))?)
        }
        None => Box::new(io::stdout().lock()),
    };
    let mut w = BufWriter::new(writer);
    decode_stream(&mut reader, &mut w).with_context(|| format!("cannot decode {input}"))?;
    w.flush().context("cannot write output")?;
    Ok(())
}

/// The loop behind [`run`], over any reader and writer.
pub fn decode_stream(r: &mut dyn Read, w: &mut dyn Write) -> Result<()> {
    let mut dec = Decoder::new(DecodeOptions::elements());
    let mut events = Vec::new();
    let mut state = KeyState::default();
    let mut version = RdbVersion::Redis(0);
    let mut buf = BytesMut::new();
    loop {
        buf.resize(READ_CHUNK, 0);
        let n = r.read(&mut buf).context("cannot read input")?;
        if n == 0 {
            break;
        }
        let chunk = buf.split_to(n).freeze();
        dec.feed(chunk, &mut events)?;
        for ev in events.drain(..) {
            if let Event::Header { version: v } = ev {
                version = v;
            }
            if let Some(line) = state.on_event(ev, version) {
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
            }
        }
    }
    dec.finish()?;
    // Ignored as redis-server ignores them, but said: the file may have been damaged.
    if let Some(t) = dec.trailing() {
        eprintln!(
            "warning: {} trailing bytes after the end of the RDB (offset {}) ignored",
            t.len, t.offset
        );
    }
    // Module key metadata is shown per key but never reaches a target.
    if dec.key_meta_classes() > 0 {
        eprintln!(
            "warning: {} module key-metadata classes (KEY_META, Redis 8.6+) are shown as raw bytes; a migration does not carry them",
            dec.key_meta_classes()
        );
    }
    Ok(())
}

/// Binary-safe JSON for a byte string.
pub fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn score_json(s: f64) -> Value {
    if s.is_nan() {
        json!("nan")
    } else if s == f64::INFINITY {
        json!("inf")
    } else if s == f64::NEG_INFINITY {
        json!("-inf")
    } else {
        json!(s)
    }
}

/// A module id's 9-character name (top 54 bits, 6 bits per character).
fn module_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..9)
        .map(|i| {
            let idx = (id >> (10 + 6 * (8 - i))) & 63;
            char::from(CHARSET[idx as usize])
        })
        .collect()
}

#[derive(Default)]
struct KeyState {
    meta: Option<KeyMeta>,
    string: Vec<u8>,
    items: Vec<Value>,
    stream: Map<String, Value>,
    groups: Vec<Value>,
    module: Option<Value>,
}

impl KeyState {
    fn on_event(&mut self, ev: Event, version: RdbVersion) -> Option<Value> {
        match ev {
            Event::Aux { key, value } => {
                Some(json!({"aux": bytes_json(&key), "value": bytes_json(&value)}))
            }
            Event::Function { code } => Some(json!({ "function": bytes_json(&code) })),
            Event::ModuleAux {
                module_id,
                when,
                raw,
            } => Some(json!({
                "module_aux": module_name(module_id), "module_id": module_id, "when": when,
                "raw": {"base64": base64::engine::general_purpose::STANDARD.encode(&raw)},
            })),
            Event::SlotInfo {
                slot,
                keys,
                expires,
            } => Some(json!({"slot_info": slot, "keys": keys, "expires": expires})),
            Event::KeyStart(meta) => {
                *self = KeyState::default();
                self.meta = Some(meta);
                None
            }
            Event::Elements(e) => {
                self.add(e);
                None
            }
            Event::RawValue(raw) => {
                // not produced in elements mode; kept for completeness
                self.module = Some(
                    json!({"raw": {"base64": base64::engine::general_purpose::STANDARD.encode(&raw)}}),
                );
                None
            }
            Event::KeyEnd => {
                let meta = self.meta.take()?;
                Some(self.key_line(meta, version))
            }
            Event::Header { .. } | Event::SelectDb(_) | Event::ResizeDb { .. } | Event::Eof => None,
        }
    }

    fn add(&mut self, e: Elements) {
        match e {
            Elements::StringPart(p) => self.string.extend_from_slice(&p),
            Elements::ListItems(v) | Elements::SetMembers(v) => {
                self.items.extend(v.iter().map(|b| bytes_json(b)))
            }
            Elements::ZSetMembers(v) => self
                .items
                .extend(v.iter().map(|(m, s)| json!([bytes_json(m), score_json(*s)]))),
            Elements::HashFields(v) => self.items.extend(v.iter().map(|f| match f.expire_at_ms {
                Some(t) => json!([bytes_json(&f.field), bytes_json(&f.value), t]),
                None => json!([bytes_json(&f.field), bytes_json(&f.value)]),
            })),
            Elements::StreamEntries(v) => self.items.extend(v.iter().map(|e| {
                json!({"id": e.id.to_string(), "fields": e.fields.iter().map(|(f, v)| json!([bytes_json(f), bytes_json(v)])).collect::<Vec<_>>()})
            })),
            Elements::StreamMeta(m) => {
                self.stream.insert("length".into(), json!(m.length));
                self.stream.insert("last_id".into(), json!(m.last_id.to_string()));
                self.stream.insert("first_id".into(), json!(m.first_id.map(|i| i.to_string())));
                self.stream.insert("max_deleted_id".into(), json!(m.max_deleted_id.map(|i| i.to_string())));
                self.stream.insert("entries_added".into(), json!(m.entries_added));
            }
            Elements::StreamGroup(g) => self.groups.push(json!({
                "name": bytes_json(&g.name),
                "last_id": g.last_id.to_string(),
                "entries_read": g.entries_read,
                "pending": g.pending.iter().map(pending_json).collect::<Vec<_>>(),
                "consumers": g.consumers.iter().map(|c| json!({
                    "name": bytes_json(&c.name), "seen_time_ms": c.seen_time_ms,
                    "active_time_ms": c.active_time_ms, "pending_count": c.pending_count,
                })).collect::<Vec<_>>(),
            })),
            Elements::StreamPending { entries, .. } => {
                // continuation of the last group's PEL
                if let Some(Value::Array(p)) = self
                    .groups
                    .last_mut()
                    .and_then(|g| g.get_mut("pending"))
                {
                    p.extend(entries.iter().map(pending_json));
                }
            }
            Elements::StreamIdmp(i) => {
                let idmp = self
                    .stream
                    .entry("idmp")
                    .or_insert_with(|| json!({"producers": []}));
                idmp["duration"] = json!(i.duration);
                idmp["max_entries"] = json!(i.max_entries);
                if let Some(Value::Array(p)) = idmp.get_mut("producers") {
                    p.extend(i.producers.iter().map(|p| json!({
                        "pid": bytes_json(&p.pid),
                        "entries": p.entries.iter().map(|e| json!([bytes_json(&e.iid), e.id.to_string()])).collect::<Vec<_>>(),
                    })));
                }
                if let (Some(a), Some(d)) = (i.iids_added, i.iids_duplicates) {
                    idmp["iids_added"] = json!(a);
                    idmp["iids_duplicates"] = json!(d);
                }
            }
            Elements::Module { module_id, raw } => {
                self.module = Some(json!({
                    "module": module_name(module_id), "module_id": module_id,
                    "raw": {"base64": base64::engine::general_purpose::STANDARD.encode(&raw)},
                }))
            }
        }
    }

    fn key_line(&mut self, meta: KeyMeta, version: RdbVersion) -> Value {
        let type_name = constants::type_name(meta.rdb_type, version.is_valkey());
        let value = match type_name {
            "string" => bytes_json(&self.string),
            "stream" => {
                let mut m = std::mem::take(&mut self.stream);
                m.insert(
                    "entries".into(),
                    Value::Array(std::mem::take(&mut self.items)),
                );
                m.insert(
                    "groups".into(),
                    Value::Array(std::mem::take(&mut self.groups)),
                );
                Value::Object(m)
            }
            "module" => self.module.take().unwrap_or(Value::Null),
            _ => Value::Array(std::mem::take(&mut self.items)),
        };
        let mut line = Map::new();
        line.insert("db".into(), json!(meta.db));
        line.insert("key".into(), bytes_json(&meta.key));
        line.insert("type".into(), json!(type_name));
        line.insert("rdb_type".into(), json!(meta.rdb_type));
        line.insert("expire_at_ms".into(), json!(meta.expire_at_ms));
        if let Some(idle) = meta.idle {
            line.insert("idle".into(), json!(idle));
        }
        if let Some(freq) = meta.freq {
            line.insert("freq".into(), json!(freq));
        }
        if !meta.meta_classes.is_empty() {
            let classes = meta.meta_classes.iter().map(|c| {
                json!({
                    "name": c.name, "version": c.version, "flags": c.flags,
                    "raw": {"base64": base64::engine::general_purpose::STANDARD.encode(&c.raw)},
                })
            });
            line.insert("meta_classes".into(), Value::Array(classes.collect()));
        }
        line.insert("value".into(), value);
        Value::Object(line)
    }
}

fn pending_json(p: &rsm_rdb::PendingEntry) -> Value {
    let mut v = json!({
        "id": p.id.to_string(), "consumer": bytes_json(&p.consumer),
        "delivery_time_ms": p.delivery_time_ms, "delivery_count": p.delivery_count,
    });
    if p.nacked {
        v["nacked"] = json!(true);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../rdb/tests/fixtures")
            .join(name);
        std::fs::read(p).unwrap()
    }

    #[test]
    fn decodes_a_fixture_to_json_lines() {
        let rdb = fixture("valkey-9.1.2.rdb");
        let mut out = Vec::new();
        decode_stream(&mut rdb.as_slice(), &mut out).unwrap();
        let lines: Vec<Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert!(lines.iter().any(|l| l["aux"] == "valkey-ver"));
        assert!(lines.iter().any(|l| l.get("function").is_some()));
        let h = lines.iter().find(|l| l["key"] == "hf:small").unwrap();
        assert_eq!(h["type"], "hash");
        assert_eq!(h["value"][0], json!(["f1", "v1", 4102444800000i64]));
        let bin = lines.iter().find(|l| l["key"] == "s:bin").unwrap();
        assert!(bin["value"]["base64"].is_string());
    }

    /// The shape of redis-rdb-tools' `redis_40_with_module.rdb`: RDB 8, one ReJSON value,
    /// checksum disabled (zero), and 40 bytes of text after the end, which redis-server
    /// never reads. It once stopped `decode` with "trailing data at offset 248".
    #[test]
    fn module_value_with_text_after_the_end() {
        let mut rdb = b"REDIS0008\xfa\x09redis-ver\x054.0.0\xfe\x00\xfb\x02\x00".to_vec();
        rdb.extend_from_slice(b"\x00\x09simplekey\x07someval");
        // type 7, key "foo", 64-bit module id, then tagged values up to opcode 0
        let module_value: &[u8] = b"\x81\x45\xe2\x52\x38\xdf\x91\x2c\x00\
            \x02\x20\x02\x02\x02\x40\x80\x05\x04name\x02\x02\x05\x02bb\
            \x02\x40\x80\x05\x06counts\x02\x08\x02\x04\x00";
        rdb.extend_from_slice(b"\x07\x03foo");
        rdb.extend_from_slice(module_value);
        rdb.push(0xff);
        rdb.extend_from_slice(&[0; 8]);
        rdb.extend_from_slice(b"6ce932509f837be39659508afae0e80443148d47");
        let mut out = Vec::new();
        decode_stream(&mut rdb.as_slice(), &mut out).unwrap();
        let lines: Vec<Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let m = lines.iter().find(|l| l["key"] == "foo").unwrap();
        assert_eq!(m["type"], "module");
        assert_eq!(m["value"]["module"], "ReJSON-RL");
        assert_eq!(m["value"]["module_id"], 0x45e2_5238_df91_2c00u64);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(m["value"]["raw"]["base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw, module_value, "the module value is kept byte for byte");
        assert_eq!(
            lines.iter().find(|l| l["key"] == "simplekey").unwrap()["value"],
            "someval"
        );
    }

    #[test]
    fn truncated_input_is_an_error_with_the_offset() {
        let rdb = fixture("7.4.1.rdb");
        let cut = &rdb[..rdb.len() / 2];
        let err = decode_stream(&mut &cut[..], &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("truncated input at offset"),
            "{err}"
        );
    }
}
