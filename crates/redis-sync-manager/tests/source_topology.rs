//! The manager against a source cluster whose slots move while it syncs (issue 29):
//! `redis-cli --cluster reshard` there and back (from masters, then from replicas), a new
//! master joined by `rebalance` and removed again, Valkey 9's atomic `CLUSTER MIGRATESLOTS`,
//! and a SIGKILL of the manager in the middle of the handoff.
//!
//! Each case runs the non-idempotent mixed load through the change, then wants
//! `ready_for_cutover` back with no shard failed, and a target equal to the source key for
//! key. The list of shards may change during a run (a master that gains slots gets a shard,
//! one left empty loses it), so nothing here assumes a fixed shard list. A [`ReadyWatch`]
//! checks that `/status` never says ready while the source's slots are moving.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{ready, sigterm, status, wait_status};
use rsm_testkit::{
    add_master, del_node, fill_mixed, key_slot, migrate_slots_atomic, rebalance_to_empty, reshard,
    slots_in_motion, slots_of, test_server_bin, Cluster, ClusterOptions, FillOptions, MixedLoad,
    PortLease, Snapshot,
};
use serde_json::Value;

/// TTLs are compared with this slack: the source's and the target's are read at different
/// moments of a slow machine.
const TTL_TOLERANCE: Duration = Duration::from_secs(10);

/// Slots moved by one reshard or migration: enough that the move lasts several watch
/// samples, few enough for a slow machine.
const MOVED_SLOTS: usize = 1000;

/// Hash tags the load writes: spread over the slots, so some sit in every moved range.
const LOAD_GROUPS: u32 = 200;

/// One manager run from a source cluster into a target cluster.
struct Sync {
    source: Cluster,
    target: Cluster,
    logs: tempfile::TempDir,
    port: PortLease,
    args: Vec<String>,
    child: Child,
}

impl Sync {
    /// Fills the source with a few thousand keys of every type, starts the manager with
    /// `extra` flags and waits until it is ready.
    fn start(source: Cluster, target: Cluster, extra: &[&str]) -> Sync {
        fill_mixed(
            &source,
            &FillOptions {
                keys_per_type: 400,
                ..Default::default()
            },
        );
        let logs = tempfile::tempdir().unwrap();
        let port = PortLease::acquire();
        let mut args = vec![
            format!("--from={}", source.seed_addr()),
            format!("--target={}", target.seed_addr()),
            format!("--logfile={}", log_path(logs.path()).display()),
            format!("--httpport={}", port.port()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args);
        let mut sync = Sync {
            source,
            target,
            logs,
            port,
            args,
            child,
        };
        sync.wait_ready("ready before the change");
        sync
    }

    fn seed(&self) -> String {
        self.source.seed_addr()
    }

    fn password(&self) -> Option<&str> {
        self.source.password()
    }

    /// Ready for cut-over, failing at once if a shard failed or the manager exited.
    fn wait_ready(&mut self, what: &str) -> Value {
        wait_status(
            &mut self.child,
            self.port.port(),
            self.logs.path(),
            what,
            |v| {
                assert_no_shard_failed(v);
                ready(v)
            },
        )
    }

    /// After the load stopped: ready again, nothing failed, the manager still running, and
    /// the target equal to the source, every key.
    fn assert_converged(&mut self, what: &str) -> Value {
        // Let `/status` see the last writes before trusting its "ready".
        thread::sleep(Duration::from_millis(500));
        let v = self.wait_ready(what);
        Snapshot::of(&self.source).assert_same(&Snapshot::of(&self.target), TTL_TOLERANCE);
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "{what}: the manager exited"
        );
        v
    }

    /// `kill -9` of the manager, then the same command again.
    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap(); // SIGKILL to the PID we spawned
        self.child.wait().unwrap();
        self.child = spawn(&self.args);
    }

    fn finish(mut self) {
        sigterm(&mut self.child);
    }
}

fn log_path(logs: &std::path::Path) -> PathBuf {
    logs.join("redis-sync-manager.log")
}

fn spawn(args: &[String]) -> Child {
    // Into a file beside the log, not a pipe: a pipe nobody drains during a long run fills
    // up, and the manager's next WARN would block on it.
    let log = args
        .iter()
        .find_map(|a| a.strip_prefix("--logfile="))
        .map(PathBuf::from)
        .expect("--logfile in the manager's arguments");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log.with_file_name("stderr.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args(args)
        // Read the source topology often, so a change is seen within a watch sample or two.
        .env("RSM_TOPOLOGY_INTERVAL_MS", "300")
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn shards(v: &Value) -> &[Value] {
    v["shards"].as_array().map_or(&[], Vec::as_slice)
}

fn assert_no_shard_failed(v: &Value) {
    let failed: Vec<&Value> = shards(v)
        .iter()
        .filter(|s| s["phase"] == "failed")
        .collect();
    assert!(
        failed.is_empty(),
        "a shard failed: {failed:#?}\nstatus: {v:#}"
    );
}

fn blocking(v: &Value) -> Vec<String> {
    v["topology_blocking"]
        .as_array()
        .map(|a| a.iter().map(|b| b.to_string()).collect())
        .unwrap_or_default()
}

/// A source cluster (or a target: the same shape) of 3 masters.
fn cluster(replicas_per_master: usize, bin: Option<PathBuf>) -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master,
        bin,
        ..Default::default()
    })
}

/// What a [`ReadyWatch`] saw.
#[derive(Debug, Default)]
struct WatchReport {
    samples: usize,
    /// Samples whose source reads before and after `/status` both found slots in motion.
    moving: usize,
    violations: Vec<String>,
}

impl WatchReport {
    /// The watch saw the slots move (so it could have caught a violation) and `/status`
    /// never said ready while they did.
    fn assert_saw_motion_never_ready(&self) {
        assert!(
            self.moving > 0,
            "the watch never saw slots in motion in {} samples: it proved nothing",
            self.samples
        );
        assert!(
            self.violations.is_empty(),
            "ready_for_cutover was true while source slots moved ({} of {} moving samples):\n{}",
            self.violations.len(),
            self.moving,
            self.violations.join("\n")
        );
    }
}

/// Every 200 ms: the source's slot state, `GET /status`, the source's slot state again. A
/// sample where both reads find slots migrating (markers in `CLUSTER NODES`, or a Valkey
/// slot-migration job not finished) and `/status` said `ready_for_cutover` is a violation:
/// the status was read while the slots moved.
struct ReadyWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WatchReport>>,
}

impl ReadyWatch {
    fn start(sync: &Sync) -> ReadyWatch {
        let seed = sync.seed();
        let password = sync.password().map(str::to_string);
        let port = sync.port.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut report = WatchReport::default();
            while !flag.load(Ordering::Relaxed) {
                let before = slots_in_motion(&seed, password.as_deref());
                let v = status(port);
                let after = slots_in_motion(&seed, password.as_deref());
                report.samples += 1;
                // A source that could not be read says neither "moving" nor "still".
                if let (Ok(before), Ok(after)) = (before, after) {
                    if !before.is_empty() && !after.is_empty() {
                        report.moving += 1;
                        if v.as_ref().is_some_and(ready) {
                            report
                                .violations
                                .push(format!("ready while moving: {before:?} .. {after:?}"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(200));
            }
            report
        });
        ReadyWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("the watch thread panicked"))
            .unwrap_or_default()
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A reshard of 1000 slots from master 0 to master 1 and back, under load, watched.
fn reshard_there_and_back(mut sync: Sync) {
    let load = MixedLoad::on_cluster(&sync.source, LOAD_GROUPS);
    thread::sleep(Duration::from_secs(1));
    let watch = ReadyWatch::start(&sync);
    let (a, b) = (
        sync.source.node_id(0).to_string(),
        sync.source.node_id(1).to_string(),
    );
    reshard(&sync.seed(), &a, &b, MOVED_SLOTS, sync.password());
    reshard(&sync.seed(), &b, &a, MOVED_SLOTS, sync.password());
    let rounds = load.stop();
    let report = watch.stop();
    eprintln!(
        "watch: {} samples, {} moving, {} violations",
        report.samples,
        report.moving,
        report.violations.len()
    );
    assert!(rounds > 0, "the load wrote nothing");
    sync.assert_converged("ready after the reshards");
    report.assert_saw_motion_never_ready();
    sync.finish();
}

#[test]
fn reshard_there_and_back_under_load() {
    let sync = Sync::start(cluster(0, None), cluster(0, None), &[]);
    reshard_there_and_back(sync);
}

#[test]
fn reshard_there_and_back_syncing_from_replicas() {
    let sync = Sync::start(cluster(1, None), cluster(0, None), &["--sync-role=slave"]);
    reshard_there_and_back(sync);
}

/// A key whose slot is in `ranges`.
fn key_in(ranges: &[(u16, u16)]) -> String {
    (0..)
        .map(|i| format!("probe:{i}"))
        .find(|k| {
            let s = key_slot(k.as_bytes());
            ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
        })
        .expect("some key hashes into a non-empty slot set")
}

/// Polls the target for `key` = `want` for 10 s.
fn assert_reaches_target(target: &Cluster, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = target.try_cmd_on_key(key.as_bytes(), &[b"GET", key.as_bytes()]);
        if matches!(&got, Ok(rsm_testkit::redis::Value::BulkString(b)) if b == want.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} = {want} did not reach the target within 10 s (it has {got:?})"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_master_added_by_rebalance_then_removed() {
    let mut sync = Sync::start(cluster(0, None), cluster(0, None), &[]);
    let load = MixedLoad::on_cluster(&sync.source, LOAD_GROUPS);
    thread::sleep(Duration::from_secs(1));
    let (_, new_id) = add_master(&mut sync.source);
    rebalance_to_empty(&sync.seed(), sync.password());
    load.stop();
    sync.assert_converged("ready after the rebalance");

    // The new master's own writes reach the target: it has a shard of its own.
    let owned = slots_of(&sync.seed(), sync.password(), &new_id);
    assert!(!owned.is_empty(), "rebalance gave the new master no slot");
    let key = key_in(&owned);
    sync.source.cmd_on_key(
        key.as_bytes(),
        &[b"SET", key.as_bytes(), b"on-the-new-master"],
    );
    assert_reaches_target(&sync.target, &key, "on-the-new-master");

    // Every slot back to master 0, then the empty master leaves.
    let load = MixedLoad::on_cluster(&sync.source, LOAD_GROUPS);
    let count: usize = owned.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
    let to = sync.source.node_id(0).to_string();
    reshard(&sync.seed(), &new_id, &to, count, sync.password());
    del_node(&sync.seed(), &new_id, sync.password());
    load.stop();
    sync.assert_converged("ready after del-node");
    sync.finish();
}

#[test]
fn valkey_atomic_slot_migration_under_load() {
    let bin = test_server_bin("valkey-9.1.2");
    let mut sync = Sync::start(cluster(0, Some(bin.clone())), cluster(0, Some(bin)), &[]);
    let load = MixedLoad::on_cluster(&sync.source, LOAD_GROUPS);
    thread::sleep(Duration::from_secs(1));
    let watch = ReadyWatch::start(&sync);
    let from = &sync.source.masters()[0];
    // The job's snapshot of a few hundred keys takes milliseconds; 10 ms a key (the fork
    // child's per-key delay) makes it last a couple of seconds, so the watch sees it.
    from.cmd(&[b"CONFIG", b"SET", b"rdb-key-save-delay", b"10000"]);
    let (first, last) = (0u16, (MOVED_SLOTS - 1) as u16);
    migrate_slots_atomic(from, first, last, sync.source.node_id(1));
    from.cmd(&[b"CONFIG", b"SET", b"rdb-key-save-delay", b"0"]);
    load.stop();
    let report = watch.stop();
    eprintln!(
        "watch: {} samples, {} moving, {} violations",
        report.samples,
        report.moving,
        report.violations.len()
    );
    sync.assert_converged("ready after the slot migration");
    report.assert_saw_motion_never_ready();
    sync.finish();
}

/// `sync_full` of `INFO stats`: full syncs the server has served.
fn sync_full(server: &rsm_testkit::Server) -> u64 {
    server
        .info_field("stats", "sync_full")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sync_full in INFO stats of {}", server.addr()))
}

#[test]
fn sigkill_in_the_middle_of_the_handoff() {
    let mut sync = Sync::start(cluster(0, None), cluster(0, None), &[]);
    let load = MixedLoad::on_cluster(&sync.source, LOAD_GROUPS);
    thread::sleep(Duration::from_secs(1));
    let (a, b) = (
        sync.source.node_id(0).to_string(),
        sync.source.node_id(1).to_string(),
    );
    reshard(&sync.seed(), &a, &b, MOVED_SLOTS, sync.password());
    // The source has settled; the manager has not finished following it yet.
    let v = status(sync.port.port()).expect("no /status right after the reshard");
    let handing_off =
        !blocking(&v).is_empty() || shards(&v).iter().any(|s| s["phase"] != "streaming");
    assert!(
        handing_off,
        "the handoff was over before the kill could land: {v:#}"
    );
    let full_before = sync_full(&sync.source.masters()[2]);
    sync.kill_and_restart();
    thread::sleep(Duration::from_secs(1));
    load.stop();
    sync.assert_converged("ready after the restart");
    assert_eq!(
        sync_full(&sync.source.masters()[2]),
        full_before,
        "master C, whose slots did not move, served a new full sync"
    );
    sync.finish();
}
