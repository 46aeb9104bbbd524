//! The manager against a source that changes under it: a failover of one
//! shard's master mid-stream is followed (PSYNC continues on the new master,
//! `/status` names it, `ready_for_cutover` comes back, the data converges),
//! and a slot set MIGRATING in the source shows up in `/status`
//! `topology_warnings`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, ready, sigterm, status, wait_status};

use rsm_testkit::{
    fill_mixed, Cluster, ClusterOptions, FillOptions, PortLease, Server, ServerOptions, Snapshot,
};
use serde_json::Value;

fn start_manager(source: &Cluster, target: &str, logs: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={target}"))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        // Read the topology often so the test does not wait long.
        .env("RSM_TOPOLOGY_INTERVAL_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn role(server: &Server) -> String {
    server.info_field("replication", "role").unwrap_or_default()
}

fn warnings(v: &Value) -> Vec<String> {
    v["topology_warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failover_is_followed_and_a_migrating_slot_is_reported() {
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 100,
            ..Default::default()
        },
    );
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(&source, &target.addr(), logs.path(), port.port());
    let v = wait_status(&mut child, port.port(), logs.path(), "ready", ready);
    assert_eq!(v["shards"].as_array().unwrap().len(), 2);
    assert!(warnings(&v).is_empty(), "{:?}", warnings(&v));

    // Shard 0's replica takes over while the manager streams.
    let old_master = &source.masters()[0];
    let new_master = &source.replicas_of(0)[0];
    new_master.cmd(&[b"CLUSTER", b"FAILOVER"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(new_master) != "master" || role(old_master) != "slave" {
        assert!(
            Instant::now() < deadline,
            "CLUSTER FAILOVER did not complete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 50,
            prefix: "after:".into(),
            seed: 7,
            ..Default::default()
        },
    );
    let moved = |v: &Value| {
        v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["source"] == Value::String(new_master.addr()))
    };
    let v = wait_status(
        &mut child,
        port.port(),
        logs.path(),
        "followed and ready",
        |v| moved(v) && ready(v),
    );
    // The engine's own clock of readiness restarts after the move; check the data.
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    for shard in v["shards"].as_array().unwrap() {
        assert_eq!(
            shard["full_syncs"], 1,
            "a shard did a second full sync: {shard:#}"
        );
    }
    let shard0 = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["planned_source"] == Value::String(old_master.addr()))
        .unwrap_or_else(|| panic!("no shard planned on {}: {v:#}", old_master.addr()));
    assert_eq!(shard0["source"], Value::String(new_master.addr()));
    assert_eq!(shard0["source_moves"].as_array().unwrap().len(), 1);
    // The watch saw the failover too (it may take a round to notice).
    let v = wait_status(
        &mut child,
        port.port(),
        logs.path(),
        "failover warning",
        |v| {
            warnings(v).iter().any(|w| {
                w.contains(&format!(
                    "changed from {} to {}",
                    old_master.addr(),
                    new_master.addr()
                ))
            })
        },
    );
    assert!(ready(&v) || moved(&v));

    // A slot of shard 1 starts moving to shard 0's new master.
    let (slot, _) = source.master_slot_range(1);
    let slot = slot.to_string();
    let ids = source.node_ids();
    let index_of = |s: &Server| {
        source
            .nodes()
            .iter()
            .position(|n| n.addr() == s.addr())
            .unwrap()
    };
    let from_id = &ids[index_of(&source.masters()[1])];
    let to_id = &ids[index_of(new_master)];
    new_master.cmd(&[
        b"CLUSTER",
        b"SETSLOT",
        slot.as_bytes(),
        b"IMPORTING",
        from_id.as_bytes(),
    ]);
    source.masters()[1].cmd(&[
        b"CLUSTER",
        b"SETSLOT",
        slot.as_bytes(),
        b"MIGRATING",
        to_id.as_bytes(),
    ]);
    let want = format!(
        "slots {slot} are migrating from {} to {}",
        source.masters()[1].addr(),
        new_master.addr()
    );
    let v = wait_status(
        &mut child,
        port.port(),
        logs.path(),
        "migration warning",
        |v| warnings(v).iter().any(|w| w.starts_with(&want)),
    );
    let metrics = http_get(port.port(), "/metrics").unwrap();
    assert!(
        !metrics.contains("rsm_topology_warnings 0"),
        "{metrics}\n{v:#}"
    );
    // While the slot is marked migrating, the run is not ready, and says why.
    let now = status(port.port()).unwrap();
    assert!(!ready(&now), "ready while slot {slot} migrates: {now:#}");
    let blocking = now["topology_blocking"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        blocking
            .iter()
            .any(|b| b.as_str().is_some_and(|b| b.contains("are migrating"))),
        "{now:#}"
    );
    // Back to stable: that is reported as well.
    for node in [new_master, &source.masters()[1]] {
        node.cmd(&[b"CLUSTER", b"SETSLOT", slot.as_bytes(), b"STABLE"]);
    }
    wait_status(&mut child, port.port(), logs.path(), "migration end", |v| {
        warnings(v)
            .iter()
            .any(|w| w.starts_with("no slot is migrating in the source any more"))
    });
    let log = std::fs::read_to_string(logs.path().join("redis-sync-manager.log")).unwrap();
    assert!(
        log.contains("TOPOLOGY: slots"),
        "manager log lacks the warning"
    );
    sigterm(&mut child);
}
