//! RESP framing: the wire format shared by the replication link and the target writer.
//!
//! No sockets here. The decoder works on a growing `BytesMut` and reports how
//! many bytes each frame took (replication offsets are counted in those bytes);
//! the encoder writes commands straight into an output buffer.

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

mod decode;
mod encode;
mod frame;
mod printable;

pub use decode::{decode, decode_at, skip_newlines, RespError, MAX_BULK_LEN, MAX_DEPTH};
pub use encode::{command_len, encode_command, encode_command_sharing, encode_frame};
pub use frame::Frame;
pub use printable::escape_controls;
