//! Streams into types 15 / 19 / 21. The entries are laid out in listpack nodes exactly as
//! `streamAppendItem` (Redis 6.2+, Valkey) would build them by XADDing the live entries
//! into a fresh stream with the default `stream-node-max-entries 100` and
//! `stream-node-max-bytes 4096`, so a stream that never lost an entry encodes to the
//! server's own bytes. The consumer-group state is written as `rdbSaveObject` does; the
//! PEL is independent of the entries, so pending ids whose message was deleted survive.

use bytes::{BufMut, Bytes, BytesMut};

use super::listpack::Listpack;
use super::rdbio::{id_key, put_id_lens, put_len, put_ms, put_string};
use super::{EncodeError, Losses};
use crate::constants::{
    RDB_TYPE_STREAM_LISTPACKS, RDB_TYPE_STREAM_LISTPACKS_2, RDB_TYPE_STREAM_LISTPACKS_3,
    STREAM_ITEM_FLAG_SAMEFIELDS,
};
use crate::event::{
    Consumer, Elements, PendingEntry, StreamEntry, StreamGroup, StreamId, StreamMeta,
};

/// Redis's defaults for `stream-node-max-entries` / `stream-node-max-bytes`.
const STREAM_NODE_MAX_ENTRIES: usize = 100;
const STREAM_NODE_MAX_BYTES: usize = 4096;
/// `SCG_INVALID_ENTRIES_READ` (-1) as `rdbSaveLen` writes it.
const SCG_INVALID_ENTRIES_READ: u64 = u64::MAX;

/// A whole stream, reassembled from its chunks.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    entries: Vec<StreamEntry>,
    meta: Option<StreamMeta>,
    groups: Vec<StreamGroup>,
    /// The source had IDMP state (types 26/27), which no format written here holds.
    idmp: bool,
}

impl Stream {
    /// Gather the chunks `decode_value` gives for a stream, in order.
    pub(crate) fn collect(chunks: &[Elements]) -> Result<Stream, EncodeError> {
        // The decoder emits entries, then the metadata, then the groups (each followed by
        // its PEL's continuation chunks), then IDMP state: any other order means chunks of
        // different values were mixed, and the result would be a stream nobody wrote.
        let mut s = Stream::default();
        for c in chunks {
            match c {
                Elements::StreamEntries(e) if s.meta.is_none() => {
                    s.entries.extend(e.iter().cloned())
                }
                Elements::StreamMeta(m) if s.meta.is_none() => s.meta = Some(m.clone()),
                Elements::StreamGroup(g) if s.meta.is_some() && !s.idmp => s.groups.push(g.clone()),
                Elements::StreamIdmp(_) if s.meta.is_some() => s.idmp = true,
                Elements::StreamPending { group, entries } => match s.groups.last_mut() {
                    Some(g) if g.name == group => g.pending.extend(entries.iter().cloned()),
                    _ => {
                        return Err(inconsistent(
                            "pending entries of a group that is not the last one",
                        ))
                    }
                },
                _ => return Err(inconsistent("stream chunks out of order")),
            }
        }
        if s.meta.is_none() {
            return Err(inconsistent("no stream metadata chunk"));
        }
        // Nodes store ids as deltas from their first entry, and the server's range lookups
        // assume ascending ids: entries out of order (or a repeated id) would break them.
        if !s.entries.is_sorted_by(|a, b| a.id < b.id) {
            return Err(inconsistent("entries not in ascending id order"));
        }
        Ok(s)
    }

    /// The type byte and value for a target that reads stream format `v` (1, 2 or 3).
    pub(crate) fn encode(&self, v: u8, losses: &mut Losses) -> Result<(u8, Bytes), EncodeError> {
        let meta = self
            .meta
            .as_ref()
            .ok_or_else(|| inconsistent("no stream metadata chunk"))?;
        // The loader takes XLEN from the metadata rather than counting the entries, so a
        // wrong one could load and lie.
        if meta.length != self.entries.len() as u64 {
            return Err(inconsistent(
                "the length differs from the number of entries",
            ));
        }
        let mut out = BytesMut::new();
        let nodes = build_nodes(&self.entries);
        put_len(&mut out, nodes.len() as u64);
        for (master, lp) in &nodes {
            put_string(&mut out, &id_key(*master));
            put_string(&mut out, lp);
        }
        put_len(&mut out, meta.length);
        put_id_lens(&mut out, meta.last_id);
        if v >= 2 {
            // From a type-15 source, what Redis's own loader derives for these fields.
            let first = meta
                .first_id
                .or_else(|| self.entries.first().map(|e| e.id))
                .unwrap_or_default();
            put_id_lens(&mut out, first);
            put_id_lens(&mut out, meta.max_deleted_id.unwrap_or_default());
            put_len(&mut out, meta.entries_added.unwrap_or(meta.length));
        } else {
            // The first id is the first live entry's, which the target still has, and a
            // max-deleted id of 0-0 says nothing was deleted: neither is a loss.
            let deleted = meta
                .max_deleted_id
                .is_some_and(|id| id > StreamId::default());
            losses.stream_counters += u64::from(deleted) + u64::from(meta.entries_added.is_some());
        }
        // rax order: groups and consumers by name bytes, PELs by id.
        let mut groups: Vec<&StreamGroup> = self.groups.iter().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        // The server refuses a file with a group name twice ("Duplicated consumer group
        // name"), so better to say so here than to get a failed RESTORE.
        if groups
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.name == b.name))
        {
            return Err(inconsistent("two groups with the same name"));
        }
        put_len(&mut out, groups.len() as u64);
        for g in groups {
            put_group(&mut out, g, v, losses)?;
        }
        losses.stream_idmp += u64::from(self.idmp);
        let t = match v {
            1 => RDB_TYPE_STREAM_LISTPACKS,
            2 => RDB_TYPE_STREAM_LISTPACKS_2,
            _ => RDB_TYPE_STREAM_LISTPACKS_3,
        };
        Ok((t, out.freeze()))
    }
}

fn inconsistent(what: &str) -> EncodeError {
    EncodeError::Inconsistent(format!("stream: {what}"))
}

/// One group: name, last id, [entries_read], the global PEL with delivery data, then each
/// consumer with the ids it owns.
fn put_group(
    out: &mut BytesMut,
    g: &StreamGroup,
    v: u8,
    losses: &mut Losses,
) -> Result<(), EncodeError> {
    put_string(out, &g.name);
    put_id_lens(out, g.last_id);
    if v >= 2 {
        put_len(out, g.entries_read.unwrap_or(SCG_INVALID_ENTRIES_READ));
    } else if g.entries_read.is_some() {
        losses.stream_counters += 1;
    }
    // Only entries a consumer of this group owns: see `Losses::pending_unowned` for why
    // one without an owner cannot be written into an older format.
    let mut pel: Vec<&PendingEntry> = g
        .pending
        .iter()
        .filter(|p| {
            let owned = !p.consumer.is_empty() && g.consumers.iter().any(|c| c.name == p.consumer);
            losses.pending_unowned += u64::from(!owned);
            losses.nack_marks += u64::from(owned && p.nacked);
            owned
        })
        .collect();
    pel.sort_by_key(|p| p.id);
    // The loader refuses a duplicate PEL entry, like a duplicate group or consumer below.
    if pel.windows(2).any(|w| matches!(w, [a, b] if a.id == b.id)) {
        return Err(inconsistent("a pending id listed twice in one group"));
    }
    put_len(out, pel.len() as u64);
    for p in &pel {
        out.put_slice(&id_key(p.id));
        put_ms(out, p.delivery_time_ms);
        put_len(out, p.delivery_count);
    }
    let mut consumers: Vec<&Consumer> = g.consumers.iter().collect();
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    if consumers
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.name == b.name))
    {
        return Err(inconsistent("two consumers with the same name"));
    }
    put_len(out, consumers.len() as u64);
    for c in consumers {
        put_string(out, &c.name);
        put_ms(out, c.seen_time_ms);
        if v >= 3 {
            // A type-19 source has none; Redis's loader uses the seen time then.
            put_ms(out, c.active_time_ms.unwrap_or(c.seen_time_ms));
        } else if c.active_time_ms.is_some() {
            losses.consumer_active_times += 1;
        }
        // `pel` is sorted, so each consumer's ids come out ascending as well.
        let owned: Vec<StreamId> = pel
            .iter()
            .filter(|p| p.consumer == c.name)
            .map(|p| p.id)
            .collect();
        put_len(out, owned.len() as u64);
        for id in owned {
            out.put_slice(&id_key(id));
        }
    }
    Ok(())
}

/// A node being filled: the master entry's id and fields, and the entries after it.
struct Node {
    master: StreamId,
    fields: Vec<Bytes>,
    /// Master entry with a placeholder count; the count stays below 128 (at most
    /// `STREAM_NODE_MAX_ENTRIES`), so its 1-byte width, and this size, are final.
    head: Listpack,
    entries: Listpack,
    count: usize,
}

impl Node {
    fn new(e: &StreamEntry) -> Node {
        let fields: Vec<Bytes> = e.fields.iter().map(|(f, _)| f.clone()).collect();
        Node {
            master: e.id,
            head: master_entry(1, &fields),
            fields,
            entries: Listpack::new(),
            count: 0,
        }
    }

    /// `lpBytes` of the node as it stands.
    fn bytes(&self) -> usize {
        self.head.bytes() + self.entries.bytes() - Listpack::new().bytes()
    }

    /// `streamAppendItem`'s test for starting a new node before adding `e`.
    fn is_full_for(&self, e: &StreamEntry) -> bool {
        let totelelen: usize = e.fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        self.bytes() + totelelen >= STREAM_NODE_MAX_BYTES || self.count >= STREAM_NODE_MAX_ENTRIES
    }

    fn push(&mut self, e: &StreamEntry) {
        let same = e.fields.len() == self.fields.len()
            && e.fields.iter().zip(&self.fields).all(|((f, _), m)| f == m);
        let lp = &mut self.entries;
        lp.push_int(if same { STREAM_ITEM_FLAG_SAMEFIELDS } else { 0 });
        // Deltas are unsigned differences stored as int64, as in the C code: the seq
        // delta is negative when the ms part moved on.
        lp.push_int(e.id.ms.wrapping_sub(self.master.ms) as i64);
        lp.push_int(e.id.seq.wrapping_sub(self.master.seq) as i64);
        let n = e.fields.len() as i64;
        if !same {
            lp.push_int(n);
        }
        for (f, v) in &e.fields {
            if !same {
                lp.push_str(f);
            }
            lp.push_str(v);
        }
        lp.push_int(if same { n + 3 } else { 2 * n + 4 });
        self.count += 1;
    }

    fn finish(self) -> (StreamId, Bytes) {
        let mut lp = master_entry(self.count as i64, &self.fields);
        lp.append(self.entries);
        (self.master, lp.finish().freeze())
    }
}

/// `count, deleted (0), n_fields, fields…, 0`.
fn master_entry(count: i64, fields: &[Bytes]) -> Listpack {
    let mut lp = Listpack::new();
    lp.push_int(count);
    lp.push_int(0);
    lp.push_int(fields.len() as i64);
    for f in fields {
        lp.push_str(f);
    }
    lp.push_int(0);
    lp
}

/// The nodes (master id, listpack) `streamAppendItem` makes from these entries.
fn build_nodes(entries: &[StreamEntry]) -> Vec<(StreamId, Bytes)> {
    let mut nodes = Vec::new();
    let mut cur: Option<Node> = None;
    for e in entries {
        let node = match cur.take() {
            Some(n) if !n.is_full_for(e) => n,
            full => {
                nodes.extend(full.map(Node::finish));
                Node::new(e)
            }
        };
        let mut node = node;
        node.push(e);
        cur = Some(node);
    }
    nodes.extend(cur.map(Node::finish));
    nodes
}
