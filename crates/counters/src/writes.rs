//! The writer's counters: what reached the target, and what did not and why.
//!
//! Every entry the writer is given ends in exactly one of these counters (written,
//! skipped, expired, filtered, or failed by reason), so that their sum can be checked
//! against what went in, and "0 failed" is a claim about the target, not an absence of
//! bookkeeping.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Losses;

/// What the writer counts, bumped by the writer task only; readers take cheap snapshots.
///
/// One value per shard, handed to each writer the shard starts (`WriterOptions::stats`),
/// so that the shard's figures accumulate across reconnections without anyone copying or
/// re-basing them; a writer made on its own (`redis-port restore`) counts in a fresh one.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Every reply a target node sent to a request, whatever it said. Counted before the
    /// watermark moves over the reply's write: when it has not changed since a replica
    /// check began, nothing the watermark gained since was written after that check.
    pub answers: AtomicU64,
    /// Snapshot keys acknowledged by the target.
    pub keys_written: AtomicU64,
    /// Replicated commands acknowledged by the target.
    pub commands_written: AtomicU64,
    /// Keys kept as they were in the target (`--skip-existing`).
    pub skipped_existing: AtomicU64,
    /// Snapshot keys already expired when read.
    pub expired: AtomicU64,
    /// Keys and commands dropped by `--filterkey`.
    pub filtered: AtomicU64,
    /// Writes the target refused (`-ERR …`, wrong type, …).
    pub failed_rejected: AtomicU64,
    /// Multi-key commands whose keys live in several slots and cannot be split.
    pub failed_cross_slot: AtomicU64,
    /// Writes given up after `retry_timeout` of retryable errors.
    pub failed_retries: AtomicU64,
    /// Entries for a db other than 0 sent to a cluster target without `--targetdb=0`.
    pub failed_db: AtomicU64,
    /// Values that could neither be restored nor rebuilt with commands (module types).
    pub failed_untranslatable: AtomicU64,
    /// Of the failures above, those of replicated commands (the rest are snapshot keys).
    pub commands_failed: AtomicU64,
    /// Details of values the target could not hold, per kind (see [`Losses`]).
    pub lost_field_ttls: AtomicU64,
    pub lost_stream_counters: AtomicU64,
    pub lost_consumer_times: AtomicU64,
    pub lost_consumers: AtomicU64,
    pub lost_pending_entries: AtomicU64,
    /// Hash fields already expired when read: dropped.
    pub expired_fields: AtomicU64,
    /// Values rebuilt with commands because the target cannot RESTORE their type.
    pub transcoded: AtomicU64,
    /// Values written again in a type the target can RESTORE.
    pub reencoded: AtomicU64,
    /// Stream commands not sent because the target's slot markers show them applied
    /// (after a restart, or a lost connection with writes in flight).
    pub already_applied: AtomicU64,
    /// Payload bytes acknowledged.
    pub bytes: AtomicU64,
    pub moved: AtomicU64,
    pub ask: AtomicU64,
    /// Retries after TRYAGAIN / CLUSTERDOWN / LOADING / BUSY / OOM / connection loss.
    pub retries: AtomicU64,
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub keys_written: u64,
    pub commands_written: u64,
    pub skipped_existing: u64,
    pub expired: u64,
    pub filtered: u64,
    pub failed_rejected: u64,
    pub failed_cross_slot: u64,
    pub failed_retries: u64,
    pub failed_db: u64,
    pub failed_untranslatable: u64,
    /// Of [`WriteSummary::failed`], the replicated commands' (see [`WriteSummary::keys_failed`]).
    pub commands_failed: u64,
    pub lost: Losses,
    pub expired_fields: u64,
    pub transcoded: u64,
    pub reencoded: u64,
    pub already_applied: u64,
    pub bytes: u64,
    pub moved: u64,
    pub ask: u64,
    pub retries: u64,
    pub applied_offset: u64,
}

impl WriteSummary {
    /// Everything that could not be written.
    pub fn failed(&self) -> u64 {
        self.failed_rejected
            + self.failed_cross_slot
            + self.failed_retries
            + self.failed_db
            + self.failed_untranslatable
    }

    /// Of [`WriteSummary::failed`], the snapshot keys'.
    pub fn keys_failed(&self) -> u64 {
        self.failed().saturating_sub(self.commands_failed)
    }
}

impl WriterStats {
    pub fn summary(&self) -> WriteSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriteSummary {
            keys_written: g(&self.keys_written),
            commands_written: g(&self.commands_written),
            skipped_existing: g(&self.skipped_existing),
            expired: g(&self.expired),
            filtered: g(&self.filtered),
            failed_rejected: g(&self.failed_rejected),
            failed_cross_slot: g(&self.failed_cross_slot),
            failed_retries: g(&self.failed_retries),
            failed_db: g(&self.failed_db),
            failed_untranslatable: g(&self.failed_untranslatable),
            commands_failed: g(&self.commands_failed),
            lost: Losses {
                field_ttls: g(&self.lost_field_ttls),
                stream_counters: g(&self.lost_stream_counters),
                consumer_times: g(&self.lost_consumer_times),
                consumers: g(&self.lost_consumers),
                pending_entries: g(&self.lost_pending_entries),
            },
            expired_fields: g(&self.expired_fields),
            transcoded: g(&self.transcoded),
            reencoded: g(&self.reencoded),
            already_applied: g(&self.already_applied),
            bytes: g(&self.bytes),
            moved: g(&self.moved),
            ask: g(&self.ask),
            retries: g(&self.retries),
            // The watermark is the writer's own, not a counter: `Writer::stats` fills it in.
            applied_offset: 0,
        }
    }
}

impl std::fmt::Display for WriteSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "written {} keys + {} commands, skipped {} existing, {} expired, {} filtered, \
             failed {} (rejected {}, cross-slot {}, retries exhausted {}, db {}, untranslatable {})",
            self.keys_written,
            self.commands_written,
            self.skipped_existing,
            self.expired,
            self.filtered,
            self.failed(),
            self.failed_rejected,
            self.failed_cross_slot,
            self.failed_retries,
            self.failed_db,
            self.failed_untranslatable
        )?;
        if self.reencoded > 0 {
            write!(
                f,
                ", {} re-encoded for the target's RDB version",
                self.reencoded
            )?;
        }
        if self.transcoded > 0 {
            write!(f, ", {} rebuilt with commands", self.transcoded)?;
        }
        if self.expired_fields > 0 {
            write!(f, ", {} expired hash fields dropped", self.expired_fields)?;
        }
        // Said whenever something was translated, so that "0 details lost" is a claim.
        if self.transcoded + self.reencoded > 0 || !self.lost.is_empty() {
            write!(f, ", {} details lost ({})", self.lost.total(), self.lost)?;
        }
        if self.moved + self.ask + self.retries > 0 {
            write!(
                f,
                ", {} MOVED, {} ASK, {} retries",
                self.moved, self.ask, self.retries
            )?;
        }
        Ok(())
    }
}
