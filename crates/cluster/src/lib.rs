//! Cluster knowledge without sockets: hash slots, `CLUSTER NODES` parsing, shards and
//! pre-flight checks, slot → node routing, and the choice of the node to sync from.
//!
//! In the flow: the manager reads the source's topology ([`nodes`] → [`topology`]), checks it
//! ([`Topology::preflight`]), plans one engine per [`Shard`] and picks its node ([`select`]);
//! the writer routes each replayed command with [`key_slot`] and a [`SlotMap`] of the target.
//! Before anything runs, [`same_servers`] refuses a target that is the source itself.
//! All I/O stays with the callers, so everything here is tested with plain values.

// Tests may unwrap, panic and index (the workspace denies it in library code).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod identity;
pub mod nodes;
pub mod select;
pub mod slot;
pub mod topology;

pub use identity::{same_servers, Deployment, SameServers, ServerIdentity};
pub use nodes::{
    parse_cluster_nodes, parse_node_line, LinkState, Node, NodeAddr, NodeFlags, NodeId,
    NodeLineError, NodesError,
};
pub use select::{select_node, ReplicaStatus, Role, SelectWarning, Selection, UnknownRole};
pub use slot::{display_ranges, hash_tag, key_slot, ranges_of, Slot, SlotRange, SLOT_COUNT};
pub use topology::{
    merge_views, PreflightError, Shard, SlotMap, SlotOwner, Topology, STANDALONE_NODE_ID,
};
