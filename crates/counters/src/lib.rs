//! What the stages of a sync count, and the one clock they count by.
//!
//! Where it sits: below every stage. The replica, the writer and the loader bump
//! these counters as they do the work; `rsm-status` (and through it the console, the
//! logs, `/status` and `/metrics`) only reads them. Living below both is what lets the
//! writer count without knowing about status, and status show the writer's figures
//! without depending on the writer.
//!
//! What it must never do: decide anything, or do I/O. A counter here is bumped by one
//! owner, the stage that did the work, and never copied or re-based by anyone else.

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

mod clock;
mod losses;
mod writes;

pub use clock::now_ms;
pub use losses::Losses;
pub use writes::{WriteSummary, WriterStats};
