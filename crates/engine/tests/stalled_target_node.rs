//! A target node that stops answering (SIGSTOP) while the tool must reconnect to it —
//! it accepts TCP, since the kernel does, but never replies — holds up only its own slots:
//! the keys of the other masters keep arriving, and everything converges after SIGCONT.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsm_client::Endpoint;
use rsm_engine::shard::{run_shard, ShardSpec};
use rsm_engine::status::{Phase, ShardStatus};
use rsm_engine::EngineOptions;
use rsm_testkit::{key_slot, redis, Cluster, ClusterOptions, Server, ServerOptions, Snapshot};
use tokio::sync::{watch, Semaphore};

fn master_offset(server: &Server) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

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

async fn wait_caught_up(status: &ShardStatus, source: &Server, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status.snapshot();
        assert_ne!(s.phase, Phase::Failed, "{:?}", s.last_error);
        let want = master_offset(source);
        if s.phase == Phase::Streaming && want > 0 && s.applied_offset >= want {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let spec = ShardSpec {
        serial: 0,
        source: source.addr().parse::<Endpoint>().unwrap(),
        source_credentials: None,
        target: target.seed_addr().parse::<Endpoint>().unwrap(),
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
    wait_caught_up(&status, &source, 60).await;

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

    wait_caught_up(&status, &source, 90).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
