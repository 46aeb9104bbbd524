//! `rsm-rdb`: a streaming, resumable RDB decoder and DUMP payload helpers.
//!
//! Where it sits: the replica receives the master's snapshot as byte chunks and pushes them
//! into a [`Decoder`]; the decoder turns them into [`Event`]s (aux fields, functions, and
//! one `KeyStart … KeyEnd` group per key) that the engine maps to `RESTORE` (raw mode, via
//! [`dump::build_payload`]) or to ordinary commands (elements mode). When the target cannot
//! load a value's type, [`encode::encode_for`] re-encodes the decoded elements in a type it
//! can, for one `RESTORE` that keeps what commands would lose. No I/O happens here.
//!
//! What it promises:
//! - push-based: [`Decoder::feed`] takes whatever bytes arrived; "need more bytes" is not
//!   an error, and the events are identical however the input is split;
//! - bounded memory: a decoder holds at most one parse unit (one record, one collection
//!   member, one encoded container such as a listpack, or a 1 MiB piece of a big string),
//!   plus, in raw mode, the value being sliced (capped by `big_value_threshold`);
//! - never panics on any input; errors carry the byte offset and what was expected;
//! - bytes after the end of the RDB (EOF opcode and checksum) are ignored, as `redis-server`
//!   ignores them, and reported by [`Decoder::trailing`] for the caller to warn about;
//! - RDB versions 1–14 (`REDIS0001`…`REDIS0014`, up to Redis 8.8) and Valkey 9
//!   (`VALKEY080`); types no older target can hold (Redis 8.8's array, later hash
//!   templates) are refused with one error naming them, never skipped.
//!
//! ```
//! use bytes::Bytes;
//! use rsm_rdb::{DecodeOptions, Decoder, Event};
//! // The 3-key database of the format reference, minus the checksum (written as zero).
//! let mut file = b"REDIS0012\xfe\x00\x00\x01k\x01v\xff".to_vec();
//! file.extend_from_slice(&[0; 8]);
//! let mut dec = Decoder::new(DecodeOptions::elements());
//! let mut events = Vec::new();
//! for chunk in file.chunks(3) {
//!     dec.feed(Bytes::copy_from_slice(chunk), &mut events).unwrap();
//! }
//! dec.finish().unwrap();
//! assert!(matches!(events.last(), Some(Event::Eof)));
//! ```

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

pub mod blobs;
pub mod constants;
pub mod crc;
mod cursor;
mod decoder;
pub mod dump;
pub mod encode;
mod error;
mod event;
pub mod lzf;
mod version;

pub use decoder::{DecodeMode, DecodeOptions, Decoder, Trailing};
pub use error::RdbError;
pub use event::{
    Consumer, Elements, Event, HashField, IdmpEntry, IdmpProducer, KeyMeta, KeyMetaClass,
    PendingEntry, StreamEntry, StreamGroup, StreamId, StreamIdmp, StreamMeta, MAX_CHUNK_BYTES,
    MAX_CHUNK_ITEMS,
};
pub use version::RdbVersion;
