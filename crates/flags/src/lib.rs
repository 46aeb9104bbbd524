//! The command-line flags `redis-sync-manager` and `redis-port` share: TLS and
//! addresses, passwords, the write flags, and the one-line usage errors.
//!
//! Where it sits: at the edge, used only by the two binaries. It turns flags into the
//! validated values the stages take (`EngineOptions`, `ConnectOptions`, endpoints), so
//! that a mistake is refused with one line before any connection opens; nothing below
//! it knows clap.

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

pub mod parse;
pub mod tls;
pub mod usage;
pub mod write;
