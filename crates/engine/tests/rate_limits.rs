//! `--max-bandwidth` and `--max-ops` on real servers: the rate seen from outside (the
//! shard's received snapshot bytes; the target's own command counters) stays within 10 %
//! of the limit, and nothing is lost on the way.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod writer_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsm_engine::{EngineOptions, Limits};
use rsm_status::Phase;
use rsm_testkit::redis;
use rsm_testkit::{Server, ServerOptions, Snapshot};

/// Values that LZF cannot shrink much, so the RDB is about as big as the data.
fn fill_incompressible(server: &Server, keys: usize, value_len: usize) {
    let mut c = server.conn();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for batch in 0..keys.div_ceil(500) {
        let mut p = redis::pipe();
        for i in batch * 500..((batch + 1) * 500).min(keys) {
            let value: Vec<u8> = (0..value_len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            p.cmd("SET").arg(format!("k:{i}")).arg(value).ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
}

/// (seconds since the first, value) samples → the rate between the first and the last
/// change of the value, and the highest rate over any `window` of samples.
fn rates(samples: &[(f64, u64)], window: f64) -> (f64, f64) {
    let first = samples.iter().position(|s| s.1 > 0).expect("some progress");
    let total = samples.last().map_or(0, |s| s.1);
    let last = samples.iter().position(|s| s.1 == total).unwrap();
    let (t0, v0) = (samples[first.saturating_sub(1)].0, 0);
    let overall = (total - v0) as f64 / (samples[last].0 - t0);
    let mut peak: f64 = 0.0;
    for (i, a) in samples.iter().enumerate() {
        if let Some(b) = samples[i..].iter().find(|b| b.0 - a.0 >= window) {
            peak = peak.max((b.1 - a.1) as f64 / (b.0 - a.0));
        }
    }
    (overall, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bandwidth_paces_the_snapshot_transfer() {
    const LIMIT: u64 = 2_000_000;
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    // ~6 MB of RDB: three seconds at the limit.
    fill_incompressible(&source, 3000, 2000);
    let state = tempfile::tempdir().unwrap();
    let limits = Limits::new(Some(LIMIT), None);
    let run = common::start(
        &source.addr(),
        &target.addr(),
        state.path(),
        EngineOptions {
            limits: limits.clone(),
            ..Default::default()
        },
        64 << 20,
    );
    let begin = Instant::now();
    let mut samples = Vec::new();
    loop {
        let snap = run.status.snapshot();
        assert!(snap.phase != Phase::Failed, "{:?}", snap.last_error);
        samples.push((begin.elapsed().as_secs_f64(), snap.rdb_bytes_received));
        if snap.phase == Phase::Streaming {
            break;
        }
        assert!(begin.elapsed() < Duration::from_secs(60), "{snap:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = samples.last().unwrap().1;
    assert!(total > 5_000_000, "RDB of {total} bytes");
    let (overall, peak) = rates(&samples, 1.0);
    eprintln!(
        "snapshot: {total} bytes at {:.2} MB/s overall, peak 1 s window {:.2} MB/s (limit 2)",
        overall / 1e6,
        peak / 1e6
    );
    let limit = LIMIT as f64;
    assert!(
        overall >= 0.9 * limit && overall <= 1.1 * limit,
        "overall {overall:.0} B/s vs limit {limit}"
    );
    // Published about every 100 ms, so a 1 s window may read up to ~10 % off either way;
    // the burst is 0.1 s worth.
    assert!(peak <= 1.25 * limit, "peak {peak:.0} B/s vs limit {limit}");
    let report = limits.report().snapshot_bytes.expect("limit on");
    assert_eq!(report.per_second, LIMIT);
    assert!(report.total >= total, "{report:?} < {total}");
    assert!(report.waited_ms >= 2000, "{report:?}");
    run.wait_caught_up(&source).await;
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    run.stop().await.unwrap();
}

/// The server's count of `cmd` calls, from its own `INFO commandstats` over `c`.
fn calls(c: &mut redis::Connection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ops_bounds_the_commands_sent_to_the_target() {
    const LIMIT: u64 = 5000;
    const KEYS: usize = 15_000;
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    fill_incompressible(&source, KEYS, 16);
    let rdb = writer_util::rdb_of(&source);

    // The target's RESTORE counter sampled from outside, every 50 ms.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        let mut c = target.conn();
        std::thread::spawn(move || {
            let begin = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let n = calls(&mut c, "restore");
                samples
                    .lock()
                    .unwrap()
                    .push((begin.elapsed().as_secs_f64(), n));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let limits = Limits::new(None, Some(LIMIT));
    let w = writer_util::restore(
        &rdb,
        &target.addr(),
        EngineOptions {
            limits: limits.clone(),
            ..Default::default()
        },
    )
    .await;
    std::thread::sleep(Duration::from_millis(120));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(w.failed(), 0, "{w}");
    assert_eq!(calls(&mut target.conn(), "restore"), KEYS as u64);
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    let samples = samples.lock().unwrap().clone();
    let (overall, peak) = rates(&samples, 1.0);
    eprintln!(
        "target: {KEYS} RESTOREs at {overall:.0}/s overall, peak 1 s window {peak:.0}/s (limit {LIMIT})"
    );
    let limit = LIMIT as f64;
    assert!(
        overall >= 0.9 * limit && overall <= 1.1 * limit,
        "overall {overall:.0}/s vs limit {limit}"
    );
    // Any second holds at most a second's worth plus the 0.1 s burst.
    assert!(peak <= 1.15 * limit, "peak {peak:.0}/s vs limit {limit}");
    let report = limits.report().target_ops.expect("limit on");
    assert_eq!((report.per_second, report.total), (LIMIT, KEYS as u64));
}
