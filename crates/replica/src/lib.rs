//! Being a replica of one source node: handshake and PSYNC, the socket read
//! into a spool (snapshot, then stream), the stream decoded into entries with
//! offsets, ACKs of the applied offset, following a cluster shard across
//! failovers, and the local checkpoint that shows the operator where a shard
//! stands (a restart continues from what the target records, not from it).
//!
//! Where it sits: first stage of the flow (source → **replica** → command → writer →
//! target). It never waits for the target: the spool takes up the difference.

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
    /// The connection to the source: transient failures are retried by the shard.
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
    /// The source said what the protocol does not allow there; asking again would get the
    /// same, so the shard stops.
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// The source did not answer in time (PSYNC within 300 s); the shard asks again.
    #[error("replication stalled: {0}")]
    Stalled(String),
}
