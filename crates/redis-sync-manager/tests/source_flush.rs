//! A source `FLUSHALL`/`FLUSHDB` during the sync (issue 27, item 9): each shard's flush
//! removes exactly what that shard owns in the target, in order with its other writes,
//! never the tool's progress and never twice; a `FUNCTION LOAD` applied again after a
//! kill does not stop the shard. Every test runs the mixed write load (INCR, RPUSH/LPOP,
//! XADD, HINCRBY, APPEND, RENAME) and ends in a compare of every key with the servers'
//! own commands.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{sigterm, streaming, total, wait_ready, wait_status};
use rsm_testkit::{
    fill_strings, Cluster, ClusterOptions, MixedLoad, PortLease, Server, ServerOptions, Snapshot,
};

fn spawn(from: &str, target: &str, logs: &Path, port: u16, extra: &[&str]) -> Child {
    let port = format!("--httpport={port}");
    let mut flags = vec![port.as_str(), "--sync-parallel=3"];
    flags.extend_from_slice(extra);
    common::spawn_with(from, target, logs, &flags)
}

/// A 3-master source (with a replica each) whose backlog outlives the restarts.
fn source() -> Cluster {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    for m in source.masters() {
        m.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    }
    source
}

fn target() -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    })
}

fn flushall(cluster: &Cluster) {
    for m in cluster.masters() {
        m.cmd(&[b"FLUSHALL"]);
    }
}

#[test]
fn flushall_on_every_source_master_then_sigkill_and_the_same_command_is_exact() {
    let (source, target) = (source(), target());
    fill_strings(&source, 3_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let (from, to) = (source.seed_addr(), target.seed_addr());
    let mut child = spawn(&from, &to, logs.path(), port.port(), &[]);
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1000));
        flushall(&source);
        std::thread::sleep(Duration::from_millis(400));
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn(&from, &to, logs.path(), port.port(), &[]);
        let v = wait_status(
            &mut child,
            port.port(),
            logs.path(),
            "streaming again",
            streaming,
        );
        assert_eq!(
            total(&v, "full_syncs"),
            0,
            "restart {round} copied the shards again: {v:#}"
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(load.stop() > 300, "too little load");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);
}

#[test]
fn flushall_twice_under_the_load_without_a_kill_is_exact() {
    let (source, target) = (source(), target());
    fill_strings(&source, 3_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = spawn(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        &[],
    );
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(800));
        flushall(&source);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(load.stop() > 300, "too little load");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    // The flushes removed no progress record: the same command continues.
    sigterm(&mut child);
    let mut child = spawn(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        &[],
    );
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "full_syncs"), 0, "copied again: {v:#}");
    sigterm(&mut child);
}

#[test]
fn flushall_with_filterkey_spares_the_targets_other_keys() {
    let (source, target) = (source(), target());
    fill_strings(&source, 2_000, "base:");
    fill_strings(&target, 500, "other:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    // The load's keys start with "{g".
    let mut child = spawn(
        &source.seed_addr(),
        &target.seed_addr(),
        logs.path(),
        port.port(),
        &["--filterkey=base:|{g"],
    );
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    std::thread::sleep(Duration::from_millis(1000));
    flushall(&source);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(load.stop() > 300, "too little load");
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);

    let mut got = Snapshot::of(&target);
    let others = got.keys.len();
    got.keys.retain(|k, _| !k.starts_with(b"other:"));
    assert_eq!(
        others - got.keys.len(),
        500,
        "the target's own keys were erased"
    );
    Snapshot::of(&source).assert_same(&got, Duration::from_secs(10));
}

fn select_set(node: &Server, db: u32, key: &str) {
    common::set_in(node, db, key, "v");
}

#[test]
fn flushdb_empties_only_that_db_and_what_the_filter_keeps() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    for i in 0..300 {
        select_set(&source, 0, &format!("base:{i}"));
        select_set(&source, 1, &format!("base:{i}"));
        // The target's own keys in db 1, which the filter never syncs.
        select_set(&target, 1, &format!("other:{i}"));
    }
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = spawn(
        &source.addr(),
        &target.addr(),
        logs.path(),
        port.port(),
        &["--filterkey=base:|{g"],
    );
    wait_ready(&mut child, port.port(), logs.path());
    let load = MixedLoad::on_server(&source, 50);
    std::thread::sleep(Duration::from_millis(800));
    let mut conn = source.conn();
    rsm_testkit::redis::cmd("SELECT")
        .arg(1)
        .query::<()>(&mut conn)
        .unwrap();
    rsm_testkit::redis::cmd("FLUSHDB")
        .query::<()>(&mut conn)
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(load.stop() > 50, "too little load");
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);

    Snapshot::of_db(&source, 0).assert_same(&Snapshot::of_db(&target, 0), Duration::from_secs(10));
    let db1 = Snapshot::of_db(&target, 1);
    assert_eq!(
        db1.keys.len(),
        300,
        "db 1 should hold the target's own 300 keys only"
    );
    assert!(db1.keys.keys().all(|k| k.starts_with(b"other:")));
}

#[test]
fn function_load_then_sigkill_and_the_same_command_continues() {
    let (source, target) = (source(), target());
    fill_strings(&source, 1_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let (from, to) = (source.seed_addr(), target.seed_addr());
    let mut child = spawn(&from, &to, logs.path(), port.port(), &[]);
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    std::thread::sleep(Duration::from_millis(800));
    let library =
        "#!lua name=rsmtest\nredis.register_function('rsmtest_one', function() return 1 end)";
    for m in source.masters() {
        m.cmd(&[b"FUNCTION", b"LOAD", library.as_bytes()]);
    }
    // Killed before a floor can pass the FUNCTION LOAD: the restart applies it again.
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    child = spawn(&from, &to, logs.path(), port.port(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(load.stop() > 100, "too little load");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "full_syncs"), 0, "copied again: {v:#}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    for m in target.masters() {
        let got = m.cmd(&[b"FCALL", b"rsmtest_one", b"0"]);
        assert_eq!(got, rsm_testkit::redis::Value::Int(1), "{}", m.addr());
    }
    sigterm(&mut child);
}
