//! The README's demo: two throwaway local clusters, data in, a live migration
//! with writes going on, an independent comparison, everything stopped.
//!
//! Run it through `scripts/demo.sh`, which builds the manager first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{fill_mixed, redis, Cluster, ClusterOptions, FillOptions, Snapshot};

fn main() {
    let manager = std::env::var("RSM_MANAGER_BIN")
        .unwrap_or_else(|_| "target/release/redis-sync-manager".into());
    println!("demo: starting a source cluster (3 masters + 3 replicas) and a target cluster (4 masters)…");
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 4,
        replicas_per_master: 0,
        ..Default::default()
    });
    println!(
        "demo: loading a mixed dataset (strings, lists, sets, sorted sets, hashes, streams, TTLs)…"
    );
    let report = fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 5000,
            ..Default::default()
        },
    );
    println!("demo: {report:?}");

    let logs = tempfile::tempdir().expect("temp dir");
    let http_port = rsm_testkit::PortLease::acquire();
    let mut child = Command::new(&manager)
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg(format!("--logfile={}", logs.path().join("redis-sync-manager.log").display()))
        .arg(format!("--httpport={}", http_port.port()))
        .arg("--sync-parallel=2")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {manager}: {e} (build it with: cargo build --release -p redis-sync-manager)"));
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("  | {line}");
        }
    });

    // Writes keep arriving during the migration, as in production.
    let writer_cluster = source.seed_addr();
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop_load.clone();
    let load = std::thread::spawn(move || write_load(&writer_cluster, &stop2));

    wait_ready(&mut child, http_port.port(), Duration::from_secs(300));
    println!(
        "demo: all shards streaming; stopping the write load and waiting for the last writes…"
    );
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = load.join().expect("load thread");
    println!("demo: the write load made {written} writes during the migration");
    std::thread::sleep(Duration::from_secs(1));
    wait_ready(&mut child, http_port.port(), Duration::from_secs(120));

    println!("demo: comparing every key of the source with the target (independent reader)…");
    let src = Snapshot::of(&source);
    let dst = Snapshot::of(&target);
    let diffs = src.diff(&dst, Duration::from_secs(5));
    stop(&mut child);
    if diffs.is_empty() {
        println!(
            "demo: OK — {} keys identical in source and target",
            src.len()
        );
    } else {
        for d in diffs.iter().take(20) {
            println!("demo: difference: {d}");
        }
        eprintln!("demo: FAILED — {} differences", diffs.len());
        std::process::exit(1);
    }
}

fn write_load(seed: &str, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut client =
        rsm_testkit::ClusterConn::new(vec![seed.to_string()], None).expect("cluster client");
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
        let key = format!("load:{}", n % 5000);
        let _ = client.cmd_on_key(key.as_bytes(), &[b"INCR", key.as_bytes()]);
        let lkey = format!("loadlist:{}", n % 500);
        let _ = client.cmd_on_key(
            lkey.as_bytes(),
            &[b"RPUSH", lkey.as_bytes(), n.to_string().as_bytes()],
        );
        n += 2;
    }
    n
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn wait_ready(child: &mut Child, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("demo: the manager exited early with {status}");
            std::process::exit(1);
        }
        if let Some(body) = http_get(port, "/status") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if v["ready_for_cutover"].as_bool() == Some(true) {
                    return;
                }
            }
        }
        if Instant::now() > deadline {
            stop(child);
            eprintln!("demo: not ready for cutover within {limit:?}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stop(child: &mut Child) {
    // SIGTERM: the manager drains, writes checkpoints and prints its summary.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let _ = redis::Value::Nil;
}
