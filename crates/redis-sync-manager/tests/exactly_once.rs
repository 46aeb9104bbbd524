//! Every source write applied once, with the target as the record of progress.
//!
//! - The manager SIGKILLed three times while a write load of commands that are not safe to apply
//!   twice (INCR, RPUSH/LPOP, XADD, HINCRBY, APPEND, RENAME) runs, and started again with
//!   the same command each time: it continues (no second full sync) and the target ends
//!   equal to the source, key by key (a duplicated RPUSH is a longer list).
//! - The same command line, from the same folder, into a fresh target: the local state of
//!   the first run must not make the second one skip the copy.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::{sigterm, streaming, total, wait_ready, wait_status};
use rand::{Rng, SeedableRng};
use rsm_testkit::{fill_strings, Cluster, ClusterOptions, MixedLoad, PortLease, Snapshot};

fn start_manager(source: &Cluster, target: &Cluster, logs: &Path, port: u16) -> Child {
    common::start_manager(&source.seed_addr(), &target.seed_addr(), logs, port, 3)
}

fn cluster(masters: usize) -> Cluster {
    Cluster::start(ClusterOptions {
        masters,
        replicas_per_master: 0,
        ..Default::default()
    })
}

/// A 3-master source whose backlog holds what the load writes while a shard's session
/// restarts (a replaced target master ends it; the next one continues from the floor, up
/// to ~1 s behind: without the writes since then a full sync is the right answer, and a
/// test could not tell a continue from it), and a 3-master target with a replica each.
fn source_and_replicated_target() -> (Cluster, Cluster) {
    let source = cluster(3);
    for m in source.masters() {
        m.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    }
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    (source, target)
}

#[test]
fn sigkill_under_a_non_idempotent_load_applies_every_write_once() {
    let source = cluster(3);
    let target = cluster(3);
    // The backlog must hold what the load writes while the manager is down, or continuing
    // is impossible and a full sync is right.
    for m in source.masters() {
        m.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    }
    fill_strings(&source, 5_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);

    let mut child = start_manager(&source, &target, logs.path(), port.port());
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    for kill in 0..3 {
        // Kill at a random moment of the stream, writes in flight.
        std::thread::sleep(Duration::from_millis(rng.random_range(700..2500)));
        let before = load.rounds();
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        child = start_manager(&source, &target, logs.path(), port.port());
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
            "restart {kill} copied the shards again instead of continuing: {v:#}"
        );
        assert!(load.rounds() > before, "the load stopped");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let rounds = load.stop();
    assert!(
        rounds > 500,
        "too little load to mean anything: {rounds} rounds"
    );
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);
}

#[test]
fn the_same_command_into_a_fresh_or_flushed_target_copies_everything() {
    let source = cluster(2);
    let first = cluster(2);
    fill_strings(&source, 3_000, "k:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(&source, &first, logs.path(), port.port());
    wait_ready(&mut child, port.port(), logs.path());
    sigterm(&mut child);

    // Same folder, same flags, another (empty) target: it must get every key.
    let second = cluster(2);
    let mut child = start_manager(&source, &second, logs.path(), port.port());
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert!(
        total(&v, "full_syncs") >= 2,
        "the shards were not copied: {v:#}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&second), Duration::from_secs(10));
    sigterm(&mut child);

    // The same again after the operator flushed the second target.
    for m in second.masters() {
        m.cmd(&[b"FLUSHALL"]);
    }
    let mut child = start_manager(&source, &second, logs.path(), port.port());
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert!(
        total(&v, "full_syncs") >= 2,
        "the flushed target was not copied: {v:#}"
    );
    // Counters in many slots: slot markers on every master, for cleanup to find.
    for i in 0..64 {
        let key = format!("ctr:{i}");
        source.cmd_on_key(key.as_bytes(), &[b"INCR", key.as_bytes()]);
    }
    std::thread::sleep(Duration::from_millis(500));
    wait_ready(&mut child, port.port(), logs.path());
    Snapshot::of(&source).assert_same(&Snapshot::of(&second), Duration::from_secs(10));
    sigterm(&mut child);

    // After cut-over the operator removes the tool's keys.
    let markers = progress_keys(&second);
    assert!(
        markers > 60,
        "too few progress markers in the target: {markers}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg("cleanup")
        .arg(format!("--target={}", second.seed_addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert_eq!(progress_keys(&second), 0);
    Snapshot::of(&source).assert_same(&Snapshot::of(&second), Duration::from_secs(10));
}

/// `__rsm:*` keys on every master, by the server's own KEYS.
fn progress_keys(cluster: &Cluster) -> usize {
    cluster
        .masters()
        .iter()
        .map(|m| {
            let keys: Vec<String> = rsm_testkit::redis::cmd("KEYS")
                .arg("__rsm:*")
                .query(&mut m.conn())
                .unwrap();
            keys.len()
        })
        .sum()
}

#[test]
fn a_target_failover_under_a_non_idempotent_load_applies_every_write_once() {
    let (source, target) = source_and_replicated_target();
    fill_strings(&source, 3_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(&source, &target, logs.path(), port.port());
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    std::thread::sleep(Duration::from_millis(1000));
    // A planned failover of one target master: its replica takes its slots while the
    // writer has writes in flight to it (MOVED, lost connections).
    let replica = &target.replicas_of(0)[0];
    replica.cmd(&[b"CLUSTER", b"FAILOVER"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while replica.info_field("replication", "role").as_deref() != Some("master") {
        assert!(
            std::time::Instant::now() < deadline,
            "the failover did not happen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let rounds = load.stop();
    assert!(rounds > 300, "too little load: {rounds} rounds");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    assert_eq!(
        total(&v, "full_syncs"),
        3,
        "a shard synced in full again: {v:#}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);
}

/// `master_repl_offset` of a node, as it reports it.
fn repl_offset(node: &rsm_testkit::Server) -> u64 {
    node.info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{} reports no master_repl_offset", node.addr()))
}

#[test]
fn a_target_master_sigkilled_with_its_replica_promoted_applies_every_write_once() {
    let (source, target) = source_and_replicated_target();
    fill_strings(&source, 3_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = start_manager(&source, &target, logs.path(), port.port());
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    std::thread::sleep(Duration::from_millis(1500));

    // Master 1, not the seed the manager was given: losing the seed is another problem.
    let victim = &target.masters()[1];
    let replica = &target.replicas_of(1)[0];
    // On loopback a replica trails its master by microseconds, so a kill at a random moment
    // would rarely lose anything. So its link is cut first and kept down (a wrong
    // `masterauth` fails every reconnect), and for half a second the master acknowledges
    // writes that exist nowhere else, as a replica lagging behind a busy master would.
    replica.cmd(&[b"CONFIG", b"SET", b"masterauth", b"not-the-password"]);
    victim.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"slave"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        replica
            .info_field("replication", "master_link_status")
            .as_deref(),
        Some("down"),
        "the replica's link came back"
    );
    let at_kill = repl_offset(victim);
    victim.kill();
    let replica_had = repl_offset(replica);
    assert!(
        replica_had < at_kill,
        "the replica had all its master wrote ({replica_had} of {at_kill}): nothing was at risk"
    );
    // Forced rather than waited for: an automatic failover takes the node timeout (5 s)
    // plus an election; FORCE skips the handshake with the dead master, still with votes.
    replica.cmd(&[b"CLUSTER", b"FAILOVER", b"FORCE"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replica.info_field("replication", "role").as_deref() != Some("master") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica was not promoted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(3000));
    let rounds = load.stop();
    assert!(rounds > 300, "too little load: {rounds} rounds");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    assert_eq!(
        total(&v, "full_syncs"),
        3,
        "a shard synced in full again: {v:#}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);
}

/// Issue 27, item 1: `--target` names one master, which is SIGKILLed for good under the
/// load and replaced by its replica. Every later session must reach the target through
/// the other nodes it knows, not dial the dead one for ever.
fn a_dead_target_seed(sync_role: &str) {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: usize::from(sync_role == "slave"),
        ..Default::default()
    });
    // The replicas too: with --sync-role=slave the sync continues from their backlog.
    for n in source.nodes() {
        n.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    }
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    fill_strings(&source, 3_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let seed = &target.masters()[0];
    let port_arg = format!("--httpport={}", port.port());
    let role = format!("--sync-role={sync_role}");
    let mut child = common::spawn_with(
        &source.seed_addr(),
        &seed.addr(),
        logs.path(),
        &[&port_arg, "--sync-parallel=3", &role],
    );
    wait_status(&mut child, port.port(), logs.path(), "streaming", streaming);
    let load = MixedLoad::on_cluster(&source, 300);
    std::thread::sleep(Duration::from_millis(1500));

    let replica = &target.replicas_of(0)[0];
    seed.kill();
    replica.cmd(&[b"CLUSTER", b"FAILOVER", b"FORCE"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replica.info_field("replication", "role").as_deref() != Some("master") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica was not promoted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(3000));
    let rounds = load.stop();
    assert!(rounds > 300, "too little load: {rounds} rounds");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    assert_eq!(
        total(&v, "full_syncs"),
        3,
        "a shard synced in full again: {v:#}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
    sigterm(&mut child);
}

#[test]
fn the_target_seed_sigkilled_for_good_under_a_non_idempotent_load_applies_every_write_once() {
    a_dead_target_seed("master");
}

#[test]
fn the_target_seed_sigkilled_for_good_with_sync_role_slave_applies_every_write_once() {
    a_dead_target_seed("slave");
}

/// The same for a standalone target: `--target` names the master and its replica; the
/// master is SIGKILLed for good and the replica promoted (`REPLICAOF NO ONE`, as an
/// operator or Sentinel would). The sync finds the new master among the nodes named.
#[test]
fn a_standalone_target_replaced_by_its_replica_applies_every_write_once() {
    use rsm_testkit::{Server, ServerOptions};
    let source = Server::start(ServerOptions::default());
    source.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    let master = Server::start(ServerOptions::default());
    let replica = Server::start(ServerOptions {
        extra_config: vec![("replicaof".into(), format!("127.0.0.1 {}", master.port()))],
        ..Default::default()
    });
    fill_strings(&source, 2_000, "base:");
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = common::start_manager(
        &source.addr(),
        &format!("{},{}", master.addr(), replica.addr()),
        logs.path(),
        port.port(),
        1,
    );
    wait_ready(&mut child, port.port(), logs.path());
    let load = MixedLoad::on_server(&source, 50);
    std::thread::sleep(Duration::from_millis(1500));
    master.kill();
    replica.cmd(&[b"REPLICAOF", b"NO", b"ONE"]);
    std::thread::sleep(Duration::from_millis(3000));
    assert!(load.stop() > 300, "too little load");
    let v = wait_ready(&mut child, port.port(), logs.path());
    assert_eq!(total(&v, "commands_failed"), 0, "{v:#}");
    assert_eq!(total(&v, "full_syncs"), 1, "synced in full again: {v:#}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&replica), Duration::from_secs(10));
    sigterm(&mut child);
}
