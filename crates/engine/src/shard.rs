//! One shard's sync, end to end: handshake with the source node, snapshot
//! into the target, then the command stream, for as long as it runs.
//!
//! The loop survives link drops: it reconnects with `PSYNC replid applied+1`
//! (from the checkpoint), and only falls back to a full sync when the source
//! refuses to continue. At most `--sync-parallel` shards hold a full-sync
//! permit at once; a shard that continues needs none.
//!
//! A shard of a source cluster is its slots, not a node: before reconnecting,
//! the loop asks the source where those slots are served now
//! ([`crate::replica::follow`]) and, after a failover, continues on the new
//! node with the same PSYNC (the promoted replica knows the old history).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsm_client::{ConnectOptions, Connection, Credentials, Endpoint, ServerError, Side};
use rsm_cluster::SlotRange;
use tokio::sync::{watch, Semaphore};

use crate::command::CommandTable;
use crate::entry::ReplOffset;
use crate::loader::{LoadError, Loader, LoaderOptions};
use crate::options::ConflictPolicy;
use crate::options::EngineOptions;
use crate::replay::{prepare, Replay};
use crate::replica::checkpoint::{Checkpoint, CheckpointFile};
use crate::replica::follow::{Follow, FollowError, FollowOptions};
use crate::replica::handshake::{handshake_with, read_rdb_framing, ResumePoint, SyncStart};
use crate::replica::link::{Link, LinkCounters};
use crate::replica::spool::{Segment, Spool};
use crate::replica::stream::{StreamItem, StreamReader};
use crate::replica::ReplicaError;
use crate::status::{now_ms, Phase, ShardStatus};
use crate::writer::sync_marker::{begin_copy, CopyScope, CopyStart};
use crate::writer::{WriteError, Writer, WriterOptions};

/// Memory the spool may use before it spills to disk, unless the spec says otherwise.
pub const DEFAULT_SPOOL_MEMORY: usize = 64 << 20;
/// Pause before reconnecting after a failure; doubles up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything one shard's engine needs.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    pub serial: usize,
    pub source: Endpoint,
    pub source_credentials: Option<Credentials>,
    pub target: Endpoint,
    pub target_credentials: Option<Credentials>,
    pub options: EngineOptions,
    /// Where the checkpoint and any spill file live.
    pub state_dir: PathBuf,
    /// Announced to the source as `REPLCONF listening-port` (informational).
    pub listening_port: u16,
    /// Bytes the spool keeps in memory before it spills to a file in `state_dir`.
    pub spool_memory: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("{0} (the target already held keys in this shard's slots before this sync began, so they are not this sync's own)")]
    PreexistingKey(WriteError),
    #[error("replication stream: {0}")]
    Stream(#[from] crate::replica::stream::StreamError),
    #[error("local state in {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replication link lost: {0}")]
    LinkLost(String),
    #[error("snapshot: {0}")]
    Load(#[from] LoadError),
}

impl ShardError {
    /// Errors that a reconnect can cure; the rest stop the shard.
    pub fn is_retryable(&self) -> bool {
        match self {
            ShardError::LinkLost(_) => true,
            ShardError::Replica(ReplicaError::Client(e)) => e.is_transient(),
            ShardError::Replica(ReplicaError::Refused { kind, .. }) => {
                *kind == ServerError::Loading
            }
            ShardError::Replica(ReplicaError::Stalled(_)) => true,
            ShardError::Write(e) => e.is_retryable(),
            ShardError::Load(LoadError::Write(e)) => e.is_retryable(),
            _ => false,
        }
    }

    /// Errors that another node of the shard may not have: a replica whose
    /// master link is down refuses PSYNC, but the shard may live on elsewhere.
    pub fn is_cured_by_following(&self) -> bool {
        matches!(
            self,
            ShardError::Replica(ReplicaError::Refused {
                kind: ServerError::NoMasterLink,
                ..
            })
        )
    }
}

/// How a run of the shard ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardExit {
    Stopped,
}

/// Run until `shutdown` turns true or an error needs the operator. Follows
/// failovers of a cluster source, learning the shard from its first node.
pub async fn run_shard(
    spec: ShardSpec,
    status: Arc<ShardStatus>,
    full_sync_permits: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) -> Result<ShardExit, ShardError> {
    run_shard_following(
        spec,
        FollowOptions::default(),
        status,
        full_sync_permits,
        shutdown,
    )
    .await
}

/// [`run_shard`] with what the caller knows of the shard: its slots, the
/// role to sync from after a failover, more nodes to ask.
pub async fn run_shard_following(
    spec: ShardSpec,
    follow_options: FollowOptions,
    status: Arc<ShardStatus>,
    full_sync_permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ShardExit, ShardError> {
    // The spool spills and the checkpoint is written here; neither may find it missing.
    crate::replica::checkpoint::create_state_dir(&spec.state_dir)
        .map_err(state_err(&spec.state_dir))?;
    let checkpoint = CheckpointFile::new(
        spec.state_dir
            .join(format!("shard-{}.checkpoint", spec.serial)),
    );
    let mut backoff = BACKOFF_START;
    let mut table: Option<Arc<CommandTable>> = None;
    // The node synced from now; changes when the source fails over.
    let mut source = spec.source.clone();
    let mut follow: Option<Follow> = None;
    let mut follow_known = follow_options.disabled;
    let mut relocate = false;
    loop {
        if *shutdown.borrow() {
            status.set_phase(Phase::Stopped);
            return Ok(ShardExit::Stopped);
        }
        if !follow_known {
            // Until the first node answers, the shard cannot be learnt; the
            // next reconnect tries again.
            if let Ok(f) =
                Follow::learn(&source, spec.source_credentials.clone(), &follow_options).await
            {
                if let Some(f) = &f {
                    tracing::info!(shard = spec.serial, slots = %f.slots_display(), "following the shard's slots across source failovers");
                }
                follow = f;
                follow_known = true;
            }
        }
        if relocate {
            if let Some(f) = follow.as_mut() {
                match f.locate(&source).await {
                    Ok(loc) if loc.node != source => {
                        let reason = match &loc.note {
                            Some(note) => format!("the source failed over; {note}"),
                            None => "the source failed over".to_string(),
                        };
                        tracing::warn!(shard = spec.serial, from = %source, to = %loc.node, role = %loc.role, master = %loc.master, slots = %f.slots_display(), note = loc.note.as_deref().unwrap_or(""), "SOURCE MOVED: the shard's slots are served elsewhere now; continuing there");
                        status.set_source(&loc.node.to_string(), &reason);
                        source = loc.node;
                        // The same cluster answers COMMAND the same; no re-read.
                    }
                    Ok(loc) => {
                        if let Some(note) = loc.note {
                            tracing::warn!(shard = spec.serial, source = %source, "{note}");
                        }
                    }
                    Err(e @ FollowError::MasterFailing { .. }) => {
                        tracing::warn!(shard = spec.serial, source = %source, error = %e, retry_in_ms = backoff.as_millis() as u64, "waiting for the source to fail over");
                        status.set_error(Some(e.to_string()));
                        status.set_phase(Phase::Reconnecting);
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    Err(e) => {
                        // Try the node we know; its own error is clearer.
                        tracing::warn!(shard = spec.serial, source = %source, error = %e, "cannot read the source topology");
                    }
                }
            }
        }
        if table.is_none() {
            table = Some(Arc::new(command_table(&spec, &source).await));
        }
        let table = table
            .clone()
            .unwrap_or_else(|| Arc::new(CommandTable::builtin()));
        let place = Place {
            source: &source,
            slots: follow.as_ref().map(Follow::slots_display),
            ranges: follow
                .as_ref()
                .map_or_else(|| vec![SlotRange::full()], |f| f.slots().to_vec()),
        };
        match sync_once(
            &spec,
            &place,
            &status,
            &checkpoint,
            &full_sync_permits,
            &table,
            shutdown.clone(),
        )
        .await
        {
            Ok(()) => {
                status.set_phase(Phase::Stopped);
                return Ok(ShardExit::Stopped);
            }
            Err(e) if e.is_retryable() || (follow.is_some() && e.is_cured_by_following()) => {
                tracing::warn!(shard = spec.serial, source = %source, error = %e, retry_in_ms = backoff.as_millis() as u64, "sync interrupted; reconnecting");
                status.set_error(Some(e.to_string()));
                status.set_phase(Phase::Reconnecting);
                status.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                relocate = true;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                tracing::error!(shard = spec.serial, source = %source, error = %e, "shard stopped");
                status.set_error(Some(e.to_string()));
                status.set_phase(Phase::Failed);
                return Err(e);
            }
        }
    }
}

/// Where this connection's sync reads from.
struct Place<'a> {
    source: &'a Endpoint,
    /// The shard's slots in a cluster source, for the checkpoint.
    slots: Option<String>,
    /// The same as ranges; every slot for a standalone source.
    ranges: Vec<SlotRange>,
}

/// The source's own command table (`COMMAND`), over the built-in one; the
/// built-in one alone if the source will not say (an ACL without +command).
async fn command_table(spec: &ShardSpec, source: &Endpoint) -> CommandTable {
    let opts = ConnectOptions::new(Side::Source, spec.source_credentials.clone());
    let reply = match Connection::connect(source, &opts).await {
        Ok(mut conn) => conn.request(&["COMMAND"]).await.ok(),
        Err(_) => None,
    };
    match reply.as_ref().map(CommandTable::for_source) {
        Some(Ok(table)) => table,
        Some(Err(e)) => {
            tracing::warn!(shard = spec.serial, error = %e, "cannot use the source's COMMAND reply; using the built-in command table");
            CommandTable::builtin()
        }
        None => {
            tracing::warn!(
                shard = spec.serial,
                "the source did not answer COMMAND; using the built-in command table"
            );
            CommandTable::builtin()
        }
    }
}

fn state_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::State {
        path: path.display().to_string(),
        source,
    }
}

/// One connection's worth of sync. `Ok` only when asked to stop.
async fn sync_once(
    spec: &ShardSpec,
    place: &Place<'_>,
    status: &Arc<ShardStatus>,
    checkpoint: &CheckpointFile,
    permits: &Arc<Semaphore>,
    table: &CommandTable,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ShardError> {
    let source = place.source;
    let saved = checkpoint.load().map_err(state_err(checkpoint.path()))?;
    // A checkpoint of another node is a resume point only when that node
    // served the same slots: after a failover the new node may continue its
    // history (PSYNC2). Of a node with other slots (the plan changed), it is none.
    let mut resume: Option<ResumePoint> = saved
        .filter(|c| {
            if c.source == source.to_string() {
                return true;
            }
            let same_shard = place.slots.is_some() && c.slots == place.slots;
            if same_shard {
                tracing::info!(shard = spec.serial, checkpoint_of = %c.source, source = %source, "trying to continue the checkpoint of another node of the same slots");
            }
            same_shard
        })
        .map(|c| c.resume_point());

    // The target first: while it is down there is no point asking the source for
    // anything, least of all a full sync (a fork) that could not be loaded.
    let mut writer_options = WriterOptions::new(
        spec.target.clone(),
        ConnectOptions::new(Side::Target, spec.target_credentials.clone()),
        spec.options.clone(),
    );
    writer_options.retry_forever = true;
    writer_options.stop_on_failure = true;
    let connect = writer_options.connect.clone();
    let writer = Writer::connect(writer_options).await?;

    let mut permit = None;
    let (mut conn, source_info, start) = loop {
        if resume.is_none() && permit.is_none() {
            status.set_phase(Phase::Queued);
            permit = Some(
                permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ShardError::LinkLost("full-sync permits closed".into()))?,
            );
        }
        status.set_phase(Phase::Handshake);
        let asks_full_sync = resume.is_none();
        let (conn, info, start) = handshake_with(
            source,
            spec.source_credentials.clone(),
            spec.listening_port,
            resume.as_ref(),
            || {
                if asks_full_sync {
                    status.set_phase(Phase::WaitingBgsave);
                }
            },
        )
        .await?;
        if matches!(start, SyncStart::Full { .. }) && permit.is_none() {
            // The source could not continue; take our turn for a full sync
            // like everyone else rather than forking out of order.
            tracing::warn!(
                shard = spec.serial,
                "source refused to continue from the checkpoint; a full sync is needed"
            );
            drop(conn);
            resume = None;
            continue;
        }
        break (conn, info, start);
    };
    tracing::info!(shard = spec.serial, source = %source, server = %source_info.describe(), start = ?start, "replication accepted");

    // A new writer counts from zero; the shard's totals carry on from here.
    let base = WriterTotals::read(&status.counters);
    let spool = Arc::new(Spool::new(
        spec.state_dir.join(format!("shard-{}.spill", spec.serial)),
        spec.spool_memory,
        Arc::new(AtomicU64::new(0)),
    ));
    let link_counters = Arc::new(LinkCounters::default());
    // The writer owns the applied-offset watermark; the ACKs report it.
    let applied = writer.applied_offset();

    let (replid, stream_start, framing) = match &start {
        SyncStart::Full { replid, offset } => {
            status.counters.full_syncs.fetch_add(1, Ordering::Relaxed);
            status.set_phase(Phase::WaitingBgsave);
            // From the first write of this snapshot on, the old resume point describes
            // a target that no longer exists: only a loaded snapshot makes a new one.
            checkpoint.remove().map_err(state_err(checkpoint.path()))?;
            let framing = read_rdb_framing(&mut conn).await?;
            (replid.clone(), *offset, Some(framing))
        }
        SyncStart::Continue { replid, offset } => {
            applied.store(*offset, Ordering::Release);
            (replid.clone(), *offset, None)
        }
    };
    status.set_replid(&replid);
    status.set_error(None);
    let full = framing.is_some();
    let link = Link::spawn(
        conn,
        framing,
        spool.clone(),
        link_counters.clone(),
        applied.clone(),
        shutdown.clone(),
    );
    let mut loader = None;
    let mut copy = None;
    if full {
        status.set_phase(Phase::LoadingRdb);
        // The link spools the snapshot meanwhile, so the source waits for nothing.
        let start = prepare_copy(spec, place, &writer, &connect).await;
        let start = match start {
            Ok(s) => s,
            Err(e) => {
                link.abort();
                return Err(e);
            }
        };
        if matches!(start, CopyStart::Fresh | CopyStart::Restarted { .. }) {
            // Every key in these slots is this sync's own: a RESTORE re-sent after a lost
            // target connection may meet the key it already wrote, and that is no conflict.
            writer.set_conflict_policy(ConflictPolicy::Rewrite).await?;
        }
        copy = Some(start);
        // Function libraries live outside the slots: only a restarted copy knows that the
        // ones already there are likely its own.
        let functions = match start {
            CopyStart::Restarted { .. } => ConflictPolicy::Rewrite,
            _ => spec.options.conflict,
        };
        loader = Some(Loader::new(
            LoaderOptions {
                big_key_threshold: None,
                conflict: functions,
            },
            writer.clone(),
        ));
    } else {
        status.set_phase(Phase::Streaming);
    }
    // Whether the target holds a complete snapshot plus a known prefix of the stream:
    // only then may a checkpoint exist.
    let mut resumable = !full;

    let mut stream = StreamReader::new(stream_start);
    let mut last_checkpoint = std::time::Instant::now();
    // The status is refreshed by its own task: the loop below waits on the writer
    // whenever the target is slow or refusing, which is exactly when the operator looks.
    let publisher = {
        let p = Publisher {
            status: status.clone(),
            link: link_counters.clone(),
            spool: spool.clone(),
            stream_start,
            writer: writer.clone(),
            applied: applied.clone(),
            base,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut shown_stall = false;
            loop {
                tick.tick().await;
                p.publish(&mut shown_stall);
            }
        })
    };
    let mut checkpoint_tick = tokio::time::interval(CHECKPOINT_EVERY);
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let save_checkpoint = |applied_offset: u64| {
        checkpoint.save(&Checkpoint {
            source: source.to_string(),
            replid: replid.clone(),
            applied: applied_offset,
            written_at_ms: now_ms(),
            slots: place.slots.clone(),
        })
    };
    if !full {
        save_checkpoint(stream_start).map_err(state_err(checkpoint.path()))?;
    }

    let result: Result<(), ShardError> = async {
        loop {
            let segment = tokio::select! {
                seg = spool.pop() => seg.map_err(state_err(checkpoint.path()))?,
                _ = checkpoint_tick.tick() => {
                    if resumable && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                        last_checkpoint = std::time::Instant::now();
                        save_checkpoint(applied.load(Ordering::Acquire)).map_err(state_err(checkpoint.path()))?;
                    }
                    continue;
                }
            };
            match segment {
                Segment::Rdb(bytes) => {
                    let Some(loader) = loader.as_mut() else {
                        return Err(ShardError::Snapshot("snapshot bytes after the snapshot ended".into()));
                    };
                    let n = bytes.len() as u64;
                    loader.feed(bytes).await?;
                    status.counters.rdb_bytes_loaded.fetch_add(n, Ordering::Relaxed);
                }
                Segment::RdbEnd => {
                    let Some(done) = loader.take() else {
                        return Err(ShardError::Snapshot("a second end of snapshot".into()));
                    };
                    let summary = done.finish().await?;
                    // Everything up to the snapshot's offset is in the target now, unless a
                    // key of it failed: then the watermark stays put and so does the checkpoint.
                    writer.mark_applied(ReplOffset(stream_start)).await?;
                    writer.flush().await?;
                    let now_applied = applied.load(Ordering::Acquire);
                    if now_applied != stream_start {
                        return Err(ShardError::Snapshot(format!(
                            "the snapshot ended but the target acknowledged it only up to offset {now_applied} of {stream_start}"
                        )));
                    }
                    tracing::info!(shard = spec.serial, summary = ?summary, copy = ?copy, "snapshot loaded");
                    resumable = true;
                    save_checkpoint(stream_start).map_err(state_err(checkpoint.path()))?;
                    drop(permit.take());
                    status.set_phase(Phase::Streaming);
                }
                Segment::Stream(bytes) => {
                    stream.feed(&bytes);
                    while let Some(item) = stream.next_item()? {
                        match item {
                            StreamItem::Entry(entry) => {
                                let (replay, dropped) = prepare(table, &spec.options.filter, entry, now_ms() as i64);
                                for d in &dropped {
                                    status.counters.commands_skipped.fetch_add(1, Ordering::Relaxed);
                                    if !d.is_routine() {
                                        tracing::warn!(shard = spec.serial, command = %d.command, reason = %d.reason, "stream command not applied");
                                    }
                                }
                                match replay {
                                    Replay::Write(entry) => writer.write(entry).await?,
                                    Replay::Dropped { offset, .. } => writer.mark_applied(offset).await?,
                                }
                            }
                            StreamItem::Marker { offset } => writer.mark_applied(offset).await?,
                            StreamItem::GetAck { offset } => {
                                writer.mark_applied(offset).await?;
                                link.ack_now.notify_one();
                            }
                        }
                    }
                }
                Segment::Closed(reason) => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    return Err(ShardError::LinkLost(reason));
                }
            }
            if resumable && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = std::time::Instant::now();
                save_checkpoint(applied.load(Ordering::Acquire)).map_err(state_err(checkpoint.path()))?;
            }
        }
    }
    .await;

    // Whatever happened, what is in flight to the target is drained (or, when stopping
    // and the target does not answer, given up) and the checkpoint records exactly what
    // the target acknowledged.
    link.abort();
    let flushed = drain(&writer, shutdown).await;
    publisher.abort();
    Publisher {
        status: status.clone(),
        link: link_counters,
        spool,
        stream_start,
        writer: writer.clone(),
        applied: applied.clone(),
        base,
    }
    .publish(&mut true);
    if resumable {
        save_checkpoint(applied.load(Ordering::Acquire)).map_err(state_err(checkpoint.path()))?;
    }
    let result = match (result, copy) {
        (Err(ShardError::Write(e @ WriteError::KeyExists { .. })), Some(CopyStart::Occupied))
        | (
            Err(ShardError::Load(LoadError::Write(e @ WriteError::KeyExists { .. }))),
            Some(CopyStart::Occupied),
        ) => Err(ShardError::PreexistingKey(e)),
        (r, _) => r,
    };
    result?;
    match flushed {
        // Stopped on request while the target did not answer: what was not acknowledged
        // is still after the checkpoint, so the next run applies it.
        Err(WriteError::Abandoned) => Ok(()),
        other => other.map_err(ShardError::from),
    }
}

/// How long a stop waits for the target to acknowledge what is in flight.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// Wait for the writer to be acknowledged; when a stop is asked for (before or during the
/// wait), wait at most [`STOP_DRAIN`], then give up what the target has not acknowledged.
async fn drain(writer: &Writer, mut shutdown: watch::Receiver<bool>) -> Result<(), WriteError> {
    let flush = writer.flush();
    tokio::pin!(flush);
    if !*shutdown.borrow() {
        tokio::select! {
            r = &mut flush => return r,
            _ = shutdown.changed() => {}
        }
    }
    match tokio::time::timeout(STOP_DRAIN, &mut flush).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("the target did not acknowledge every write in time; stopping without them (they stay after the checkpoint and are applied on the next run)");
            writer.abandon().await;
            flush.await
        }
    }
}

/// Before the snapshot's first write: find out whether the shard's slots in the target
/// hold this sync's own keys from an interrupted copy (then they are removed), nothing,
/// or someone else's keys (then the conflict policy decides).
async fn prepare_copy(
    spec: &ShardSpec,
    place: &Place<'_>,
    writer: &Writer,
    connect: &ConnectOptions,
) -> Result<CopyStart, ShardError> {
    let source = place.source.to_string();
    let scope = CopyScope {
        target: &spec.target,
        connect,
        cluster: writer.target().cluster,
        slots: &place.ranges,
        target_db: spec.options.target_db,
        source: &source,
    };
    let start = begin_copy(&scope).await?;
    match start {
        CopyStart::Fresh => {
            tracing::info!(
                shard = spec.serial,
                "the target holds no keys in this shard's slots: copying into empty slots"
            )
        }
        CopyStart::Restarted { removed } => {
            tracing::warn!(shard = spec.serial, removed, "an earlier copy of this shard into empty slots was interrupted: removed its keys from the target to copy again from empty slots")
        }
        CopyStart::Occupied => {
            tracing::info!(shard = spec.serial, conflict = ?spec.options.conflict, "the target held keys in this shard's slots before this sync: existing keys meet the conflict policy")
        }
    }
    Ok(start)
}

/// What the status is refreshed from, for one connection's sync.
struct Publisher {
    status: Arc<ShardStatus>,
    link: Arc<LinkCounters>,
    spool: Arc<Spool>,
    stream_start: u64,
    writer: Writer,
    applied: Arc<AtomicU64>,
    base: WriterTotals,
}

impl Publisher {
    /// Copy the hot counters into the shard's status. `shown_stall`: whether
    /// `last_error` shows the writer's stall now (so it is cleared when that ends).
    fn publish(&self, shown_stall: &mut bool) {
        let status = &self.status;
        // A target that refuses writes for now (OOM, LOADING, down) is retried without
        // end; the operator sees why the applied offset stands still.
        match self.writer.stall() {
            Some(why) => {
                status.set_error(Some(format!(
                    "{STALL_PREFIX}; retrying with back-off: {why}"
                )));
                *shown_stall = true;
            }
            None if *shown_stall => {
                if status
                    .last_error()
                    .is_some_and(|e| e.starts_with(STALL_PREFIX))
                {
                    status.set_error(None);
                }
                *shown_stall = false;
            }
            None => {}
        }
        let (link, base) = (&self.link, &self.base);
        let c = &status.counters;
        c.rdb_bytes_received
            .store(link.rdb_received.load(Ordering::Relaxed), Ordering::Relaxed);
        c.rdb_bytes_total
            .store(link.rdb_total.load(Ordering::Relaxed), Ordering::Relaxed);
        c.source_offset.store(
            self.stream_start + link.stream_received.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        c.applied_offset
            .store(self.applied.load(Ordering::Acquire), Ordering::Relaxed);
        c.spill_bytes
            .store(self.spool.backlog().1, Ordering::Relaxed);
        let w = self.writer.stats();
        c.keys_applied
            .store(base.keys_applied + w.keys_written, Ordering::Relaxed);
        c.keys_skipped
            .store(base.keys_skipped + w.skipped_existing, Ordering::Relaxed);
        c.keys_expired
            .store(base.keys_expired + w.expired, Ordering::Relaxed);
        c.keys_filtered
            .store(base.keys_filtered + w.filtered, Ordering::Relaxed);
        c.keys_failed
            .store(base.keys_failed + w.failed(), Ordering::Relaxed);
        c.commands_applied.store(
            base.commands_applied + w.commands_written,
            Ordering::Relaxed,
        );
        status.update_caught_up();
    }
}

const STALL_PREFIX: &str = "the target is not accepting writes";

/// How often the status (and so /status, /metrics and "ready") is refreshed:
/// often enough that a lag reading is about the data, not about this rhythm.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How often the checkpoint file is rewritten.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The shard's writer-owned totals when a connection's writer started.
#[derive(Debug, Clone, Copy)]
struct WriterTotals {
    keys_applied: u64,
    keys_skipped: u64,
    keys_expired: u64,
    keys_filtered: u64,
    keys_failed: u64,
    commands_applied: u64,
}

impl WriterTotals {
    fn read(c: &crate::status::ShardCounters) -> WriterTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterTotals {
            keys_applied: g(&c.keys_applied),
            keys_skipped: g(&c.keys_skipped),
            keys_expired: g(&c.keys_expired),
            keys_filtered: g(&c.keys_filtered),
            keys_failed: g(&c.keys_failed),
            commands_applied: g(&c.commands_applied),
        }
    }
}
