//! Numbered databases in cluster mode (issue 29, item 4), on real Valkey 9.1 clusters with
//! `cluster-databases 16`:
//! - every db of the source cluster lands in the same db of a target cluster that has
//!   them, in the snapshot and in the stream (`SELECT` in the replication stream);
//! - a target cluster without those dbs (Redis 7.0) is refused before any source fork and
//!   before any write, in one line naming the dbs and the ways out;
//! - `--targetdb=0` merges every source db into the target's db 0.
//!
//! Found on main first: keys of db 1 and 5 were refused with "which the target does not
//! have", though `SELECT 1` works on the target.

mod common;

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{sigterm, spawn_with, start_manager, wait_ready, wait_status};
use rsm_testkit::redis::{self, Value};
use rsm_testkit::{test_server_bin, Cluster, ClusterOptions, PortLease, Server, Snapshot};

const VALKEY: &str = "valkey-9.1.2";
/// `cluster-databases` of the Valkey clusters here.
const DBS: u32 = 16;
/// The dbs the source holds keys in.
const USED: [u32; 3] = [0, 1, 5];
/// Keys of each kind per db: small, the point is where they land.
const PER_KIND: usize = 20;
const TTL_TOLERANCE: Duration = Duration::from_secs(3);

/// A Valkey 9.1 cluster of three masters with `cluster-databases 16`.
fn valkey_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 3,
        bin: Some(test_server_bin(VALKEY)),
        extra_config: vec![("cluster-databases".into(), DBS.to_string())],
        ..Default::default()
    })
}

/// Runs `args` in `db` on the master that owns `key`.
fn in_db(cluster: &Cluster, db: u32, key: &str, args: &[&str]) -> Value {
    let mut conn = cluster.conn_for_key(key.as_bytes());
    redis::cmd("SELECT").arg(db).query::<()>(&mut conn).unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("{args:?} in db {db}: {e}"))
}

/// Strings, lists and hashes in `db`, a third of each with a TTL, and one key name
/// (`same`) present in every db with that db's own value: merged into one db it would
/// be one key.
fn fill_db(cluster: &Cluster, db: u32) {
    for i in 0..PER_KIND {
        let (s, l, h) = (
            format!("s:{db}:{i}"),
            format!("l:{db}:{i}"),
            format!("h:{db}:{i}"),
        );
        in_db(cluster, db, &s, &["SET", &s, &format!("v{db}-{i}")]);
        in_db(cluster, db, &l, &["RPUSH", &l, "a", "b", &i.to_string()]);
        in_db(
            cluster,
            db,
            &h,
            &["HSET", &h, "f", &db.to_string(), "g", "x"],
        );
        if i % 3 == 0 {
            for k in [&s, &l, &h] {
                in_db(cluster, db, k, &["PEXPIRE", k, "600000"]);
            }
        }
    }
    in_db(cluster, db, "same", &["SET", "same", &format!("db{db}")]);
}

/// Writes while the manager streams, non-idempotent ones among them (applied twice they
/// would show).
fn stream_writes(cluster: &Cluster, db: u32) {
    for i in 0..10 {
        in_db(cluster, db, "counter", &["INCR", "counter"]);
        in_db(cluster, db, "queue", &["RPUSH", "queue", &i.to_string()]);
    }
    in_db(
        cluster,
        db,
        "late",
        &["SET", "late", &db.to_string(), "PX", "600000"],
    );
    in_db(cluster, db, "s:x:0", &["SET", "s:x:0", "streamed"]);
    let gone = format!("s:{db}:1");
    in_db(cluster, db, &gone, &["DEL", &gone]);
}

/// Where `source` and `target` differ, db by db over every db a Valkey cluster here has.
fn differences(source: &Cluster, target: &Cluster) -> Vec<String> {
    (0..DBS)
        .flat_map(|db| {
            Snapshot::of_db(source, db)
                .diff(&Snapshot::of_db(target, db), TTL_TOLERANCE)
                .into_iter()
                .map(move |d| format!("db {db}: {d}"))
        })
        .collect()
}

/// Until the two agree in every db (60 s at most); the differences left otherwise.
fn wait_equal(source: &Cluster, target: &Cluster) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let diffs = differences(source, target);
        if diffs.is_empty() || Instant::now() > deadline {
            return diffs;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Wait for the manager to end by itself (60 s at most): its exit code and stderr.
fn wait_exit(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).unwrap();
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the manager did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Full syncs the node served (`INFO stats`): each is a fork of the source.
fn sync_full(node: &Server) -> u64 {
    node.info_field("stats", "sync_full")
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Keys in every db of every master of `cluster` (`DBSIZE` in each).
fn total_keys(cluster: &Cluster, dbs: u32) -> u64 {
    let mut total = 0;
    for m in cluster.masters() {
        let mut conn = m.conn();
        for db in 0..dbs {
            redis::cmd("SELECT").arg(db).query::<()>(&mut conn).unwrap();
            total += redis::cmd("DBSIZE").query::<u64>(&mut conn).unwrap();
        }
    }
    total
}

fn get(cluster: &Cluster, db: u32, key: &str) -> Option<String> {
    match in_db(cluster, db, key, &["GET", key]) {
        Value::BulkString(b) => Some(String::from_utf8(b).unwrap()),
        _ => None,
    }
}

#[test]
fn every_db_of_a_valkey_cluster_reaches_the_same_db_of_the_target_cluster() {
    let source = valkey_cluster();
    let target = valkey_cluster();
    for db in USED {
        fill_db(&source, db);
    }
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        3,
    );
    wait_ready(&mut child, port.port(), logs.path());
    for db in USED {
        stream_writes(&source, db);
    }
    let diffs = wait_equal(&source, &target);
    assert!(diffs.is_empty(), "source and target differ: {diffs:#?}");
    wait_ready(&mut child, port.port(), logs.path());
    // Each db its own: not merged, not dropped, each write applied once.
    for db in USED {
        assert_eq!(get(&target, db, "same"), Some(format!("db{db}")));
        assert_eq!(get(&target, db, "counter").as_deref(), Some("10"));
        assert!(Snapshot::of_db(&target, db).len() > 3 * PER_KIND);
    }
    sigterm(&mut child);

    // `verify` walks every db of both clusters: equal, then a value changed in db 5 only
    // is found there.
    let all: usize = USED
        .iter()
        .map(|db| Snapshot::of_db(&source, *db).len())
        .sum();
    let report = verify(&source, &target, 0);
    assert_eq!(report["source_keys"], all as u64, "{report:#}");
    in_db(&target, 5, "s:5:2", &["SET", "s:5:2", "changed"]);
    let report = verify(&source, &target, 1);
    let samples = report["samples"].as_array().cloned().unwrap_or_default();
    assert_eq!(samples.len(), 1, "{report:#}");
    assert_eq!(
        (&samples[0]["key"], &samples[0]["db"]),
        (&"s:5:2".into(), &5.into())
    );
}

/// `redis-sync-manager verify` from `source` to `target`: it must exit with `code`; its
/// JSON report.
fn verify(source: &Cluster, target: &Cluster, code: i32) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg("verify")
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--mode=full")
        .arg(format!("--report={}", report.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[test]
fn a_target_cluster_without_the_dbs_is_refused_before_any_fork_or_write() {
    let source = valkey_cluster();
    for db in USED {
        fill_db(&source, db);
    }
    // Redis 7.0: a cluster of db 0 only.
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        ..Default::default()
    });
    let logs = tempfile::tempdir().unwrap();
    let (code, err) = wait_exit(spawn_with(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        &[],
    ));
    assert!(matches!(code, Some(1 | 2)), "exit {code:?}: {err}");
    let line = err
        .lines()
        .find(|l| l.contains("db 1, 5"))
        .unwrap_or_else(|| panic!("no line names the dbs: {err}"));
    assert!(line.contains("--targetdb=0"), "{line}");
    assert!(line.contains("cluster-databases"), "{line}");
    assert_eq!(total_keys(&target, 1), 0, "written before refusing");
    for m in source.masters() {
        assert_eq!(sync_full(m), 0, "{} forked for a doomed sync", m.addr());
    }

    // Keys in db 0 only, but room for 16: a stream write to db 1 could come any time.
    for m in source.masters() {
        let mut conn = m.conn();
        for db in [1, 5] {
            redis::cmd("SELECT").arg(db).query::<()>(&mut conn).unwrap();
            redis::cmd("FLUSHDB").query::<()>(&mut conn).unwrap();
        }
    }
    let (code, err) = wait_exit(spawn_with(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        &[],
    ));
    assert!(matches!(code, Some(1 | 2)), "exit {code:?}: {err}");
    assert!(err.contains("cluster-databases 16"), "{err}");
    assert!(err.contains("--targetdb=0"), "{err}");
    assert_eq!(total_keys(&target, 1), 0, "written before refusing");
    for m in source.masters() {
        assert_eq!(sync_full(m), 0, "{} forked for a doomed sync", m.addr());
    }
}

#[test]
fn targetdb_0_merges_every_db_of_a_valkey_cluster_into_db_0() {
    let source = valkey_cluster();
    let target = valkey_cluster();
    for db in [0, 1] {
        for i in 0..PER_KIND {
            let key = format!("k{db}:{i}");
            in_db(&source, db, &key, &["SET", &key, &format!("{db}-{i}")]);
        }
    }
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let port_arg = format!("--httpport={}", port.port());
    let mut child = spawn_with(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        &[&port_arg, "--targetdb=0"],
    );
    wait_ready(&mut child, port.port(), logs.path());
    for i in 0..10 {
        in_db(&source, 1, "counter1", &["INCR", "counter1"]);
        in_db(&source, 1, "q1", &["RPUSH", "q1", &i.to_string()]);
    }
    // The union of the source's dbs is the target's db 0; its db 1 stays empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    let diffs = loop {
        let mut want = Snapshot::of_db(&source, 0);
        want.keys.extend(Snapshot::of_db(&source, 1).keys);
        let diffs = want.diff(&Snapshot::of_db(&target, 0), TTL_TOLERANCE);
        if diffs.is_empty() || Instant::now() > deadline {
            break diffs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(diffs.is_empty(), "target db 0 is not the union: {diffs:#?}");
    assert_eq!(get(&target, 0, "counter1").as_deref(), Some("10"));
    assert!(Snapshot::of_db(&target, 1).is_empty(), "keys went to db 1");
    sigterm(&mut child);
}

/// A target whose only key in a shard's slots is in db 5 is not empty: taken for empty, its
/// copy would run with `--rewrite` implied and overwrite the operator's key without a
/// word (`CLUSTER COUNTKEYSINSLOT` counts the selected db only, and a fresh connection is
/// in db 0).
#[test]
fn a_target_key_in_another_db_is_the_operators_not_overwritten() {
    let source = valkey_cluster();
    let target = valkey_cluster();
    fill_db(&source, 5);
    let key = "s:5:3";
    in_db(&target, 5, key, &["SET", key, "operators-own"]);
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        3,
    );
    // The default conflict policy: the key's shard stops, naming it (the other shards
    // go on, so the manager keeps running).
    let failed = |s: &serde_json::Value| s["phase"] == "failed";
    let v = wait_status(
        &mut child,
        port.port(),
        logs.path(),
        "the shard fails",
        |v| v["shards"].as_array().is_some_and(|s| s.iter().any(failed)),
    );
    let shards = v["shards"].as_array().cloned().unwrap_or_default();
    let error = shards
        .iter()
        .find(|s| failed(s))
        .map(|s| s["last_error"].to_string());
    assert!(
        error.as_ref().is_some_and(|e| e.contains(key)),
        "names the key: {v:#}"
    );
    assert_eq!(get(&target, 5, key).as_deref(), Some("operators-own"));
    // Stopped, whatever it exits with: a shard failed.
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = wait_exit(child);
}
