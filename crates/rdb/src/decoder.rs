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
    pub mode: DecodeMode,
    /// Raw mode only: a value whose serialization is larger than this many bytes is
    /// delivered as elements instead (so at most this many bytes are held for it).
    /// `None` = no limit. Module values (type 7) are always delivered whole.
    pub big_value_threshold: Option<u64>,
    /// Raw mode only: the threshold for streams, when it differs (`None`: the one above).
    /// Rebuilt from elements a stream loses details a RESTORE keeps (consumers' seen
    /// times), so a caller may hold bigger streams whole than other values.
    pub big_stream_threshold: Option<u64>,
    /// Check the CRC64 after the EOF opcode (a stored checksum of 0 is never checked).
    pub verify_checksum: bool,
}

impl DecodeOptions {
    pub fn raw() -> Self {
        DecodeOptions {
            mode: DecodeMode::Raw,
            big_value_threshold: None,
            big_stream_threshold: None,
            verify_checksum: true,
        }
    }
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

    fn apply(&mut self, action: Action, out: &mut Vec<Event>) -> Result<(), RdbError> {
        match action {
            Action::None => {}
            Action::BeginValue => {
                self.value_start = self.pos;
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
                if !self.p.value_only {
                    out.push(Event::KeyEnd);
                }
            }
            Action::EofOpcode => {
                if self.p.top == Top::Done {
                    out.push(Event::Eof);
                }
            }
            Action::Checksum(stored) => {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Magic,
    Record,
    Value,
    Checksum,
    Done,
}

enum Action {
    None,
    BeginValue,
    EndValue,
    EofOpcode,
    Checksum(u64),
}

/// Per-member layouts of the collection types stored member by member.
#[derive(Debug, Clone, Copy)]
enum ItemKind {
    List,
    Set,
    ZSet,
    ZSet2,
    Hash,
    HashMetadata { min_expire: i64 },
    HashMetadataPreGa,
    ValkeyHash2,
    Quicklist,
    Quicklist2,
}

#[derive(Debug, Clone, Copy)]
enum VState {
    Start,
    StrPieces(u64),
    Items(ItemKind, u64),
    StreamNodes(u64),
    StreamMeta,
    GroupHdr(u64),
    Pel(u64, u64),
    ConsumersHdr(u64),
    Consumer(u64, u64),
    ConsumerPel(u64, u64, u64),
    /// Type 27: the group's NACK zone size, then its ids (groups left, ids left).
    NackHdr(u64),
    Nack(u64, u64),
    /// Types 26/27, after the last group: IDMP config, producers, records, counters.
    IdmpHdr,
    IdmpProducer(u64),
    IdmpEntry(u64, u64),
    IdmpStats,
    ModuleOps,
}

struct PelSlot {
    id: StreamId,
    delivery_time_ms: i64,
    delivery_count: u64,
    owner: Option<usize>,
    nacked: bool,
}

/// IDMP state of the current stream, gathered into bounded chunks.
struct IdmpAcc {
    duration: u64,
    max_entries: u64,
    producers: Vec<IdmpProducer>,
    records: usize,
}

struct GroupCtx {
    name: Bytes,
    last_id: StreamId,
    entries_read: Option<u64>,
    pel: Vec<PelSlot>,
    consumers: Vec<Consumer>,
}

struct Parser {
    opts: DecodeOptions,
    version: RdbVersion,
    top: Top,
    value_only: bool,
    db: u64,
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
    acc: Option<Elements>,
    acc_items: usize,
    acc_bytes: usize,
    module_id: u64,
    stream_v: u8,
    group: Option<GroupCtx>,
    /// The current key, for error messages.
    cur_key: Bytes,
    /// Expected members of the current value (from its header), to size chunk vectors.
    hint: usize,
}

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

    fn begin_value(&mut self, t: u8) {
        self.rdb_type = t;
        self.restart_value(self.opts.mode == DecodeMode::Elements || self.value_only);
    }

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

    fn flush(&mut self, out: &mut Vec<Event>) {
        if let Some(e) = self.acc.take() {
            out.push(Event::Elements(e));
        }
        self.acc_items = 0;
        self.acc_bytes = 0;
    }

    fn bump(&mut self, out: &mut Vec<Event>, size: usize) {
        self.acc_items += 1;
        self.acc_bytes = self.acc_bytes.saturating_add(size);
        if self.acc_items >= MAX_CHUNK_ITEMS || self.acc_bytes >= MAX_CHUNK_BYTES {
            self.flush(out);
        }
    }

    fn push_list(&mut self, out: &mut Vec<Event>, b: Bytes) {
        push_into!(self, out, ListItems, b.clone(), b.len())
    }
    fn push_set(&mut self, out: &mut Vec<Event>, b: Bytes) {
        push_into!(self, out, SetMembers, b.clone(), b.len())
    }
    fn push_zset(&mut self, out: &mut Vec<Event>, m: Bytes, score: f64) {
        push_into!(self, out, ZSetMembers, (m.clone(), score), m.len() + 8)
    }
    fn push_hash(&mut self, out: &mut Vec<Event>, f: HashField) {
        let n = f.field.len() + f.value.len();
        push_into!(self, out, HashFields, f, n)
    }
    fn push_entry(&mut self, out: &mut Vec<Event>, e: StreamEntry) {
        let n: usize = 16
            + e.fields
                .iter()
                .map(|(f, v)| f.len() + v.len())
                .sum::<usize>();
        push_into!(self, out, StreamEntries, e, n)
    }

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
            RDB_OPCODE_RESIZEDB => {
                let db_size = c.length("RESIZEDB db size")?;
                let expires_size = c.length("RESIZEDB expires size")?;
                out.push(Event::ResizeDb {
                    db_size,
                    expires_size,
                });
            }
            RDB_OPCODE_EXPIRETIME_MS => self.expire = Some(c.i64_le()?),
            RDB_OPCODE_EXPIRETIME => self.expire = Some(i64::from(c.i32_le()?) * 1000),
            RDB_OPCODE_IDLE => self.idle = Some(c.length("IDLE seconds")?),
            RDB_OPCODE_FREQ => self.freq = Some(c.u8()?),
            RDB_OPCODE_KEY_META if self.version.has_key_meta() => {
                let classes = key_meta_block(c)?;
                self.key_meta_seen += classes.len() as u64;
                self.key_meta = classes;
            }
            RDB_OPCODE_SLOT_INFO => {
                let slot = c.length("SLOT_INFO slot")?;
                let keys = c.length("SLOT_INFO key count")?;
                let expires = c.length("SLOT_INFO expires count")?;
                out.push(Event::SlotInfo {
                    slot,
                    keys,
                    expires,
                });
            }
            RDB_OPCODE_MODULE_AUX => {
                let module_id = c.length("MODULE_AUX module id")?;
                let op_at = c.pos;
                let when_op = c.length("MODULE_AUX when opcode")?;
                if when_op != RDB_MODULE_OPCODE_UINT {
                    return c.fail(op_at, "MODULE_AUX when-opcode 2 (UINT)");
                }
                let when = c.length("MODULE_AUX when")?;
                while !module_op(c)? {}
                let raw = Bytes::copy_from_slice(c.slice(at + 1, c.pos));
                out.push(Event::ModuleAux {
                    module_id,
                    when,
                    raw,
                });
            }
            RDB_OPCODE_FUNCTION2 => {
                let code = c.string_bytes()?;
                out.push(Event::Function { code });
            }
            RDB_OPCODE_FUNCTION_PRE_GA => {
                // 7.0-rc1/rc2 kept the library's name and engine beside its body; GA
                // servers need them in the body's `#!` line, and build it exactly so when
                // they load such a file (the description has no place there and is dropped).
                let name = c.string_bytes()?;
                let engine = c.string_bytes()?;
                if c.length("FUNCTION has-description flag")? != 0 {
                    c.skip_string()?;
                }
                let body = c.string_bytes()?;
                let mut code = Vec::with_capacity(body.len() + name.len() + engine.len() + 10);
                code.extend_from_slice(b"#!");
                code.extend_from_slice(&engine);
                code.extend_from_slice(b" name=");
                code.extend_from_slice(&name);
                code.push(b'\n');
                code.extend_from_slice(&body);
                out.push(Event::Function { code: code.into() });
            }
            RDB_OPCODE_EOF => {
                self.top = if self.version.number() >= 5 {
                    Top::Checksum
                } else {
                    Top::Done
                };
                return Ok(Action::EofOpcode);
            }
            t if self.known_type(t) => {
                let key = c.string_copy()?;
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
                return Ok(Action::BeginValue);
            }
            t if self.refusal(0, t).is_some() => {
                return Err(PErr::Fail(self.refusal(c.offset_at(at), t).unwrap_or(
                    RdbError::UnknownOpcode {
                        offset: c.offset_at(at),
                        opcode: t,
                    },
                )))
            }
            t if t < RDB_OPCODE_SLOT_IMPORT => {
                return Err(PErr::Fail(RdbError::UnknownType {
                    offset: c.offset_at(at),
                    rdb_type: t,
                }))
            }
            _ => {
                return Err(PErr::Fail(RdbError::UnknownOpcode {
                    offset: c.offset_at(at),
                    opcode: op,
                }))
            }
        }
        Ok(Action::None)
    }

    /// One unit of the current value; `Ok(true)` when the value is complete.
    fn value_step(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let el = self.elements;
        match self.vs {
            VState::Start => self.value_start(c, out),
            VState::StrPieces(left) => {
                let n = left.min(MAX_CHUNK_BYTES as u64);
                let piece = c.take_bytes(n)?;
                out.push(Event::Elements(Elements::StringPart(piece)));
                let left = left - n;
                self.vs = VState::StrPieces(left);
                Ok(left == 0)
            }
            VState::Items(kind, left) => {
                self.item(c, out, kind)?;
                let left = left - 1;
                self.vs = VState::Items(kind, left);
                Ok(left == 0)
            }
            VState::StreamNodes(left) => {
                let at = c.pos;
                if el {
                    let master = c.string()?;
                    let lp = c.string_bytes()?;
                    self.stream_node(c, at, &master, &lp, out)?;
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
            VState::StreamMeta => {
                let length = c.length("stream length")?;
                let last_id = stream_id(c, "stream last id")?;
                let (mut first_id, mut max_deleted_id, mut entries_added) = (None, None, None);
                if self.stream_v >= 2 {
                    first_id = Some(stream_id(c, "stream first id")?);
                    max_deleted_id = Some(stream_id(c, "stream max deleted id")?);
                    entries_added = Some(c.length("stream entries added")?);
                }
                let groups = c.length("stream consumer group count")?;
                if el {
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
            VState::GroupHdr(groups) => {
                let name = if el {
                    c.string_bytes()?
                } else {
                    c.skip_string()?;
                    Bytes::new()
                };
                let last_id = stream_id(c, "group last id")?;
                let entries_read = if self.stream_v >= 2 {
                    Some(c.length("group entries read")?).filter(|&n| n != u64::MAX)
                } else {
                    None
                };
                let pel = c.length("group PEL size")?;
                if el {
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
            VState::Pel(groups, left) => {
                let at = c.pos;
                let id = c.stream_id_raw()?;
                let delivery_time_ms = c.i64_le()?;
                let delivery_count = c.length("PEL delivery count")?;
                if let Some(g) = &mut self.group {
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
            VState::ConsumersHdr(groups) => {
                let n = c.length("consumer count")?;
                if n == 0 {
                    return Ok(self.consumers_done(out, groups));
                }
                self.vs = VState::Consumer(groups, n);
                Ok(false)
            }
            VState::Consumer(groups, left) => {
                let name = if el {
                    c.string_bytes()?
                } else {
                    c.skip_string()?;
                    Bytes::new()
                };
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
            VState::ConsumerPel(groups, consumers_left, left) => {
                let at = c.pos;
                let id = c.stream_id_raw()?;
                if let Some(g) = &mut self.group {
                    let owner = g.consumers.len().saturating_sub(1);
                    match g.pel.binary_search_by(|p| p.id.cmp(&id)) {
                        Ok(i) => {
                            if let Some(slot) = g.pel.get_mut(i) {
                                slot.owner = Some(owner);
                            }
                        }
                        Err(_) => {
                            return c.fail(at, format!("consumer PEL id {id} in the group PEL"))
                        }
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
            VState::NackHdr(groups) => {
                let n = c.length("NACK zone size")?;
                if n == 0 {
                    return Ok(self.group_done(out, groups));
                }
                self.vs = VState::Nack(groups, n);
                Ok(false)
            }
            VState::Nack(groups, left) => {
                let at = c.pos;
                let id = c.stream_id_raw()?;
                if let Some(g) = &mut self.group {
                    // The zone lists ids of the group PEL (their delivery data is there).
                    match g.pel.binary_search_by(|p| p.id.cmp(&id)) {
                        Ok(i) => {
                            if let Some(slot) = g.pel.get_mut(i) {
                                slot.nacked = true;
                            }
                        }
                        Err(_) => return c.fail(at, format!("NACK zone id {id} in the group PEL")),
                    }
                }
                let left = left - 1;
                if left == 0 {
                    return Ok(self.group_done(out, groups));
                }
                self.vs = VState::Nack(groups, left);
                Ok(false)
            }
            VState::IdmpHdr => {
                let duration = c.length("IDMP duration")?;
                let max_entries = c.length("IDMP max entries")?;
                let producers = c.length("IDMP producer count")?;
                if el {
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
            VState::IdmpProducer(left) => {
                let pid = if el {
                    c.string_bytes()?
                } else {
                    c.skip_string()?;
                    Bytes::new()
                };
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
            VState::IdmpEntry(producers, left) => {
                let iid = if el {
                    c.string_bytes()?
                } else {
                    c.skip_string()?;
                    Bytes::new()
                };
                let id = stream_id(c, "IDMP record stream id")?;
                let left = left - 1;
                if let Some(a) = &mut self.idmp {
                    if let Some(p) = a.producers.last_mut() {
                        p.entries.push(IdmpEntry { iid, id });
                    }
                    a.records += 1;
                    if a.records >= MAX_CHUNK_ITEMS {
                        let continued = a
                            .producers
                            .last()
                            .filter(|_| left > 0)
                            .map(|p| p.pid.clone());
                        let chunk = StreamIdmp {
                            duration: a.duration,
                            max_entries: a.max_entries,
                            producers: std::mem::take(&mut a.producers),
                            iids_added: None,
                            iids_duplicates: None,
                        };
                        a.records = 0;
                        if let Some(pid) = continued {
                            a.producers.push(IdmpProducer {
                                pid,
                                entries: Vec::new(),
                            });
                        }
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
            VState::IdmpStats => {
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
            VState::ModuleOps => module_op(c),
        }
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

    /// The first unit of a value: its header, or the whole value for single-blob types.
    fn value_start(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>) -> P<bool> {
        let el = self.elements;
        let valkey = self.version.is_valkey();
        let at = c.pos;
        let t = self.rdb_type;
        let items = |s: &mut Self, kind: ItemKind, n: u64| {
            s.hint = match kind {
                // n counts nodes, not members
                ItemKind::Quicklist | ItemKind::Quicklist2 => 128,
                _ => usize::try_from(n).unwrap_or(MAX_CHUNK_ITEMS),
            };
            s.vs = VState::Items(kind, n);
            n == 0
        };
        match t {
            RDB_TYPE_STRING => {
                if !el {
                    c.skip_string()?;
                    return Ok(true);
                }
                match c.string_hdr()? {
                    StrHdr::Int(i) => {
                        let s = itoa::Buffer::new().format(i).as_bytes().to_vec();
                        out.push(Event::Elements(Elements::StringPart(Bytes::from(s))));
                        Ok(true)
                    }
                    StrHdr::Lzf { clen, ulen } => {
                        let comp = c.take(clen)?;
                        let ulen = usize::try_from(ulen).unwrap_or(usize::MAX);
                        let v = crate::lzf::decompress(comp, ulen).map_err(|e| {
                            PErr::Fail(RdbError::invalid(c.offset_at(at), e.to_string()))
                        })?;
                        let v = Bytes::from(v);
                        let mut i = 0;
                        while i < v.len() {
                            let end = (i + MAX_CHUNK_BYTES).min(v.len());
                            out.push(Event::Elements(Elements::StringPart(v.slice(i..end))));
                            i = end;
                        }
                        Ok(true)
                    }
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
            RDB_TYPE_LIST => Ok(items(self, ItemKind::List, c.length("list length")?)),
            RDB_TYPE_SET => Ok(items(self, ItemKind::Set, c.length("set size")?)),
            RDB_TYPE_ZSET => Ok(items(self, ItemKind::ZSet, c.length("zset size")?)),
            RDB_TYPE_ZSET_2 => Ok(items(self, ItemKind::ZSet2, c.length("zset size")?)),
            RDB_TYPE_HASH => Ok(items(self, ItemKind::Hash, c.length("hash size")?)),
            RDB_TYPE_LIST_QUICKLIST => Ok(items(
                self,
                ItemKind::Quicklist,
                c.length("quicklist node count")?,
            )),
            RDB_TYPE_LIST_QUICKLIST_2 => Ok(items(
                self,
                ItemKind::Quicklist2,
                c.length("quicklist node count")?,
            )),
            RDB_TYPE_HASH_METADATA => {
                let min_expire = c.i64_le()?;
                let n = c.length("hash size")?;
                Ok(items(self, ItemKind::HashMetadata { min_expire }, n))
            }
            RDB_TYPE_HASH_2 if valkey => {
                Ok(items(self, ItemKind::ValkeyHash2, c.length("hash size")?))
            }
            RDB_TYPE_HASH_METADATA_PRE_GA => Ok(items(
                self,
                ItemKind::HashMetadataPreGa,
                c.length("hash size")?,
            )),
            RDB_TYPE_STREAM_LISTPACKS
            | RDB_TYPE_STREAM_LISTPACKS_2
            | RDB_TYPE_STREAM_LISTPACKS_3
            | RDB_TYPE_STREAM_LISTPACKS_4
            | RDB_TYPE_STREAM_LISTPACKS_5 => {
                self.hint = 64;
                self.stream_v = match t {
                    RDB_TYPE_STREAM_LISTPACKS => 1,
                    RDB_TYPE_STREAM_LISTPACKS_2 => 2,
                    RDB_TYPE_STREAM_LISTPACKS_3 => 3,
                    RDB_TYPE_STREAM_LISTPACKS_4 => 4,
                    _ => 5,
                };
                let n = c.length("stream listpack count")?;
                self.vs = if n == 0 {
                    VState::StreamMeta
                } else {
                    VState::StreamNodes(n)
                };
                Ok(false)
            }
            RDB_TYPE_MODULE_2 => {
                self.module_id = c.length("module id")?;
                self.vs = VState::ModuleOps;
                Ok(false)
            }
            RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => {
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
            _ => Err(PErr::Fail(RdbError::UnknownType {
                offset: c.offset_at(at),
                rdb_type: t,
            })),
        }
    }

    /// A value stored as one encoded container string.
    fn blob(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, t: u8) -> P<()> {
        let at = c.pos;
        if !self.elements {
            return c.skip_string();
        }
        let data = c.string_bytes()?;
        // element count from the container header (listpack u16 at 4, ziplist u16 at 8,
        // intset u32 at 4); 65535 means "unknown" and only sizes the first chunk
        let at_le = |i: usize, n: usize| -> usize {
            data.get(i..i + n)
                .map(|b| b.iter().rev().fold(0usize, |a, &x| a << 8 | usize::from(x)))
                .unwrap_or(16)
        };
        self.hint = match t {
            RDB_TYPE_SET_INTSET => at_le(4, 4),
            RDB_TYPE_LIST_ZIPLIST => at_le(8, 2),
            RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_HASH_ZIPLIST => at_le(8, 2) / 2,
            RDB_TYPE_SET_LISTPACK => at_le(4, 2),
            RDB_TYPE_HASH_LISTPACK | RDB_TYPE_ZSET_LISTPACK => at_le(4, 2) / 2,
            RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => at_le(4, 2) / 3,
            _ => 16,
        };
        let bad = |what: &str, e: &str| {
            PErr::Fail(RdbError::invalid(
                c.offset_at(at),
                format!("a valid {what}: {e}"),
            ))
        };
        match t {
            RDB_TYPE_SET_INTSET => {
                for i in blobs::intset(&data).map_err(|e| bad("intset", e))? {
                    self.push_set(out, Item::Int(i).to_bytes());
                }
            }
            RDB_TYPE_HASH_ZIPMAP => {
                for (f, v) in blobs::zipmap(&data).map_err(|e| bad("zipmap", e))? {
                    self.push_hash(
                        out,
                        HashField {
                            field: Bytes::copy_from_slice(f),
                            value: Bytes::copy_from_slice(v),
                            expire_at_ms: None,
                        },
                    );
                }
            }
            RDB_TYPE_LIST_ZIPLIST => {
                for it in blobs::ziplist(&data).map_err(|e| bad("ziplist", e))? {
                    self.push_list(out, item_bytes(&data, it.map_err(|e| bad("ziplist", e))?));
                }
            }
            RDB_TYPE_ZSET_ZIPLIST | RDB_TYPE_HASH_ZIPLIST => {
                let mut it = blobs::ziplist(&data).map_err(|e| bad("ziplist", e))?;
                while let Some(a) = it.next() {
                    let a = a.map_err(|e| bad("ziplist", e))?;
                    let b = it
                        .next()
                        .ok_or_else(|| bad("ziplist", "an even number of entries"))?
                        .map_err(|e| bad("ziplist", e))?;
                    self.pair(out, &data, t, a, b)
                        .map_err(|e| bad("ziplist", e))?;
                }
            }
            RDB_TYPE_HASH_LISTPACK | RDB_TYPE_ZSET_LISTPACK => {
                let mut it = blobs::listpack(&data).map_err(|e| bad("listpack", e))?;
                while let Some(a) = it.next() {
                    let a = a.map_err(|e| bad("listpack", e))?;
                    let b = it
                        .next()
                        .ok_or_else(|| bad("listpack", "an even number of entries"))?
                        .map_err(|e| bad("listpack", e))?;
                    self.pair(out, &data, t, a, b)
                        .map_err(|e| bad("listpack", e))?;
                }
            }
            RDB_TYPE_SET_LISTPACK => {
                for it in blobs::listpack(&data).map_err(|e| bad("listpack", e))? {
                    self.push_set(out, item_bytes(&data, it.map_err(|e| bad("listpack", e))?));
                }
            }
            RDB_TYPE_HASH_LISTPACK_EX | RDB_TYPE_HASH_LISTPACK_EX_PRE_GA => {
                let mut it = blobs::listpack(&data).map_err(|e| bad("listpack", e))?;
                while let Some(f) = it.next() {
                    let f = f.map_err(|e| bad("listpack", e))?;
                    let mut next = || {
                        it.next()
                            .ok_or_else(|| bad("listpack", "field, value, expiry triples"))?
                            .map_err(|e| bad("listpack", e))
                    };
                    let v = next()?;
                    let ttl = next()?
                        .as_i64()
                        .ok_or_else(|| bad("listpack", "an integer field expiry"))?;
                    self.push_hash(
                        out,
                        HashField {
                            field: item_bytes(&data, f),
                            value: item_bytes(&data, v),
                            expire_at_ms: (ttl != 0).then_some(ttl),
                        },
                    );
                }
            }
            _ => return c.fail(at, "a container type"),
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

    /// One member of a member-by-member collection.
    fn item(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Event>, kind: ItemKind) -> P<()> {
        let el = self.elements;
        let s = |c: &mut Cursor<'_>| -> P<Bytes> {
            if el {
                c.string_bytes()
            } else {
                c.skip_string().map(|_| Bytes::new())
            }
        };
        match kind {
            ItemKind::List => {
                let b = s(c)?;
                if el {
                    self.push_list(out, b);
                }
            }
            ItemKind::Set => {
                let b = s(c)?;
                if el {
                    self.push_set(out, b);
                }
            }
            ItemKind::ZSet => {
                let m = s(c)?;
                let at = c.pos;
                let score = match c.u8()? {
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
                };
                if el {
                    self.push_zset(out, m, score);
                }
            }
            ItemKind::ZSet2 => {
                let m = s(c)?;
                let score = c.f64_le()?;
                if el {
                    self.push_zset(out, m, score);
                }
            }
            ItemKind::Hash => {
                let field = s(c)?;
                let value = s(c)?;
                if el {
                    self.push_hash(
                        out,
                        HashField {
                            field,
                            value,
                            expire_at_ms: None,
                        },
                    );
                }
            }
            ItemKind::HashMetadata { .. } | ItemKind::HashMetadataPreGa => {
                let ttl = c.length("hash field ttl")?;
                let field = s(c)?;
                let value = s(c)?;
                let expire_at_ms = match kind {
                    _ if ttl == 0 => None,
                    // stored relative to the key's minimum expiry, plus one
                    ItemKind::HashMetadata { min_expire } => {
                        Some((ttl as i64).wrapping_add(min_expire).wrapping_sub(1))
                    }
                    _ => Some(ttl as i64),
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
            }
            ItemKind::ValkeyHash2 => {
                let field = s(c)?;
                let value = s(c)?;
                let exp = c.i64_le()?;
                if el {
                    self.push_hash(
                        out,
                        HashField {
                            field,
                            value,
                            expire_at_ms: (exp != -1).then_some(exp),
                        },
                    );
                }
            }
            ItemKind::Quicklist => {
                let at = c.pos;
                if !el {
                    return c.skip_string();
                }
                let data = c.string_bytes()?;
                let bad = |e: &str| {
                    PErr::Fail(RdbError::invalid(
                        c.offset_at(at),
                        format!("a valid ziplist: {e}"),
                    ))
                };
                for it in blobs::ziplist(&data).map_err(bad)? {
                    self.push_list(out, item_bytes(&data, it.map_err(bad)?));
                }
            }
            ItemKind::Quicklist2 => {
                let at = c.pos;
                let container = c.length("quicklist container")?;
                if !matches!(
                    container,
                    QUICKLIST_NODE_CONTAINER_PLAIN | QUICKLIST_NODE_CONTAINER_PACKED
                ) {
                    return c.fail(at, "quicklist container 1 (PLAIN) or 2 (PACKED)");
                }
                let at = c.pos;
                if !el {
                    return c.skip_string();
                }
                let data = c.string_bytes()?;
                if container == QUICKLIST_NODE_CONTAINER_PLAIN {
                    self.push_list(out, data);
                    return Ok(());
                }
                let bad = |e: &str| {
                    PErr::Fail(RdbError::invalid(
                        c.offset_at(at),
                        format!("a valid listpack: {e}"),
                    ))
                };
                for it in blobs::listpack(&data).map_err(bad)? {
                    self.push_list(out, item_bytes(&data, it.map_err(bad)?));
                }
            }
        }
        Ok(())
    }

    /// One listpack node of a stream: the entries it holds, tombstones skipped.
    fn stream_node(
        &mut self,
        c: &Cursor<'_>,
        at: usize,
        master: &[u8],
        lp: &Bytes,
        out: &mut Vec<Event>,
    ) -> P<()> {
        let bad = |e: &str| {
            PErr::Fail(RdbError::invalid(
                c.offset_at(at),
                format!("a valid stream node: {e}"),
            ))
        };
        if master.len() != 16 {
            return Err(bad("a 16-byte master id"));
        }
        let (ms, seq) = master.split_at(8);
        let master_ms = u64::from_be_bytes(ms.try_into().unwrap_or_default());
        let master_seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
        let mut it = blobs::listpack(lp).map_err(bad)?;
        let int = |i: Item<'_>| i.as_i64().ok_or_else(|| bad("an integer"));
        let master_fields = {
            let mut next = || -> P<Item<'_>> {
                it.next()
                    .ok_or_else(|| bad("more listpack elements"))?
                    .map_err(bad)
            };
            let _count = int(next()?)?;
            let _deleted = int(next()?)?;
            let nfields = int(next()?)?;
            let mut master_fields = Vec::new();
            for _ in 0..nfields.max(0) {
                master_fields.push(item_bytes(lp, next()?));
            }
            if int(next()?)? != 0 {
                return Err(bad("the master entry terminator 0"));
            }
            master_fields
        };
        loop {
            let flags = match it.next() {
                None => break,
                Some(f) => int(f.map_err(bad)?)?,
            };
            let mut next = || -> P<Item<'_>> {
                it.next()
                    .ok_or_else(|| bad("more listpack elements"))?
                    .map_err(bad)
            };
            let ms_diff = int(next()?)?;
            let seq_diff = int(next()?)?;
            let mut fields = Vec::new();
            if flags & STREAM_ITEM_FLAG_SAMEFIELDS != 0 {
                for f in &master_fields {
                    fields.push((f.clone(), item_bytes(lp, next()?)));
                }
            } else {
                let n = int(next()?)?;
                for _ in 0..n.max(0) {
                    let f = item_bytes(lp, next()?);
                    let v = item_bytes(lp, next()?);
                    fields.push((f, v));
                }
            }
            let _lp_count = next()?;
            if flags & STREAM_ITEM_FLAG_DELETED == 0 {
                let id = StreamId {
                    ms: master_ms.wrapping_add(ms_diff as u64),
                    seq: master_seq.wrapping_add(seq_diff as u64),
                };
                self.push_entry(out, StreamEntry { id, fields });
            }
        }
        Ok(())
    }
}

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
        classes.push(KeyMetaClass {
            name,
            version,
            flags,
            raw: Bytes::copy_from_slice(c.slice(values_at, c.pos)),
        });
    }
    Ok(classes)
}

/// One tagged module value; `Ok(true)` at the module EOF marker.
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
