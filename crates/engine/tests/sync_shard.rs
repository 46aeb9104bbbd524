//! One shard's sync against real servers: full sync, then live writes of
//! every kind, then a stop and a restart that continues with PSYNC.
//! The target is compared with the source through an independent client.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsm_client::Endpoint;
use rsm_engine::shard::{run_shard, ShardSpec};
use rsm_engine::EngineOptions;
use rsm_status::{Phase, ShardStatus};
use rsm_testkit::{
    fill_mixed, redis, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Snapshot,
};
use tokio::sync::{watch, Semaphore};

struct Running {
    status: Arc<ShardStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<
        Result<rsm_engine::shard::ShardExit, rsm_engine::shard::ShardError>,
    >,
}

fn start(source: &str, target: &str, state: &std::path::Path, options: EngineOptions) -> Running {
    start_with_spool(
        source,
        target,
        state,
        options,
        rsm_engine::shard::DEFAULT_SPOOL_MEMORY,
    )
}

fn start_with_spool(
    source: &str,
    target: &str,
    state: &std::path::Path,
    options: EngineOptions,
    spool_memory: usize,
) -> Running {
    let spec = ShardSpec {
        serial: 0,
        source: source.parse::<Endpoint>().unwrap(),
        source_credentials: None,
        target: target.parse::<Endpoint>().unwrap(),
        target_seeds: Default::default(),
        target_credentials: None,
        source_tls: None,
        target_tls: None,
        options,
        state_dir: state.to_path_buf(),
        spool_memory,
    };
    let status = ShardStatus::new(0, source.to_string(), "master".into(), "0-16383".into());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_shard(
        spec,
        status.clone(),
        Arc::new(Semaphore::new(1)),
        stop_rx,
    ));
    Running { status, stop, task }
}

impl Running {
    /// Wait until streaming and the applied offset has caught up with the source's.
    async fn wait_caught_up(&self, source_offset: impl Fn() -> u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let snap = self.status.snapshot();
            assert!(
                snap.phase != Phase::Failed,
                "shard failed: {:?}",
                snap.last_error
            );
            let want = source_offset();
            if snap.phase == Phase::Streaming && snap.applied_offset >= want && want > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not caught up after 60s: {snap:?}, source at {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> Arc<ShardStatus> {
        self.stop.send(true).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops within 30s");
        exit.unwrap().expect("clean stop");
        self.status
    }
}

fn master_offset(server: &Server) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes of every kind a stream carries: expiries, transactions, scripts, streams with groups.
fn live_writes(server: &Server, round: usize) {
    let mut c = server.conn();
    let r = round.to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("live:s:{r}"))
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("live:ttl:{r}"))
        .arg("v")
        .arg("EX")
        .arg(3600)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg("str:0")
        .arg(7200)
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("RPUSH")
        .arg(format!("live:l:{r}"))
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(format!("live:h:{r}"))
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("live:z:{r}"))
        .arg(1.5)
        .arg("m")
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg(format!("live:set:{r}"))
        .arg("x")
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("DEL").arg("str:1").query(&mut c).unwrap();
    let _: f64 = redis::cmd("INCRBYFLOAT")
        .arg(format!("live:f:{r}"))
        .arg(1.5)
        .query(&mut c)
        .unwrap();
    // A transaction and a script with two writes (arrive as MULTI … EXEC).
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("live:tx:{r}"))
        .arg(1)
        .cmd("INCR")
        .arg(format!("live:tx:{r}"))
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], ARGV[1]); redis.call('incr', KEYS[2]); return 1")
        .arg(2)
        .arg(format!("live:eval:{r}"))
        .arg(format!("live:evalc:{r}"))
        .arg("x")
        .query(&mut c)
        .unwrap();
    // Streams: entries, a group, a read that creates a pending entry.
    let key = format!("live:x:{r}");
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("f")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("f")
        .arg("2")
        .query(&mut c)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_then_stream_then_resume() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 200,
            ..Default::default()
        },
    );
    let state = tempfile::tempdir().unwrap();

    let run = start(
        &source.addr(),
        &target.addr(),
        state.path(),
        EngineOptions::default(),
    );
    run.wait_caught_up(|| master_offset(&source)).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    for round in 0..3 {
        live_writes(&source, round);
    }
    run.wait_caught_up(|| master_offset(&source)).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    let first = run.stop().await;
    assert_eq!(first.snapshot().full_syncs, 1);

    // Written while we were away: a restart must continue, not copy again.
    for round in 3..5 {
        live_writes(&source, round);
    }
    let run = start(
        &source.addr(),
        &target.addr(),
        state.path(),
        EngineOptions::default(),
    );
    run.wait_caught_up(|| master_offset(&source)).await;
    assert_eq!(
        run.status.snapshot().full_syncs,
        0,
        "restart did a full sync instead of PSYNC continue"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diskless_source_into_cluster_target() {
    let source = Server::start(ServerOptions {
        extra_config: vec![
            ("repl-diskless-sync".into(), "yes".into()),
            ("repl-diskless-sync-delay".into(), "0".into()),
        ],
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 100,
            ..Default::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let run = start(
        &source.addr(),
        &target.seed_addr(),
        state.path(),
        EngineOptions::default(),
    );
    run.wait_caught_up(|| master_offset(&source)).await;
    live_writes(&source, 0);
    run.wait_caught_up(|| master_offset(&source)).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await;
}

/// Every installed server version as a source, into the Debian server as the
/// target: the handshake, the snapshot format (RDB 9 → Valkey's 80, rewritten
/// or rebuilt with commands for the older target) and the stream of each.
/// Runs over `$RSM_TEST_SERVERS/bin` (or `.test-servers/bin`); with none
/// installed it says so and checks the Debian server against itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_version_into_the_debian_server() {
    let labels = rsm_testkit::test_server_labels();
    if labels.is_empty() {
        eprintln!("version matrix: no servers installed (run /work/shared/tools/install-test-servers.sh .test-servers); checked the default server only");
    }
    let mut bins: Vec<Option<std::path::PathBuf>> = labels
        .iter()
        .map(|l| Some(rsm_testkit::test_server_bin(l)))
        .collect();
    bins.push(None);
    for bin in bins {
        let label = bin
            .as_ref()
            .map(|b| b.display().to_string())
            .unwrap_or_else(|| "default".into());
        let source = Server::start(ServerOptions {
            bin: bin.clone(),
            ..Default::default()
        });
        let target = Server::start(ServerOptions::default());
        fill_mixed(
            &source,
            &FillOptions {
                keys_per_type: 30,
                ..Default::default()
            },
        );
        let state = tempfile::tempdir().unwrap();
        let run = start(
            &source.addr(),
            &target.addr(),
            state.path(),
            EngineOptions::default(),
        );
        run.wait_caught_up(|| master_offset(&source)).await;
        live_writes(&source, 0);
        run.wait_caught_up(|| master_offset(&source)).await;
        let diffs = Snapshot::of(&source).diff(&Snapshot::of(&target), Duration::from_secs(5));
        assert!(
            diffs.is_empty(),
            "source {label}: {} differences, first: {:?}",
            diffs.len(),
            &diffs[..diffs.len().min(5)]
        );
        run.stop().await;
        eprintln!("version matrix: {label} → default server: identical");
    }
}

/// The source's backlog no longer holds our offset after a stop: the restart
/// is told so, runs a full sync again, and with `--rewrite` converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeded_backlog_falls_back_to_a_full_sync() {
    let source = Server::start(ServerOptions {
        extra_config: vec![("repl-backlog-size".into(), "16kb".into())],
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 20,
            ..Default::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let rewrite = EngineOptions {
        conflict: rsm_engine::ConflictPolicy::Rewrite,
        ..Default::default()
    };
    let run = start(
        &source.addr(),
        &target.addr(),
        state.path(),
        rewrite.clone(),
    );
    run.wait_caught_up(|| master_offset(&source)).await;
    run.stop().await;

    // Far more than the 16 KB backlog while we are away, and a key changed.
    let mut c = source.conn();
    for i in 0..400 {
        let _: () = redis::cmd("SET")
            .arg(format!("away:{i}"))
            .arg("x".repeat(200))
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("str:0")
        .arg("changed while away")
        .query(&mut c)
        .unwrap();

    let run = start(&source.addr(), &target.addr(), state.path(), rewrite);
    run.wait_caught_up(|| master_offset(&source)).await;
    assert_eq!(
        run.status.snapshot().full_syncs,
        1,
        "the stale checkpoint must lead to one new full sync"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await;
}

/// A target slower than the source: the link keeps reading at the source's
/// pace, the backlog goes to a spill file (reported in the status), and the
/// file is gone once the target has caught up, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_target_spills_to_disk_and_drains() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 10,
            ..Default::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let run = start_with_spool(
        &source.addr(),
        &target.addr(),
        state.path(),
        EngineOptions::default(),
        256 << 10,
    );
    run.wait_caught_up(|| master_offset(&source)).await;

    // Hold every write on the target, then write far more than the writer
    // buffers (64 MiB) plus the spool's 256 KiB of memory.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query(&mut target.conn())
        .unwrap();
    let value = "v".repeat(2048);
    let mut c = source.conn();
    for batch in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET")
                .arg(format!("bulk:{batch}:{i}"))
                .arg(&value)
                .ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    let spill_path = state.path().join("shard-0.spill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut max_spill = 0;
    while Instant::now() < deadline && max_spill == 0 {
        max_spill = max_spill.max(run.status.snapshot().spill_bytes);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        max_spill > 0,
        "nothing was spilled while the target was paused"
    );
    assert!(
        spill_path.exists(),
        "the spill file should be in the state folder"
    );

    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut target.conn())
        .unwrap();
    run.wait_caught_up(|| master_offset(&source)).await;
    assert_eq!(run.status.snapshot().spill_bytes, 0);
    assert!(!spill_path.exists(), "a drained spill file must be removed");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await;
}

/// Issue 27 item 10: a source that refuses `PSYNC` and `SYNC` (managed services rename
/// them) stopped the shard with the server's "unknown command" and no word that
/// replication is disabled there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_psync_says_replication_is_disabled_there() {
    let source = Server::start(ServerOptions {
        extra_config: vec![
            ("rename-command".into(), "PSYNC \"\"".into()),
            ("rename-command".into(), "SYNC \"\"".into()),
        ],
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let state = tempfile::tempdir().unwrap();
    let run = start(
        &source.addr(),
        &target.addr(),
        state.path(),
        EngineOptions::default(),
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), run.task)
        .await
        .expect("the shard stops by itself")
        .unwrap();
    let err = exit
        .expect_err("a source without PSYNC cannot be synced")
        .to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PSYNC"), "the server's refusal: {err}");
    assert!(
        err.contains("replication is disabled"),
        "a hint that the source does not allow replication: {err}"
    );
}
