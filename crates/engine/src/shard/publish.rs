//! The shard's status, refreshed from the per-connection counters of the link and the
//! spool by a task of its own (the writer counts straight into the shard's status), so that it stays fresh exactly when
//! the shard loop is waiting on a slow or refusing target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsm_replica::link::LinkCounters;
use rsm_replica::spool::Spool;
use rsm_status::ShardStatus;
use rsm_writer::Writer;

/// How often the status (and so /status, /metrics and "ready") is refreshed:
/// often enough that a lag reading is about the data, not about this rhythm.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What the status is refreshed from, for one connection's sync.
#[derive(Clone)]
pub(super) struct Publisher {
    pub status: Arc<ShardStatus>,
    /// This connection's link counters; the status shows them from the stream's start.
    pub link: Arc<LinkCounters>,
    /// For the bytes waiting in its spill file.
    pub spool: Arc<Spool>,
    /// The offset the stream starts after: the source's offset is this plus what the link
    /// received of the stream.
    pub stream_start: u64,
    /// For its stall: why writes are waiting, shown as the shard's last error.
    pub writer: Writer,
    /// The session's durable offset, not the writer's watermark: what `/status` calls
    /// applied is held by the target's replicas too.
    pub applied: Arc<AtomicU64>,
}

impl Publisher {
    /// Copy the hot counters into the shard's status. `shown_stall`: whether
    /// `last_error` shows the writer's stall now (so it is cleared when that ends).
    pub fn publish(&self, shown_stall: &mut bool) {
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
        // The link's counters are per connection; the status shows them from the
        // stream's start. The writer's need nothing: it counts in the shard's own.
        let link = &self.link;
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
        // Last, once both offsets are fresh: caught-up and the time lag compare them.
        status.update_caught_up();
    }
}

/// How a stall's message starts: when the stall ends, only a message starting so is
/// cleared, and any other error shown stays.
const STALL_PREFIX: &str = "the target is not accepting writes";

impl Publisher {
    /// Refresh the status every [`PUBLISH_EVERY`] until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            // A refresh that ran late is not made up for with a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut shown_stall = false;
            loop {
                tick.tick().await;
                self.publish(&mut shown_stall);
            }
        })
    }
}
