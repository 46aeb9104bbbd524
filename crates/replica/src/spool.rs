//! The spool between the replication socket and the rest of the engine.
//!
//! The socket is always read as fast as the source sends, so the source never
//! has to hold our share of its replication output buffer (the thing that makes
//! a master drop a slow replica). What the engine has not applied yet waits
//! here: in memory up to a limit, then in a file in the log folder, which is
//! removed once drained. Order is kept: once spilling starts, new segments go
//! to the file until the reader has caught up with all of it.
//!
//! A write that fails (a full disk, a removed folder that cannot be made again) breaks
//! the spool for good: the consumer's next [`Spool::pop`] returns that error, at once,
//! rather than waiting for segments that will never come. The spool is per connection,
//! so the next session starts with a fresh one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// What the replication link hands to the engine, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Bytes of the snapshot (RDB), without the transfer framing.
    Rdb(Bytes),
    /// The snapshot is complete.
    RdbEnd,
    /// Bytes of the replication command stream.
    Stream(Bytes),
    /// The link ended; the reason is for the log.
    Closed(String),
}

/// A segment in the spill file: a one-byte tag, its length (u32, little-endian), its bytes.
const TAG_RDB: u8 = 1;
const TAG_RDB_END: u8 = 2;
const TAG_STREAM: u8 = 3;
const TAG_CLOSED: u8 = 4;

/// A segment read back longer than 64 of these (64 MiB) is taken for a corrupt length and
/// refused rather than allocated: the link writes segments of one socket read (256 KiB).
const FILE_READ_CHUNK: usize = 1 << 20;

/// The file segments go to once memory is full, read back in order.
struct SpillFile {
    file: File,
    /// Bytes written and not yet read back.
    unread: u64,
    /// Where the next segment to read starts: read from the front, written at the end.
    read_pos: u64,
}

struct Inner {
    /// Segments in memory, oldest first. Each is older than any in the file: while the
    /// file holds unread segments, new ones go behind them.
    memory: VecDeque<Segment>,
    /// Their bytes, against the memory limit.
    memory_bytes: usize,
    /// The spill file, from the first segment that did not fit until it is drained.
    spill: Option<SpillFile>,
    /// `Closed` was pushed: nothing after it matters.
    closed: bool,
    /// A write failed: what the consumer gets instead of the next segment.
    failed: Option<(io::ErrorKind, String)>,
}

/// A single-producer, single-consumer queue of segments with bounded memory.
pub struct Spool {
    inner: Mutex<Inner>,
    /// Wakes the consumer; it keeps one wake-up for a consumer not waiting yet, so a push
    /// just before `pop` waits is not missed.
    ready: Notify,
    memory_limit: usize,
    path: PathBuf,
    /// Bytes in the spill file not yet read back, for whoever wants a gauge.
    spilled_bytes: Arc<AtomicU64>,
}

impl Spool {
    /// `path` is where the spill file goes if memory fills up; it is created
    /// only when needed. `spilled_bytes` follows the file's unread bytes, for a caller
    /// that wants a gauge (the shard reads [`Spool::backlog`] instead).
    pub fn new(path: PathBuf, memory_limit: usize, spilled_bytes: Arc<AtomicU64>) -> Spool {
        Spool {
            inner: Mutex::new(Inner {
                memory: VecDeque::new(),
                memory_bytes: 0,
                spill: None,
                closed: false,
                failed: None,
            }),
            ready: Notify::new(),
            memory_limit,
            path,
            spilled_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, never a
        // broken invariant worth refusing to read; take the guard either way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a segment. Never waits for the consumer. An error breaks the spool: the
    /// consumer gets it from [`Spool::pop`] (and so does any later push).
    pub fn push(&self, segment: Segment) -> io::Result<()> {
        let result = self.push_inner(segment);
        if let Err(e) = &result {
            let mut inner = self.lock();
            if inner.failed.is_none() {
                inner.failed = Some((e.kind(), format!("cannot write to the spool: {e}")));
            }
            // The rest of the file may hold a torn segment; it is read no more.
            inner.closed = true;
        }
        // Wake the consumer for the segment, or for the error.
        self.ready.notify_one();
        result
    }

    fn push_inner(&self, segment: Segment) -> io::Result<()> {
        let size = segment_len(&segment);
        let is_closed = matches!(segment, Segment::Closed(_));
        {
            let mut inner = self.lock();
            if let Some((kind, message)) = &inner.failed {
                return Err(io::Error::new(*kind, message.clone()));
            }
            // Nothing after `Closed` matters: dropped quietly.
            if inner.closed {
                return Ok(());
            }
            // While the file holds unread segments everything goes behind them,
            // `Closed` included, or the consumer would see it too early.
            // `Closed` alone never starts a file: a few bytes, and the last segment.
            let must_spill = inner.spill.as_ref().is_some_and(|s| s.unread > 0)
                || (inner.memory_bytes + size > self.memory_limit
                    && !matches!(segment, Segment::Closed(_)));
            if must_spill {
                if inner.spill.is_none() {
                    // The shard made the folder at its start; it may have been removed
                    // since (with the working directory): make it again, with a warning.
                    if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        super::checkpoint::restore_state_dir(dir)?;
                    }
                    // Owner-only from its first byte: it holds the source's data.
                    let file = super::checkpoint::create_state_file(&self.path)?;
                    inner.spill = Some(SpillFile {
                        file,
                        unread: 0,
                        read_pos: 0,
                    });
                }
                let spill = inner
                    .spill
                    .as_mut()
                    .ok_or_else(|| io::Error::other("spill file vanished"))?;
                let written = write_segment(&mut spill.file, &segment)?;
                spill.unread += written;
                self.spilled_bytes.store(spill.unread, Ordering::Relaxed);
            } else {
                // Room in memory, and no older segment waits in the file.
                inner.memory_bytes += size;
                inner.memory.push_back(segment);
            }
            // Only once it is in: a `Closed` that could not be written must not hide the
            // error behind it.
            if is_closed {
                inner.closed = true;
            }
        }
        Ok(())
    }

    /// Next segment, waiting until there is one, or the error that broke the spool.
    pub async fn pop(&self) -> io::Result<Segment> {
        loop {
            if let Some(seg) = self.try_pop()? {
                return Ok(seg);
            }
            self.ready.notified().await;
        }
    }

    /// Next segment if one is ready.
    pub fn try_pop(&self) -> io::Result<Option<Segment>> {
        let mut inner = self.lock();
        if let Some((kind, message)) = &inner.failed {
            // What is still queued came before the failure, but the session ends on it
            // anyway: say so now rather than after applying more.
            return Err(io::Error::new(*kind, message.clone()));
        }
        if let Some(seg) = inner.memory.pop_front() {
            inner.memory_bytes -= segment_len(&seg);
            return Ok(Some(seg));
        }
        // Memory is empty: everything older than the file's content has been
        // consumed, so the file's next segment is the next one in order.
        let Some(spill) = inner.spill.as_mut() else {
            return Ok(None);
        };
        // Nothing anywhere: the consumer waits for the next push.
        if spill.unread == 0 {
            return Ok(None);
        }
        // One file handle for both ends: a read seeks to its place, then back to the end.
        spill.file.seek(SeekFrom::Start(spill.read_pos))?;
        let (seg, used) = read_segment(&mut spill.file)?;
        spill.read_pos += used;
        spill.unread -= used;
        self.spilled_bytes.store(spill.unread, Ordering::Relaxed);
        if spill.unread == 0 {
            // Drained: drop the file so disk use returns to zero.
            inner.spill = None;
            let _ = std::fs::remove_file(&self.path);
        } else {
            // Writes append at the end.
            spill.file.seek(SeekFrom::End(0))?;
        }
        Ok(Some(seg))
    }

    /// Where the spill file goes (or went).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Bytes waiting in memory and on disk.
    pub fn backlog(&self) -> (usize, u64) {
        let inner = self.lock();
        (
            inner.memory_bytes,
            inner.spill.as_ref().map_or(0, |s| s.unread),
        )
    }
}

/// A spool dropped with segments still spilled: the file is of no use to anyone after it
/// (the next session receives what it lacks from the source again).
impl Drop for Spool {
    fn drop(&mut self) {
        if self.lock().spill.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Remove the spill files of every shard in `state_dir` (`shard-N.spill`): for a process
/// that ends without dropping its spools. Best effort: a file that cannot go stays.
pub fn remove_spill_files(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("shard-") && name.ends_with(SPILL_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The extension of a spill file: `shard-N.spill`.
pub const SPILL_SUFFIX: &str = ".spill";

/// What a segment costs against the memory limit.
fn segment_len(seg: &Segment) -> usize {
    match seg {
        Segment::Rdb(b) | Segment::Stream(b) => b.len(),
        Segment::RdbEnd => 0,
        Segment::Closed(s) => s.len(),
    }
}

/// Append one segment at the file's position; the bytes it took.
fn write_segment(file: &mut File, seg: &Segment) -> io::Result<u64> {
    let (tag, data): (u8, &[u8]) = match seg {
        Segment::Rdb(b) => (TAG_RDB, b),
        Segment::RdbEnd => (TAG_RDB_END, &[]),
        Segment::Stream(b) => (TAG_STREAM, b),
        Segment::Closed(s) => (TAG_CLOSED, s.as_bytes()),
    };
    // Refused, never truncated: a cut length would misframe every segment after it.
    let len =
        u32::try_from(data.len()).map_err(|_| io::Error::other("segment larger than 4 GiB"))?;
    let mut header = [0u8; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&len.to_le_bytes());
    file.write_all(&header)?;
    file.write_all(data)?;
    Ok(5 + data.len() as u64)
}

/// The segment at the file's position, and the bytes it took.
fn read_segment(file: &mut File) -> io::Result<(Segment, u64)> {
    let mut header = [0u8; 5];
    file.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > FILE_READ_CHUNK * 64 {
        return Err(io::Error::other(format!(
            "spill file corrupt: segment of {len} bytes"
        )));
    }
    let mut data = vec![0u8; len];
    file.read_exact(&mut data)?;
    let seg = match header[0] {
        TAG_RDB => Segment::Rdb(Bytes::from(data)),
        TAG_RDB_END => Segment::RdbEnd,
        TAG_STREAM => Segment::Stream(Bytes::from(data)),
        TAG_CLOSED => Segment::Closed(String::from_utf8_lossy(&data).into_owned()),
        t => return Err(io::Error::other(format!("spill file corrupt: tag {t}"))),
    };
    Ok((seg, 5 + len as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn keeps_order_across_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let gauge = Arc::new(AtomicU64::new(0));
        // 100 bytes of memory: a few 30-byte segments, then the file.
        let spool = Spool::new(path.clone(), 100, gauge.clone());
        let mut expected = Vec::new();
        for i in 0..50u8 {
            // Empty segments among the others: the order holds for every kind.
            let seg = if i % 7 == 0 {
                Segment::RdbEnd
            } else {
                Segment::Stream(bytes(30, i))
            };
            spool.push(seg.clone()).unwrap();
            expected.push(seg);
            // Consume now and then so memory and file interleave.
            if i % 5 == 0 {
                assert_eq!(spool.try_pop().unwrap(), Some(expected.remove(0)));
            }
        }
        assert!(
            path.exists(),
            "memory limit was exceeded, a spill file should exist"
        );
        assert!(gauge.load(Ordering::Relaxed) > 0);
        // Whatever sat in memory or in the file, it comes out in the order it went in.
        while let Some(seg) = spool.try_pop().unwrap() {
            assert_eq!(seg, expected.remove(0));
        }
        assert!(expected.is_empty());
        assert!(!path.exists(), "drained spill file must be removed");
        assert_eq!(gauge.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_failed_write_reaches_the_consumer_at_once() {
        // A spill file that cannot be created: its folder would be under a plain file.
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"x").unwrap();
        let spool = Arc::new(Spool::new(blocker.join("state/spill"), 10, Arc::default()));
        spool.push(Segment::Rdb(bytes(8, 1))).unwrap();
        let waiting = {
            let s = spool.clone();
            tokio::spawn(async move {
                // The first segment, then the error instead of a wait for ever.
                let first = s.pop().await.unwrap();
                (first, s.pop().await.unwrap_err())
            })
        };
        // The consumer takes the first segment and waits for the next.
        tokio::task::yield_now().await;
        let err = spool.push(Segment::Rdb(bytes(16, 2))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        let (first, popped) = waiting.await.unwrap();
        assert_eq!(first, Segment::Rdb(bytes(8, 1)));
        assert!(popped.to_string().contains("cannot write to the spool"));
        assert_eq!(popped.kind(), io::ErrorKind::NotADirectory);
        // Later pushes, `Closed` included, fail too: the link ends on the same error.
        assert!(spool.push(Segment::Closed("stopped".into())).is_err());
        assert!(spool.try_pop().is_err());
    }

    #[tokio::test]
    async fn pop_waits_for_push() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::new(dir.path().join("s"), 1 << 20, Arc::default()));
        // The consumer waits first; the push must wake it.
        let s2 = spool.clone();
        let t = tokio::spawn(async move { s2.pop().await.unwrap() });
        // The consumer is parked before the push.
        tokio::task::yield_now().await;
        spool.push(Segment::Stream(bytes(3, 1))).unwrap();
        assert_eq!(t.await.unwrap(), Segment::Stream(bytes(3, 1)));
    }
}
