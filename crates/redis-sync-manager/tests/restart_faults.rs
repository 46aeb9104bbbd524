//! The manager killed (SIGKILL) in the middle of a full sync and started again with the
//! same command: no checkpoint may claim the half-loaded snapshot, and the second copy
//! must meet the first copy's keys as its own (the target's sync marker), not as a
//! conflict — ending with a target equal to the source, keys deleted meanwhile included.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{sigterm, wait_ready, wait_status};
use rsm_testkit::{key_slot, redis, Cluster, ClusterOptions, PortLease, Snapshot};
use serde_json::Value;

fn start_manager(source: &Cluster, target: &Cluster, logs: &Path, port: u16) -> Child {
    common::start_manager(&source.seed_addr(), &target.seed_addr(), logs, port, 2)
}

/// `n` keys of `size` random bytes, pipelined to the master of each key's slot.
fn fill_random(cluster: &Cluster, n: usize, size: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let masters = cluster.masters().len();
    let mut conns: Vec<_> = cluster.masters().iter().map(|m| m.conn()).collect();
    let mut pipes: Vec<redis::Pipeline> = (0..masters).map(|_| redis::pipe()).collect();
    let mut queued = vec![0usize; masters];
    for i in 0..n {
        let key = format!("k:{i:07}");
        let slot = key_slot(key.as_bytes());
        let m = (0..masters)
            .find(|&m| {
                let (a, b) = cluster.master_slot_range(m);
                (a..=b).contains(&slot)
            })
            .unwrap();
        let value: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        pipes[m].cmd("SET").arg(key).arg(value).ignore();
        queued[m] += 1;
        if queued[m] == 1000 {
            let _: () = pipes[m].query(&mut conns[m]).unwrap();
            pipes[m] = redis::pipe();
            queued[m] = 0;
        }
    }
    for m in 0..masters {
        if queued[m] > 0 {
            let _: () = pipes[m].query(&mut conns[m]).unwrap();
        }
    }
}

fn dbsize(cluster: &Cluster) -> i64 {
    cluster
        .masters()
        .iter()
        .map(|m| {
            let n: i64 = redis::cmd("DBSIZE").query(&mut m.conn()).unwrap();
            n
        })
        .sum()
}

#[test]
fn sigkill_during_the_snapshot_then_the_same_command_converges() {
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    });
    fill_random(&source, 150_000, 200);
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();

    let mut child = start_manager(&source, &target, logs.path(), port.port());
    wait_status(
        &mut child,
        port.port(),
        logs.path(),
        "a snapshot partly loaded",
        |v: &Value| {
            v["shards"].as_array().is_some_and(|shards| {
                shards
                    .iter()
                    .any(|s| s["phase"] == "loading_rdb" && s["keys_applied"].as_u64() > Some(0))
            })
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = dbsize(&target);
    assert!(partial > 0, "the first run wrote nothing before the kill");
    assert!(
        (partial as usize) < 150_000 + 2,
        "the kill came too late to interrupt a snapshot ({partial} keys)"
    );
    let state = logs.path().join("state");
    let checkpoints: Vec<String> = std::fs::read_dir(&state)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".checkpoint"))
                .collect()
        })
        .unwrap_or_default();
    // A shard whose snapshot had finished may have one; not both of them.
    assert!(
        checkpoints.len() < 2,
        "checkpoints for half-loaded snapshots: {checkpoints:?}"
    );

    // Meanwhile on the source: keys the first copy may have written disappear, others change.
    let mut c = source.client();
    for i in 0..300 {
        let key = format!("k:{i:07}");
        c.cmd_on_key(key.as_bytes(), &[b"DEL", key.as_bytes()])
            .unwrap();
        let key = format!("k:{:07}", 1000 + i);
        c.cmd_on_key(key.as_bytes(), &[b"SET", key.as_bytes(), b"changed"])
            .unwrap();
    }

    let mut child = start_manager(&source, &target, logs.path(), port.port());
    let v = wait_ready(&mut child, port.port(), logs.path());
    for s in v["shards"].as_array().unwrap() {
        assert_eq!(s["keys_failed"], 0, "{s:#}");
    }
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    sigterm(&mut child);
}
