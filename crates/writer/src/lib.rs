//! The target writer: [`Entry`]s in, acknowledged writes on the target out.
//!
//! Where it sits: last stage of the flow (decoder / command stream → filter → **writer** →
//! target). One writer serves one engine. It detects the target (cluster or standalone,
//! version, accepted RDB version, `proto-max-bulk-len`), keeps one pipelined connection per
//! target master, and checks every reply.
//!
//! What it promises:
//! - per-slot order: the writes of one slot reach the target in the order they were given,
//!   across `MOVED`, `ASK`, back-offs and reconnects (a failed write and everything after it
//!   in its slot is re-sent in order);
//! - backpressure: [`Writer::write`] waits while the buffered and in-flight bytes are at
//!   their bound (no sleeps, no polling);
//! - nothing dropped silently: filtered, expired, skipped and failed writes are counted in
//!   [`WriterStats`], and a key conflict under the default policy stops the writer with an
//!   error naming the key and `--rewrite`;
//! - an applied-offset watermark ([`Writer::applied_offset`]): the highest source
//!   replication offset such that every entry up to it was acknowledged OK by the target.
//!   A failed command freezes it there.

// Tests may unwrap, panic and index (the workspace denies it in library code).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod admit;
mod commands;
mod decide;
mod dispatch;
mod downgrade;
pub mod durable;
mod node;
pub mod options;
mod order;
mod pipeline;
pub mod progress;
mod refresh;
mod replies;
mod request;
pub mod sync_marker;
pub mod target;
mod watermark;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsm_client::{ClientError, ConnectOptions, Endpoint};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use rsm_command::entry::Entry;

pub use commands::{element_commands, Capabilities, ValueState};
pub use options::{ConflictPolicy, EngineOptions};
pub use rsm_counters::{Losses, WriteSummary, WriterStats};
pub use target::{SlotMap, TargetInfo};

/// How a [`Writer`] connects and how much it keeps in flight.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The target, or any node of a target cluster.
    pub target: Endpoint,
    pub connect: ConnectOptions,
    pub engine: EngineOptions,
    /// Commands in flight per target node.
    pub max_inflight: usize,
    /// Bytes in flight per target node.
    pub max_inflight_bytes: usize,
    /// Bytes buffered between `write` and the target's acknowledgement, in total.
    pub max_buffered_bytes: usize,
    /// How long a write may keep failing with retryable errors (or the target stay
    /// unreachable) before it is given up.
    pub retry_timeout: Duration,
    /// Retry retryable errors (OOM, LOADING, a lost node, …) for as long as it takes, with
    /// back-off, instead of giving up after `retry_timeout`: a sync waits for its target.
    pub retry_forever: bool,
    /// Stop at the first entry that will not be applied ([`WriteError::NotApplied`]) instead
    /// of counting it and going on: a sync must not apply what follows a lost write.
    pub stop_on_failure: bool,
    /// Stop with [`WriteError::MasterLost`] once a target master the writer wrote to is
    /// replaced (a failover): writes it acknowledged may be missing on its successor, and
    /// only a restart from the target's markers (the session's floor, the slot markers of
    /// the new masters) finds out which.
    pub end_on_lost_master: bool,
    /// Where the writer counts: a shard hands in its own, kept across its reconnections
    /// (see [`WriterStats`]); by default a fresh one.
    pub stats: Arc<WriterStats>,
}

/// Bytes buffered between `write` and the target's acknowledgement, by default: the
/// writer's share of a shard's memory (the plan's estimate uses it).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 << 20;

/// Without `--bigkeysize`, values bigger than this (streams and module values apart) are
/// written as chunks of commands instead of one RESTORE: a RESTORE needs the whole value in
/// memory (in the decoder, then as the payload), so this is what bounds the tool's memory
/// whatever the size of one key. Commands rebuild lists, hashes, sets, zsets and strings
/// exactly, but more slowly and, element by element, with more memory per byte than a
/// payload (in a full sync with four 1 M-element keys, a limit of 16 MiB sent them as
/// commands: 315 MiB peak and 3.7 s instead of 276 MiB and 2.6 s). A 1 M-element hash is a
/// ~25 MB payload: still one RESTORE; a 10 M-element one goes in chunks.
pub const HELD_WHOLE: u64 = 32 << 20;

impl WriterOptions {
    pub fn new(target: Endpoint, connect: ConnectOptions, engine: EngineOptions) -> Self {
        WriterOptions {
            target,
            connect,
            engine,
            max_inflight: 1024,
            max_inflight_bytes: 16 << 20,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            retry_timeout: Duration::from_secs(60),
            retry_forever: false,
            stop_on_failure: false,
            end_on_lost_master: false,
            stats: Arc::default(),
        }
    }
}

/// Why the writer stopped (or could not start).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("{message}")]
    Client { message: String, transient: bool },
    #[error("key {key} already exists in the target (db {db}): use --rewrite to replace it, or --skip-existing to keep the target's value")]
    KeyExists { key: String, db: u32 },
    #[error("key {key} is in more than one of the source dbs {sources} that --targetdb merges into target db {db} (or the target held it before): keys of two source dbs meeting in one target db are a conflict. --rewrite keeps the value of the later db, --skip-existing the earlier one's; to keep both, sync into a standalone target without --targetdb (each source db into its own db)")]
    KeyMerged {
        key: String,
        db: u32,
        sources: String,
    },
    #[error("lost target {endpoint} and could not write to it again within {secs}s: {cause}")]
    TargetLost {
        endpoint: String,
        secs: u64,
        cause: String,
    },
    #[error("target master {endpoint} was replaced by a failover; what it acknowledged may be lost, so the sync continues from the markers in the target")]
    MasterLost { endpoint: String },
    #[error("{0}")]
    Topology(String),
    #[error("--targetdb={0} needs a standalone target: on a cluster only --targetdb=0 is taken")]
    TargetDbInCluster(u32),
    #[error("--targetdb={db} is out of range: target {endpoint} has {databases} databases (0-{max}); pick one of those", max = databases.saturating_sub(1))]
    TargetDbOutOfRange {
        endpoint: String,
        db: u32,
        databases: u32,
    },
    #[error("target {endpoint} refused SELECT {db}: {message}")]
    Select {
        endpoint: String,
        db: u32,
        message: String,
    },
    #[error("the target did not apply a write: {reason}")]
    NotApplied { reason: String },
    #[error("stopped before the target acknowledged every write")]
    Abandoned,
    #[error("the writer has stopped")]
    Stopped,
}

impl From<ClientError> for WriteError {
    fn from(e: ClientError) -> Self {
        WriteError::Client {
            message: e.to_string(),
            transient: e.is_transient(),
        }
    }
}

impl WriteError {
    /// Errors a later attempt (reconnect, restart of the shard) can cure; the others need
    /// the operator (a key conflict, a bad flag).
    pub fn is_retryable(&self) -> bool {
        match self {
            WriteError::Client { transient, .. } => *transient,
            WriteError::TargetLost { .. }
            | WriteError::MasterLost { .. }
            | WriteError::Stopped
            | WriteError::Abandoned => true,
            WriteError::NotApplied { .. }
            | WriteError::KeyExists { .. }
            | WriteError::KeyMerged { .. }
            | WriteError::Topology(_)
            | WriteError::TargetDbInCluster(_)
            | WriteError::TargetDbOutOfRange { .. }
            | WriteError::Select { .. } => false,
        }
    }
}

/// A key as printable text (binary bytes escaped), for errors and logs.
pub fn show_key(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

/// State shared between the handle and the writer task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stats: Arc<WriterStats>,
    /// The applied-offset watermark (see the module docs).
    pub applied_offset: Arc<AtomicU64>,
    pub fatal: Mutex<Option<WriteError>>,
    /// Set while writes wait to be retried: the target's last error.
    stalled: AtomicBool,
    stall: Mutex<Option<String>>,
    /// Every node that has answered a write: the masters whose replicas must hold what
    /// the watermark covers.
    pub answered_by: Mutex<Vec<Endpoint>>,
}

impl Shared {
    pub fn summary(&self) -> WriteSummary {
        WriteSummary {
            applied_offset: self.applied_offset.load(Ordering::Acquire),
            ..self.stats.summary()
        }
    }

    pub fn set_stall(&self, why: &str) {
        if let Ok(mut s) = self.stall.lock() {
            if s.as_deref() != Some(why) {
                *s = Some(why.to_string());
            }
        }
        self.stalled.store(true, Ordering::Release);
    }

    pub fn clear_stall(&self) {
        // Checked first: this runs on every pass of the writer loop.
        if self.stalled.swap(false, Ordering::AcqRel) {
            if let Ok(mut s) = self.stall.lock() {
                *s = None;
            }
        }
    }

    pub fn stall(&self) -> Option<String> {
        if !self.stalled.load(Ordering::Acquire) {
            return None;
        }
        self.stall.lock().ok().and_then(|s| s.clone())
    }

    pub fn fatal(&self) -> Option<WriteError> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }
}

pub(crate) enum Msg {
    Entry(Entry, Option<tokio::sync::OwnedSemaphorePermit>),
    Flush(oneshot::Sender<Result<(), WriteError>>),
    /// Give up what is queued and in flight (see [`Writer::abandon`]).
    Abandon,
    /// The conflict policy for the entries after this one.
    Conflict(rsm_command::ConflictPolicy),
    /// Everything up to this source offset is applied once the entries before it are.
    Mark(u64),
    /// Exactly-once from here on, with what the target shows applied (or off: `None`).
    Progress(Option<progress::Progress>),
}

/// The handle. Clones share one writer; give it entries from one producer at a time, since
/// order is only defined within one sequence of `write` calls.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    bytes: Arc<Semaphore>,
    max_permit: usize,
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    info: TargetInfo,
    big_key_threshold: u64,
    big_stream_threshold: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("target", &self.info)
            .finish()
    }
}

impl Writer {
    /// Detect the target, validate the options against it, and start the writer task.
    pub async fn connect(opts: WriterOptions) -> Result<Writer, WriteError> {
        let db_map = opts.engine.db_map();
        // The probe goes where the tool's keys will live; the kind is not known yet, and a
        // cluster with --targetdb=N is refused just below.
        let (info, slots) = target::detect(&opts.target, &opts.connect, db_map.home(false)).await?;
        db_map
            .check(info.cluster)
            .map_err(|e| WriteError::TargetDbInCluster(e.0))?;
        if let (false, Some(db)) = (info.cluster, opts.engine.target_db) {
            target::check_target_db(&opts.target, &opts.connect, db).await?;
        }
        tracing::info!(
            target_node = %opts.target,
            cluster = info.cluster,
            databases = ?info.databases,
            version = %info.version,
            rdb_version = %info.rdb_version,
            masters = slots.owners().len(),
            "connected to the target"
        );
        let largest_restore = info.proto_max_bulk_len.saturating_sub(1024);
        let (big_key_threshold, big_stream_threshold) = match opts.engine.big_key_size {
            Some(size) => (size, size),
            None => (largest_restore.min(HELD_WHOLE), largest_restore),
        };
        let shared = Arc::new(Shared {
            stats: opts.stats.clone(),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(4096);
        let max_permit = opts.max_buffered_bytes.clamp(1, u32::MAX as usize);
        let bytes = Arc::new(Semaphore::new(max_permit));
        let task = pipeline::spawn(opts, info.clone(), slots, shared.clone(), rx);
        Ok(Writer {
            tx,
            bytes,
            max_permit,
            shared,
            task: Arc::new(Mutex::new(Some(task))),
            info,
            big_key_threshold,
            big_stream_threshold,
        })
    }

    /// [`WriterStats::answers`]; read it after the watermark.
    pub fn answers(&self) -> u64 {
        self.shared.stats.answers.load(Ordering::Relaxed)
    }

    /// The target nodes that have answered a write of this writer, in the order they
    /// first did. Read after the watermark, it names every node that acknowledged a write
    /// the watermark covers.
    pub fn answered_by(&self) -> Vec<Endpoint> {
        self.shared
            .answered_by
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    pub fn target(&self) -> &TargetInfo {
        &self.info
    }

    /// A value whose serialization is larger than this is written in chunks of commands:
    /// `--bigkeysize`, else [`HELD_WHOLE`] (or just under the target's
    /// `proto-max-bulk-len` if that is smaller).
    pub fn big_key_threshold(&self) -> u64 {
        self.big_key_threshold
    }

    /// The same for streams: `--bigkeysize`, else just under `proto-max-bulk-len`. A
    /// stream rebuilt with commands loses what only a RESTORE carries (consumers' seen and
    /// active times, pending entries of deleted messages), so by default it is held whole
    /// however big; `--bigkeysize` bounds it too.
    pub fn big_stream_threshold(&self) -> u64 {
        self.big_stream_threshold
    }

    /// The counters' figures (the shard's, when the shard handed its own in), with this
    /// writer's watermark.
    pub fn stats(&self) -> WriteSummary {
        self.shared.summary()
    }

    /// The applied-offset watermark, readable at any time without touching the writer.
    pub fn applied_offset(&self) -> Arc<AtomicU64> {
        self.shared.applied_offset.clone()
    }

    /// Hand one entry to the writer. Waits while the writer's buffers are full; returns
    /// an error once the writer has stopped (the error says why).
    pub async fn write(&self, entry: Entry) -> Result<(), WriteError> {
        if let Some(e) = self.shared.fatal() {
            return Err(e);
        }
        let size = pipeline::entry_size(&entry).clamp(1, self.max_permit);
        // A size never exceeds the semaphore's capacity, so this waits only for room.
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| WriteError::Stopped)?;
        if self.tx.send(Msg::Entry(entry, Some(permit))).await.is_err() {
            return Err(self.shared.fatal().unwrap_or(WriteError::Stopped));
        }
        Ok(())
    }

    /// Record that the source stream up to `offset` needs nothing more from the target
    /// (a dropped or filtered command, the end of the snapshot): the watermark moves there
    /// once every entry given before it is acknowledged.
    pub async fn mark_applied(
        &self,
        offset: rsm_command::entry::ReplOffset,
    ) -> Result<(), WriteError> {
        if let Some(e) = self.shared.fatal() {
            return Err(e);
        }
        self.tx
            .send(Msg::Mark(offset.0))
            .await
            .map_err(|_| self.shared.fatal().unwrap_or(WriteError::Stopped))
    }

    /// Wait until everything written so far is acknowledged (or has failed and been counted).
    pub async fn flush(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_err() {
            return Err(self.shared.fatal().unwrap_or(WriteError::Stopped));
        }
        rx.await
            .map_err(|_| self.shared.fatal().unwrap_or(WriteError::Stopped))?
    }

    /// Change the conflict policy for the entries given after this call (in order with
    /// them). A snapshot into slots that only this sync has written to replaces keys, so
    /// a RESTORE re-sent after a lost connection meets its own key without a conflict.
    pub async fn set_conflict_policy(
        &self,
        policy: rsm_command::ConflictPolicy,
    ) -> Result<(), WriteError> {
        self.tx
            .send(Msg::Conflict(policy))
            .await
            .map_err(|_| self.shared.fatal().unwrap_or(WriteError::Stopped))
    }

    /// Write the stream exactly once from here on (in order with the entries): every
    /// command not safe to apply twice goes with its slot's marker, and commands the
    /// markers in `progress` show as applied are skipped. See [`progress`].
    pub async fn set_progress(&self, progress: progress::Progress) -> Result<(), WriteError> {
        self.tx
            .send(Msg::Progress(Some(progress)))
            .await
            .map_err(|_| self.shared.fatal().unwrap_or(WriteError::Stopped))
    }

    /// Why writes are waiting to be retried right now (the target's error), if they are.
    pub fn stall(&self) -> Option<String> {
        self.shared.stall()
    }

    /// Stop waiting for the target: everything not yet acknowledged counts as not applied
    /// (the watermark stays before it) and the writer stops with [`WriteError::Abandoned`].
    pub async fn abandon(&self) {
        let _ = self.tx.send(Msg::Abandon).await;
    }

    /// Flush, stop the writer task and return the final counters. The error, if any, is the
    /// one that stopped the writer; the counters are in [`Writer::stats`] either way.
    pub async fn finish(self) -> Result<WriteSummary, WriteError> {
        let flushed = self.flush().await;
        let Writer {
            tx, task, shared, ..
        } = self;
        drop(tx);
        let handle = task.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            // Other clones keep the channel open; the task ends once all are dropped.
            if Arc::strong_count(&task) == 1 {
                let _ = h.await;
            }
        }
        flushed?;
        match shared.fatal() {
            Some(e) => Err(e),
            None => Ok(shared.summary()),
        }
    }
}
