//! When a session asks the target's replicas, moves its durable offset and writes its
//! checkpoint: the policy, as a pure value with the clock passed in, so that every rule
//! is tested here with plain numbers; the session only carries out what it says.
//!
//! The one promise: the durable offset (what is reported as applied, saved as the floor
//! and checkpointed) never passes what a check of the target's replicas covered, except
//! for stream bytes that wrote nothing since such a check (see [`Timing::idle_advance`]).

use std::time::{Duration, Instant};

/// How often the checkpoint file is rewritten: a restart repeats at most this much of
/// the stream's bytes (each applied once all the same, by the slot markers).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the target is asked whether what it acknowledged is on its replicas: the
/// lag a caught-up shard shows is at least this, and each ask is one round trip per
/// target master.
pub(super) const CONFIRM_EVERY: Duration = Duration::from_millis(200);

/// The durable offset and the rhythm of checks and checkpoints of one session.
#[derive(Debug)]
pub(super) struct Timing {
    /// The durable offset; `None` until the snapshot is confirmed (a session that
    /// continues the stream starts durable at its start).
    durable: Option<u64>,
    /// The writer's answer count when the last check that succeeded began.
    confirmed_answers: Option<u64>,
    last_confirm: Instant,
    /// Checks failed in a row, for a warning that does not repeat every 200 ms.
    confirm_failures: u64,
    last_checkpoint: Instant,
}

/// What a finished check of the replicas means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Confirmed {
    /// The durable offset moved to this.
    Advanced(u64),
    /// Confirmed, but an earlier check had already covered as much.
    Unchanged,
    /// Not confirmed; `warn` on the 1st, 2nd, 4th, 8th, … failure in a row.
    Failed { failures: u64, warn: bool },
}

impl Timing {
    /// A session that starts durable at `durable` (a continued stream) or not yet (a
    /// full sync), at `now`.
    pub fn new(durable: Option<u64>, now: Instant) -> Timing {
        Timing {
            durable,
            confirmed_answers: None,
            last_confirm: now,
            confirm_failures: 0,
            last_checkpoint: now,
        }
    }

    pub fn durable(&self) -> Option<u64> {
        self.durable
    }

    /// With the watermark at `at` and the writer's answer count at `answers`: when no
    /// answer came from the target since the last check that succeeded began, what the
    /// watermark gained since is stream bytes that wrote nothing (the source's PING every
    /// 10 s, filtered commands), as safe as what that check covered. Asking again would
    /// leave an idle shard lagging a round trip behind each time.
    pub fn idle_advance(&mut self, at: u64, answers: u64) -> Option<u64> {
        let ahead = self.durable.is_some_and(|d| at > d);
        if ahead && self.confirmed_answers == Some(answers) {
            self.durable = Some(at);
            return Some(at);
        }
        None
    }

    /// Whether to start a check of the replicas now: none is running, the last began
    /// [`CONFIRM_EVERY`] ago or more, and the watermark is past the durable offset.
    /// Records the start when it says yes.
    pub fn start_confirm(&mut self, at: u64, running: bool, now: Instant) -> bool {
        let due = now.saturating_duration_since(self.last_confirm) >= CONFIRM_EVERY;
        if running || !due || self.durable == Some(at) {
            return false;
        }
        self.last_confirm = now;
        true
    }

    /// A check begun at watermark `at` with `answers` answers came back.
    pub fn confirmed(&mut self, at: u64, answers: u64, ok: bool) -> Confirmed {
        if !ok {
            self.confirm_failures += 1;
            let failures = self.confirm_failures;
            return Confirmed::Failed {
                failures,
                warn: failures.is_power_of_two(),
            };
        }
        self.confirm_failures = 0;
        self.confirmed_answers = Some(answers);
        // Checks may come back out of order with a synchronous one (`confirm_now`): the
        // durable offset only ever moves forward.
        if self.durable.is_none_or(|d| at > d) {
            self.durable = Some(at);
            return Confirmed::Advanced(at);
        }
        Confirmed::Unchanged
    }

    /// Whether a checkpoint is due at `now` (restarting the period when it is), and the
    /// offset to save: the durable one, or nothing while there is none.
    pub fn checkpoint_due(&mut self, now: Instant) -> Option<Option<u64>> {
        if now.saturating_duration_since(self.last_checkpoint) < CHECKPOINT_EVERY {
            return None;
        }
        self.last_checkpoint = now;
        Some(self.durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_sync_is_not_durable_until_a_check_confirms_it() {
        let t0 = Instant::now();
        let mut t = Timing::new(None, t0);
        assert_eq!(t.durable(), None);
        // No check has succeeded: nothing moves on its own, whatever the answer count.
        assert_eq!(t.idle_advance(500, 0), None);
        assert!(t.start_confirm(500, false, t0 + CONFIRM_EVERY));
        assert_eq!(t.confirmed(500, 7, true), Confirmed::Advanced(500));
        assert_eq!(t.durable(), Some(500));
    }

    #[test]
    fn checks_are_spaced_and_one_at_a_time() {
        let t0 = Instant::now();
        let mut t = Timing::new(Some(100), t0);
        assert!(!t.start_confirm(200, false, t0 + ms(199)), "too soon");
        assert!(!t.start_confirm(200, true, t0 + ms(250)), "one is running");
        assert!(
            !t.start_confirm(100, false, t0 + ms(250)),
            "nothing new to confirm"
        );
        assert!(t.start_confirm(200, false, t0 + ms(250)));
        assert!(
            !t.start_confirm(300, false, t0 + ms(300)),
            "the period restarted"
        );
        assert!(t.start_confirm(300, false, t0 + ms(450)));
    }

    #[test]
    fn an_idle_watermark_moves_without_a_check_only_when_the_target_said_nothing() {
        let t0 = Instant::now();
        let mut t = Timing::new(Some(100), t0);
        assert_eq!(t.confirmed(150, 10, true), Confirmed::Advanced(150));
        // The source's PING moved the watermark, no write answered since: durable too.
        assert_eq!(t.idle_advance(164, 10), Some(164));
        // An answer came (a write): that one needs a check of the replicas.
        assert_eq!(t.idle_advance(300, 11), None);
        assert_eq!(t.durable(), Some(164));
    }

    #[test]
    fn the_durable_offset_never_moves_back() {
        let mut t = Timing::new(Some(100), Instant::now());
        assert_eq!(t.confirmed(400, 3, true), Confirmed::Advanced(400));
        assert_eq!(t.confirmed(300, 2, true), Confirmed::Unchanged);
        assert_eq!(t.durable(), Some(400));
    }

    #[test]
    fn failures_warn_on_powers_of_two_and_reset_on_success() {
        let mut t = Timing::new(Some(0), Instant::now());
        let warned: Vec<bool> = (0..8)
            .map(|_| match t.confirmed(10, 1, false) {
                Confirmed::Failed { warn, .. } => warn,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(warned, [true, true, false, true, false, false, false, true]);
        assert_eq!(t.durable(), Some(0), "a failed check moves nothing");
        assert_eq!(t.confirmed(10, 1, true), Confirmed::Advanced(10));
        assert_eq!(
            t.confirmed(20, 2, false),
            Confirmed::Failed {
                failures: 1,
                warn: true
            }
        );
    }

    #[test]
    fn a_checkpoint_is_due_once_a_period_and_saves_only_a_durable_offset() {
        let t0 = Instant::now();
        let mut t = Timing::new(None, t0);
        assert_eq!(t.checkpoint_due(t0 + ms(999)), None);
        assert_eq!(
            t.checkpoint_due(t0 + ms(1000)),
            Some(None),
            "due, nothing to save"
        );
        assert_eq!(t.checkpoint_due(t0 + ms(1500)), None);
        t.confirmed(42, 1, true);
        assert_eq!(t.checkpoint_due(t0 + ms(2000)), Some(Some(42)));
    }
}
