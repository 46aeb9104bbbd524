//! One connection's worth of a shard's sync: the resume point, the target, the handshake
//! in turn with the other shards, then the snapshot and the stream until the link ends or
//! a stop is asked for, then the close that drains the writer and writes the checkpoint.
//!
//! What it promises: a checkpoint exists only once the snapshot is wholly acknowledged by
//! the target, and it never records more than the writer's watermark.
//!
//! Three offsets, each never past the one before: what the link received, the writer's
//! watermark (everything up to it acknowledged by the target's masters), and the durable
//! offset (what of the watermark a replica of each of those masters was seen to hold; see
//! `rsm_writer::durable`). Only the durable offset counts as applied: it is the applied
//! offset `/status` shows, the floor saved in the target's marker and the checkpoint (the
//! ACKs to the source alone report the watermark). A master acknowledges before its
//! replicas have the write, and after its failover the next session resumes from the
//! floor: a floor past what the promoted replica holds would skip writes that replica never
//! got. Past the floor, on a target that takes transactions, the slot markers settle per
//! slot what is in (a command not safe to apply twice is committed with its slot's marker
//! in one `MULTI`/`EXEC`), so a resume applies each command once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsm_client::{ConnectOptions, Connection};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::publish::Publisher;
use super::timing::{Confirmed, Timing, CONFIRM_EVERY};
use super::{state_err, Place, ShardError, ShardSpec};
use crate::loader::{LoadError, Loader, LoaderOptions};
use crate::replay::{flush_of, own_slots_only, prepare, Replay};
use rsm_command::entry::ReplOffset;
use rsm_command::table::CommandTable;
use rsm_command::ConflictPolicy;
use rsm_replica::checkpoint::{Checkpoint, CheckpointFile};
use rsm_replica::handshake::{handshake_with, read_rdb_framing, ResumePoint, SyncStart};
use rsm_replica::link::{Link, LinkCounters};
use rsm_replica::spool::{Segment, Spool};
use rsm_replica::stream::{StreamItem, StreamReader};
use rsm_status::{now_ms, Phase, ShardStatus};
use rsm_writer::durable::Durability;
use rsm_writer::progress::Progress;
use rsm_writer::sync_marker::{
    begin_copy, flush_shard_keys, home_db, read_progress, CopyScope, CopyStart, FlushScope, Marker,
    MarkerKeeper,
};
use rsm_writer::{WriteError, Writer, WriterOptions};

/// How long a stop waits for the target to acknowledge what is in flight. Past it, what
/// is still in flight is abandoned: it stays after the floor, and the next run sends it
/// again (the slot markers skip the non-idempotent writes the target did apply).
const STOP_DRAIN: Duration = Duration::from_secs(10);
/// How long a stop while streaming goes on applying what was already received. With
/// [`STOP_DRAIN`] and the last checkpoint it stays well inside the 30 s the README
/// promises for a stop (the binaries enforce that bound themselves).
const STOP_APPLY: Duration = Duration::from_secs(10);

/// A finished check: the checker back, the watermark it was about, the writer's count
/// of target answers when it began, and its answer.
type Confirmation = (Durability, u64, u64, Result<(), String>);

/// What a session needs from the shard's loop.
pub(super) struct Context<'a> {
    /// The shard's configuration: source, target, options, state folder.
    pub spec: &'a ShardSpec,
    /// The node synced from on this connection, and the shard's slots.
    pub place: &'a Place<'a>,
    /// The shard's status, across sessions: phases and errors are set here.
    pub status: &'a Arc<ShardStatus>,
    /// The operator's local checkpoint: written, never what a resume starts from (the
    /// target's floor is).
    pub checkpoint: &'a CheckpointFile,
    /// The full-sync permits (`--sync-parallel`), shared by every shard.
    pub permits: &'a Arc<Semaphore>,
    /// The source's command table: which arguments are keys, for the filter and routing.
    pub table: &'a CommandTable,
    /// Turns true when a stop is asked for.
    pub shutdown: watch::Receiver<bool>,
}

/// The replication connection, accepted: where its data starts and how it arrives.
struct Accepted {
    /// Past PSYNC's reply: the snapshot's framing line (a full sync) or the stream is next.
    conn: Connection,
    /// Full or continue, with the replication id and the offset the stream starts after.
    start: SyncStart,
    /// Held during a full sync (`--sync-parallel`), until its snapshot is in the target.
    permit: Option<OwnedSemaphorePermit>,
}

/// A running session, between the handshake and the close.
struct Session<'a> {
    cx: Context<'a>,
    /// This session's writer; a new session makes a new one (its counters carry on in the
    /// shard's status).
    writer: Writer,
    /// The writer's watermark: acknowledged by the target's masters. The ACKs to the source
    /// report it; nothing else counts it as applied.
    applied: Arc<AtomicU64>,
    /// What of `applied` is durable (see [`Durability`]): the only offset reported as
    /// applied, saved as the floor or checkpointed. `None` until the snapshot is.
    durable: Arc<AtomicU64>,
    /// When to check the replicas and checkpoint, and what is durable so far.
    timing: Timing,
    /// The checker of the target's replicas. `None` while a check runs: it travels with the
    /// check's task and comes back in its [`Confirmation`].
    durability: Option<Durability>,
    /// A check of `durability` under way, for the watermark it was started at.
    confirming: Option<JoinHandle<Confirmation>>,
    /// What the link received and the session has not taken yet.
    spool: Arc<Spool>,
    /// The replication socket's tasks: the reader into the spool, the ACKs.
    link: Link,
    /// The status task. Aborted by the close: a dropped handle would leave it running.
    publisher: JoinHandle<()>,
    /// What the status task reads, for one last refresh at the close.
    publish_from: Publisher,
    /// The source's replication id, saved with the floor: PSYNC resumes with both.
    replid: String,
    /// The offset the stream starts after: the snapshot's (`FULLRESYNC`) or the resume point.
    stream_start: u64,
    /// The snapshot's loader, from its set-up to its end; `None` while streaming.
    loader: Option<Loader>,
    /// What the target held in the shard's slots when this full sync began; `None` when
    /// continuing.
    copy: Option<CopyStart>,
    /// Stream bytes to entries, each with the offset just after it.
    stream: StreamReader,
    /// The full-sync permit, given back once the snapshot is in the target.
    permit: Option<OwnedSemaphorePermit>,
    /// The target holds a complete snapshot plus a known prefix of the stream: only then
    /// may a checkpoint exist.
    resumable: bool,
    /// The periodic checkpoint being written off the runtime's threads.
    saving: Option<JoinHandle<std::io::Result<()>>>,
    /// The shard's record in the target, and the connection that keeps its floor.
    marker: Option<Marker>,
    /// Saves `marker` over a connection of its own, found again when the key's slot moves.
    keeper: MarkerKeeper,
    /// The floor last saved in the target, so that an unchanged one is not written again.
    floor_saved: Option<u64>,
    /// Floor saves failed in a row, for a warning on the 1st, 2nd, 4th, 8th, … only.
    floor_failures: u64,
}

/// One connection's sync. `Ok` only when asked to stop.
pub(super) async fn sync_once(cx: Context<'_>) -> Result<(), ShardError> {
    // Everything before the session reads or waits (a full-sync permit, the source's
    // BGSAVE) and writes nothing: a stop ends it where it stands.
    let mut shutdown = cx.shutdown.clone();
    let prelude = tokio::select! {
        p = prelude(&cx) => p?,
        _ = stop_asked(&mut shutdown) => return Ok(()),
    };
    let (writer, connect, accepted, recorded) = prelude;
    let Some(mut session) = Session::start(cx, writer, &connect, accepted, recorded).await? else {
        return Ok(());
    };
    // Whatever `run` ends with goes through the close: the writer is drained (or, on a
    // stop, given up after a bound) and what is durable is recorded either way.
    let result = session.run().await;
    session.close(result).await
}

/// The target's writer and its record of this shard, then the source's acceptance.
async fn prelude(
    cx: &Context<'_>,
) -> Result<(Writer, ConnectOptions, Accepted, Option<(Marker, Progress)>), ShardError> {
    // The target first: while it is down there is no point asking the source for
    // anything, least of all a full sync (a fork) that could not be loaded. And the
    // target is the record of progress: where to resume comes from it.
    let (writer, connect) = connect_writer(cx.spec, cx.status).await?;
    let recorded = recorded_progress(cx, &writer, &connect).await?;
    // Resume only where the target says: its marker's floor and replid. A marker without a
    // floor (a copy whose snapshot never became durable) gives none: a full sync.
    let mut resume = recorded
        .as_ref()
        .and_then(|(m, _)| m.resume_point())
        .map(|(replid, applied, _)| ResumePoint { replid, applied });
    note_local_checkpoint(cx, resume.as_ref())?;
    let accepted = handshake_in_turn(cx, &mut resume).await?;
    Ok((writer, connect, accepted, recorded))
}

/// Where this shard's copy goes, for the target's markers.
fn copy_scope<'b>(
    cx: &'b Context<'_>,
    connect: &'b ConnectOptions,
    cluster: bool,
    source: &'b str,
) -> CopyScope<'b> {
    CopyScope {
        target: &cx.spec.target,
        connect,
        cluster,
        slots: &cx.place.ranges,
        target_db: cx.spec.options.target_db,
        source,
    }
}

/// Exactly-once needs transactions; a target without them (some proxies) gets the writes
/// at least once, and the operator is told so, once per session and in `/status`.
fn exactly_once(cx: &Context<'_>, writer: &Writer) -> bool {
    let on = writer.target().transactions;
    cx.status.set_exactly_once(on);
    if !on {
        tracing::warn!(shard = cx.spec.serial, "the target refuses MULTI: writing at least once, not exactly once (a command not safe to apply twice can be applied again after a crash or a lost connection)");
    }
    on
}

/// The keeper of this shard's marker: the key [`begin_copy`] and [`read_progress`] use,
/// named by the shard's slots, so that a restart on another node of them finds it.
fn keep_marker(cx: &Context<'_>, writer: &Writer, connect: &ConnectOptions) -> MarkerKeeper {
    let source = cx.place.source.to_string();
    MarkerKeeper::new(&copy_scope(cx, connect, writer.target().cluster, &source))
}

/// What the target records of this shard's sync (its marker with a floor, and the slot
/// markers beyond it), if anything. Read before PSYNC: it decides between asking the
/// source to continue and asking for a full sync.
async fn recorded_progress(
    cx: &Context<'_>,
    writer: &Writer,
    connect: &ConnectOptions,
) -> Result<Option<(Marker, Progress)>, ShardError> {
    let source = cx.place.source.to_string();
    let scope = copy_scope(cx, connect, writer.target().cluster, &source);
    let recorded = read_progress(&scope).await?;
    if let Some((m, p)) = &recorded {
        tracing::info!(shard = cx.spec.serial, floor = ?m.floor, replid = ?m.replid, marked_slots = p.applied.len(), "the target records this shard's progress: resuming from it");
    }
    Ok(recorded)
}

/// The local checkpoint only informs: the target decides. Say so when they disagree.
fn note_local_checkpoint(cx: &Context<'_>, resume: Option<&ResumePoint>) -> Result<(), ShardError> {
    let saved = cx
        .checkpoint
        .load()
        .map_err(state_err(cx.checkpoint.path()))?;
    match (saved, resume) {
        // Checkpoints are named by shard number, and numbers follow the source's shards:
        // after they changed, the file is another slot set's.
        (Some(c), None) if c.slots.is_some() && c.slots != cx.place.slots => {
            tracing::warn!(shard = cx.spec.serial, checkpoint = %cx.checkpoint.path().display(), checkpoint_slots = c.slots.as_deref().unwrap_or(""), slots = cx.place.slots.as_deref().unwrap_or(""), "the source's shards changed since the last run (the local checkpoint is of other slots): this shard copies its slots in full")
        }
        (Some(c), None) => {
            tracing::warn!(shard = cx.spec.serial, checkpoint = %cx.checkpoint.path().display(), applied = c.applied, "a local checkpoint exists but the target records no progress of this sync (a fresh, flushed or different target): syncing in full")
        }
        (Some(c), Some(r)) if c.applied != r.applied => tracing::info!(
            shard = cx.spec.serial,
            local = c.applied,
            target = r.applied,
            "the local checkpoint and the target's record differ: the target's wins"
        ),
        _ => {}
    }
    Ok(())
}

/// The session's writer, and the options its other target connections (the marker, the
/// replica checks, the copy's start) start from.
async fn connect_writer(
    spec: &ShardSpec,
    status: &ShardStatus,
) -> Result<(Writer, ConnectOptions), ShardError> {
    let mut options = WriterOptions::new(
        spec.target.clone(),
        spec.target_connect(),
        spec.options.clone(),
    );
    // A sync waits for its target: a write refused for now (OOM, LOADING, a lost node) is
    // retried with back-off for as long as it takes, and /status shows why.
    options.retry_forever = true;
    // A write refused for good stops the shard rather than being counted and passed: what
    // follows it in the stream may depend on it. The watermark stays before it.
    options.stop_on_failure = true;
    // A replaced target master may have lost writes it acknowledged: only a new session,
    // from the floor and the new masters' slot markers, finds out which.
    options.end_on_lost_master = true;
    // Every writer of this shard counts into the shard's status, so its figures carry on
    // across reconnections without being copied.
    options.stats = status.counters.writes.clone();
    let connect = options.connect.clone();
    Ok((Writer::connect(options).await?, connect))
}

/// PSYNC, taking a full-sync permit first when no continue is possible, and again
/// (in turn with the other shards) when the source refuses to continue.
async fn handshake_in_turn(
    cx: &Context<'_>,
    resume: &mut Option<ResumePoint>,
) -> Result<Accepted, ShardError> {
    let (spec, status) = (cx.spec, cx.status);
    let mut permit = None;
    loop {
        // A full sync forks the source and loads a whole snapshot into the target: at most
        // `--sync-parallel` at once, so the permit comes before `PSYNC ? -1`. A continue
        // costs neither and takes none.
        if resume.is_none() && permit.is_none() {
            status.set_phase(Phase::Queued);
            permit = Some(
                cx.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ShardError::LinkLost("full-sync permits closed".into()))?,
            );
        }
        status.set_phase(Phase::Handshake);
        // Only a full sync makes the source wait (its fork, `repl-diskless-sync-delay`); a
        // continue is answered at once.
        let asks_full_sync = resume.is_none();
        let (conn, info, start) = handshake_with(
            cx.place.source,
            &spec.source_connect(),
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
            *resume = None;
            continue;
        }
        tracing::info!(shard = spec.serial, source = %cx.place.source, server = %info.describe(), start = ?start, "replication accepted");
        return Ok(Accepted {
            conn,
            start,
            permit,
        });
    }
}

impl<'a> Session<'a> {
    /// Start the link (it spools at the source's pace from here on), and for a full sync
    /// check the target's slots and set up the loader. `None` when a stop came while the
    /// source was still preparing its snapshot (a BGSAVE may take minutes).
    ///
    /// The link starts before the target's slots are checked (`prepare_snapshot` may scan
    /// and remove an interrupted copy's keys): meanwhile the source's output buffer for us
    /// must not grow, or the source drops us (`client-output-buffer-limit replica`).
    /// Nothing is durable before the snapshot is, and `/status` shows only the durable
    /// offset: "applied" there means held by a replica too. A continue starts durable and
    /// resumable at its resume point (the floor it resumes from was saved only once
    /// durable, over a target that holds the snapshot), and its writer learns the slot
    /// markers before the first stream write, so that a command the target already holds
    /// is not sent again; a full sync gets its marker, with a new sync id, in
    /// `prepare_snapshot`.
    async fn start(
        cx: Context<'a>,
        writer: Writer,
        connect: &ConnectOptions,
        accepted: Accepted,
        recorded: Option<(Marker, Progress)>,
    ) -> Result<Option<Session<'a>>, ShardError> {
        let (mut conn, start, permit) = (accepted.conn, accepted.start, accepted.permit);
        let status = cx.status;
        let spool = new_spool(cx.spec);
        let link_counters = Arc::new(LinkCounters::default());
        // The writer owns the applied-offset watermark; the ACKs report it.
        let applied = writer.applied_offset();
        let durable = Arc::new(AtomicU64::new(0));
        let mut shutdown = cx.shutdown.clone();
        let (replid, stream_start, framing) = tokio::select! {
            r = open_replication(&cx, &mut conn, start, &applied, &durable) => r?,
            _ = stop_asked(&mut shutdown) => return Ok(None),
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
            cx.spec.options.limits.snapshot_bytes.clone(),
            cx.shutdown.clone(),
        );
        let publish_from = Publisher {
            status: status.clone(),
            link: link_counters,
            spool: spool.clone(),
            stream_start,
            writer: writer.clone(),
            applied: durable.clone(),
        };
        let publisher = publish_from.clone().spawn();
        let keeper = keep_marker(&cx, &writer, connect);
        let cluster = writer.target().cluster;
        let durability = Durability::new(
            cx.spec.target.clone(),
            connect.clone(),
            cluster,
            home_db(cluster, cx.spec.options.target_db),
        );
        let marker = match (full, recorded) {
            (false, Some(recorded)) => Some(resume_from_markers(&cx, &writer, recorded).await?),
            _ => None,
        };
        let session = Session {
            cx,
            writer,
            applied,
            timing: Timing::new((!full).then_some(stream_start), Instant::now()),
            durable,
            durability: Some(durability),
            confirming: None,
            spool,
            link,
            publisher,
            publish_from,
            replid,
            stream_start,
            loader: None,
            copy: None,
            stream: StreamReader::new(stream_start),
            permit,
            resumable: !full,
            saving: None,
            marker,
            keeper,
            floor_saved: None,
            floor_failures: 0,
        };
        session.begin(full, connect).await.map(Some)
    }

    /// The first phase: the snapshot's set-up, or the stream from the resume point.
    async fn begin(mut self, full: bool, connect: &ConnectOptions) -> Result<Self, ShardError> {
        if full {
            self.cx.status.set_phase(Phase::LoadingRdb);
            if let Err(e) = self.prepare_snapshot(connect).await {
                // No close runs for a session that did not begin: its tasks end here.
                self.link.abort();
                self.publisher.abort();
                return Err(e);
            }
        } else {
            self.cx.status.set_phase(Phase::Streaming);
            // At once: the floor under the replid the source answered with (after a source
            // failover, the promoted node's, which continues the same history), and a local
            // checkpoint that replaces any older one.
            self.save_checkpoint(self.stream_start)?;
            self.save_floor(self.stream_start).await;
        }
        Ok(self)
    }

    /// Before the snapshot's first write: are the shard's slots in the target empty, this
    /// sync's own from an interrupted copy (then emptied), or the operator's?
    async fn prepare_snapshot(&mut self, connect: &ConnectOptions) -> Result<(), ShardError> {
        let spec = self.cx.spec;
        let source = self.cx.place.source.to_string();
        let scope = CopyScope {
            target: &spec.target,
            connect,
            cluster: self.writer.target().cluster,
            slots: &self.cx.place.ranges,
            target_db: spec.options.target_db,
            source: &source,
        };
        // Before the snapshot's first write: a restarted copy's keys go first, so that a key
        // the source deleted since that copy does not linger in the target.
        let (start, marker) = begin_copy(&scope).await?;
        // Without transactions there are no slot markers to write, so no sync id to set.
        if let Some(sync_id) = marker
            .sync_id()
            .filter(|_| exactly_once(&self.cx, &self.writer))
        {
            // A new sync id: slot markers of an earlier copy skip nothing of this one.
            let progress = Progress {
                sync_id,
                ..Default::default()
            };
            self.writer.set_progress(progress).await?;
        }
        // No floor yet: until the snapshot is in and durable a restart has nothing to resume
        // from, and copies again.
        self.marker = Some(marker);
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
            CopyStart::Reshaped { removed } => {
                tracing::warn!(shard = spec.serial, removed, "the source's shards changed since this sync began (slots moved between shards, or a shard was added or removed): this shard's slots were copied by this sync's earlier shards; removed their keys to copy these slots again from the node now serving them")
            }
        }
        if matches!(
            start,
            CopyStart::Fresh | CopyStart::Restarted { .. } | CopyStart::Reshaped { .. }
        ) {
            // Every key in these slots is this sync's own: a RESTORE re-sent after a lost
            // target connection may meet the key it already wrote, and that is no conflict.
            self.writer
                .set_conflict_policy(ConflictPolicy::Rewrite)
                .await?;
        }
        // Function libraries live outside the slots: only a restarted copy knows that the
        // ones already there are likely its own.
        let functions = match start {
            CopyStart::Restarted { .. } | CopyStart::Reshaped { .. } => ConflictPolicy::Rewrite,
            _ => spec.options.conflict,
        };
        self.copy = Some(start);
        self.loader = Some(Loader::new(
            LoaderOptions {
                big_key_threshold: None,
                conflict: functions,
                own_slots: self.cx.place.own.clone(),
            },
            self.writer.clone(),
        ));
        Ok(())
    }

    /// Take segments from the spool until the link ends or a stop is asked for.
    ///
    /// A stop never waits on the link alone (its last segment may never come: a spool
    /// that broke, a source that went quiet). During the snapshot it ends the session at
    /// once: nothing of a half-loaded copy is kept (no checkpoint, no floor), so applying
    /// more of it is wasted time. While streaming, what was received is applied for at most
    /// [`STOP_APPLY`]; what is left stays after the checkpoint for the next run.
    async fn run(&mut self) -> Result<(), ShardError> {
        // At the confirm cadence, not the checkpoint's: on an idle source the only thing
        // that moves the reported offset is the source's PING every 10 s, and a second
        // between its write and its confirmation kept a caught-up shard "lagging" for it.
        let mut tick = tokio::time::interval(CONFIRM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.cx.shutdown.clone();
        // Set once a stop is seen while streaming: the end of applying what was received.
        let mut apply_until: Option<tokio::time::Instant> = None;
        loop {
            let segment = tokio::select! {
                seg = self.spool.pop() => seg.map_err(state_err(self.spool.path()))?,
                _ = stop_asked(&mut shutdown), if apply_until.is_none() => {
                    if !self.resumable {
                        return Ok(());
                    }
                    apply_until = Some(tokio::time::Instant::now() + STOP_APPLY);
                    continue;
                }
                _ = sleep_until_some(apply_until) => {
                    tracing::warn!(shard = self.cx.spec.serial, "stopping before all that was received is applied (it stays after the checkpoint; the next run applies it)");
                    return Ok(());
                }
                _ = tick.tick() => {
                    self.tick().await?;
                    continue;
                }
                // A confirmation is taken in when it comes back, not at the next tick.
                done = async {
                    match self.confirming.as_mut() {
                        Some(running) => running.await,
                        None => std::future::pending().await,
                    }
                }, if self.confirming.is_some() => {
                    self.confirming = None;
                    if let Ok((durability, at, answers, result)) = done {
                        self.durability = Some(durability);
                        self.confirmed(at, answers, result);
                    }
                    continue;
                }
            };
            match segment {
                // A step of the snapshot is given up when a stop comes. Safe only there:
                // until the snapshot is wholly acknowledged no checkpoint or floor exists,
                // and a restart copies again into the same slots.
                Segment::Rdb(bytes) => tokio::select! {
                    r = self.on_rdb(bytes) => r?,
                    _ = stop_asked(&mut shutdown) => return Ok(()),
                },
                Segment::RdbEnd => tokio::select! {
                    r = self.on_rdb_end() => r?,
                    _ = stop_asked(&mut shutdown) => return Ok(()),
                },
                // Not raced against the stop, unlike the snapshot's steps: entries are applied
                // until `apply_until`, and a target that takes none is left to the binaries'
                // bound on the whole stop.
                Segment::Stream(bytes) => self.on_stream(&bytes).await?,
                Segment::Closed(reason) => {
                    // The link's reader ends on a stop too: then it is the stop, not a loss.
                    if *self.cx.shutdown.borrow() {
                        return Ok(());
                    }
                    return Err(ShardError::LinkLost(reason));
                }
            }
            // After every segment too, not only on the interval: `Timing` says whether a
            // check or a checkpoint is due, so this costs little when nothing is.
            self.tick().await?;
        }
    }

    /// The periodic work: take in a finished check, move the durable offset, start the next
    /// check, write the checkpoint and the floor, each when [`Timing`] says so.
    async fn tick(&mut self) -> Result<(), ShardError> {
        // Before the snapshot is wholly acknowledged nothing is durable, and no checkpoint or
        // floor may exist.
        if !self.resumable {
            return Ok(());
        }
        // A check that finished since: its answer first, so that what follows starts from it.
        if let Some(done) = self.confirming.take_if(|c| c.is_finished()) {
            if let Ok((durability, at, answers, result)) = done.await {
                self.durability = Some(durability);
                self.confirmed(at, answers, result);
            }
        }
        // Read before asking: only what was acknowledged by now is covered.
        let at = self.applied.load(Ordering::Acquire);
        // After the watermark: every answer to a write the watermark covers was counted
        // before the watermark moved over it (see `WriterStats::answers`).
        let answers = self.writer.answers();
        // No answer since the last good check began: what the watermark gained since wrote
        // nothing (the source's PINGs, filtered commands) and is durable without asking.
        if let Some(idle) = self.timing.idle_advance(at, answers) {
            self.durable.store(idle, Ordering::Release);
        }
        let running = self.confirming.is_some();
        if self.timing.start_confirm(at, running, Instant::now()) {
            // On a task of its own: applying goes on while the check's `WAIT` runs (up to
            // a second per master), and its answer is taken in when it comes back.
            if let Some(mut durability) = self.durability.take() {
                // After the watermark too: it names every master whose replicas must hold
                // what `at` covers.
                let answered = self.writer.answered_by();
                self.confirming = Some(tokio::spawn(async move {
                    let result = durability.confirm(&answered).await;
                    (durability, at, answers, result)
                }));
            }
        }
        // Once a second, both at the durable offset, never the watermark.
        if let Some(Some(durable)) = self.timing.checkpoint_due(Instant::now()) {
            self.save_checkpoint_behind(durable).await?;
            self.save_floor(durable).await;
        }
        Ok(())
    }

    /// A check of the target's replicas came back for the watermark `at`. A failed one moves
    /// nothing: the floor and the reported offset wait for the next (every
    /// [`CONFIRM_EVERY`]), with a warning that does not repeat each time.
    fn confirmed(&mut self, at: u64, answers: u64, result: Result<(), String>) {
        match (self.timing.confirmed(at, answers, result.is_ok()), result) {
            (Confirmed::Advanced(durable), _) => self.durable.store(durable, Ordering::Release),
            (
                Confirmed::Failed {
                    failures,
                    warn: true,
                },
                Err(why),
            ) => {
                tracing::warn!(shard = self.cx.spec.serial, reason = %why, failures, "writes acknowledged by the target are not confirmed on its replicas yet: the floor and the applied offset wait");
            }
            _ => {}
        }
    }

    /// Wait for a check of everything acknowledged so far (the end of the snapshot, a
    /// close), at most a few tries.
    async fn confirm_now(&mut self) {
        // A check under way holds the checker: wait for it (its answer counts too) rather
        // than start another beside it.
        if let Some(running) = self.confirming.take() {
            if let Ok((durability, at, answers, result)) = running.await {
                self.durability = Some(durability);
                self.confirmed(at, answers, result);
            }
        }
        let Some(mut durability) = self.durability.take() else {
            return;
        };
        let at = self.applied.load(Ordering::Acquire);
        let answers = self.writer.answers();
        let answered = self.writer.answered_by();
        // A few tries, each bounded by the checker's own timeouts: a replica a moment behind
        // should not cost the snapshot its floor, and a target that does not answer must not
        // hold up the end of the snapshot or a close for long.
        for _ in 0..3 {
            let result = durability.confirm(&answered).await;
            let ok = result.is_ok();
            self.confirmed(at, answers, result);
            if ok {
                break;
            }
        }
        self.durability = Some(durability);
    }

    /// The once-a-second checkpoint, written by a blocking-pool thread: its two fsyncs take
    /// ~10 ms on an idle disk and far more on a busy one, and on a runtime thread they would
    /// hold up every task queued there (the writer, the links) with them. One at a time:
    /// while one is still being written, this second's is skipped. Its error surfaces on
    /// the next tick.
    async fn save_checkpoint_behind(&mut self, applied: u64) -> Result<(), ShardError> {
        if let Some(done) = self.saving.take_if(|s| s.is_finished()) {
            self.saved(done).await?;
        }
        if self.saving.is_some() {
            return Ok(());
        }
        let file = self.cx.checkpoint.clone();
        let checkpoint = self.checkpoint_at(applied);
        self.saving = Some(tokio::task::spawn_blocking(move || file.save(&checkpoint)));
        Ok(())
    }

    /// The outcome of a checkpoint written behind; a task that panicked counts as an error.
    async fn saved(&self, saving: JoinHandle<std::io::Result<()>>) -> Result<(), ShardError> {
        let result = saving
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        result.map_err(state_err(self.cx.checkpoint.path()))
    }

    /// Record in the target that everything up to `applied` is in it: a durable offset
    /// (acknowledged by the target's masters and held by a replica of each that has one),
    /// never the bare watermark. A failure only delays the floor: a later one, or the slot
    /// markers, cover what follows.
    async fn save_floor(&mut self, applied: u64) {
        // An idle shard's floor stands still: no write to the target every second for it.
        if self.floor_saved == Some(applied) {
            return;
        }
        // No marker yet (a full sync before `begin_copy`): no record to move.
        let Some(marker) = self.marker.as_mut() else {
            return;
        };
        marker.floor = Some(applied);
        // An offset means something only in its history: a resume sends both in PSYNC.
        marker.replid = Some(self.replid.clone());
        match self.keeper.save(marker).await {
            Ok(()) => {
                self.floor_saved = Some(applied);
                self.floor_failures = 0;
            }
            Err(e) => {
                self.floor_failures += 1;
                if self.floor_failures.is_power_of_two() {
                    tracing::warn!(shard = self.cx.spec.serial, error = %e, failures = self.floor_failures, "could not record the applied offset in the target; retrying");
                }
            }
        }
    }

    /// The local checkpoint at `applied`, for the operator: where the shard stands, read
    /// without asking the target.
    fn checkpoint_at(&self, applied: u64) -> Checkpoint {
        Checkpoint {
            source: self.cx.place.source.to_string(),
            replid: self.replid.clone(),
            applied,
            written_at_ms: now_ms(),
            slots: self.cx.place.slots.clone(),
        }
    }

    /// The checkpoint written here and now, where what follows must wait for it (the start
    /// of a stream, the end of the snapshot, a flush's barrier, the close).
    fn save_checkpoint(&self, applied: u64) -> Result<(), ShardError> {
        self.cx
            .checkpoint
            .save(&self.checkpoint_at(applied))
            .map_err(state_err(self.cx.checkpoint.path()))
    }

    /// Snapshot bytes into the loader. It waits while the writer's buffers are full: the
    /// spool, not the source, absorbs a target slower than the source.
    async fn on_rdb(&mut self, bytes: bytes::Bytes) -> Result<(), ShardError> {
        // Bytes after the end are a broken transfer, never fed to a finished loader.
        let Some(loader) = self.loader.as_mut() else {
            return Err(ShardError::Snapshot(
                "snapshot bytes after the snapshot ended".into(),
            ));
        };
        let n = bytes.len() as u64;
        loader.feed(bytes).await?;
        self.cx
            .status
            .counters
            .rdb_bytes_loaded
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// The snapshot is in the decoder: wait until the target acknowledged all of it, and
    /// only then make the first checkpoint.
    async fn on_rdb_end(&mut self) -> Result<(), ShardError> {
        let Some(done) = self.loader.take() else {
            return Err(ShardError::Snapshot("a second end of snapshot".into()));
        };
        let summary = done.finish().await?;
        if summary.other_slots > 0 {
            tracing::info!(shard = self.cx.spec.serial, keys = summary.other_slots, "snapshot keys of slots moving into this node left out: they are another shard's until the move has settled");
        }
        // Everything up to the snapshot's offset is in the target now, unless a key of it
        // failed: then the watermark stays put and so does the checkpoint. Snapshot entries
        // carry offset 0 and never move the watermark: this mark is what moves it, once every
        // key before it is acknowledged.
        self.writer
            .mark_applied(ReplOffset(self.stream_start))
            .await?;
        self.writer.flush().await?;
        let now_applied = self.applied.load(Ordering::Acquire);
        // Checked, not assumed: short of the snapshot's offset, a key was not applied, and a
        // checkpoint now would claim a copy that is not whole.
        if now_applied != self.stream_start {
            return Err(ShardError::Snapshot(format!(
                "the snapshot ended but the target acknowledged it only up to offset {now_applied} of {}",
                self.stream_start
            )));
        }
        tracing::info!(shard = self.cx.spec.serial, summary = ?summary, copy = ?self.copy, "snapshot loaded");
        // From here a checkpoint and a floor may exist: the target holds the whole snapshot.
        self.resumable = true;
        // The snapshot is the floor only once a replica has it too; otherwise the next
        // tick's check takes over and, until then, a restart copies again.
        self.confirm_now().await;
        if self.timing.durable().is_some() {
            self.save_checkpoint(self.stream_start)?;
            self.save_floor(self.stream_start).await;
        }
        // The permit bounds the snapshots loading at once: the next shard's full sync may
        // start now that this one is in the target.
        drop(self.permit.take());
        self.cx.status.set_phase(Phase::Streaming);
        Ok(())
    }

    /// Stream bytes to entries, each into the writer in stream order, or past it with its
    /// offset marked applied: every entry ends as written, skipped (and counted) or a barrier.
    async fn on_stream(&mut self, bytes: &[u8]) -> Result<(), ShardError> {
        let (spec, status) = (self.cx.spec, self.cx.status);
        self.stream.feed(bytes);
        while let Some(item) = self.stream.next_item()? {
            match item {
                StreamItem::Entry(entry) => {
                    // Relative TTLs (sources up to 6.2 send `EX`, `EXPIRE`) count from the
                    // moment the entry leaves the spool.
                    let (replay, mut dropped) =
                        prepare(self.cx.table, &spec.options.filter, entry, now_ms() as i64);
                    let replay = match &self.cx.place.own {
                        Some(own) => own_slots_only(replay, own, &mut dropped),
                        None => replay,
                    };
                    // Each dropped command counts once; only the routine ones (PING, PUBLISH…)
                    // go unlogged, the rest is data the operator must hear about.
                    for d in &dropped {
                        status
                            .counters
                            .commands_skipped
                            .fetch_add(1, Ordering::Relaxed);
                        if !d.is_routine() {
                            tracing::warn!(shard = spec.serial, command = %d.command, reason = %d.reason, "stream command not applied");
                        }
                    }
                    match replay {
                        // A lone source flush is a barrier, never sent on as it is.
                        Replay::Write(entry) => match flush_of(&entry) {
                            Some((which, offset)) => self.apply_flush(which, offset).await?,
                            None => self.writer.write(entry).await?,
                        },
                        // Nothing to write, but the watermark must pass it, or a filtered
                        // command would hold the applied offset back for ever.
                        Replay::Dropped { offset, .. } => self.writer.mark_applied(offset).await?,
                    }
                }
                // SELECT, PING, REPLCONF, empty transactions: every byte counts in the offset.
                StreamItem::Marker { offset } => self.writer.mark_applied(offset).await?,
                // The source asks how far we are (a `WAIT` on it sends this): its bytes write
                // nothing, and the ACK goes now rather than at the next second.
                StreamItem::GetAck { offset } => {
                    self.writer.mark_applied(offset).await?;
                    self.link.ack_now.notify_one();
                }
            }
        }
        Ok(())
    }

    /// A source `FLUSHALL`/`FLUSHDB` at `offset` (just after it): a barrier in the stream.
    ///
    /// Everything before it is in the target first; then exactly what this shard owns
    /// there is removed ([`flush_shard_keys`]: its slots, its db, what the filter keeps;
    /// never the tool's own keys, never another shard's slots); then, before any later
    /// write goes out, the floor moves to `offset` once a replica holds it. So a restart
    /// never applies the flush again after writes that followed it (their slot markers
    /// would skip them, and they would be lost), and a kill before the floor moved finds
    /// nothing after the flush in the target: running it again is harmless.
    async fn apply_flush(
        &mut self,
        which: FlushScope,
        offset: ReplOffset,
    ) -> Result<(), ShardError> {
        // Everything before the flush acknowledged first: a write still in flight could land
        // after the removal and outlive the flush.
        self.writer.flush().await?;
        let spec = self.cx.spec;
        let source = self.cx.place.source.to_string();
        let connect = spec.target_connect();
        let scope = copy_scope(&self.cx, &connect, self.writer.target().cluster, &source);
        let removed = flush_shard_keys(&scope, which, &spec.options.filter).await?;
        tracing::info!(shard = spec.serial, removed, offset = offset.0, scope = ?which, "a source flush: removed this shard's keys from the target");
        // The removal went outside the writer: only this mark takes its watermark there.
        self.writer.mark_applied(offset).await?;
        self.writer.flush().await?;
        // Before the snapshot is in there is no floor to move.
        if !self.resumable {
            return Ok(());
        }
        let applied = self.applied.load(Ordering::Acquire);
        // Short of the flush's offset, an earlier write was not applied: a floor over the
        // flush would claim it.
        if applied != offset.0 {
            return Err(ShardError::Snapshot(format!(
                "a source flush at offset {} but the target acknowledged only up to {applied}",
                offset.0
            )));
        }
        // Held here, not left to the next tick: the floor must pass the flush before the
        // first write after it goes out.
        while self.timing.durable().is_none_or(|d| d < offset.0)
            || self.floor_saved != Some(offset.0)
        {
            // A stop cannot wait on replicas that may never confirm. Nothing after the flush
            // was written and the floor is still before it: the next run applies the flush
            // again (harmless) and then what follows.
            if *self.cx.shutdown.borrow() {
                return Err(ShardError::LinkLost(
                    "stopped at a source flush; the next run applies it again".into(),
                ));
            }
            self.confirm_now().await;
            if self.timing.durable().is_some_and(|d| d >= offset.0) {
                self.save_floor(offset.0).await;
                if self.floor_saved == Some(offset.0) {
                    self.save_checkpoint(offset.0)?;
                    break;
                }
            }
            // A replica behind, or a floor save refused: try again a check period later.
            tokio::time::sleep(CONFIRM_EVERY).await;
        }
        Ok(())
    }

    /// Whatever happened, what is in flight to the target is drained (or, when stopping
    /// and the target does not answer, given up) and the checkpoint records exactly what
    /// the target acknowledged.
    async fn close(mut self, result: Result<(), ShardError>) -> Result<(), ShardError> {
        // No more stream: what the spool still holds lies after the floor, for the next
        // session to receive again.
        self.link.abort();
        let flushed = drain(&self.writer, self.cx.shutdown.clone()).await;
        // One last refresh once the task is gone, so /status ends on the session's final
        // figures; `true` clears a stall message that no longer holds.
        self.publisher.abort();
        self.publish_from.publish(&mut true);
        // Before the last one, so that an older one cannot land after it.
        if let Some(saving) = self.saving.take() {
            self.saved(saving).await?;
        }
        if self.resumable {
            // Drained: one check covers all the target acknowledged, so the floor records it.
            // Not drained (no answer in time, or the writer stopped on an error): a check
            // would wait on the same target, and the durable offset the last check left is
            // always safe to record.
            if flushed.is_ok() {
                self.confirm_now().await;
            } else if let Some(running) = self.confirming.take() {
                running.abort();
            }
            // Never the watermark: only what a replica holds.
            if let Some(durable) = self.timing.durable() {
                self.save_checkpoint(durable)?;
                self.save_floor(durable).await;
            }
        }
        // A key conflict in slots the target held keys in before this sync is about the
        // operator's data, and the error says so (a copy into empty slots replaces its own
        // keys and never meets one).
        let result = match (result, self.copy) {
            (
                Err(ShardError::Write(e @ WriteError::KeyExists { .. })),
                Some(CopyStart::Occupied),
            )
            | (
                Err(ShardError::Load(LoadError::Write(e @ WriteError::KeyExists { .. }))),
                Some(CopyStart::Occupied),
            ) => Err(ShardError::PreexistingKey(e)),
            (r, _) => r,
        };
        // The session's own error first: it is why the drain could not succeed.
        result?;
        match flushed {
            // Stopped on request while the target did not answer: what was not acknowledged
            // is still after the checkpoint, so the next run applies it.
            Err(WriteError::Abandoned) => Ok(()),
            other => other.map_err(ShardError::from),
        }
    }
}

/// The replication the source accepted: a full sync reads the snapshot's framing; a
/// continue starts every offset at the resume point.
async fn open_replication(
    cx: &Context<'_>,
    conn: &mut Connection,
    start: SyncStart,
    applied: &AtomicU64,
    durable: &AtomicU64,
) -> Result<(String, u64, Option<rsm_replica::handshake::RdbFraming>), ShardError> {
    Ok(match start {
        SyncStart::Full { replid, offset } => {
            (replid, offset, Some(begin_full_sync(cx, conn).await?))
        }
        SyncStart::Continue { replid, offset } => {
            // The new writer's watermark starts where the target already is, not at 0: the
            // stream's marks move it on from there, and the ACKs report it.
            applied.store(offset, Ordering::Release);
            // The floor (or a checkpoint at most that far): confirmed when saved.
            durable.store(offset, Ordering::Release);
            (replid, offset, None)
        }
    })
}

/// Continuing: what the slot markers show applied is not sent again. A target without
/// transactions has no slot markers: everything after the floor is sent again (at least
/// once), and the marker is still kept for its floor.
async fn resume_from_markers(
    cx: &Context<'_>,
    writer: &Writer,
    (marker, progress): (Marker, Progress),
) -> Result<Marker, ShardError> {
    if exactly_once(cx, writer) {
        writer.set_progress(progress).await?;
    }
    Ok(marker)
}

/// A full sync was accepted: count it, drop the old resume point (from the first write of
/// this snapshot on it describes a target that no longer exists; only a loaded snapshot
/// makes a new one) and read how the snapshot is framed.
async fn begin_full_sync(
    cx: &Context<'_>,
    conn: &mut Connection,
) -> Result<rsm_replica::handshake::RdbFraming, ShardError> {
    cx.status
        .counters
        .full_syncs
        .fetch_add(1, Ordering::Relaxed);
    cx.status.set_phase(Phase::WaitingBgsave);
    cx.checkpoint
        .remove()
        .map_err(state_err(cx.checkpoint.path()))?;
    // The framing line comes only once the source has a snapshot to send: the wait for its
    // BGSAVE (or its diskless fork) is here.
    Ok(read_rdb_framing(conn).await?)
}

/// The spool of one connection: memory first, then a spill file in the state folder.
fn new_spool(spec: &ShardSpec) -> Arc<Spool> {
    // The spool's own gauge is not read: the status asks `Spool::backlog` (see `publish`).
    Arc::new(Spool::new(
        spec.state_dir.join(format!("shard-{}.spill", spec.serial)),
        spec.spool_memory,
        Arc::new(AtomicU64::new(0)),
    ))
}

/// Returns once a stop is asked for (at once if it already was).
async fn stop_asked(shutdown: &mut watch::Receiver<bool>) {
    // A closed channel is no stop: wait for ever rather than end the session.
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleep until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wait for the writer to be acknowledged; when a stop is asked for (before or during the
/// wait), wait at most [`STOP_DRAIN`], then give up what the target has not acknowledged.
async fn drain(writer: &Writer, mut shutdown: watch::Receiver<bool>) -> Result<(), WriteError> {
    let flush = writer.flush();
    tokio::pin!(flush);
    // Not stopping: wait as long as the target needs (a sync waits for its target), but
    // notice a stop that comes meanwhile.
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
            // Abandoned writes count as not applied: the watermark, and so the floor, stays
            // before them.
            writer.abandon().await;
            flush.await
        }
    }
}
