//! One module per subcommand; `main.rs` only parses flags and dispatches.

pub mod decode;
pub mod dump;
pub mod restore;
pub mod sync;
