//! The links to the target cut during the snapshot load (a TCP proxy in the test kit):
//! the shard retries what was in flight and finishes the same snapshot; it does not fail,
//! does not start a second full sync, and the target ends equal to the source.

mod common;

use std::time::Duration;

use common::start;
use rsm_engine::status::Phase;
use rsm_engine::EngineOptions;
use rsm_testkit::{redis, Proxy, Server, ServerOptions, Snapshot};

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
    let run = start(
        &source.addr(),
        &proxy.addr(),
        state.path(),
        EngineOptions::default(),
        64 << 20,
    );
    let mut cut = 0;
    for at in [20_000u64, 90_000] {
        run.wait_for("keys loading", 120, |s| s.keys_applied >= at)
            .await;
        assert_eq!(
            run.status.snapshot().phase,
            Phase::LoadingRdb,
            "the snapshot ended before the cut at {at} keys"
        );
        cut += proxy.reset_all();
    }
    assert!(cut >= 2, "no target connection was cut");
    run.wait_caught_up(&source).await;
    let snap = run.status.snapshot();
    assert_eq!(
        snap.full_syncs, 1,
        "a second full sync: {:?}",
        snap.last_error
    );
    assert_eq!(snap.keys_failed, 0);
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await.unwrap();
}
