//! How one engine (one shard's sync) behaves: what the flags shared by
//! `redis-port` and `redis-sync-manager` mean to the data path.

use crate::filter::KeyPrefixes;

/// What to do when a key from the source already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Stop the shard with an error naming the key and `--rewrite` (default).
    #[default]
    Fail,
    /// Replace it (`--rewrite`).
    Rewrite,
    /// Keep the target's value and count the key (`--skip-existing`).
    Skip,
}

/// Data-path options of one engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub filter: KeyPrefixes,
    /// `--targetdb`: every key goes into this db of a standalone target.
    pub target_db: Option<u32>,
    pub conflict: ConflictPolicy,
    /// `--bigkeysize`: values larger than this are written as chunks of commands.
    pub big_key_size: Option<u64>,
}
