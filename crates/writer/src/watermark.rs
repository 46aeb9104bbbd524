//! The applied offset, from acknowledged replies.
//!
//! Every entry given to the writer gets a *track*, in the order given; a track is settled
//! when every request made from it is answered. Tracks settle from the front only, so the
//! watermark is the offset of the last entry such that it and every entry before it were
//! applied. An entry that was not (wholly) applied freezes the watermark before it for
//! good: what follows it in the stream may depend on it.
//!
//! A value written in pieces (a chunked key, a value rebuilt with commands) spans several
//! entries that share a *group*: one failed piece fails the whole key, and a key skipped
//! under `--skip-existing` is not counted as written.
//!
//! Pure: no I/O.

use std::collections::{HashSet, VecDeque};

use tokio::sync::OwnedSemaphorePermit;

/// One entry given to the writer, until all its requests are answered.
pub(super) struct Track {
    /// Requests not yet answered, plus one while admission still makes them: a request
    /// answered at once must not settle an entry whose other requests are still to come.
    remaining: u32,
    /// One of its requests was not applied: the entry settles as not applied.
    failed: bool,
    /// Count a written key when this entry settles (RESTORE, end of a chunked key).
    pub counts_key: bool,
    /// Count a written command when it settles (a stream command or transaction).
    pub counts_command: bool,
    /// The source offset just after it (0: a snapshot entry).
    pub offset: u64,
    /// The key written in pieces it belongs to (see the module docs).
    pub group: Option<u64>,
    /// Its bytes in the writer's buffer bound, released once its requests are answered.
    permit: Option<OwnedSemaphorePermit>,
}

/// What settling entries changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settled {
    /// Keys now known written (for `keys_written`).
    pub keys: u64,
    /// Stream commands now known applied (for `commands_written`).
    pub commands: u64,
    /// The new watermark, when it moved.
    pub applied: Option<u64>,
    /// An entry settled as not applied.
    pub failed: bool,
}

/// Every entry not yet settled, in the order given.
#[derive(Default)]
pub(super) struct Tracks {
    pending: VecDeque<Track>,
    /// The id of `pending`'s front: ids are positions in the order given, so a track is
    /// found without a map, and an id already settled is simply not found.
    base: u64,
    /// An entry settled as not applied: the watermark never moves again in this writer.
    frozen: bool,
    /// Groups with a piece not applied: their pieces still pending settle as not applied.
    failed_groups: HashSet<u64>,
    /// Groups whose key the target keeps (`--skip-existing`). Kept for the writer's life:
    /// admission and dispatch drop the key's later pieces, which may come long after.
    skipped_groups: HashSet<u64>,
}

impl Tracks {
    /// A new track held open by its admission (settle it with one `complete`). Its id is
    /// its place in the order: the watermark settles tracks in that order only.
    pub(super) fn open(&mut self, permit: Option<OwnedSemaphorePermit>) -> u64 {
        let id = self.base + self.pending.len() as u64;
        self.pending.push_back(Track {
            remaining: 1,
            failed: false,
            counts_key: false,
            counts_command: false,
            offset: 0,
            group: None,
            permit,
        });
        id
    }

    /// The track of `id` while it is pending; `None` once it has settled.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Track> {
        let i = id.checked_sub(self.base)?;
        self.pending.get_mut(usize::try_from(i).ok()?)
    }

    /// `n` more requests answer for this track: each request admission made, and those
    /// added later (a marker check, the commands rebuilding a refused RESTORE, a failure
    /// record), so that it settles only once the last of them is answered.
    pub(super) fn add(&mut self, id: u64, n: u32) {
        if let Some(t) = self.get_mut(id) {
            t.remaining += n;
        }
    }

    /// The entry will not be (wholly) applied.
    pub(super) fn fail(&mut self, id: u64) {
        if let Some(t) = self.get_mut(id) {
            t.failed = true;
        }
    }

    /// A piece of `group` will not be applied: the whole key is not.
    pub(super) fn fail_group(&mut self, group: u64) {
        self.failed_groups.insert(group);
    }

    /// The key of `group` exists on the target and is kept (`--skip-existing`).
    pub(super) fn skip_group(&mut self, group: u64) {
        self.skipped_groups.insert(group);
    }

    /// The groups [`Tracks::skip_group`] named, for admission and dispatch to drop their
    /// pieces instead of writing over the key the target keeps.
    pub(super) fn skipped(&self) -> &HashSet<u64> {
        &self.skipped_groups
    }

    /// Nothing is pending: every entry given so far has settled.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// One request of `id` answered (`ok`: applied). Settles what can be settled.
    pub(super) fn complete(&mut self, id: u64, ok: bool) -> Settled {
        let mut out = Settled::default();
        let Some(t) = self.get_mut(id) else {
            return out;
        };
        t.remaining = t.remaining.saturating_sub(1);
        t.failed |= !ok;
        // Its bytes go back as soon as it is answered, even while an earlier entry still
        // holds the watermark: the writer's buffer bound is about memory, not order.
        if t.remaining == 0 {
            t.permit = None;
        }
        // From the front only: an entry answered before an earlier one waits for it, so
        // the watermark never passes an entry that is not applied yet.
        while self.pending.front().is_some_and(|t| t.remaining == 0) {
            let Some(t) = self.pending.pop_front() else {
                break;
            };
            self.base += 1;
            self.settle(t, &mut out);
        }
        if self.pending.is_empty() {
            // Groups are only needed while their entries are pending.
            self.failed_groups.clear();
        }
        out
    }

    /// Count one track leaving the front and move the watermark over it if it may.
    fn settle(&mut self, t: Track, out: &mut Settled) {
        let group_failed = t.group.is_some_and(|g| self.failed_groups.contains(&g));
        let group_skipped = t.group.is_some_and(|g| self.skipped_groups.contains(&g));
        let ok = !t.failed && !group_failed;
        // A failed piece fails the pieces of its key pending behind it (and so the key's
        // count, which its last piece carries).
        if t.failed {
            if let Some(g) = t.group {
                self.failed_groups.insert(g);
            }
        }
        if ok && t.counts_key && !group_skipped {
            out.keys += 1;
        }
        if ok && t.counts_command {
            out.commands += 1;
        }
        // Snapshot entries carry no offset, but a failed one still holds the watermark:
        // the end-of-snapshot mark after it must not claim the snapshot is in the target.
        if !ok {
            self.frozen = true;
            out.failed = true;
        }
        if t.offset > 0 && !self.frozen {
            out.applied = Some(t.offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(tr: &mut Tracks, offset: u64) -> u64 {
        let id = tr.open(None);
        let t = tr.get_mut(id).unwrap();
        t.offset = offset;
        t.counts_command = true;
        id
    }

    #[test]
    fn the_watermark_moves_only_over_settled_entries() {
        let mut tr = Tracks::default();
        let a = command(&mut tr, 100);
        let b = command(&mut tr, 200);
        tr.add(a, 1); // one request in flight for a
        assert_eq!(tr.complete(b, true).applied, None, "a is still open");
        assert_eq!(
            tr.complete(a, true).applied,
            None,
            "a's request is still in flight"
        );
        let s = tr.complete(a, true);
        assert_eq!(
            s,
            Settled {
                keys: 0,
                commands: 2,
                applied: Some(200),
                failed: false
            }
        );
        assert!(tr.is_empty());
    }

    #[test]
    fn a_failed_entry_freezes_the_watermark_for_good() {
        let mut tr = Tracks::default();
        let a = command(&mut tr, 100);
        let s = tr.complete(a, false);
        assert!(s.failed);
        assert_eq!(s.applied, None);
        assert_eq!(s.commands, 0, "a failed command is not counted as written");
        let b = command(&mut tr, 200);
        assert_eq!(tr.complete(b, true).applied, None);
    }

    #[test]
    fn one_failed_piece_fails_the_whole_key() {
        let mut tr = Tracks::default();
        let start = tr.open(None);
        tr.get_mut(start).unwrap().group = Some(7);
        let end = tr.open(None);
        let t = tr.get_mut(end).unwrap();
        t.group = Some(7);
        t.counts_key = true;
        tr.fail(start);
        let s1 = tr.complete(start, true);
        assert!(s1.failed);
        let s2 = tr.complete(end, true);
        assert_eq!(s2.keys, 0, "the key's first piece failed");
        assert!(s2.failed);
    }

    #[test]
    fn a_skipped_key_is_not_counted() {
        let mut tr = Tracks::default();
        let id = tr.open(None);
        let t = tr.get_mut(id).unwrap();
        t.group = Some(3);
        t.counts_key = true;
        tr.skip_group(3);
        let s = tr.complete(id, true);
        assert_eq!(s.keys, 0);
        assert!(!s.failed);
    }

    #[test]
    fn unknown_tracks_are_ignored() {
        let mut tr = Tracks::default();
        assert_eq!(tr.complete(42, true), Settled::default());
    }
}
