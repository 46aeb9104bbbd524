//! The shard's status, refreshed from the counters of the stages that own them (the
//! link, the spool, the writer) by a task of its own, so that it stays fresh exactly when
//! the shard loop is waiting on a slow or refusing target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsm_replica::link::LinkCounters;
use rsm_replica::spool::Spool;
use rsm_status::{ShardStatus, Translated};
use rsm_writer::Writer;

/// How often the status (and so /status, /metrics and "ready") is refreshed:
/// often enough that a lag reading is about the data, not about this rhythm.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What the status is refreshed from, for one connection's sync.
#[derive(Clone)]
pub(super) struct Publisher {
    pub status: Arc<ShardStatus>,
    pub link: Arc<LinkCounters>,
    pub spool: Arc<Spool>,
    pub stream_start: u64,
    pub writer: Writer,
    pub applied: Arc<AtomicU64>,
    pub base: WriterTotals,
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
            .store(base.keys_failed + w.keys_failed(), Ordering::Relaxed);
        c.commands_failed
            .store(base.commands_failed + w.commands_failed, Ordering::Relaxed);
        c.commands_applied.store(
            base.commands_applied + w.commands_written,
            Ordering::Relaxed,
        );
        c.commands_already_applied.store(
            base.commands_already_applied + w.already_applied,
            Ordering::Relaxed,
        );
        let mut translated = base.translated;
        translated.add(&Translated {
            rebuilt_with_commands: w.transcoded,
            reencoded: w.reencoded,
            hash_fields_expired: w.expired_fields,
            details_lost: w.lost,
        });
        if let Ok(mut t) = c.translated.lock() {
            *t = translated;
        }
        status.update_caught_up();
    }
}

const STALL_PREFIX: &str = "the target is not accepting writes";

impl Publisher {
    /// Refresh the status every [`PUBLISH_EVERY`] until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut shown_stall = false;
            loop {
                tick.tick().await;
                self.publish(&mut shown_stall);
            }
        })
    }
}

/// The shard's writer-owned totals when a connection's writer started.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriterTotals {
    keys_applied: u64,
    keys_skipped: u64,
    keys_expired: u64,
    keys_filtered: u64,
    keys_failed: u64,
    commands_applied: u64,
    commands_failed: u64,
    commands_already_applied: u64,
    translated: Translated,
}

impl WriterTotals {
    pub fn read(c: &rsm_status::ShardCounters) -> WriterTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterTotals {
            keys_applied: g(&c.keys_applied),
            keys_skipped: g(&c.keys_skipped),
            keys_expired: g(&c.keys_expired),
            keys_filtered: g(&c.keys_filtered),
            keys_failed: g(&c.keys_failed),
            commands_applied: g(&c.commands_applied),
            commands_failed: g(&c.commands_failed),
            commands_already_applied: g(&c.commands_already_applied),
            translated: c.translated.lock().map(|t| *t).unwrap_or_default(),
        }
    }
}
