//! What the operator chose for a key that already exists in the target
//! (`--rewrite`, `--skip-existing`, or neither): one value, read by the loader, the
//! replay path and the writer alike.

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
