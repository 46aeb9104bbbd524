//! What travels from the source to the writer, and what each command means: the
//! [`Entry`] type, the command table (which arguments are keys, what kind of
//! command it is) and the filter that keeps or drops each entry.
//!
//! Where it sits: between the replica (which produces entries from the snapshot and
//! the command stream) and the writer (which applies them). Everything here is pure:
//! no sockets, no files, no clock, no async, so every rule is tested next to its
//! code with plain values, and the writer, the replay path and the loader all ask
//! the same functions the same questions.

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

pub mod entry;
pub mod filter;
pub mod policy;
pub mod table;
pub mod target_db;

pub use entry::{Command, DbIndex, Entry, KeyUsage, ReplOffset};
pub use filter::KeyPrefixes;
pub use policy::ConflictPolicy;
pub use table::CommandTable;
pub use target_db::{NeedsStandalone, TargetDb};
