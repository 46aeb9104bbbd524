//! The sync marker: a key in the target that says "this sync began copying these source
//! slots into a target that held no keys in them".
//!
//! Where it sits: checked by the shard loop before the first write of every full sync.
//! Why it exists: a full sync that is interrupted (a kill, a lost backlog) and started again
//! meets the keys it wrote itself. Without a record, they look like the operator's data and
//! the conflict policy stops the shard; with `--rewrite` they are replaced, but keys deleted
//! on the source in between stay behind. With the marker the restarted copy knows those keys
//! are its own: it removes every key of its slots first, then loads the new snapshot, so the
//! target ends up exactly as the source. A target that held keys in those slots before the
//! first copy is recorded as such, and the conflict policy applies as always.
//!
//! Keys under [`MARKER_PREFIX`] belong to the tool: they are never counted as the target's
//! data, never removed here, and `verify` ignores them.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use rsm_client::{ConnectOptions, Connection, Endpoint};
use rsm_cluster::SlotRange;
use rsm_resp::Frame;
use serde::{Deserialize, Serialize};

use super::progress::{failed_key, parse_marker, slot_marker_key, Progress};
use super::target::read_slot_map;
use super::{show_key, WriteError};

/// Every key the tool itself writes into the target starts with this.
pub const MARKER_PREFIX: &[u8] = b"__rsm:";

/// Keys asked for or removed per round trip: replies and memory stay bounded whatever a
/// slot holds, and a slot of a few thousand keys still takes only a few round trips.
const BATCH: usize = 1000;

/// What the target held in the shard's slots when this full sync began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStart {
    /// No keys: the marker is written now; everything in these slots is this sync's.
    Fresh,
    /// An earlier copy of this sync into an empty target was interrupted: its keys
    /// (`removed` of them) were removed, so the new snapshot starts from empty slots.
    Restarted { removed: u64 },
    /// The target held keys in these slots before this sync first began: they are the
    /// operator's, and the conflict policy decides.
    Occupied,
    /// The source's shards changed since this sync began: these slots were copied by
    /// other shards of this sync (each into empty slots), whose keys (`removed` of them)
    /// were removed to copy the slots again from the node serving them now.
    Reshaped { removed: u64 },
}

/// The shard's record in the target: where its copy began and, once the snapshot is in,
/// the *floor*: the source offset up to which every command is known applied on every
/// target node. A restart resumes from the floor; the slot markers (see
/// [`super::progress`]) say per slot what lies beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The source slots this marker is about (`0-5460`).
    pub slots: String,
    /// The source node the copy first came from (informational: the shard is known by
    /// its slots, since its source node may change with a failover).
    pub source: String,
    /// Did the target hold no keys in these slots when the first copy began?
    pub empty_at_start: bool,
    /// Unix milliseconds of the first copy's start.
    pub started_ms: u64,
    /// This full sync's id (hex), in every slot marker it writes. Absent in markers
    /// written before exactly-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id: Option<String>,
    /// The source replication id the floor belongs to: an offset means nothing in
    /// another replication history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replid: Option<String>,
    /// The floor (see above): acknowledged by every target node and, where a master has
    /// replicas, held by one (see [`super::durable`]) before it is saved. Absent until
    /// the snapshot is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u64>,
}

impl Marker {
    /// The sync id as a number; `None` for a marker written before exactly-once.
    pub fn sync_id(&self) -> Option<u64> {
        u64::from_str_radix(self.sync_id.as_deref()?, 16).ok()
    }

    /// The replication point to continue from, when the snapshot of this sync is in. All
    /// three or nothing: without the sync id the slot markers beyond the floor could not
    /// be told from an earlier copy's, and without the replid the floor means nothing.
    pub fn resume_point(&self) -> Option<(String, u64, u64)> {
        Some((self.replid.clone()?, self.floor?, self.sync_id()?))
    }
}

/// A new id for a full sync: time and process mixed, so two runs never share one. The
/// hasher's own keys are random and differ per instance, so two ids made by one process
/// in one millisecond differ too.
fn new_sync_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(rsm_counters::now_ms());
    h.write_u32(std::process::id());
    h.finish()
}

/// Where a shard's copy goes: what [`begin_copy`] needs to know.
#[derive(Debug, Clone)]
pub struct CopyScope<'a> {
    /// The node named for the target (any node of it, for a cluster).
    pub target: &'a Endpoint,
    pub connect: &'a ConnectOptions,
    /// A cluster is read and cleared on the master of each slot, slot by slot; a
    /// standalone target with SCAN. Both db by db.
    pub cluster: bool,
    /// The source shard's slots (all of them for a standalone source).
    pub slots: &'a [SlotRange],
    /// `--targetdb`: only this db is looked at and cleared; otherwise every db that holds
    /// keys (on a cluster, db 0 unless `cluster-databases` gives it more).
    pub target_db: Option<u32>,
    /// The source node, recorded in a new marker (see [`Marker::source`]).
    pub source: &'a str,
}

impl CopyScope<'_> {
    /// The db the tool's own keys go to: see [`home_db`].
    fn home_db(&self) -> u32 {
        home_db(self.cluster, self.target_db)
    }
}

/// The db of the target that holds the tool's own keys (see [`TargetDb::home`]).
pub fn home_db(cluster: bool, target_db: Option<u32>) -> u32 {
    rsm_command::TargetDb::new(target_db).home(cluster)
}

/// The marker's key for a shard: the hash tag keeps it in one slot of the target. Named
/// by the shard's slots, not its source node: a restart finds it whichever source node
/// now serves those slots.
pub fn marker_key(slots: &[SlotRange]) -> String {
    format!("__rsm:sync:{{{}}}", rsm_cluster::display_ranges(slots))
}

/// Read or create the shard's marker and, for a restarted copy, empty its slots.
/// Call before the snapshot's first write. The marker returned carries a new sync id and
/// no floor: until the snapshot is in, nothing can be resumed.
pub async fn begin_copy(scope: &CopyScope<'_>) -> Result<(CopyStart, Marker), WriteError> {
    let mut target = TargetKeys::connect(scope).await?;
    let key = marker_key(scope.slots);
    let (start, mut marker) = match target.get_marker(&key).await? {
        // The first copy found keys there: they may be the operator's, so nothing is
        // removed, and the conflict policy decides now as it did then.
        Some(marker) if !marker.empty_at_start => (CopyStart::Occupied, marker),
        // An earlier copy into empty slots: every key there is this sync's. Removed, so
        // that keys deleted on the source since do not stay behind.
        Some(marker) => {
            let removed = target.remove_shard_keys(scope.slots).await?;
            (CopyStart::Restarted { removed }, marker)
        }
        // No marker for this slot set, but the slots are covered by records of this
        // sync's earlier shards, each of which began on empty slots: the source's shards
        // changed (a reshard, a shard added or removed) since those copies began, and
        // every key in these slots is this sync's own. Removed and copied again, as on a
        // restart, from the node that serves them now.
        None if target.own_markers_cover(scope.slots).await? => {
            let removed = target.remove_shard_keys(scope.slots).await?;
            let marker = Marker {
                slots: rsm_cluster::display_ranges(scope.slots),
                source: scope.source.to_string(),
                empty_at_start: true,
                started_ms: rsm_counters::now_ms(),
                sync_id: None,
                replid: None,
                floor: None,
            };
            (CopyStart::Reshaped { removed }, marker)
        }
        // No marker: the first copy. What the slots hold now decides, for good: the
        // marker keeps the answer for every later restart.
        None => {
            let empty = !target.holds_shard_keys(scope.slots).await?;
            let marker = Marker {
                slots: rsm_cluster::display_ranges(scope.slots),
                source: scope.source.to_string(),
                empty_at_start: empty,
                started_ms: rsm_counters::now_ms(),
                sync_id: None,
                replid: None,
                floor: None,
            };
            let start = if empty {
                CopyStart::Fresh
            } else {
                CopyStart::Occupied
            };
            (start, marker)
        }
    };
    // A new id for every full sync: slot markers of an earlier copy skip nothing of this
    // one. No floor until this snapshot is in: a restart before then copies again rather
    // than resuming over a snapshot that is only partly there.
    marker.sync_id = Some(format!("{:016x}", new_sync_id()));
    marker.replid = None;
    marker.floor = None;
    // Written before the snapshot's first key: a kill after any key is written finds
    // the marker, and knows the keys in these slots as its own.
    target.set_marker(&key, &marker).await?;
    Ok((start, marker))
}

/// A shard retired because the source's shards changed: its record keeps saying that its
/// slots began empty (so a later copy of them knows the keys as this sync's own), but no
/// longer where to resume. Other shards write those slots from now on; a later shard
/// with the same slot set (the slots moved back) resuming from this floor would apply
/// again what they wrote. Call once the shard has stopped, before anything else writes
/// its slots.
pub async fn retire_record(scope: &CopyScope<'_>) -> Result<(), WriteError> {
    let mut target = TargetKeys::connect(scope).await?;
    let key = marker_key(scope.slots);
    if let Some(mut marker) = target.get_marker(&key).await? {
        marker.floor = None;
        marker.replid = None;
        target.set_marker(&key, &marker).await?;
    }
    Ok(())
}

/// What the target holds of this shard's sync: its marker and, when the marker has a
/// floor, the slot markers of the shard's slots. `None`: nothing to resume (a fresh,
/// flushed or different target, or a copy whose snapshot never completed).
pub async fn read_progress(
    scope: &CopyScope<'_>,
) -> Result<Option<(Marker, Progress)>, WriteError> {
    let mut target = TargetKeys::connect(scope).await?;
    let Some(marker) = target.get_marker(&marker_key(scope.slots)).await? else {
        return Ok(None);
    };
    // No floor: the snapshot never completed, and a full sync it is.
    let Some((_, _, sync_id)) = marker.resume_point() else {
        return Ok(None);
    };
    let (applied, failed) = target.slot_marks(scope.slots, sync_id).await?;
    Ok(Some((
        marker,
        Progress {
            sync_id,
            applied,
            failed,
        },
    )))
}

/// Keeps the shard's marker up to date (its floor, every second or so) over one
/// connection, found again when the marker's slot moves or the node fails.
pub struct MarkerKeeper {
    /// Where to start looking for the marker's node, each time the connection is lost.
    target: Endpoint,
    connect: ConnectOptions,
    cluster: bool,
    /// See [`home_db`].
    db: u32,
    key: String,
    /// To the node that owns the marker's slot; dropped on any failure, so that the next
    /// save finds that node again (the slot may have moved, the node failed over).
    conn: Option<Connection>,
}

impl MarkerKeeper {
    /// Nothing is dialled yet: the first save finds the marker's node.
    pub fn new(scope: &CopyScope<'_>) -> MarkerKeeper {
        MarkerKeeper {
            target: scope.target.clone(),
            connect: scope.connect.clone(),
            cluster: scope.cluster,
            db: scope.home_db(),
            key: marker_key(scope.slots),
            conn: None,
        }
    }

    /// Write the whole marker in one SET: its floor never lands apart from the replid and
    /// sync id it belongs to. A failure only delays the floor; the caller tries again.
    pub async fn save(&mut self, marker: &Marker) -> Result<(), WriteError> {
        let value = serde_json::to_vec(marker).map_err(|e| WriteError::Topology(e.to_string()))?;
        let r = self.try_save(&value).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_save(&mut self, value: &[u8]) -> Result<(), WriteError> {
        if self.conn.is_none() {
            let mut seed = super::target::connect_target(&self.target, &self.connect).await?;
            if self.cluster {
                // The owner of the marker's slot: anywhere else the SET meets MOVED.
                let asked = seed.endpoint().clone();
                let map = read_slot_map(&mut seed, &asked).await?;
                let owner = map.owner_for_key(self.key.as_bytes());
                if let Some(ep) = owner.filter(|ep| **ep != asked) {
                    seed = Connection::connect(ep, &self.connect).await?;
                }
            } else if self.db != 0 {
                // The tool's db, where `begin_copy` wrote the marker.
                seed.request_ok(&["SELECT", &self.db.to_string()]).await?;
            }
            self.conn = Some(seed);
        }
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        c.request_ok(&[b"SET".as_slice(), self.key.as_bytes(), value])
            .await?;
        Ok(())
    }
}

/// Per slot, the offset of its marker and the offsets in its failed set.
type Marks = (HashMap<usize, u64>, HashMap<usize, HashSet<u64>>);

/// GET the slot markers of `slots` over `c`, and SMEMBERS their failed sets, pipelined;
/// keep the highest offset per slot.
async fn read_marks(
    c: &mut Connection,
    slots: &[u16],
    sync_id: u64,
    out: &mut Marks,
) -> Result<(), WriteError> {
    // A value of another sync id belongs to an earlier copy: no word on this one.
    let ours = |v: &Bytes| {
        parse_marker(v)
            .filter(|(id, _)| *id == sync_id)
            .map(|(_, o)| o)
    };
    // Two commands a slot: a batch's worth of replies per round trip.
    for chunk in slots.chunks(BATCH / 2) {
        for &s in chunk {
            c.send(&[b"GET".as_slice(), &slot_marker_key(usize::from(s))]);
            c.send(&[b"SMEMBERS".as_slice(), &failed_key(usize::from(s))]);
        }
        c.flush().await?;
        for &s in chunk {
            let (mark, failed) = (c.read_frame().await?, c.read_frame().await?);
            // An unreadable marker stops the resume: taking it for none would apply
            // again what the slot already has.
            if let Some(e) = mark.as_error().or_else(|| failed.as_error()) {
                return Err(WriteError::Topology(format!(
                    "target refused to read slot {s}'s marker: {}",
                    rsm_resp::escape_controls(e)
                )));
            }
            let slot = usize::from(s);
            if let Some(offset) = mark.as_bytes().and_then(ours) {
                let e = out.0.entry(slot).or_insert(0);
                *e = (*e).max(offset);
            }
            let failed: HashSet<u64> = bulk_list(&failed).iter().filter_map(ours).collect();
            if !failed.is_empty() {
                out.1.entry(slot).or_default().extend(failed);
            }
        }
    }
    Ok(())
}

/// A key this module never counts, lists or removes as the target's data.
fn is_marker(key: &[u8]) -> bool {
    is_tool_key(key)
}

/// Is `key` one the tool writes, by its exact shape? Pre-flight refuses a source with keys
/// under [`MARKER_PREFIX`], but the target may hold such keys of its own, which are the
/// operator's: `cleanup` removes, and `verify` and the copy's "are these slots empty?"
/// pass over, only keys of these forms:
/// - `__rsm:sync:{<slot ranges>}` (a shard's sync marker, [`marker_key`]);
/// - `__rsm:at:{T}`, `__rsm:failed:{T}`, `__rsm:durable:{T}` where `T` is the very tag
///   the tool picks for the key's slot (slot markers, failed sets, durability checks);
/// - `__rsm:probe:<n>` (the writer's scratch key, removed at once).
pub fn is_tool_key(key: &[u8]) -> bool {
    let Some(rest) = key.strip_prefix(MARKER_PREFIX) else {
        return false;
    };
    // The tag of `__rsm:<name>{<tag>}`, which must close the key.
    let tagged = |name: &[u8]| -> Option<&[u8]> {
        rest.strip_prefix(name)?
            .strip_prefix(b"{")?
            .strip_suffix(b"}")
    };
    if let Some(ranges) = tagged(b"sync:") {
        // `display_ranges`: "0-5460", or "0-5460, 6000-6001" for a shard of several.
        return !ranges.is_empty()
            && ranges
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b',' | b' '));
    }
    // The probe key: a number, no tag (see `target::probe_key`).
    if let Some(n) = rest.strip_prefix(b"probe:") {
        return !n.is_empty() && n.iter().all(u8::is_ascii_digit);
    }
    // A user's `__rsm:at:{x}` is not the tool's unless `x` is exactly the tag the tool
    // picks for the slot that `x` puts the key in.
    [&b"at:"[..], b"failed:", b"durable:"]
        .into_iter()
        .filter_map(tagged)
        .any(|tag| {
            let slot = rsm_cluster::key_slot(key).index();
            super::progress::slot_tag(slot).as_bytes() == tag
        })
}

/// Does `key` hash to one of `slots`? Its hash tag decides, as on the server.
fn in_slots(slots: &[SlotRange], key: &[u8]) -> bool {
    let s = rsm_cluster::key_slot(key).get();
    slots
        .iter()
        .any(|r| (r.start().get()..=r.end().get()).contains(&s))
}

/// Connections to the target's masters, with the slot map of a cluster target. Lives for
/// one operation (a copy's start, a resume, a flush), so its slot map is fresh each time.
///
/// Every look and removal goes db by db: a db is state of a connection, and
/// `CLUSTER COUNTKEYSINSLOT`/`GETKEYSINSLOT` answer for the selected db only, so on a
/// cluster with `cluster-databases` a look at db 0 alone would call slots empty that
/// hold keys in db 5.
struct TargetKeys<'a> {
    scope: &'a CopyScope<'a>,
    /// A cluster's masters; for a standalone target, the master reached.
    masters: Vec<Endpoint>,
    /// `owner[slot]` as an index into `masters` (one entry for a standalone target).
    owner: Vec<Option<usize>>,
    /// By index into `masters`, each opened on first use (most operations touch only the
    /// masters that own the shard's slots), with the db it has selected.
    conns: BTreeMap<usize, (Connection, u32)>,
}

impl<'a> TargetKeys<'a> {
    async fn connect(scope: &'a CopyScope<'a>) -> Result<TargetKeys<'a>, WriteError> {
        let mut seed = super::target::connect_target(scope.target, scope.connect).await?;
        let asked = seed.endpoint().clone();
        let (masters, owner) = if scope.cluster {
            let map = read_slot_map(&mut seed, &asked).await?;
            (map.owners().to_vec(), map.slot_owners().collect())
        } else {
            // The master reached, which after a failover is not the node named.
            (vec![asked], Vec::new())
        };
        // A standalone target's seed is its master (see `connect_target`): kept, in the
        // db 0 a new connection starts in. A cluster's may be any node: masters are
        // dialled as needed.
        let mut conns = BTreeMap::new();
        if !scope.cluster {
            conns.insert(0, (seed, 0));
        }
        Ok(TargetKeys {
            scope,
            masters,
            owner,
            conns,
        })
    }

    /// The master that owns `slot`. An unowned slot stops the operation: its keys could
    /// be neither counted nor removed, and a guess would be wrong either way.
    fn node_of_slot(&self, slot: u16) -> Result<usize, WriteError> {
        if !self.scope.cluster {
            return Ok(0);
        }
        self.owner
            .get(usize::from(slot))
            .copied()
            .flatten()
            .ok_or_else(|| {
                WriteError::Topology(format!(
                    "slot {slot} has no owner in the target cluster; assign every slot first"
                ))
            })
    }

    /// The slots of `slots` grouped by the master that owns them (all on master 0 for a
    /// standalone target).
    fn slots_by_node(&self, slots: &[SlotRange]) -> Result<BTreeMap<usize, Vec<u16>>, WriteError> {
        let mut by_node: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        for r in slots {
            for s in r.start().get()..=r.end().get() {
                by_node.entry(self.node_of_slot(s)?).or_default().push(s);
            }
        }
        Ok(by_node)
    }

    /// The connection to master `node` with `db` selected, opened on first use. Its db is
    /// remembered, so `SELECT` goes out only on a change, and never on a cluster of db 0
    /// only (which is never asked for another).
    async fn conn_in(&mut self, node: usize, db: u32) -> Result<&mut Connection, WriteError> {
        if !self.conns.contains_key(&node) {
            let ep = self
                .masters
                .get(node)
                .ok_or_else(|| WriteError::Topology(format!("no target master {node}")))?;
            let c = Connection::connect(ep, self.scope.connect).await?;
            self.conns.insert(node, (c, 0));
        }
        let (c, selected) = self
            .conns
            .get_mut(&node)
            .ok_or_else(|| WriteError::Topology(format!("no target master {node}")))?;
        if *selected != db {
            c.request_ok(&["SELECT", &db.to_string()]).await?;
            *selected = db;
        }
        Ok(c)
    }

    /// The shard's marker, from the tool's db on the master that owns its slot. One that
    /// cannot be read stops the shard rather than be taken for none, which would misjudge
    /// whose keys the slots hold.
    async fn get_marker(&mut self, key: &str) -> Result<Option<Marker>, WriteError> {
        let node = self.node_of_slot(rsm_cluster::key_slot(key.as_bytes()).get())?;
        let c = self.conn_in(node, self.scope.home_db()).await?;
        let reply = c.request_ok(&["GET", key]).await?;
        let Some(bytes) = reply.as_bytes() else {
            return Ok(None);
        };
        serde_json::from_slice(bytes).map(Some).map_err(|e| {
            WriteError::Topology(format!(
                "the target's sync marker {key} is unreadable ({e}); delete it to start this shard's copy afresh"
            ))
        })
    }

    /// Write the shard's marker where [`TargetKeys::get_marker`] reads it.
    async fn set_marker(&mut self, key: &str, marker: &Marker) -> Result<(), WriteError> {
        let node = self.node_of_slot(rsm_cluster::key_slot(key.as_bytes()).get())?;
        let c = self.conn_in(node, self.scope.home_db()).await?;
        let value = serde_json::to_vec(marker).map_err(|e| WriteError::Topology(e.to_string()))?;
        c.request_ok(&[b"SET".as_slice(), key.as_bytes(), &value])
            .await?;
        Ok(())
    }

    /// The dbs of master `node` this shard writes into: the `--targetdb` one, else every
    /// db its `INFO keyspace` lists (only those holding keys: an empty db needs neither a
    /// look nor a removal). On a cluster that is db 0 unless `cluster-databases` gives it
    /// more, and each master lists its own.
    async fn dbs_of(&mut self, node: usize) -> Result<Vec<u32>, WriteError> {
        if let Some(db) = self.scope.target_db {
            return Ok(vec![db]);
        }
        // INFO answers the same in any db.
        let info = self.conn_in(node, 0).await?.info("keyspace").await?;
        Ok(rsm_client::keyspace(&info)
            .into_iter()
            .map(|(db, _)| db)
            .collect())
    }

    /// Is every one of these slots named by a shard record (of any slot set) that began
    /// on empty slots? The records are few (one per shard a run ever planned), each in
    /// the slot of its hash tag: found with one SCAN per target master.
    async fn own_markers_cover(&mut self, slots: &[SlotRange]) -> Result<bool, WriteError> {
        let mut covered = vec![false; usize::from(rsm_cluster::SLOT_COUNT)];
        let nodes: Vec<usize> = if self.scope.cluster {
            (0..self.masters.len()).collect()
        } else {
            vec![0]
        };
        let home = self.scope.home_db();
        for node in nodes {
            let c = self.conn_in(node, home).await?;
            let mut cursor = Bytes::from_static(b"0");
            let mut keys = Vec::new();
            loop {
                let page = c.scan(&cursor, Some(b"__rsm:sync:*"), BATCH).await?;
                keys.extend(page.keys);
                match page.next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
            for key in keys {
                let reply = c.request_ok(&[b"GET".as_slice(), &key]).await?;
                let Some(m) = reply
                    .as_bytes()
                    .and_then(|b| serde_json::from_slice::<Marker>(b).ok())
                else {
                    continue;
                };
                if !m.empty_at_start {
                    continue;
                }
                for r in parse_ranges(&m.slots) {
                    for slot in r.start().index()..=r.end().index() {
                        if let Some(c) = covered.get_mut(slot) {
                            *c = true;
                        }
                    }
                }
            }
        }
        Ok(slots.iter().all(|r| {
            (r.start().index()..=r.end().index()).all(|s| covered.get(s).copied().unwrap_or(false))
        }))
    }

    /// Does the target hold any key (other than the tool's own) in these slots?
    async fn holds_shard_keys(&mut self, slots: &[SlotRange]) -> Result<bool, WriteError> {
        if self.scope.cluster {
            for (db, slot, n) in self.slot_counts(slots).await? {
                // A slot holds a handful of the tool's own keys at most: more than a batch
                // cannot all be those. Fewer are listed whole and looked at.
                if n > BATCH as i64 {
                    return Ok(true);
                }
                let keys = self.keys_in_slot(db, slot).await?;
                if keys.iter().any(|k| !is_marker(k)) {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        for db in self.dbs_of(0).await? {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = self.scan_step(db, &cursor, slots).await?;
                // One key of the shard's is enough to know.
                if !keys.is_empty() {
                    return Ok(true);
                }
                match next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
        }
        Ok(false)
    }

    /// Remove every key (other than the tool's own) in these slots; returns how many.
    async fn remove_shard_keys(&mut self, slots: &[SlotRange]) -> Result<u64, WriteError> {
        let mut removed = 0u64;
        if self.scope.cluster {
            for (db, slot, _) in self.slot_counts(slots).await? {
                // List and remove until the slot lists none but the tool's own keys: each
                // UNLINK takes its keys out of the next listing, so the loop ends.
                loop {
                    let keys: Vec<Bytes> = self
                        .keys_in_slot(db, slot)
                        .await?
                        .into_iter()
                        .filter(|k| !is_marker(k))
                        .collect();
                    if keys.is_empty() {
                        break;
                    }
                    let node = self.node_of_slot(slot)?;
                    removed += unlink(self.conn_in(node, db).await?, &keys).await?;
                }
            }
            return Ok(removed);
        }
        // Removing keys during a SCAN is allowed: every key present throughout is still
        // returned, and one batch at a time keeps memory bounded.
        for db in self.dbs_of(0).await? {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = self.scan_step(db, &cursor, slots).await?;
                if !keys.is_empty() {
                    removed += unlink(self.conn_in(0, db).await?, &keys).await?;
                }
                match next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
        }
        Ok(removed)
    }

    /// The offsets of this sync's slot markers in `slots`: the highest of every db written
    /// to, since a marker goes in the db of its command (on a cluster with
    /// `cluster-databases` as on a standalone target).
    async fn slot_marks(
        &mut self,
        slots: &[SlotRange],
        sync_id: u64,
    ) -> Result<(HashMap<usize, u64>, HashMap<usize, HashSet<u64>>), WriteError> {
        // Grouped by master and pipelined: read one by one, a shard of 5461 slots would
        // take 10922 round trips before the first write.
        let mut out = (HashMap::new(), HashMap::new());
        for (node, list) in self.slots_by_node(slots)? {
            for db in self.dbs_of(node).await? {
                let c = self.conn_in(node, db).await?;
                read_marks(c, &list, sync_id, &mut out).await?;
            }
        }
        Ok(out)
    }

    /// `(db, slot, keys)` for each slot of `slots` that holds keys in a db, from
    /// `CLUSTER COUNTKEYSINSLOT` pipelined per master and db. Counted first since most
    /// slots of a fresh target are empty, and a count costs less than a listing.
    async fn slot_counts(
        &mut self,
        slots: &[SlotRange],
    ) -> Result<Vec<(u32, u16, i64)>, WriteError> {
        let mut out = Vec::new();
        for (node, list) in self.slots_by_node(slots)? {
            for db in self.dbs_of(node).await? {
                let c = self.conn_in(node, db).await?;
                for chunk in list.chunks(BATCH) {
                    for s in chunk {
                        c.send(&["CLUSTER", "COUNTKEYSINSLOT", &s.to_string()]);
                    }
                    c.flush().await?;
                    for s in chunk {
                        let f = c.read_frame().await?;
                        if let Some(e) = f.as_error() {
                            return Err(WriteError::Topology(format!(
                                "target refused CLUSTER COUNTKEYSINSLOT {s} in db {db}: {}",
                                rsm_resp::escape_controls(e)
                            )));
                        }
                        let n = f.as_int().unwrap_or(0);
                        if n > 0 {
                            out.push((db, *s, n));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Up to a batch of the keys in `slot` in `db`, from its master (the only node that
    /// lists them).
    async fn keys_in_slot(&mut self, db: u32, slot: u16) -> Result<Vec<Bytes>, WriteError> {
        let node = self.node_of_slot(slot)?;
        let c = self.conn_in(node, db).await?;
        let reply = c
            .request_ok(&[
                "CLUSTER",
                "GETKEYSINSLOT",
                &slot.to_string(),
                &BATCH.to_string(),
            ])
            .await?;
        Ok(bulk_list(&reply))
    }

    /// One `SCAN` step in `db` of a standalone target: the next cursor (`None` at the end)
    /// and the keys of `slots` that are not the tool's own.
    async fn scan_step(
        &mut self,
        db: u32,
        cursor: &Bytes,
        slots: &[SlotRange],
    ) -> Result<(Option<Bytes>, Vec<Bytes>), WriteError> {
        // A shard of every slot (a standalone source): no key needs hashing.
        let all = slots.iter().map(SlotRange::len).sum::<usize>() == 16384;
        let c = self.conn_in(0, db).await?;
        let page = c.scan(cursor, None, BATCH).await?;
        let keys = page
            .keys
            .into_iter()
            .filter(|k| !is_marker(k) && (all || in_slots(slots, k)))
            .collect();
        Ok((page.next, keys))
    }

    /// The dbs of master `node` a source flush empties: under `--targetdb` the one every
    /// source db went into; else `FLUSHDB n` is db n (when it holds keys at all: a db the
    /// target lacks holds none, and was never written to) and `FLUSHALL` every db that
    /// holds keys.
    async fn flush_dbs(&mut self, node: usize, which: FlushScope) -> Result<Vec<u32>, WriteError> {
        let dbs = self.dbs_of(node).await?;
        Ok(match (which, self.scope.target_db) {
            (FlushScope::Db(db), None) => dbs.into_iter().filter(|d| *d == db).collect(),
            _ => dbs,
        })
    }
}

/// Slot ranges as a record names them (`0-99, 200, 300-301`, what
/// [`rsm_cluster::display_ranges`] writes); a part that does not parse names no slot.
fn parse_ranges(text: &str) -> Vec<SlotRange> {
    let slot = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .and_then(rsm_cluster::Slot::new)
    };
    text.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => SlotRange::new(slot(a)?, slot(b)?),
            None => slot(part).map(SlotRange::single),
        })
        .collect()
}

/// Which dbs a source flush empties in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// `FLUSHALL`: every db the shard writes into.
    All,
    /// `FLUSHDB` in this source db.
    Db(u32),
}

/// A source shard's `FLUSHALL`/`FLUSHDB`, as it applies to the target: remove exactly what
/// this shard owns there (the keys of its slots, in the db the command maps to, and under
/// `--filterkey` only keys the filter keeps), never the tool's own keys, never another
/// shard's slots. Returns how many keys it removed. Safe to run twice: the second run
/// finds nothing of what the first removed.
///
/// Why not send the flush on: a `FLUSHALL` sent to every target master erases the other
/// shards' newer writes (their streams run independently of this one), keys the filter
/// never synced, the target's other data and the tool's progress records.
pub async fn flush_shard_keys(
    scope: &CopyScope<'_>,
    which: FlushScope,
    filter: &rsm_command::filter::KeyPrefixes,
) -> Result<u64, WriteError> {
    let mut target = TargetKeys::connect(scope).await?;
    // Each master that owns a slot of the shard (the one node of a standalone target) is
    // scanned once per db, keeping only the shard's keys: a SCAN per master, not a
    // listing per slot, covers all the master's slots of the shard in one pass and takes
    // the filter's MATCH.
    let nodes: Vec<usize> = target.slots_by_node(scope.slots)?.into_keys().collect();
    let mut removed = 0;
    for node in nodes {
        for db in target.flush_dbs(node, which).await? {
            let c = target.conn_in(node, db).await?;
            removed += remove_scanned(c, scope.slots, filter).await?;
        }
    }
    Ok(removed)
}

/// `SCAN` the connection's current db (with `MATCH` per prefix under a filter) and unlink
/// the keys that lie in `slots` and are not the tool's own.
async fn remove_scanned(
    c: &mut Connection,
    slots: &[SlotRange],
    filter: &rsm_command::filter::KeyPrefixes,
) -> Result<u64, WriteError> {
    let all =
        slots.iter().map(SlotRange::len).sum::<usize>() == usize::from(rsm_cluster::SLOT_COUNT);
    // One SCAN per prefix under a filter: MATCH makes the server pass over the other
    // keys, and `ours` still decides for each key returned.
    let patterns: Vec<Vec<u8>> = match filter.is_empty() {
        true => vec![b"*".to_vec()],
        false => filter.prefixes().iter().map(|p| glob_prefix(p)).collect(),
    };
    let mut removed = 0;
    for pattern in patterns {
        let ours = |k: &[u8]| !is_marker(k) && filter.keeps(k) && (all || in_slots(slots, k));
        removed += scan_unlink(c, &pattern, ours).await?;
    }
    Ok(removed)
}

/// A `MATCH` pattern for keys starting with `prefix`, its glob characters escaped, so it
/// matches what the prefix names: unescaped, `a[c]` would match `ac` and miss `a[c]x`.
pub fn glob_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

/// After cut-over: remove every key the tool wrote for itself (`__rsm:*`: sync markers
/// and slot markers) from the target's masters, every db of a standalone target. Returns
/// how many were removed. Run it only once no sync writes into the target any more.
pub async fn remove_progress_keys(
    target: &Endpoint,
    connect: &ConnectOptions,
) -> Result<u64, WriteError> {
    let (_, map) = super::target::detect(target, connect, 0).await?;
    let mut removed = 0;
    // Masters only: their replicas follow. The tool's keys live in many slots, hence
    // every master, not only those of one shard.
    for node in map.owners() {
        let mut c = Connection::connect(node, connect).await?;
        // Every db holding keys: a `--targetdb` sync keeps its keys in that db, and a slot
        // marker goes in the db of its command (a standalone target, or a cluster with
        // `cluster-databases`); nothing here says which dbs those were. A cluster of db 0
        // only lists no other, so it is sent no `SELECT`.
        let dbs = rsm_client::keyspace(&c.info("keyspace").await?);
        let mut selected = 0;
        for (db, _) in dbs {
            if db != selected {
                c.request_ok(&["SELECT", &db.to_string()]).await?;
                selected = db;
            }
            removed += remove_matching(&mut c).await?;
        }
    }
    Ok(removed)
}

/// SCAN … MATCH __rsm:* on one connection, unlinking each batch.
async fn remove_matching(c: &mut Connection) -> Result<u64, WriteError> {
    scan_unlink(c, &glob_prefix(MARKER_PREFIX), is_marker).await
}

/// `SCAN … MATCH pattern` over the connection's current db, unlinking each batch's keys
/// that `remove` picks. Removing keys during a `SCAN` is allowed: every key present
/// throughout is still returned, and one batch at a time keeps memory bounded.
async fn scan_unlink(
    c: &mut Connection,
    pattern: &[u8],
    remove: impl Fn(&[u8]) -> bool,
) -> Result<u64, WriteError> {
    let mut removed = 0;
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let page = c.scan(&cursor, Some(pattern), BATCH).await?;
        // MATCH only narrows (a glob, applied per batch; a batch may come back empty
        // while the scan goes on): `remove` has the last word on each key.
        let keys: Vec<Bytes> = page.keys.into_iter().filter(|k| remove(k)).collect();
        if !keys.is_empty() {
            removed += unlink_each(c, &keys).await?;
        }
        match page.next {
            Some(n) => cursor = n,
            None => return Ok(removed),
        }
    }
}

/// The strings of an array reply; anything else reads as none.
fn bulk_list(f: &Frame) -> Vec<Bytes> {
    f.as_array()
        .map(|a| a.iter().filter_map(|k| k.as_bytes().cloned()).collect())
        .unwrap_or_default()
}

/// One `UNLINK` per key, pipelined: the progress keys of a node live in many slots, and a
/// cluster refuses a multi-key command across slots.
async fn unlink_each(c: &mut Connection, keys: &[Bytes]) -> Result<u64, WriteError> {
    for k in keys {
        c.send(&[b"UNLINK".as_slice(), k]);
    }
    c.flush().await?;
    let mut removed = 0;
    for k in keys {
        let f = c.read_frame().await?;
        if let Some(e) = f.as_error() {
            return Err(WriteError::Topology(format!(
                "target refused UNLINK {}: {}",
                show_key(k),
                rsm_resp::escape_controls(e)
            )));
        }
        // 0 when the key went in between (it expired, or another client removed it).
        removed += f.as_int().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    }
    Ok(removed)
}

/// One `UNLINK` for many keys: they lie in one slot (cluster) or one db (standalone),
/// where a multi-key command is fine, and one round trip per batch. `UNLINK` rather
/// than `DEL`: a big value is freed in the background, not while the server blocks.
async fn unlink(c: &mut Connection, keys: &[Bytes]) -> Result<u64, WriteError> {
    let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
    args.push(b"UNLINK");
    args.extend(keys.iter().map(|k| k.as_ref()));
    let reply = c.request_ok(&args).await?;
    Ok(reply
        .as_int()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsm_cluster::Slot;

    fn range(a: u16, b: u16) -> SlotRange {
        SlotRange::new(Slot::new(a).unwrap(), Slot::new(b).unwrap()).unwrap()
    }

    /// The marker hashes by its tag alone, so it lives in the slot of the ranges' text;
    /// a user's key that merely contains the prefix is not the tool's.
    #[test]
    fn marker_key_lives_in_one_slot_and_is_the_tools() {
        let k = marker_key(&[range(0, 5460)]);
        assert_eq!(k, "__rsm:sync:{0-5460}");
        assert!(is_marker(k.as_bytes()));
        assert_eq!(
            rsm_cluster::key_slot(k.as_bytes()),
            rsm_cluster::key_slot(b"0-5460")
        );
        assert!(!is_marker(b"user:__rsm:x"));
    }

    /// Unescaped, a prefix's `[c]` would match `c`, and a flush would miss the keys that
    /// really start with `[c]`.
    #[test]
    fn glob_characters_in_a_prefix_are_matched_literally() {
        assert_eq!(glob_prefix(b"user:"), b"user:*".to_vec());
        assert_eq!(glob_prefix(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\*".to_vec());
    }

    /// `cleanup` and a restarted copy remove keys, and `verify` passes over them: only
    /// the exact shapes the tool writes may count as its own, never a user's key that
    /// happens to share the prefix.
    #[test]
    fn only_keys_of_the_tools_own_shapes_are_its_own() {
        use super::super::progress::{failed_key, slot_marker_key, slot_tag};
        for slot in [0usize, 1, 5460, 16383] {
            assert!(is_tool_key(&slot_marker_key(slot)));
            assert!(is_tool_key(&failed_key(slot)));
            let durable = format!("__rsm:durable:{{{}}}", slot_tag(slot));
            assert!(is_tool_key(durable.as_bytes()));
        }
        assert!(is_tool_key(
            marker_key(&[range(0, 5460), range(6000, 6001)]).as_bytes()
        ));
        assert!(is_tool_key(b"__rsm:probe:12"));
        // A user's keys under the prefix, of other shapes: never the tool's.
        for user in [
            &b"__rsm:foo"[..],
            b"__rsm:at:{x}",
            b"__rsm:durable:{a}",
            b"__rsm:at:{0}x",
            b"__rsm:sync:{}",
            b"__rsm:sync:{abc}",
            b"__rsm:probe:",
            b"rsm:writer-probe:0",
        ] {
            assert!(!is_tool_key(user), "{}", user.escape_ascii());
        }
    }

    /// A flush or a restarted copy must remove exactly the shard's keys, decided as the
    /// server places them.
    #[test]
    fn slot_membership() {
        let s = rsm_cluster::key_slot(b"a").get();
        assert!(in_slots(&[range(0, 1), range(s, s)], b"a"));
        assert!(!in_slots(&[range(s + 1, 16383)], b"a"));
        // The hash tag decides: "{a}x" lives with "a".
        assert!(in_slots(&[range(s, s)], b"{a}x"));
    }
}
