//! The snapshot loader: RDB bytes (from a file, stdin or a replication socket) → decoder
//! events → [`Entry`]s → the [`Writer`].
//!
//! Where it sits: between the RDB decoder and the writer, for `redis-port restore` and for
//! the full-sync phase of the replica engine. Memory stays bounded: the decoder holds one
//! parse unit (raw values up to the writer's big-key threshold), the loader holds the events
//! of one fed chunk, and every `write` waits while the writer's buffers are full.
//!
//! A normal key becomes one `Entry::Restore` with a DUMP payload built from the raw value
//! (trailer = the file's RDB version; the writer rewrites it if the target needs that).
//! A value larger than the threshold arrives as element chunks and becomes
//! `BigKeyStart`, `BigKeyChunk`s, `BigKeyEnd`. Functions are loaded on every master.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rsm_rdb::{dump, DecodeOptions, Decoder, Event, KeyMeta, RdbError, RdbVersion};
use tokio::io::{AsyncRead, AsyncReadExt};

use rsm_command::entry::{Command, DbIndex, Entry, KeyUsage, ReplOffset};
use rsm_command::ConflictPolicy;
use rsm_writer::{WriteError, WriteSummary, Writer};

/// What the loader needs besides the writer.
#[derive(Debug, Clone, Default)]
pub struct LoaderOptions {
    /// Values whose serialization exceeds this go in chunks, streams included; `None` =
    /// the writer's thresholds (see [`Writer::big_key_threshold`]).
    pub big_key_threshold: Option<u64>,
    /// The conflict policy, for function libraries (`FUNCTION LOAD [REPLACE]`).
    pub conflict: ConflictPolicy,
    /// Slot by slot, whether keys of that slot are this shard's (`None`: every key). A
    /// node's snapshot taken while slots move into it holds keys of slots it does not own
    /// yet (a reshard's `RESTORE-ASKING`, a Valkey 9 import): they are the old owner's
    /// shard's until the move has settled, and then copied again with the new shard.
    pub own_slots: Option<std::sync::Arc<Vec<bool>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The input is no valid RDB, or ends early. Every complete key before the fault
    /// was still handed to the writer.
    #[error("bad RDB input: {0}")]
    Rdb(#[from] RdbError),
    /// The writer stopped; its error says why.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The input (a file, stdin) could not be read.
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the loader saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// The header's RDB version: the trailer of every payload built from the file.
    pub version: Option<RdbVersion>,
    /// RDB bytes fed.
    pub bytes: u64,
    /// Keys read from the RDB (written, filtered, expired or failed: see the writer).
    pub keys: u64,
    /// Of those, keys written in chunks.
    pub big_keys: u64,
    /// Function libraries, each sent as one `FUNCTION LOAD`.
    pub functions: u64,
    /// Of the keys, those left out because their slot is not the shard's (see
    /// [`LoaderOptions::own_slots`]).
    pub other_slots: u64,
}

/// Element chunks (each at most 1024 members or 1 MiB) decoded before they go to the
/// writer, whose bound then holds back the parse: without it, the megabytes a value had
/// buffered before it proved too big to send whole came out as one burst of chunks.
const CHUNKS_PER_DECODE: usize = 4;

/// Feeds one RDB into a writer. See the module docs.
pub struct Loader {
    /// In raw mode: a value comes as its RDB bytes, a DUMP payload without being parsed;
    /// only a value past the threshold is decoded, into element chunks.
    decoder: Decoder,
    writer: Writer,
    opts: LoaderOptions,
    /// The events of one fed chunk, kept between feeds so its allocation is reused.
    events: Vec<Event>,
    /// The db of the last `SELECTDB`.
    db: DbIndex,
    /// The key whose value comes next.
    key: Option<KeyMeta>,
    /// The current key goes out in chunks: its `BigKeyStart` was written, its
    /// `BigKeyEnd` is owed.
    big: bool,
    /// The current key's slot is not the shard's: its value is passed over.
    passing: bool,
    summary: LoadSummary,
}

impl Loader {
    pub fn new(opts: LoaderOptions, writer: Writer) -> Loader {
        // Without a threshold of its own, the writer's: it knows what one RESTORE can carry
        // to this target, and that a stream is best kept whole (what only a RESTORE keeps).
        let decode = match opts.big_key_threshold {
            Some(t) => DecodeOptions::raw_with_threshold(t),
            None => DecodeOptions {
                big_stream_threshold: Some(writer.big_stream_threshold()),
                ..DecodeOptions::raw_with_threshold(writer.big_key_threshold())
            },
        };
        let mut decoder = Decoder::new(decode);
        decoder.set_chunk_budget(Some(CHUNKS_PER_DECODE));
        Loader {
            decoder,
            writer,
            opts,
            events: Vec::new(),
            db: 0,
            key: None,
            big: false,
            passing: false,
            summary: LoadSummary::default(),
        }
    }

    /// RDB bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.summary.bytes
    }

    /// Keys read so far.
    pub fn keys_read(&self) -> u64 {
        self.summary.keys
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Decode the next chunk and hand its keys to the writer (waiting while it is full).
    pub async fn feed(&mut self, chunk: Bytes) -> Result<(), LoadError> {
        self.summary.bytes += chunk.len() as u64;
        let mut events = std::mem::take(&mut self.events);
        let mut decoded = self.decoder.feed(chunk, &mut events);
        loop {
            // Write what was decoded before reporting a decode error, so a truncated file
            // still delivers every complete key before it.
            for ev in events.drain(..) {
                self.on_event(ev).await?;
            }
            // Paused at the chunk budget: those chunks are written (the writer's bound may
            // make this wait) before more of the input is parsed.
            if decoded.is_err() || !self.decoder.paused() {
                break;
            }
            decoded = self.decoder.resume(&mut events);
        }
        // Drained: the buffer goes back empty, for the next feed.
        self.events = events;
        decoded?;
        Ok(())
    }

    /// The input is over: check the RDB was complete and wait for the writer to
    /// acknowledge everything.
    pub async fn finish(self) -> Result<LoadSummary, LoadError> {
        self.decoder.finish()?;
        let dropped = self.decoder.key_meta_classes();
        if dropped > 0 {
            // Only their module could write them back, and the source marked them as safe
            // to drop (what a server without the module does on load).
            tracing::warn!(
                classes = dropped,
                "the snapshot carried module metadata on keys (Redis 8.6+ KEY_META, marked droppable): not written to the target"
            );
        }
        // Every key acknowledged (or failed and counted) before the caller treats the
        // snapshot as loaded: the shard marks its offset applied only after this.
        self.writer.flush().await?;
        Ok(self.summary)
    }

    /// One decoder event into the writer:
    /// - `SelectDb`: an id past `DbIndex` is none a server has; it stays out of range
    ///   rather than wrapping into a real db.
    /// - `KeyStart`: counted as read whatever becomes of the key; the writer counts what
    ///   did (written, kept, filtered, expired or refused).
    /// - `RawValue`: one RESTORE. The payload's trailer is the file's own version (the
    ///   writer rewrites it for a target that needs another; without a header, never the
    ///   case in a whole RDB, 9: the oldest, which every target accepts). The LRU idle
    ///   time or LFU counter travel too (RESTORE IDLETIME/FREQ), so the target's eviction
    ///   sees the source's.
    /// - `Elements`: the value outgrew the threshold; from its first chunk on it goes as
    ///   commands, after a start that names the key, its type and its TTL. Only at
    ///   `KeyEnd` is it counted written: one failed chunk fails the whole key.
    /// - `Function`: like a key, a library of that name already in the target is replaced
    ///   only under `--rewrite` (or by a restarted copy, whose own it likely is). The
    ///   writer routes it: keyless, to every master.
    ///
    /// Every snapshot entry carries offset 0: only the end of the snapshot moves the
    /// watermark.
    async fn on_event(&mut self, ev: Event) -> Result<(), LoadError> {
        match ev {
            Event::Header { version } => self.summary.version = Some(version),
            Event::SelectDb(db) => self.db = DbIndex::try_from(db).unwrap_or(DbIndex::MAX),
            Event::KeyStart(meta) => self.key_start(meta),
            Event::RawValue(_) | Event::Elements(_) if self.passing => {}
            Event::RawValue(raw) => {
                // No key, nothing to name the value by (the decoder sends the key first).
                let Some(meta) = self.key.take() else {
                    return Ok(());
                };
                let trailer = self
                    .summary
                    .version
                    .map_or(RdbVersion::Redis(9).number(), RdbVersion::number);
                let payload = dump::build_payload(meta.rdb_type, &raw, trailer);
                self.writer
                    .write(Entry::Restore {
                        db: self.db_of(&meta),
                        key: meta.key,
                        payload,
                        expire_at_ms: meta.expire_at_ms,
                        usage: KeyUsage {
                            idle_secs: meta.idle,
                            freq: meta.freq,
                        },
                    })
                    .await?;
            }
            Event::Elements(els) => {
                if !self.big {
                    let Some(meta) = &self.key else {
                        return Ok(());
                    };
                    self.big = true;
                    self.summary.big_keys += 1;
                    let start = Entry::BigKeyStart {
                        db: self.db_of(meta),
                        key: meta.key.clone(),
                        rdb_type: meta.rdb_type,
                        expire_at_ms: meta.expire_at_ms,
                    };
                    self.writer.write(start).await?;
                }
                self.writer.write(Entry::BigKeyChunk(els)).await?;
            }
            Event::KeyEnd => {
                self.passing = false;
                if self.big {
                    self.writer.write(Entry::BigKeyEnd).await?;
                }
                self.big = false;
                self.key = None;
            }
            Event::Function { code } => {
                self.summary.functions += 1;
                let mut args = vec![Bytes::from_static(b"FUNCTION"), Bytes::from_static(b"LOAD")];
                if self.opts.conflict == ConflictPolicy::Rewrite {
                    args.push(Bytes::from_static(b"REPLACE"));
                }
                args.push(code);
                self.writer
                    .write(Entry::Command(Command::new(0, args, ReplOffset(0))))
                    .await?;
            }
            Event::ModuleAux { module_id, .. } => {
                tracing::warn!(
                    module_id,
                    "module auxiliary data in the RDB is not carried over"
                );
            }
            // Facts about the file, not data: nothing for the target.
            Event::Aux { .. } | Event::ResizeDb { .. } | Event::SlotInfo { .. } | Event::Eof => {}
        }
        Ok(())
    }

    /// A key begins: its value comes next, unless its slot is not the shard's.
    fn key_start(&mut self, meta: KeyMeta) {
        self.summary.keys += 1;
        self.big = false;
        self.passing = !self.owns(&meta.key);
        if self.passing {
            self.summary.other_slots += 1;
            self.key = None;
        } else {
            self.key = Some(meta);
        }
    }

    /// Is `key` in one of the shard's slots?
    fn owns(&self, key: &[u8]) -> bool {
        self.opts.own_slots.as_ref().is_none_or(|own| {
            own.get(rsm_cluster::key_slot(key).index())
                .copied()
                .unwrap_or(true)
        })
    }

    /// The key's db as the decoder saw it; the last `SELECTDB`'s if that does not fit.
    fn db_of(&self, meta: &KeyMeta) -> DbIndex {
        DbIndex::try_from(meta.db).unwrap_or(self.db)
    }
}

/// Progress of a load, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// RDB bytes read so far.
    pub bytes: u64,
    /// Total input size when known (a file, not stdin).
    pub total: Option<u64>,
    pub keys_read: u64,
    /// The writer's figures: what the target acknowledged, not what was read.
    pub written: WriteSummary,
    pub elapsed: Duration,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A floor on the time, so that a first report at once does not divide by zero.
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let mb = self.bytes as f64 / (1024.0 * 1024.0);
        match self.total {
            Some(t) if t > 0 => write!(f, "{:5.1}% ", self.bytes as f64 * 100.0 / t as f64)?,
            _ => {}
        }
        write!(
            f,
            "{mb:.1} MiB read, {} keys read, {} written ({:.0} keys/s, {:.1} MB/s)",
            self.keys_read,
            self.written.keys_written,
            self.written.keys_written as f64 / secs,
            mb / secs
        )
    }
}

/// Read an RDB from `input` to the end through a loader, calling `progress` about once per
/// `every`. The writer is flushed at the end; the summary of both is returned.
pub async fn load_from<R: AsyncRead + Unpin>(
    mut input: R,
    total: Option<u64>,
    mut loader: Loader,
    every: Duration,
    mut progress: impl FnMut(Progress),
) -> Result<(LoadSummary, WriteSummary), LoadError> {
    const CHUNK: usize = 256 * 1024;
    let start = Instant::now();
    let mut last = start;
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let n = input
            .read_buf(&mut buf)
            .await
            .map_err(|source| LoadError::Io {
                what: "the RDB input".into(),
                source,
            })?;
        // End of input: `finish` tells a whole RDB from a truncated one.
        if n == 0 {
            break;
        }
        loader.feed(buf.split().freeze()).await?;
        if last.elapsed() >= every {
            last = Instant::now();
            progress(Progress {
                bytes: loader.bytes_fed(),
                total,
                keys_read: loader.keys_read(),
                written: loader.writer().stats(),
                elapsed: start.elapsed(),
            });
        }
    }
    // A handle kept for the figures: `finish` consumes the loader.
    let writer = loader.writer().clone();
    let summary = loader.finish().await?;
    let written = writer.stats();
    progress(Progress {
        bytes: summary.bytes,
        total,
        keys_read: summary.keys,
        written,
        elapsed: start.elapsed(),
    });
    Ok((summary, written))
}

/// Open an RDB file, or stdin for `-`, with its size when known.
pub async fn open_input(
    path: &Path,
) -> Result<(Box<dyn AsyncRead + Unpin + Send>, Option<u64>), LoadError> {
    if path == Path::new("-") {
        return Ok((Box::new(tokio::io::stdin()), None));
    }
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|source| LoadError::Io {
            what: path.display().to_string(),
            source,
        })?;
    let len = f.metadata().await.ok().map(|m| m.len());
    Ok((Box::new(f), len))
}
