//! Issue 10, item 6: `--from` and `--target` naming the same servers (the same cluster, the
//! same node, or another node of the source cluster) used to be accepted; with `--rewrite`
//! the replication stream looped back into the source and corrupted it. The pre-flight must
//! refuse it with exit 2 and one line, before anything is written.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{fill_strings, Cluster, ClusterOptions, Server, ServerOptions, Snapshot};

/// Run the manager (not a dry run: the real path, with `--rewrite`, the dangerous case) and
/// wait at most 30 s; one that is still running has accepted the plan and is killed (by
/// its PID) so the test fails with what it printed.
fn manager(from: &str, target: &str) -> (Option<i32>, String) {
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args([
            &format!("--from={from}"),
            &format!("--target={target}"),
            "--rewrite",
            &format!("--logfile={}", logs.path().join("m.log").display()),
        ])
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    (code, err)
}

fn assert_refused(code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(2), "not refused: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("error: --from and --target are the same servers"),
        "{stderr}"
    );
}

fn source_cluster() -> Cluster {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    fill_strings(&source, 300, "k:");
    source.cmd_on_key(b"counter", &[b"SET", b"counter", b"1"]);
    source
}

#[test]
fn the_same_cluster_is_refused_and_left_unchanged() {
    let source = source_cluster();
    let before = Snapshot::of(&source);
    let (code, stderr) = manager(&source.seed_addr(), &source.seed_addr());
    assert_refused(code, &stderr);
    assert!(stderr.contains(&source.seed_addr()), "{stderr}");
    before.assert_same(&Snapshot::of(&source), Duration::from_secs(1));
}

#[test]
fn another_node_of_the_source_cluster_is_refused() {
    let source = source_cluster();
    let before = Snapshot::of(&source);
    // A master other than --from, then a replica: neither is the node given as --from.
    let other_master = source.masters()[1].addr();
    let replica = source.replicas_of(2)[0].addr();
    for target in [other_master, replica] {
        let (code, stderr) = manager(&source.masters()[0].addr(), &target);
        assert_refused(code, &stderr);
        assert!(stderr.contains(&target), "{stderr}");
    }
    before.assert_same(&Snapshot::of(&source), Duration::from_secs(1));
}

#[test]
fn the_same_standalone_server_is_refused_and_left_unchanged() {
    let source = Server::start(ServerOptions::default());
    fill_strings(&source, 200, "k:");
    source.cmd(&[b"SET", b"counter", b"1"]);
    let before = Snapshot::of(&source);
    let (code, stderr) = manager(&source.addr(), &source.addr());
    assert_refused(code, &stderr);
    assert!(stderr.contains("run_id"), "{stderr}");
    before.assert_same(&Snapshot::of(&source), Duration::from_secs(1));
    // Independent read: the counter was not replayed into itself.
    let counter: String = rsm_testkit::redis::cmd("GET")
        .arg("counter")
        .query(&mut source.conn())
        .unwrap();
    assert_eq!(counter, "1");
}

/// The check must not refuse two different deployments.
#[test]
fn different_servers_still_start() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    let out = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args([
            format!("--from={}", source.addr()),
            format!("--target={}", target.addr()),
            "--dry-run".into(),
        ])
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
