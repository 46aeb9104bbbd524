//! A target node that stops answering (SIGSTOP) while the tool must reconnect to it —
//! it accepts TCP, since the kernel does, but never replies — holds up only its own slots:
//! the keys of the other masters keep arriving, and everything converges after SIGCONT.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{signal, start};
use rsm_engine::EngineOptions;
use rsm_testkit::{key_slot, redis, Cluster, ClusterOptions, Server, ServerOptions, Snapshot};

/// The index of the target master that owns `key`.
fn owner(target: &Cluster, key: &str) -> usize {
    let slot = key_slot(key.as_bytes());
    (0..target.masters().len())
        .find(|&m| {
            let (a, b) = target.master_slot_range(m);
            (a..=b).contains(&slot)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_target_node_does_not_stall_the_others() {
    let source = Server::start(ServerOptions::default());
    // A long node timeout: the cluster must not declare the stopped master failed (and
    // stop serving every slot) during the test.
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        extra_config: vec![("cluster-node-timeout".into(), "60000".into())],
        ..Default::default()
    });
    {
        let mut c = source.conn();
        for i in 0..300 {
            let _: () = redis::cmd("SET")
                .arg(format!("before:{i}"))
                .arg(i)
                .query(&mut c)
                .unwrap();
        }
    }
    let state = tempfile::tempdir().unwrap();
    let run = start(
        &source.addr(),
        &target.seed_addr(),
        state.path(),
        EngineOptions::default(),
        64 << 20,
    );
    run.wait_caught_up(&source).await;

    // Cut the tool's connections to master 0, then stop it: the writer has to reconnect
    // to a node that accepts the connection and never answers.
    let stalled = &target.masters()[0];
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut stalled.conn())
        .unwrap();
    signal(stalled.pid(), "-STOP");
    let stopped_at = Instant::now();

    let mut src = source.conn();
    let mut lags = Vec::new();
    let mut i = 0;
    while stopped_at.elapsed() < Duration::from_secs(10) {
        // One write for the stopped master's slots (it must not hold up the rest) ...
        let key = loop {
            i += 1;
            let k = format!("during:{i}");
            if owner(&target, &k) == 0 {
                break k;
            }
        };
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut src).unwrap();
        // ... then one for another master, timed until the target has it.
        let (key, m) = loop {
            i += 1;
            let k = format!("during:{i}");
            let m = owner(&target, &k);
            if m != 0 {
                break (k, m);
            }
        };
        let written = Instant::now();
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut src).unwrap();
        let mut dst = target.masters()[m].conn();
        loop {
            let v: Option<i64> = redis::cmd("GET").arg(&key).query(&mut dst).unwrap();
            if v == Some(i) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "{key} (master {m}) not on the target 5 s after it was written, {:?} into the stall",
                stopped_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lags.push(written.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(stalled.pid(), "-CONT");
    let worst = lags.iter().max().copied().unwrap_or_default();
    assert!(lags.len() >= 20, "only {} probes in 10 s", lags.len());
    assert!(
        worst < Duration::from_secs(1),
        "keys of the healthy masters took up to {worst:?} to arrive while master 0 was stopped"
    );

    run.wait_caught_up(&source).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await.unwrap();
}
