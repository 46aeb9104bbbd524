//! From parsed nodes to shards, pre-flight checks, and the slot → node routing table.
//!
//! The manager turns the source's `CLUSTER NODES` replies into a [`Topology`]: one [`Shard`]
//! per master that serves slots, numbered 0, 1, 2… in slot order, each with its replicas. Before
//! anything connects as a replica, [`Topology::preflight`] refuses a source that is mid-reshard,
//! has unserved slots, or has a failing master, with one typed error per problem.
//!
//! Migration markers (`[slot->-id]`, `[slot-<-id]`) are printed only on each node's own
//! `myself` line, so one node's view never shows another node's resharding: gather
//! `CLUSTER NODES` from every master and combine them with [`merge_views`] /
//! [`Topology::from_views`].
//!
//! [`SlotMap`] is the writer's routing table for a *target* cluster: 16384 entries pointing
//! into a small list of owners, updated in place on `MOVED`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use thiserror::Error;

use crate::nodes::{LinkState, Node, NodeAddr, NodeFlags, NodeId};
use crate::slot::{display_ranges, key_slot, ranges_of, Slot, SlotRange, SLOT_COUNT};

/// One master that serves slots, with its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub master: Node,
    pub replicas: Vec<Node>,
    /// The master's slots, sorted and coalesced.
    pub slots: Vec<SlotRange>,
}

impl Shard {
    /// The lowest slot served (shards are ordered by it).
    pub fn first_slot(&self) -> Option<Slot> {
        self.slots.first().map(SlotRange::start)
    }

    /// Whether this shard serves `slot`.
    pub fn owns(&self, slot: Slot) -> bool {
        self.slots.iter().any(|r| r.contains(slot))
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(SlotRange::len).sum()
    }
}

/// The source as a list of shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Shards in slot order; a shard's serial number is its index.
    pub shards: Vec<Shard>,
    /// Masters that serve no slot (a new node before resharding, or a node being emptied).
    pub empty_masters: Vec<Node>,
    /// Replicas whose master is not among the nodes.
    pub orphan_replicas: Vec<Node>,
    /// True if built by [`Topology::standalone`].
    pub standalone: bool,
}

/// Node id used for the synthetic master of a non-cluster source.
pub const STANDALONE_NODE_ID: &str = "0000000000000000000000000000000000000000";

impl Topology {
    /// Groups nodes into shards. Nodes still in `handshake` are ignored (their ids are
    /// temporary); a replica is attached to its master by id.
    pub fn from_nodes(nodes: Vec<Node>) -> Topology {
        let nodes: Vec<Node> = nodes.into_iter().filter(|n| !n.flags.handshake).collect();
        let mut masters: Vec<Node> = Vec::new();
        let mut replicas: Vec<Node> = Vec::new();
        for n in nodes {
            // A node that is neither (noflags) has no data to offer; treat like a replica
            // without a master so it shows up in `orphan_replicas` if it names one.
            if n.flags.master {
                masters.push(n);
            } else {
                replicas.push(n);
            }
        }
        let mut by_master: HashMap<NodeId, Vec<Node>> = HashMap::new();
        let master_ids: BTreeSet<NodeId> = masters.iter().map(|m| m.id.clone()).collect();
        let mut orphan_replicas = Vec::new();
        for r in replicas {
            match &r.master_id {
                Some(m) if master_ids.contains(m) => {
                    by_master.entry(m.clone()).or_default().push(r)
                }
                Some(_) => orphan_replicas.push(r),
                None => {} // noflags node with no master: nothing to migrate from it
            }
        }
        let mut shards = Vec::new();
        let mut empty_masters = Vec::new();
        for m in masters {
            let mut reps = by_master.remove(&m.id).unwrap_or_default();
            // Deterministic order: by address, then id.
            reps.sort_by(|a, b| {
                (&a.addr.host, a.addr.port, &a.id).cmp(&(&b.addr.host, b.addr.port, &b.id))
            });
            let slots = ranges_of(m.slots.iter().flat_map(SlotRange::iter));
            if slots.is_empty() {
                empty_masters.push(m);
            } else {
                shards.push(Shard {
                    master: m,
                    replicas: reps,
                    slots,
                });
            }
        }
        shards.sort_by_key(Shard::first_slot);
        Topology {
            shards,
            empty_masters,
            orphan_replicas,
            standalone: false,
        }
    }

    /// Merges the `CLUSTER NODES` replies of several nodes (see [`merge_views`]) and groups them.
    pub fn from_views(views: Vec<Vec<Node>>) -> Topology {
        Topology::from_nodes(merge_views(views))
    }

    /// A non-cluster source: a single shard covering every slot, with no replicas.
    pub fn standalone(host: &str, port: u16) -> Topology {
        let master = Node {
            id: NodeId::standalone(),
            addr: NodeAddr {
                host: host.to_string(),
                port,
                cport: None,
                hostname: None,
            },
            flags: NodeFlags {
                master: true,
                ..NodeFlags::default()
            },
            master_id: None,
            ping_sent: 0,
            pong_recv: 0,
            config_epoch: 0,
            link: LinkState::Connected,
            slots: vec![SlotRange::full()],
            migrating: Vec::new(),
            importing: Vec::new(),
        };
        Topology {
            shards: vec![Shard {
                master,
                replicas: Vec::new(),
                slots: vec![SlotRange::full()],
            }],
            empty_masters: Vec::new(),
            orphan_replicas: Vec::new(),
            standalone: true,
        }
    }

    /// The index of the shard serving `slot`.
    pub fn shard_for_slot(&self, slot: Slot) -> Option<usize> {
        self.shards.iter().position(|s| s.owns(slot))
    }

    /// Every reason not to start a migration from this source; empty if it is fit.
    ///
    /// Order: slot moves (by slot), slot conflicts, uncovered slots, failing masters.
    pub fn preflight(&self) -> Vec<PreflightError> {
        let mut out = Vec::new();
        let masters = || {
            self.shards
                .iter()
                .map(|s| &s.master)
                .chain(&self.empty_masters)
        };

        // Slot moves. Either marker gives both ends; report each (slot, source, target) once.
        let mut moves: BTreeSet<(Slot, NodeId, NodeId)> = BTreeSet::new();
        for n in masters().chain(&self.orphan_replicas) {
            for (slot, target) in &n.migrating {
                moves.insert((*slot, n.id.clone(), target.clone()));
            }
            for (slot, source) in &n.importing {
                moves.insert((*slot, source.clone(), n.id.clone()));
            }
        }
        out.extend(
            moves
                .into_iter()
                .map(|(slot, from, to)| PreflightError::SlotMoving { slot, from, to }),
        );

        // Ownership: conflicts and holes.
        let mut owner: Vec<Option<&NodeId>> = vec![None; usize::from(SLOT_COUNT)];
        let mut conflicts: BTreeMap<(NodeId, NodeId), Vec<Slot>> = BTreeMap::new();
        for s in &self.shards {
            for slot in s.slots.iter().flat_map(SlotRange::iter) {
                let Some(at) = owner.get_mut(slot.index()) else {
                    continue;
                };
                match at {
                    Some(prev) => conflicts
                        .entry(((*prev).clone(), s.master.id.clone()))
                        .or_default()
                        .push(slot),
                    None => *at = Some(&s.master.id),
                }
            }
        }
        out.extend(conflicts.into_iter().map(|((first, second), slots)| {
            PreflightError::SlotConflict {
                ranges: ranges_of(slots),
                first,
                second,
            }
        }));
        let uncovered =
            ranges_of(Slot::all().filter(|s| owner.get(s.index()).is_some_and(Option::is_none)));
        if !uncovered.is_empty() {
            out.push(PreflightError::UncoveredSlots { ranges: uncovered });
        }

        // Failing masters that serve slots.
        for s in &self.shards {
            let f = &s.master.flags;
            if f.failing() {
                out.push(PreflightError::MasterFailing {
                    id: s.master.id.clone(),
                    addr: s.master.addr.to_string(),
                    state: if f.fail { "fail" } else { "fail?" },
                });
            }
        }
        out
    }

    /// The first pre-flight problem, if any.
    pub fn check(&self) -> Result<(), PreflightError> {
        match self.preflight().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Combines several nodes' `CLUSTER NODES` replies into one list of nodes.
///
/// - A node's own `myself` line is authoritative for its address, slots, epoch, master and
///   migration markers (only it carries the markers); otherwise the first view that lists the
///   node is used.
/// - `fail` / `fail?` flags are taken from every view (conservative: one node's suspicion is
///   enough to stop a pre-flight check).
/// - The `myself` flag is cleared: the result is nobody's own view.
/// - Order: first appearance across the views.
pub fn merge_views(views: Vec<Vec<Node>>) -> Vec<Node> {
    let mut order: Vec<NodeId> = Vec::new();
    let mut chosen: HashMap<NodeId, (bool, Node)> = HashMap::new();
    let mut failing: HashMap<NodeId, (bool, bool)> = HashMap::new();
    for view in views {
        for n in view {
            let f = failing.entry(n.id.clone()).or_default();
            f.0 |= n.flags.fail;
            f.1 |= n.flags.pfail;
            match chosen.get(&n.id) {
                None => {
                    order.push(n.id.clone());
                    chosen.insert(n.id.clone(), (n.flags.myself, n));
                }
                Some((false, _)) if n.flags.myself => {
                    chosen.insert(n.id.clone(), (true, n));
                }
                Some(_) => {}
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let (_, mut n) = chosen.remove(&id)?;
            let (fail, pfail) = failing.get(&id).copied().unwrap_or_default();
            n.flags.myself = false;
            n.flags.fail |= fail;
            n.flags.pfail |= pfail;
            Some(n)
        })
        .collect()
}

/// Why a source is not fit to migrate from. Each variant is one clear line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PreflightError {
    #[error(
        "slot {slot} is being migrated from node {from} to node {to}; \
         wait for the resharding to finish (or CLUSTER SETSLOT {slot} STABLE) and retry"
    )]
    SlotMoving {
        /// The slot being moved.
        slot: Slot,
        /// The node migrating it away (holds `[slot->-to]`).
        from: NodeId,
        /// The node importing it (holds `[slot-<-from]`).
        to: NodeId,
    },
    #[error(
        "slots {} are claimed by both node {first} and node {second}; \
         the cluster has not converged",
        display_ranges(.ranges)
    )]
    SlotConflict {
        ranges: Vec<SlotRange>,
        first: NodeId,
        second: NodeId,
    },
    #[error("slots {} are not served by any master", display_ranges(.ranges))]
    UncoveredSlots { ranges: Vec<SlotRange> },
    #[error("master {id} ({addr}) is in state `{state}`; wait for failover or recovery and retry")]
    MasterFailing {
        id: NodeId,
        addr: String,
        state: &'static str,
    },
}

/// The owner of a slot in a [`SlotMap`]: where to send its writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SlotOwner {
    /// `host:port` to connect to.
    pub addr: String,
    /// Its node id, when known (not after a `MOVED` to a new address).
    pub id: Option<NodeId>,
}

/// Slot → owner routing table: 16384 small indices into a list of owners.
///
/// The owner is whatever the user routes to: `verify` and the plan keep the address and
/// node id read from `CLUSTER NODES` ([`SlotOwner`]), the writer keeps the endpoint it
/// dials. One table, so that the slot arithmetic lives in one place.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap<O = SlotOwner> {
    owners: Vec<O>,
    slots: Vec<Option<u16>>,
}

impl<O: fmt::Display> fmt::Debug for SlotMap<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, o) in self.owners.iter().enumerate() {
            let ranges = ranges_of(
                Slot::all().filter(|s| self.slots.get(s.index()) == Some(&Some(i as u16))),
            );
            m.entry(&o.to_string(), &display_ranges(&ranges));
        }
        m.finish()
    }
}

impl fmt::Display for SlotOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

impl<O> Default for SlotMap<O> {
    fn default() -> Self {
        SlotMap::empty()
    }
}

impl<O> SlotMap<O> {
    /// A map with no slot assigned.
    pub fn empty() -> SlotMap<O> {
        SlotMap {
            owners: Vec::new(),
            slots: vec![None; usize::from(SLOT_COUNT)],
        }
    }

    /// One owner serves every slot (a standalone server, a proxy).
    pub fn single(owner: O) -> SlotMap<O> {
        SlotMap {
            owners: vec![owner],
            slots: vec![Some(0); usize::from(SLOT_COUNT)],
        }
    }

    /// Every owner; an owner's index is stable for the life of the map.
    pub fn owners(&self) -> &[O] {
        &self.owners
    }

    /// The index (into [`SlotMap::owners`]) of the owner of `slot`.
    pub fn owner_index_of(&self, slot: Slot) -> Option<usize> {
        self.slots
            .get(slot.index())
            .copied()
            .flatten()
            .map(usize::from)
    }

    /// The owner of `slot`.
    pub fn owner(&self, slot: Slot) -> Option<&O> {
        self.owner_index_of(slot).and_then(|i| self.owners.get(i))
    }

    /// The owner of `key`'s slot.
    pub fn owner_for_key(&self, key: &[u8]) -> Option<&O> {
        self.owner(key_slot(key))
    }

    /// The owner index of every slot, in slot order.
    pub fn slot_owners(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.slots.iter().map(|o| o.map(usize::from))
    }

    /// Slots with no owner, as ranges.
    pub fn uncovered(&self) -> Vec<SlotRange> {
        ranges_of(Slot::all().filter(|s| self.slots.get(s.index()).is_some_and(Option::is_none)))
    }

    /// True if every slot has an owner.
    pub fn is_complete(&self) -> bool {
        self.slots.iter().all(Option::is_some)
    }
}

impl<O> SlotMap<O> {
    /// Gives `slot` to the owner at `idx` (every slot has an entry: the map is built
    /// with one per slot, so the `if let` never fails).
    fn put(&mut self, slot: Slot, idx: u16) {
        if let Some(at) = self.slots.get_mut(slot.index()) {
            *at = Some(idx);
        }
    }
}

impl<O: PartialEq> SlotMap<O> {
    /// `range` now belongs to `owner` (added to the owners if new). Returns its index.
    pub fn assign(&mut self, range: SlotRange, owner: O) -> usize {
        let idx = match self.owners.iter().position(|o| *o == owner) {
            Some(i) => i,
            None => {
                self.owners.push(owner);
                self.owners.len() - 1
            }
        };
        // Fewer than 16384 owners ever exist (each owns a slot or was added by a MOVED).
        let small = idx as u16;
        for slot in range.iter() {
            self.put(slot, small);
        }
        idx
    }
}

impl SlotMap<SlotOwner> {
    /// Builds the map from parsed `CLUSTER NODES`: every master (not in handshake) owns the
    /// slots it lists. If two masters claim a slot, the higher config epoch wins, as in the
    /// cluster itself. An empty host (fresh node, or `unknown-endpoint`) becomes `empty_host`,
    /// normally the host the reply came from.
    pub fn from_nodes(nodes: &[Node], empty_host: &str) -> SlotMap {
        let mut map = SlotMap::empty();
        let mut epoch: Vec<u64> = vec![0; usize::from(SLOT_COUNT)];
        for n in nodes
            .iter()
            .filter(|n| n.flags.master && !n.flags.handshake)
        {
            if n.slots.is_empty() {
                continue;
            }
            let idx = map.owner_index(&n.addr.endpoint(empty_host), Some(&n.id));
            for slot in n.slots.iter().flat_map(SlotRange::iter) {
                let (Some(owner), Some(seen)) =
                    (map.slots.get_mut(slot.index()), epoch.get_mut(slot.index()))
                else {
                    continue;
                };
                if owner.is_none() || n.config_epoch > *seen {
                    *owner = Some(idx);
                    *seen = n.config_epoch;
                }
            }
        }
        map
    }

    /// The map of a topology's shards.
    pub fn from_topology(t: &Topology, empty_host: &str) -> SlotMap {
        let mut map = SlotMap::empty();
        for s in &t.shards {
            let idx = map.owner_index(&s.master.addr.endpoint(empty_host), Some(&s.master.id));
            for slot in s.slots.iter().flat_map(SlotRange::iter) {
                map.put(slot, idx);
            }
        }
        map
    }

    fn owner_index(&mut self, addr: &str, id: Option<&NodeId>) -> u16 {
        if let Some(i) = self.owners.iter().position(|o| o.addr == addr) {
            if let Some(o) = self.owners.get_mut(i).filter(|o| o.id.is_none()) {
                o.id = id.cloned();
            }
            // Fewer than 16384 owners ever exist (each owns a slot or was added by a MOVED).
            return i as u16;
        }
        self.owners.push(SlotOwner {
            addr: addr.to_string(),
            id: id.cloned(),
        });
        (self.owners.len() - 1) as u16
    }

    /// Records a `MOVED slot addr`: `slot` now belongs to `addr`. Returns the owner index.
    pub fn set_owner(&mut self, slot: Slot, addr: &str) -> usize {
        let idx = self.owner_index(addr, None);
        self.put(slot, idx);
        usize::from(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::parse_cluster_nodes;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const RA: &str = "1111111111111111111111111111111111111111";
    const RB: &str = "2222222222222222222222222222222222222222";
    const RC: &str = "3333333333333333333333333333333333333333";

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn slot(n: u16) -> Slot {
        Slot::new(n).unwrap()
    }

    /// A 3×1 cluster as seen from node B, listed out of slot order.
    fn three_by_one(b_extra: &str) -> String {
        format!(
            "{B} 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 5461-10922{b_extra}\n\
             {RC} 127.0.0.1:7005@17005 slave {C} 0 1 3 connected\n\
             {C} 127.0.0.1:7002@17002 master - 0 1 3 connected 10923-16383\n\
             {A} 127.0.0.1:7000@17000 master - 0 1 1 connected 0-5460\n\
             {RA} 127.0.0.1:7003@17003 slave {A} 0 1 1 connected\n\
             {RB} 127.0.0.1:7004@17004 slave {B} 0 1 2 connected\n"
        )
    }

    fn topo(text: &str) -> Topology {
        Topology::from_nodes(parse_cluster_nodes(text).unwrap())
    }

    #[test]
    fn shards_in_slot_order_with_replicas() {
        let t = topo(&three_by_one(""));
        assert_eq!(t.shards.len(), 3);
        let masters: Vec<&str> = t.shards.iter().map(|s| s.master.id.as_str()).collect();
        assert_eq!(masters, vec![A, B, C]);
        let reps: Vec<&str> = t.shards.iter().map(|s| s.replicas[0].id.as_str()).collect();
        assert_eq!(reps, vec![RA, RB, RC]);
        assert_eq!(t.shards[1].slot_count(), 5462);
        assert_eq!(t.shard_for_slot(slot(16383)), Some(2));
        assert!(t.preflight().is_empty());
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn migrating_slot_names_slot_and_both_ids() {
        let t = topo(&three_by_one(&format!(" [5461->-{C}]")));
        let errs = t.preflight();
        assert_eq!(
            errs,
            vec![PreflightError::SlotMoving {
                slot: slot(5461),
                from: id(B),
                to: id(C)
            }]
        );
        let msg = errs[0].to_string();
        assert!(
            msg.contains("slot 5461") && msg.contains(B) && msg.contains(C),
            "{msg}"
        );
    }

    #[test]
    fn markers_from_several_views_are_merged_once() {
        let from_b = parse_cluster_nodes(&three_by_one(&format!(" [5461->-{C}]"))).unwrap();
        // C's view: C is myself and importing the same slot; it also suspects A.
        let from_c = parse_cluster_nodes(&format!(
            "{C} 127.0.0.1:7002@17002 myself,master - 0 0 3 connected 10923-16383 [5461-<-{B}]\n\
             {A} 127.0.0.1:7000@17000 master,fail? - 0 1 1 connected 0-5460\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922\n"
        ))
        .unwrap();
        // Without merging, B's view alone misses C's marker but still has B's; C's view alone
        // shows only the import.
        let merged = merge_views(vec![from_b, from_c]);
        assert_eq!(merged.len(), 6);
        assert!(merged.iter().all(|n| !n.flags.myself));
        let c = merged.iter().find(|n| n.id == id(C)).unwrap();
        assert_eq!(c.importing, vec![(slot(5461), id(B))]);
        let t = Topology::from_nodes(merged);
        let errs = t.preflight();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(matches!(&errs[0], PreflightError::SlotMoving { slot: s, .. } if s.get() == 5461));
        assert_eq!(
            errs[1],
            PreflightError::MasterFailing {
                id: id(A),
                addr: "127.0.0.1:7000".into(),
                state: "fail?"
            }
        );
    }

    #[test]
    fn uncovered_slots_are_listed_as_ranges() {
        let t = topo(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99 101-5460\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-16000\n"
        ));
        let errs = t.preflight();
        let ranges = vec![
            SlotRange::single(slot(100)),
            SlotRange::new(slot(16001), slot(16383)).unwrap(),
        ];
        assert_eq!(errs, vec![PreflightError::UncoveredSlots { ranges }]);
        assert_eq!(
            errs[0].to_string(),
            "slots 100, 16001-16383 are not served by any master"
        );
    }

    #[test]
    fn failed_master_and_conflicts() {
        let t = topo(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n\
             {B} 127.0.0.1:7001@17001 master,fail - 5 4 2 disconnected 8000-16383\n\
             {C} 127.0.0.1:7002@17002 slave,fail - 5 4 2 disconnected\n"
        ));
        let errs = t.preflight();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            format!(
                "slots 8000-8191 are claimed by both node {A} and node {B}; the cluster has not converged"
            )
        );
        assert!(errs[1].to_string().contains("state `fail`"));
        // A replica that names no master is not an orphan; one that names an unknown is.
        assert!(t.orphan_replicas.is_empty());
    }

    #[test]
    fn handshake_empty_and_orphans() {
        let t = topo(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 0 connected\n\
             {C} 127.0.0.1:7002@17002 handshake - 0 0 0 disconnected\n\
             {RA} 127.0.0.1:7003@17003 slave {RB} 0 1 0 connected\n"
        ));
        assert_eq!(t.shards.len(), 1);
        assert_eq!(t.empty_masters.len(), 1);
        assert_eq!(t.orphan_replicas.len(), 1);
        assert!(t.preflight().is_empty());
    }

    #[test]
    fn empty_master_importing_is_reported() {
        let t = topo(&format!(
            "{A} 127.0.0.1:7000@17000 master - 0 0 1 connected 0-16383\n\
             {B} 127.0.0.1:7001@17001 myself,master - 0 1 0 connected [7-<-{A}]\n"
        ));
        assert_eq!(
            t.preflight(),
            vec![PreflightError::SlotMoving {
                slot: slot(7),
                from: id(A),
                to: id(B)
            }]
        );
    }

    #[test]
    fn standalone_is_one_full_shard() {
        let t = Topology::standalone("10.1.2.3", 6379);
        assert!(t.standalone);
        assert_eq!(t.shards.len(), 1);
        assert_eq!(t.shards[0].slot_count(), 16384);
        assert!(t.preflight().is_empty());
        let m = SlotMap::from_topology(&t, "");
        assert!(m.is_complete());
        assert_eq!(m.owner_for_key(b"foo").unwrap().addr, "10.1.2.3:6379");
    }

    #[test]
    fn slot_map_routes_and_learns_moves() {
        let nodes = parse_cluster_nodes(&three_by_one("")).unwrap();
        let mut m = SlotMap::from_nodes(&nodes, "127.0.0.1");
        assert!(m.is_complete());
        assert_eq!(m.owners().len(), 3);
        assert_eq!(m.owner_for_key(b"foo").unwrap().addr, "127.0.0.1:7002"); // slot 12182
        assert_eq!(m.owner(slot(0)).unwrap().id, Some(id(A)));
        let i = m.set_owner(slot(12182), "127.0.0.1:7009");
        assert_eq!(m.owner_index_of(slot(12182)), Some(i));
        assert_eq!(m.owners()[i].id, None);
        assert_eq!(m.owner_for_key(b"foo").unwrap().addr, "127.0.0.1:7009");
        assert!(SlotMap::<SlotOwner>::empty().uncovered() == vec![SlotRange::full()]);
        // Same for the topology path.
        let t = Topology::from_nodes(nodes);
        assert_eq!(
            SlotMap::from_topology(&t, "x")
                .owner(slot(5461))
                .unwrap()
                .addr,
            "127.0.0.1:7001"
        );
    }

    #[test]
    fn any_owner_type_assigns_ranges_and_reuses_equal_owners() {
        let mut map: SlotMap<&str> = SlotMap::empty();
        let lo = SlotRange::new(slot(0), slot(99)).unwrap();
        let hi = SlotRange::new(slot(100), slot(16383)).unwrap();
        assert_eq!(map.assign(lo, "a:1"), 0);
        assert_eq!(map.assign(hi, "b:2"), 1);
        // A later range for a known owner reuses its index.
        assert_eq!(map.assign(SlotRange::single(slot(16383)), "a:1"), 0);
        assert_eq!(map.owners(), &["a:1", "b:2"]);
        assert_eq!(map.owner(slot(99)), Some(&"a:1"));
        assert_eq!(map.owner(slot(100)), Some(&"b:2"));
        assert_eq!(map.owner(slot(16383)), Some(&"a:1"));
        assert!(map.is_complete());
        let owners: Vec<Option<usize>> = map.slot_owners().collect();
        assert_eq!(owners.len(), 16384);
        assert_eq!(owners[100], Some(1));
        assert_eq!(SlotMap::single("s").owner(slot(5)), Some(&"s"));
    }

    #[test]
    fn slot_map_higher_epoch_wins_and_empty_host() {
        let nodes = parse_cluster_nodes(&format!(
            "{A} :7000@17000 myself,master - 0 0 1 connected 0-16383\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 5 connected 100\n"
        ))
        .unwrap();
        let m = SlotMap::from_nodes(&nodes, "10.0.0.9");
        assert_eq!(m.owner(slot(100)).unwrap().addr, "127.0.0.1:7001");
        assert_eq!(m.owner(slot(101)).unwrap().addr, "10.0.0.9:7000");
    }
}
