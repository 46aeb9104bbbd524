//! Benchmark of `redis-sync-manager verify` (not a test; prints figures).
//!
//! Starts two local 3-master clusters, fills both with the kit's mixed dataset
//! (same seed, so the data is equal; stream consumers' seen-times differ, so
//! streams take the element path rather than the DUMP fast path), then times
//! `verify --mode=quick` and `--mode=full` against a redis-py baseline
//! (`scripts/bench-verify-baseline.py`, one process per source master).
//!
//! ```sh
//! CARGO_TARGET_DIR=… cargo build -p redis-sync-manager --bins --examples
//! BENCH_KEYS_PER_TYPE=33334 …/examples/bench_verify     # ~200k keys
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rsm_testkit::{fill_mixed, Cluster, ClusterOptions, FillOptions};

fn main() {
    let per_type: usize = std::env::var("BENCH_KEYS_PER_TYPE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(33_334);
    // The binary sits beside the examples directory.
    let exe = std::env::current_exe().expect("own path");
    let bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("redis-sync-manager"))
        .expect("target dir");
    assert!(bin.exists(), "build the binary first: {}", bin.display());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("scripts/bench-verify-baseline.py");

    let source = Cluster::start(ClusterOptions::default());
    let target = Cluster::start(ClusterOptions::default());
    let fill = FillOptions {
        keys_per_type: per_type,
        ttl_every: 5,
        big_every: 200,
        ..Default::default()
    };
    let t = Instant::now();
    // Both at once, so that each key's relative TTL is set at about the same
    // moment on both sides and the expiry times agree within the tolerance.
    let report = std::thread::scope(|s| {
        let other = s.spawn(|| fill_mixed(&target, &fill));
        let report = fill_mixed(&source, &fill);
        other.join().expect("target fill");
        report
    });
    println!(
        "dataset: {} keys per cluster (6 types, every 5th with a TTL, every 200th big), filled in {:.1}s",
        report.keys,
        t.elapsed().as_secs_f64()
    );

    let masters: Vec<String> = source.masters().iter().map(|m| m.addr()).collect();
    let mut ours = Vec::new();
    for mode in ["quick", "full"] {
        let t = Instant::now();
        let out = Command::new(&bin)
            .args([
                "verify",
                &format!("--from={}", source.seed_addr()),
                &format!("--target={}", target.seed_addr()),
                &format!("--mode={mode}"),
            ])
            .output()
            .expect("run verify");
        let secs = t.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!(
            "verify {mode}: exit {:?}, {secs:.2}s, {:.0} keys/s\n{}",
            out.status.code(),
            report.keys as f64 / secs,
            stdout.lines().next().unwrap_or("")
        );
        ours.push(secs);
    }
    let mut base = Vec::new();
    for mode in ["quick", "full"] {
        let t = Instant::now();
        let out = Command::new("python3")
            .arg(&script)
            .arg(mode)
            .arg(target.seed_addr())
            .args(&masters)
            .output()
            .expect("run the baseline (pip install redis)");
        let secs = t.elapsed().as_secs_f64();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        base.push(secs);
    }
    println!(
        "ratio (baseline time / verify time): quick {:.2}x, full {:.2}x",
        base[0] / ours[0],
        base[1] / ours[1]
    );
}
