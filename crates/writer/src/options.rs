//! The flags that change the data path, as one value every stage of one shard's sync
//! reads: the filter, the target db, the conflict policy, the big-key threshold and
//! the rate limits. `redis-port` and `redis-sync-manager` build it from their flags
//! (`rsm-flags`); the writer, the loader and the replay path only read it.

use rsm_client::throttle::Limits;
use rsm_command::{KeyPrefixes, TargetDb};

pub use rsm_command::ConflictPolicy;

/// Data-path options of one engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// `--filterkey`: only keys under these prefixes are written; the others are counted as
    /// filtered, never silently dropped.
    pub filter: KeyPrefixes,
    /// `--targetdb`: every key goes into this db of a standalone target.
    pub target_db: Option<u32>,
    /// What a key that already exists in the target meets: stop (the default), keep the
    /// target's value (`--skip-existing`) or replace it (`--rewrite`).
    pub conflict: ConflictPolicy,
    /// `--bigkeysize`: values larger than this are written as chunks of commands.
    pub big_key_size: Option<u64>,
    /// `--max-bandwidth` / `--max-ops`, shared by every engine of the process.
    pub limits: Limits,
}

impl EngineOptions {
    /// `--targetdb` as the one type that decides where each source db goes.
    pub fn db_map(&self) -> TargetDb {
        TargetDb::new(self.target_db)
    }
}
