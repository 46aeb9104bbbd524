//! Dev-only test kit: real Redis / Valkey servers and clusters on loopback, always stopped.
//!
//! Sits beside the data flow, not in it: every integration test in the workspace uses it to
//! start sources and targets ([`Server`], [`Cluster`]), fill them with a mixed dataset
//! ([`fill_mixed`]) and compare whole datasets ([`Snapshot`]) through an *independent* client
//! (the `redis` crate), so a test never checks our own code with our own code.
//!
//! Promises:
//! - a missing server binary panics with install instructions; nothing is silently skipped;
//! - client ports come from 21000..=29999 (bus port = port + 10000), leased through `flock`ed
//!   files under `/tmp/rsm-testkit-ports/`, safe across threads and concurrent test processes;
//! - every process the kit starts is stopped by PID (SIGTERM, then SIGKILL) when its handle drops;
//! - a source's topology changes through the servers' own tools ([`reshard`], [`add_master`],
//!   [`rebalance_to_empty`], [`del_node`], [`migrate_slots_atomic`]), each returning only once
//!   every master agrees on the slot map.
//!
//! ```no_run
//! use std::time::Duration;
//! use rsm_testkit::{fill_mixed, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Snapshot};
//!
//! let source = Cluster::start(ClusterOptions { masters: 3, replicas_per_master: 1, ..Default::default() });
//! fill_mixed(&source, &FillOptions::default());
//! // A specific version: `bin: Some(rsm_testkit::test_server_bin("redis-6.2.14"))`.
//! let target = Server::start(ServerOptions::default());
//! // ... run the migration from source.seed_addr() to target.addr() ...
//! Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(2));
//! ```

mod bin;
mod certs;
mod client;
mod cluster;
mod fill;
mod load;
mod ports;
mod proxy;
mod reshard;
mod server;
mod snapshot;
mod stream_info;

pub use bin::{
    redis_cli_bin, redis_server_bin, server_version, test_server_bin, test_server_labels, Flavor,
    ServerVersion,
};
pub use certs::TestCerts;
pub use client::{key_slot, ClusterConn, Target};
pub use cluster::{Cluster, ClusterOptions};
pub use fill::{fill_mixed, fill_strings, FillOptions, FillReport};
pub use load::MixedLoad;
pub use ports::{PortLease, BUS_PORT_OFFSET, PORT_MAX, PORT_MIN};
pub use proxy::Proxy;
pub use reshard::{
    add_master, del_node, migrate_slots_atomic, rebalance_to_empty, reshard, slot_migrations,
    slots_in_motion, slots_of, unsettled, wait_settled, SlotMigrationJob,
};
pub use server::{Server, ServerOptions, ServerTls};
pub use snapshot::{GroupState, KeyState, KeyValue, Score, Snapshot, StreamEntry, StreamState};
pub use stream_info::{ConsumerDetail, GroupDetail, PendingDetail, StreamDetail};

/// Re-export so tests use the same `redis` version as the kit.
pub use redis;
