//! What is kept and what is dropped between the sources and the writer.
//! Pure: no I/O, so every rule is tested next to its code.

pub mod commands;
mod prefixes;

pub use commands::{filter_command, DropReason, FilterVerdict};
pub use prefixes::KeyPrefixes;
