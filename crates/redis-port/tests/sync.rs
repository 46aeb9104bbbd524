//! `redis-port sync` as an operator runs it: against a real source and target, stopped with
//! SIGTERM, with its log file; and refused when source and target are the same servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{
    fill_strings, Cluster, ClusterOptions, PortLease, Server, ServerOptions, Snapshot,
};
use serde_json::Value;

fn redis_port() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redis-port"))
}

fn status(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()
}

/// Poll `/status` until the shard is ready for cut-over (streaming, no lag); panic with the
/// log if the process exits or it takes more than 60 s.
fn wait_ready(child: &mut Child, port: u16, logfile: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(code)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("redis-port exited early with {code}: {err}");
        }
        if status(port).is_some_and(|v| v["ready_for_cutover"] == Value::Bool(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s; log:\n{}",
            std::fs::read_to_string(logfile).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid} failed");
}

/// Issue 10, item 7: SIGTERM used to kill `redis-port sync` (exit 143) with no drain and no
/// final checkpoint, and `--logfile` stayed empty.
#[test]
fn sigterm_drains_writes_the_checkpoint_and_exits_0() {
    let source = Server::start(ServerOptions::default());
    fill_strings(&source, 500, "k:");
    let target = Server::start(ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let logfile = dir.path().join("logs/redis-port.log");
    let http = PortLease::acquire();
    let mut child = redis_port()
        .args([
            "sync",
            &format!("--from={}", source.addr()),
            &format!("--target={}", target.addr()),
            &format!("--logfile={}", logfile.display()),
            &format!("--httpport={}", http.port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child, http.port(), &logfile);
    // A write of the stream phase, then stop at once: the drain must apply it.
    source.cmd(&[b"SET", b"after-snapshot", b"streamed"]);
    let set_offset: u64 = source
        .info_field("replication", "master_repl_offset")
        .unwrap()
        .parse()
        .unwrap();
    sigterm(child.id());
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM: {status}; {err}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(2));

    let checkpoint = dir.path().join("logs/state/shard-0.checkpoint");
    let text = std::fs::read_to_string(&checkpoint)
        .unwrap_or_else(|e| panic!("no checkpoint at {}: {e}; {err}", checkpoint.display()));
    let saved: Value = serde_json::from_str(&text).unwrap();
    let replid = source.info_field("replication", "master_replid").unwrap();
    assert_eq!(saved["replid"], Value::String(replid), "{text}");
    // The final checkpoint includes the write made just before the stop.
    let applied = saved["applied"].as_u64().unwrap_or(0);
    assert!(
        applied >= set_offset,
        "checkpoint {text} is before offset {set_offset}"
    );

    let log = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(log.contains("stop requested"), "log file: {log:?}");
    assert!(log.contains("sync stopped"), "log file: {log:?}");
}

/// Run `redis-port sync` with `--rewrite` and wait at most 30 s; one still running has
/// accepted the pair and is killed by its PID.
fn sync_once(from: &str, target: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = redis_port()
        .args([
            "sync",
            &format!("--from={from}"),
            &format!("--target={target}"),
            "--rewrite",
            &format!("--logfile={}", dir.path().join("p.log").display()),
        ])
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

/// Issue 10, item 6, for `redis-port`: the same node as source and target.
#[test]
fn the_same_node_is_refused_and_left_unchanged() {
    let source = Server::start(ServerOptions::default());
    fill_strings(&source, 200, "k:");
    source.cmd(&[b"SET", b"counter", b"1"]);
    let before = Snapshot::of(&source);
    let (code, stderr) = sync_once(&source.addr(), &source.addr());
    assert_refused(code, &stderr);
    assert!(stderr.contains("run_id"), "{stderr}");
    before.assert_same(&Snapshot::of(&source), Duration::from_secs(1));
}

/// A source node, and as target another node of its cluster (which routes the writes back
/// into the source's slots).
#[test]
fn a_node_of_the_source_cluster_is_refused() {
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 1,
        ..Default::default()
    });
    fill_strings(&source, 200, "k:");
    let before = Snapshot::of(&source);
    let from = source.masters()[0].addr();
    for target in [
        from.clone(),
        source.masters()[1].addr(),
        source.replicas_of(0)[0].addr(),
    ] {
        let (code, stderr) = sync_once(&from, &target);
        assert_refused(code, &stderr);
        assert!(stderr.contains(&target), "{stderr}");
    }
    before.assert_same(&Snapshot::of(&source), Duration::from_secs(1));
}
