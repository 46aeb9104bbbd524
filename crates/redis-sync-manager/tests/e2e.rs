//! The whole migration with the real binary: a 3×1 source cluster into a
//! 4-master target, with writes during the sync, checked by an independent
//! reader; the HTTP endpoints; per-shard logs; SIGTERM and a restart that
//! continues without a full sync.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, sigterm, status, wait_ready};

use rsm_testkit::{fill_mixed, Cluster, ClusterOptions, FillOptions, PortLease, Snapshot};
use serde_json::Value;

fn start_manager(
    source: &Cluster,
    target: &Cluster,
    logs: &Path,
    port: u16,
    extra: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The largest number of full-sync windows that overlap, from /status.
fn max_concurrent_full_syncs(v: &Value) -> usize {
    let mut events = Vec::new();
    for shard in v["shards"].as_array().unwrap() {
        for w in shard["full_sync_windows"].as_array().unwrap() {
            let (start, end) = (w[0].as_u64().unwrap(), w[1].as_u64().unwrap());
            events.push((start, 1i32));
            events.push((if end == 0 { u64::MAX } else { end }, -1));
        }
    }
    // Ends sort before starts at the same millisecond: touching windows do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

fn run_migration(parallel: usize) {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 4,
        replicas_per_master: 0,
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 300,
            ..Default::default()
        },
    );
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let parallel_flag = format!("--sync-parallel={parallel}");
    let mut child = start_manager(
        &source,
        &target,
        logs.path(),
        port.port(),
        &[&parallel_flag],
    );

    // Writes while the shards sync.
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 50,
            prefix: "during:".into(),
            seed: 2,
            ..Default::default()
        },
    );
    let v = wait_ready(&mut child, port.port(), logs.path());
    let shards = v["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let mut sources: Vec<String> = shards
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    let mut masters: Vec<String> = source.masters().iter().map(|m| m.addr()).collect();
    masters.sort();
    assert_eq!(sources, masters, "one shard per source master");
    let concurrent = max_concurrent_full_syncs(&v);
    assert!(
        concurrent <= parallel,
        "{concurrent} full syncs ran at once with --sync-parallel={parallel}"
    );

    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 20,
            prefix: "after:".into(),
            seed: 3,
            ..Default::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    wait_ready(&mut child, port.port(), logs.path());
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    // Ready blinks off while a write (or the source's PING every 10 s) is being applied:
    // read until it shows, a few seconds at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let m = http_get(port.port(), "/metrics").unwrap();
        if m.contains("rsm_ready_for_cutover 1") || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        metrics.contains("# TYPE rsm_keys_applied_total counter"),
        "{metrics}"
    );
    assert!(metrics.contains("rsm_ready_for_cutover 1"), "{metrics}");
    let page = http_get(port.port(), "/").unwrap();
    assert!(page.contains("<title>redis-sync-manager</title>"));

    sigterm(&mut child);
    for i in 0..3 {
        let log = logs.path().join(format!("redis-sync-manager.{i}.log"));
        let text =
            std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        assert!(
            text.contains("phase change"),
            "shard log {i} is missing its phases"
        );
    }
    assert!(logs.path().join("redis-sync-manager.log").exists());

    // Restart with the same flags: every shard continues from its checkpoint.
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 20,
            prefix: "offline:".into(),
            seed: 4,
            ..Default::default()
        },
    );
    let mut child = start_manager(
        &source,
        &target,
        logs.path(),
        port.port(),
        &[&parallel_flag],
    );
    let v = wait_ready(&mut child, port.port(), logs.path());
    for shard in v["shards"].as_array().unwrap() {
        assert_eq!(
            shard["full_syncs"], 0,
            "shard restarted with a full sync: {shard:#}"
        );
    }
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    sigterm(&mut child);
}

#[test]
fn cluster_to_bigger_cluster_one_full_sync_at_a_time() {
    run_migration(1);
}

#[test]
fn cluster_to_bigger_cluster_three_full_syncs_at_once() {
    run_migration(3);
}

/// `--sync-role=slave`, `--filterkey`, `--rewrite` and `--bigkeysize` reach
/// every shard: the replication links sit on the replicas, only matching keys
/// arrive, a key already in the target is replaced, and a hash far above the
/// big-key size lands whole.
#[test]
fn flags_reach_every_shard_and_links_sit_on_replicas() {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 100,
            prefix: "keep:".into(),
            ..Default::default()
        },
    );
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 100,
            prefix: "drop:".into(),
            seed: 9,
            ..Default::default()
        },
    );
    // A big hash (about 300 KB) on each shard's slots, and a stale copy of a key in the target.
    for tag in ["a", "b", "c", "d", "e", "f"] {
        let key = format!("keep:big:{{{tag}}}");
        let mut args: Vec<Vec<u8>> = vec![b"HSET".to_vec(), key.clone().into_bytes()];
        for i in 0..5000 {
            args.push(format!("field-{i}").into_bytes());
            args.push(format!("value-{i}-{}", "x".repeat(40)).into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        source.cmd_on_key(key.as_bytes(), &refs);
    }
    target.cmd_on_key(
        b"keep:str:1",
        &[b"SET", b"keep:str:1", b"stale value in the target"],
    );

    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(
        &source,
        &target,
        logs.path(),
        port.port(),
        &[
            "--sync-role=slave",
            "--filterkey=keep:",
            "--rewrite",
            "--bigkeysize=64kb",
            "--sync-parallel=3",
            "--verify-on-ready",
            // High enough not to slow the test; their own bound is tested in the engine's
            // rate_limits.rs. Here: they are taken, shared by the shards and shown.
            "--max-bandwidth=500",
            "--max-ops=1000000",
        ],
    );
    let v = wait_ready(&mut child, port.port(), logs.path());
    let limits = &v["limits"];
    assert_eq!(
        limits["snapshot_bytes"]["per_second"], 500_000_000,
        "{limits}"
    );
    assert_eq!(limits["target_ops"]["per_second"], 1_000_000, "{limits}");
    let received: u64 = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rdb_bytes_received"].as_u64().unwrap())
        .sum();
    assert!(
        limits["snapshot_bytes"]["total"].as_u64().unwrap() >= received && received > 0,
        "every shard's snapshot counted against the one limit: {limits}, {received} received"
    );
    assert!(
        limits["target_ops"]["total"].as_u64().unwrap() > 0,
        "{limits}"
    );

    // Every shard replicates from the replica, as INFO replication on the nodes says.
    let mut sources: Vec<String> = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    let mut replicas: Vec<String> = (0..3).map(|i| source.replicas_of(i)[0].addr()).collect();
    replicas.sort();
    assert_eq!(sources, replicas);
    for i in 0..3 {
        let replica = &source.replicas_of(i)[0];
        let links = replica
            .info_field("replication", "connected_slaves")
            .unwrap_or_default();
        assert_eq!(
            links,
            "1",
            "replica {} should serve exactly our link",
            replica.addr()
        );
        let master = &source.masters()[i];
        let links = master
            .info_field("replication", "connected_slaves")
            .unwrap_or_default();
        assert_eq!(
            links,
            "1",
            "master {} should serve only its own replica",
            master.addr()
        );
    }

    // Only keep:* arrived, the stale key was replaced, the big hashes are whole.
    let mut want = Snapshot::of(&source);
    want.keys.retain(|k, _| k.starts_with(b"keep:"));
    let got = Snapshot::of(&target);
    assert!(
        got.keys.keys().all(|k| k.starts_with(b"keep:")),
        "a key outside --filterkey arrived"
    );
    want.assert_same(&got, Duration::from_secs(5));

    // --verify-on-ready ran by itself and found the two sides equal.
    let deadline = Instant::now() + Duration::from_secs(90);
    let summary = loop {
        let v = status(port.port()).unwrap();
        if !v["last_verify"].is_null() {
            break v["last_verify"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "verify did not run after ready: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let report: Value = serde_json::from_str(&http_get(port.port(), "/verify").unwrap()).unwrap();
    assert_eq!(report["mode"], "full");
    // Redis 7.0 does not replicate a consumer group's entries-read to its
    // replicas (7.2+ does, with XGROUP SETID … ENTRIESREAD), so a sync from
    // 7.0 replicas carries what the replicas hold. That, and only that, is
    // what verify must find here (it compares with the masters).
    let counts = &report["counts"];
    for category in ["missing", "extra", "type", "ttl"] {
        assert_eq!(counts[category], 0, "{report:#}");
    }
    for sample in report["samples"].as_array().unwrap() {
        let detail = sample["detail"].as_str().unwrap();
        assert!(
            detail.contains("entries-read") && detail.contains("target null"),
            "{report:#}"
        );
    }
    assert_eq!(
        summary["equal"],
        Value::Bool(counts["value"] == 0),
        "{summary:#}"
    );
    assert!(report["source_keys"].as_u64().unwrap() >= 600, "{report:#}");
    sigterm(&mut child);
}

/// Issue 27 item 10: the tool announced its HTTP port to the source as the port its
/// replica listens on (`REPLCONF listening-port`), so the source's `INFO replication`
/// (and anything that reads it, like Sentinel) named a port that serves no Redis. It
/// announces 0: this replica serves no port at all.
#[test]
fn the_source_is_not_told_the_http_port_as_a_replica_port() {
    use rsm_testkit::{Server, ServerOptions};
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    source.cmd(&[b"SET", b"k", b"v"]);
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child =
        common::start_manager(&source.addr(), &target.addr(), logs.path(), port.port(), 1);
    wait_ready(&mut child, port.port(), logs.path());
    let slave0 = source
        .info_field("replication", "slave0")
        .unwrap_or_default();
    sigterm(&mut child);
    let announced = slave0
        .split(',')
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap_or_else(|| panic!("no replica in the source's INFO: {slave0:?}"));
    assert_eq!(announced, "0", "http port {}: {slave0}", port.port());
}
