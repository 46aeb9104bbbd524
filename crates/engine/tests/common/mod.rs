//! Helpers shared by the engine's fault tests: run one shard in the test's runtime, read
//! a server's replication offset, signal a server process by its PID, wait for a status.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsm_client::Endpoint;
use rsm_engine::shard::{run_shard, ShardError, ShardExit, ShardSpec};
use rsm_engine::EngineOptions;
use rsm_status::{Phase, ShardSnapshot, ShardStatus};
use rsm_testkit::Server;
use tokio::sync::{watch, Semaphore};

/// One shard's engine running as a task.
pub struct Running {
    pub status: Arc<ShardStatus>,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<ShardExit, ShardError>>,
}

pub fn start(
    source: &str,
    target: &str,
    state: &Path,
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
    /// Poll the status until `done` holds; fail at once if the shard failed.
    pub async fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&ShardSnapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let snap = self.status.snapshot();
            assert!(
                snap.phase != Phase::Failed,
                "shard failed while waiting for {what}: {:?}",
                snap.last_error
            );
            if done(&snap) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs}s: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Streaming, with the applied offset at the source's own.
    pub async fn wait_caught_up(&self, source: &Server) {
        self.wait_for("caught up", 120, |s| {
            let want = master_offset(source);
            s.phase == Phase::Streaming && want > 0 && s.applied_offset >= want
        })
        .await;
    }

    pub async fn stop(self) -> Result<ShardExit, ShardError> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("stops within 60s")
            .unwrap()
    }
}

pub fn master_offset(server: &Server) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `kill SIG PID` for a server this test started.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}
