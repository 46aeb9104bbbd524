//! Admission: one entry, a view of the target and the time → what to send.
//!
//! Decides, without I/O: filtered out, expired, for a db the target lacks, one RESTORE
//! (its trailer rewritten for an older target), commands that rebuild a value the target
//! cannot RESTORE, chunked commands for a big key, a command split per slot, a source
//! transaction kept whole when it can be. The writer turns what it says into requests and
//! applies the tally to its counters.
//!
//! Why a pure step of its own: every rule about what a write becomes can be tested here
//! without a server; the writer task only carries it out.
//!
//! Nothing is dropped silently: an entry that sends nothing, or less than it was, says
//! why in the tally (filtered, expired, failed of some kind, already applied) or in
//! [`Admitted::failure`], which the writer keeps for its error. Only commands that are no
//! data at all (`PING`, `REPLCONF` …) pass uncounted.
//!
//! Exactly-once (see [`super::progress`]) is decided here too: a stream write the slot's
//! marker covers is not sent again, and one not safe to apply twice goes in one
//! `MULTI … EXEC` with the marker.

use std::collections::HashSet;

use bytes::Bytes;
use rsm_rdb::constants::RDB_TYPE_MODULE_2;
use rsm_rdb::{dump, encode, Elements, RdbVersion};

use super::commands::{element_commands, Capabilities, ValueState};
use super::downgrade::{self, Lacks};
use super::order::KEYLESS;
use super::progress::{failed_key, idempotent, marker_value, slot_marker_key, Progress};
use super::request::Body;
use super::show_key;
use super::sync_marker::MARKER_PREFIX;
use super::target::TargetInfo;
use rsm_command::entry::{Command, DbIndex, Entry, KeyUsage, Route};
use rsm_command::filter::commands::{route_command, DropReason};
use rsm_command::filter::KeyPrefixes;
use rsm_command::table::CommandTable;
use rsm_command::ConflictPolicy;
use rsm_counters::Losses;

/// Which node a planned request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dest {
    /// The owner of its slot, in the slot's order.
    Slot,
    /// Every master (one request each): a keyless write each of them must see
    /// (`FLUSHALL`, `FUNCTION LOAD` …).
    Masters,
    /// Any one master, which answers for it (a keyless write our table cannot place).
    /// Always the first: on one node, in the `KEYLESS` order, such commands keep their
    /// order among themselves.
    AnyMaster,
}

/// One request to make.
#[derive(Debug, PartialEq)]
pub(super) struct Planned {
    pub dest: Dest,
    /// The slot whose order it keeps (`KEYLESS` for keyless commands).
    pub slot: usize,
    /// The target db; a standalone target's connection SELECTs it first when needed.
    pub db: DbIndex,
    pub body: Body,
    /// The key written in pieces it belongs to: one failed piece fails the key, and a
    /// key the target keeps (`--skip-existing`) has its pieces dropped.
    pub group: Option<u64>,
    /// The stream command's source offset (0: a snapshot write).
    pub offset: u64,
    /// Written with its slot's marker (see [`super::progress`]).
    pub marked: bool,
}

/// What admission counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Keys and commands `--filterkey` leaves out.
    pub filtered: u64,
    /// Keys already expired when read, or with nothing left once expired fields are gone.
    pub expired: u64,
    /// Writes for a db the target lacks.
    pub failed_db: u64,
    /// Values the target cannot RESTORE that commands cannot rebuild either (a module
    /// value, a payload that cannot be decoded).
    pub failed_untranslatable: u64,
    /// All-or-nothing commands whose keys lie in several slots of a cluster target.
    pub failed_cross_slot: u64,
    /// Refused here for good: a key under the tool's prefix, a trailer that cannot be
    /// rewritten, a chunk outside its key.
    pub failed_rejected: u64,
    /// Values rebuilt with commands.
    pub transcoded: u64,
    /// Values written again in a type the target reads (one RESTORE each).
    pub reencoded: u64,
    pub lost: Losses,
    /// Hash fields already expired when read: dropped.
    pub expired_fields: u64,
    /// Stream commands the target's markers show as applied already: not sent again.
    pub already_applied: u64,
}

/// The outcome of admitting one entry.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    /// In the order to send them; each joins its slot's order.
    pub reqs: Vec<Planned>,
    pub tally: Tally,
    /// Why the entry will not be (wholly) applied.
    pub failure: Option<String>,
    /// Count a written key when the entry is applied.
    pub counts_key: bool,
    /// A stream command or transaction: counted under commands once applied.
    pub counts_command: bool,
    /// The source offset just after it (commands): the watermark moves there once the
    /// entry, and every entry before it, is applied.
    pub offset: u64,
    /// The key written in pieces this entry belongs to.
    pub group: Option<u64>,
}

impl Admitted {
    /// Empty for the next entry, keeping `reqs`' buffer: one `Admitted` serves them all.
    fn clear(&mut self) {
        self.reqs.clear();
        self.tally = Tally::default();
        self.failure = None;
        self.counts_key = false;
        self.counts_command = false;
        self.offset = 0;
        self.group = None;
    }

    /// The entry will not be (wholly) applied. The first reason is kept: it is the one
    /// the writer's error names.
    fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    /// A snapshot request to the owner of `slot`: no offset and no marker, since the
    /// slot markers are about the stream (a snapshot is copied whole, or again).
    fn push(&mut self, slot: usize, db: DbIndex, body: Body, group: Option<u64>) {
        self.reqs.push(Planned {
            dest: Dest::Slot,
            slot,
            db,
            body,
            group,
            offset: 0,
            marked: false,
        });
    }
}

/// The piece-by-piece key being received (`BigKeyStart` … `BigKeyEnd`).
struct Big {
    /// Every request of the key carries it (see [`Planned::group`]).
    group: u64,
    key: Bytes,
    /// The target db (0 when the key is dropped: then unused).
    db: DbIndex,
    slot: usize,
    /// Set by `PEXPIREAT` after the last chunk, never before: a half-written key must not
    /// expire early with part of its value.
    expire: Option<i64>,
    /// What later chunks need of earlier ones (see [`ValueState`]).
    state: ValueState,
    /// Filtered, expired or bad db: its chunks are dropped.
    dropped: bool,
}

/// What admission keeps from one entry to the next: the target as detected, the conflict
/// policy in force, the key being received in pieces, and what the target has refused.
pub(super) struct Admitter {
    info: TargetInfo,
    /// What rebuilt values may use (from the target's version).
    caps: Capabilities,
    /// Which replicated commands need rewriting (from the target's version).
    lacks: Lacks,
    /// Stream writes that lost something on this target, for a log that names some of
    /// them without a line per write. A `Cell`: counted on the `&self` paths.
    lossy_writes: std::cell::Cell<u64>,
    filter: KeyPrefixes,
    /// `--targetdb`: where every source db goes on a standalone target.
    target_db: Option<DbIndex>,
    /// The policy for the keys admitted now. A copy into slots only this sync has written
    /// runs with `Rewrite` (see `Writer::set_conflict_policy`), until keys of a second
    /// source db meet the first one's in the `--targetdb` db: from then on `user_conflict`.
    pub conflict: ConflictPolicy,
    /// The operator's policy, which `conflict` gives way to (see above).
    user_conflict: ConflictPolicy,
    /// Under `--targetdb`: the source dbs whose snapshot keys were admitted, in order.
    merged_dbs: Vec<DbIndex>,
    /// Payload types this target refused: later keys of these types go straight to commands.
    refused_types: HashSet<u8>,
    /// The key being received in pieces: one at a time, since the decoder finishes a key
    /// before it starts the next.
    big: Option<Big>,
    /// The next group id, unique for the writer's life: skipped groups are remembered
    /// that long (see `Tracks::skip_group`).
    next_group: u64,
    /// Exactly-once is on: this sync's id and what the target's markers show.
    progress: Option<Progress>,
}

/// A command name or fixed argument, without an allocation.
fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// The cluster slot of a key (its hash tag's, if it has one), as an index.
fn slot_of(key: &[u8]) -> usize {
    rsm_cluster::key_slot(key).index()
}

impl Admitter {
    pub(super) fn new(
        info: TargetInfo,
        filter: KeyPrefixes,
        target_db: Option<DbIndex>,
        conflict: ConflictPolicy,
    ) -> Admitter {
        // By version, once: a feature the target lacks is left out (and counted), not
        // sent for it to refuse. Stream counters came with 7.0, CREATECONSUMER with 6.2.
        let caps = Capabilities {
            hash_field_ttl: info.hash_field_ttl(),
            stream_v2: info.redis_at_least(7, 0),
            create_consumer: info.redis_at_least(6, 2),
        };
        // `SET … PXAT/EXAT` came with 6.2; a 7.0+ source replicates a SET with an expiry
        // (and SETEX) so.
        let lacks = Lacks {
            set_at: !info.redis_at_least(6, 2),
            field_ttls: !info.hash_field_ttl(),
        };
        Admitter {
            info,
            caps,
            lacks,
            lossy_writes: std::cell::Cell::new(0),
            filter,
            target_db,
            conflict,
            // The policy given at start is the operator's.
            user_conflict: conflict,
            merged_dbs: Vec::new(),
            refused_types: HashSet::new(),
            big: None,
            next_group: 0,
            progress: None,
        }
    }

    /// Write stream commands with slot markers from now on (see [`super::progress`]), and
    /// skip those the target already has.
    pub(super) fn set_progress(&mut self, progress: Option<Progress>) {
        self.progress = progress;
    }

    /// This sync's id and markers, for the writer's marker checks and failure records.
    pub(super) fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// A snapshot key of source `db`. Under `--targetdb`, every source db lands in one
    /// target db: a key name in two of them is a conflict, whatever the slots held before
    /// the copy, so the copy's `Rewrite` gives way to the operator's policy once a second
    /// db begins (a snapshot lists its dbs one after the other).
    fn snapshot_db(&mut self, db: DbIndex) {
        // Without `--targetdb` each source db has a target db of its own: nothing meets.
        if self.target_db.is_none() || self.merged_dbs.contains(&db) {
            return;
        }
        self.merged_dbs.push(db);
        // Only the second db changes anything: the first one's keys met only what the
        // slots held before the copy.
        if self.merged_dbs.len() == 2 {
            tracing::info!(
                source_dbs = ?self.merged_dbs,
                target_db = self.target_db,
                conflict = ?self.user_conflict,
                "a second source db is merged into the --targetdb db: a key name already written from another db is a conflict"
            );
            self.conflict = self.user_conflict;
        }
    }

    /// The source dbs merged into one target db so far, when more than one.
    pub(super) fn merged_dbs(&self) -> Option<&[DbIndex]> {
        (self.merged_dbs.len() > 1).then_some(self.merged_dbs.as_slice())
    }

    /// What to send for `e`, into `out` (emptied first; kept by the caller so its buffer
    /// is reused). `now_ms` is asked only for keys with an expiry. `skipped`: groups whose
    /// key the target keeps (skip policy).
    pub(super) fn admit(
        &mut self,
        e: Entry,
        now_ms: &dyn Fn() -> i64,
        skipped: &HashSet<u64>,
        out: &mut Admitted,
    ) {
        out.clear();
        let out = &mut *out;
        match e {
            Entry::Restore {
                db,
                key,
                payload,
                expire_at_ms,
                usage,
            } => self.restore(db, key, payload, expire_at_ms, usage, now_ms, out),
            Entry::BigKeyStart {
                db,
                key,
                expire_at_ms,
                ..
            } => self.big_start(db, key, expire_at_ms, now_ms, out),
            Entry::BigKeyChunk(els) => self.big_chunk(els, skipped, out),
            Entry::BigKeyEnd => self.big_end(skipped, out),
            // A stream command moves the watermark to its own offset once applied.
            Entry::Command(c) => {
                out.offset = c.offset.0;
                out.counts_command = true;
                self.command(c, out);
            }
            // A source transaction moves it to its last command's offset: the group counts
            // as applied whole or not at all.
            Entry::Transaction(cmds) => {
                out.offset = cmds.last().map_or(0, |c| c.offset.0);
                out.counts_command = true;
                self.transaction(cmds, out);
            }
        }
    }

    /// The db a write goes to, or `None` if the target cannot hold it: a standalone
    /// server has its `databases`, a cluster its `cluster-databases` (db 0 only without).
    fn target_db(&self, db: DbIndex) -> Option<DbIndex> {
        rsm_command::TargetDb::new(self.target_db).place(db, self.info.cluster, self.info.databases)
    }

    /// Filtered, expired or in a db the target lacks (counted): `None`.
    fn key_target(
        &self,
        db: DbIndex,
        key: &[u8],
        expire: Option<i64>,
        now_ms: &dyn Fn() -> i64,
        out: &mut Admitted,
    ) -> Option<DbIndex> {
        // The filter first: a key left out is none of the target's business, whatever
        // else is wrong with it.
        if !self.filter.keeps(key) {
            out.tally.filtered += 1;
            return None;
        }
        // Before the expiry: even an expired key under the tool's prefix says the source
        // holds such keys, which the operator must hear of.
        if reserved(key, out) {
            return None;
        }
        // Expired, it would not exist on the target either (a RESTORE with a past ABSTTL
        // creates nothing): not sent, and counted as what it is. The clock is read only
        // for keys that have an expiry.
        if expire.is_some_and(|at| at <= now_ms()) {
            out.tally.expired += 1;
            return None;
        }
        // Failed and counted, not dropped: the operator must map the db (`--targetdb`).
        let tdb = self.target_db(db);
        if tdb.is_none() {
            out.tally.failed_db += 1;
            out.fail(format!(
                "key {} is in db {db}, which the target does not have (use --targetdb)",
                show_key(key)
            ));
        }
        tdb
    }

    /// A snapshot key as one RESTORE where the target reads its payload (the trailer
    /// rewritten if needed), else re-encoded in a type it reads, else as commands.
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &mut self,
        db: DbIndex,
        key: Bytes,
        payload: Bytes,
        expire: Option<i64>,
        usage: KeyUsage,
        now_ms: &dyn Fn() -> i64,
        out: &mut Admitted,
    ) {
        // Whatever becomes of the key: the db it comes from is what may switch the
        // conflict policy.
        self.snapshot_db(db);
        let Some(db) = self.key_target(db, &key, expire, now_ms, out) else {
            return;
        };
        // Counted as written once its RESTORE, or what replaces it, is applied.
        out.counts_key = true;
        let slot = slot_of(&key);
        let rdb_type = payload.first().copied().unwrap_or(0);
        let trailer = trailer_of(&payload);
        if !self.can_restore(rdb_type, trailer) {
            // Re-encoding first: one RESTORE keeps what commands cannot set. Commands
            // only when no type of the target's can hold the value (or it refused that one).
            let now = now_ms();
            match self.reencode(&key, &payload, now, &mut out.tally) {
                Some(Some(p)) => out.push(slot, db, self.restore_body(key, p, expire, usage), None),
                // Nothing left of it (counted expired by `reencode`), so no key written.
                Some(None) => out.counts_key = false,
                None => self.as_commands(db, slot, key, payload, expire, now, out),
            }
            return;
        }
        // A newer or foreign trailer is refused before the type is even read; the type
        // was checked just above, so the target's own version goes in its place.
        let payload = match trailer {
            Some(t) if needs_rewrite(t, self.info.rdb_version) => {
                match dump::rewrite_trailer(&payload, self.info.rdb_version.number()) {
                    Ok(p) => p,
                    Err(err) => {
                        out.tally.failed_rejected += 1;
                        tracing::warn!(key = %show_key(&key), error = %err, "cannot give the payload the target's RDB version");
                        out.fail(format!(
                            "the target refused RESTORE {}: {err}",
                            show_key(&key)
                        ));
                        return;
                    }
                }
            }
            // As old as the target's or older, or too short to have a trailer (the target
            // judges that one): as it is.
            _ => payload,
        };
        out.push(
            slot,
            db,
            self.restore_body(key, payload, expire, usage),
            None,
        );
    }

    /// `RESTORE key <abs ms> payload ABSTTL [REPLACE] [IDLETIME|FREQ]`.
    fn restore_body(
        &self,
        key: Bytes,
        payload: Bytes,
        expire: Option<i64>,
        usage: KeyUsage,
    ) -> Body {
        // 0: no expiry. Otherwise the source's absolute time (ABSTTL): a RESTORE re-sent
        // later still expires when the source's key does.
        let ttl = expire.map_or(b("0"), |at| Bytes::from(at.to_string()));
        // RESTORE key ttl payload ABSTTL [REPLACE] [IDLETIME n | FREQ n], sized once.
        let mut args = Vec::with_capacity(8);
        args.extend([b("RESTORE"), key, ttl, payload, b("ABSTTL")]);
        // Without REPLACE an existing key answers BUSYKEY, and the fail/skip policy
        // decides (see `replies::busy_key`).
        if self.conflict == ConflictPolicy::Rewrite {
            args.push(b("REPLACE"));
        }
        // The key's LRU idle time or LFU counter, so that the target's eviction treats it
        // as the source's did (a server ignores the one its policy does not use).
        // IDLETIME and FREQ together are a syntax error; a server writes only one.
        if let Some(idle) = usage.idle_secs {
            args.extend([b("IDLETIME"), Bytes::from(idle.to_string())]);
        } else if let Some(freq) = usage.freq {
            args.extend([b("FREQ"), Bytes::from(freq.to_string())]);
        }
        Body::Restore { args, expire }
    }

    /// A payload of a type this target cannot RESTORE, written again in a type it reads:
    /// one RESTORE that keeps what commands cannot set (a stream's pending entries and
    /// consumer times). `None`: not possible (then commands); `Some(None)`: nothing is
    /// left at `now_ms` (every hash field expired: counted expired).
    fn reencode(
        &self,
        key: &Bytes,
        payload: &Bytes,
        now_ms: i64,
        tally: &mut Tally,
    ) -> Option<Option<Bytes>> {
        // Undecodable: `rebuild` meets the same error, and counts and names it.
        let (rdb_type, chunks) = dump::decode_payload(payload).ok()?;
        let encoded = match encode::encode_for(self.info.rdb_version, rdb_type, &chunks, now_ms) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(key = %show_key(key), error = %e, "cannot re-encode for the target: rebuilding with commands");
                return None;
            }
        };
        // A type the target refused before goes as commands, not refused again.
        if let Some(t) = encoded.payload.as_ref().and_then(|p| p.first()) {
            if self.refused_types.contains(t) {
                return None;
            }
        }
        // What the older type cannot hold, counted like a rebuilt value's losses.
        let l = &encoded.losses;
        let mut st = ValueState::new(now_ms);
        st.expired_fields = l.expired_fields;
        st.lost = Losses {
            field_ttls: l.field_ttls,
            // the engine's tally has no kinds of its own for Redis 8.6+/8.8 stream state
            stream_counters: l.stream_counters + l.stream_idmp + l.nack_marks,
            consumer_times: l.consumer_active_times,
            pending_entries: l.pending_unowned,
            ..Losses::default()
        };
        note_losses(key, &st, tally);
        match encoded.payload {
            Some(p) => {
                tally.reencoded += 1;
                Some(Some(p))
            }
            // Every field had expired: the key is gone, as on the source.
            None => {
                tally.expired += 1;
                Some(None)
            }
        }
    }

    /// A group id for a key written in pieces.
    fn new_group(&mut self) -> u64 {
        self.next_group += 1;
        self.next_group - 1
    }

    /// A big key begins: its conflict is settled first (DEL or gate), then its chunks
    /// follow as commands.
    fn big_start(
        &mut self,
        db: DbIndex,
        key: Bytes,
        expire: Option<i64>,
        now_ms: &dyn Fn() -> i64,
        out: &mut Admitted,
    ) {
        self.snapshot_db(db);
        let group = self.new_group();
        let slot = slot_of(&key);
        let tdb = self.key_target(db, &key, expire, now_ms, out);
        let db = tdb.unwrap_or(0);
        // A dropped key (counted just now) sends nothing: its chunks are dropped as they
        // come, and its end counts nothing more.
        if tdb.is_some() {
            self.open_value(group, db, slot, &key, out);
        }
        self.big = Some(Big {
            group,
            key,
            db,
            slot,
            expire,
            // One time for the whole key, however long its chunks take.
            state: ValueState::new(now_ms()),
            dropped: tdb.is_none(),
        });
    }

    /// A chunk of the big key: its commands, unless the key is dropped or kept by the
    /// target (`--skip-existing`, known once its gate answered).
    fn big_chunk(&mut self, els: Elements, skipped: &HashSet<u64>, out: &mut Admitted) {
        let Some(mut big) = self.big.take() else {
            tracing::error!("element chunk outside BigKeyStart/BigKeyEnd: dropped");
            out.tally.failed_rejected += 1;
            out.fail("element chunk outside a big key".into());
            return;
        };
        if !big.dropped && !skipped.contains(&big.group) {
            // The chunk's entry joins the key's group: a failed command fails the key.
            out.group = Some(big.group);
            self.chunk_commands(&mut big, els, out);
        }
        self.big = Some(big);
    }

    /// The big key is complete: count it, and set its expiry now that its value is whole.
    fn big_end(&mut self, skipped: &HashSet<u64>, out: &mut Admitted) {
        let Some(mut big) = self.big.take() else {
            tracing::error!("BigKeyEnd without BigKeyStart: ignored");
            return;
        };
        // Counted already: a drop when the key began, a skip when its gate answered.
        if big.dropped || skipped.contains(&big.group) {
            return;
        }
        let st = std::mem::take(&mut big.state);
        note_losses(&big.key, &st, &mut out.tally);
        if st.vanished() {
            // Every field had expired: the key does not exist, as in the source.
            out.tally.expired += 1;
            return;
        }
        // The key counts on its last entry, once every piece before it has settled.
        out.counts_key = true;
        out.group = Some(big.group);
        if let Some(at) = big.expire {
            let cmd = vec![b("PEXPIREAT"), big.key.clone(), Bytes::from(at.to_string())];
            out.push(big.slot, big.db, Body::Cmd(cmd), Some(big.group));
        }
    }

    /// Before a value written in pieces: DEL under `--rewrite`, otherwise a gate (EXISTS)
    /// that decides between writing, skipping and stopping. Never nothing: the pieces
    /// (`APPEND`, `RPUSH`, `SADD` …) add to whatever the key holds, so they must start
    /// from no key. The gate holds its slot until it answers (see `order`), so no piece
    /// goes out before the decision.
    fn open_value(&self, group: u64, db: DbIndex, slot: usize, key: &Bytes, out: &mut Admitted) {
        let body = match self.conflict {
            ConflictPolicy::Rewrite => Body::Cmd(vec![b("DEL"), key.clone()]),
            ConflictPolicy::Fail | ConflictPolicy::Skip => Body::Gate { key: key.clone() },
        };
        out.push(slot, db, body, Some(group));
    }

    /// The requests for one chunk of a big key, all in the key's slot and group.
    fn chunk_commands(&self, big: &mut Big, els: Elements, out: &mut Admitted) {
        if let Elements::Module { raw, .. } = &els {
            // A module value cannot be rebuilt with commands: RESTORE it whole.
            let payload =
                dump::build_payload(RDB_TYPE_MODULE_2, raw, self.info.rdb_version.number());
            let ttl = big.expire.map_or(b("0"), |at| Bytes::from(at.to_string()));
            // REPLACE: the gate or DEL before it settled the conflict.
            let args = vec![
                b("RESTORE"),
                big.key.clone(),
                ttl,
                payload,
                b("ABSTTL"),
                b("REPLACE"),
            ];
            let body = Body::Restore {
                args,
                expire: big.expire,
            };
            out.push(big.slot, big.db, body, Some(big.group));
            return;
        }
        // `rebuilding`: an XCLAIM's reply says whether its pending entry could be made.
        for cmd in element_commands(&big.key, els, &mut big.state, self.caps) {
            out.push(big.slot, big.db, Body::rebuilding(cmd), Some(big.group));
        }
    }

    /// A payload this target cannot RESTORE: decode it and write commands instead.
    #[allow(clippy::too_many_arguments)]
    fn as_commands(
        &mut self,
        db: DbIndex,
        slot: usize,
        key: Bytes,
        payload: Bytes,
        expire: Option<i64>,
        now_ms: i64,
        out: &mut Admitted,
    ) {
        // A group for one entry: a failed command fails the key, and under the skip policy
        // the gate drops the commands queued behind it.
        let group = self.new_group();
        out.group = Some(group);
        let cmds = match self.rebuild(&key, &payload, expire, now_ms, &mut out.tally) {
            Ok(cmds) => cmds,
            // Counted by `rebuild`; the reason goes to the writer's error.
            Err(why) => return out.fail(why),
        };
        if cmds.is_empty() {
            // Every field had expired (counted by `rebuild`).
            out.counts_key = false;
            return;
        }
        // The conflict is settled only once there is something to write.
        self.open_value(group, db, slot, &key, out);
        for c in cmds {
            out.push(slot, db, Body::rebuilding(c), Some(group));
        }
    }

    /// The target refused payloads of this type: rebuild such values from now on. True
    /// the first time.
    pub(super) fn refuse_type(&mut self, rdb_type: u8) -> bool {
        self.refused_types.insert(rdb_type)
    }

    /// The commands that rebuild a payload's value (plus its expiry), or why it cannot be
    /// (it cannot be decoded, or is a module value); counted in `tally` either way. None
    /// when nothing is left of it at `now_ms` (every hash field expired: counted expired).
    pub(super) fn rebuild(
        &self,
        key: &Bytes,
        payload: &Bytes,
        expire: Option<i64>,
        now_ms: i64,
        tally: &mut Tally,
    ) -> Result<Vec<Vec<Bytes>>, String> {
        let (rdb_type, chunks) = match dump::decode_payload(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(key = %show_key(key), error = %e, "cannot decode the payload to rebuild it with commands");
                tally.failed_untranslatable += 1;
                return Err(format!(
                    "key {}: cannot rebuild the value with commands: {e}",
                    show_key(key)
                ));
            }
        };
        // A module value is opaque: only its module knows its contents.
        if rdb_type == RDB_TYPE_MODULE_2 {
            tracing::warn!(key = %show_key(key), target_rdb = %self.info.rdb_version, "the target refused a module value; it cannot be rebuilt with commands");
            tally.failed_untranslatable += 1;
            return Err(format!(
                "key {}: the target refused a module value, which cannot be rebuilt with commands",
                show_key(key)
            ));
        }
        let mut st = ValueState::new(now_ms);
        let mut cmds = Vec::new();
        for els in chunks {
            cmds.extend(element_commands(key, els, &mut st, self.caps));
        }
        note_losses(key, &st, tally);
        // Nothing left: counted expired, and no key is written.
        if st.vanished() {
            tally.expired += 1;
            return Ok(Vec::new());
        }
        tally.transcoded += 1;
        // The expiry last, as for a big key: never on a half-written value.
        if let Some(at) = expire {
            cmds.push(vec![
                b("PEXPIREAT"),
                key.clone(),
                Bytes::from(at.to_string()),
            ]);
        }
        Ok(cmds)
    }

    /// Does the target know this payload's type (reference §C3)? Types it refused before
    /// are not tried again.
    fn can_restore(&self, rdb_type: u8, trailer: Option<u16>) -> bool {
        if self.refused_types.contains(&rdb_type) {
            return false;
        }
        // One type number means different things to Redis and Valkey (22): the payload's
        // own trailer says whose it is.
        let valkey_payload = trailer.is_some_and(|t| RdbVersion::from_dump_trailer(t).is_valkey());
        let target = self.info.rdb_version;
        match dump::min_version(rdb_type, valkey_payload) {
            // Unknown to us: let the target decide.
            None => true,
            Some(RdbVersion::Redis(v)) => match target {
                RdbVersion::Redis(t) => v <= t,
                // Valkey reads every Redis type up to 21, not the 7.4 field-TTL hashes.
                RdbVersion::Valkey(_) => v <= 11,
            },
            // A Valkey-only type means something else, or nothing, to Redis.
            Some(RdbVersion::Valkey(_)) => target.is_valkey(),
        }
    }

    /// A command whose route nobody found yet gets one here, through the same filter
    /// replay uses. `None`: nothing to write (counted when it is data).
    /// The `bool`: the filter cut keys out of it, so it no longer means what the source's
    /// command meant as a whole (see `transaction`).
    fn resolve(&self, c: Command, out: &mut Admitted) -> Option<(Command, bool)> {
        // Replay routed it already, the filter applied: used as it is.
        if c.route != Route::Unclassified {
            return Some((c, false));
        }
        match route_command(CommandTable::builtin_ref(), &self.filter, &c.args) {
            Ok((cut, route)) => {
                let was_cut = cut.is_some();
                let args = cut.unwrap_or(c.args);
                Some((Command { args, route, ..c }, was_cut))
            }
            // No data (PING, REPLCONF …): nothing to write, nothing to count.
            Err(DropReason::Skipped(_)) => None,
            // Left out by the filter, wholly or as a command that cannot be cut: counted.
            Err(
                DropReason::NoKeyMatches
                | DropReason::MixedKeys { .. }
                | DropReason::OtherShard { .. },
            ) => {
                out.tally.filtered += 1;
                None
            }
            // Let the target judge what our table cannot place (it answers for it).
            Err(DropReason::Unsupported(_)) => Some((
                Command {
                    route: Route::AnyNode,
                    ..c
                },
                false,
            )),
        }
    }

    /// One stream command (not in a transaction).
    fn command(&self, c: Command, out: &mut Admitted) {
        if let Some((c, _)) = self.resolve(c, out) {
            self.routed(c, out);
        }
    }

    /// A command with its route: where it goes, split per slot when it must and can be.
    fn routed(&self, c: Command, out: &mut Admitted) {
        // Never into another db: a command for a db the target lacks fails, counted.
        let Some(db) = self.target_db(c.db) else {
            out.tally.failed_db += 1;
            out.fail(format!(
                "a command for db {}, which the target does not have (use --targetdb)",
                c.db
            ));
            return;
        };
        // A keyless command has no slot to order it by, nor a marker (see `keyless`).
        let (at, slot) = match c.route {
            Route::Keys { at, slot } if !at.is_empty() => (at, slot),
            Route::Broadcast => return self.keyless(Dest::Masters, db, c.args, out),
            _ => return self.keyless(Dest::AnyMaster, db, c.args, out),
        };
        // A write to a key under the tool's prefix could overwrite or forge a progress
        // record: refused for good, whichever of its keys it is.
        if at
            .iter()
            .filter_map(|&i| c.args.get(i))
            .any(|k| reserved(k, out))
        {
            return;
        }
        let first = at
            .first()
            .and_then(|&i| c.args.get(i))
            .map_or(0, |k| slot_of(k));
        let offset = c.offset.0;
        match slot {
            // All its keys in one slot: one request there.
            Some(s) => {
                let cmds = self.downgraded(c.args, out);
                return self.stream_write(usize::from(s), db, cmds, offset, out);
            }
            // One node: the slots only order the writes.
            None if !self.info.cluster => {
                let cmds = self.downgraded(c.args, out);
                return self.stream_write(first, db, cmds, offset, out);
            }
            None => {}
        }
        // Keys in several slots of a cluster: split per slot when the pieces together do
        // what the whole did (MSET, DEL …). Each piece carries the command's offset, so
        // each slot's marker covers its own piece.
        match CommandTable::builtin_ref().partition_keys(&c.args, &at, slot_of) {
            Ok(pieces) => {
                for (slot, piece) in pieces {
                    self.stream_write(slot, db, vec![piece], offset, out);
                }
            }
            // All or nothing (RENAME, SMOVE …): a split would change what it means, and
            // a cluster refuses it whole (CROSSSLOT). Failed, counted and named.
            Err(_) => {
                let arg = |i: usize| c.args.get(i).map_or(&b""[..], |a| &a[..]);
                let name = rsm_resp::escape_controls(arg(0));
                let key = at.first().map_or(&b""[..], |&i| arg(i));
                tracing::warn!(command = %name, key = %show_key(key), "all-or-nothing command with keys in several slots of the target cluster: not written");
                out.tally.failed_cross_slot += 1;
                out.fail(format!(
                    "{name} with keys in several slots of the target cluster cannot be written"
                ));
            }
        }
    }

    /// A keyless command, in the `KEYLESS` order. Offset 0 and never marked: no slot's
    /// marker can cover it.
    fn keyless(&self, dest: Dest, db: DbIndex, args: Vec<Bytes>, out: &mut Admitted) {
        out.reqs.push(Planned {
            dest,
            slot: KEYLESS,
            db,
            body: Body::Cmd(args),
            group: None,
            offset: 0,
            marked: false,
        });
    }

    /// A replicated command in forms this target knows (see [`downgrade`]); what that
    /// loses is counted, and a few of those writes named in the log.
    fn downgraded(&self, args: Vec<Bytes>, out: &mut Admitted) -> Vec<Vec<Bytes>> {
        if !self.lacks.anything() {
            return vec![args];
        }
        let mut lost = Losses::default();
        // Kept for the log: `for_target` takes the arguments.
        let name = args.first().cloned().unwrap_or_default();
        let key = args.get(1).cloned().unwrap_or_default();
        let cmds = downgrade::for_target(args, self.lacks, &mut lost);
        if !lost.is_empty() {
            let n = self.lossy_writes.get() + 1;
            self.lossy_writes.set(n);
            // The first few, then one in ten thousand: a source setting field TTLs at full
            // rate must not flood the log. The counters have every one.
            if n <= 3 || n.is_multiple_of(10_000) {
                tracing::warn!(command = %rsm_resp::escape_controls(&name), key = %show_key(&key), lost = %lost, writes_so_far = n, "the target cannot hold all of this write (counted in /status)");
            }
            out.tally.lost.add(&lost);
        }
        cmds
    }

    /// Stream commands for one slot, as one request: skipped when the slot's marker shows
    /// them applied, and with the marker in one transaction when one of them is not safe
    /// to apply twice.
    fn stream_write(
        &self,
        slot: usize,
        db: DbIndex,
        mut cmds: Vec<Vec<Bytes>>,
        offset: u64,
        out: &mut Admitted,
    ) {
        if cmds.is_empty() {
            // Nothing the target can hold (counted by the caller).
            return;
        }
        if cmds.len() > 1 && !self.info.transactions {
            // No MULTI here: one by one, in order, in the slot's queue.
            for c in cmds {
                self.stream_write(slot, db, vec![c], offset, out);
            }
            return;
        }
        let mut marked = false;
        // Only with exactly-once on, and only for stream writes to a slot: a snapshot
        // write (offset 0) or a keyless one has no marker.
        if let Some(p) = self
            .progress
            .as_ref()
            .filter(|_| offset > 0 && slot < KEYLESS)
        {
            // The slot's marker covers it: in the target already, and sending it again
            // would apply it twice.
            if p.has(slot, offset) {
                out.tally.already_applied += 1;
                return;
            }
            // One command not safe to apply twice marks the whole request: the marker
            // goes in the same MULTI, applied with it or not at all.
            if !cmds.iter().all(|c| idempotent(c)) {
                let value = marker_value(p.sync_id, offset);
                // It ran before and failed (EXEC does not roll back), so the marker covers
                // it although it is not in: applied again now, and its failure record
                // removed in the same transaction, so that a later resume skips it.
                if p.failed_at(slot, offset) {
                    cmds.push(vec![b("SREM"), failed_key(slot), value.clone()]);
                }
                cmds.push(vec![b("SET"), slot_marker_key(slot), value]);
                marked = true;
            }
        }
        // A lone command needs no MULTI.
        let body = match cmds.len() {
            1 => Body::Cmd(cmds.pop().unwrap_or_default()),
            _ => Body::Multi(cmds),
        };
        out.reqs.push(Planned {
            dest: Dest::Slot,
            slot,
            db,
            body,
            group: None,
            offset,
            marked,
        });
    }

    /// A source `MULTI … EXEC`: one transaction when every command stays whole, in one db
    /// and (on a cluster) in one slot; otherwise its commands one by one, in order.
    fn transaction(&self, cmds: Vec<Command>, out: &mut Admitted) {
        let n = cmds.len();
        let resolved: Vec<(Command, bool)> = cmds
            .into_iter()
            .filter_map(|c| self.resolve(c, out))
            .collect();
        let db = resolved.first().map(|(c, _)| c.db);
        let mut slot = None;
        // A single command needs no MULTI, and one with a command left out (filtered,
        // no data) is not the source's transaction any more.
        let mut whole = n > 1 && resolved.len() == n;
        for (c, cut) in &resolved {
            match &c.route {
                // Each command whole (not cut by the filter) and in the first one's db;
                // on a cluster in one slot too: a cluster refuses a transaction across
                // slots (CROSSSLOT). On one node any slots go together.
                Route::Keys { slot: Some(s), .. } if !cut && Some(c.db) == db => {
                    if self.info.cluster && slot.is_some_and(|x| x != *s) {
                        whole = false;
                    }
                    slot.get_or_insert(*s);
                }
                // Keyless, or keys in several slots: not one request.
                _ => whole = false,
            }
        }
        if let (true, Some(s), Some(db)) = (whole, slot, db.and_then(|d| self.target_db(d))) {
            // The last command's offset: one marker covers the transaction as a whole.
            let offset = resolved.last().map_or(0, |(c, _)| c.offset.0);
            let mut cmds = Vec::with_capacity(resolved.len());
            for (c, _) in resolved {
                cmds.extend(self.downgraded(c.args, out));
            }
            return self.stream_write(usize::from(s), db, cmds, offset, out);
        }
        if n > 1 {
            tracing::debug!(
                commands = n,
                "transaction spans slots or the filter: written as separate commands"
            );
        }
        // One by one, in order, each in its own slot's order: the group's atomicity is
        // given up (reference §E5), each command still written.
        for (c, _) in resolved {
            self.routed(c, out);
        }
    }
}

/// Count what a value rebuilt with commands lost, and name the key: the operator can
/// look at exactly those keys.
fn note_losses(key: &[u8], st: &ValueState, tally: &mut Tally) {
    tally.expired_fields += st.expired_fields;
    if !st.lost.is_empty() {
        tracing::warn!(key = %show_key(key), lost = %st.lost, "the target cannot hold all of this value");
        tally.lost.add(&st.lost);
    }
}

/// The RDB version of a DUMP payload's trailer.
fn trailer_of(payload: &[u8]) -> Option<u16> {
    // At least a type byte, then the 2-byte version and the 8-byte CRC.
    let at = payload.len().checked_sub(10).filter(|at| *at >= 1)?;
    let version: [u8; 2] = payload.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_le_bytes(version))
}

/// Does a payload with this trailer need a new one before the target accepts it? Older
/// versions of the same flavor load as they are (§A3); a newer or foreign one does not.
fn needs_rewrite(trailer: u16, target: RdbVersion) -> bool {
    let payload = RdbVersion::from_dump_trailer(trailer);
    match (payload, target) {
        (RdbVersion::Redis(p), RdbVersion::Redis(t)) => p > t,
        // Valkey 9 treats 12..79 as foreign even in relaxed mode.
        (RdbVersion::Redis(p), RdbVersion::Valkey(_)) => p > 11,
        (RdbVersion::Valkey(p), RdbVersion::Valkey(t)) => p > t,
        // Valkey's own numbers (80) mean nothing to Redis, whatever its version.
        (RdbVersion::Valkey(_), RdbVersion::Redis(_)) => true,
    }
}

/// A source key under the tool's own prefix: refused for good (the shard stops), counted.
/// The target's progress records live under that name, so writing it could overwrite a
/// record or forge one (a slot marker that skips commands never applied). Pre-flight
/// refuses a source that holds such keys; this catches one written during the sync.
fn reserved(key: &[u8], out: &mut Admitted) -> bool {
    if !key.starts_with(MARKER_PREFIX) {
        return false;
    }
    out.tally.failed_rejected += 1;
    out.fail(format!(
        "source key {} is under the tool's reserved prefix __rsm:, where the target keeps this sync's progress records: rename it on the source (or leave it out with --filterkey), then start again",
        show_key(key)
    ));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsm_command::entry::ReplOffset;

    fn info(cluster: bool, rdb: RdbVersion) -> TargetInfo {
        TargetInfo {
            cluster,
            version: rsm_client::ServerVersion::parse(rsm_client::Family::Redis, "7.2.4"),
            rdb_version: rdb,
            proto_max_bulk_len: 512 << 20,
            databases: if cluster { None } else { Some(16) },
            transactions: true,
        }
    }

    fn admitter(cluster: bool) -> Admitter {
        Admitter::new(
            info(cluster, RdbVersion::Redis(11)),
            KeyPrefixes::default(),
            None,
            ConflictPolicy::Fail,
        )
    }

    fn words(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    fn cmd(s: &str) -> Entry {
        Entry::Command(Command::new(0, words(s), ReplOffset(5)))
    }

    fn restore(key: &str, expire: Option<i64>) -> Entry {
        let payload = dump::build_payload(0, b"\x03abc", 11);
        Entry::Restore {
            db: 0,
            key: Bytes::from(key.to_string()),
            payload,
            expire_at_ms: expire,
            usage: KeyUsage::default(),
        }
    }

    /// Admit at time `now` (unix ms).
    fn at(a: &mut Admitter, e: Entry, now: i64, skipped: &HashSet<u64>) -> Admitted {
        let mut out = Admitted::default();
        a.admit(e, &|| now, skipped, &mut out);
        out
    }

    fn bodies(a: &Admitted) -> Vec<(usize, Vec<Bytes>)> {
        a.reqs
            .iter()
            .map(|p| match &p.body {
                Body::Cmd(c) => (p.slot, c.clone()),
                other => (p.slot, vec![Bytes::from(format!("{other:?}"))]),
            })
            .collect()
    }

    /// Every snapshot key ends counted: filtered, expired, or one RESTORE with its
    /// absolute expiry (REPLACE under `--rewrite`) in its own slot.
    #[test]
    fn snapshot_keys_filtered_expired_or_restored() {
        let mut a = Admitter::new(
            info(true, RdbVersion::Redis(11)),
            KeyPrefixes::parse("keep:").unwrap(),
            None,
            ConflictPolicy::Rewrite,
        );
        let none = HashSet::new();
        let out = at(&mut a, restore("drop:1", None), 1000, &none);
        assert!(out.reqs.is_empty());
        assert_eq!(out.tally.filtered, 1);
        // Expired a millisecond before now: not sent, counted.
        let out = at(&mut a, restore("keep:1", Some(999)), 1000, &none);
        assert!(out.reqs.is_empty());
        assert_eq!(out.tally.expired, 1);
        let out = at(&mut a, restore("keep:1", Some(5000)), 1000, &none);
        assert!(out.counts_key);
        let Body::Restore { args, .. } = &out.reqs[0].body else {
            panic!("{:?}", out.reqs)
        };
        assert_eq!(args[0], "RESTORE");
        assert_eq!(args[2], "5000");
        assert_eq!(args[4], "ABSTTL");
        assert_eq!(args[5], "REPLACE");
        assert_eq!(out.reqs[0].slot, slot_of(b"keep:1"));
    }

    /// A type the target refused once is never sent as a payload again: its values are
    /// rebuilt with commands, behind the gate that settles the conflict.
    #[test]
    fn a_payload_too_new_for_the_target_becomes_commands() {
        // A type the target refused once goes straight to commands.
        let mut a = Admitter::new(
            info(true, RdbVersion::Redis(9)),
            KeyPrefixes::default(),
            None,
            ConflictPolicy::Fail,
        );
        a.refuse_type(0);
        let out = at(&mut a, restore("k", None), 0, &HashSet::new());
        assert_eq!(out.tally.transcoded, 1);
        assert!(
            matches!(out.reqs[0].body, Body::Gate { .. }),
            "checked first under fail"
        );
        assert_eq!(bodies(&out)[1].1, words("SET k abc"));
        assert_eq!(out.group, Some(0));
    }

    /// A write for a db the target lacks fails and is counted; it never follows a
    /// refused SELECT into another db.
    #[test]
    fn db_out_of_range_fails_the_entry() {
        let mut a = admitter(true);
        let mut c = Command::new(3, words("SET k v"), ReplOffset(9));
        c.route = Route::Unclassified;
        let out = at(&mut a, Entry::Command(c), 0, &HashSet::new());
        assert!(out.reqs.is_empty());
        assert_eq!(out.tally.failed_db, 1);
        assert!(out.failure.is_some());
    }

    /// MSET's pieces per slot do what the whole did; RENAME's would not, so on a cluster
    /// it fails, counted. One node needs no split.
    #[test]
    fn commands_split_per_slot_only_when_they_mean_the_same() {
        let mut a = admitter(true);
        let none = HashSet::new();
        let out = at(&mut a, cmd("MSET a 1 b 2 {a}x 3"), 0, &none);
        assert_eq!(
            bodies(&out),
            vec![
                (slot_of(b"a"), words("MSET a 1 {a}x 3")),
                (slot_of(b"b"), words("MSET b 2"))
            ]
        );
        assert_eq!(out.offset, 5);
        let out = at(&mut a, cmd("RENAME a b"), 0, &none);
        assert!(out.reqs.is_empty());
        assert_eq!(out.tally.failed_cross_slot, 1);
        // One node: no need to split.
        let mut standalone = admitter(false);
        let out = at(&mut standalone, cmd("RENAME a b"), 0, &none);
        assert_eq!(bodies(&out), vec![(slot_of(b"a"), words("RENAME a b"))]);
    }

    /// Keyless writes go to every master, non-data commands nowhere (and uncounted), and
    /// a route replay found is trusted as it is.
    #[test]
    fn keyless_commands_and_a_route_found_by_replay() {
        let mut a = admitter(true);
        let none = HashSet::new();
        let out = at(&mut a, cmd("FLUSHALL"), 0, &none);
        assert_eq!(out.reqs[0].dest, Dest::Masters);
        let out = at(&mut a, cmd("PING"), 0, &none);
        assert!(out.reqs.is_empty() && out.tally == Tally::default());
        // Routed by XGROUP's key, not its subcommand.
        let out = at(&mut a, cmd("XGROUP CREATE s g $"), 0, &none);
        assert_eq!(out.reqs[0].slot, slot_of(b"s"));
        // A route given by replay is used as it is.
        let mut c = Command::new(0, words("SET k v"), ReplOffset(1));
        c.route = Route::Keys {
            at: vec![1],
            slot: Some(42),
        };
        let out = at(&mut a, Entry::Command(c), 0, &none);
        assert_eq!(out.reqs[0].slot, 42);
    }

    /// A source transaction stays one MULTI where the target can run it as one: one slot
    /// of a cluster, or any slots of one node.
    #[test]
    fn transactions_stay_whole_in_one_slot() {
        let mut a = admitter(true);
        let none = HashSet::new();
        let tx = |cmds: &[&str]| {
            Entry::Transaction(
                cmds.iter()
                    .map(|c| Command::new(0, words(c), ReplOffset(7)))
                    .collect(),
            )
        };
        let out = at(&mut a, tx(&["INCR {u}a", "RPUSH {u}b x"]), 0, &none);
        assert_eq!(out.reqs.len(), 1);
        assert_eq!(
            out.reqs[0].body,
            Body::Multi(vec![words("INCR {u}a"), words("RPUSH {u}b x")])
        );
        let out = at(&mut a, tx(&["INCR a", "INCR b"]), 0, &none);
        assert_eq!(out.reqs.len(), 2, "two slots of a cluster: one by one");
        let mut standalone = admitter(false);
        let out = at(&mut standalone, tx(&["INCR a", "INCR b"]), 0, &none);
        assert_eq!(out.reqs.len(), 1, "one node: still one transaction");
    }

    /// A big key: the gate first, chunks as commands (dropped once the key is known
    /// kept), the expiry and the key's count at its end.
    #[test]
    fn big_keys_gate_chunks_and_expiry() {
        let mut a = admitter(true);
        let none = HashSet::new();
        let start = Entry::BigKeyStart {
            db: 0,
            key: Bytes::from_static(b"big"),
            rdb_type: 2,
            expire_at_ms: Some(9_000),
        };
        let out = at(&mut a, start, 0, &none);
        assert!(matches!(out.reqs[0].body, Body::Gate { .. }));
        let chunk = Entry::BigKeyChunk(Elements::SetMembers(vec![Bytes::from_static(b"m")]));
        let out = at(&mut a, chunk.clone(), 0, &none);
        assert_eq!(bodies(&out)[0].1, words("SADD big m"));
        let skipped: HashSet<u64> = [0].into();
        assert!(
            at(&mut a, chunk, 0, &skipped).reqs.is_empty(),
            "the key exists: skipped"
        );
        let out = at(&mut a, Entry::BigKeyEnd, 0, &none);
        assert!(out.counts_key);
        assert_eq!(bodies(&out)[0].1, words("PEXPIREAT big 9000"));
    }

    /// The marker skips what it covers, travels with what is not safe to apply twice,
    /// stays off what is, and a write that failed under it is applied again.
    #[test]
    fn exactly_once_marks_what_is_unsafe_and_skips_what_is_in() {
        let mut a = admitter(true);
        let none = HashSet::new();
        let s = slot_of(b"{u}a");
        a.set_progress(Some(Progress {
            sync_id: 9,
            applied: [(s, 100)].into(),
            failed: [(s, [90].into())].into(),
        }));
        let cmd_at = |cmd: &str, offset: u64| {
            Entry::Command(Command::new(0, words(cmd), ReplOffset(offset)))
        };
        // Covered by the slot's marker: not sent again.
        let out = at(&mut a, cmd_at("INCR {u}a", 100), 0, &none);
        assert!(out.reqs.is_empty());
        assert_eq!(out.tally.already_applied, 1);
        // Past it: with the marker, in one transaction.
        let out = at(&mut a, cmd_at("INCR {u}a", 120), 0, &none);
        let marker = vec![b("SET"), slot_marker_key(s), marker_value(9, 120)];
        assert_eq!(
            out.reqs[0].body,
            Body::Multi(vec![words("INCR {u}a"), marker])
        );
        assert!(out.reqs[0].marked);
        // Safe to apply twice: alone.
        let out = at(&mut a, cmd_at("SET {u}a 1", 130), 0, &none);
        assert_eq!(out.reqs[0].body, Body::Cmd(words("SET {u}a 1")));
        assert!(!out.reqs[0].marked);
        // Ran but failed the first time: applied again, and its failure record removed.
        let out = at(&mut a, cmd_at("RPUSH {u}a x", 90), 0, &none);
        let Body::Multi(cmds) = &out.reqs[0].body else {
            panic!("{:?}", out.reqs)
        };
        assert_eq!(cmds[1], vec![b("SREM"), failed_key(s), marker_value(9, 90)]);
    }

    /// Older trailers load as they are (no rewrite, no recomputed CRC); newer or foreign
    /// ones get the target's, Redis 12 included on Valkey, which treats it as foreign.
    #[test]
    fn rewrite_rules() {
        assert!(!needs_rewrite(9, RdbVersion::Redis(12)));
        assert!(needs_rewrite(12, RdbVersion::Redis(9)));
        assert!(needs_rewrite(12, RdbVersion::Valkey(80)));
        assert!(!needs_rewrite(11, RdbVersion::Valkey(80)));
        assert!(needs_rewrite(80, RdbVersion::Redis(12)));
        assert!(!needs_rewrite(80, RdbVersion::Valkey(80)));
    }
}
