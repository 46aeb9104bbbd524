//! Faults of the machine the manager runs on, not of the servers (issue 27, items 6 and 8):
//! a full disk under the state folder, a stop that the target does not let finish, and the
//! working directory removed while streaming. Each runs the binary from a working directory
//! of its own with the default, relative `--logfile`, as an operator would.
//!
//! What holds: a local I/O error fails the shard with the error in `/status` and on the
//! console; SIGTERM ends the process within the documented 30 s whatever it was waiting
//! for, and a second signal ends it at once; a removed state folder is recreated, with a
//! warning, and the sync goes on to a target equal to the source.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::status;
use rsm_testkit::{
    key_slot, redis, Cluster, ClusterOptions, MixedLoad, PortLease, Server, ServerOptions, Snapshot,
};
use serde_json::Value;

/// What the README promises for a stop: the process is gone this long after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// The manager, started in `cwd` with the default log file (`logs/…`, relative to it).
/// Killed (by its PID) if the test ends while it still runs.
struct Manager {
    child: Child,
    port: u16,
}

impl Manager {
    fn start(source: &Server, target: &Server, cwd: &Path, port: u16, extra: &[&str]) -> Manager {
        Manager::start_at(&source.addr(), &target.addr(), cwd, port, extra)
    }

    fn start_at(from: &str, target: &str, cwd: &Path, port: u16, extra: &[&str]) -> Manager {
        let child = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
            .current_dir(cwd)
            .arg(format!("--from={from}"))
            .arg(format!("--target={target}"))
            .arg(format!("--httpport={port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Manager { child, port }
    }

    fn shard(&mut self) -> Option<Value> {
        status(self.port).map(|v| v["shards"][0].clone())
    }

    /// Poll the first shard's status until `done` holds; panic after `limit`, or if the
    /// manager exits.
    fn wait_shard(&mut self, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(code)) = self.child.try_wait() {
                panic!("manager exited early with {code}: {}", self.stderr());
            }
            if let Some(s) = self.shard() {
                if done(&s) {
                    return s;
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not within {limit:?}; the shard's status: {last:#}");
    }

    /// Poll `/status` until `done` holds; panic after `limit`, or if the manager exits.
    fn wait_status(&mut self, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(code)) = self.child.try_wait() {
                panic!("manager exited early with {code}: {}", self.stderr());
            }
            if let Some(v) = status(self.port) {
                if done(&v) {
                    return v;
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not within {limit:?}; status: {last:#}");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Wait at most `limit` for the process to end; `None` if it still runs.
    fn exit_within(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let began = Instant::now();
        while began.elapsed() < limit {
            if let Some(code) = self.child.try_wait().unwrap() {
                return Some((code, began.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        let _ = self
            .child
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut err));
        err
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SIGKILL to this child's PID only; a no-op once it has exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `size` mounted for the test, unmounted (and its folder removed) when dropped,
/// whether the test passed or not.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        let dir = tempfile::Builder::new()
            .prefix("rsm-tiny-disk-")
            .tempdir()
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "cannot mount a tmpfs (this test needs root): mount -t tmpfs"
        );
        TinyDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process that outlived the test): detach it now, freed when idle.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A target process held stopped (SIGSTOP) until dropped, so that a failing test cannot
/// leave it frozen.
struct Frozen<'a>(&'a Server);

impl<'a> Frozen<'a> {
    fn freeze(server: &'a Server) -> Frozen<'a> {
        signal_pid(server.pid(), "STOP");
        Frozen(server)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal_pid(self.0.pid(), "CONT");
    }
}

fn signal_pid(pid: u32, name: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn standalone() -> Server {
    Server::start(ServerOptions::default())
}

/// `n` keys of `size` random bytes (random, so the snapshot does not compress).
fn fill_random(server: &Server, n: usize, size: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    let mut conn = server.conn();
    let mut pipe = redis::pipe();
    for i in 0..n {
        let value: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        pipe.cmd("SET").arg(format!("k:{i:06}")).arg(value).ignore();
        if i % 1000 == 999 {
            let _: () = pipe.query(&mut conn).unwrap();
            pipe = redis::pipe();
        }
    }
    let _: () = pipe.query(&mut conn).unwrap();
}

/// `n` keys of `size` random bytes, pipelined to the master of each key's slot.
fn fill_random_cluster(cluster: &Cluster, n: usize, size: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    let masters = cluster.masters().len();
    let mut conns: Vec<_> = cluster.masters().iter().map(|m| m.conn()).collect();
    let mut pipes: Vec<redis::Pipeline> = (0..masters).map(|_| redis::pipe()).collect();
    for i in 0..n {
        let key = format!("k:{i:06}");
        let slot = key_slot(key.as_bytes());
        let m = (0..masters)
            .find(|&m| {
                let (a, b) = cluster.master_slot_range(m);
                (a..=b).contains(&slot)
            })
            .unwrap();
        let value: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        pipes[m].cmd("SET").arg(key).arg(value).ignore();
        if i % 1000 == 999 {
            for (pipe, conn) in pipes.iter_mut().zip(&mut conns) {
                let _: () = pipe.query(conn).unwrap();
                *pipe = redis::pipe();
            }
        }
    }
    for (pipe, conn) in pipes.iter_mut().zip(&mut conns) {
        let _: () = pipe.query(conn).unwrap();
    }
}

fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

fn streaming_caught_up(s: &Value) -> bool {
    phase(s) == "streaming" && s["applied_offset"] == s["source_offset"]
}

/// Issue 27 item 6, as reported: a standalone source, the spool spilling into a state
/// folder on a 2 MiB disk. The write fails (`No space left on device`); the shard must fail
/// with that error instead of waiting for ever in `loading_rdb`, and the run, whose only
/// shard failed, ends by itself with exit 1 and the error on the console.
#[test]
fn a_full_disk_under_the_state_folder_fails_the_shard_instead_of_hanging() {
    let disk = TinyDisk::mount("2m");
    let source = standalone();
    let target = standalone();
    // 24 MB of snapshot: more than the spool's 16 MiB of memory plus the 2 MiB disk,
    // while --max-ops=1000 keeps the target from taking it any faster.
    fill_random(&source, 30_000, 800);
    let load = MixedLoad::on_server(&source, 50);
    let port = PortLease::acquire();
    let mut manager = Manager::start(
        &source,
        &target,
        disk.path(),
        port.port(),
        &["--max-ops=1000"],
    );
    let ended = manager.exit_within(Duration::from_secs(40));
    load.stop();
    let Some((code, _)) = ended else {
        panic!(
            "still running 40 s after start on a 2 MiB disk; the shard's status: {:#}",
            manager.shard().unwrap_or_default()
        );
    };
    let err = manager.stderr();
    assert_eq!(code.code(), Some(1), "its only shard failed: {err}");
    assert!(
        err.contains("shard 0")
            && err.contains("cannot write to the spool: No space left on device"),
        "the console must name the shard and the local error: {err}"
    );
    // The spill file went with the failed session: the disk is free again.
    let spill = disk.path().join("logs/state/shard-0.spill");
    assert!(!spill.exists(), "{} left behind", spill.display());
}

/// The same full disk under a two-shard cluster source synced one shard at a time: the
/// first shard fails with the error in `/status` while the second is loading its snapshot,
/// and SIGTERM then ends the process within the bound (exit 1: a shard failed).
#[test]
fn a_full_disk_shows_in_status_and_sigterm_ends_the_process_while_loading() {
    let disk = TinyDisk::mount("2m");
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    });
    let target = standalone();
    // About 20 MB per shard: each outgrows the spool's memory and the disk.
    fill_random_cluster(&source, 50_000, 800);
    let load = MixedLoad::on_cluster(&source, 50);
    let port = PortLease::acquire();
    let mut manager = Manager::start_at(
        &source.seed_addr(),
        &target.addr(),
        disk.path(),
        port.port(),
        &["--max-ops=1000", "--sync-parallel=1"],
    );
    let failed = manager.wait_status(
        "a shard failing on the full disk",
        Duration::from_secs(40),
        |v| {
            v["shards"]
                .as_array()
                .is_some_and(|shards| shards.iter().any(|s| phase(s) == "failed"))
        },
    );
    let shards = failed["shards"].as_array().cloned().unwrap_or_default();
    let broken = shards
        .iter()
        .find(|s| phase(s) == "failed")
        .cloned()
        .unwrap_or_default();
    let error = broken["last_error"].as_str().unwrap_or_default();
    // The spill file, or a checkpoint on the same disk: either way, the local error.
    assert!(
        error.contains("No space left on device"),
        "/status must name the local error: {broken:#}"
    );

    manager.signal("TERM");
    let ended = manager.exit_within(STOP_BOUND + Duration::from_secs(5));
    load.stop();
    let Some((code, took)) = ended else {
        panic!(
            "still running {:?} after SIGTERM; status {:#}",
            STOP_BOUND + Duration::from_secs(5),
            status(manager.port).unwrap_or_default()
        );
    };
    let err = manager.stderr();
    assert!(took < STOP_BOUND, "stopped after {took:?}: {err}");
    assert_eq!(code.code(), Some(1), "a shard failed: {err}");
}

/// A stop that the target does not let finish (its process frozen with SIGSTOP, writes in
/// flight): the process ends within the bound anyway, with a non-zero code since the
/// stop did not complete.
#[test]
fn sigterm_with_the_target_frozen_ends_the_process_within_the_bound() {
    let work = tempfile::tempdir().unwrap();
    let source = standalone();
    let target = standalone();
    let load = MixedLoad::on_server(&source, 50);
    let port = PortLease::acquire();
    let mut manager = Manager::start(&source, &target, work.path(), port.port(), &[]);
    manager.wait_shard("streaming", Duration::from_secs(60), |s| {
        phase(s) == "streaming"
    });
    let frozen = Frozen::freeze(&target);
    std::thread::sleep(Duration::from_millis(500));
    manager.signal("TERM");
    let ended = manager.exit_within(STOP_BOUND + Duration::from_secs(10));
    drop(frozen);
    load.stop();
    let Some((code, took)) = ended else {
        panic!(
            "still running {:?} after SIGTERM with the target frozen",
            STOP_BOUND + Duration::from_secs(10)
        );
    };
    let err = manager.stderr();
    assert!(
        took <= STOP_BOUND + Duration::from_secs(2),
        "stopped after {took:?}: {err}"
    );
    assert!(code.code().is_some(), "ended by a signal: {code}; {err}");
}

/// The second SIGTERM (or SIGINT) ends the process at once, with a non-zero exit code,
/// while the first one's stop is still waiting for a frozen target.
#[test]
fn a_second_signal_ends_the_process_at_once() {
    let work = tempfile::tempdir().unwrap();
    let source = standalone();
    let target = standalone();
    let load = MixedLoad::on_server(&source, 50);
    let port = PortLease::acquire();
    let mut manager = Manager::start(&source, &target, work.path(), port.port(), &[]);
    manager.wait_shard("streaming", Duration::from_secs(60), |s| {
        phase(s) == "streaming"
    });
    let frozen = Frozen::freeze(&target);
    std::thread::sleep(Duration::from_millis(500));
    manager.signal("TERM");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        manager.child.try_wait().unwrap().is_none(),
        "the first stop should still be waiting for the frozen target"
    );
    manager.signal("INT");
    let ended = manager.exit_within(Duration::from_secs(3));
    drop(frozen);
    load.stop();
    let Some((code, _)) = ended else {
        panic!("still running 3 s after the second signal");
    };
    let err = manager.stderr();
    assert_eq!(
        code.code(),
        Some(130),
        "a second SIGINT exits 130 (128 + SIGINT): {err}"
    );
    assert!(err.contains("second signal"), "{err}");
}

/// Issue 27 item 8: the working directory (logs, state folder, checkpoint) removed while
/// streaming under a write load. The target holds the progress: the folder is recreated
/// with one warning, the shard streams on, and the target ends equal to the source.
#[test]
fn the_working_directory_removed_while_streaming_is_recreated_and_the_sync_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let work: PathBuf = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let source = standalone();
    let target = standalone();
    fill_random(&source, 2_000, 100);
    let load = MixedLoad::on_server(&source, 50);
    let port = PortLease::acquire();
    let mut manager = Manager::start(&source, &target, &work, port.port(), &[]);
    manager.wait_shard("streaming", Duration::from_secs(60), |s| {
        phase(s) == "streaming"
    });
    let checkpoint = work.join("logs/state/shard-0.checkpoint");
    manager.wait_shard("a checkpoint", Duration::from_secs(10), |_| {
        checkpoint.exists()
    });

    std::fs::remove_dir_all(&work).unwrap();
    // A few checkpoint periods under the load.
    std::thread::sleep(Duration::from_secs(4));
    let Some(s) = manager.shard() else {
        let code = manager.child.try_wait();
        panic!(
            "the status page is gone (the manager: {code:?}); stderr: {}",
            manager.stderr()
        );
    };
    assert_eq!(phase(&s), "streaming", "the shard must go on: {s:#}");
    assert!(
        checkpoint.exists(),
        "the state folder must be recreated: {}",
        checkpoint.display()
    );

    load.stop();
    manager.wait_shard("caught up", Duration::from_secs(60), streaming_caught_up);
    manager.signal("TERM");
    let (code, _) = manager
        .exit_within(STOP_BOUND)
        .expect("the manager stops within the bound");
    let err = manager.stderr();
    assert!(code.success(), "exit {code}: {err}");
    let warnings = err.matches("was removed").count();
    assert_eq!(
        warnings, 1,
        "one warning for the one removal, not a flood: {err}"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(10));
}
