//! The links to the target cut (a TCP proxy in the test kit) during the snapshot load: the
//! shard retries what was in flight and finishes the same snapshot; it does not fail, does
//! not start a second full sync, and the target ends equal to the source. And cut during
//! the stream under a load of commands that are not safe to apply twice: what was in
//! flight is settled by the slot markers, so nothing is applied twice. And the replication
//! link to the source cut under that load: PSYNC continues each time, nothing twice.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{start, Running};
use rsm_engine::EngineOptions;
use rsm_status::Phase;
use rsm_testkit::{redis, MixedLoad, Proxy, Server, ServerOptions, Snapshot};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_connections_reset_during_the_stream_apply_every_write_once() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    let proxy = Proxy::start(&target.addr());
    let state = tempfile::tempdir().unwrap();
    let run = streaming_shard(&source.addr(), &proxy.addr(), state.path()).await;
    assert!(run.status.snapshot().exactly_once, "the target takes MULTI");
    let load = MixedLoad::on_server(&source, 50);
    let mut cut = 0;
    let mut applied_before = 0;
    for _ in 0..6 {
        // Cut while commands are in flight: wait until the shard applies more.
        run.wait_for("more applied", 60, |s| {
            s.commands_applied > applied_before + 200
        })
        .await;
        applied_before = run.status.snapshot().commands_applied;
        cut += proxy.reset_all();
    }
    assert!(
        cut >= 6,
        "the target connection was not cut each time ({cut})"
    );
    converged(run, load, &source, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_transactions_is_written_at_least_once_and_says_so() {
    let source = Server::start(ServerOptions::default());
    // What some proxies do: no MULTI.
    let target = Server::start(ServerOptions {
        extra_config: vec![("rename-command".into(), "MULTI \"\"".into())],
        ..Default::default()
    });
    let state = tempfile::tempdir().unwrap();
    let run = streaming_shard(&source.addr(), &target.addr(), state.path()).await;
    assert!(!run.status.snapshot().exactly_once);
    let load = MixedLoad::on_server(&source, 20);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(load.stop() > 50);
    run.wait_caught_up(&source).await;
    assert_eq!(run.status.snapshot().commands_failed, 0);
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_link_resets_under_a_non_idempotent_load_continue_and_apply_once() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    // The backlog must outlast each reconnect under this load, or a full sync is right.
    source.cmd(&[b"CONFIG", b"SET", b"repl-backlog-size", b"256mb"]);
    let link = Proxy::start(&source.addr());
    let state = tempfile::tempdir().unwrap();
    let run = streaming_shard(&link.addr(), &target.addr(), state.path()).await;
    let load = MixedLoad::on_server(&source, 50);
    let mut cut = 0;
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cut += link.reset_all();
        run.wait_for("streaming again", 60, |s| {
            s.phase == Phase::Streaming && s.reconnects > i
        })
        .await;
    }
    assert!(
        cut >= 5,
        "the replication link was not cut each time ({cut})"
    );
    converged(run, load, &source, &target).await;
}

/// One shard from `source` into `target`, waited for until it streams.
async fn streaming_shard(source: &str, target: &str, state: &std::path::Path) -> Running {
    let run = start(source, target, state, EngineOptions::default(), 64 << 20);
    run.wait_for("streaming", 60, |s| s.phase == Phase::Streaming)
        .await;
    run
}

/// Stop the load, wait until the target has the source's offset, then: no second full
/// sync, nothing failed, and every key equal by the servers' own reads.
async fn converged(run: Running, load: MixedLoad, source: &Server, target: &Server) {
    let rounds = load.stop();
    assert!(rounds > 300, "too little load: {rounds} rounds");
    run.wait_caught_up(source).await;
    let snap = run.status.snapshot();
    assert_eq!(
        snap.full_syncs, 1,
        "a second full sync (PSYNC did not continue): {:?}",
        snap.last_error
    );
    assert_eq!(snap.commands_failed, 0);
    Snapshot::of(source).assert_same(&Snapshot::of(target), Duration::from_secs(5));
    run.stop().await.unwrap();
}
