//! Being a replica of one source node: handshake and PSYNC, the socket read
//! into a spool (snapshot, then stream), the stream decoded into entries with
//! offsets, ACKs of the applied offset, and the checkpoint that lets a
//! restart continue where it stopped.

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

pub mod checkpoint;
pub mod follow;
pub mod handshake;
pub mod link;
pub mod spool;
pub mod stream;

use rsm_client::{ClientError, Endpoint, ServerError};

/// Why the replication link failed, and what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("source {endpoint} refused to sync: {message} ({hint})")]
    Refused {
        endpoint: Endpoint,
        /// The refusal, classified once: callers decide by this, never by the text.
        kind: ServerError,
        message: String,
        hint: &'static str,
    },
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("replication stalled: {0}")]
    Stalled(String),
}
