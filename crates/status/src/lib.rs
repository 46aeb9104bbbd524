//! What one shard's engine is doing, published for the console, the logs and
//! the HTTP port. Each counter has one owner that writes it; readers only
//! take snapshots (`ShardStatus::snapshot`), so reading never slows the data path.

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

pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use rsm_counters::{now_ms, Losses, WriterStats};

/// The named phases of a shard's sync, in the order they normally happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a full-sync slot (`--sync-parallel`).
    Queued,
    /// Connecting and authenticating, PSYNC sent.
    Handshake,
    /// The source is producing the snapshot (BGSAVE or diskless fork).
    WaitingBgsave,
    /// Snapshot bytes arrive and are loaded into the target as they come.
    LoadingRdb,
    /// The snapshot is in; replicated writes are applied as they arrive.
    Streaming,
    /// The link dropped; about to reconnect.
    Reconnecting,
    /// Stopped on an error that needs the operator.
    Failed,
    /// Stopped on request.
    Stopped,
}

/// Live counters of one shard. Cheap to update from the hot path.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Snapshot bytes the link received, per connection: 0 again with each session.
    pub rdb_bytes_received: AtomicU64,
    /// The snapshot's size when the source said it (`$<len>`); 0 when it did not (a
    /// diskless transfer).
    pub rdb_bytes_total: AtomicU64,
    /// Snapshot bytes the loader took, summed over every full sync of the shard.
    pub rdb_bytes_loaded: AtomicU64,
    /// Replicated commands dropped before the writer (`--filterkey`, or not data).
    pub commands_skipped: AtomicU64,
    /// The writer's counters, bumped by each writer the shard starts and read here as
    /// they are: keys and commands applied, skipped, expired, filtered, failed, and what
    /// the target could not take as it was.
    pub writes: Arc<WriterStats>,
    /// Stream offset the source has sent us (its offset as far as we know).
    pub source_offset: AtomicU64,
    /// Stream offset applied to the target: the session's durable offset, acknowledged by
    /// the target and held by a replica of each of its masters that has one, never the
    /// bare acknowledgement (a failover of the target could still take that back).
    pub applied_offset: AtomicU64,
    /// Bytes waiting in the spill file.
    pub spill_bytes: AtomicU64,
    /// Full syncs started: each is a fork on the source and a whole copy.
    pub full_syncs: AtomicU64,
    /// Sessions interrupted and started again.
    pub reconnects: AtomicU64,
}

/// Snapshot values the target could not take as they were, and what that cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Translated {
    /// Values of a type the target cannot RESTORE, written with commands instead.
    pub rebuilt_with_commands: u64,
    /// Values written again in a type the target can RESTORE (exact where it can hold them).
    pub reencoded: u64,
    /// Hash fields already expired when read: dropped, as the source would.
    pub hash_fields_expired: u64,
    /// What did not fit in the target, per kind (see [`Losses`]).
    pub details_lost: Losses,
}

/// When things happened, unix milliseconds (0 = not yet).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// When the last full sync began waiting for the source's snapshot.
    pub full_sync_started_ms: u64,
    /// When that full sync reached streaming; 0 while it runs.
    pub full_sync_finished_ms: u64,
    /// Since when the applied offset has equalled the source offset.
    pub caught_up_since_ms: u64,
}

#[derive(Debug)]
struct Slow {
    phase: Phase,
    /// When the phase began: how long a shard has waited shows in /status.
    phase_since_ms: u64,
    /// The source's replication id in the current session.
    replid: String,
    /// Writes go with slot markers (see the writer's `progress`); false on a target that
    /// refuses `MULTI`: at-least-once.
    exactly_once: bool,
    /// Cleared when the source accepts a new session, and a stall's message when the
    /// stall ends.
    last_error: Option<String>,
    timeline: Timeline,
    /// Every full sync's [start, end] (end 0 while running), for the proof
    /// that no more than `--sync-parallel` ran at once.
    full_sync_windows: Vec<(u64, u64)>,
    /// The node synced from now (`source` until the shard follows a failover).
    source_now: String,
    /// Every failover followed, oldest first.
    source_moves: Vec<SourceMove>,
    /// When the source's offset was first seen at each value, sampled at
    /// every status refresh: the lag in time is how long ago the source was
    /// where the target is now.
    offset_history: std::collections::VecDeque<(u64, u64)>,
    /// Since when the applied offset has been behind the source's while the shard counted
    /// as caught up (0: it is not behind).
    behind_since_ms: u64,
}

/// A caught-up shard that falls behind for less than this stays caught up (though not
/// ready while behind: see `ready` in `http`). Every write the source sends puts the
/// applied offset behind for the time it takes to apply and confirm it, and so does the
/// source's PING every 10 s on an idle source: without this, each PING would hold a shard
/// back from "ready" for 3 s.
const BEHIND_GRACE_MS: u64 = 1000;

/// Samples kept for the time lag: a minute at the 100 ms refresh.
const OFFSET_HISTORY: usize = 600;

/// Milliseconds since the source's offset reached `applied`, from samples of
/// (time, source offset) in time order; `None` when the samples do not reach
/// back that far (the lag is at least their span then).
fn time_lag_ms(
    history: &std::collections::VecDeque<(u64, u64)>,
    applied: u64,
    now: u64,
) -> Option<u64> {
    // The first sample at or past `applied` is when the source got there.
    let first = history.iter().find(|(_, offset)| *offset >= applied)?;
    // The oldest sample already past it, and older ones dropped: the source may have got
    // there before the samples begin, so the lag is not known.
    if history
        .front()
        .is_some_and(|f| f.1 >= applied && f.0 == first.0)
        && history.len() == OFFSET_HISTORY
    {
        return None;
    }
    Some(now.saturating_sub(first.0))
}

/// The shard moved to another source node (a failover in the source).
#[derive(Debug, Clone, Serialize)]
pub struct SourceMove {
    pub at_ms: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// One shard's status: counters plus the rarely changing parts under a lock.
#[derive(Debug)]
pub struct ShardStatus {
    pub serial: usize,
    /// The node the shard was planned on; see [`ShardStatus::source_now`].
    pub source: String,
    /// The role the plan syncs from (`master` or `slave`).
    pub role: String,
    /// The shard's slots, as the plan shows them.
    pub slots: String,
    pub counters: ShardCounters,
    slow: Mutex<Slow>,
}

impl ShardStatus {
    pub fn new(serial: usize, source: String, role: String, slots: String) -> Arc<ShardStatus> {
        Arc::new(ShardStatus {
            serial,
            source: source.clone(),
            role,
            slots,
            counters: ShardCounters::default(),
            slow: Mutex::new(Slow {
                phase: Phase::Queued,
                phase_since_ms: now_ms(),
                replid: String::new(),
                // Claimed only once the target was seen to take transactions.
                exactly_once: false,
                last_error: None,
                timeline: Timeline::default(),
                full_sync_windows: Vec::new(),
                source_now: source.clone(),
                source_moves: Vec::new(),
                offset_history: std::collections::VecDeque::new(),
                behind_since_ms: 0,
            }),
        })
    }

    fn slow(&self) -> std::sync::MutexGuard<'_, Slow> {
        // Plain data: a panicked writer cannot leave it inconsistent.
        self.slow.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_phase(&self, phase: Phase) {
        let mut slow = self.slow();
        // The same phase again: no log line, and its start time stands.
        if slow.phase == phase {
            return;
        }
        let now = now_ms();
        match phase {
            // A full sync's window opens when the source is asked for its snapshot: the
            // proof of `--sync-parallel` counts the windows open at once.
            Phase::WaitingBgsave => {
                slow.timeline.full_sync_started_ms = now;
                slow.timeline.full_sync_finished_ms = 0;
                slow.full_sync_windows.push((now, 0));
            }
            Phase::Streaming
                if slow.timeline.full_sync_started_ms != 0
                    && slow.timeline.full_sync_finished_ms == 0 =>
            {
                slow.timeline.full_sync_finished_ms = now;
            }
            _ => {}
        }
        // A full sync ends when it reaches streaming or gives up.
        if matches!(
            phase,
            Phase::Streaming | Phase::Reconnecting | Phase::Failed | Phase::Stopped
        ) {
            if let Some(w) = slow.full_sync_windows.last_mut() {
                if w.1 == 0 {
                    w.1 = now;
                }
            }
        }
        tracing::info!(shard = self.serial, source = %slow.source_now, from = ?slow.phase, to = ?phase, "phase change");
        slow.phase = phase;
        slow.phase_since_ms = now;
    }

    pub fn phase(&self) -> Phase {
        self.slow().phase
    }

    /// The node the shard syncs from now.
    pub fn source_now(&self) -> String {
        self.slow().source_now.clone()
    }

    /// Record that the shard now syncs from `to` (a failover in the source).
    pub fn set_source(&self, to: &str, reason: &str) {
        let mut slow = self.slow();
        // A reconnect to the same node is no move.
        if slow.source_now == to {
            return;
        }
        let from = std::mem::replace(&mut slow.source_now, to.to_string());
        slow.source_moves.push(SourceMove {
            at_ms: now_ms(),
            from,
            to: to.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Whether the target takes transactions, so each stream write is applied once.
    pub fn set_exactly_once(&self, on: bool) {
        self.slow().exactly_once = on;
    }

    pub fn set_replid(&self, replid: &str) {
        self.slow().replid = replid.to_string();
    }

    pub fn set_error(&self, error: Option<String>) {
        // Most of it comes from a server; escaping again is harmless (text that
        // was escaped has no control characters left), a raw ESC in /status is not.
        self.slow().last_error = error.map(|e| rsm_resp::escape_controls(e.as_bytes()));
    }

    pub fn last_error(&self) -> Option<String> {
        self.slow().last_error.clone()
    }

    /// Record progress of the applied offset; keeps `caught_up_since_ms`.
    pub fn update_caught_up(&self) {
        self.update_caught_up_at(now_ms())
    }

    fn update_caught_up_at(&self, now: u64) {
        let source = self.counters.source_offset.load(Ordering::Relaxed);
        let applied = self.counters.applied_offset.load(Ordering::Relaxed);
        let mut slow = self.slow();
        // A sample only when the source's offset moved: what counts is when each offset was
        // first seen, and an idle source does not push the older samples out.
        if slow
            .offset_history
            .back()
            .is_none_or(|last| last.1 != source)
        {
            if slow.offset_history.len() == OFFSET_HISTORY {
                slow.offset_history.pop_front();
            }
            slow.offset_history.push_back((now, source));
        }
        let streaming = slow.phase == Phase::Streaming;
        // Caught up: the first moment of it is kept.
        if streaming && applied >= source {
            slow.behind_since_ms = 0;
            if slow.timeline.caught_up_since_ms == 0 {
                slow.timeline.caught_up_since_ms = now;
            }
        } else if streaming && slow.timeline.caught_up_since_ms != 0 {
            // Behind after being caught up: the caught-up time survives a gap shorter than
            // the grace, counted from the first sample behind.
            if slow.behind_since_ms == 0 {
                slow.behind_since_ms = now;
            }
            if now.saturating_sub(slow.behind_since_ms) >= BEHIND_GRACE_MS {
                slow.timeline.caught_up_since_ms = 0;
                slow.behind_since_ms = 0;
            }
        } else {
            slow.timeline.caught_up_since_ms = 0;
            slow.behind_since_ms = 0;
        }
    }

    pub fn snapshot(&self) -> ShardSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let slow = self.slow();
        let source_offset = get(&c.source_offset);
        let applied_offset = get(&c.applied_offset);
        let w = c.writes.summary();
        ShardSnapshot {
            serial: self.serial,
            source: slow.source_now.clone(),
            planned_source: self.source.clone(),
            source_moves: slow.source_moves.clone(),
            role: self.role.clone(),
            slots: self.slots.clone(),
            phase: slow.phase,
            phase_since_ms: slow.phase_since_ms,
            replid: slow.replid.clone(),
            exactly_once: slow.exactly_once,
            rdb_bytes_received: get(&c.rdb_bytes_received),
            rdb_bytes_total: get(&c.rdb_bytes_total),
            rdb_bytes_loaded: get(&c.rdb_bytes_loaded),
            keys_applied: w.keys_written,
            keys_skipped: w.skipped_existing,
            keys_expired: w.expired,
            keys_filtered: w.filtered,
            keys_failed: w.keys_failed(),
            commands_applied: w.commands_written,
            commands_skipped: get(&c.commands_skipped),
            commands_already_applied: w.already_applied,
            commands_failed: w.commands_failed,
            translated: Translated {
                rebuilt_with_commands: w.transcoded,
                reencoded: w.reencoded,
                hash_fields_expired: w.expired_fields,
                details_lost: w.lost,
            },
            source_offset,
            applied_offset,
            lag_bytes: source_offset.saturating_sub(applied_offset),
            // How long ago the source first had the first byte not yet applied.
            lag_ms: if applied_offset >= source_offset {
                Some(0)
            } else {
                time_lag_ms(
                    &slow.offset_history,
                    applied_offset.saturating_add(1),
                    now_ms(),
                )
            },
            spill_bytes: get(&c.spill_bytes),
            full_syncs: get(&c.full_syncs),
            reconnects: get(&c.reconnects),
            last_error: slow.last_error.clone(),
            timeline: slow.timeline.clone(),
            full_sync_windows: slow.full_sync_windows.clone(),
        }
    }
}

/// A consistent-enough copy of a shard's status, for JSON and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSnapshot {
    pub serial: usize,
    /// The node synced from now.
    pub source: String,
    /// The node of the plan (differs from `source` after a failover).
    pub planned_source: String,
    pub source_moves: Vec<SourceMove>,
    pub role: String,
    pub slots: String,
    pub phase: Phase,
    pub phase_since_ms: u64,
    pub replid: String,
    /// Every stream write applied once (false: at-least-once, the target refuses `MULTI`).
    pub exactly_once: bool,
    pub rdb_bytes_received: u64,
    pub rdb_bytes_total: u64,
    pub rdb_bytes_loaded: u64,
    /// Snapshot keys acknowledged by the target.
    pub keys_applied: u64,
    /// Snapshot keys the target already held and kept (`--skip-existing`).
    pub keys_skipped: u64,
    /// Snapshot keys already expired when read: not written.
    pub keys_expired: u64,
    /// Snapshot keys `--filterkey` left out.
    pub keys_filtered: u64,
    /// Snapshot keys the target refused.
    pub keys_failed: u64,
    /// Stream commands acknowledged by the target.
    pub commands_applied: u64,
    /// Stream commands left out before the writer: filtered, not data (PING, PUBLISH…) or
    /// unsupported (those are logged).
    pub commands_skipped: u64,
    /// Stream commands the target's slot markers showed applied: not sent again.
    pub commands_already_applied: u64,
    /// Stream commands the target refused.
    pub commands_failed: u64,
    pub translated: Translated,
    pub source_offset: u64,
    /// Durable in the target (see [`ShardCounters::applied_offset`]).
    pub applied_offset: u64,
    /// Received but not yet applied: 0 is one condition of "ready".
    pub lag_bytes: u64,
    /// How long ago the source was where the target is now (`None`: longer
    /// ago than the last minute of samples, or not streaming yet).
    pub lag_ms: Option<u64>,
    pub spill_bytes: u64,
    pub full_syncs: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub timeline: Timeline,
    pub full_sync_windows: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_lag_is_how_long_ago_the_source_passed_the_applied_offset() {
        let h: std::collections::VecDeque<(u64, u64)> =
            [(1000, 10), (1100, 50), (1200, 90)].into_iter().collect();
        // Applied up to 40: the source first passed 41 at t=1100.
        assert_eq!(time_lag_ms(&h, 41, 1250), Some(150));
        assert_eq!(time_lag_ms(&h, 91, 1250), None);
        assert_eq!(time_lag_ms(&h, 5, 1250), Some(250));
    }

    #[test]
    fn a_shard_behind_for_less_than_the_grace_stays_caught_up_and_longer_does_not() {
        // The grace only applies while streaming.
        let st = ShardStatus::new(0, "s:1".into(), "master".into(), "0-16383".into());
        st.set_phase(Phase::Streaming);
        // (source offset, applied offset, now) → caught_up_since_ms after the sample.
        let samples: [(u64, u64, u64, u64); 13] = [
            (100, 100, 10_000, 10_000),
            // A PING arrives, and is applied and confirmed 300 ms later.
            (114, 100, 20_000, 10_000),
            (114, 100, 20_300, 10_000),
            (114, 114, 20_400, 10_000),
            // Writes that keep it behind for a second and more.
            (200, 114, 30_000, 10_000),
            (300, 200, 30_600, 10_000),
            (400, 300, 31_000, 0),
            (400, 400, 31_100, 31_100),
            // Behind twice, under the grace each time: the grace counts from the first
            // sample behind, not from the last.
            (500, 400, 40_000, 31_100),
            (500, 500, 40_100, 31_100),
            (600, 500, 50_000, 31_100),
            (600, 500, 50_999, 31_100),
            (600, 500, 51_000, 0),
        ];
        for (source, applied, now, expected) in samples {
            st.counters.source_offset.store(source, Ordering::Relaxed);
            st.counters.applied_offset.store(applied, Ordering::Relaxed);
            st.update_caught_up_at(now);
            let since = st.slow().timeline.caught_up_since_ms;
            assert_eq!(
                since, expected,
                "source {source}, applied {applied} at {now}"
            );
        }
    }
}
