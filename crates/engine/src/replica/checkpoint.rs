//! Where a shard's sync stands, kept on disk so a restart can continue with
//! `PSYNC replid applied+1` instead of copying everything again.
//!
//! Written atomically (temp file + rename) so a crash mid-write leaves the
//! previous checkpoint, never a torn one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::handshake::ResumePoint;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The node we replicate from, as `HOST:PORT`.
    pub source: String,
    /// The source's replication id.
    pub replid: String,
    /// The last stream offset applied to the target.
    pub applied: u64,
    /// Unix milliseconds of the write, for the operator.
    pub written_at_ms: u64,
    /// The shard's slots in the source (`0-5460`), when the source is a
    /// cluster: after a failover another node of the same slots may continue
    /// this history. Absent in checkpoints of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<String>,
}

impl Checkpoint {
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            replid: self.replid.clone(),
            applied: self.applied,
        }
    }
}

/// The checkpoint file of one shard.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> CheckpointFile {
        CheckpointFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoint; `Ok(None)` when there is none yet.
    pub fn load(&self) -> io::Result<Option<Checkpoint>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::other(format!(
                    "checkpoint {} is unreadable: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, checkpoint: &Checkpoint) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(checkpoint).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }

    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path().join("sub/shard-0.checkpoint"));
        assert_eq!(file.load().unwrap(), None);
        let cp = Checkpoint {
            source: "127.0.0.1:7000".into(),
            replid: "abc".into(),
            applied: 42,
            written_at_ms: 1,
            slots: Some("0-5460".into()),
        };
        file.save(&cp).unwrap();
        assert_eq!(file.load().unwrap(), Some(cp));
        // A checkpoint written before `slots` existed still loads.
        std::fs::write(
            file.path(),
            br#"{"source":"h:1","replid":"r","applied":5,"written_at_ms":2}"#,
        )
        .unwrap();
        assert_eq!(file.load().unwrap().unwrap().slots, None);
        std::fs::write(file.path(), b"{torn").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("unreadable"));
    }
}
