//! One module per subcommand; `main.rs` only parses flags and dispatches.

pub mod decode;
pub mod dump;
pub mod restore;
pub mod sync;

/// A command line that must not run (exit 2), found after connecting: e.g. `sync` with the
/// source as its own target.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
