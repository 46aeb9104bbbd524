//! The links to the target cut during the snapshot load (a TCP proxy in the test kit):
//! the shard retries what was in flight and finishes the same snapshot; it does not fail,
//! does not start a second full sync, and the target ends equal to the source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsm_client::Endpoint;
use rsm_engine::shard::{run_shard, ShardSpec};
use rsm_engine::status::{Phase, ShardSnapshot, ShardStatus};
use rsm_engine::EngineOptions;
use rsm_testkit::{redis, Proxy, Server, ServerOptions, Snapshot};
use tokio::sync::{watch, Semaphore};

fn master_offset(server: &Server) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_for(status: &ShardStatus, what: &str, done: impl Fn(&ShardSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status.snapshot();
        assert_ne!(s.phase, Phase::Failed, "{what}: {:?}", s.last_error);
        if done(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within 120 s: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_connections_reset_during_the_snapshot_are_retried() {
    use rand::{Rng, SeedableRng};
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    let proxy = Proxy::start(&target.addr());
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut c = source.conn();
    let n = 200_000;
    for start in (0..n).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..start + 1000 {
            let v: Vec<u8> = (0..100).map(|_| rng.random()).collect();
            pipe.cmd("SET").arg(format!("k:{i:07}")).arg(v).ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    // A list, so a re-sent write that is not idempotent would show.
    for i in 0..100 {
        let _: i64 = redis::cmd("RPUSH")
            .arg("list")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }

    let state = tempfile::tempdir().unwrap();
    let spec = ShardSpec {
        serial: 0,
        source: source.addr().parse::<Endpoint>().unwrap(),
        source_credentials: None,
        target: proxy.addr().parse::<Endpoint>().unwrap(),
        target_credentials: None,
        options: EngineOptions::default(),
        state_dir: state.path().to_path_buf(),
        listening_port: 0,
        spool_memory: 64 << 20,
    };
    let status = ShardStatus::new(0, source.addr(), "master".into(), "0-16383".into());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_shard(
        spec,
        status.clone(),
        Arc::new(Semaphore::new(1)),
        stop_rx,
    ));
    let mut cut = 0;
    for at in [20_000u64, 90_000] {
        wait_for(&status, "keys loading", |s| s.keys_applied >= at).await;
        assert_eq!(
            status.snapshot().phase,
            Phase::LoadingRdb,
            "the snapshot ended before the cut at {at} keys"
        );
        cut += proxy.reset_all();
    }
    assert!(cut >= 2, "no target connection was cut");
    wait_for(&status, "caught up", |s| {
        let want = master_offset(&source);
        s.phase == Phase::Streaming && want > 0 && s.applied_offset >= want
    })
    .await;
    let snap = status.snapshot();
    assert_eq!(
        snap.full_syncs, 1,
        "a second full sync: {:?}",
        snap.last_error
    );
    assert_eq!(snap.keys_failed, 0);
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
