//! Where a shard's sync stands, kept on disk for the operator: the source, its replid and
//! the offset applied (and durable) in the target. A restart does not resume from it:
//! where to continue with `PSYNC replid applied+1` comes from the floor the target
//! records, so a checkpoint of another target, or of a target flushed since, can never
//! make a run skip its copy (the shard says so when the two disagree).
//!
//! Written atomically (temp file + rename) so a crash mid-write leaves the
//! previous checkpoint, never a torn one, and made durable (the file and its
//! folder are synced) so a power loss cannot take back a rename we relied on.
//! The files say which servers we sync and where: only the owner reads them.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of every state file (checkpoints, spill files): the owner only.
pub const STATE_FILE_MODE: u32 = 0o600;
/// Mode of the state folder: the owner only, like its files.
const STATE_DIR_MODE: u32 = 0o700;

/// Create the state folder (and its parents) if missing, readable by the owner only.
pub fn create_state_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(dir)
}

/// The state folder, made again if it went missing since the shard made it (someone
/// removed it, or the working directory it was in, while the sync ran). Where a sync
/// stands is recorded in the target; the folder holds only the operator's checkpoint and
/// the spill file, so the sync goes on, with one warning each time it has to be made again.
pub fn restore_state_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    create_state_dir(dir)?;
    tracing::warn!(folder = %dir.display(), "the state folder was removed while the sync ran: made it again (the target holds the sync's progress; nothing is lost)");
    Ok(())
}

/// Open a new state file for writing, owner-only from its first byte.
pub fn create_state_file(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(STATE_FILE_MODE)
        .open(path)
}

use serde::{Deserialize, Serialize};

use super::handshake::ResumePoint;

/// One shard's checkpoint; its offset is a durable one (held by the target's replicas
/// too), never more than the target acknowledged.
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
    /// The checkpoint as a resume point (the shard itself resumes from the target's floor).
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

    /// Replace the checkpoint, atomically and durably (see the module docs).
    pub fn save(&self, checkpoint: &Checkpoint) -> io::Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        // The folder may have been removed while the sync ran: made again, with a warning.
        if let Some(dir) = dir {
            restore_state_dir(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(checkpoint).map_err(io::Error::other)?;
        let mut file = create_state_file(&tmp)?;
        file.write_all(&json)?;
        // The data on disk before the rename: a crash after it never finds the new name on
        // an empty or torn file.
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        // Then the folder: the rename itself survives a power loss.
        sync_dir(dir)
    }

    /// Remove the checkpoint (durably): after this a restart cannot continue from it.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            // Already gone is as good: the point is that none remains.
            Err(_) => Ok(()),
            Ok(()) => sync_dir(self.path.parent().filter(|d| !d.as_os_str().is_empty())),
        }
    }
}

/// fsync a folder, so that a rename or removal in it survives a power loss.
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_files_are_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b/state");
        let file = CheckpointFile::new(state.join("shard-3.checkpoint"));
        file.save(&Checkpoint {
            source: "h:1".into(),
            replid: "r".into(),
            applied: 1,
            written_at_ms: 1,
            slots: None,
        })
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // It names the servers synced and where: nobody but the owner reads it.
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(&state), 0o700);
        // The temporary file was renamed, not left behind.
        assert!(!file.path().with_extension("tmp").exists());
        file.remove().unwrap();
        assert_eq!(file.load().unwrap(), None);
        // Removing what is gone is no error.
        file.remove().unwrap();
    }

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
        // A torn file is an error that names it, never a silent fresh start.
        std::fs::write(file.path(), b"{torn").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("unreadable"));
    }
}
