//! The per-shard sync engine: replica link → entries → filter → writer.
//!
//! `entry` is the currency between stages; `filter` is pure; `options` holds
//! the flags that change the data path.

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

pub mod command;
pub mod entry;
pub mod filter;
pub mod loader;
pub mod options;
pub mod replay;
pub mod replica;
pub mod shard;
pub mod status;
pub mod stop;
pub mod throttle;
pub mod tls_flags;
pub mod usage;
pub mod write_flags;
pub mod writer;

pub use entry::{Command, DbIndex, Entry, KeyUsage, ReplOffset};
pub use filter::KeyPrefixes;
pub use options::{ConflictPolicy, EngineOptions};
pub use throttle::Limits;
