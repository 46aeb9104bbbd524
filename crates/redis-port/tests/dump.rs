//! `redis-port dump` against real servers: the file it writes is a snapshot
//! that `redis-server` itself loads, with the same data as the source.

use std::process::Command;
use std::time::Duration;

use rsm_testkit::{fill_mixed, FillOptions, Server, ServerOptions, Snapshot};

fn redis_port() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redis-port"))
}

fn dump_and_reload(source: &Server, password: Option<&str>) {
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("dump.rdb");
    let mut cmd = redis_port();
    cmd.arg("dump")
        .arg(format!("--from={}", source.addr()))
        .arg(format!("--output={}", file.display()));
    if let Some(pw) = password {
        cmd.arg(format!("--password={pw}"));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(file.metadata().unwrap().len() > 0);
    assert!(
        !out_dir.path().join("dump.rdb.tmp").exists(),
        "temporary file left behind"
    );

    // The server's own loader is the judge of the file.
    let reloaded = Server::start(ServerOptions {
        extra_config: vec![
            ("dir".into(), out_dir.path().display().to_string()),
            ("dbfilename".into(), "dump.rdb".into()),
        ],
        ..Default::default()
    });
    Snapshot::of(source).assert_same(&Snapshot::of(&reloaded), Duration::from_secs(5));
}

#[test]
fn disk_based_snapshot_loads_in_redis_server() {
    let source = Server::start(ServerOptions {
        password: Some("pw".into()),
        extra_config: vec![("repl-diskless-sync".into(), "no".into())],
        ..Default::default()
    });
    fill_mixed(&source, &FillOptions::default());
    dump_and_reload(&source, Some("pw"));
}

#[test]
fn diskless_snapshot_loads_in_redis_server() {
    let source = Server::start(ServerOptions {
        extra_config: vec![
            ("repl-diskless-sync".into(), "yes".into()),
            ("repl-diskless-sync-delay".into(), "0".into()),
        ],
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 50,
            ..Default::default()
        },
    );
    dump_and_reload(&source, None);
}

#[test]
fn wrong_password_is_one_clear_line() {
    let source = Server::start(ServerOptions {
        password: Some("right".into()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = redis_port()
        .args([
            "dump",
            &format!("--from={}", source.addr()),
            "--password=wrong",
        ])
        .arg(format!("--output={}", dir.path().join("x.rdb").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authentication failed for source") && stderr.contains("check --password"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
