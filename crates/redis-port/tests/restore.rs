//! `redis-port restore` as an operator runs it: an RDB made by a real server
//! into a target, and a target that dies in the middle.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{
    fill_mixed, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Snapshot,
};

fn redis_port() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redis-port"))
}

/// SAVE on the server and return the path of its RDB file.
fn saved_rdb(server: &Server) -> std::path::PathBuf {
    server.cmd(&[b"SAVE"]);
    server.dir().join("dump.rdb")
}

#[test]
fn restores_a_real_rdb_into_a_cluster() {
    let source = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 200,
            ..Default::default()
        },
    );
    let rdb = saved_rdb(&source);
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    });
    let out = redis_port()
        .args([
            "restore",
            &format!("--input={}", rdb.display()),
            &format!("--target={}", target.seed_addr()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restore: restored 1200 keys"), "{stderr}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    // Again without --rewrite: the keys exist, the default policy refuses.
    let out = redis_port()
        .args([
            "restore",
            &format!("--input={}", rdb.display()),
            &format!("--target={}", target.seed_addr()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--rewrite"), "{stderr}");
}

#[test]
fn corrupt_rdb_is_one_clear_error() {
    let target = Server::start(ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rdb");
    std::fs::write(
        &bad,
        b"REDIS0010\xfa\x09redis-ver\x057.0.1\xfe\x00\x00\x03key",
    )
    .unwrap();
    let out = redis_port()
        .args([
            "restore",
            &format!("--input={}", bad.display()),
            &format!("--target={}", target.addr()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("offset"),
        "the error should say where: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn target_killed_mid_restore_is_reported_with_the_count_written() {
    // DEBUG POPULATE makes a big dataset in a blink (7.0 needs it enabled).
    let source = Server::start(ServerOptions {
        extra_config: vec![("enable-debug-command".into(), "yes".into())],
        ..Default::default()
    });
    source.cmd(&[b"DEBUG", b"POPULATE", b"300000", b"k", b"64"]);
    let rdb = saved_rdb(&source);
    let target = Server::start(ServerOptions::default());
    let child = redis_port()
        .args([
            "restore",
            &format!("--input={}", rdb.display()),
            &format!("--target={}", target.addr()),
            "--retry-timeout=3",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the target once some keys have landed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = rsm_testkit::redis::cmd("DBSIZE")
            .query(&mut target.conn())
            .unwrap_or(0);
        if n > 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "restore never started writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    target.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        last.contains("restore stopped after writing") && last.contains("keys"),
        "{last}"
    );
    assert!(
        last.contains(&target.addr()),
        "the error should name the target: {last}"
    );
}
