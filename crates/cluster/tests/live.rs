//! `rsm-cluster` against real servers started by the test kit: the slot function against
//! `CLUSTER KEYSLOT`, and topology parsing / pre-flight checks against live clusters.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rsm_cluster::{
    key_slot, parse_cluster_nodes, Node, PreflightError, Slot, SlotMap, SlotRange, Topology,
};
use rsm_testkit::redis::{self, Value};
use rsm_testkit::{
    test_server_bin, test_server_labels, Cluster, ClusterOptions, Server, ServerOptions,
};

fn text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b).expect("CLUSTER NODES is text"),
        Value::VerbatimString { text, .. } => text,
        other => panic!("expected a string reply, got {other:?}"),
    }
}

fn nodes_of(s: &Server) -> Vec<Node> {
    let t = text(s.cmd(&[b"CLUSTER", b"NODES"]));
    parse_cluster_nodes(&t).unwrap_or_else(|e| panic!("{e}\n{t}"))
}

/// Every master's view, as the manager gathers them.
fn views(c: &Cluster) -> Vec<Vec<Node>> {
    c.masters().iter().map(nodes_of).collect()
}

#[test]
fn key_slot_matches_cluster_keyslot_on_random_binary_keys() {
    let s = Server::start(ServerOptions {
        cluster: true,
        ..Default::default()
    });
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut keys: Vec<Vec<u8>> = (0..10_000)
        .map(|_| {
            let len = rng.random_range(0..64);
            (0..len)
                .map(|_| match rng.random_range(0..10) {
                    // Plenty of braces so hash tags of every shape occur.
                    0 => b'{',
                    1 => b'}',
                    _ => rng.random(),
                })
                .collect()
        })
        .collect();
    // Plus the reference vectors and some edge shapes.
    for k in [
        &b""[..],
        b"{",
        b"}",
        b"{}",
        b"{}}",
        b"{{}}",
        b"a{b}c",
        b"foo{}{bar}",
        b"\x00{\xff}",
    ] {
        keys.push(k.to_vec());
    }
    let mut conn = s.conn();
    for chunk in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("CLUSTER").arg("KEYSLOT").arg(k.as_slice());
        }
        let slots: Vec<u16> = p.query(&mut conn).expect("pipelined CLUSTER KEYSLOT");
        for (k, server) in chunk.iter().zip(slots) {
            assert_eq!(
                key_slot(k).get(),
                server,
                "key {:?}: ours {} vs CLUSTER KEYSLOT {server}",
                k.escape_ascii().to_string(),
                key_slot(k)
            );
        }
    }
}

/// Checks a settled cluster of `masters` × `replicas` against what the kit built.
fn check_live_topology(c: &Cluster, masters: usize, replicas: usize) {
    let t = Topology::from_views(views(c));
    assert_eq!(t.shards.len(), masters, "{t:#?}");
    assert!(t.empty_masters.is_empty() && t.orphan_replicas.is_empty());
    for (i, shard) in t.shards.iter().enumerate() {
        assert_eq!(
            shard.master.id.as_str(),
            c.node_id(i),
            "shard {i} in slot order"
        );
        assert_eq!(shard.master.addr.endpoint(""), c.masters()[i].addr());
        let (a, b) = c.master_slot_range(i);
        let range = SlotRange::new(Slot::new(a).unwrap(), Slot::new(b).unwrap()).unwrap();
        assert_eq!(shard.slots, vec![range]);
        assert_eq!(shard.replicas.len(), replicas);
        for (r, node) in shard.replicas.iter().zip(c.replicas_of(i)) {
            assert_eq!(r.addr.endpoint(""), node.addr());
            assert_eq!(r.master_id.as_ref().map(|m| m.as_str()), Some(c.node_id(i)));
        }
    }
    assert_eq!(t.preflight(), vec![], "a settled cluster passes pre-flight");

    // The routing table agrees with the servers for a few keys.
    let map = SlotMap::from_nodes(&nodes_of(&c.nodes()[0]), "127.0.0.1");
    assert!(map.is_complete());
    for key in [&b"foo"[..], b"bar", b"{user1000}.following", b"\xff\x00"] {
        let owner = map.owner_for_key(key).expect("owned");
        let mut conn = c.conn_for_key(key);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        assert_eq!(slot, key_slot(key).get());
        let (a, b) = c.master_slot_range(
            c.masters()
                .iter()
                .position(|m| m.addr() == owner.addr)
                .expect("owner is a master"),
        );
        assert!((a..=b).contains(&slot));
    }
}

#[test]
fn live_3x1_cluster_parses_into_three_shards() {
    let c = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    check_live_topology(&c, 3, 1);
}

#[test]
fn migrating_slot_is_reported_with_both_ids() {
    let c = Cluster::start(ClusterOptions {
        masters: 3,
        ..Default::default()
    });
    let (src, dst) = (c.node_id(0).to_string(), c.node_id(1).to_string());
    let slot = b"100";
    c.masters()[1].cmd(&[b"CLUSTER", b"SETSLOT", slot, b"IMPORTING", src.as_bytes()]);
    c.masters()[0].cmd(&[b"CLUSTER", b"SETSLOT", slot, b"MIGRATING", dst.as_bytes()]);

    let expected = PreflightError::SlotMoving {
        slot: Slot::new(100).unwrap(),
        from: rsm_cluster::NodeId::new(&src).unwrap(),
        to: rsm_cluster::NodeId::new(&dst).unwrap(),
    };
    // Merged views: reported once, naming the slot and both node ids.
    let errs = Topology::from_views(views(&c)).preflight();
    assert_eq!(errs, vec![expected.clone()]);
    let msg = errs[0].to_string();
    assert!(
        msg.contains("slot 100") && msg.contains(&src) && msg.contains(&dst),
        "{msg}"
    );

    // Either end's own view shows it; a third master's view alone cannot.
    assert_eq!(
        Topology::from_nodes(nodes_of(&c.masters()[0])).preflight(),
        vec![expected.clone()]
    );
    assert_eq!(
        Topology::from_nodes(nodes_of(&c.masters()[1])).preflight(),
        vec![expected]
    );
    assert_eq!(
        Topology::from_nodes(nodes_of(&c.masters()[2])).preflight(),
        vec![]
    );

    // Back to stable: clean again.
    for m in &c.masters()[..2] {
        m.cmd(&[b"CLUSTER", b"SETSLOT", slot, b"STABLE"]);
    }
    assert_eq!(Topology::from_views(views(&c)).preflight(), vec![]);
}

#[test]
fn unassigned_slots_are_reported() {
    let c = Cluster::start(ClusterOptions {
        masters: 2,
        extra_config: vec![("cluster-require-full-coverage".into(), "no".into())],
        ..Default::default()
    });
    c.masters()[1].cmd(&[b"CLUSTER", b"DELSLOTS", b"16383"]);
    // Gossip may lag; the node's own view is enough for this check.
    let errs = Topology::from_views(views(&c)).preflight();
    assert_eq!(
        errs,
        vec![PreflightError::UncoveredSlots {
            ranges: vec![SlotRange::single(Slot::MAX)]
        }]
    );
}

/// Every installed version of the matrix (`.test-servers`): parse a live 2×1 cluster.
/// Opt-in: `cargo test -p rsm-cluster --test live -- --ignored`.
#[test]
#[ignore = "version matrix: needs .test-servers (shared/tools/install-test-servers.sh)"]
fn live_topology_on_every_installed_version() {
    let labels = test_server_labels();
    assert!(
        !labels.is_empty(),
        "no test servers installed; run shared/tools/install-test-servers.sh .test-servers"
    );
    for label in labels {
        let bin: PathBuf = test_server_bin(&label);
        let c = Cluster::start(ClusterOptions {
            masters: 2,
            replicas_per_master: 1,
            bin: Some(bin),
            ..Default::default()
        });
        check_live_topology(&c, 2, 1);
        eprintln!("{label}: ok");
    }
}
