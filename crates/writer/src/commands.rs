//! Decoded elements → ordinary write commands, for values the target cannot `RESTORE`
//! (a newer type id, a value bigger than `--bigkeysize` or `proto-max-bulk-len`).
//!
//! Pure: no I/O. The decoder already bounds each chunk (≤ `MAX_CHUNK_ITEMS` members or
//! about `MAX_CHUNK_BYTES`), so one chunk becomes one command per kind (plus per-entry
//! commands for streams), and a command never grows past about a megabyte. The expiry is
//! not set here: the writer sends `PEXPIREAT` after the last chunk, so a half-written key
//! never expires early with part of its value.
//!
//! Nothing is sent that the target is known to refuse: what it cannot hold (a field's
//! TTL, a stream's counters, a consumer's times) is left out and counted in
//! [`ValueState::lost`], which the writer adds to its status and logs with the key. The
//! key itself is still written; only a refusal would fail it.
//!
//! The commands of one key go through its slot's queue in the order made here, behind
//! whatever settled a conflict first (a `DEL` under `--rewrite`, else an `EXISTS` gate or
//! the refused RESTORE's own BUSYKEY check), so each may rely on the ones before it (an
//! `APPEND` on its `SET`, an `XCLAIM` on its group).

use std::collections::BTreeMap;

use bytes::Bytes;
use rsm_rdb::{Elements, HashField, PendingEntry, StreamGroup, StreamId, StreamMeta};

use rsm_counters::Losses;

/// What the target understands, as far as rebuilding values goes. Read from its version
/// once, at start: what it lacks is left out of the commands and counted as lost, never
/// sent for the target to refuse (a refusal would fail the whole key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `HPEXPIREAT` (Redis 7.4+, Valkey 9+). Without it the fields are written without
    /// their TTLs, each TTL counted lost.
    pub hash_field_ttl: bool,
    /// `XSETID … ENTRIESADDED … MAXDELETEDID`, `XGROUP CREATE … ENTRIESREAD` (7.0+).
    /// Without them the stream's counters are counted lost where the source had them.
    pub stream_v2: bool,
    /// `XGROUP CREATECONSUMER` (6.2+). Without it only consumers that own pending entries
    /// exist on the target (XCLAIM makes them); the others are counted lost.
    pub create_consumer: bool,
}

/// Per-key state carried from one chunk to the next. A big key's chunks come in many
/// entries; what the commands of a later chunk depend on from the earlier ones lives here.
#[derive(Debug, Default)]
pub struct ValueState {
    /// Hash fields expiring at or before this are not written (Unix ms).
    now_ms: i64,
    /// A first part was written: the next ones append to it.
    string_started: bool,
    /// Stream entries written: XSETID's ENTRIESADDED may not be below it, and none means
    /// the stream has to be created empty.
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
    /// One state per key, `now_ms` fixed for all its chunks: a field is judged expired
    /// at one time, whichever chunk it comes in.
    pub fn new(now_ms: i64) -> ValueState {
        ValueState {
            now_ms,
            ..ValueState::default()
        }
    }

    /// A hash all of whose fields had expired: nothing was written. The key is then
    /// counted expired, not written, as it no longer exists on the source either.
    pub fn vanished(&self) -> bool {
        self.hash_fields == 0 && self.expired_fields > 0
    }
}

/// A command name or fixed argument, without an allocation.
fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// A number or stream id as the text a command takes.
fn num(n: impl std::fmt::Display) -> Bytes {
    Bytes::from(n.to_string())
}

/// A score as text `ZADD` reads back exactly: Rust's shortest round-trip form, `inf`/`-inf`.
/// A fixed precision would round some scores and reorder members that differ only there.
pub fn score_text(s: f64) -> Bytes {
    Bytes::from(format!("{s}"))
}

/// The commands that add `els` to `key`. The chunks of one key come in the decoder's
/// order and their commands go in that order through one slot's queue, so a value is
/// rebuilt in the order it was read: each command here may rely on the ones before it.
pub fn element_commands(
    key: &Bytes,
    els: Elements,
    st: &mut ValueState,
    caps: Capabilities,
) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    match els {
        // Parts come in order: SET, then APPEND, rebuilds the string byte for byte.
        Elements::StringPart(part) => {
            let verb = if st.string_started { "APPEND" } else { "SET" };
            st.string_started = true;
            out.push(vec![b(verb), key.clone(), part]);
        }
        // An empty chunk sends nothing: a variadic command without members is refused
        // (wrong number of arguments) and would fail the key. Items come head to tail,
        // the order RPUSH keeps.
        Elements::ListItems(items) if !items.is_empty() => out.push(variadic("RPUSH", key, items)),
        Elements::SetMembers(members) if !members.is_empty() => {
            out.push(variadic("SADD", key, members))
        }
        Elements::ZSetMembers(members) if !members.is_empty() => {
            // Score before member, as ZADD takes them; their file order does not matter.
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
        // Each entry with its own id, never `*`: groups' last ids and pending entries refer
        // to those ids. They come in id order, as XADD with an explicit id requires (each
        // above the stream's last id).
        Elements::StreamEntries(entries) => {
            for e in entries {
                let mut c = Vec::with_capacity(e.fields.len() * 2 + 3);
                c.extend([b("XADD"), key.clone(), num(e.id)]);
                for (f, v) in e.fields {
                    c.push(f);
                    c.push(v);
                }
                // Counted for ENTRIESADDED and the derived entries-read.
                st.stream_entries += 1;
                st.stream_first.get_or_insert(e.id);
                out.push(c);
            }
        }
        // The decoder gives the stream's metadata after its last entry, then its groups,
        // each group's PEL possibly continued in `StreamPending` chunks.
        Elements::StreamMeta(meta) => stream_meta_commands(key, &meta, st, caps, &mut out),
        // The group first: its pending entries need it (and XCLAIM names its consumers).
        Elements::StreamGroup(g) => {
            group_commands(key, &g, st, caps, &mut out);
            pending_commands(key, &g.name, &g.pending, st, &mut out);
        }
        // The rest of a group's PEL: the group exists by now, its chunk came first.
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

/// `VERB key items…`, the items moved in, not copied.
fn variadic(verb: &'static str, key: &Bytes, items: Vec<Bytes>) -> Vec<Bytes> {
    let mut c = Vec::with_capacity(items.len() + 2);
    c.extend([b(verb), key.clone()]);
    c.extend(items);
    c
}

/// `HSET` of the fields still alive, then one `HPEXPIREAT` per distinct field expiry
/// time (or the TTLs counted as lost on a target without field TTLs). An expired field
/// would come back as a permanent one on such a target: it is dropped and counted. A
/// chunk's fields go in one HSET: one request per chunk, not one per field.
fn hash_commands(
    key: &Bytes,
    fields: Vec<HashField>,
    st: &mut ValueState,
    caps: Capabilities,
    out: &mut Vec<Vec<Bytes>>,
) {
    let mut c = Vec::with_capacity(fields.len() * 2 + 2);
    c.extend([b("HSET"), key.clone()]);
    // Fields by expiry time: fields that share one (set by one HSETEX, say) go in one
    // HPEXPIREAT.
    let mut ttls: BTreeMap<i64, Vec<Bytes>> = BTreeMap::new();
    for f in fields {
        if let Some(at) = f.expire_at_ms {
            // Expired: the source no longer shows it, and nothing would ever remove it
            // from a target without field TTLs.
            if at <= st.now_ms {
                st.expired_fields += 1;
                continue;
            }
            // A second handle to the field, not a copy of it: it goes in the HSET too.
            ttls.entry(at).or_default().push(f.field.clone());
        }
        // Counted so that a hash of only expired fields is known to have vanished.
        st.hash_fields += 1;
        c.push(f.field);
        c.push(f.value);
    }
    // Only expired fields in this chunk: an HSET without fields would be refused.
    if c.len() > 2 {
        out.push(c);
    }
    // After the HSET: a TTL is set only on a field that exists.
    for (at, fields) in ttls {
        // The field stays, without an expiry: one TTL lost per field.
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

/// The stream's own state, after its entries: its last id, and where the target has them
/// its counters. XSETID comes after the entries since it refuses an id below the stream's
/// top entry; it matters where the tail was deleted (the last id is then beyond the top
/// entry, and new ids must still come after it, as on the source).
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
        // XADD refuses the id 0-0, hence the group for that case.
        if meta.last_id > StreamId::default() {
            out.push(vec![
                b("XADD"),
                k(),
                b("MAXLEN"),
                b("0"),
                num(meta.last_id),
                // Any field will do: the entry is trimmed away at once.
                b("f"),
                b(""),
            ]);
        } else {
            // MKSTREAM creates the stream; DESTROY leaves it empty, last id 0-0.
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
    // No counters in the source's format (before 7.0): what the groups' entries-read is
    // derived from is kept for them (see `group_commands`).
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
        // A source before 7.0 has neither counter: nothing lost. 0-0 is what a stream
        // that never lost an entry says: nothing is lost there either.
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
        // The last delivered id as the source had it: `XREADGROUP … >` goes on after it.
        num(g.last_id),
    ];
    // Without ENTRIESREAD the target leaves it unknown (null), where loading the same
    // value would have derived it: a stream without the counters gets the derived one.
    let derived = st
        .stream_v1
        .and_then(|(length, last)| v1_entries_read(length, st.stream_first, last, g.last_id));
    match g.entries_read {
        Some(n) if caps.stream_v2 => c.extend([b("ENTRIESREAD"), num(n)]),
        // Known on the source, unknown to a target before 7.0: counted lost.
        Some(_) => st.lost.stream_counters += 1,
        // Unknown on the source: derived for a stream without the counters (what loading
        // it would give), otherwise left unknown, as the source had it.
        None if caps.stream_v2 => {
            if let Some(n) = derived {
                c.extend([b("ENTRIESREAD"), num(n)]);
            }
        }
        // Unknown, and a target without the counters: nothing to give, nothing lost.
        None => {}
    }
    out.push(c);
    // Whatever the target: no command sets a consumer's seen or active time.
    st.lost.consumer_times += g.consumers.len() as u64;
    if !caps.create_consumer {
        // XCLAIM creates the owners of pending entries; the others cannot be made.
        st.lost.consumers += g.consumers.iter().filter(|c| c.pending_count == 0).count() as u64;
    } else {
        // Every consumer, idle ones too: the XCLAIMs after this would create only those
        // that own pending entries.
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
    // Entries-added as loading gives such a stream (see `stream_meta_commands`).
    let added = length;
    if added == 0 {
        // A stream nothing was ever added to.
        return Some(0);
    }
    match group.cmp(&last) {
        std::cmp::Ordering::Equal => return Some(added),
        // A group ahead of the stream's last id: unknown to the server too.
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
        // No owner (a NACKed entry, Redis 8.8+): XCLAIM needs a consumer to give it to.
        if p.consumer.is_empty() {
            st.lost.pending_entries += 1;
            continue;
        }
        // XCLAIM gives the entry back its owner, but nothing sets the NACK mark again.
        st.lost.stream_counters += u64::from(p.nacked);
        // TIME: the last delivery as the source had it, which idle times count from.
        // Min-idle 0: claimed whatever its idle time. FORCE: the entry is created although
        // no PEL holds it yet. JUSTID: the delivery count stays as RETRYCOUNT sets it, not
        // one more.
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
/// its content). Better too high than too low: too high only buffers a little less, while
/// an estimate 3.6 times too low once let the process grow far past the bound (see
/// WRITER.md).
pub fn elements_size(els: &Elements) -> usize {
    match els {
        // One argument of up to a chunk's bytes: its handle is noise beside its content.
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
        // Small records of a few short commands: a fixed cost each.
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
        // Held whole: it goes as one RESTORE payload.
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

    /// A string in parts: the first one sets the key, the others append in order.
    #[test]
    fn strings_set_then_append() {
        let key = Bytes::from_static(b"k");
        let mut st = ValueState::new(0);
        let a = element_commands(&key, Elements::StringPart(b("ab")), &mut st, ALL);
        let c = element_commands(&key, Elements::StringPart(b("cd")), &mut st, ALL);
        assert_eq!(words(&a[0]), "SET k ab");
        assert_eq!(words(&c[0]), "APPEND k cd");
    }

    /// Fields sharing an expiry go in one HPEXPIREAT, after the HSET that creates them. A
    /// target without field TTLs gets the fields alone and each TTL counted lost: never a
    /// command it would refuse.
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
        // The HSET alone: a target before 7.4 would refuse HPEXPIREAT.
        assert_eq!(cmds.len(), 1);
        assert_eq!(st.lost.field_ttls, 2);
    }

    /// On a target without field TTLs an expired field would live for ever: it is dropped
    /// and counted instead, and a hash of nothing but expired fields is no key at all.
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
        // The live field keeps its value; only its TTL is lost on such a target.
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

    /// Each stream detail an older target cannot hold is counted once, and nothing is sent
    /// that it would refuse; a 7.0+ target gets them all.
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
        // 6.2: no stream counters, but consumers can be created.
        let v62 = Capabilities {
            hash_field_ttl: false,
            stream_v2: false,
            create_consumer: true,
        };
        // As if its one entry had been written: no empty stream to create first.
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
        // 6.2 creates both consumers: none lost, only their times.
        assert_eq!(st.lost.consumer_times, 2);
        assert_eq!(st.lost.consumers, 0);
        // 6.0: the idle consumer owns no pending entry for XCLAIM to create it by.
        let v60 = Capabilities {
            create_consumer: false,
            ..v62
        };
        let mut st = ValueState::new(0);
        element_commands(&key, Elements::StreamGroup(group.clone()), &mut st, v60);
        assert_eq!(st.lost.consumers, 1, "the idle consumer cannot be created");
        // A current target: the counters travel, nothing is lost.
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
        // Past the three XADDs, which are not what this is about.
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

    /// Tiny, huge and infinite scores too: a score must come back exactly, or members
    /// could change places.
    #[test]
    fn zset_scores_round_trip() {
        for s in [0.1, -2.5e-300, 1e300, f64::INFINITY, f64::NEG_INFINITY, 3.0] {
            let t = score_text(s);
            let back: f64 = std::str::from_utf8(&t).unwrap().parse().unwrap();
            assert_eq!(back, s, "{t:?}");
        }
    }
}
