//! CRC-64 "Jones" as Redis uses it for RDB files and DUMP payloads (reflected, poly
//! 0xAD93D23594C935A9, init 0, xorout 0; check value for "123456789" is 0xE9C6D914C4B8D9CA).
//! Backed by `crc-fast` (`Crc64Redis`), which uses SIMD folding.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-64/Redis of `data`.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Redis, data)
}

/// An incremental CRC-64/Redis.
#[derive(Clone)]
pub struct Crc64(Digest);

impl Crc64 {
    pub fn new() -> Self {
        Crc64(Digest::new(CrcAlgorithm::Crc64Redis))
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc64({:#018x})", self.value())
    }
}
