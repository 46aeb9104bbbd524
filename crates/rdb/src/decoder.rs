//! The streaming decoder: bytes in (any chunking), [`Event`]s out.
//!
//! How it stays resumable without a hand-written state for every byte: the input is cut
//! into *units* (one record, one collection member, one encoded container, one piece of a
//! big string). A unit is parsed in one go from the buffered bytes; if they run out, the
//! attempt is discarded and retried when the next chunk arrives. Between units the parser
//! remembers only small counters (members left, groups left, …), so memory is bounded by
//! the largest unit, never by the key. A unit changes state or emits events only after all
//! its reads succeeded, which is why the events do not depend on the chunking.
//!
//! Raw mode keeps the bytes of the current value in the buffer instead of dropping them,
//! so the finished value is handed out as one zero-copy `Bytes` slice. If the value grows
//! past `big_value_threshold`, the parser rewinds to the value's first byte (still
//! buffered) and parses it again in elements mode.

use bytes::{Buf, Bytes, BytesMut};

use crate::cursor::item_bytes;

use crate::blobs::{self, Item};
use crate::constants::*;
use crate::crc::Crc64;
use crate::cursor::{Cursor, PErr, StrHdr, P};
use crate::error::RdbError;
use crate::event::*;
use crate::version::RdbVersion;

/// A parse buffer with more room than this, four times more than it needs, is given back.
const RELEASE_ABOVE: usize = 4 << 20;

/// How values are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// One [`Event::RawValue`] per key: the value's exact serialization (fast path for
    /// `RESTORE`), unless it exceeds `big_value_threshold`.
    Raw,
    /// [`Event::Elements`] chunks: decoded members.
    Elements,
}

/// Caller's choices for a [`Decoder`].
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Raw mode is the fast path (no member is touched), elements mode the one every
    /// target can take; a raw decoder still falls back to elements per value, see below.
    pub mode: DecodeMode,
    /// Raw mode only: a value whose serialization is larger than this many bytes is
    /// delivered as elements instead (so at most this many bytes are held for it).
    /// `None` = no limit. Module values (type 7) are always delivered whole.
    pub big_value_threshold: Option<u64>,
    /// Raw mode only: the threshold for streams, when it differs (`None`: the one above).
    /// Rebuilt from elements a stream loses details a RESTORE keeps (consumers' seen
    /// times), so a caller may hold bigger streams whole than other values.
    pub big_stream_threshold: Option<u64>,
    /// Check the CRC64 after the EOF opcode (a stored checksum of 0 is never checked:
    /// a server with `rdbchecksum no` writes 0 instead of a checksum).
    pub verify_checksum: bool,
}

impl DecodeOptions {
    /// Raw mode without a threshold: every value is held whole, however big.
    pub fn raw() -> Self {
        DecodeOptions {
            mode: DecodeMode::Raw,
            big_value_threshold: None,
            big_stream_threshold: None,
            verify_checksum: true,
        }
    }
    /// Elements mode: memory stays bounded by the largest parse unit, whatever the keys.
    pub fn elements() -> Self {
        DecodeOptions {
            mode: DecodeMode::Elements,
            big_value_threshold: None,
            big_stream_threshold: None,
            verify_checksum: true,
        }
    }
    /// Raw mode with a big-value threshold in bytes.
    pub fn raw_with_threshold(threshold: u64) -> Self {
        DecodeOptions {
            big_value_threshold: Some(threshold),
            ..Self::raw()
        }
    }
}

// Elements mode is the default because it is the one with bounded memory for any input.
impl Default for DecodeOptions {
    fn default() -> Self {
        Self::elements()
    }
}

/// Bytes found after the end of an RDB: where they start and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailing {
    pub offset: u64,
    pub len: u64,
}

/// A push-based RDB decoder. See the crate documentation.
pub struct Decoder {
    /// The buffered input. Frozen, so values and members are handed out as zero-copy
    /// slices of it; a new chunk is appended by reclaiming it (when no slice is alive) or
    /// by copying the unconsumed tail.
    buf: Bytes,
    /// Parse position in `buf`; bytes before it are consumed.
    pos: usize,
    /// Absolute offset of `buf[0]`.
    base: u64,
    crc: Crc64,
    /// Absolute offset up to which bytes are digested. The CRC follows the parse: bytes
    /// are digested when they leave the buffer (in big chunk-sized updates, not one per
    /// key) and at the checksum, so it covers exactly the bytes before the stored checksum
    /// even when more bytes follow it in the same chunk.
    crc_done: u64,
    /// Bytes after the end of the RDB, ignored (see [`Decoder::trailing`]).
    trailing: Option<Trailing>,
    /// Compute the CRC at all (off for single values and with `verify_checksum: false`).
    crc_on: bool,
    /// Where the current value starts in `buf` (valid while `retaining`).
    value_start: usize,
    /// Keep the current value's bytes in `buf` (raw mode, module values).
    retaining: bool,
    /// Enforce `big_value_threshold` on the current value.
    limited: bool,
    /// The threshold of the current value's type (see [`DecodeOptions`]).
    value_limit: Option<u64>,
    p: Parser,
    /// The first error, returned again by every later call: an error can stop the parser
    /// inside a unit, from where no later byte can be read in step.
    failed: Option<RdbError>,
    /// At most this many [`Event::Elements`] per call (see [`Decoder::set_chunk_budget`]).
    chunk_budget: Option<usize>,
    /// The last call stopped at the budget with input left to parse.
    paused: bool,
}

impl Decoder {
    pub fn new(opts: DecodeOptions) -> Self {
        Decoder {
            buf: Bytes::new(),
            pos: 0,
            base: 0,
            crc: Crc64::new(),
            crc_done: 0,
            trailing: None,
            crc_on: opts.verify_checksum,
            value_start: 0,
            retaining: false,
            limited: false,
            value_limit: None,
            p: Parser::new(opts, Top::Magic, RdbVersion::Redis(RDB_VERSION_MAX_REDIS)),
            failed: None,
            chunk_budget: None,
            paused: false,
        }
    }

    /// Stop a call after it emitted `max` element chunks, so a caller can write them before
    /// the rest of the input is parsed: one chunk of input can hold tens of megabytes of
    /// members (above all when a value outgrew the raw threshold and its buffered bytes are
    /// parsed again as elements), and all of them would be in memory at once. A caller that
    /// sets a budget calls [`Decoder::resume`] while [`Decoder::paused`] says so, before
    /// the next [`Decoder::feed`] and before [`Decoder::finish`].
    pub fn set_chunk_budget(&mut self, max: Option<usize>) {
        self.chunk_budget = max.map(|m| m.max(1));
    }

    /// The last call stopped at the chunk budget: input is left to parse.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Parse on from where the chunk budget stopped the last call.
    pub fn resume(&mut self, out: &mut Vec<Event>) -> Result<(), RdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.paused = false;
        let r = self.run(out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// A decoder for a single value (a DUMP payload body): expects exactly one value of
    /// type `rdb_type`, read with the rules of `version`, in elements mode.
    pub(crate) fn for_value(rdb_type: u8, version: RdbVersion) -> Result<Self, RdbError> {
        let mut d = Decoder::new(DecodeOptions::elements());
        // A DUMP payload's CRC covers its type byte and trailer too, so `parse_payload`
        // checks it over the whole payload; the body alone has no checksum of its own.
        d.crc_on = false;
        d.p.version = version;
        d.p.value_only = true;
        if !d.p.known_type(rdb_type) {
            return Err(d.p.refusal(0, rdb_type).unwrap_or(RdbError::UnknownType {
                offset: 0,
                rdb_type,
            }));
        }
        d.p.begin_value(rdb_type);
        d.p.top = Top::Value;
        // `apply` never sees a `BeginValue` for a single value, so this is its part of it.
        d.retaining = rdb_type == RDB_TYPE_MODULE_2;
        Ok(d)
    }

    /// Bytes consumed so far (the offset of the next byte to parse).
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The version from the magic, once the header has been read.
    pub fn version(&self) -> Option<RdbVersion> {
        (self.p.top != Top::Magic).then_some(self.p.version)
    }

    /// True once the EOF opcode (and checksum) have been read.
    pub fn is_done(&self) -> bool {
        self.p.top == Top::Done
    }

    /// Push the next chunk of input; appends the events it completes to `out`.
    /// Returning `Ok` with no events just means more bytes are needed. After an error, every
    /// later call returns the same error.
    pub fn feed(&mut self, chunk: Bytes, out: &mut Vec<Event>) -> Result<(), RdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.p.top == Top::Done && !self.p.value_only {
            // Past the end: counted, never buffered, so trailing junk costs no memory.
            self.note_trailing(chunk.len());
            return Ok(());
        }
        self.append(chunk);
        let r = self.run(out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Call after the last chunk: an error if the input ended before the EOF opcode (or,
    /// for a single value, before its end).
    pub fn finish(&self) -> Result<(), RdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.p.top == Top::Done {
            Ok(())
        } else {
            Err(RdbError::Truncated {
                offset: self.base + self.buf.len() as u64,
                expected: self.p.expecting(),
            })
        }
    }

    /// Bytes that followed the end of the RDB (the EOF opcode and its checksum), if any.
    /// They are ignored, as `redis-server` ignores them when it loads such a file; the
    /// caller decides whether to warn. The checksum before them was verified as usual.
    pub fn trailing(&self) -> Option<Trailing> {
        self.trailing
    }

    /// How many droppable module key-metadata classes (`RDB_OPCODE_KEY_META`, Redis 8.6+,
    /// flagged `ALLOW_IGNORE`) the keys so far carried. Each is in its key's
    /// [`KeyMeta::meta_classes`]; no target gets them (only the module could write them),
    /// so a caller warns when this is not zero.
    pub fn key_meta_classes(&self) -> u64 {
        self.p.key_meta_seen
    }

    fn note_trailing(&mut self, len: usize) {
        let offset = self.offset();
        let t = self.trailing.get_or_insert(Trailing { offset, len: 0 });
        t.len += len as u64;
    }

    /// Digest the buffered bytes up to the absolute offset `upto` (still in `buf`).
    fn crc_upto(&mut self, upto: u64) {
        if !self.crc_on || upto <= self.crc_done {
            return;
        }
        // crc_done never falls behind `base`: bytes are digested before they are dropped.
        let from = usize::try_from(self.crc_done.saturating_sub(self.base)).unwrap_or(usize::MAX);
        let to = usize::try_from(upto - self.base).unwrap_or(usize::MAX);
        if let Some(bytes) = self.buf.get(from..to) {
            self.crc.update(bytes);
        }
        self.crc_done = upto;
    }

    /// Drop consumed bytes (keeping the current value's when retaining) and append `chunk`.
    fn append(&mut self, chunk: Bytes) {
        let keep_from = if self.retaining {
            self.value_start
        } else {
            self.pos
        }
        .min(self.buf.len());
        self.crc_upto(self.base + keep_from as u64);
        let mut old = std::mem::take(&mut self.buf);
        self.base += keep_from as u64;
        self.pos -= keep_from;
        self.value_start = self.value_start.saturating_sub(keep_from);
        if keep_from == old.len() {
            // nothing pending: parse the caller's chunk in place
            self.buf = chunk;
            return;
        }
        old.advance(keep_from);
        let needed = old.len() + chunk.len();
        let mut m = match old.try_into_mut() {
            // Once a big value has passed, a buffer grown for it would stay that big for
            // as long as anything is pending (nearly always): start a small one instead.
            Ok(m) if m.capacity() > RELEASE_ABOVE && m.capacity() > 4 * needed => {
                let mut fresh = BytesMut::with_capacity(needed);
                fresh.extend_from_slice(&m);
                fresh
            }
            // no slice of the old buffer is alive: grow it in place (amortized, so a big
            // raw value spanning many chunks is not copied again and again)
            Ok(m) => m,
            Err(old) => {
                let mut m = BytesMut::with_capacity(old.len() + chunk.len());
                m.extend_from_slice(&old);
                m
            }
        };
        if m.capacity() - m.len() < chunk.len() {
            m = self.grown(m, needed);
        }
        m.extend_from_slice(&chunk);
        self.buf = m.freeze();
    }

    /// A buffer with room for `needed` bytes, `m`'s bytes in it. Doubling keeps a value
    /// that spans many chunks from being copied again and again; but a raw value is only
    /// held up to its threshold (past it, it is parsed as elements and the buffer drains),
    /// so room beyond the threshold and one more chunk would never be used: at a 32 MiB
    /// threshold, doubling alone would reserve 64 MiB per decoder.
    fn grown(&self, m: BytesMut, needed: usize) -> BytesMut {
        let doubled = m.capacity().saturating_mul(2).max(needed);
        let most = match self.value_limit {
            Some(limit) if self.retaining && self.limited => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                limit
                    .saturating_add(needed.saturating_sub(m.len()))
                    .max(needed)
            }
            _ => usize::MAX,
        };
        if doubled <= most {
            return m; // the append grows it in place, as far as the allocator can
        }
        let mut fresh = BytesMut::with_capacity(most);
        fresh.extend_from_slice(&m);
        fresh
    }

    /// Parse units from the buffer until it runs out, the RDB ends, or the chunk budget is
    /// spent. Each unit is tried on a fresh cursor; only a unit that parsed whole moves
    /// `pos`, which is what makes a `More` free to retry on the next chunk.
    fn run(&mut self, out: &mut Vec<Event>) -> Result<(), RdbError> {
        self.paused = false;
        let mut chunks = 0usize;
        loop {
            if self.p.top == Top::Done {
                if self.pos < self.buf.len() {
                    // A single value (DUMP body) must end exactly: more bytes mean a corrupt
                    // payload. A whole RDB may be followed by anything (see `trailing`).
                    if self.p.value_only {
                        return Err(RdbError::TrailingData {
                            offset: self.offset(),
                        });
                    }
                    self.note_trailing(self.buf.len() - self.pos);
                    self.pos = self.buf.len();
                }
                return Ok(());
            }
            // A retained value may not grow past its threshold: a read beyond this index
            // turns into `Switch` (see below) instead of buffering more of the value.
            let limit = match (self.limited, self.value_limit) {
                (true, Some(t)) => self
                    .value_start
                    .saturating_add(usize::try_from(t).unwrap_or(usize::MAX)),
                _ => usize::MAX,
            };
            let mut c = Cursor::new(&self.buf, self.pos, self.base, limit);
            let before = out.len();
            match self.p.step(&mut c, out) {
                Ok(action) => {
                    self.pos = c.pos;
                    self.apply(action, out)?;
                    if let Some(max) = self.chunk_budget {
                        // Counted per unit, so a pause falls between units and `resume`
                        // simply parses on; a unit itself never splits.
                        chunks += out.get(before..).map_or(0, |new| {
                            new.iter()
                                .filter(|e| matches!(e, Event::Elements(_)))
                                .count()
                        });
                        if chunks >= max && self.pos < self.buf.len() {
                            self.paused = true;
                            return Ok(());
                        }
                    }
                }
                Err(PErr::More) => return Ok(()),
                Err(PErr::Switch) => {
                    // The value outgrew the threshold: parse it again from its first byte,
                    // this time as elements. Nothing of it has been emitted yet.
                    self.pos = self.value_start;
                    self.retaining = false;
                    self.limited = false;
                    self.p.restart_value(true);
                }
                Err(PErr::Fail(e)) => return Err(e),
            }
        }
    }

    /// The buffer-side effects of a unit the parser completed (the parser sees only a
    /// cursor, never the buffer's history).
    fn apply(&mut self, action: Action, out: &mut Vec<Event>) -> Result<(), RdbError> {
        match action {
            Action::None => {}
            Action::BeginValue => {
                self.value_start = self.pos;
                // A module value is retained in both modes: only the module can decode it,
                // so its exact bytes are all anyone can be given. It is never limited, as
                // no elements fallback exists for it.
                let module = self.p.rdb_type == RDB_TYPE_MODULE_2;
                let raw = self.p.opts.mode == DecodeMode::Raw;
                self.retaining = raw || module;
                let opts = &self.p.opts;
                self.value_limit = if crate::constants::is_stream_type(self.p.rdb_type) {
                    opts.big_stream_threshold.or(opts.big_value_threshold)
                } else {
                    opts.big_value_threshold
                };
                self.limited = raw && !module && self.value_limit.is_some();
            }
            Action::EndValue => {
                if self.retaining {
                    let end = self.pos.min(self.buf.len());
                    let raw = self.buf.slice(self.value_start.min(end)..end);
                    if self.p.elements {
                        out.push(Event::Elements(Elements::Module {
                            module_id: self.p.module_id,
                            raw,
                        }));
                    } else {
                        out.push(Event::RawValue(raw));
                    }
                }
                self.retaining = false;
                self.limited = false;
                // A single value (DUMP body) has no key around it.
                if !self.p.value_only {
                    out.push(Event::KeyEnd);
                }
            }
            Action::EofOpcode => {
                // RDB < 5 has no checksum, so the file is complete at the opcode; newer
                // files announce `Eof` once the checksum has been checked.
                if self.p.top == Top::Done {
                    out.push(Event::Eof);
                }
            }
            Action::Checksum(stored) => {
                // The CRC covers every byte before the stored checksum, the EOF opcode too.
                let at = self.offset().saturating_sub(8);
                self.crc_upto(at);
                let computed = self.crc.value();
                if self.crc_on && stored != 0 && stored != computed {
                    return Err(RdbError::Checksum {
                        offset: at,
                        stored,
                        computed,
                    });
                }
                out.push(Event::Eof);
            }
        }
        Ok(())
    }
}

// -----------------------------------------------------------------------------------------
// The parser: everything that knows the format. It never sees the buffer's history, only a
// cursor over the bytes not yet parsed, and tells the decoder what a finished unit means
// for the buffer through an `Action`.

/// Where the parser is in the file. A value has its own finer state ([`VState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Magic,
    Record,
    Value,
    Checksum,
    Done,
}

/// What a finished unit asks of the decoder (which owns the buffer and the CRC).
enum Action {
    None,
    /// A key's value starts at the cursor: mark it, and decide whether to retain it.
    BeginValue,
    /// The value ended at the cursor: hand out a retained value, then `KeyEnd`.
    EndValue,
    EofOpcode,
    /// The stored checksum, to compare with the digest of every byte before it.
    Checksum(u64),
}

/// Per-member layouts of the collection types stored member by member.
#[derive(Debug, Clone, Copy)]
enum ItemKind {
    List,
    Set,
    /// Type 3: scores as decimal text.
    ZSet,
    /// Type 5: scores as binary doubles.
    ZSet2,
    Hash,
    /// Type 24 (Redis 7.4 GA): per-field TTLs relative to the key's smallest one.
    HashMetadata {
        min_expire: i64,
    },
    /// Type 22 in `REDIS` files (7.4 release candidates): absolute per-field TTLs.
    HashMetadataPreGa,
    /// Type 22 in `VALKEY` files: absolute per-field expiry after the value.
    ValkeyHash2,
    /// Type 14: each member is a whole ziplist node.
    Quicklist,
    /// Type 18: each member is a PLAIN element or a PACKED listpack node.
    Quicklist2,
}

/// Where the parser is inside a value. The counters say how many units of each level are
/// left, so the state is a few words however big the value is. The counts come from the
/// file, so they only ever size a vector up to one chunk's worth.
#[derive(Debug, Clone, Copy)]
enum VState {
    Start,
    /// Bytes of a plain string left.
    StrPieces(u64),
    /// Members left.
    Items(ItemKind, u64),
    /// Listpack nodes left.
    StreamNodes(u64),
    StreamMeta,
    /// Groups left (this one included) in this and every group state below.
    GroupHdr(u64),
    /// (groups left, group PEL entries left).
    Pel(u64, u64),
    ConsumersHdr(u64),
    /// (groups left, consumers left).
    Consumer(u64, u64),
    /// (groups left, consumers left after this one, its ids left).
    ConsumerPel(u64, u64, u64),
    /// Type 27: the group's NACK zone size, then its ids (groups left, ids left).
    NackHdr(u64),
    Nack(u64, u64),
    /// Types 26/27, after the last group: IDMP config, producers, records, counters.
    IdmpHdr,
    IdmpProducer(u64),
    /// (producers left, this one included; its records left).
    IdmpEntry(u64, u64),
    IdmpStats,
    /// A module value's tagged values, up to the module EOF marker.
    ModuleOps,
}

/// A group PEL entry while its group is read: the owner and NACK mark come later in the
/// file (consumers, NACK zone) than the entry itself.
struct PelSlot {
    id: StreamId,
    delivery_time_ms: i64,
    delivery_count: u64,
    /// Index into the group's consumers.
    owner: Option<usize>,
    nacked: bool,
}

/// IDMP state of the current stream, gathered into bounded chunks.
struct IdmpAcc {
    duration: u64,
    max_entries: u64,
    producers: Vec<IdmpProducer>,
    /// Records gathered since the last chunk went out.
    records: usize,
}

/// The consumer group being read. It is emitted only once complete, because its pending
/// entries are written before the consumers that own them. Its PEL is the one part of a
/// value held whole (it may exceed a chunk): it is what the group's consumers point into.
struct GroupCtx {
    name: Bytes,
    last_id: StreamId,
    entries_read: Option<u64>,
    pel: Vec<PelSlot>,
    consumers: Vec<Consumer>,
}

struct Parser {
    opts: DecodeOptions,
    /// From the magic: decides what ambiguous ids (types 22/23, opcode 243) mean.
    version: RdbVersion,
    top: Top,
    /// Decoding one DUMP body: no records around the value, no `KeyStart`/`KeyEnd`.
    value_only: bool,
    /// The database of the last `SELECTDB`, stamped on every key after it.
    db: u64,
    /// Opcodes read for the key that follows (taken by its record).
    expire: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
    /// `KEY_META` classes read for the next key.
    key_meta: Vec<KeyMetaClass>,
    /// Module key-metadata classes seen so far (carried opaque in `KeyMeta`, never loaded).
    key_meta_seen: u64,
    idmp: Option<IdmpAcc>,
    rdb_type: u8,
    /// The current value is decoded into elements (otherwise only walked).
    elements: bool,
    vs: VState,
    /// The chunk being filled, and what it holds so far (bounded by `MAX_CHUNK_*`).
    acc: Option<Elements>,
    acc_items: usize,
    acc_bytes: usize,
    /// The current module value's id, for its `Elements::Module`.
    module_id: u64,
    /// The current stream's format version (see `stream_version`).
    stream_v: u8,
    group: Option<GroupCtx>,
    /// The current key, for error messages.
    cur_key: Bytes,
    /// Expected members of the current value (from its header), to size chunk vectors.
    hint: usize,
}

// A macro rather than a generic function: each `Elements` variant holds a different
// vector type, and the match must name the variant.
macro_rules! push_into {
    ($self:ident, $out:ident, $variant:ident, $item:expr, $size:expr) => {{
        let item = $item;
        let size = $size;
        match &mut $self.acc {
            Some(Elements::$variant(v)) => v.push(item),
            _ => {
                $self.flush($out);
                // sized from the value's header (capped), so a chunk is not regrown ten times
                let mut v = Vec::with_capacity($self.hint.clamp(1, MAX_CHUNK_ITEMS));
                v.push(item);
                $self.acc = Some(Elements::$variant(v));
            }
        }
        $self.bump($out, size);
    }};
}

impl Parser {
    fn new(opts: DecodeOptions, top: Top, version: RdbVersion) -> Self {
        Parser {
            opts,
            version,
            top,
            value_only: false,
            db: 0,
            expire: None,
            idle: None,
            freq: None,
            key_meta: Vec::new(),
            key_meta_seen: 0,
            idmp: None,
            rdb_type: 0,
            elements: false,
            vs: VState::Start,
            acc: None,
            acc_items: 0,
            acc_bytes: 0,
            module_id: 0,
            stream_v: 1,
            group: None,
            cur_key: Bytes::new(),
            hint: 16,
        }
    }

    /// Types this decoder reads in files of this flavor. Redis and Valkey numbered their
    /// newest types independently: 23 is a Redis 7.4-RC hash but Valkey 9.2's (refused)
    /// path hash, and 26/27 exist only in Redis files.
    fn known_type(&self, t: u8) -> bool {
        let valkey = self.version.is_valkey();
        matches!(t, 0..=5 | 7 | 9..=21 | 24 | 25)
            || t == 22
            || (t == 23 && !valkey)
            || (matches!(t, RDB_TYPE_STREAM_LISTPACKS_4 | RDB_TYPE_STREAM_LISTPACKS_5) && !valkey)
    }

    /// The one-line refusal for a type a newer server writes and nothing here can carry.
    fn refusal(&self, offset: u64, t: u8) -> Option<RdbError> {
        refused_type(t, self.version.is_valkey()).map(|r| RdbError::UnsupportedType {
            offset,
            rdb_type: t,
            name: r.name,
            writer: r.writer,
            reason: r.reason,
        })
    }

    /// A DUMP body is always decoded: its caller wants elements, having the raw bytes.
    fn begin_value(&mut self, t: u8) {
        self.rdb_type = t;
        self.restart_value(self.opts.mode == DecodeMode::Elements || self.value_only);
    }

    /// Forget every trace of the current value's parse. Also used when a raw value outgrew
    /// its threshold: nothing of it was emitted, so it starts over as elements.
    fn restart_value(&mut self, elements: bool) {
        self.elements = elements;
        self.vs = VState::Start;
        self.acc = None;
        self.acc_items = 0;
        self.acc_bytes = 0;
        self.group = None;
        self.idmp = None;
        self.module_id = 0;
    }

    /// What the parser is waiting for, for `Truncated` errors.
    fn expecting(&self) -> String {
        match self.top {
            Top::Magic => "the 9-byte RDB magic".into(),
            Top::Record => "an opcode or key record (the file ends with opcode 255)".into(),
            Top::Value => format!(
                "the rest of the value of key {:?} (type {}, at {:?})",
                String::from_utf8_lossy(&self.cur_key),
                self.rdb_type,
                self.vs
            ),
            Top::Checksum => "the 8-byte CRC64 after the EOF opcode".into(),
            Top::Done => "nothing".into(),
        }
    }

    /// Close the chunk being filled. Called wherever a value changes the kind of what it
    /// emits (stream entries, then metadata, then groups), so events keep file order.
    fn flush(&mut self, out: &mut Vec<Event>) {
        if let Some(e) = self.acc.take() {
            out.push(Event::Elements(e));
        }
        self.acc_items = 0;
        self.acc_bytes = 0;
    }

    /// Count a member into the chunk. A chunk closes at a member count or a byte size,
    /// whichever comes first: small members would make byte-sized chunks huge vectors,
    /// big ones would make count-sized chunks huge in bytes. The bounds depend on the
    /// content only, which keeps the events the same however the input was split.
    fn bump(&mut self, out: &mut Vec<Event>, size: usize) {
        self.acc_items += 1;
        self.acc_bytes = self.acc_bytes.saturating_add(size);
        if self.acc_items >= MAX_CHUNK_ITEMS || self.acc_bytes >= MAX_CHUNK_BYTES {
            self.flush(out);
        }
    }

    // The sizes are taken before the members move: cloning a member only to measure it
    // would cost two atomic operations per member, and an allocation for one built from a
    // `Vec` (integers as text), whose first clone makes it shared.
    fn push_list(&mut self, out: &mut Vec<Event>, b: Bytes) {
        let n = b.len();
        push_into!(self, out, ListItems, b, n)
    }
    fn push_set(&mut self, out: &mut Vec<Event>, b: Bytes) {
        let n = b.len();
        push_into!(self, out, SetMembers, b, n)
    }
    fn push_zset(&mut self, out: &mut Vec<Event>, m: Bytes, score: f64) {
        let n = m.len() + 8;
        push_into!(self, out, ZSetMembers, (m, score), n)
    }
    fn push_hash(&mut self, out: &mut Vec<Event>, f: HashField) {
        let n = f.field.len() + f.value.len();
        push_into!(self, out, HashFields, f, n)
    }
    fn push_entry(&mut self, out: &mut Vec<Event>, e: StreamEntry) {
        // the id counts as its 16 bytes
        let n: usize = 16
            + e.fields
                .iter()
                .map(|(f, v)| f.len() + v.len())
                .sum::<usize>();
        push_into!(self, out, StreamEntries, e, n)
    }

    /// Parse one unit. On `Err(More)` nothing may have changed: the decoder retries the
    /// same unit from the same position once more bytes have arrived.
    fn step(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<Action> {
        match self.top {
            Top::Magic => {
                let m = c.take(9)?;
                let v = RdbVersion::from_magic(m).map_err(PErr::Fail)?;
                self.version = v;
                out.push(Event::Header { version: v });
                self.top = Top::Record;
                Ok(Action::None)
            }
            Top::Record => self.record(c, out),
            Top::Value => {
                if self.value_step(c, out)? {
                    self.flush(out);
                    self.top = if self.value_only {
                        Top::Done
                    } else {
                        Top::Record
                    };
                    Ok(Action::EndValue)
                } else {
                    Ok(Action::None)
                }
            }
            Top::Checksum => {
                let b: [u8; 8] = c.array()?;
                self.top = Top::Done;
                Ok(Action::Checksum(u64::from_le_bytes(b)))
            }
            Top::Done => Ok(Action::None),
        }
    }
}

// ---- records (top level) ----------------------------------------------------------------

impl Parser {
    /// One top-level record: an opcode and its body, or a key (type byte and name) whose
    /// value then follows in `Top::Value` units.
    fn record(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<Action> {
        let at = c.pos;
        let op = c.u8()?;
        match op {
            RDB_OPCODE_AUX => {
                let key = c.string_bytes()?;
                let value = c.string_bytes()?;
                out.push(Event::Aux { key, value });
            }
            RDB_OPCODE_SELECTDB => {
                let db = c.length("SELECTDB db number")?;
                self.db = db;
                out.push(Event::SelectDb(db));
            }
            RDB_OPCODE_RESIZEDB => out.push(resize_db(c)?),
            RDB_OPCODE_SLOT_INFO => out.push(slot_info(c)?),
            // These describe the key that follows them, so they wait in the parser until
            // its record, which takes (resets) each: none carries over to a later key.
            RDB_OPCODE_EXPIRETIME_MS => self.expire = Some(c.i64_le()?),
            // RDB 1-2 (Redis 2.4 and older) stored seconds; RDB 3 moved to milliseconds,
            // the unit every `KeyMeta` uses.
            RDB_OPCODE_EXPIRETIME => self.expire = Some(i64::from(c.i32_le()?) * 1000),
            RDB_OPCODE_IDLE => self.idle = Some(c.length("IDLE seconds")?),
            RDB_OPCODE_FREQ => self.freq = Some(c.u8()?),
            // 243 is Valkey's SLOT_IMPORT in `VALKEY` files: only the magic tells them apart.
            RDB_OPCODE_KEY_META if self.version.has_key_meta() => {
                let classes = key_meta_block(c)?;
                self.key_meta_seen += classes.len() as u64;
                self.key_meta = classes;
            }
            RDB_OPCODE_MODULE_AUX => out.push(module_aux(c, at)?),
            RDB_OPCODE_FUNCTION2 => {
                let code = c.string_bytes()?;
                out.push(Event::Function { code });
            }
            RDB_OPCODE_FUNCTION_PRE_GA => out.push(function_pre_ga(c)?),
            RDB_OPCODE_EOF => {
                // The CRC64 after the EOF opcode came with RDB 5; older files end here.
                self.top = if self.version.number() >= 5 {
                    Top::Checksum
                } else {
                    Top::Done
                };
                return Ok(Action::EofOpcode);
            }
            t if self.known_type(t) => return self.key_start(c, out, t),
            t => return Err(PErr::Fail(self.unknown_record(c.offset_at(at), t))),
        }
        Ok(Action::None)
    }

    /// A key record after its type byte: the name, with everything the opcodes before it
    /// said about the key.
    fn key_start(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, t: u8) -> P<Action> {
        let key = c.string_copy()?;
        // Kept for `Truncated` errors: a file cut inside a value names the key it hit.
        self.cur_key = key.clone();
        out.push(Event::KeyStart(KeyMeta {
            db: self.db,
            key,
            rdb_type: t,
            expire_at_ms: self.expire.take(),
            idle: self.idle.take(),
            freq: self.freq.take(),
            meta_classes: std::mem::take(&mut self.key_meta),
        }));
        self.begin_value(t);
        self.top = Top::Value;
        Ok(Action::BeginValue)
    }

    /// The error for a record byte that is neither an opcode nor a type of this flavor.
    /// A type a newer server writes gets its own message (what it is, who writes it),
    /// because "unknown type" would send the operator looking for a corrupt file. Bytes
    /// below the lowest opcode can only be type ids, the rest only opcodes.
    fn unknown_record(&self, offset: u64, t: u8) -> RdbError {
        if let Some(refused) = self.refusal(offset, t) {
            return refused;
        }
        if t < RDB_OPCODE_SLOT_IMPORT {
            RdbError::UnknownType {
                offset,
                rdb_type: t,
            }
        } else {
            RdbError::UnknownOpcode { offset, opcode: t }
        }
    }
}

/// `RESIZEDB` (RDB 7, Redis 3.2+): hints for sizing the loader's hash tables. A file whose
/// hints are wrong still loads, so they are passed on, never checked.
fn resize_db(c: &mut Cursor<'_>) -> P<Event> {
    let db_size = c.length("RESIZEDB db size")?;
    let expires_size = c.length("RESIZEDB expires size")?;
    Ok(Event::ResizeDb {
        db_size,
        expires_size,
    })
}

/// `SLOT_INFO` (cluster nodes): a slot's key and expire counts, hints like RESIZEDB's.
fn slot_info(c: &mut Cursor<'_>) -> P<Event> {
    let slot = c.length("SLOT_INFO slot")?;
    let keys = c.length("SLOT_INFO key count")?;
    let expires = c.length("SLOT_INFO expires count")?;
    Ok(Event::SlotInfo {
        slot,
        keys,
        expires,
    })
}

/// `MODULE_AUX` (RDB 9, Redis 5.0+): a module's global data. The module's values are
/// tagged (`RDB_MODULE_OPCODE_*`), so they can be stepped over without the module and
/// handed on as they are; only the module could make sense of them.
fn module_aux(c: &mut Cursor<'_>, at: usize) -> P<Event> {
    let module_id = c.length("MODULE_AUX module id")?;
    let op_at = c.pos;
    let when_op = c.length("MODULE_AUX when opcode")?;
    // Redis's loader refuses any other when-opcode too: past a wrong one, the tagged
    // values would be read out of step and the error would point somewhere later.
    if when_op != RDB_MODULE_OPCODE_UINT {
        return c.fail(op_at, "MODULE_AUX when-opcode 2 (UINT)");
    }
    let when = c.length("MODULE_AUX when")?;
    while !module_op(c)? {}
    // Copied for the reason a key's name is (see `Cursor::string_copy`).
    let raw = Bytes::copy_from_slice(c.slice(at + 1, c.pos));
    Ok(Event::ModuleAux {
        module_id,
        when,
        raw,
    })
}

/// `FUNCTION_PRE_GA`: a function library as Redis 7.0-rc1/rc2 wrote it.
fn function_pre_ga(c: &mut Cursor<'_>) -> P<Event> {
    // The release candidates kept the library's name and engine beside its body; GA
    // servers need them in the body's `#!` line, and build it exactly so when they load
    // such a file (the description has no place there and is dropped).
    let name = c.string_bytes()?;
    let engine = c.string_bytes()?;
    if c.length("FUNCTION has-description flag")? != 0 {
        c.skip_string()?;
    }
    let body = c.string_bytes()?;
    Ok(Event::Function {
        code: shebang_library(&name, &engine, &body).into(),
    })
}

/// The GA form of a pre-GA library: `#!<engine> name=<name>`, a newline, the body.
fn shebang_library(name: &[u8], engine: &[u8], body: &[u8]) -> Vec<u8> {
    let mut code = Vec::with_capacity(body.len() + name.len() + engine.len() + 10);
    code.extend_from_slice(b"#!");
    code.extend_from_slice(engine);
    code.extend_from_slice(b" name=");
    code.extend_from_slice(name);
    code.push(b'\n');
    code.extend_from_slice(body);
    code
}

// ---- values: strings and member-by-member collections ------------------------------------

impl Parser {
    /// One unit of the current value; `Ok(true)` when the value is complete.
    fn value_step(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        match self.vs {
            VState::Start => self.value_start(c, out),
            VState::StrPieces(left) => self.string_piece(c, out, left),
            VState::Items(kind, left) => {
                self.item(c, out, kind)?;
                // Never 0 here: a value with no members ends at its header (`items_start`),
                // and so does every counted state below.
                let left = left - 1;
                self.vs = VState::Items(kind, left);
                Ok(left == 0)
            }
            VState::StreamNodes(left) => self.stream_nodes(c, out, left),
            VState::StreamMeta => self.stream_meta(c, out),
            VState::GroupHdr(groups) => self.group_hdr(c, groups),
            VState::Pel(groups, left) => self.group_pel(c, groups, left),
            VState::ConsumersHdr(groups) => self.consumers_hdr(c, out, groups),
            VState::Consumer(groups, left) => self.consumer(c, out, groups, left),
            VState::ConsumerPel(groups, consumers_left, left) => {
                self.consumer_pel(c, out, groups, consumers_left, left)
            }
            VState::NackHdr(groups) => self.nack_hdr(c, out, groups),
            VState::Nack(groups, left) => self.nack(c, out, groups, left),
            VState::IdmpHdr => self.idmp_hdr(c, out),
            VState::IdmpProducer(left) => self.idmp_producer(c, left),
            VState::IdmpEntry(producers, left) => self.idmp_entry(c, out, producers, left),
            VState::IdmpStats => self.idmp_stats(c, out),
            // A module value is opaque: its tagged values are only walked to find its end,
            // and the bytes are handed out whole (see `Decoder::apply`).
            VState::ModuleOps => module_op(c),
        }
    }

    /// The first unit of a value: its header, or the whole value for single-blob types.
    fn value_start(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let t = self.rdb_type;
        match t {
            RDB_TYPE_STRING => self.string_start(c, out),
            RDB_TYPE_STREAM_LISTPACKS
            | RDB_TYPE_STREAM_LISTPACKS_2
            | RDB_TYPE_STREAM_LISTPACKS_3
            | RDB_TYPE_STREAM_LISTPACKS_4
            | RDB_TYPE_STREAM_LISTPACKS_5 => self.stream_start(c, t),
            RDB_TYPE_MODULE_2 => {
                self.module_id = c.length("module id")?;
                self.vs = VState::ModuleOps;
                Ok(false)
            }
            RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => {
                // GA (25) leads with the key's smallest field expiry, which the 7.4
                // release candidates (23) did not write.
                if t == RDB_TYPE_HASH_LISTPACK_EX {
                    c.i64_le()?; // min expire: redundant with the per-field times
                }
                self.blob(c, out, t)?;
                Ok(true)
            }
            RDB_TYPE_HASH_ZIPMAP
            | RDB_TYPE_LIST_ZIPLIST
            | RDB_TYPE_SET_INTSET
            | RDB_TYPE_ZSET_ZIPLIST
            | RDB_TYPE_HASH_ZIPLIST
            | RDB_TYPE_HASH_LISTPACK
            | RDB_TYPE_ZSET_LISTPACK
            | RDB_TYPE_SET_LISTPACK => {
                self.blob(c, out, t)?;
                Ok(true)
            }
            _ => self.items_start(c, t),
        }
    }

    /// A string value (type 0). In raw mode it is only stepped over (its bytes stay in the
    /// buffer). A plain string of any size continues in `StrPieces` units, so a 512 MB
    /// value never has to be buffered whole.
    fn string_start(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let at = c.pos;
        if !self.elements {
            c.skip_string()?;
            return Ok(true);
        }
        match c.string_hdr()? {
            // `rdbTryIntegerEncoding` stored decimal text as a number; the text is the value.
            StrHdr::Int(i) => {
                let s = itoa::Buffer::new().format(i).as_bytes().to_vec();
                out.push(Event::Elements(Elements::StringPart(Bytes::from(s))));
                Ok(true)
            }
            // An LZF string is one unit: the compressed bytes must all be buffered before
            // they can be expanded. The expansion is cut into the same pieces a plain string
            // gets, so a consumer never sees the difference.
            StrHdr::Lzf { clen, ulen } => {
                let comp = c.take(clen)?;
                let ulen = usize::try_from(ulen).unwrap_or(usize::MAX);
                let v = crate::lzf::decompress(comp, ulen)
                    .map_err(|e| PErr::Fail(RdbError::invalid(c.offset_at(at), e.to_string())))?;
                let v = Bytes::from(v);
                let mut i = 0;
                while i < v.len() {
                    let end = (i + MAX_CHUNK_BYTES).min(v.len());
                    out.push(Event::Elements(Elements::StringPart(v.slice(i..end))));
                    i = end;
                }
                Ok(true)
            }
            // One empty part, so an empty string still has content to write (`SET k ""`);
            // a value without any element chunk would read as a missing one.
            StrHdr::Raw(0) => {
                out.push(Event::Elements(Elements::StringPart(Bytes::new())));
                Ok(true)
            }
            StrHdr::Raw(n) => {
                self.vs = VState::StrPieces(n);
                Ok(false)
            }
        }
    }

    /// The next piece of a plain string: `MAX_CHUNK_BYTES`, or what is left.
    fn string_piece(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, left: u64) -> P<bool> {
        let n = left.min(MAX_CHUNK_BYTES as u64);
        let piece = c.take_bytes(n)?;
        out.push(Event::Elements(Elements::StringPart(piece)));
        let left = left - n;
        self.vs = VState::StrPieces(left);
        Ok(left == 0)
    }

    /// The header of a collection stored member by member: the plain encodings servers
    /// write once a collection outgrows its compact one, the quicklists of Redis 3.2+, and
    /// the hashes with per-field TTLs.
    fn items_start(&mut self, c: &mut Cursor<'_>, t: u8) -> P<bool> {
        let at = c.pos;
        let (kind, what) = match t {
            RDB_TYPE_LIST => (ItemKind::List, "list length"),
            RDB_TYPE_SET => (ItemKind::Set, "set size"),
            RDB_TYPE_ZSET => (ItemKind::ZSet, "zset size"),
            RDB_TYPE_ZSET_2 => (ItemKind::ZSet2, "zset size"),
            RDB_TYPE_HASH => (ItemKind::Hash, "hash size"),
            RDB_TYPE_LIST_QUICKLIST => (ItemKind::Quicklist, "quicklist node count"),
            RDB_TYPE_LIST_QUICKLIST_2 => (ItemKind::Quicklist2, "quicklist node count"),
            RDB_TYPE_HASH_METADATA => {
                let min_expire = c.i64_le()?;
                (ItemKind::HashMetadata { min_expire }, "hash size")
            }
            // Id 22 is Valkey 9's HASH_2 in `VALKEY` files, Redis 7.4-RC's HASH_METADATA
            // in `REDIS` files.
            RDB_TYPE_HASH_2 if self.version.is_valkey() => (ItemKind::ValkeyHash2, "hash size"),
            RDB_TYPE_HASH_METADATA_PRE_GA => (ItemKind::HashMetadataPreGa, "hash size"),
            _ => {
                return Err(PErr::Fail(RdbError::UnknownType {
                    offset: c.offset_at(at),
                    rdb_type: t,
                }))
            }
        };
        let n = c.length(what)?;
        self.hint = match kind {
            // n counts nodes, not members
            ItemKind::Quicklist | ItemKind::Quicklist2 => 128,
            _ => usize::try_from(n).unwrap_or(MAX_CHUNK_ITEMS),
        };
        self.vs = VState::Items(kind, n);
        Ok(n == 0)
    }

    /// One member of a member-by-member collection (the per-member hot path).
    #[inline]
    fn item(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, kind: ItemKind) -> P<()> {
        let el = self.elements;
        match kind {
            ItemKind::List => {
                let b = string_or_skip(c, el)?;
                if el {
                    self.push_list(out, b);
                }
            }
            ItemKind::Set => {
                let b = string_or_skip(c, el)?;
                if el {
                    self.push_set(out, b);
                }
            }
            ItemKind::ZSet | ItemKind::ZSet2 => {
                let m = string_or_skip(c, el)?;
                let score = match kind {
                    ItemKind::ZSet => text_score(c)?,
                    // ZSET_2 (RDB 8, Redis 4.0+): the binary double, exact, little-endian.
                    _ => c.f64_le()?,
                };
                if el {
                    self.push_zset(out, m, score);
                }
            }
            ItemKind::Hash
            | ItemKind::HashMetadata { .. }
            | ItemKind::HashMetadataPreGa
            | ItemKind::ValkeyHash2 => self.hash_item(c, out, kind)?,
            ItemKind::Quicklist => self.quicklist_node(c, out)?,
            ItemKind::Quicklist2 => self.quicklist2_node(c, out)?,
        }
        Ok(())
    }

    /// One field of a hash stored field by field. The field-TTL layouts differ in where
    /// the TTL sits and how it is counted, see [`field_expiry`].
    #[inline]
    fn hash_item(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, kind: ItemKind) -> P<()> {
        let el = self.elements;
        let (field, value, expire_at_ms) = match kind {
            ItemKind::HashMetadata { .. } | ItemKind::HashMetadataPreGa => {
                let ttl = c.length("hash field ttl")?;
                let field = string_or_skip(c, el)?;
                let value = string_or_skip(c, el)?;
                (field, value, field_expiry(kind, ttl))
            }
            ItemKind::ValkeyHash2 => {
                let field = string_or_skip(c, el)?;
                let value = string_or_skip(c, el)?;
                // Valkey's EXPIRY_NONE (-1) marks a field without TTL.
                let exp = c.i64_le()?;
                (field, value, (exp != -1).then_some(exp))
            }
            _ => {
                let field = string_or_skip(c, el)?;
                let value = string_or_skip(c, el)?;
                (field, value, None)
            }
        };
        if el {
            self.push_hash(
                out,
                HashField {
                    field,
                    value,
                    expire_at_ms,
                },
            );
        }
        Ok(())
    }

    /// A type-14 quicklist node (Redis 3.2 to 6.2): one ziplist of list items. A node the
    /// server kept LZF-compressed (`list-compress-depth`) is an LZF string here, which the
    /// cursor expands; either way one node is one unit.
    fn quicklist_node(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<()> {
        let at = c.pos;
        if !self.elements {
            return c.skip_string();
        }
        let data = c.string_bytes()?;
        blobs::ziplist(&data)
            .and_then(|it| self.push_list_items(out, &data, it))
            .map_err(|e| container_error(c.offset_at(at), "ziplist", e))
    }

    /// A type-18 quicklist node (Redis 7.0+): a container code, then a listpack (PACKED), or
    /// one element too big for a listpack stored as it is (PLAIN).
    fn quicklist2_node(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<()> {
        let at = c.pos;
        let container = c.length("quicklist container")?;
        // No server writes another code; reading on would take a length for a listpack.
        if !matches!(
            container,
            QUICKLIST_NODE_CONTAINER_PLAIN | QUICKLIST_NODE_CONTAINER_PACKED
        ) {
            return c.fail(at, "quicklist container 1 (PLAIN) or 2 (PACKED)");
        }
        let at = c.pos;
        if !self.elements {
            return c.skip_string();
        }
        let data = c.string_bytes()?;
        if container == QUICKLIST_NODE_CONTAINER_PLAIN {
            self.push_list(out, data);
            return Ok(());
        }
        blobs::listpack(&data)
            .and_then(|it| self.push_list_items(out, &data, it))
            .map_err(|e| container_error(c.offset_at(at), "listpack", e))
    }
}

/// A string that only elements mode keeps; raw mode only steps over it, since the whole
/// value's bytes go out as one slice anyway.
#[inline]
fn string_or_skip(c: &mut Cursor<'_>, keep: bool) -> P<Bytes> {
    if keep {
        c.string_bytes()
    } else {
        c.skip_string().map(|()| Bytes::new())
    }
}

/// A type-3 zset score (RDB < 8, before Redis 4.0 moved to binary doubles): decimal text
/// after a length byte. `rdbSaveDoubleValue` uses the length values 253/254/255, which
/// `%.17g` text never reaches, for NaN, +inf and -inf.
fn text_score(c: &mut Cursor<'_>) -> P<f64> {
    let at = c.pos;
    Ok(match c.u8()? {
        253 => f64::NAN,
        254 => f64::INFINITY,
        255 => f64::NEG_INFINITY,
        n => {
            let txt = c.take(u64::from(n))?;
            match blobs::parse_double(txt) {
                Some(d) => d,
                None => return c.fail(at, "a decimal zset score"),
            }
        }
    })
}

/// A field's absolute expiry (Unix ms) from its stored TTL; 0 means "no TTL" in both
/// layouts. Redis 7.4 GA (type 24) stores it relative to the key's smallest field expiry,
/// plus one to keep 0 free, so the numbers stay small in the length encoding; the 7.4
/// release candidates (type 22 in `REDIS` files) stored it absolute.
fn field_expiry(kind: ItemKind, ttl: u64) -> Option<i64> {
    match kind {
        _ if ttl == 0 => None,
        ItemKind::HashMetadata { min_expire } => {
            Some((ttl as i64).wrapping_add(min_expire).wrapping_sub(1))
        }
        _ => Some(ttl as i64),
    }
}

/// A container that does not parse, as an error at the container's offset. Cold: it
/// keeps the formatting out of the per-member loops.
#[cold]
fn container_error(offset: u64, what: &str, e: &str) -> PErr {
    PErr::Fail(RdbError::invalid(offset, format!("a valid {what}: {e}")))
}

// ---- values: single-container encodings ---------------------------------------------------

/// What a container iterator yields: an element, or why the container is corrupt.
type ItemResult<'a> = Result<Item<'a>, &'static str>;

impl Parser {
    /// A value stored as one encoded container string: what servers write while a
    /// collection is small (ziplists until Redis 6.2, listpacks from 7.0, intsets for
    /// integer sets, zipmaps in Redis 2.4 and older). The container is one unit: it is an
    /// RDB string, often LZF-compressed, so none of it can be read before all of it is here.
    fn blob(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, t: u8) -> P<()> {
        let at = c.pos;
        if !self.elements {
            return c.skip_string();
        }
        let data = c.string_bytes()?;
        self.hint = container_hint(t, &data);
        let (what, parsed) = match t {
            RDB_TYPE_SET_INTSET => (
                "intset",
                blobs::intset(&data).map(|ints| {
                    for i in ints {
                        self.push_set(out, Item::Int(i).to_bytes());
                    }
                }),
            ),
            RDB_TYPE_HASH_ZIPMAP => ("zipmap", self.push_zipmap(out, &data)),
            RDB_TYPE_LIST_ZIPLIST => (
                "ziplist",
                blobs::ziplist(&data).and_then(|it| self.push_list_items(out, &data, it)),
            ),
            RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_HASH_ZIPLIST => (
                "ziplist",
                blobs::ziplist(&data).and_then(|it| self.push_pairs(out, &data, t, it)),
            ),
            RDB_TYPE_HASH_LISTPACK | RDB_TYPE_ZSET_LISTPACK => (
                "listpack",
                blobs::listpack(&data).and_then(|it| self.push_pairs(out, &data, t, it)),
            ),
            RDB_TYPE_SET_LISTPACK => (
                "listpack",
                blobs::listpack(&data).and_then(|it| self.push_set_items(out, &data, it)),
            ),
            RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => (
                "listpack",
                blobs::listpack(&data).and_then(|it| self.push_field_triples(out, &data, it)),
            ),
            _ => return c.fail(at, "a container type"),
        };
        parsed.map_err(|e| container_error(c.offset_at(at), what, e))
    }

    /// The fields of a zipmap (type 9: Redis 2.4 and older, before field TTLs existed).
    fn push_zipmap(&mut self, out: &mut Vec<Event>, data: &Bytes) -> Result<(), &'static str> {
        for (f, v) in blobs::zipmap(data)? {
            self.push_hash(
                out,
                HashField {
                    field: Bytes::copy_from_slice(f),
                    value: Bytes::copy_from_slice(v),
                    expire_at_ms: None,
                },
            );
        }
        Ok(())
    }

    /// Every element as a list item (list ziplists, quicklist nodes).
    #[inline]
    fn push_list_items<'a>(
        &mut self,
        out: &mut Vec<Event>,
        data: &'a Bytes,
        items: impl Iterator<Item = ItemResult<'a>>,
    ) -> Result<(), &'static str> {
        for it in items {
            self.push_list(out, item_bytes(data, it?));
        }
        Ok(())
    }

    /// Every element as a set member (set listpacks, Redis 7.2+).
    fn push_set_items<'a>(
        &mut self,
        out: &mut Vec<Event>,
        data: &'a Bytes,
        items: impl Iterator<Item = ItemResult<'a>>,
    ) -> Result<(), &'static str> {
        for it in items {
            self.push_set(out, item_bytes(data, it?));
        }
        Ok(())
    }

    /// A zset's (member, score) or a hash's (field, value) pairs, stored as consecutive
    /// entries: an odd count means the container was cut or corrupted.
    #[inline]
    fn push_pairs<'a>(
        &mut self,
        out: &mut Vec<Event>,
        data: &'a Bytes,
        t: u8,
        mut items: impl Iterator<Item = ItemResult<'a>>,
    ) -> Result<(), &'static str> {
        while let Some(a) = items.next() {
            let a = a?;
            let b = items.next().unwrap_or(Err("an even number of entries"))?;
            self.pair(out, data, t, a, b)?;
        }
        Ok(())
    }

    /// Hash fields with TTLs in one listpack (types 25 and 23, Redis 7.4+): field, value,
    /// absolute expiry in ms, where 0 stands for "no TTL" (`HASH_LP_NO_TTL`).
    fn push_field_triples<'a>(
        &mut self,
        out: &mut Vec<Event>,
        data: &'a Bytes,
        mut items: impl Iterator<Item = ItemResult<'a>>,
    ) -> Result<(), &'static str> {
        while let Some(f) = items.next() {
            let f = f?;
            let mut next = || items.next().unwrap_or(Err("field, value, expiry triples"));
            let v = next()?;
            let ttl = next()?.as_i64().ok_or("an integer field expiry")?;
            self.push_hash(
                out,
                HashField {
                    field: item_bytes(data, f),
                    value: item_bytes(data, v),
                    expire_at_ms: (ttl != 0).then_some(ttl),
                },
            );
        }
        Ok(())
    }

    /// Two consecutive container entries of a zset (member, score) or hash (field, value).
    fn pair(
        &mut self,
        out: &mut Vec<Event>,
        blob: &Bytes,
        t: u8,
        a: Item<'_>,
        b: Item<'_>,
    ) -> Result<(), &'static str> {
        if matches!(t, RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_ZSET_LISTPACK) {
            // Scores are stored as text, or as an integer when they are whole numbers.
            let score = b.as_f64().ok_or("a numeric score")?;
            self.push_zset(out, item_bytes(blob, a), score);
        } else {
            self.push_hash(
                out,
                HashField {
                    field: item_bytes(blob, a),
                    value: item_bytes(blob, b),
                    expire_at_ms: None,
                },
            );
        }
        Ok(())
    }
}

/// How many members a container holds, from its header, to size the first chunk's vector:
/// listpacks keep a u16 count at offset 4, ziplists at 8, intsets a u32 at 4. Pairs and
/// triples hold two or three entries per member. A saturated u16 (65535, "unknown, walk
/// to count") only makes the first chunk's vector as big as a chunk may get.
fn container_hint(t: u8, data: &[u8]) -> usize {
    let at_le = |i: usize, n: usize| -> usize {
        data.get(i..i + n)
            .map(|b| b.iter().rev().fold(0usize, |a, &x| a << 8 | usize::from(x)))
            .unwrap_or(16)
    };
    match t {
        RDB_TYPE_SET_INTSET => at_le(4, 4),
        RDB_TYPE_LIST_ZIPLIST => at_le(8, 2),
        RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_HASH_ZIPLIST => at_le(8, 2) / 2,
        RDB_TYPE_SET_LISTPACK => at_le(4, 2),
        RDB_TYPE_HASH_LISTPACK | RDB_TYPE_ZSET_LISTPACK => at_le(4, 2) / 2,
        RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => at_le(4, 2) / 3,
        _ => 16,
    }
}

// ---- values: streams ------------------------------------------------------------------------
//
// A stream is written as: its listpack nodes, its metadata, then per consumer group a
// header, the group PEL (pending entries with delivery data), the consumers each with the
// ids it owns, and (type 27) the NACK zone; type 26/27 end with the IDMP state. Each of
// these is its own unit, so a stream with millions of pending entries never has to be
// buffered whole; only the group being read is held (its PEL and consumers), because a
// pending entry's owner is known only once the consumers are read.

impl Parser {
    /// The stream's header: how many listpack nodes follow.
    fn stream_start(&mut self, c: &mut Cursor<'_>, t: u8) -> P<bool> {
        self.hint = 64;
        self.stream_v = stream_version(t);
        let n = c.length("stream listpack count")?;
        self.vs = if n == 0 {
            VState::StreamMeta
        } else {
            VState::StreamNodes(n)
        };
        Ok(false)
    }

    /// One node: the master id (the rax key) and the listpack holding its entries.
    fn stream_nodes(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, left: u64) -> P<bool> {
        let at = c.pos;
        if self.elements {
            let master = c.string()?;
            let lp = c.string_bytes()?;
            self.stream_node(out, &master, &lp)
                .map_err(|e| container_error(c.offset_at(at), "stream node", e))?;
        } else {
            c.skip_string()?;
            c.skip_string()?;
        }
        let left = left - 1;
        self.vs = if left == 0 {
            VState::StreamMeta
        } else {
            VState::StreamNodes(left)
        };
        Ok(false)
    }

    /// One listpack node of a stream: the entries it holds, tombstones skipped. Ids are
    /// stored as deltas from the node's master id, which keeps them small listpack ints.
    fn stream_node(
        &mut self,
        out: &mut Vec<Event>,
        master: &[u8],
        lp: &Bytes,
    ) -> Result<(), &'static str> {
        // The rax key: ms and seq big-endian, so that byte order is id order.
        if master.len() != 16 {
            return Err("a 16-byte master id");
        }
        let (ms, seq) = master.split_at(8);
        let master = StreamId {
            ms: u64::from_be_bytes(ms.try_into().unwrap_or_default()),
            seq: u64::from_be_bytes(seq.try_into().unwrap_or_default()),
        };
        let mut it = blobs::listpack(lp)?;
        let master_fields = master_fields(&mut it, lp)?;
        while let Some(flags) = it.next() {
            let flags = lp_int(flags?)?;
            let entry = stream_entry(&mut it, lp, master, flags, &master_fields)?;
            // XDEL marks an entry deleted in place rather than rewriting its node; such a
            // tombstone is no entry of the stream.
            if flags & STREAM_ITEM_FLAG_DELETED == 0 {
                self.push_entry(out, entry);
            }
        }
        Ok(())
    }

    /// The stream's metadata after its nodes; RDB stream v2 (type 19, Redis 7.0+) added
    /// the first id, the max deleted id and the entries-added counter, which XINFO and the
    /// consumer groups' lag need.
    fn stream_meta(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let length = c.length("stream length")?;
        let last_id = stream_id(c, "stream last id")?;
        let (mut first_id, mut max_deleted_id, mut entries_added) = (None, None, None);
        if self.stream_v >= 2 {
            first_id = Some(stream_id(c, "stream first id")?);
            max_deleted_id = Some(stream_id(c, "stream max deleted id")?);
            entries_added = Some(c.length("stream entries added")?);
        }
        let groups = c.length("stream consumer group count")?;
        if self.elements {
            self.flush(out);
            out.push(Event::Elements(Elements::StreamMeta(StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_id,
                entries_added,
            })));
        }
        self.vs = VState::GroupHdr(groups);
        Ok(groups == 0 && self.after_groups())
    }

    /// A consumer group's header: name, last delivered id, entries read (v2+), PEL size.
    fn group_hdr(&mut self, c: &mut Cursor<'_>, groups: u64) -> P<bool> {
        let name = string_or_skip(c, self.elements)?;
        let last_id = stream_id(c, "group last id")?;
        let entries_read = if self.stream_v >= 2 {
            // SCG_INVALID_ENTRIES_READ (-1, written as a 64-bit length): the server did
            // not know how far the group had read, and `None` says just that.
            Some(c.length("group entries read")?).filter(|&n| n != u64::MAX)
        } else {
            None
        };
        let pel = c.length("group PEL size")?;
        if self.elements {
            self.group = Some(GroupCtx {
                name,
                last_id,
                entries_read,
                pel: Vec::new(),
                consumers: Vec::new(),
            });
        }
        self.vs = if pel == 0 {
            VState::ConsumersHdr(groups)
        } else {
            VState::Pel(groups, pel)
        };
        Ok(false)
    }

    /// One entry of the group PEL: raw 16-byte id, delivery time, delivery count.
    fn group_pel(&mut self, c: &mut Cursor<'_>, groups: u64, left: u64) -> P<bool> {
        let at = c.pos;
        let id = c.stream_id_raw()?;
        let delivery_time_ms = c.i64_le()?;
        let delivery_count = c.length("PEL delivery count")?;
        if let Some(g) = &mut self.group {
            // Written in rax (id) order. The consumers' ids are looked up by binary search,
            // so the order is checked rather than trusted: out of order, a lookup could
            // miss and a valid file would be refused, or a corrupt one pass.
            if g.pel.last().is_some_and(|l| l.id >= id) {
                return c.fail(at, "group PEL ids in ascending order");
            }
            g.pel.push(PelSlot {
                id,
                delivery_time_ms,
                delivery_count,
                owner: None,
                nacked: false,
            });
        }
        let left = left - 1;
        self.vs = if left == 0 {
            VState::ConsumersHdr(groups)
        } else {
            VState::Pel(groups, left)
        };
        Ok(false)
    }

    /// The group's consumer count.
    fn consumers_hdr(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, groups: u64) -> P<bool> {
        let n = c.length("consumer count")?;
        if n == 0 {
            return Ok(self.consumers_done(out, groups));
        }
        self.vs = VState::Consumer(groups, n);
        Ok(false)
    }

    /// One consumer: name, seen time, active time (v3, Redis 7.2+), how many ids it owns.
    fn consumer(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<Event>,
        groups: u64,
        left: u64,
    ) -> P<bool> {
        let name = string_or_skip(c, self.elements)?;
        let seen_time_ms = c.i64_le()?;
        let active_time_ms = if self.stream_v >= 3 {
            Some(c.i64_le()?)
        } else {
            None
        };
        let npel = c.length("consumer PEL size")?;
        if let Some(g) = &mut self.group {
            g.consumers.push(Consumer {
                name,
                seen_time_ms,
                active_time_ms,
                pending_count: npel,
            });
        }
        let left = left - 1;
        if npel > 0 {
            self.vs = VState::ConsumerPel(groups, left, npel);
            Ok(false)
        } else if left == 0 {
            Ok(self.consumers_done(out, groups))
        } else {
            self.vs = VState::Consumer(groups, left);
            Ok(false)
        }
    }

    /// One id the last consumer owns. Only the id is stored: the entry and its delivery
    /// data are the group PEL's (a server shares one record between the two), and Redis
    /// refuses a file whose consumer names an id the group PEL lacks, as this does.
    fn consumer_pel(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<Event>,
        groups: u64,
        consumers_left: u64,
        left: u64,
    ) -> P<bool> {
        let at = c.pos;
        let id = c.stream_id_raw()?;
        if let Some(g) = &mut self.group {
            let owner = g.consumers.len().saturating_sub(1);
            match g.slot(id) {
                Some(slot) => slot.owner = Some(owner),
                None => return c.fail(at, format!("consumer PEL id {id} in the group PEL")),
            }
        }
        let left = left - 1;
        if left > 0 {
            self.vs = VState::ConsumerPel(groups, consumers_left, left);
            Ok(false)
        } else if consumers_left == 0 {
            Ok(self.consumers_done(out, groups))
        } else {
            self.vs = VState::Consumer(groups, consumers_left);
            Ok(false)
        }
    }

    /// The size of a type-27 group's NACK zone (Redis 8.8+).
    fn nack_hdr(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, groups: u64) -> P<bool> {
        let n = c.length("NACK zone size")?;
        if n == 0 {
            return Ok(self.group_done(out, groups));
        }
        self.vs = VState::Nack(groups, n);
        Ok(false)
    }

    /// One NACKed id. The zone lists ids of the group PEL (their delivery data is there).
    fn nack(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<Event>,
        groups: u64,
        left: u64,
    ) -> P<bool> {
        let at = c.pos;
        let id = c.stream_id_raw()?;
        if let Some(g) = &mut self.group {
            match g.slot(id) {
                Some(slot) => slot.nacked = true,
                None => return c.fail(at, format!("NACK zone id {id} in the group PEL")),
            }
        }
        let left = left - 1;
        if left == 0 {
            return Ok(self.group_done(out, groups));
        }
        self.vs = VState::Nack(groups, left);
        Ok(false)
    }

    /// The last group is done: a type 26/27 stream still has its IDMP state to come.
    fn after_groups(&mut self) -> bool {
        if self.stream_v >= 4 {
            self.vs = VState::IdmpHdr;
            false
        } else {
            true
        }
    }

    /// A group's consumers are read: type 27 has the NACK zone next, older types end here.
    fn consumers_done(&mut self, out: &mut Vec<Event>, groups: u64) -> bool {
        if self.stream_v >= 5 {
            self.vs = VState::NackHdr(groups);
            false
        } else {
            self.group_done(out, groups)
        }
    }

    /// A group's consumers are all read: emit it. Returns true if it was the last group.
    fn group_done(&mut self, out: &mut Vec<Event>, groups: u64) -> bool {
        if let Some(g) = self.group.take() {
            self.flush(out);
            let names: Vec<Bytes> = g.consumers.iter().map(|c| c.name.clone()).collect();
            let pending_total = g.pel.len() as u64;
            let mut entries = g.pel.into_iter().map(|p| PendingEntry {
                id: p.id,
                delivery_time_ms: p.delivery_time_ms,
                delivery_count: p.delivery_count,
                consumer: p
                    .owner
                    .and_then(|i| names.get(i).cloned())
                    .unwrap_or_default(),
                nacked: p.nacked,
            });
            let first: Vec<PendingEntry> = entries.by_ref().take(MAX_CHUNK_ITEMS).collect();
            out.push(Event::Elements(Elements::StreamGroup(StreamGroup {
                name: g.name.clone(),
                last_id: g.last_id,
                entries_read: g.entries_read,
                pending_total,
                pending: first,
                consumers: g.consumers,
            })));
            loop {
                let chunk: Vec<PendingEntry> = entries.by_ref().take(MAX_CHUNK_ITEMS).collect();
                if chunk.is_empty() {
                    break;
                }
                out.push(Event::Elements(Elements::StreamPending {
                    group: g.name.clone(),
                    entries: chunk,
                }));
            }
        }
        let left = groups.saturating_sub(1);
        self.vs = VState::GroupHdr(left);
        left == 0 && self.after_groups()
    }

    /// The IDMP header of a type 26/27 stream (Redis 8.6+): how long ids are remembered,
    /// how many per producer, and the producer count.
    fn idmp_hdr(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let duration = c.length("IDMP duration")?;
        let max_entries = c.length("IDMP max entries")?;
        let producers = c.length("IDMP producer count")?;
        if self.elements {
            self.flush(out);
            self.idmp = Some(IdmpAcc {
                duration,
                max_entries,
                producers: Vec::new(),
                records: 0,
            });
        }
        self.vs = if producers == 0 {
            VState::IdmpStats
        } else {
            VState::IdmpProducer(producers)
        };
        Ok(false)
    }

    /// One producer: its id and how many records follow.
    fn idmp_producer(&mut self, c: &mut Cursor<'_>, left: u64) -> P<bool> {
        let pid = string_or_skip(c, self.elements)?;
        let n = c.length("IDMP producer record count")?;
        if let Some(a) = &mut self.idmp {
            a.producers.push(IdmpProducer {
                pid,
                entries: Vec::new(),
            });
        }
        self.vs = match (n, left - 1) {
            (0, 0) => VState::IdmpStats,
            (0, rest) => VState::IdmpProducer(rest),
            (n, _) => VState::IdmpEntry(left, n),
        };
        Ok(false)
    }

    /// One record of the current producer: its idempotent id and the entry id it made.
    fn idmp_entry(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<Event>,
        producers: u64,
        left: u64,
    ) -> P<bool> {
        let iid = string_or_skip(c, self.elements)?;
        let id = stream_id(c, "IDMP record stream id")?;
        let left = left - 1;
        if let Some(a) = &mut self.idmp {
            if let Some(p) = a.producers.last_mut() {
                p.entries.push(IdmpEntry { iid, id });
            }
            a.records += 1;
            if a.records >= MAX_CHUNK_ITEMS {
                let chunk = a.take_chunk(left > 0);
                out.push(Event::Elements(Elements::StreamIdmp(chunk)));
            }
        }
        self.vs = match (left, producers - 1) {
            (0, 0) => VState::IdmpStats,
            (0, rest) => VState::IdmpProducer(rest),
            (left, _) => VState::IdmpEntry(producers, left),
        };
        Ok(false)
    }

    /// The IDMP counters, which end the stream; they go on the last IDMP chunk only.
    fn idmp_stats(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let added = c.length("IDMP iids added")?;
        let duplicates = c.length("IDMP iids duplicates")?;
        if let Some(a) = self.idmp.take() {
            out.push(Event::Elements(Elements::StreamIdmp(StreamIdmp {
                duration: a.duration,
                max_entries: a.max_entries,
                producers: a.producers,
                iids_added: Some(added),
                iids_duplicates: Some(duplicates),
            })));
        }
        Ok(true)
    }
}

/// The stream format version of a stream type: each adds fields to the one before
/// (19: counters, 21: consumer active time, 26: IDMP state, 27: NACK zones).
fn stream_version(t: u8) -> u8 {
    match t {
        RDB_TYPE_STREAM_LISTPACKS => 1,
        RDB_TYPE_STREAM_LISTPACKS_2 => 2,
        RDB_TYPE_STREAM_LISTPACKS_3 => 3,
        RDB_TYPE_STREAM_LISTPACKS_4 => 4,
        _ => 5,
    }
}

/// The next element of a stream node; running out early means the node was cut.
fn lp_next<'a>(it: &mut blobs::Listpack<'a>) -> ItemResult<'a> {
    it.next().unwrap_or(Err("more listpack elements"))
}

/// A stream node's counts, flags and id deltas are integers (a server never writes them
/// as text, but `as_i64` accepts decimal text as `lpGetInteger` would).
fn lp_int(i: Item<'_>) -> Result<i64, &'static str> {
    i.as_i64().ok_or("an integer")
}

/// A stream node's master entry: `count, deleted, n, field…, 0`. Entries flagged
/// SAMEFIELDS reuse these field names, which is how a node of like entries (the usual
/// case: one producer, one schema) stores each name once.
fn master_fields(it: &mut blobs::Listpack<'_>, lp: &Bytes) -> Result<Vec<Bytes>, &'static str> {
    // The counts are the server's bookkeeping; the entries themselves are walked instead.
    let _count = lp_int(lp_next(it)?)?;
    let _deleted = lp_int(lp_next(it)?)?;
    let nfields = lp_int(lp_next(it)?)?;
    let mut fields = Vec::new();
    for _ in 0..nfields.max(0) {
        fields.push(item_bytes(lp, lp_next(it)?));
    }
    if lp_int(lp_next(it)?)? != 0 {
        return Err("the master entry terminator 0");
    }
    Ok(fields)
}

/// One entry of a stream node after its flags: id deltas, fields, and the trailing
/// element count (`lp-count`, which lets the server walk a node backwards for XREVRANGE).
fn stream_entry(
    it: &mut blobs::Listpack<'_>,
    lp: &Bytes,
    master: StreamId,
    flags: i64,
    master_fields: &[Bytes],
) -> Result<StreamEntry, &'static str> {
    let ms_diff = lp_int(lp_next(it)?)?;
    let seq_diff = lp_int(lp_next(it)?)?;
    let mut fields = Vec::new();
    if flags & STREAM_ITEM_FLAG_SAMEFIELDS != 0 {
        for f in master_fields {
            fields.push((f.clone(), item_bytes(lp, lp_next(it)?)));
        }
    } else {
        let n = lp_int(lp_next(it)?)?;
        for _ in 0..n.max(0) {
            let f = item_bytes(lp, lp_next(it)?);
            let v = item_bytes(lp, lp_next(it)?);
            fields.push((f, v));
        }
    }
    let _lp_count = lp_next(it)?;
    // Deltas are unsigned differences stored as int64 (the seq delta is negative once the
    // ms part moved on), so they are added back with wrapping.
    let id = StreamId {
        ms: master.ms.wrapping_add(ms_diff as u64),
        seq: master.seq.wrapping_add(seq_diff as u64),
    };
    Ok(StreamEntry { id, fields })
}

impl GroupCtx {
    /// The group PEL's slot for `id` (the PEL is in ascending id order, see `group_pel`).
    fn slot(&mut self, id: StreamId) -> Option<&mut PelSlot> {
        let i = self.pel.binary_search_by(|p| p.id.cmp(&id)).ok()?;
        self.pel.get_mut(i)
    }
}

impl IdmpAcc {
    /// The records gathered so far as one chunk, leaving the accumulator empty. When the
    /// last producer's records go on (`continued`), it is named again in the next chunk,
    /// so every chunk says whose records it holds.
    fn take_chunk(&mut self, continued: bool) -> StreamIdmp {
        let again = self
            .producers
            .last()
            .filter(|_| continued)
            .map(|p| p.pid.clone());
        let chunk = StreamIdmp {
            duration: self.duration,
            max_entries: self.max_entries,
            producers: std::mem::take(&mut self.producers),
            iids_added: None,
            iids_duplicates: None,
        };
        self.records = 0;
        if let Some(pid) = again {
            self.producers.push(IdmpProducer {
                pid,
                entries: Vec::new(),
            });
        }
        chunk
    }
}

/// A stream id outside the listpacks and PELs (last id, first id, group ids): two lengths,
/// not the 16-byte key, as these are written with `rdbSaveLen`.
fn stream_id(c: &mut Cursor<'_>, what: &str) -> P<StreamId> {
    let ms = c.length(what)?;
    let seq = c.length(what)?;
    Ok(StreamId { ms, seq })
}

/// `RDB_OPCODE_KEY_META`'s body (after the opcode): a class count, then per class the
/// 32-bit class spec and the module's tagged values up to the module EOF marker. Only
/// classes flagged `ALLOW_IGNORE` come back; any other is an error.
pub(crate) fn key_meta_block(c: &mut Cursor<'_>) -> P<Vec<KeyMetaClass>> {
    // Redis registers at most 7 classes (ids 1..=7; 0 is the key's expiry, never written).
    const MAX_CLASSES: u64 = 7;
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let at = c.pos;
    let n = c.length("KEY_META class count")?;
    if n == 0 || n > MAX_CLASSES {
        return c.fail(at, format!("a KEY_META class count of 1..=7 (got {n})"));
    }
    let mut classes = Vec::new();
    for _ in 0..n {
        let spec_at = c.pos;
        // written as raw host-order (little-endian) bytes
        let spec = u32::from_le_bytes(c.array()?);
        let values_at = c.pos;
        while !module_op(c)? {}
        // The name is four 6-bit characters of the set module type names use.
        // why: a 6-bit masked index into a 64-entry array is always in range.
        #[allow(clippy::indexing_slicing)]
        let name: String = (0..4)
            .rev()
            .map(|i| char::from(CHARSET[((spec >> (8 + 6 * i)) & 63) as usize]))
            .collect();
        let version = ((spec >> 3) & 31) as u8;
        let flags = (spec & 7) as u8;
        // As a server without the module does: drop what the module allows, refuse the rest.
        if flags & KEY_META_FLAG_ALLOW_IGNORE == 0 {
            return Err(PErr::Fail(RdbError::RequiredKeyMeta {
                offset: c.offset_at(spec_at),
                class: name,
                version,
            }));
        }
        // Copied, not sliced: `KeyMeta` outlives the key's value, and a slice would pin the
        // buffer that a big raw value needs to grow in place (see `Cursor::string_copy`).
        classes.push(KeyMetaClass {
            name,
            version,
            flags,
            raw: Bytes::copy_from_slice(c.slice(values_at, c.pos)),
        });
    }
    Ok(classes)
}

/// One tagged module value; `Ok(true)` at the module EOF marker. Module type 2 (RDB 8,
/// Redis 4.0 GA) tags every value a module saves, so a reader without the module can find
/// the value's end; the pre-GA type 6 had no tags, cannot be walked, and is not read here.
fn module_op(c: &mut Cursor<'_>) -> P<bool> {
    let at = c.pos;
    match c.length("module opcode")? {
        RDB_MODULE_OPCODE_EOF => return Ok(true),
        RDB_MODULE_OPCODE_SINT | RDB_MODULE_OPCODE_UINT => {
            c.length("module integer")?;
        }
        RDB_MODULE_OPCODE_FLOAT => {
            c.take(4)?;
        }
        RDB_MODULE_OPCODE_DOUBLE => {
            c.take(8)?;
        }
        RDB_MODULE_OPCODE_STRING => c.skip_string()?,
        op => return c.fail(at, format!("a module value opcode 0-5 (got {op})")),
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(version: RdbVersion) -> Parser {
        Parser::new(DecodeOptions::elements(), Top::Record, version)
    }

    /// A listpack of small unsigned ints (< 128) and short strings (< 64 bytes).
    fn listpack(items: &[Item<'_>]) -> Bytes {
        let mut body = Vec::new();
        for it in items {
            match *it {
                Item::Int(i) => {
                    assert!((0..128).contains(&i));
                    body.extend_from_slice(&[i as u8, 1]);
                }
                Item::Str(s) => {
                    assert!(s.len() < 63);
                    body.push(0x80 | s.len() as u8);
                    body.extend_from_slice(s);
                    body.push(1 + s.len() as u8);
                }
            }
        }
        let total = (6 + body.len() + 1) as u32;
        let mut lp = total.to_le_bytes().to_vec();
        lp.extend_from_slice(&(items.len() as u16).to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        Bytes::from(lp)
    }

    #[test]
    fn unknown_records_name_refused_types_then_types_then_opcodes() {
        let redis = parser(RdbVersion::Redis(14));
        assert!(matches!(
            redis.unknown_record(7, RDB_TYPE_ARRAY),
            RdbError::UnsupportedType {
                offset: 7,
                rdb_type: 28,
                ..
            }
        ));
        assert!(matches!(
            redis.unknown_record(7, RDB_TYPE_MODULE_PRE_GA),
            RdbError::UnknownType {
                offset: 7,
                rdb_type: 6
            }
        ));
        assert!(matches!(
            redis.unknown_record(7, 242),
            RdbError::UnknownType { rdb_type: 242, .. }
        ));
        assert!(matches!(
            redis.unknown_record(7, 243),
            RdbError::UnknownOpcode { opcode: 243, .. }
        ));
        let valkey = parser(RdbVersion::Valkey(80));
        assert!(matches!(
            valkey.unknown_record(3, RDB_TYPE_PATH_HASH),
            RdbError::UnsupportedType { rdb_type: 23, .. }
        ));
        // Redis's array type means nothing in a Valkey file
        assert!(matches!(
            valkey.unknown_record(3, RDB_TYPE_ARRAY),
            RdbError::UnknownType { rdb_type: 28, .. }
        ));
    }

    #[test]
    fn pre_ga_functions_get_the_ga_shebang_line() {
        assert_eq!(
            shebang_library(b"mylib", b"LUA", b"redis.register_function('f', f)"),
            b"#!LUA name=mylib\nredis.register_function('f', f)"
        );
    }

    #[test]
    fn field_expiry_per_layout() {
        let ga = ItemKind::HashMetadata { min_expire: 1_000 };
        assert_eq!(field_expiry(ga, 0), None);
        assert_eq!(field_expiry(ga, 1), Some(1_000));
        assert_eq!(field_expiry(ga, 501), Some(1_500));
        assert_eq!(field_expiry(ItemKind::HashMetadataPreGa, 0), None);
        assert_eq!(
            field_expiry(ItemKind::HashMetadataPreGa, 1_500),
            Some(1_500)
        );
    }

    #[test]
    fn text_scores_and_their_special_lengths() {
        let score = |b: &'static [u8]| {
            let data = Bytes::from_static(b);
            let mut c = Cursor::new(&data, 0, 100, usize::MAX);
            text_score(&mut c).map(|s| (s, c.pos))
        };
        assert!(matches!(score(b"\x031.5"), Ok((s, 4)) if s == 1.5));
        assert!(matches!(score(b"\xfd"), Ok((s, 1)) if s.is_nan()));
        assert!(matches!(score(b"\xfe"), Ok((s, 1)) if s == f64::INFINITY));
        assert!(matches!(score(b"\xff"), Ok((s, 1)) if s == f64::NEG_INFINITY));
        assert!(matches!(score(b"\x031."), Err(PErr::More)));
        match score(b"\x02xy") {
            Err(PErr::Fail(RdbError::Invalid { offset, .. })) => assert_eq!(offset, 100),
            _ => panic!("text that is no number must fail at the score's offset"),
        }
    }

    #[test]
    fn container_hints_come_from_the_headers() {
        let mut intset = vec![4, 0, 0, 0];
        intset.extend_from_slice(&70_000u32.to_le_bytes());
        assert_eq!(container_hint(RDB_TYPE_SET_INTSET, &intset), 70_000);
        let lp = [0, 0, 0, 0, 12, 0];
        assert_eq!(container_hint(RDB_TYPE_SET_LISTPACK, &lp), 12);
        assert_eq!(container_hint(RDB_TYPE_HASH_LISTPACK, &lp), 6);
        assert_eq!(container_hint(RDB_TYPE_HASH_LISTPACK_EX, &lp), 4);
        let zl = [0, 0, 0, 0, 0, 0, 0, 0, 10, 1];
        assert_eq!(container_hint(RDB_TYPE_LIST_ZIPLIST, &zl), 266);
        assert_eq!(container_hint(RDB_TYPE_ZSET_ZIPLIST, &zl), 133);
        // a blob too short for its header only sizes a small first chunk
        assert_eq!(container_hint(RDB_TYPE_LIST_ZIPLIST, &lp), 16);
        assert_eq!(container_hint(RDB_TYPE_HASH_ZIPMAP, &zl), 16);
    }

    #[test]
    fn stream_versions_follow_the_types() {
        let v: Vec<u8> = [15, 19, 21, 26, 27].map(stream_version).to_vec();
        assert_eq!(v, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn stream_nodes_skip_tombstones_and_reuse_master_fields() {
        use Item::{Int, Str};
        let lp = listpack(&[
            // master entry: count, deleted, 1 field "f", terminator
            Int(2),
            Int(1),
            Int(1),
            Str(b"f"),
            Int(0),
            // SAMEFIELDS entry at master + (0, 1): f=a
            Int(2),
            Int(0),
            Int(1),
            Str(b"a"),
            Int(3),
            // deleted entry with its own field list
            Int(1),
            Int(0),
            Int(2),
            Int(1),
            Str(b"g"),
            Str(b"b"),
            Int(4),
            // plain entry at master + (5, 0): g=c
            Int(0),
            Int(5),
            Int(0),
            Int(1),
            Str(b"g"),
            Str(b"c"),
            Int(4),
        ]);
        let mut master = 10u64.to_be_bytes().to_vec();
        master.extend_from_slice(&7u64.to_be_bytes());
        let mut p = parser(RdbVersion::Redis(12));
        let mut out = Vec::new();
        p.stream_node(&mut out, &master, &lp).unwrap();
        p.flush(&mut out);
        let entries = match out.as_slice() {
            [Event::Elements(Elements::StreamEntries(e))] => e.clone(),
            other => panic!("{other:?}"),
        };
        let got: Vec<(StreamId, Vec<(Bytes, Bytes)>)> =
            entries.into_iter().map(|e| (e.id, e.fields)).collect();
        let f = |a: &'static [u8], b: &'static [u8]| (Bytes::from_static(a), Bytes::from_static(b));
        assert_eq!(
            got,
            [
                (StreamId { ms: 10, seq: 8 }, vec![f(b"f", b"a")]),
                (StreamId { ms: 15, seq: 7 }, vec![f(b"g", b"c")]),
            ]
        );
        assert_eq!(
            p.stream_node(&mut out, &master[..15], &lp),
            Err("a 16-byte master id")
        );
        let cut = listpack(&[Int(1), Int(0), Int(1), Str(b"f"), Int(0), Int(2), Int(0)]);
        assert_eq!(
            p.stream_node(&mut out, &master, &cut),
            Err("more listpack elements")
        );
        let unterminated = listpack(&[Int(1), Int(0), Int(1), Str(b"f"), Int(9)]);
        assert_eq!(
            p.stream_node(&mut out, &master, &unterminated),
            Err("the master entry terminator 0")
        );
    }

    #[test]
    fn group_slots_are_found_by_id() {
        let slot = |ms| PelSlot {
            id: StreamId { ms, seq: 0 },
            delivery_time_ms: 0,
            delivery_count: 1,
            owner: None,
            nacked: false,
        };
        let mut g = GroupCtx {
            name: Bytes::new(),
            last_id: StreamId::default(),
            entries_read: None,
            pel: vec![slot(1), slot(5), slot(9)],
            consumers: Vec::new(),
        };
        assert!(g.slot(StreamId { ms: 5, seq: 0 }).is_some());
        assert!(g.slot(StreamId { ms: 5, seq: 1 }).is_none());
    }

    #[test]
    fn idmp_chunks_name_a_continued_producer_again() {
        let producer = |pid: &'static [u8], n: u64| IdmpProducer {
            pid: Bytes::from_static(pid),
            entries: (0..n)
                .map(|i| IdmpEntry {
                    iid: Bytes::new(),
                    id: StreamId { ms: i, seq: 0 },
                })
                .collect(),
        };
        let mut a = IdmpAcc {
            duration: 100,
            max_entries: 10,
            producers: vec![producer(b"p1", 1), producer(b"p2", 2)],
            records: 3,
        };
        let chunk = a.take_chunk(true);
        assert_eq!(chunk.producers, [producer(b"p1", 1), producer(b"p2", 2)]);
        assert_eq!((chunk.duration, chunk.max_entries), (100, 10));
        assert_eq!((chunk.iids_added, chunk.iids_duplicates), (None, None));
        assert_eq!(a.records, 0);
        assert_eq!(a.producers, [producer(b"p2", 0)]);
        let chunk = a.take_chunk(false);
        assert_eq!(chunk.producers, [producer(b"p2", 0)]);
        assert!(a.producers.is_empty());
    }
}
