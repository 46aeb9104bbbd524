//! The replication socket after the handshake: one task reads everything the
//! source sends into the spool (snapshot bytes, then stream bytes), another
//! sends `REPLCONF ACK <applied offset>` every second and whenever asked.
//!
//! Reading never waits for the target, so the source's output buffer for us
//! stays small however slow the target is; the spool absorbs the difference.
//!
//! The ACKs report the offset applied to the target (the writer's watermark), not
//! what was received: the source's view of this replica (`INFO replication`, `WAIT`)
//! then says how far the target is. Before the snapshot is loaded that is 0, and a
//! diskless source needs that first ACK all the same to start streaming.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsm_client::{Connection, FrameReader, FrameWriter};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::handshake::RdbFraming;
use super::spool::{Segment, Spool};
use rsm_client::throttle::Throttle;

/// Largest piece read from the socket at once; each read becomes one spool segment.
const READ_CHUNK: usize = 256 * 1024;
/// The source drops a replica that has not acknowledged within `repl-timeout`
/// (60 s by default); once a second is what Redis's own replicas do.
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Shared between the link and the engine. Per connection: the shard's status adds them
/// to what it showed before (the stream's start offset for `stream_received`).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Snapshot bytes received so far.
    pub rdb_received: AtomicU64,
    /// Snapshot size when the source said it (`$<len>` transfers); 0 if unknown.
    pub rdb_total: AtomicU64,
    /// Stream bytes received (the source's offset is the start offset plus this).
    pub stream_received: AtomicU64,
}

/// Handles to the running link tasks.
pub struct Link {
    /// Reads the socket into the spool until it closes or a stop comes.
    reader: JoinHandle<()>,
    /// Writes the ACKs on the socket's other half.
    acker: JoinHandle<()>,
    /// Ask for an ACK now (the stream carried `REPLCONF GETACK`).
    pub ack_now: Arc<Notify>,
}

impl Link {
    /// Start reading. `applied` is the offset the ACKs report; `framing` is
    /// `Some` when a snapshot comes first. `pace` (`--max-bandwidth`) slows the reading
    /// of the snapshot, and so the source's sending (TCP back-pressure). The stream is not
    /// paced here: `--max-ops` bounds the commands sent to the target instead.
    pub fn spawn(
        conn: Connection,
        framing: Option<RdbFraming>,
        spool: Arc<Spool>,
        counters: Arc<LinkCounters>,
        applied: Arc<AtomicU64>,
        pace: Option<Arc<Throttle>>,
        shutdown: watch::Receiver<bool>,
    ) -> Link {
        let (reader, writer) = conn.into_split();
        let ack_now = Arc::new(Notify::new());
        let snapshot_done = Arc::new(Notify::new());
        // No ACK while a snapshot arrives, as Redis's own replicas send none before they have
        // it; from its end on, once a second.
        let acks_enabled = framing.is_none();
        let reader_task = tokio::spawn(read_loop(
            reader,
            framing,
            spool,
            counters,
            snapshot_done.clone(),
            pace,
            shutdown.clone(),
        ));
        let acker = tokio::spawn(ack_loop(
            writer,
            applied,
            ack_now.clone(),
            snapshot_done,
            acks_enabled,
            shutdown,
        ));
        Link {
            reader: reader_task,
            acker,
            ack_now,
        }
    }

    /// Stop both tasks (the socket closes when they are gone).
    pub fn abort(&self) {
        self.reader.abort();
        self.acker.abort();
    }
}

/// A link dropped without `abort` must not go on reading into a spool nobody takes from,
/// nor ACKing for a session that is gone.
impl Drop for Link {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Read until the socket ends or a stop comes, then push `Closed` with the reason: the
/// session's only way to learn that the link is over.
async fn read_loop(
    mut reader: FrameReader,
    framing: Option<RdbFraming>,
    spool: Arc<Spool>,
    counters: Arc<LinkCounters>,
    snapshot_done: Arc<Notify>,
    pace: Option<Arc<Throttle>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pace = pace.as_deref();
    // A stop ends the reading too: the session takes the `Closed` that follows for it.
    let result = tokio::select! {
        r = read_everything(&mut reader, framing, &spool, &counters, &snapshot_done, pace) => r,
        _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => Err("stopped".to_string()),
    };
    let reason = match result {
        Ok(()) => "source closed the replication link".to_string(),
        Err(e) => e,
    };
    // A spool that cannot take `Closed` is broken, and hands its error to the consumer.
    if let Err(e) = spool.push(Segment::Closed(reason)) {
        tracing::error!(error = %e, "cannot write to the spool");
    }
}

/// The snapshot, if one comes, as `Rdb` segments and its end; then the stream as `Stream`
/// segments, until the socket fails.
async fn read_everything(
    reader: &mut FrameReader,
    framing: Option<RdbFraming>,
    spool: &Spool,
    counters: &LinkCounters,
    snapshot_done: &Notify,
    pace: Option<&Throttle>,
) -> Result<(), String> {
    let push = |seg: Segment| spool.push(seg).map_err(|e| format!("spool: {e}"));
    match framing {
        None => {}
        Some(RdbFraming::Sized(len)) => {
            // The size is known up front only here: /status shows a percentage.
            counters.rdb_total.store(len, Ordering::Relaxed);
            let mut remaining = len;
            while remaining > 0 {
                let want = remaining.min(READ_CHUNK as u64) as usize;
                let chunk = reader.read_raw(want).await.map_err(|e| e.to_string())?;
                remaining -= chunk.len() as u64;
                counters
                    .rdb_received
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let n = chunk.len() as u64;
                push(Segment::Rdb(chunk))?;
                // Not reading is what slows the source's sender down (TCP back-pressure).
                if let Some(t) = pace {
                    t.pace(n).await;
                }
            }
            push(Segment::RdbEnd)?;
            // ACKs from here on, the first at once.
            snapshot_done.notify_one();
        }
        Some(RdbFraming::EofMark(mark)) => {
            read_until_mark(reader, &mark, &push, counters, pace).await?;
            push(Segment::RdbEnd)?;
            snapshot_done.notify_one();
        }
    }
    // The stream, for as long as the socket lasts: spooled as read, never parsed here (the
    // session decodes it, with its offsets, when it gets to it).
    loop {
        let chunk = reader
            .read_raw(READ_CHUNK)
            .await
            .map_err(|e| e.to_string())?;
        counters
            .stream_received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        push(Segment::Stream(chunk))?;
    }
}

/// A diskless snapshot ends with the 40-byte mark from its header. Like Redis,
/// compare the last 40 bytes after each read; keep those 40 back until more
/// arrive so the mark itself is never passed on as snapshot data.
async fn read_until_mark(
    reader: &mut FrameReader,
    mark: &[u8; 40],
    push: &impl Fn(Segment) -> Result<(), String>,
    counters: &LinkCounters,
    pace: Option<&Throttle>,
) -> Result<(), String> {
    let mut tail = BytesMut::new();
    loop {
        let chunk = reader
            .read_raw(READ_CHUNK)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(t) = pace {
            t.pace(chunk.len() as u64).await;
        }
        tail.extend_from_slice(&chunk);
        // The mark can only end a read: a diskless source sends no stream byte before our
        // first ACK, and that goes out only once the mark is seen.
        if tail.len() >= mark.len() && tail.ends_with(mark) {
            let data = tail.split_to(tail.len() - mark.len());
            counters
                .rdb_received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if !data.is_empty() {
                push(Segment::Rdb(data.freeze()))?;
            }
            return Ok(());
        }
        // All but the last 40 bytes is surely data: the mark may still be split between this
        // read and the next.
        if tail.len() > mark.len() {
            let data: Bytes = tail.split_to(tail.len() - mark.len()).freeze();
            counters
                .rdb_received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            push(Segment::Rdb(data))?;
        }
    }
}

/// ACKs once a second (well inside `repl-timeout`), at once when the stream asks
/// (`GETACK`), and a last one at a stop.
async fn ack_loop(
    mut writer: FrameWriter,
    applied: Arc<AtomicU64>,
    ack_now: Arc<Notify>,
    snapshot_done: Arc<Notify>,
    mut enabled: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ACK_INTERVAL);
    // A late tick is not made up for with a burst of ACKs.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ack_now.notified() => {}
            // A diskless source holds the stream back until the first ACK
            // after the snapshot, so send one the moment it has arrived.
            _ = snapshot_done.notified(), if !enabled => enabled = true,
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                // One last ACK so the source knows how far we got.
                send_ack(&mut writer, &applied).await;
                return;
            }
        }
        // A failed send means the socket is gone: the reader ends the link.
        if enabled && !send_ack(&mut writer, &applied).await {
            return;
        }
    }
}

/// `REPLCONF ACK <applied>`; false once the socket cannot be written.
async fn send_ack(writer: &mut FrameWriter, applied: &AtomicU64) -> bool {
    let offset = applied.load(Ordering::Acquire).to_string();
    writer.send(&["REPLCONF", "ACK", offset.as_str()]);
    writer.flush().await.is_ok()
}
