//! Rate limits shared by every shard of one process: `--max-bandwidth` paces the
//! snapshot transfer from the source, `--max-ops` the commands sent to the target.
//!
//! A token bucket that may go into debt: a taker always gets what it asked for at once
//! and is told how long to wait before it takes again. A reader cannot split a socket
//! read, nor the writer a transaction, so asking first and refusing would stall on any
//! piece bigger than the bucket; paying afterwards keeps the average exact whatever the
//! piece sizes, and the burst bounds how far ahead of the rate anyone gets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The share of a second's worth that may be spent ahead of the rate. Small, so that
/// the bound holds over short windows too (an operator watching `INFO` every second
/// sees the limit, not a burst).
const BURST: f64 = 0.1;

/// One limit: `rate` units per second.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    state: Mutex<Bucket>,
    taken: AtomicU64,
    waited_us: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Units that may still be taken now; negative while in debt.
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// `rate` units per second (at least 1).
    pub fn new(rate: u64) -> Throttle {
        let rate = rate.max(1) as f64;
        Throttle {
            rate,
            state: Mutex::new(Bucket {
                tokens: rate * BURST,
                at: Instant::now(),
            }),
            taken: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    /// Take `n` units now; `Some(wait)` when the bucket is in debt and the taker must
    /// wait that long before taking again.
    pub fn take(&self, n: u64) -> Option<Duration> {
        if n == 0 {
            return None;
        }
        self.taken.fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let Ok(mut b) = self.state.lock() else {
            return None;
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.rate * BURST);
        b.at = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            return None;
        }
        let wait = Duration::from_secs_f64(-b.tokens / self.rate);
        self.waited_us
            .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
        Some(wait)
    }

    /// Take `n` units and sleep off any debt.
    pub async fn pace(&self, n: u64) {
        if let Some(wait) = self.take(n) {
            tokio::time::sleep(wait).await;
        }
    }

    fn report(&self) -> LimitReport {
        LimitReport {
            per_second: self.rate as u64,
            total: self.taken.load(Ordering::Relaxed),
            waited_ms: self.waited_us.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// The process's limits (none by default). Clones share the buckets, so every shard's
/// engine draws from the same one.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `--max-bandwidth`: snapshot bytes per second read from the sources.
    pub snapshot_bytes: Option<Arc<Throttle>>,
    /// `--max-ops`: commands per second sent to the target.
    pub target_ops: Option<Arc<Throttle>>,
}

impl Limits {
    /// From the flags' values: bytes per second and commands per second.
    pub fn new(snapshot_bytes: Option<u64>, target_ops: Option<u64>) -> Limits {
        Limits {
            snapshot_bytes: snapshot_bytes.map(|r| Arc::new(Throttle::new(r))),
            target_ops: target_ops.map(|r| Arc::new(Throttle::new(r))),
        }
    }

    /// What `/status` shows under `limits`.
    pub fn report(&self) -> LimitsReport {
        LimitsReport {
            snapshot_bytes: self.snapshot_bytes.as_deref().map(Throttle::report),
            target_ops: self.target_ops.as_deref().map(Throttle::report),
        }
    }
}

/// One limit in `/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LimitReport {
    /// The limit.
    pub per_second: u64,
    /// Units counted against it so far (bytes or commands).
    pub total: u64,
    /// Time spent waiting for it, summed over the shards.
    pub waited_ms: u64,
}

/// `/status` `limits`: `null` for a limit that is off.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct LimitsReport {
    pub snapshot_bytes: Option<LimitReport>,
    pub target_ops: Option<LimitReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_free_then_debt_is_paid_at_the_rate() {
        let t = Throttle::new(1000);
        // 100 units of burst.
        assert_eq!(t.take(100), None);
        let wait = t.take(500).expect("in debt");
        // ~500 ms to pay 500 units at 1000/s (a little less: time passed since).
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let r = t.report();
        assert_eq!((r.per_second, r.total), (1000, 600));
        assert!(r.waited_ms >= 450, "{r:?}");
    }

    #[test]
    fn an_idle_bucket_does_not_save_up_more_than_the_burst() {
        let t = Throttle::new(10_000);
        std::thread::sleep(Duration::from_millis(50));
        // Saved up at most 1000 (0.1 s), so 1500 leaves a debt of ~500 = ~50 ms.
        let wait = t.take(1500).expect("in debt");
        assert!(wait >= Duration::from_millis(45), "{wait:?}");
    }

    #[test]
    fn clones_of_limits_share_the_bucket() {
        let a = Limits::new(Some(1000), None);
        let b = a.clone();
        assert_eq!(a.snapshot_bytes.as_ref().and_then(|t| t.take(100)), None);
        assert!(b
            .snapshot_bytes
            .as_ref()
            .and_then(|t| t.take(100))
            .is_some());
        assert_eq!(a.report().snapshot_bytes.map(|r| r.total), Some(200));
        assert_eq!(a.report().target_ops, None);
    }
}
