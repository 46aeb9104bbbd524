//! Helpers shared by the tests that run the `redis-sync-manager` binary:
//! read its HTTP endpoints, wait for a state, stop it with SIGTERM.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The body of `GET path` on the manager's HTTP port.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

pub fn status(port: u16) -> Option<Value> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

pub fn ready(v: &Value) -> bool {
    v["ready_for_cutover"] == Value::Bool(true)
}

/// Poll `/status` until `done` holds; panic with the status and the tail of
/// the manager's log after 120 s, or at once if the manager exits.
pub fn wait_status(
    child: &mut Child,
    port: u16,
    logs: &Path,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(code)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("manager exited early with {code}: {err}");
        }
        if let Some(v) = status(port) {
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(logs.join("redis-sync-manager.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{what}: not within 120s: {v:#}\nmanager log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn wait_ready(child: &mut Child, port: u16, logs: &Path) -> Value {
    wait_status(child, port, logs, "ready for cut-over", ready)
}

/// SIGTERM, then the manager must exit 0; returns what it wrote to stderr.
pub fn sigterm(child: &mut Child) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(
        status.success(),
        "manager did not exit 0 after SIGTERM: {status}; {err}"
    );
    err
}

/// The manager from `from` into `target` (seed addresses), logging under `logs`, with its
/// status on `port` and `--sync-parallel=N`; stderr kept for `wait_status`'s report.
pub fn start_manager(from: &str, target: &str, logs: &Path, port: u16, parallel: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={from}"))
        .arg(format!("--target={target}"))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        .arg(format!("--sync-parallel={parallel}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A counter of `/status` summed over the shards.
pub fn total(v: &Value, field: &str) -> u64 {
    v["shards"]
        .as_array()
        .map_or(0, |s| s.iter().filter_map(|s| s[field].as_u64()).sum())
}

/// Every shard streams.
pub fn streaming(v: &Value) -> bool {
    v["shards"]
        .as_array()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["phase"] == "streaming"))
}

/// The manager from `from` into `target` with the flags in `extra` (no `--httpport`
/// unless given there), logging under `logs`; stderr kept for the test to read.
pub fn spawn_with(from: &str, target: &str, logs: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={from}"))
        .arg(format!("--target={target}"))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .args(extra)
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `SET key value` in `db` of a standalone server.
pub fn set_in(node: &rsm_testkit::Server, db: u32, key: &str, value: &str) {
    let mut conn = node.conn();
    rsm_testkit::redis::cmd("SELECT")
        .arg(db)
        .query::<()>(&mut conn)
        .unwrap();
    rsm_testkit::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut conn)
        .unwrap();
}
