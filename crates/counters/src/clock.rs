//! The one wall clock: unix milliseconds, as the servers count expiry times
//! (`PEXPIREAT`, `RESTORE … ABSTTL`) and as the status reports when things happened.
//! Durations and timeouts use `Instant` instead, which no clock step can move.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch; 0 on a clock set before 1970, which no expiry
/// comparison then treats as "in the future" by accident.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
