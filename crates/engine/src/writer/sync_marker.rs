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

use std::collections::BTreeMap;

use bytes::Bytes;
use rsm_client::{ConnectOptions, Connection, Endpoint};
use rsm_cluster::SlotRange;
use rsm_resp::Frame;
use serde::{Deserialize, Serialize};

use super::route::key_slot;
use super::target::read_slot_map;
use super::WriteError;

/// Every key the tool itself writes into the target starts with this.
pub const MARKER_PREFIX: &[u8] = b"__rsm:";

/// Keys asked for or removed per round trip.
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
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The source slots this marker is about (`0-5460`).
    slots: String,
    /// The source node the copy first came from (informational).
    source: String,
    /// Did the target hold no keys in these slots when the first copy began?
    empty_at_start: bool,
    /// Unix milliseconds of the first copy's start.
    started_ms: u64,
}

/// Where a shard's copy goes: what [`begin_copy`] needs to know.
#[derive(Debug, Clone)]
pub struct CopyScope<'a> {
    pub target: &'a Endpoint,
    pub connect: &'a ConnectOptions,
    pub cluster: bool,
    /// The source shard's slots (all of them for a standalone source).
    pub slots: &'a [SlotRange],
    /// `--targetdb`: on a standalone target only this db is looked at and cleared;
    /// otherwise every db that holds keys.
    pub target_db: Option<u32>,
    pub source: &'a str,
}

/// The marker's key for a shard: the hash tag keeps it in one slot of the target.
pub fn marker_key(slots: &[SlotRange]) -> String {
    format!("__rsm:sync:{{{}}}", rsm_cluster::display_ranges(slots))
}

/// Read or create the shard's marker and, for a restarted copy, empty its slots.
/// Call before the snapshot's first write.
pub async fn begin_copy(scope: &CopyScope<'_>) -> Result<CopyStart, WriteError> {
    let mut target = TargetKeys::connect(scope).await?;
    let key = marker_key(scope.slots);
    if let Some(marker) = target.get_marker(&key).await? {
        if !marker.empty_at_start {
            return Ok(CopyStart::Occupied);
        }
        let removed = target.remove_shard_keys(scope.slots).await?;
        return Ok(CopyStart::Restarted { removed });
    }
    let empty = !target.holds_shard_keys(scope.slots).await?;
    let marker = Marker {
        slots: rsm_cluster::display_ranges(scope.slots),
        source: scope.source.to_string(),
        empty_at_start: empty,
        started_ms: crate::status::now_ms(),
    };
    target.set_marker(&key, &marker).await?;
    Ok(if empty {
        CopyStart::Fresh
    } else {
        CopyStart::Occupied
    })
}

fn is_marker(key: &[u8]) -> bool {
    key.starts_with(MARKER_PREFIX)
}

fn in_slots(slots: &[SlotRange], key: &[u8]) -> bool {
    let s = key_slot(key);
    slots
        .iter()
        .any(|r| (r.start().get()..=r.end().get()).contains(&s))
}

/// Connections to the target's masters, with the slot map of a cluster target.
struct TargetKeys<'a> {
    scope: &'a CopyScope<'a>,
    masters: Vec<Endpoint>,
    /// `owner[slot]` as an index into `masters` (one entry for a standalone target).
    owner: Vec<Option<usize>>,
    conns: BTreeMap<usize, Connection>,
}

impl<'a> TargetKeys<'a> {
    async fn connect(scope: &'a CopyScope<'a>) -> Result<TargetKeys<'a>, WriteError> {
        let mut seed = Connection::connect(scope.target, scope.connect).await?;
        let (masters, owner) = if scope.cluster {
            let map = read_slot_map(&mut seed, scope.target).await?;
            (map.masters, map.owner)
        } else {
            (vec![scope.target.clone()], Vec::new())
        };
        let mut conns = BTreeMap::new();
        if !scope.cluster {
            conns.insert(0, seed);
        }
        Ok(TargetKeys {
            scope,
            masters,
            owner,
            conns,
        })
    }

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

    async fn conn(&mut self, node: usize) -> Result<&mut Connection, WriteError> {
        if !self.conns.contains_key(&node) {
            let ep = self
                .masters
                .get(node)
                .ok_or_else(|| WriteError::Topology(format!("no target master {node}")))?;
            let c = Connection::connect(ep, self.scope.connect).await?;
            self.conns.insert(node, c);
        }
        self.conns
            .get_mut(&node)
            .ok_or_else(|| WriteError::Topology(format!("no target master {node}")))
    }

    /// The connection for a standalone target's `db`.
    async fn db_conn(&mut self, db: u32) -> Result<&mut Connection, WriteError> {
        let c = self.conn(0).await?;
        c.request_ok(&["SELECT", &db.to_string()]).await?;
        Ok(c)
    }

    async fn get_marker(&mut self, key: &str) -> Result<Option<Marker>, WriteError> {
        let node = self.node_of_slot(key_slot(key.as_bytes()))?;
        let c = if self.scope.cluster {
            self.conn(node).await?
        } else {
            self.db_conn(0).await?
        };
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

    async fn set_marker(&mut self, key: &str, marker: &Marker) -> Result<(), WriteError> {
        let node = self.node_of_slot(key_slot(key.as_bytes()))?;
        let c = if self.scope.cluster {
            self.conn(node).await?
        } else {
            self.db_conn(0).await?
        };
        let value = serde_json::to_vec(marker).map_err(|e| WriteError::Topology(e.to_string()))?;
        c.request_ok(&[b"SET".as_slice(), key.as_bytes(), &value])
            .await?;
        Ok(())
    }

    /// The dbs of a standalone target this shard writes into.
    async fn dbs(&mut self) -> Result<Vec<u32>, WriteError> {
        if let Some(db) = self.scope.target_db {
            return Ok(vec![db]);
        }
        let info = self.conn(0).await?.info("keyspace").await?;
        Ok(info
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("db")?.parse().ok())
            .collect())
    }

    /// Does the target hold any key (other than the tool's own) in these slots?
    async fn holds_shard_keys(&mut self, slots: &[SlotRange]) -> Result<bool, WriteError> {
        if self.scope.cluster {
            for (slot, n) in self.slot_counts(slots).await? {
                if n > BATCH as i64 {
                    return Ok(true);
                }
                let keys = self.keys_in_slot(slot).await?;
                if keys.iter().any(|k| !is_marker(k)) {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        for db in self.dbs().await? {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = self.scan_step(db, &cursor, slots).await?;
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
            for (slot, _) in self.slot_counts(slots).await? {
                loop {
                    let keys: Vec<Bytes> = self
                        .keys_in_slot(slot)
                        .await?
                        .into_iter()
                        .filter(|k| !is_marker(k))
                        .collect();
                    if keys.is_empty() {
                        break;
                    }
                    let node = self.node_of_slot(slot)?;
                    removed += unlink(self.conn(node).await?, &keys).await?;
                }
            }
            return Ok(removed);
        }
        // Removing keys during a SCAN is allowed: every key present throughout is still
        // returned, and one batch at a time keeps memory bounded.
        for db in self.dbs().await? {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = self.scan_step(db, &cursor, slots).await?;
                if !keys.is_empty() {
                    removed += unlink(self.db_conn(db).await?, &keys).await?;
                }
                match next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
        }
        Ok(removed)
    }

    /// `(slot, keys)` for each slot of `slots` that holds keys, from
    /// `CLUSTER COUNTKEYSINSLOT` pipelined per master.
    async fn slot_counts(&mut self, slots: &[SlotRange]) -> Result<Vec<(u16, i64)>, WriteError> {
        let mut by_node: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        for r in slots {
            for s in r.start().get()..=r.end().get() {
                by_node.entry(self.node_of_slot(s)?).or_default().push(s);
            }
        }
        let mut out = Vec::new();
        for (node, list) in by_node {
            let c = self.conn(node).await?;
            for chunk in list.chunks(BATCH) {
                for s in chunk {
                    c.send(&["CLUSTER", "COUNTKEYSINSLOT", &s.to_string()]);
                }
                c.flush().await?;
                for s in chunk {
                    let f = c.read_frame().await?;
                    if let Some(e) = f.as_error() {
                        return Err(WriteError::Topology(format!(
                            "target refused CLUSTER COUNTKEYSINSLOT {s}: {}",
                            rsm_resp::escape_controls(e)
                        )));
                    }
                    let n = f.as_int().unwrap_or(0);
                    if n > 0 {
                        out.push((*s, n));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn keys_in_slot(&mut self, slot: u16) -> Result<Vec<Bytes>, WriteError> {
        let node = self.node_of_slot(slot)?;
        let c = self.conn(node).await?;
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
        let all = slots.iter().map(SlotRange::len).sum::<usize>() == 16384;
        let c = self.db_conn(db).await?;
        let count = BATCH.to_string();
        let reply = c
            .request_ok(&[b"SCAN".as_slice(), cursor, b"COUNT", count.as_bytes()])
            .await?;
        let Some([next, keys]) = reply.as_array() else {
            return Err(WriteError::Topology(format!(
                "unexpected SCAN reply from the target: {}",
                reply.describe()
            )));
        };
        let keys = bulk_list(keys)
            .into_iter()
            .filter(|k| !is_marker(k) && (all || in_slots(slots, k)))
            .collect();
        let next = next
            .as_bytes()
            .filter(|n| n.as_ref() != b"0" && !n.is_empty())
            .cloned();
        Ok((next, keys))
    }
}

fn bulk_list(f: &Frame) -> Vec<Bytes> {
    f.as_array()
        .map(|a| a.iter().filter_map(|k| k.as_bytes().cloned()).collect())
        .unwrap_or_default()
}

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

    #[test]
    fn marker_key_lives_in_one_slot_and_is_the_tools() {
        let k = marker_key(&[range(0, 5460)]);
        assert_eq!(k, "__rsm:sync:{0-5460}");
        assert!(is_marker(k.as_bytes()));
        assert_eq!(key_slot(k.as_bytes()), key_slot(b"0-5460"));
        assert!(!is_marker(b"user:__rsm:x"));
    }

    #[test]
    fn slot_membership() {
        let s = key_slot(b"a");
        assert!(in_slots(&[range(0, 1), range(s, s)], b"a"));
        assert!(!in_slots(&[range(s + 1, 16383)], b"a"));
        // The hash tag decides: "{a}x" lives with "a".
        assert!(in_slots(&[range(s, s)], b"{a}x"));
    }
}
