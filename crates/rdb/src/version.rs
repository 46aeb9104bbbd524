//! The RDB version and flavor, taken from the 9-byte magic (`REDIS0012`, `VALKEY080`) or
//! from a DUMP payload's 2-byte trailer. The flavor matters: type id 22 is Valkey's
//! `HASH_2` in `VALKEY` files and Redis 7.4-RC's `HASH_METADATA_PRE_GA` in `REDIS` files.

use crate::constants::{RDB_VERSION_MAX_REDIS, RDB_VERSION_VALKEY_9};
use crate::error::RdbError;

/// The version of an RDB file or DUMP payload, with the flavor that decides how
/// ambiguous type ids are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RdbVersion {
    /// `REDIS` + 4 digits (1..=14). Also what Valkey ≤ 8.1 writes (11).
    Redis(u16),
    /// `VALKEY` + 3 digits (80 for Valkey 9.0/9.1).
    Valkey(u16),
}

impl RdbVersion {
    /// The number written in the magic and in DUMP trailers.
    pub fn number(self) -> u16 {
        match self {
            RdbVersion::Redis(v) | RdbVersion::Valkey(v) => v,
        }
    }

    /// The 2-byte little-endian trailer a server of this version writes in `DUMP` output.
    pub fn dump_trailer(self) -> u16 {
        self.number()
    }

    /// True where opcode 243 is Redis's `KEY_META` (Redis RDB 13+), not Valkey's
    /// `SLOT_IMPORT`: the two share the number, only the magic tells them apart.
    pub fn has_key_meta(self) -> bool {
        matches!(self, RdbVersion::Redis(v) if v >= crate::constants::RDB_VERSION_KEY_META)
    }

    /// True for `VALKEY`-magic files (Valkey 9+ type ids apply).
    pub fn is_valkey(self) -> bool {
        matches!(self, RdbVersion::Valkey(_))
    }

    /// The flavor implied by a DUMP trailer: Valkey reserves 12..=79 for Redis ("foreign")
    /// and uses 80+ itself.
    pub fn from_dump_trailer(trailer: u16) -> RdbVersion {
        if trailer >= RDB_VERSION_VALKEY_9 {
            RdbVersion::Valkey(trailer)
        } else {
            RdbVersion::Redis(trailer)
        }
    }

    /// The 9-byte magic for this version.
    pub fn magic(self) -> [u8; 9] {
        let mut m = [0u8; 9];
        let text = match self {
            RdbVersion::Redis(v) => format!("REDIS{:04}", v % 10000),
            RdbVersion::Valkey(v) => format!("VALKEY{:03}", v % 1000),
        };
        // The text is always 9 bytes (5 + 4 or 6 + 3).
        for (dst, src) in m.iter_mut().zip(text.bytes()) {
            *dst = src;
        }
        m
    }

    /// Parse the 9-byte magic at the start of a file. It is checked strictly (letters, then
    /// digits only): the magic is where an input that is no RDB at all (an error page, a
    /// compressed file, the wrong stream) is caught, before its bytes are read as records.
    pub fn from_magic(magic: &[u8]) -> Result<RdbVersion, RdbError> {
        let bad = || RdbError::BadMagic {
            offset: 0,
            found: String::from_utf8_lossy(magic).into_owned(),
        };
        let digits = |d: &[u8]| -> Option<u16> {
            if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
                return None;
            }
            d.iter().try_fold(0u16, |acc, b| {
                acc.checked_mul(10)?.checked_add(u16::from(b - b'0'))
            })
        };
        if magic.len() != 9 {
            return Err(bad());
        }
        // `VKCS`, envelope version, codec id, flags, stream kind: a wrapped, compressed RDB
        if let [b'V', b'K', b'C', b'S', _, codec, ..] = *magic {
            return Err(RdbError::CompressedEnvelope { offset: 0, codec });
        }
        let (flavor, v) = if let Some(rest) = magic.strip_prefix(b"REDIS") {
            ("redis", digits(rest).ok_or_else(bad)?)
        } else if let Some(rest) = magic.strip_prefix(b"VALKEY") {
            ("valkey", digits(rest).ok_or_else(bad)?)
        } else {
            return Err(bad());
        };
        let unsupported = RdbError::UnsupportedVersion {
            offset: 5,
            flavor,
            version: v,
        };
        match flavor {
            "redis" if (1..=RDB_VERSION_MAX_REDIS).contains(&v) => Ok(RdbVersion::Redis(v)),
            "valkey" if v == RDB_VERSION_VALKEY_9 => Ok(RdbVersion::Valkey(v)),
            _ => Err(unsupported),
        }
    }
}

impl std::fmt::Display for RdbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RdbVersion::Redis(v) => write!(f, "REDIS{v:04}"),
            RdbVersion::Valkey(v) => write!(f, "VALKEY{v:03}"),
        }
    }
}
