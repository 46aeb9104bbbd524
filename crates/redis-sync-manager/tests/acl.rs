//! Least privilege: the ACL rules the README gives for the source and the target users are
//! enough for a whole sync (snapshot, a stream with commands written exactly once,
//! verify), and a target user without one of them gets a message naming it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{sigterm, wait_ready};
use rsm_testkit::{fill_strings, Cluster, ClusterOptions, PortLease, Snapshot};

/// The rules of the README's "Least privilege" part, word for word.
const SOURCE_RULES: &str = "+psync +replconf +ping +info +cluster|nodes +command";
const TARGET_RULES: &str = "+@write +multi +exec +select +ping +info +exists +get +dump +scan +config|get +cluster|nodes +cluster|slots +cluster|shards +cluster|info +cluster|countkeysinslot +cluster|getkeysinslot +asking +smembers";

fn add_user(cluster: &Cluster, name: &str, rules: &str) {
    for node in cluster.nodes() {
        let mut args: Vec<Vec<u8>> = [
            "ACL",
            "SETUSER",
            name,
            "reset",
            "on",
            ">secret-pw",
            "~*",
            "&*",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect();
        args.extend(rules.split(' ').map(|r| r.as_bytes().to_vec()));
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        node.cmd(&refs);
    }
}

fn start(source: &Cluster, target: &Cluster, user: &str, logs: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--password=rsm-source:secret-pw")
        .arg(format!("--auth={user}:secret-pw"))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    })
}

#[test]
fn the_documented_acl_rules_are_enough_and_a_missing_one_is_named() {
    let source = cluster();
    let target = cluster();
    add_user(&source, "rsm-source", SOURCE_RULES);
    add_user(&target, "rsm-target", TARGET_RULES);
    // The same rules without MULTI/EXEC: exactly-once is impossible, and the user is told.
    add_user(
        &target,
        "rsm-nomulti",
        &TARGET_RULES.replace("+multi +exec", ""),
    );
    fill_strings(&source, 2_000, "k:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start(&source, &target, "rsm-target", logs.path(), port.port());
    wait_ready(&mut child, port.port(), logs.path());
    // The stream: a counter, written with its slot's marker in MULTI/EXEC.
    for i in 0..200 {
        let key = format!("ctr:{}", i % 7);
        source.cmd_on_key(key.as_bytes(), &[b"INCR", key.as_bytes()]);
    }
    std::thread::sleep(Duration::from_millis(500));
    wait_ready(&mut child, port.port(), logs.path());
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);

    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg("--password=rsm-source:secret-pw")
        .arg("--auth=rsm-nomulti:secret-pw")
        .arg(format!(
            "--logfile={}",
            logs.path().join("second.log").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran without MULTI: {err}");
    assert!(
        err.contains("+multi") && err.contains("+exec"),
        "the message does not name the missing permissions: {err}"
    );
}
