//! One shard's sync, end to end: the shard loop that runs a replica link into a
//! writer (full sync, then the stream, reconnecting and following failovers), the
//! loader that turns snapshot records into entries, and the replay path that turns
//! replicated commands into entries.
//!
//! Where it sits: above the stage crates (`rsm-replica`, `rsm-command`, `rsm-writer`,
//! `rsm-status`), which it wires together; below the binaries. The stages never call
//! back into it.

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

pub mod loader;
pub mod replay;
pub mod shard;
pub mod stop;

pub use rsm_client::throttle::Limits;
pub use rsm_command::{Command, DbIndex, Entry, KeyPrefixes, KeyUsage, ReplOffset};
pub use rsm_writer::{ConflictPolicy, EngineOptions};
