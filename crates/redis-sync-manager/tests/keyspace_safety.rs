//! Names and resources the tool must not take for its own (issue 27), each found wrong on
//! real servers first:
//! - source keys under the tool's prefix `__rsm:` are refused before anything is written,
//!   and one written during the stream stops its shard instead of forging progress;
//! - `cleanup` and `verify` touch only keys the tool wrote, not a user's `__rsm:foo`;
//! - `--targetdb` puts every key the tool writes into that db, its own records too;
//! - source dbs merged into one target db by `--targetdb` conflict instead of overwriting;
//! - a source with dbs the target lacks, and a target that cannot take writes, are refused
//!   before any source fork (`sync_full` on the source stays 0) and before any write.

mod common;

use std::io::Read;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{set_in, sigterm, spawn_with as spawn, wait_ready};
use rsm_testkit::{
    fill_strings, key_slot, Cluster, ClusterOptions, MixedLoad, PortLease, Server, ServerOptions,
    Snapshot,
};

/// Wait for the manager to end by itself (60 s at most): its exit code and stderr.
fn wait_exit(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
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

/// The same as [`spawn`] then [`wait_exit`], for runs that must refuse to start.
fn refused(from: &str, target: &str, extra: &[&str]) -> String {
    let logs = tempfile::tempdir().unwrap();
    let (code, err) = wait_exit(spawn(from, target, logs.path(), extra));
    assert_eq!(code, Some(1), "expected exit 1, got {code:?}: {err}");
    err
}

/// Full syncs the node served (`INFO stats`): each is a fork of the source.
fn sync_full(node: &Server) -> u64 {
    node.info_field("stats", "sync_full")
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Keys in every db of `node`, from its own `INFO keyspace`.
fn keys_per_db(node: &Server) -> Vec<(u32, u64)> {
    let info: String = rsm_testkit::redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut node.conn())
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.split_once(':')?;
            let keys = rest
                .split(',')
                .next()?
                .strip_prefix("keys=")?
                .parse()
                .ok()?;
            Some((db.strip_prefix("db")?.parse().ok()?, keys))
        })
        .collect()
}

fn total_keys(nodes: &[Server]) -> u64 {
    nodes
        .iter()
        .flat_map(keys_per_db)
        .map(|(_, keys)| keys)
        .sum()
}

fn cluster(masters: usize) -> Cluster {
    Cluster::start(ClusterOptions {
        masters,
        replicas_per_master: 0,
        ..Default::default()
    })
}

fn get(node: &Server, db: u32, key: &str) -> Option<String> {
    let mut conn = node.conn();
    rsm_testkit::redis::cmd("SELECT")
        .arg(db)
        .query::<()>(&mut conn)
        .unwrap();
    rsm_testkit::redis::cmd("GET")
        .arg(key)
        .query(&mut conn)
        .unwrap()
}

#[test]
fn a_target_that_cannot_take_writes_is_refused_before_any_source_fork() {
    let source = cluster(3);
    fill_strings(&source, 300, "k:");

    // A standalone replica: every write gets READONLY.
    let upstream = Server::start(ServerOptions::default());
    let replica = Server::start(ServerOptions {
        extra_config: vec![("replicaof".into(), format!("127.0.0.1 {}", upstream.port()))],
        ..Default::default()
    });
    let err = refused(&source.seed_addr(), &replica.addr(), &[]);
    assert!(err.contains("read-only replica"), "{err}");
    assert!(err.contains(&upstream.addr()), "names its master: {err}");

    // min-replicas-to-write with no replica: every write gets NOREPLICAS.
    let lonely = Server::start(ServerOptions {
        extra_config: vec![("min-replicas-to-write".into(), "1".into())],
        ..Default::default()
    });
    let err = refused(&source.seed_addr(), &lonely.addr(), &[]);
    assert!(err.contains("min-replicas-to-write"), "{err}");

    // Full under noeviction: every write gets OOM.
    let full = Server::start(ServerOptions::default());
    let used: u64 = full
        .info_field("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    full.cmd_str("CONFIG SET maxmemory-policy noeviction");
    full.cmd_str(&format!("CONFIG SET maxmemory {}", used / 2));
    let err = refused(&source.seed_addr(), &full.addr(), &[]);
    assert!(err.contains("maxmemory"), "{err}");

    for m in source.masters() {
        assert_eq!(sync_full(m), 0, "{} forked for a doomed sync", m.addr());
    }
    assert_eq!(total_keys(std::slice::from_ref(&upstream)), 0);
}

#[test]
fn a_multi_db_source_into_a_cluster_target_is_refused_before_anything_is_written() {
    let source = Server::start(ServerOptions::default());
    for db in [0u32, 1, 5] {
        let mut conn = source.conn();
        rsm_testkit::redis::cmd("SELECT")
            .arg(db)
            .query::<()>(&mut conn)
            .unwrap();
        for i in 0..200 {
            let key = if db == 0 {
                format!("only0:{i}")
            } else {
                format!("db{db}:{i}")
            };
            rsm_testkit::redis::cmd("SET")
                .arg(key)
                .arg(i)
                .query::<()>(&mut conn)
                .unwrap();
        }
    }
    let target = cluster(3);
    let err = refused(&source.addr(), &target.seed_addr(), &[]);
    assert!(err.contains("db 1, 5"), "names the dbs: {err}");
    assert!(err.contains("--targetdb"), "names a way out: {err}");
    assert_eq!(total_keys(target.masters()), 0, "written before refusing");
    assert_eq!(sync_full(&source), 0, "the source forked for a doomed sync");

    // A filter that only db 0's keys pass has nothing in dbs 1 and 5 to refuse.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--filterkey=only0:")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn source_keys_under_the_reserved_prefix_are_refused_before_anything_is_written() {
    let source = cluster(3);
    fill_strings(&source, 300, "k:");
    for key in [
        "__rsm:sync:{0-5460}",
        "__rsm:at:{x}",
        "__rsm:foo",
        "__rsm:durable:{a}",
    ] {
        source.cmd_on_key(key.as_bytes(), &[b"SET", key.as_bytes(), b"users-own"]);
    }
    let target = cluster(3);
    let err = refused(&source.seed_addr(), &target.seed_addr(), &[]);
    assert!(err.contains("4 key(s)"), "{err}");
    for key in ["__rsm:sync:{0-5460}", "__rsm:foo", "__rsm:durable:{a}"] {
        assert!(err.contains(key), "does not name {key}: {err}");
    }
    assert_eq!(total_keys(target.masters()), 0, "written before refusing");
    for m in source.masters() {
        assert_eq!(sync_full(m), 0);
    }
    // Left out by --filterkey, they are no concern.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--filterkey=k:")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hash tag the tool's slot markers use for `slot`: the smallest decimal number that
/// hashes there (as documented in the README's "Exactly once").
fn marker_tag(slot: u16) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|t| key_slot(t.as_bytes()) == slot)
        .unwrap()
}

#[test]
fn a_source_write_under_the_reserved_prefix_stops_the_shard_and_forges_nothing() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    fill_strings(&source, 500, "k:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let port_arg = format!("--httpport={}", port.port());
    let mut child = spawn(&source.addr(), &target.addr(), logs.path(), &[&port_arg]);
    wait_ready(&mut child, port.port(), logs.path());

    // A counter written once, so its slot has a marker of this sync.
    source.cmd_str("INCR counter1");
    std::thread::sleep(Duration::from_millis(1500));
    let marker = format!("__rsm:at:{{{}}}", marker_tag(key_slot(b"counter1")));
    let real = get(&target, 0, &marker).expect("the counter's slot has a marker");
    let sync_id = real.split(':').next().unwrap().to_string();

    // A forged marker from the source, then five more INCRs it would hide.
    let forged = format!("{sync_id}:99999999");
    source.cmd(&[b"SET", marker.as_bytes(), forged.as_bytes()]);
    for _ in 0..5 {
        source.cmd_str("INCR counter1");
    }
    // Its only shard stopped, the manager ends by itself.
    let (code, err) = wait_exit(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("reserved prefix"), "{err}");
    assert!(err.contains(&marker), "names the key: {err}");
    assert_ne!(
        get(&target, 0, &marker),
        Some(forged),
        "the marker was forged"
    );
    assert_eq!(
        get(&target, 0, "counter1").as_deref(),
        Some("1"),
        "a write after the stop was applied"
    );
}

#[test]
fn cleanup_and_verify_leave_the_users_own_keys_under_the_prefix_alone() {
    let source = cluster(3);
    let target = cluster(3);
    fill_strings(&source, 2_000, "base:");
    // The target's own data, under names that merely start like the tool's.
    let users = ["__rsm:foo", "__rsm:durable:{a}", "__rsm:at:{x}"];
    for key in users {
        target.cmd_on_key(key.as_bytes(), &[b"SET", key.as_bytes(), b"users-own"]);
    }
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = common::start_manager(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        3,
    );
    wait_ready(&mut child, port.port(), logs.path());
    let load = MixedLoad::on_cluster(&source, 200);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(load.stop() > 200, "too little load");
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);

    // verify sees the target's extra keys for what they are.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg("verify")
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--mode=full")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify called them equal: {stdout}");
    assert!(stdout.contains("__rsm:foo"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg("cleanup")
        .arg(format!("--target={}", target.seed_addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut left: Vec<String> = Vec::new();
    for m in target.masters() {
        let keys: Vec<String> = rsm_testkit::redis::cmd("KEYS")
            .arg("__rsm:*")
            .query(&mut m.conn())
            .unwrap();
        left.extend(keys);
    }
    left.sort();
    let mut expected: Vec<String> = users.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(
        left, expected,
        "cleanup removed the user's keys or left its own"
    );
    for key in users {
        let v = target.cmd_on_key(key.as_bytes(), &[b"GET", key.as_bytes()]);
        assert_eq!(
            v,
            rsm_testkit::redis::Value::BulkString(b"users-own".to_vec())
        );
        target.cmd_on_key(key.as_bytes(), &[b"DEL", key.as_bytes()]);
    }
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
}

#[test]
fn targetdb_keeps_everything_the_tool_writes_in_that_db() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    // A replica makes the tool check durability with a scratch key of its own.
    let _replica = Server::start(ServerOptions {
        extra_config: vec![("replicaof".into(), format!("127.0.0.1 {}", target.port()))],
        ..Default::default()
    });
    fill_strings(&source, 2_000, "k:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let port_arg = format!("--httpport={}", port.port());
    let mut child = spawn(
        &source.addr(),
        &target.addr(),
        logs.path(),
        &[&port_arg, "--targetdb=3"],
    );
    wait_ready(&mut child, port.port(), logs.path());
    let load = MixedLoad::on_server(&source, 50);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(load.stop() > 100, "too little load");
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);

    Snapshot::of_db(&source, 0).assert_same(&Snapshot::of_db(&target, 3), Duration::from_secs(10));
    let dbs = keys_per_db(&target);
    assert!(
        dbs.iter().all(|(db, _)| *db == 3),
        "the tool wrote into other dbs of the target: {dbs:?}"
    );
}

/// `SET key value` in `db` of `node`.

#[test]
fn source_dbs_merged_by_targetdb_are_a_conflict_not_a_silent_overwrite() {
    let source = Server::start(ServerOptions::default());
    fill_strings(&source, 1_000, "k:");
    for db in [0u32, 1, 5] {
        set_in(&source, db, "dup", &format!("from db {db}"));
        set_in(&source, db, &format!("own:{db}"), "x");
    }

    // The default policy: the shard stops naming the key and the dbs, the first value stays.
    let target = Server::start(ServerOptions::default());
    let logs = tempfile::tempdir().unwrap();
    let (code, err) = wait_exit(spawn(
        &source.addr(),
        &target.addr(),
        logs.path(),
        &["--targetdb=0"],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\"dup\""), "names the key: {err}");
    assert!(err.contains("source dbs 0, 1"), "names the dbs: {err}");
    assert_eq!(get(&target, 0, "dup").as_deref(), Some("from db 0"));

    // --rewrite: merging is what the operator asked for; the later db's value wins, under
    // a write load on db 0.
    let merged = Server::start(ServerOptions::default());
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let port_arg = format!("--httpport={}", port.port());
    let mut child = spawn(
        &source.addr(),
        &merged.addr(),
        logs.path(),
        &[&port_arg, "--targetdb=0", "--rewrite"],
    );
    wait_ready(&mut child, port.port(), logs.path());
    let load = MixedLoad::on_server(&source, 50);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(load.stop() > 50, "too little load");
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);
    let mut expected = Snapshot::default();
    for db in [0u32, 1, 5] {
        expected.keys.extend(Snapshot::of_db(&source, db).keys);
    }
    expected.assert_same(&Snapshot::of_db(&merged, 0), Duration::from_secs(10));
    assert_eq!(get(&merged, 0, "dup").as_deref(), Some("from db 5"));
}
