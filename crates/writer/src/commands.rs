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

use rsm_counters::Losses;

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
    /// Hash fields expiring at or before this are not written (Unix ms).
    now_ms: i64,
    string_started: bool,
    stream_entries: u64,
    /// The stream's first entry id, once its entries have been seen.
    stream_first: Option<StreamId>,
    /// A stream from a format without the 7.0 counters (RDB type 15): the length and last
    /// id a 7.0+ server derives them from when it loads one (see [`v1_entries_read`]).
    stream_v1: Option<(u64, StreamId)>,
    /// Hash fields written (0 when every field had expired: the key does not exist).
    hash_fields: u64,
    /// What the target could not be given (see [`Losses`]).
    pub lost: Losses,
    /// Hash fields already expired when read: dropped, as the source itself would.
    pub expired_fields: u64,
}

impl ValueState {
    pub fn new(now_ms: i64) -> ValueState {
        ValueState {
            now_ms,
            ..ValueState::default()
        }
    }

    /// A hash all of whose fields had expired: nothing was written.
    pub fn vanished(&self) -> bool {
        self.hash_fields == 0 && self.expired_fields > 0
    }
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
                st.stream_first.get_or_insert(e.id);
                out.push(c);
            }
        }
        Elements::StreamMeta(meta) => stream_meta_commands(key, &meta, st, caps, &mut out),
        Elements::StreamGroup(g) => {
            group_commands(key, &g, st, caps, &mut out);
            pending_commands(key, &g.name, &g.pending, st, &mut out);
        }
        Elements::StreamPending { group, entries } => {
            pending_commands(key, &group, &entries, st, &mut out);
        }
        // No command recreates a producer's idempotency records (Redis 8.6+): counted once
        // per key, on the chunk that ends them.
        Elements::StreamIdmp(idmp) if idmp.iids_added.is_some() => st.lost.stream_counters += 1,
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

/// `HSET` of the fields still alive, then one `HPEXPIREAT` per distinct field expiry
/// time (or the TTLs counted as lost on a target without field TTLs). An expired field
/// would come back as a permanent one on such a target: it is dropped and counted.
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
            if at <= st.now_ms {
                st.expired_fields += 1;
                continue;
            }
            ttls.entry(at).or_default().push(f.field.clone());
        }
        st.hash_fields += 1;
        c.push(f.field);
        c.push(f.value);
    }
    if c.len() > 2 {
        out.push(c);
    }
    for (at, fields) in ttls {
        if !caps.hash_field_ttl {
            st.lost.field_ttls += fields.len() as u64;
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
    st: &mut ValueState,
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
    if meta.entries_added.is_none() {
        st.stream_v1 = Some((meta.length, meta.last_id));
    }
    if caps.stream_v2 {
        // A stream without the counters gets what a 7.0+ server gives it when it loads
        // one: entries-added = its length (not the entries written, should the snapshot
        // disagree with itself), and no max-deleted id. Never below the entries written,
        // which XSETID refuses.
        let added = meta
            .entries_added
            .unwrap_or(meta.length)
            .max(st.stream_entries);
        c.extend([b("ENTRIESADDED"), num(added)]);
        if let Some(id) = meta.max_deleted_id {
            c.extend([b("MAXDELETEDID"), num(id)]);
        }
    } else {
        // 0-0 is what a stream that never lost an entry says: nothing is lost there.
        let deleted = meta
            .max_deleted_id
            .is_some_and(|id| id > StreamId::default());
        st.lost.stream_counters += u64::from(meta.entries_added.is_some()) + u64::from(deleted);
    }
    out.push(c);
}

/// `XGROUP CREATE` with what the target can take, and its consumers (whose times become
/// now: no command sets them).
fn group_commands(
    key: &Bytes,
    g: &StreamGroup,
    st: &mut ValueState,
    caps: Capabilities,
    out: &mut Vec<Vec<Bytes>>,
) {
    let mut c = vec![
        b("XGROUP"),
        b("CREATE"),
        key.clone(),
        g.name.clone(),
        num(g.last_id),
    ];
    // Without ENTRIESREAD the target leaves it unknown (null), where loading the same
    // value would have derived it: a stream without the counters gets the derived one.
    let derived = st
        .stream_v1
        .and_then(|(length, last)| v1_entries_read(length, st.stream_first, last, g.last_id));
    match g.entries_read {
        Some(n) if caps.stream_v2 => c.extend([b("ENTRIESREAD"), num(n)]),
        Some(_) => st.lost.stream_counters += 1,
        None if caps.stream_v2 => {
            if let Some(n) = derived {
                c.extend([b("ENTRIESREAD"), num(n)]);
            }
        }
        None => {}
    }
    out.push(c);
    st.lost.consumer_times += g.consumers.len() as u64;
    if !caps.create_consumer {
        // XCLAIM creates the owners of pending entries; the others cannot be made.
        st.lost.consumers += g.consumers.iter().filter(|c| c.pending_count == 0).count() as u64;
    } else {
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

/// A group's entries-read as a 7.0+ server derives it when it loads a stream without the
/// counters (RDB type 15: Redis 5.0 to 6.2): with entries-added = `length` and nothing
/// deleted, `streamEstimateDistanceFromFirstEverEntry` (t_stream.c) knows it only at the
/// edges. `None`: unknown there too (`SCG_INVALID_ENTRIES_READ`, shown as null).
fn v1_entries_read(
    length: u64,
    first: Option<StreamId>,
    last: StreamId,
    group: StreamId,
) -> Option<u64> {
    let added = length;
    if added == 0 {
        // A stream nothing was ever added to.
        return Some(0);
    }
    match group.cmp(&last) {
        std::cmp::Ordering::Equal => return Some(added),
        std::cmp::Ordering::Greater => return None,
        std::cmp::Ordering::Less => {}
    }
    // Nothing deleted: before the first entry is what was ever removed (added - length,
    // 0 here), the first entry is the one after it; between, the server cannot tell.
    match group.cmp(&first?) {
        std::cmp::Ordering::Less => Some(0),
        std::cmp::Ordering::Equal => Some(1),
        std::cmp::Ordering::Greater => None,
    }
}

/// One `XCLAIM … FORCE JUSTID` per pending entry: it recreates the PEL entry with its owner,
/// delivery time and count, without touching the group's last-delivered id. It claims
/// nothing when the entry's message was deleted; the writer counts that from its reply.
fn pending_commands(
    key: &Bytes,
    group: &Bytes,
    entries: &[PendingEntry],
    st: &mut ValueState,
    out: &mut Vec<Vec<Bytes>>,
) {
    for p in entries {
        if p.consumer.is_empty() {
            st.lost.pending_entries += 1;
            continue;
        }
        // XCLAIM gives the entry back its owner, but nothing sets the NACK mark again.
        st.lost.stream_counters += u64::from(p.nacked);
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
        Elements::StreamIdmp(i) => {
            128 + i
                .producers
                .iter()
                .map(|p| {
                    64 + p.pid.len() + p.entries.iter().map(|e| 64 + e.iid.len()).sum::<usize>()
                })
                .sum::<usize>()
        }
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
        let mut st = ValueState::new(0);
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
        let mut st = ValueState::new(0);
        let cmds = element_commands(&key, els.clone(), &mut st, ALL);
        assert_eq!(words(&cmds[0]), "HSET h a v b v c v");
        assert_eq!(words(&cmds[1]), "HPEXPIREAT h 5 FIELDS 2 a c");
        let old = Capabilities {
            hash_field_ttl: false,
            ..ALL
        };
        let cmds = element_commands(&key, els, &mut st, old);
        assert_eq!(cmds.len(), 1);
        assert_eq!(st.lost.field_ttls, 2);
    }

    #[test]
    fn expired_hash_fields_are_dropped_not_made_permanent() {
        let key = Bytes::from_static(b"h");
        let f = |n: &'static str, at| HashField {
            field: b(n),
            value: b("v"),
            expire_at_ms: at,
        };
        let old = Capabilities {
            hash_field_ttl: false,
            ..ALL
        };
        let mut st = ValueState::new(100);
        let els = Elements::HashFields(vec![f("gone", Some(100)), f("live", Some(101))]);
        let cmds = element_commands(&key, els, &mut st, old);
        assert_eq!(cmds.len(), 1);
        assert_eq!(words(&cmds[0]), "HSET h live v");
        assert_eq!((st.expired_fields, st.lost.field_ttls), (1, 1));
        assert!(!st.vanished());
        let mut st = ValueState::new(100);
        let cmds = element_commands(
            &key,
            Elements::HashFields(vec![f("gone", Some(5))]),
            &mut st,
            ALL,
        );
        assert!(cmds.is_empty());
        assert!(st.vanished());
    }

    #[test]
    fn stream_details_an_older_target_cannot_take_are_counted() {
        use rsm_rdb::Consumer;
        let key = Bytes::from_static(b"s");
        let id = |ms| StreamId { ms, seq: 0 };
        let meta = StreamMeta {
            length: 1,
            last_id: id(9),
            first_id: Some(id(1)),
            max_deleted_id: Some(id(4)),
            entries_added: Some(3),
        };
        let consumer = |n: &'static str, pending_count| Consumer {
            name: b(n),
            seen_time_ms: 1,
            active_time_ms: Some(2),
            pending_count,
        };
        let group = StreamGroup {
            name: b("g"),
            last_id: id(9),
            entries_read: Some(3),
            pending_total: 1,
            pending: vec![PendingEntry {
                id: id(4),
                delivery_time_ms: 7,
                delivery_count: 2,
                consumer: b("busy"),
                nacked: false,
            }],
            consumers: vec![consumer("busy", 1), consumer("idle", 0)],
        };
        let v62 = Capabilities {
            hash_field_ttl: false,
            stream_v2: false,
            create_consumer: true,
        };
        let mut st = ValueState::new(0);
        st.stream_entries = 1;
        let mut cmds = element_commands(&key, Elements::StreamMeta(meta.clone()), &mut st, v62);
        cmds.extend(element_commands(
            &key,
            Elements::StreamGroup(group.clone()),
            &mut st,
            v62,
        ));
        assert_eq!(words(&cmds[0]), "XSETID s 9-0");
        assert_eq!(words(&cmds[1]), "XGROUP CREATE s g 9-0");
        assert_eq!(
            st.lost.stream_counters, 3,
            "entries-added, max-deleted id, entries-read"
        );
        assert_eq!(st.lost.consumer_times, 2);
        assert_eq!(st.lost.consumers, 0);
        let v60 = Capabilities {
            create_consumer: false,
            ..v62
        };
        let mut st = ValueState::new(0);
        element_commands(&key, Elements::StreamGroup(group.clone()), &mut st, v60);
        assert_eq!(st.lost.consumers, 1, "the idle consumer cannot be created");
        let mut st = ValueState::new(0);
        st.stream_entries = 1;
        let cmds = element_commands(&key, Elements::StreamMeta(meta), &mut st, ALL);
        assert_eq!(
            words(&cmds[0]),
            "XSETID s 9-0 ENTRIESADDED 3 MAXDELETEDID 4-0"
        );
        let cmds = element_commands(&key, Elements::StreamGroup(group), &mut st, ALL);
        assert_eq!(words(&cmds[0]), "XGROUP CREATE s g 9-0 ENTRIESREAD 3");
        assert_eq!(st.lost.stream_counters, 0);
    }

    /// A stream from a format without the 7.0 counters (Redis 5.0–6.2) gets, on a 7.0+
    /// target, what the target derives when it loads one: entries-added = the length
    /// (which the snapshot may state above the entries it holds), and entries-read where
    /// the server can tell it (a group at the last entry, before or at the first one).
    #[test]
    fn counters_of_a_stream_without_them_are_derived_as_the_target_would() {
        use rsm_rdb::StreamEntry;
        let key = Bytes::from_static(b"s");
        let id = |ms| StreamId { ms, seq: 0 };
        let entry = |ms| StreamEntry {
            id: id(ms),
            fields: vec![(b("f"), b("v"))],
        };
        let group = |name: &'static str, at| StreamGroup {
            name: b(name),
            last_id: id(at),
            entries_read: None,
            pending_total: 0,
            pending: vec![],
            consumers: vec![],
        };
        let meta = |length, last| StreamMeta {
            length,
            last_id: id(last),
            first_id: None,
            max_deleted_id: None,
            entries_added: None,
        };
        let mut st = ValueState::new(0);
        let mut cmds = element_commands(
            &key,
            Elements::StreamEntries(vec![entry(2), entry(3), entry(5)]),
            &mut st,
            ALL,
        );
        // The snapshot says 4 entries; it holds 3.
        cmds.extend(element_commands(
            &key,
            Elements::StreamMeta(meta(4, 5)),
            &mut st,
            ALL,
        ));
        for (name, at) in [
            ("last", 5),
            ("zero", 0),
            ("first", 2),
            ("mid", 3),
            ("ahead", 9),
        ] {
            cmds.extend(element_commands(
                &key,
                Elements::StreamGroup(group(name, at)),
                &mut st,
                ALL,
            ));
        }
        let text: Vec<String> = cmds.iter().skip(3).map(|c| words(c)).collect();
        assert_eq!(
            text,
            [
                "XSETID s 5-0 ENTRIESADDED 4",
                "XGROUP CREATE s last 5-0 ENTRIESREAD 4",
                "XGROUP CREATE s zero 0-0 ENTRIESREAD 0",
                "XGROUP CREATE s first 2-0 ENTRIESREAD 1",
                "XGROUP CREATE s mid 3-0",
                "XGROUP CREATE s ahead 9-0",
            ]
        );
        assert_eq!(st.lost.stream_counters, 0);

        // Empty: nothing was ever added, whatever its last id.
        let mut st = ValueState::new(0);
        let mut cmds = element_commands(&key, Elements::StreamMeta(meta(0, 7)), &mut st, ALL);
        cmds.extend(element_commands(
            &key,
            Elements::StreamGroup(group("g", 7)),
            &mut st,
            ALL,
        ));
        let text: Vec<String> = cmds.iter().map(|c| words(c)).collect();
        assert_eq!(
            text,
            [
                "XADD s MAXLEN 0 7-0 f ",
                "XSETID s 7-0 ENTRIESADDED 0",
                "XGROUP CREATE s g 7-0 ENTRIESREAD 0",
            ]
        );
        // A target before 7.0 takes none, and nothing of the source's is lost.
        let v62 = Capabilities {
            stream_v2: false,
            ..ALL
        };
        let mut st = ValueState::new(0);
        let mut cmds = element_commands(&key, Elements::StreamMeta(meta(0, 7)), &mut st, v62);
        cmds.extend(element_commands(
            &key,
            Elements::StreamGroup(group("g", 7)),
            &mut st,
            v62,
        ));
        assert_eq!(words(&cmds[1]), "XSETID s 7-0");
        assert_eq!(words(&cmds[2]), "XGROUP CREATE s g 7-0");
        assert_eq!(st.lost.stream_counters, 0);
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
