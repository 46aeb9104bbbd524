//! Decoded elements → ordinary write commands, for values the target cannot `RESTORE`
//! (a newer type id, a value bigger than `--bigkeysize` or `proto-max-bulk-len`).
//!
//! Pure: no I/O. The decoder already bounds each chunk (≤ `MAX_CHUNK_ITEMS` members or
//! about `MAX_CHUNK_BYTES`), so one chunk becomes one command per kind (plus per-entry
//! commands for streams), and a command never grows past about a megabyte. The expiry is
//! not set here: the writer sends `PEXPIREAT` after the last chunk, so a half-written key
//! never expires early with part of its value.

use std::collections::BTreeMap;

use bytes::Bytes;
use rsm_rdb::{Elements, HashField, PendingEntry, StreamGroup, StreamId, StreamMeta};

/// What the target understands, as far as rebuilding values goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `HPEXPIREAT` (Redis 7.4+, Valkey 9+).
    pub hash_field_ttl: bool,
    /// `XSETID … ENTRIESADDED … MAXDELETEDID`, `XGROUP CREATE … ENTRIESREAD` (7.0+).
    pub stream_v2: bool,
    /// `XGROUP CREATECONSUMER` (6.2+).
    pub create_consumer: bool,
}

/// Per-key state carried from one chunk to the next.
#[derive(Debug, Default)]
pub struct ValueState {
    string_started: bool,
    stream_entries: u64,
    /// Hash field TTLs the target could not take, or PEL entries without an owner.
    pub lost_details: u64,
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn num(n: impl std::fmt::Display) -> Bytes {
    Bytes::from(n.to_string())
}

/// A score as text `ZADD` reads back exactly: Rust's shortest round-trip form, `inf`/`-inf`.
pub fn score_text(s: f64) -> Bytes {
    Bytes::from(format!("{s}"))
}

/// The commands that add `els` to `key`.
pub fn element_commands(
    key: &Bytes,
    els: Elements,
    st: &mut ValueState,
    caps: Capabilities,
) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    match els {
        Elements::StringPart(part) => {
            let verb = if st.string_started { "APPEND" } else { "SET" };
            st.string_started = true;
            out.push(vec![b(verb), key.clone(), part]);
        }
        Elements::ListItems(items) if !items.is_empty() => out.push(variadic("RPUSH", key, items)),
        Elements::SetMembers(members) if !members.is_empty() => {
            out.push(variadic("SADD", key, members))
        }
        Elements::ZSetMembers(members) if !members.is_empty() => {
            let mut c = Vec::with_capacity(members.len() * 2 + 2);
            c.extend([b("ZADD"), key.clone()]);
            for (m, s) in members {
                c.push(score_text(s));
                c.push(m);
            }
            out.push(c);
        }
        Elements::HashFields(fields) if !fields.is_empty() => {
            hash_commands(key, fields, st, caps, &mut out)
        }
        Elements::StreamEntries(entries) => {
            for e in entries {
                let mut c = Vec::with_capacity(e.fields.len() * 2 + 3);
                c.extend([b("XADD"), key.clone(), num(e.id)]);
                for (f, v) in e.fields {
                    c.push(f);
                    c.push(v);
                }
                st.stream_entries += 1;
                out.push(c);
            }
        }
        Elements::StreamMeta(meta) => stream_meta_commands(key, &meta, st, caps, &mut out),
        Elements::StreamGroup(g) => {
            group_commands(key, &g, caps, &mut out);
            pending_commands(key, &g.name, &g.pending, st, &mut out);
        }
        Elements::StreamPending { group, entries } => {
            pending_commands(key, &group, &entries, st, &mut out);
        }
        // Module values and empty chunks are handled by the caller / need nothing.
        _ => {}
    }
    out
}

fn variadic(verb: &'static str, key: &Bytes, items: Vec<Bytes>) -> Vec<Bytes> {
    let mut c = Vec::with_capacity(items.len() + 2);
    c.extend([b(verb), key.clone()]);
    c.extend(items);
    c
}

/// `HSET`, then one `HPEXPIREAT` per distinct field expiry time (or the TTLs counted as
/// lost on a target without field TTLs).
fn hash_commands(
    key: &Bytes,
    fields: Vec<HashField>,
    st: &mut ValueState,
    caps: Capabilities,
    out: &mut Vec<Vec<Bytes>>,
) {
    let mut c = Vec::with_capacity(fields.len() * 2 + 2);
    c.extend([b("HSET"), key.clone()]);
    let mut ttls: BTreeMap<i64, Vec<Bytes>> = BTreeMap::new();
    for f in fields {
        if let Some(at) = f.expire_at_ms {
            ttls.entry(at).or_default().push(f.field.clone());
        }
        c.push(f.field);
        c.push(f.value);
    }
    out.push(c);
    for (at, fields) in ttls {
        if !caps.hash_field_ttl {
            st.lost_details += fields.len() as u64;
            continue;
        }
        let mut c = vec![
            b("HPEXPIREAT"),
            key.clone(),
            num(at),
            b("FIELDS"),
            num(fields.len()),
        ];
        c.extend(fields);
        out.push(c);
    }
}

fn stream_meta_commands(
    key: &Bytes,
    meta: &StreamMeta,
    st: &ValueState,
    caps: Capabilities,
    out: &mut Vec<Vec<Bytes>>,
) {
    let k = || key.clone();
    if st.stream_entries == 0 {
        // An empty stream still exists (and keeps its last id): create it with one
        // entry trimmed away at once, or through a throw-away group for id 0-0.
        if meta.last_id > StreamId::default() {
            out.push(vec![
                b("XADD"),
                k(),
                b("MAXLEN"),
                b("0"),
                num(meta.last_id),
                b("f"),
                b(""),
            ]);
        } else {
            out.push(vec![
                b("XGROUP"),
                b("CREATE"),
                k(),
                b("rsm-tmp-group"),
                b("0"),
                b("MKSTREAM"),
            ]);
            out.push(vec![b("XGROUP"), b("DESTROY"), k(), b("rsm-tmp-group")]);
        }
    }
    let mut c = vec![b("XSETID"), k(), num(meta.last_id)];
    if caps.stream_v2 {
        if let Some(n) = meta.entries_added {
            c.extend([b("ENTRIESADDED"), num(n)]);
        }
        if let Some(id) = meta.max_deleted_id {
            c.extend([b("MAXDELETEDID"), num(id)]);
        }
    }
    out.push(c);
}

/// `XGROUP CREATE` with what the target can take, and its consumers.
fn group_commands(key: &Bytes, g: &StreamGroup, caps: Capabilities, out: &mut Vec<Vec<Bytes>>) {
    let mut c = vec![
        b("XGROUP"),
        b("CREATE"),
        key.clone(),
        g.name.clone(),
        num(g.last_id),
    ];
    if caps.stream_v2 {
        if let Some(n) = g.entries_read {
            c.extend([b("ENTRIESREAD"), num(n)]);
        }
    }
    out.push(c);
    if caps.create_consumer {
        for cons in &g.consumers {
            out.push(vec![
                b("XGROUP"),
                b("CREATECONSUMER"),
                key.clone(),
                g.name.clone(),
                cons.name.clone(),
            ]);
        }
    }
}

/// One `XCLAIM … FORCE JUSTID` per pending entry: it recreates the PEL entry with its owner,
/// delivery time and count, without touching the group's last-delivered id.
fn pending_commands(
    key: &Bytes,
    group: &Bytes,
    entries: &[PendingEntry],
    st: &mut ValueState,
    out: &mut Vec<Vec<Bytes>>,
) {
    for p in entries {
        if p.consumer.is_empty() {
            st.lost_details += 1;
            continue;
        }
        out.push(vec![
            b("XCLAIM"),
            key.clone(),
            group.clone(),
            p.consumer.clone(),
            b("0"),
            num(p.id),
            b("TIME"),
            num(p.delivery_time_ms),
            b("RETRYCOUNT"),
            num(p.delivery_count),
            b("FORCE"),
            b("JUSTID"),
        ]);
    }
}

/// The memory a chunk takes until its commands are acknowledged, for the writer's byte
/// bound: the members, their `Bytes` handles in the chunk and again in the command
/// arguments, and the encoded command (measured: about 180 bytes per hash field beyond
/// its content).
pub fn elements_size(els: &Elements) -> usize {
    match els {
        Elements::StringPart(p) => p.len(),
        Elements::ListItems(v) | Elements::SetMembers(v) => v.iter().map(|x| x.len() + 96).sum(),
        Elements::ZSetMembers(v) => v.iter().map(|(m, _)| m.len() + 160).sum(),
        Elements::HashFields(v) => v.iter().map(|f| f.field.len() + f.value.len() + 200).sum(),
        Elements::StreamEntries(v) => v
            .iter()
            .map(|e| {
                48 + e
                    .fields
                    .iter()
                    .map(|(f, x)| f.len() + x.len() + 96)
                    .sum::<usize>()
            })
            .sum(),
        Elements::StreamPending { entries, .. } => entries.len() * 96,
        Elements::StreamGroup(g) => 128 + g.pending.len() * 96 + g.consumers.len() * 64,
        Elements::StreamMeta(_) => 128,
        Elements::Module { raw, .. } => raw.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsm_rdb::HashField;

    const ALL: Capabilities = Capabilities {
        hash_field_ttl: true,
        stream_v2: true,
        create_consumer: true,
    };

    fn words(c: &[Bytes]) -> String {
        c.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn strings_set_then_append() {
        let key = Bytes::from_static(b"k");
        let mut st = ValueState::default();
        let a = element_commands(&key, Elements::StringPart(b("ab")), &mut st, ALL);
        let c = element_commands(&key, Elements::StringPart(b("cd")), &mut st, ALL);
        assert_eq!(words(&a[0]), "SET k ab");
        assert_eq!(words(&c[0]), "APPEND k cd");
    }

    #[test]
    fn hash_field_ttls_grouped_or_counted_when_unsupported() {
        let key = Bytes::from_static(b"h");
        let f = |n: &'static str, at| HashField {
            field: b(n),
            value: b("v"),
            expire_at_ms: at,
        };
        let els = Elements::HashFields(vec![f("a", Some(5)), f("b", None), f("c", Some(5))]);
        let mut st = ValueState::default();
        let cmds = element_commands(&key, els.clone(), &mut st, ALL);
        assert_eq!(words(&cmds[0]), "HSET h a v b v c v");
        assert_eq!(words(&cmds[1]), "HPEXPIREAT h 5 FIELDS 2 a c");
        let old = Capabilities {
            hash_field_ttl: false,
            ..ALL
        };
        let cmds = element_commands(&key, els, &mut st, old);
        assert_eq!(cmds.len(), 1);
        assert_eq!(st.lost_details, 2);
    }

    #[test]
    fn zset_scores_round_trip() {
        for s in [0.1, -2.5e-300, 1e300, f64::INFINITY, f64::NEG_INFINITY, 3.0] {
            let t = score_text(s);
            let back: f64 = std::str::from_utf8(&t).unwrap().parse().unwrap();
            assert_eq!(back, s, "{t:?}");
        }
    }
}
