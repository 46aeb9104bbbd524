//! Decoder errors. Every variant carries the absolute byte offset (from the first byte of
//! the magic, or of the DUMP payload) where the problem was found, and says what was
//! expected, so a user sees e.g. `unknown value type 27 at offset 1048603`.
//!
//! "Need more bytes" is never an error: [`crate::Decoder::feed`] simply returns and waits
//! for the next chunk. Only [`crate::Decoder::finish`] turns a short file into
//! [`RdbError::Truncated`].

use thiserror::Error;

/// What went wrong while decoding an RDB stream or a DUMP payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RdbError {
    /// The first 9 bytes are not `REDIS` + 4 digits or `VALKEY` + 3 digits.
    #[error("bad RDB magic {found:?} at offset {offset} (expected REDISnnnn or VALKEYnnn)")]
    BadMagic { offset: u64, found: String },
    /// A well-formed magic naming a version this decoder does not read.
    #[error("unsupported RDB version {version} ({flavor}{}) at offset {offset}: this version reads REDIS0001..REDIS0014 (up to Redis 8.8) and VALKEY080 (Valkey 9.0/9.1); sync from a server that writes one of those", written_by(flavor, *version))]
    UnsupportedVersion {
        offset: u64,
        flavor: &'static str,
        version: u16,
    },
    /// A type a newer server writes that this version can neither decode nor re-encode:
    /// named, with the server that writes it and what the operator can do.
    #[error("RDB type {rdb_type} ({name}, written by {writer}) at offset {offset} cannot be migrated by this version: {reason}; delete or convert these keys on the source (or copy them with a tool that knows the type) and start again")]
    UnsupportedType {
        offset: u64,
        rdb_type: u8,
        name: &'static str,
        writer: &'static str,
        reason: &'static str,
    },
    /// A module key-metadata class (`KEY_META`, Redis 8.6+) its module requires: a server
    /// without the module refuses it too, and nothing here can write it into a target.
    #[error("key metadata class {class:?} (version {version}) of the key at offset {offset} cannot be migrated by this version: only its module can write it, and the module did not allow servers without it to drop it (flag ALLOW_IGNORE unset); remove the module's metadata from these keys on the source, or migrate with the module's own tools")]
    RequiredKeyMeta {
        offset: u64,
        class: String,
        version: u8,
    },
    /// Valkey 9.2's streaming-compression envelope (`VKCS`) around the RDB.
    #[error("a compressed RDB (Valkey 9.2 VKCS envelope, codec {codec}) at offset {offset}: this version reads plain RDB only; have the source send or save it uncompressed")]
    CompressedEnvelope { offset: u64, codec: u8 },
    /// An opcode byte at record level that this decoder does not know.
    #[error("unknown opcode {opcode} at offset {offset}")]
    UnknownOpcode { offset: u64, opcode: u8 },
    /// A value type id that this decoder does not know for this RDB flavor.
    #[error("unknown value type {rdb_type} at offset {offset}")]
    UnknownType { offset: u64, rdb_type: u8 },
    /// The bytes do not follow the format: `expected` names what should have been there.
    #[error("invalid data at offset {offset}: expected {expected}")]
    Invalid { offset: u64, expected: String },
    /// The stored CRC64 at the end of the file does not match the bytes.
    #[error(
        "checksum mismatch at offset {offset}: stored {stored:#018x}, computed {computed:#018x}"
    )]
    Checksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    /// The input ended before the EOF opcode (or before the end of a value).
    #[error("truncated input at offset {offset}: expected {expected}")]
    Truncated { offset: u64, expected: String },
    /// Bytes were fed after the end of a single value (a DUMP payload body). After a whole
    /// RDB they are not an error: see `Decoder::trailing`.
    #[error("trailing data at offset {offset} after the end of the value")]
    TrailingData { offset: u64 },
}

/// Which server writes a version this decoder refuses, where the sources say so.
fn written_by(flavor: &str, version: u16) -> &'static str {
    match (flavor, version) {
        ("valkey", 81) => ", written by Valkey 9.2",
        ("redis", 15) => ", written by Redis development builds after 8.8",
        _ => "",
    }
}

impl RdbError {
    /// The absolute byte offset at which the error was detected.
    pub fn offset(&self) -> u64 {
        match self {
            RdbError::BadMagic { offset, .. }
            | RdbError::UnsupportedVersion { offset, .. }
            | RdbError::UnknownOpcode { offset, .. }
            | RdbError::UnknownType { offset, .. }
            | RdbError::UnsupportedType { offset, .. }
            | RdbError::CompressedEnvelope { offset, .. }
            | RdbError::RequiredKeyMeta { offset, .. }
            | RdbError::Invalid { offset, .. }
            | RdbError::Checksum { offset, .. }
            | RdbError::Truncated { offset, .. }
            | RdbError::TrailingData { offset } => *offset,
        }
    }

    pub(crate) fn invalid(offset: u64, expected: impl Into<String>) -> Self {
        RdbError::Invalid {
            offset,
            expected: expected.into(),
        }
    }
}
