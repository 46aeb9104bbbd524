//! A shard follows its source across failovers: a 1-master + 1-replica source
//! cluster syncs into a standalone target; the replica takes over mid-stream
//! (`CLUSTER FAILOVER`, or the master is killed); writes go on to the new
//! master; the engine must continue there with PSYNC, without a second full
//! sync where the history allows, and the target must equal the source
//! (independent compare).

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
use rsm_engine::shard::{run_shard, ShardError, ShardExit, ShardSpec};
use rsm_engine::EngineOptions;
use rsm_status::{Phase, ShardStatus};
use rsm_testkit::{
    fill_mixed, redis, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Snapshot,
};
use tokio::sync::{watch, Semaphore};

struct Running {
    status: Arc<ShardStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<ShardExit, ShardError>>,
}

fn start(source: &str, target: &str, state: &std::path::Path) -> Running {
    let spec = ShardSpec {
        serial: 0,
        source: source.parse::<Endpoint>().unwrap(),
        source_credentials: None,
        target: target.parse::<Endpoint>().unwrap(),
        target_seeds: Default::default(),
        target_credentials: None,
        source_tls: None,
        target_tls: None,
        options: EngineOptions::default(),
        state_dir: state.to_path_buf(),
        spool_memory: rsm_engine::shard::DEFAULT_SPOOL_MEMORY,
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

fn master_offset(server: &Server) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn role(server: &Server) -> String {
    server.info_field("replication", "role").unwrap_or_default()
}

/// Writes straight to one node (the only master owns every slot).
fn writes(server: &Server, prefix: &str, n: usize) {
    let mut c = server.conn();
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:s:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
        let _: i64 = redis::cmd("RPUSH")
            .arg(format!("{prefix}:l:{}", i % 7))
            .arg(i)
            .query(&mut c)
            .unwrap();
        let _: i64 = redis::cmd("HINCRBY")
            .arg(format!("{prefix}:h"))
            .arg(format!("f{}", i % 13))
            .arg(1)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:ttl"))
        .arg("v")
        .arg("EX")
        .arg(3600)
        .query(&mut c)
        .unwrap();
}

impl Running {
    /// Wait until the shard streams from `node` and has applied its offset.
    async fn wait_caught_up_on(&self, node: &Server) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let snap = self.status.snapshot();
            assert!(
                snap.phase != Phase::Failed,
                "shard failed: {:?}",
                snap.last_error
            );
            let want = master_offset(node);
            if snap.phase == Phase::Streaming
                && snap.source == node.addr()
                && snap.applied_offset >= want
                && want > 0
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not caught up on {} after 90s: {snap:#?}, its offset {want}",
                node.addr()
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

fn wait_role(server: &Server, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(server) != want {
        assert!(
            Instant::now() < deadline,
            "{} did not become {want}",
            server.addr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_is_followed_with_psync_continue() {
    let source = Cluster::start(ClusterOptions {
        masters: 1,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 150,
            ..Default::default()
        },
    );
    let old_master = &source.masters()[0];
    let replica = &source.replicas_of(0)[0];
    let state = tempfile::tempdir().unwrap();
    let run = start(&old_master.addr(), &target.addr(), state.path());
    run.wait_caught_up_on(old_master).await;
    writes(old_master, "before", 200);
    run.wait_caught_up_on(old_master).await;

    // The replica takes over (a coordinated failover: no write is lost).
    replica.cmd(&[b"CLUSTER", b"FAILOVER"]);
    wait_role(replica, "master");
    wait_role(old_master, "slave");
    writes(replica, "after", 300);
    run.wait_caught_up_on(replica).await;
    writes(replica, "later", 50);
    run.wait_caught_up_on(replica).await;

    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    let snap = run.status.snapshot();
    assert_eq!(
        snap.full_syncs, 1,
        "the failover cost a second full sync: {snap:#?}"
    );
    assert_eq!(snap.source, replica.addr());
    assert_eq!(snap.planned_source, old_master.addr());
    assert_eq!(snap.source_moves.len(), 1, "{:?}", snap.source_moves);
    assert_eq!(snap.source_moves[0].from, old_master.addr());
    assert_eq!(snap.source_moves[0].to, replica.addr());

    // The checkpoint names the new node, and a restart planned on the old
    // one (now a replica of the same slots) still continues without a full sync.
    let cp = std::fs::read_to_string(state.path().join("shard-0.checkpoint")).unwrap();
    assert!(cp.contains(&replica.addr()), "{cp}");
    run.stop().await;
    writes(replica, "offline", 40);
    let run = start(&replica.addr(), &target.addr(), state.path());
    run.wait_caught_up_on(replica).await;
    assert_eq!(
        run.status.snapshot().full_syncs,
        0,
        "restart did a full sync"
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_master_is_followed_to_the_promoted_replica() {
    // An election needs a majority of masters: three shards, the first one followed.
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        // A quick failure detection keeps the test short.
        extra_config: vec![("cluster-node-timeout".into(), "1500".into())],
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let old_master = &source.masters()[0];
    let replica = &source.replicas_of(0)[0];
    // A hash tag of the first shard's slots, so plain writes to one node work.
    let (lo, hi) = source.master_slot_range(0);
    let tag = (0..)
        .map(|i| format!("{{t{i}}}"))
        .find(|t| {
            let slot = rsm_testkit::key_slot(t.as_bytes());
            (lo..=hi).contains(&slot)
        })
        .unwrap();
    writes(old_master, &tag, 300);
    let state = tempfile::tempdir().unwrap();
    let run = start(&old_master.addr(), &target.addr(), state.path());
    run.wait_caught_up_on(old_master).await;
    writes(old_master, &format!("{tag}before"), 100);
    run.wait_caught_up_on(old_master).await;
    // The replica has everything the engine applied before the master dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica
        .info_field("replication", "slave_repl_offset")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        < master_offset(old_master)
    {
        assert!(Instant::now() < deadline, "replica does not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }

    old_master.kill();
    wait_role(replica, "master");
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = format!("{tag}probe");
    while replica.try_cmd(&[b"SET", probe.as_bytes(), b"1"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "promoted replica takes no writes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writes(replica, &format!("{tag}after"), 200);
    run.wait_caught_up_on(replica).await;
    // The shard's node against the target: the target holds this shard only.
    Snapshot::of(replica).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    let snap = run.status.snapshot();
    assert_eq!(
        snap.full_syncs, 1,
        "the promoted replica should continue the history: {snap:#?}"
    );
    assert_eq!(snap.source, replica.addr());
    run.stop().await;
}
