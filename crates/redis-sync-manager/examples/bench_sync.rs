//! Sync benchmark of issue 5 ("Performance"): the release `redis-sync-manager` between two
//! local 3-master clusters, against baselines measured in the same run.
//!
//! 1. Full sync of `BENCH_KEYS` mixed keys (default 1 000 000: 60 % 100-byte strings, 10 % each
//!    8-member list / hash / set / zset — the writer bench's mix). Baselines: (a) `BGSAVE` on the
//!    three source masters at once, wall time until every `rdb_bgsave_in_progress:0`; (b) the
//!    target's ingestion limit, `redis-cli --pipe` of RESTORE streams built from the source's own
//!    `DUMP` of every key, one stream per target master, three in parallel. Then the manager with
//!    `--sync-parallel=3`, timed until `/status` says `ready_for_cutover` (which includes the
//!    status rule's 3 s of zero lag; the time until every shard caught up is reported as well).
//!    And (c), what the manager is compared with: a tuned key-by-key migrator (SCAN, pipelined
//!    DUMP + PTTL, pipelined RESTORE, reads and writes overlapped; [`scan_migrate`]).
//! 2. Incremental: with the manager streaming, the source's maximum SET rate is measured with
//!    `redis-benchmark --cluster -P 16 -c 50`, then a lighter shape (fewer clients, shallower
//!    pipeline, chosen by short calibration runs) close to half of it runs for `BENCH_LOAD_SECS`
//!    (20).
//!    Sampled all along: `/status` every 15 ms, each source master's `master_repl_offset` every
//!    5 ms (the offset history used for the time lag), and an end-to-end probe (a SET on the
//!    source, polled on the target) every 20 ms.
//!
//! Run (builds the manager first):
//!     CARGO_TARGET_DIR=/work/target-bench cargo build --release -p redis-sync-manager
//!     CARGO_TARGET_DIR=/work/target-bench cargo run --release -p redis-sync-manager --example bench_sync
//! Env: `BENCH_KEYS`, `BENCH_LOAD_SECS`, `RSM_MANAGER_BIN` (default
//! `$CARGO_TARGET_DIR/release/redis-sync-manager`), `BENCH_DISKLESS=1` for a diskless source
//! (delay 0) instead of the disk-based transfer that matches the BGSAVE baseline.
//! `BENCH_RATE=N` (default 100 000): the incremental load is N SET/s paced by the bench (no
//! maximum burst then); `BENCH_RATE=0` runs the calibrated redis-benchmark shapes below
//! instead. `BENCH_LOAD_KIND=incr` makes the paced load INCRs (the exactly-once path).
//! `BENCH_DATASET=issue13` (+ `BENCH_BIG`): the performance issue's dataset, see
//! [`issue_dataset`]. `--quick`: 100 000 keys (and big keys of 100 000), 8 s of load.
//! `BENCH_JSON=FILE`: the main figures as JSON.
//! `BENCH_PORT_RESTORE=1` adds (d): `redis-port restore` of the BGSAVE files into the
//! target, three at once (needs `redis-port` built next to the manager), the engine's load
//! path without replication. Every phase also reports the servers' own CPU (`INFO cpu`,
//! forks included) besides the machine's busy time: the floor no tool can go under here.
//! `BENCH_TIMELINE=FILE` writes every probe and /status sample with its time, for the lag's
//! shape over time.
//!
//! A benchmark program, not a test: it prints figures and stops only when the data did not
//! land (target key count differs from the source's).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rsm_testkit::redis::{self, Value};
use rsm_testkit::{key_slot, redis_cli_bin, Cluster, ClusterOptions, PortLease, Server};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The dataset: key `i` of `n`, with its kind. Deterministic, so the DUMP pass can walk it again.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    List,
    Hash,
    Set,
    Zset,
}

/// `BENCH_DATASET=issue13`: the performance issue's dataset — 70 % strings of 16–512 bytes,
/// the rest lists/hashes/sets/zsets of 10–50 elements, every 5th key with a TTL (an hour
/// away, so none expires during the run), plus `big:hash`, `big:list`, `big:set`, `big:zset`
/// of `BENCH_BIG` elements each (default 1 000 000). Otherwise the writer bench's mix.
fn issue_dataset() -> bool {
    std::env::var("BENCH_DATASET").is_ok_and(|d| d == "issue13")
}

const BIG_KEYS: [&str; 4] = ["big:hash", "big:list", "big:set", "big:zset"];

fn key_of(i: usize, n: usize) -> (String, Kind) {
    let strings = if issue_dataset() {
        n * 7 / 10
    } else {
        n * 6 / 10
    };
    if i < strings {
        return (format!("s:{i}"), Kind::Str);
    }
    let j = i - strings;
    match j % 4 {
        0 => (format!("l:{j}"), Kind::List),
        1 => (format!("h:{j}"), Kind::Hash),
        2 => (format!("e:{j}"), Kind::Set),
        _ => (format!("z:{j}"), Kind::Zset),
    }
}

fn command_for(key: &str, kind: Kind, i: usize) -> redis::Cmd {
    if issue_dataset() {
        return issue_command_for(key, kind, i);
    }
    match kind {
        Kind::Str => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(format!("{i:0>100}"));
            c
        }
        Kind::List => {
            let mut c = redis::cmd("RPUSH");
            c.arg(key);
            for j in 0..8 {
                c.arg(format!("item-{j}-{i}"));
            }
            c
        }
        Kind::Hash => {
            let mut c = redis::cmd("HSET");
            c.arg(key);
            for j in 0..8 {
                c.arg(format!("f{j}")).arg(format!("value-{i}-{j}"));
            }
            c
        }
        Kind::Set => {
            let mut c = redis::cmd("SADD");
            c.arg(key);
            for j in 0..8 {
                c.arg(format!("member-{j}-{i}"));
            }
            c
        }
        Kind::Zset => {
            let mut c = redis::cmd("ZADD");
            c.arg(key);
            for j in 0..8 {
                c.arg(j as f64 * 1.5).arg(format!("m{j}"));
            }
            c
        }
    }
}

/// Sizes spread by a multiplicative hash of `i`, so every size occurs on every master.
fn issue_command_for(key: &str, kind: Kind, i: usize) -> redis::Cmd {
    let spread = i.wrapping_mul(2_654_435_761) >> 7;
    let elements = 10 + spread % 41;
    let mut c = match kind {
        Kind::Str => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(format!("{i:x<0$}", 16 + spread % 497));
            return c;
        }
        Kind::List => redis::cmd("RPUSH"),
        Kind::Hash => redis::cmd("HSET"),
        Kind::Set => redis::cmd("SADD"),
        Kind::Zset => redis::cmd("ZADD"),
    };
    c.arg(key);
    for j in 0..elements {
        match kind {
            Kind::Hash => c.arg(format!("field-{j}")).arg(format!("value-{i}-{j}")),
            Kind::Zset => c.arg(j as f64 * 0.5 + i as f64).arg(format!("member-{j}")),
            _ => c.arg(format!("element-{j}-{i}")),
        };
    }
    c
}

/// The four big keys, each on its master, in commands of 1000 elements pipelined by 10.
fn generate_big(source: &Cluster, elements: usize) {
    let ranges: Vec<(u16, u16)> = (0..3).map(|m| source.master_slot_range(m)).collect();
    thread::scope(|s| {
        for key in BIG_KEYS {
            let server = &source.masters()[master_of(&ranges, key.as_bytes())];
            s.spawn(move || {
                let mut conn = server.conn();
                let mut p = redis::pipe();
                for start in (0..elements).step_by(1000) {
                    let end = (start + 1000).min(elements);
                    let mut c = redis::cmd(match key {
                        "big:hash" => "HSET",
                        "big:list" => "RPUSH",
                        "big:set" => "SADD",
                        _ => "ZADD",
                    });
                    c.arg(key);
                    for e in start..end {
                        match key {
                            "big:hash" => c.arg(format!("field-{e}")).arg(format!("value-{e}")),
                            "big:zset" => c.arg(e as f64).arg(format!("member-{e}")),
                            _ => c.arg(format!("element-{e}")),
                        };
                    }
                    p.add_command(c).ignore();
                    if (start / 1000) % 10 == 9 {
                        let _: () = p.query(&mut conn).expect("big key");
                        p = redis::pipe();
                    }
                }
                let _: () = p.query(&mut conn).expect("big key");
            });
        }
    });
}

fn master_of(ranges: &[(u16, u16)], key: &[u8]) -> usize {
    let slot = key_slot(key);
    ranges
        .iter()
        .position(|(a, b)| slot >= *a && slot <= *b)
        .unwrap_or(0)
}

/// One thread per source master writes the keys of its slots, pipelined by 1000.
fn generate(source: &Cluster, n: usize) {
    let ranges: Vec<(u16, u16)> = (0..3).map(|m| source.master_slot_range(m)).collect();
    thread::scope(|s| {
        for (m, server) in source.masters().iter().enumerate() {
            let ranges = &ranges;
            s.spawn(move || {
                let mut conn = server.conn();
                let mut p = redis::pipe();
                let mut queued = 0;
                for i in 0..n {
                    let (key, kind) = key_of(i, n);
                    if master_of(ranges, key.as_bytes()) != m {
                        continue;
                    }
                    p.add_command(command_for(&key, kind, i)).ignore();
                    if issue_dataset() && i % 5 == 0 {
                        p.cmd("PEXPIRE").arg(&key).arg(3_600_000 + i).ignore();
                    }
                    queued += 1;
                    if queued == 1000 {
                        let _: () = p.query(&mut conn).expect("generate");
                        p = redis::pipe();
                        queued = 0;
                    }
                }
                if queued > 0 {
                    let _: () = p.query(&mut conn).expect("generate");
                }
            });
        }
    });
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn dbsize(cluster: &Cluster) -> i64 {
    cluster
        .masters()
        .iter()
        .map(|m| int(&m.cmd(&[b"DBSIZE"])))
        .sum()
}

/// Keys other than the tool's own `__rsm:` markers (one per shard).
fn data_keys(cluster: &Cluster) -> i64 {
    let markers: i64 = cluster
        .masters()
        .iter()
        .map(|m| match m.cmd(&[b"KEYS", b"__rsm:*"]) {
            Value::Array(v) => v.len() as i64,
            _ => 0,
        })
        .sum();
    dbsize(cluster) - markers
}

fn info_u64(server: &Server, section: &str, field: &str) -> u64 {
    server
        .info_field(section, field)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Baseline (a): BGSAVE on every source master at once; wall time until all are done.
fn bgsave_all(source: &Cluster) -> Duration {
    let start = Instant::now();
    for m in source.masters() {
        m.cmd(&[b"BGSAVE"]);
    }
    loop {
        let running = source
            .masters()
            .iter()
            .any(|m| info_u64(m, "persistence", "rdb_bgsave_in_progress") != 0);
        if !running {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    for m in source.masters() {
        let st = m
            .info_field("persistence", "rdb_last_bgsave_status")
            .unwrap_or_default();
        assert_eq!(st.trim(), "ok", "BGSAVE failed on {}", m.addr());
    }
    took
}

fn bulk(out: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    write!(out, "${}\r\n", b.len())?;
    out.write_all(b)?;
    out.write_all(b"\r\n")
}

/// RESTORE streams for baseline (b), from the source's own DUMP of every key: one file per
/// target master. Both clusters split the slots the same way (asserted), so source master m's
/// keys all go to target master m.
fn restore_streams(source: &Cluster, target: &Cluster, n: usize, dir: &Path) -> Vec<PathBuf> {
    let ranges: Vec<(u16, u16)> = (0..3).map(|m| source.master_slot_range(m)).collect();
    let tranges: Vec<(u16, u16)> = (0..3).map(|m| target.master_slot_range(m)).collect();
    assert_eq!(ranges, tranges, "source and target split the slots alike");
    thread::scope(|s| {
        let handles: Vec<_> = source
            .masters()
            .iter()
            .enumerate()
            .map(|(m, server)| {
                let ranges = &ranges;
                s.spawn(move || {
                    let path = dir.join(format!("restore-{m}.resp"));
                    let mut out = BufWriter::new(File::create(&path).expect("stream file"));
                    let mut conn = server.conn();
                    let mut batch: Vec<String> = Vec::with_capacity(1000);
                    let mut flush_batch = |batch: &mut Vec<String>| {
                        let mut p = redis::pipe();
                        for k in batch.iter() {
                            p.cmd("DUMP").arg(k);
                            p.cmd("PTTL").arg(k);
                        }
                        let replies: Vec<Value> = p.query(&mut conn).expect("DUMP");
                        for (k, pair) in batch.iter().zip(replies.chunks(2)) {
                            let Value::BulkString(d) = &pair[0] else {
                                panic!("no DUMP of {k}")
                            };
                            let ttl = int(&pair[1]).max(0).to_string();
                            out.write_all(b"*4\r\n$7\r\nRESTORE\r\n").unwrap();
                            bulk(&mut out, k.as_bytes()).unwrap();
                            bulk(&mut out, ttl.as_bytes()).unwrap();
                            bulk(&mut out, d).unwrap();
                        }
                        batch.clear();
                    };
                    for i in 0..n {
                        let (key, _) = key_of(i, n);
                        if master_of(ranges, key.as_bytes()) != m {
                            continue;
                        }
                        batch.push(key);
                        if batch.len() == 1000 {
                            flush_batch(&mut batch);
                        }
                    }
                    if !batch.is_empty() {
                        flush_batch(&mut batch);
                    }
                    for key in BIG_KEYS.iter().filter(|_| issue_dataset()) {
                        if master_of(ranges, key.as_bytes()) == m {
                            batch.push(key.to_string());
                            flush_batch(&mut batch);
                        }
                    }
                    out.flush().unwrap();
                    path
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Baseline (b): the three streams through `redis-cli --pipe`, in parallel.
fn pipe_all(files: &[PathBuf], target: &Cluster) -> Duration {
    let start = Instant::now();
    let children: Vec<_> = files
        .iter()
        .zip(target.masters())
        .map(|(f, m)| {
            Command::new(redis_cli_bin())
                .args(["-p", &m.port().to_string(), "--pipe"])
                .stdin(File::open(f).expect("stream file"))
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-cli --pipe")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "redis-cli --pipe failed");
    }
    start.elapsed()
}

/// Baseline (c): a tuned key-by-key migrator, the way such tools work — per source master,
/// `SCAN COUNT 1000`, one pipeline of `DUMP` + `PTTL` per batch, and on a second thread
/// (so reading the source and writing the target overlap) one pipeline of `RESTORE` per batch
/// to each key's target master. Wall time until every master's last batch is acknowledged,
/// or the first error: a RESTORE of a big enough value blocks its target master for longer
/// than the cluster's node timeout, and the cluster refuses writes after it (CLUSTERDOWN).
fn scan_migrate(source: &Cluster, target: &Cluster) -> Result<Duration, String> {
    type Batch = Vec<(Vec<u8>, i64, Vec<u8>)>;
    let tranges: Vec<(u16, u16)> = (0..3).map(|m| target.master_slot_range(m)).collect();
    let start = Instant::now();
    thread::scope(|s| {
        let mut writers = Vec::new();
        for server in source.masters() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
            let mut src = server.conn();
            s.spawn(move || {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query(&mut src)
                        .expect("SCAN");
                    let mut p = redis::pipe();
                    for k in &keys {
                        p.cmd("DUMP").arg(k);
                        p.cmd("PTTL").arg(k);
                    }
                    let replies: Vec<Value> = p.query(&mut src).expect("DUMP");
                    let batch: Batch = keys
                        .into_iter()
                        .zip(replies.chunks(2))
                        .filter_map(|(k, pair)| match &pair[0] {
                            Value::BulkString(d) => Some((k, int(&pair[1]).max(0), d.clone())),
                            _ => None, // expired or deleted between SCAN and DUMP
                        })
                        .collect();
                    if tx.send(batch).is_err() {
                        break; // the writer failed
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            });
            let tranges = &tranges;
            let mut dst: Vec<_> = target.masters().iter().map(|m| m.conn()).collect();
            writers.push(s.spawn(move || -> Result<(), String> {
                for batch in rx {
                    let mut pipes: Vec<redis::Pipeline> =
                        (0..dst.len()).map(|_| redis::pipe()).collect();
                    for (k, ttl, payload) in &batch {
                        pipes[master_of(tranges, k)]
                            .cmd("RESTORE")
                            .arg(k)
                            .arg(*ttl)
                            .arg(payload);
                    }
                    for (p, conn) in pipes.iter().zip(dst.iter_mut()) {
                        let replies: Vec<Value> =
                            p.query(conn).map_err(|e| format!("RESTORE: {e}"))?;
                        if let Some(r) = replies.iter().find(|r| !matches!(r, Value::Okay)) {
                            return Err(format!("RESTORE refused: {r:?}"));
                        }
                    }
                }
                Ok(())
            }));
        }
        writers
            .into_iter()
            .try_for_each(|w| w.join().expect("migrator writer thread"))
    })?;
    Ok(start.elapsed())
}

/// After the migrator blocked a target master past the node timeout: until every target
/// node says `cluster_state:ok` again.
fn wait_cluster_ok(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while cluster.nodes().iter().any(|n| {
        n.info_field("cluster", "cluster_state")
            .as_deref()
            .map(str::trim)
            != Some("ok")
    }) {
        assert!(
            Instant::now() < deadline,
            "the target cluster did not recover"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn status(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name in parentheses: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// CPU seconds the whole machine spent busy so far (every process: the servers, their
/// forks, the tool), from /proc/stat; and how many CPUs it has.
fn machine_busy() -> (f64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut lines = stat.lines();
    let total = lines.next().map_or(0.0, |l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait
        [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| f.get(i).copied().unwrap_or(0))
            .sum::<u64>() as f64
            / 100.0
    });
    let cpus = lines.filter(|l| l.starts_with("cpu")).count().max(1);
    (total, cpus)
}

/// CPU seconds the masters of these clusters spent so far, their forks (BGSAVE, a replica's
/// snapshot) included: `INFO cpu`. The part of the machine's work that is the servers' own,
/// with no client's share in it.
fn servers_cpu(clusters: &[&Cluster]) -> f64 {
    cpu_fields(
        clusters,
        &[
            "used_cpu_user",
            "used_cpu_sys",
            "used_cpu_user_children",
            "used_cpu_sys_children",
        ],
    )
}

/// The same without the forks: the server process that serves the clients. What a sync
/// costs the source's clients is this part.
fn servers_own_process_cpu(cluster: &Cluster) -> f64 {
    cpu_fields(&[cluster], &["used_cpu_user", "used_cpu_sys"])
}

fn cpu_fields(clusters: &[&Cluster], fields: &[&str]) -> f64 {
    let field = |m: &Server, f: &str| {
        m.info_field("cpu", f)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    clusters
        .iter()
        .flat_map(|c| c.masters())
        .map(|m| fields.iter().map(|f| field(m, f)).sum::<f64>())
        .sum()
}

/// What the masters of a cluster have done so far, summed: calls and microseconds per
/// command (`INFO commandstats`), and the reads and writes of client sockets
/// (`total_reads_processed`, `total_writes_processed`). Diffed between two points, it shows
/// how differently two clients made the servers work for the same data.
fn server_work(cluster: &Cluster) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in cluster.masters() {
        let text = match m.cmd(&[b"INFO", b"commandstats"]) {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => String::new(),
        };
        for line in text.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |f: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(f))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let e = out.entry(name.to_string()).or_default();
            e.0 += field("calls=");
            e.1 += field("usec=");
        }
        for f in ["total_reads_processed", "total_writes_processed"] {
            out.entry(f.to_string()).or_default().0 += info_u64(m, "stats", f);
        }
    }
    out
}

/// `after − before`, the busiest first, as one line.
fn work_delta(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> String {
    let mut rows: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(k, &(c, u))| {
            let (c0, u0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), c - c0, u - u0)
        })
        .filter(|r| r.1 > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.2, r.1)));
    rows.iter()
        .map(|(k, c, u)| {
            if u > &0 {
                format!("{k} {c} calls {:.2} s", *u as f64 / 1e6)
            } else {
                format!("{k} {c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One `/status` sample, per shard keyed by its source address.
struct StatusSample {
    t: f64,
    shards: BTreeMap<String, ShardSample>,
}

#[derive(Clone, Copy)]
struct ShardSample {
    applied: u64,
    lag_bytes: u64,
    commands: u64,
}

fn shard_samples(v: &serde_json::Value) -> BTreeMap<String, ShardSample> {
    let mut out = BTreeMap::new();
    for s in v["shards"].as_array().into_iter().flatten() {
        let Some(src) = s["source"].as_str() else {
            continue;
        };
        out.insert(
            src.to_string(),
            ShardSample {
                applied: s["applied_offset"].as_u64().unwrap_or(0),
                lag_bytes: s["lag_bytes"].as_u64().unwrap_or(0),
                commands: s["commands_applied"].as_u64().unwrap_or(0),
            },
        );
    }
    out
}

/// (seconds since the bench's epoch, master_repl_offset) per source master.
type OffsetHistory = Arc<Mutex<BTreeMap<String, Vec<(f64, u64)>>>>;

/// When did the source's offset reach `off`? Linear interpolation in the history.
fn time_reached(hist: &[(f64, u64)], off: u64) -> Option<f64> {
    let i = hist.partition_point(|&(_, o)| o < off);
    if i >= hist.len() {
        return None;
    }
    if i == 0 {
        return Some(hist[0].0);
    }
    let (t0, o0) = hist[i - 1];
    let (t1, o1) = hist[i];
    let frac = (off - o0) as f64 / (o1 - o0).max(1) as f64;
    Some(t0 + frac * (t1 - t0))
}

/// The source's offset at time `t`, interpolated.
fn offset_at(hist: &[(f64, u64)], t: f64) -> Option<u64> {
    let i = hist.partition_point(|&(ht, _)| ht < t);
    if i == 0 || i >= hist.len() {
        return hist.last().filter(|_| i > 0).map(|&(_, o)| o);
    }
    let (t0, o0) = hist[i - 1];
    let (t1, o1) = hist[i];
    let frac = (t - t0) / (t1 - t0).max(1e-9);
    Some(o0 + ((o1 - o0) as f64 * frac) as u64)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() - 1) as f64 * p).round() as usize;
    v[idx]
}

/// `redis-benchmark --cluster` SET; returns requests/s it reported.
fn benchmark(seed_port: u16, clients: usize, pipeline: usize, requests: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "--cluster",
            "-h",
            "127.0.0.1",
            "-p",
            &seed_port.to_string(),
            "-t",
            "set",
            "-d",
            "100",
            "-r",
            "1000000",
            "-c",
            &clients.to_string(),
            "-P",
            &pipeline.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("\"SET\""))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("cannot read redis-benchmark output: {text}"))
}

/// SETs of 100-byte values at `rate` per second for `secs`, spread evenly over the three
/// masters: every 2 ms each master's connection gets one pipeline of what is due. Returns
/// the rate achieved.
fn paced_load(source: &Cluster, rate: f64, secs: f64) -> f64 {
    let ranges: Vec<(u16, u16)> = (0..3).map(|i| source.master_slot_range(i)).collect();
    let mut keys: Vec<Vec<String>> = vec![Vec::new(); 3];
    for j in 0..300_000 {
        let k = format!("load:{j}");
        keys[master_of(&ranges, k.as_bytes())].push(k);
    }
    let value = "v".repeat(100);
    let per_master = rate / 3.0;
    // INCR is not safe to apply twice: the manager writes each in a transaction with its
    // slot's marker (exactly-once), the costlier path.
    let incr = std::env::var("BENCH_LOAD_KIND").is_ok_and(|k| k == "incr");
    let threads: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(m, keys)| {
            let mut conn = source.masters()[m].conn();
            let value = value.clone();
            thread::spawn(move || {
                let begin = Instant::now();
                let mut sent = 0u64;
                let mut next = 0usize;
                while begin.elapsed().as_secs_f64() < secs {
                    let due = (begin.elapsed().as_secs_f64() * per_master) as u64;
                    let n = due.saturating_sub(sent).min(5000);
                    if n > 0 {
                        let mut p = redis::pipe();
                        for _ in 0..n {
                            let key = &keys[next % keys.len()];
                            if incr {
                                p.cmd("INCR").arg(key).ignore();
                            } else {
                                p.cmd("SET").arg(key).arg(&value).ignore();
                            }
                            next += 1;
                        }
                        p.query::<()>(&mut conn).expect("paced SETs");
                        sent += n;
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                (sent, begin.elapsed().as_secs_f64())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            let (n, s) = t.join().expect("load thread");
            n as f64 / s
        })
        .sum()
}

/// SET and INCR calls on the source masters (the load's commands).
fn set_calls(source: &Cluster) -> u64 {
    let calls = |m: &Server, stat: &str| {
        m.info_field("commandstats", stat)
            .and_then(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|c| c.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    source
        .masters()
        .iter()
        .map(|m| calls(m, "cmdstat_set") + calls(m, "cmdstat_incr"))
        .sum()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn main() {
    // `--quick`: the same phases at a tenth of the size (under 3 minutes here).
    let quick = std::env::args().any(|a| a == "--quick");
    let n = env_usize("BENCH_KEYS", if quick { 100_000 } else { 1_000_000 });
    let big = if issue_dataset() {
        env_usize("BENCH_BIG", if quick { 100_000 } else { 1_000_000 })
    } else {
        0
    };
    let total = n + if big > 0 { BIG_KEYS.len() } else { 0 };
    let load_secs = env_usize("BENCH_LOAD_SECS", if quick { 8 } else { 20 }) as f64;
    let diskless = std::env::var("BENCH_DISKLESS").is_ok_and(|v| v == "1");
    let manager = std::env::var("RSM_MANAGER_BIN").unwrap_or_else(|_| {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{dir}/release/redis-sync-manager")
    });
    assert!(
        Path::new(&manager).exists(),
        "{manager} missing: cargo build --release -p redis-sync-manager (or set RSM_MANAGER_BIN)"
    );

    let source_cfg = if diskless {
        vec![
            ("repl-diskless-sync".into(), "yes".into()),
            ("repl-diskless-sync-delay".into(), "0".into()),
        ]
    } else {
        vec![("repl-diskless-sync".into(), "no".into())]
    };
    let source = Cluster::start(ClusterOptions {
        extra_config: source_cfg,
        ..Default::default()
    });
    // A long node timeout: the migrator's RESTORE of a 10 M-element value blocks its
    // master for longer than the kit's 5 s, and the cluster would go down under it.
    let target = Cluster::start(ClusterOptions {
        extra_config: vec![("cluster-node-timeout".into(), "60000".into())],
        ..Default::default()
    });
    let t = Instant::now();
    generate(&source, n);
    if big > 0 {
        generate_big(&source, big);
    }
    let keys = dbsize(&source);
    assert_eq!(keys as usize, total, "source holds the dataset");
    let used: u64 = source
        .masters()
        .iter()
        .map(|m| info_u64(m, "memory", "used_memory"))
        .sum();
    eprintln!(
        "bench: {n} keys generated in {:.1} s (source used_memory {} MiB)",
        t.elapsed().as_secs_f64(),
        used >> 20
    );

    // Baseline (a).
    let busy0 = machine_busy().0;
    let servers0 = servers_cpu(&[&source]);
    let t_bgsave = bgsave_all(&source);
    let busy_bgsave = machine_busy().0 - busy0;
    let servers_bgsave = servers_cpu(&[&source]) - servers0;
    let rdb_bytes: u64 = source
        .masters()
        .iter()
        .map(|m| {
            std::fs::metadata(m.dir().join("dump.rdb"))
                .map(|md| md.len())
                .unwrap_or(0)
        })
        .sum();
    eprintln!(
        "bench: BGSAVE x3 {:.2} s ({:.1} MB of RDB)",
        t_bgsave.as_secs_f64(),
        rdb_bytes as f64 / 1e6
    );

    // Baseline (b).
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = restore_streams(&source, &target, n, tmp.path());
    let stream_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let busy0 = machine_busy().0;
    let servers0 = servers_cpu(&[&target]);
    let work0 = server_work(&target);
    let t_pipe = pipe_all(&files, &target);
    eprintln!(
        "bench: the target masters' work in (b): {}",
        work_delta(&work0, &server_work(&target))
    );
    let busy_pipe = machine_busy().0 - busy0;
    let servers_pipe = servers_cpu(&[&target]) - servers0;
    assert_eq!(
        dbsize(&target) as usize,
        total,
        "redis-cli --pipe loaded all"
    );
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    for m in target.masters() {
        m.cmd(&[b"FLUSHALL"]);
    }
    eprintln!(
        "bench: redis-cli --pipe x3 {:.2} s ({:.1} MB of RESTORE)",
        t_pipe.as_secs_f64(),
        stream_bytes as f64 / 1e6
    );

    // (d), on request: the engine's own load path (decoder, loader, writer) from the BGSAVE
    // files, with no replication around it: the tool's ingest against (b)'s.
    let mut port_restore: Option<(f64, f64, f64)> = None;
    if std::env::var("BENCH_PORT_RESTORE").is_ok_and(|v| v == "1") {
        let port_bin = Path::new(&manager).with_file_name("redis-port");
        assert!(
            port_bin.exists(),
            "{port_bin:?} missing: cargo build --release -p redis-port"
        );
        for m in target.masters() {
            m.cmd(&[b"FLUSHALL"]);
        }
        let busy0 = machine_busy().0;
        let servers0 = servers_cpu(&[&target]);
        let work0 = server_work(&target);
        let start = Instant::now();
        let children: Vec<_> = source
            .masters()
            .iter()
            .map(|m| {
                Command::new(&port_bin)
                    .arg("restore")
                    .arg(format!("--input={}", m.dir().join("dump.rdb").display()))
                    .arg(format!("--target={}", target.seed_addr()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-port restore")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "redis-port restore failed");
        }
        let took = start.elapsed().as_secs_f64();
        let busy = machine_busy().0 - busy0;
        let servers = servers_cpu(&[&target]) - servers0;
        assert_eq!(dbsize(&target) as usize, total, "redis-port restored all");
        eprintln!(
            "bench: (d) redis-port restore x3 of the BGSAVE files {took:.2} s ({:.2} x (b)); machine busy {busy:.1} s, the target masters {servers:.1} s; their work: {}",
            took / t_pipe.as_secs_f64(),
            work_delta(&work0, &server_work(&target))
        );
        port_restore = Some((took, busy, servers));
        for m in target.masters() {
            m.cmd(&[b"FLUSHALL"]);
        }
    }

    // Baseline (c).
    let busy0 = machine_busy().0;
    let servers0 = servers_cpu(&[&source, &target]);
    let source_main0 = servers_own_process_cpu(&source);
    let migrator = scan_migrate(&source, &target);
    let source_main_migrator = servers_own_process_cpu(&source) - source_main0;
    let busy_migrator = machine_busy().0 - busy0;
    let servers_migrator = servers_cpu(&[&source, &target]) - servers0;
    match &migrator {
        Ok(t) => {
            assert_eq!(dbsize(&target) as usize, total, "the migrator copied all");
            eprintln!(
                "bench: SCAN+DUMP+PTTL+RESTORE migrator x3 {:.2} s",
                t.as_secs_f64()
            );
        }
        Err(e) => {
            eprintln!("bench: the SCAN+DUMP+PTTL+RESTORE migrator failed: {e}");
            wait_cluster_ok(&target);
        }
    }
    for m in target.masters() {
        m.cmd(&[b"FLUSHALL"]);
    }

    // The manager's full sync.
    let http = PortLease::acquire();
    let port = http.port();
    let logdir = tmp.path().join("logs");
    let busy_sync0 = machine_busy().0;
    let (source_sync0, target_sync0) = (servers_cpu(&[&source]), servers_cpu(&[&target]));
    let source_main_sync0 = servers_own_process_cpu(&source);
    let work_sync0 = server_work(&target);
    let t0 = Instant::now();
    let mut child = Command::new(&manager)
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg(format!(
            "--logfile={}",
            logdir.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        .arg("--sync-parallel=3")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {manager}: {e}"));
    let pid = child.id();
    let mut all_streaming: Option<f64> = None;
    // The first sample with every shard streaming and its applied offset at the source's:
    // the whole snapshot, and what came after it, is in the target.
    let mut all_caught: Option<f64> = None;
    let t_ready;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the manager exited during the full sync: {st}; logs in {logdir:?}");
        }
        if let Some(v) = status(port) {
            let shards = v["shards"].as_array().cloned().unwrap_or_default();
            if all_streaming.is_none()
                && !shards.is_empty()
                && shards.iter().all(|s| s["phase"] == "streaming")
            {
                all_streaming = Some(t0.elapsed().as_secs_f64());
            }
            if all_caught.is_none()
                && !shards.is_empty()
                && shards.iter().all(|s| {
                    s["phase"] == "streaming"
                        && s["applied_offset"].as_u64() >= s["source_offset"].as_u64()
                })
            {
                all_caught = Some(t0.elapsed().as_secs_f64());
            }
            if v["ready_for_cutover"].as_bool() == Some(true) {
                t_ready = t0.elapsed().as_secs_f64();
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "not ready within 15 min"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let rss_full_kib = proc_kib(pid, "VmHWM:");
    let cpu_full = cpu_seconds(pid);
    let busy_sync = machine_busy().0 - busy_sync0;
    let source_sync = servers_cpu(&[&source]) - source_sync0;
    let source_main_sync = servers_own_process_cpu(&source) - source_main_sync0;
    let target_sync = servers_cpu(&[&target]) - target_sync0;
    eprintln!(
        "bench: the target masters' work in the manager's sync: {}",
        work_delta(&work_sync0, &server_work(&target))
    );
    let servers_sync = source_sync + target_sync;
    // Not the shards' `caught_up_since` at ready: the source's PING every 10 s restarts
    // that, so it reads up to 10 s after the data was in.
    let t_caught = all_caught.unwrap_or(t_ready);
    let target_keys = data_keys(&target);
    assert_eq!(
        target_keys as usize, total,
        "target holds every key after the sync"
    );
    for key in BIG_KEYS.iter().filter(|_| big > 0) {
        let len = |c: &Cluster| {
            let cmd: &[u8] = match *key {
                "big:hash" => b"HLEN",
                "big:list" => b"LLEN",
                "big:set" => b"SCARD",
                _ => b"ZCARD",
            };
            int(&c.cmd_on_key(key.as_bytes(), &[cmd, key.as_bytes()]))
        };
        assert_eq!(len(&source), len(&target), "{key} whole on the target");
    }
    let baseline = t_bgsave.as_secs_f64() + t_pipe.as_secs_f64();
    // The two limits run in parallel in a real migration (the source saves while the target
    // loads), so the tool is measured against the slower of them, not their sum.
    let limit = t_bgsave.as_secs_f64().max(t_pipe.as_secs_f64());
    eprintln!(
        "bench: full sync ready after {t_ready:.2} s (all streaming at {:.2} s, caught up at {t_caught:.2} s); target has {target_keys} keys",
        all_streaming.unwrap_or(f64::NAN)
    );

    // Offsets: the manager's applied offset against the source's own, when idle.
    for m in source.masters() {
        let o = info_u64(m, "replication", "master_repl_offset");
        let a = shard_samples(&status(port).unwrap_or_default())
            .get(&m.addr())
            .map_or(0, |s| s.applied);
        eprintln!(
            "bench: idle check {}: source master_repl_offset {o}, manager applied {a}",
            m.addr()
        );
    }

    // Incremental: samplers first.
    let epoch = Instant::now();
    let stop_all = Arc::new(AtomicBool::new(false));
    let history: OffsetHistory = Arc::new(Mutex::new(BTreeMap::new()));
    let mut samplers = Vec::new();
    for m in source.masters() {
        let addr = m.addr();
        let mut conn = m.conn();
        let (history, stop_all) = (history.clone(), stop_all.clone());
        samplers.push(thread::spawn(move || {
            while !stop_all.load(Ordering::Relaxed) {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .unwrap_or_default();
                let off = info
                    .lines()
                    .find_map(|l| l.strip_prefix("master_repl_offset:"))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(off) = off {
                    let t = epoch.elapsed().as_secs_f64();
                    history
                        .lock()
                        .unwrap()
                        .entry(addr.clone())
                        .or_default()
                        .push((t, off));
                }
                thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    let statuses: Arc<Mutex<Vec<StatusSample>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let (statuses, stop_all) = (statuses.clone(), stop_all.clone());
        samplers.push(thread::spawn(move || {
            while !stop_all.load(Ordering::Relaxed) {
                if let Some(v) = status(port) {
                    let t = epoch.elapsed().as_secs_f64();
                    statuses.lock().unwrap().push(StatusSample {
                        t,
                        shards: shard_samples(&v),
                    });
                }
                thread::sleep(Duration::from_millis(15));
            }
        }));
    }
    // End-to-end probe: a SET on the source, polled on the target until it shows.
    let probes: Arc<Mutex<Vec<(f64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let probe_keys: Vec<String> = (0..3)
        .map(|m| {
            let ranges: Vec<(u16, u16)> = (0..3).map(|i| source.master_slot_range(i)).collect();
            (0..)
                .map(|i| format!("probe:{i}"))
                .find(|k| master_of(&ranges, k.as_bytes()) == m)
                .unwrap()
        })
        .collect();
    {
        let mut src: Vec<_> = source.masters().iter().map(|m| m.conn()).collect();
        let mut dst: Vec<_> = target.masters().iter().map(|m| m.conn()).collect();
        let (probes, stop_all, keys) = (probes.clone(), stop_all.clone(), probe_keys.clone());
        samplers.push(thread::spawn(move || {
            let mut seq = 0u64;
            while !stop_all.load(Ordering::Relaxed) {
                let m = (seq % 3) as usize;
                seq += 1;
                let val = seq.to_string();
                let sent = epoch.elapsed().as_secs_f64();
                let _: redis::RedisResult<()> =
                    redis::cmd("SET").arg(&keys[m]).arg(&val).query(&mut src[m]);
                loop {
                    let got: Option<String> = redis::cmd("GET")
                        .arg(&keys[m])
                        .query(&mut dst[m])
                        .unwrap_or(None);
                    let now = epoch.elapsed().as_secs_f64();
                    if got.as_deref() == Some(val.as_str()) {
                        probes.lock().unwrap().push((sent, now - sent));
                        break;
                    }
                    if now - sent > 10.0 || stop_all.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_micros(500));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    thread::sleep(Duration::from_secs(1));

    let seed_port = source.masters()[0].port();
    let paced_rate = env_usize("BENCH_RATE", 100_000) as f64;
    let (w_max, max_rps, load_shape, load_rps, (w0, w1), (calls0, calls1)) = if paced_rate > 0.0 {
        thread::sleep(Duration::from_secs(1));
        let calls0 = set_calls(&source);
        let w0 = epoch.elapsed().as_secs_f64();
        let got = paced_load(&source, paced_rate, load_secs);
        let w1 = epoch.elapsed().as_secs_f64();
        let calls1 = set_calls(&source);
        eprintln!("bench: paced load {got:.0} SET/s (asked {paced_rate:.0}/s) for {load_secs} s");
        (
            (0.0, 0.0),
            f64::NAN,
            format!(
                "paced at {paced_rate:.0}/s by the bench (3 connections, a pipeline every 2 ms)"
            ),
            got,
            (w0, w1),
            (calls0, calls1),
        )
    } else {
        // The source's maximum: pipelined SETs, 50 clients; about 3 s at the first estimate.
        let est = benchmark(seed_port, 50, 16, 200_000);
        let w_max = (epoch.elapsed().as_secs_f64(), 0.0);
        let max_rps = benchmark(seed_port, 50, 16, (est * 3.0) as usize);
        let w_max = (w_max.0, epoch.elapsed().as_secs_f64());
        eprintln!("bench: source max SET -P 16 -c 50: {max_rps:.0}/s (first estimate {est:.0}/s)");
        thread::sleep(Duration::from_secs(2));
        // About half of it: redis-benchmark has no rate limit, so the load is throttled by its
        // shape. Short runs of decreasing weight (clients × pipeline depth) until one falls below
        // half the maximum; the closest of the last two is used for the long run.
        let shapes = [
            (50, 8),
            (50, 4),
            (25, 4),
            (50, 2),
            (25, 2),
            (50, 1),
            (25, 1),
            (10, 1),
        ];
        let half = max_rps / 2.0;
        let mut best = (shapes[0], f64::INFINITY);
        for &(c, p) in &shapes {
            let r = benchmark(seed_port, c, p, (half * 1.5) as usize);
            eprintln!("bench: calibration -c {c} -P {p}: {r:.0}/s");
            if (r - half).abs() < (best.1 - half).abs() {
                best = ((c, p), r);
            }
            if r < half {
                break;
            }
        }
        let ((clients, pipeline), calib_rps) = best;
        eprintln!(
        "bench: running -c {clients} -P {pipeline} (calibrated {calib_rps:.0}/s) for ~{load_secs} s"
    );
        thread::sleep(Duration::from_secs(2));
        let calls0 = set_calls(&source);
        let w0 = epoch.elapsed().as_secs_f64();
        let half_rps = benchmark(
            seed_port,
            clients,
            pipeline,
            (calib_rps * load_secs) as usize,
        );
        let w1 = epoch.elapsed().as_secs_f64();
        let calls1 = set_calls(&source);
        (
            w_max,
            max_rps,
            format!("`-c {clients} -P {pipeline}` (redis-benchmark's figure)"),
            half_rps,
            (w0, w1),
            (calls0, calls1),
        )
    };
    // Let the manager drain, then stop sampling.
    thread::sleep(Duration::from_secs(3));
    stop_all.store(true, Ordering::Relaxed);
    for s in samplers {
        let _ = s.join();
    }
    let rss_kib = proc_kib(pid, "VmHWM:");
    let rss_now_kib = proc_kib(pid, "VmRSS:");
    let end_status = status(port).unwrap_or_default();
    stop(&mut child);

    // Analysis of the load window [w0, w1] (and the max burst, for information).
    let history = history.lock().unwrap();
    let statuses = statuses.lock().unwrap();
    let probes = probes.lock().unwrap();
    // For reading the lag's shape over time (is a tail periodic?): one line per probe and
    // per /status sample, seconds since the bench began.
    if let Ok(path) = std::env::var("BENCH_TIMELINE") {
        let mut out = BufWriter::new(File::create(&path).expect("timeline file"));
        for (t, lag) in probes.iter() {
            writeln!(out, "probe {t:.3} {:.1}", lag * 1000.0).unwrap();
        }
        for s in statuses.iter() {
            let lag: u64 = s.shards.values().map(|sh| sh.lag_bytes).sum();
            writeln!(out, "status {:.3} {lag}", s.t).unwrap();
        }
        eprintln!("bench: timeline in {path}");
    }
    let lag_in = |from: f64, to: f64| {
        let mut bytes = Vec::new();
        let mut status_bytes = Vec::new();
        let mut secs = Vec::new();
        // The manager publishes its counters about once a second, so most samples show an
        // applied offset up to a second old. A sample whose applied offset just changed was
        // taken within one sampling period (15 ms) of a publish: its lag is the real one.
        let mut fresh_secs = Vec::new();
        let mut fresh_bytes = Vec::new();
        let mut prev: BTreeMap<&str, u64> = BTreeMap::new();
        for s in statuses.iter().filter(|s| s.t >= from - 2.0 && s.t <= to) {
            for (addr, sh) in &s.shards {
                let Some(h) = history.get(addr) else { continue };
                let changed = prev
                    .insert(addr.as_str(), sh.applied)
                    .is_some_and(|p| p != sh.applied);
                if s.t < from {
                    continue;
                }
                if changed {
                    if let Some(reached) = time_reached(h, sh.applied) {
                        fresh_secs.push((s.t - reached).max(0.0));
                    }
                    if let Some(src) = offset_at(h, s.t) {
                        fresh_bytes.push(src.saturating_sub(sh.applied) as f64);
                    }
                }
                status_bytes.push(sh.lag_bytes as f64);
                if let Some(src) = offset_at(h, s.t) {
                    bytes.push(src.saturating_sub(sh.applied) as f64);
                }
                if let Some(reached) = time_reached(h, sh.applied) {
                    secs.push((s.t - reached).max(0.0));
                }
            }
        }
        let mut e2e: Vec<f64> = probes
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, d)| *d)
            .collect();
        let n_probes = e2e.len();
        (
            (pct(&mut bytes, 0.5), pct(&mut bytes, 0.99)),
            (pct(&mut status_bytes, 0.5), pct(&mut status_bytes, 0.99)),
            (pct(&mut secs, 0.5), pct(&mut secs, 0.99)),
            (pct(&mut e2e, 0.5), pct(&mut e2e, 0.99), n_probes),
            (
                pct(&mut fresh_secs, 0.5),
                pct(&mut fresh_secs, 0.99),
                pct(&mut fresh_bytes, 0.5),
                pct(&mut fresh_bytes, 0.99),
                fresh_secs.len(),
            ),
            pct(&mut e2e, 1.0),
        )
    };
    let load = lag_in(w0, w1);
    let burst = lag_in(w_max.0, w_max.1);
    // Applied commands/s: counter deltas between the samples nearest the window's edges.
    let total_cmds = |s: &StatusSample| s.shards.values().map(|x| x.commands).sum::<u64>();
    let first = statuses.iter().find(|s| s.t >= w0);
    let last = statuses.iter().rev().find(|s| s.t <= w1);
    let applied_rps = match (first, last) {
        (Some(a), Some(b)) if b.t > a.t => (total_cmds(b) - total_cmds(a)) as f64 / (b.t - a.t),
        _ => f64::NAN,
    };
    let source_rps = (calls1 - calls0) as f64 / (w1 - w0);
    let src_bytes_rate: f64 = history
        .values()
        .map(|h| {
            let a = offset_at(h, w0).unwrap_or(0);
            let b = offset_at(h, w1).unwrap_or(0);
            (b - a) as f64 / (w1 - w0)
        })
        .sum();
    let end_lag: u64 = end_status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["lag_bytes"].as_u64().unwrap_or(0))
        .sum();

    let ms = |s: f64| s * 1000.0;
    println!();
    let dataset = if big > 0 {
        format!("{n} keys (70 % strings of 16–512 B, lists/hashes/sets/zsets of 10–50 elements, 20 % with TTLs) + big:hash/list/set/zset of {big} elements each")
    } else {
        format!("{n} mixed keys (60 % 100-byte strings, 10 % each 8-member list/hash/set/zset)")
    };
    println!(
        "## bench_sync — {dataset}, 3-master source → 3-master target, {} source",
        if diskless {
            "diskless (delay 0)"
        } else {
            "disk-based"
        }
    );
    println!("| full sync | value |");
    println!("|---|---|");
    println!(
        "| (a) BGSAVE ×3 masters at once | {:.2} s ({:.1} MB RDB) |",
        t_bgsave.as_secs_f64(),
        rdb_bytes as f64 / 1e6
    );
    println!(
        "| (b) `redis-cli --pipe` ×3 of DUMP-built RESTORE streams | {:.2} s ({:.1} MB, {:.0} keys/s) |",
        t_pipe.as_secs_f64(),
        stream_bytes as f64 / 1e6,
        n as f64 / t_pipe.as_secs_f64()
    );
    println!(
        "| (c) a SCAN + DUMP + PTTL + RESTORE migrator, two threads per master, pipelines of 1000 | {} |",
        match &migrator {
            Ok(t) => format!("{:.2} s", t.as_secs_f64()),
            Err(e) => format!("failed: {e}"),
        }
    );
    if let Some((took, busy, servers)) = port_restore {
        println!(
            "| (d) `redis-port restore` ×3 of the BGSAVE files (the engine's decoder, loader and writer, no replication) | {took:.2} s = {:.2} × (b); machine busy {busy:.1} s, the target masters {servers:.1} s of it |",
            took / t_pipe.as_secs_f64()
        );
    }
    println!("| limit max((a), (b)) | {limit:.2} s |");
    // On a machine with few cores the source's save, the target's load and the tool
    // share the same CPUs: the work of (a) and (b) together cannot take less than this.
    let cpus = machine_busy().1;
    let cpu_floor = (busy_bgsave + busy_pipe) / cpus as f64;
    println!(
        "| machine CPU busy: (a) {busy_bgsave:.1} s, (b) {busy_pipe:.1} s, (c) {busy_migrator:.1} s, the manager's sync until ready {busy_sync:.1} s ({cpus} CPUs) | ((a)+(b)) ÷ {cpus} = {cpu_floor:.2} s: the floor when (a) and (b) share these CPUs |"
    );
    // The servers' own share: what any tool must leave them to do, without redis-cli's.
    let server_floor = (servers_bgsave + servers_pipe) / cpus as f64;
    println!(
        "| the servers' own CPU (`INFO cpu`, forks included): (a) {servers_bgsave:.1} s, (b) {servers_pipe:.1} s, (c) {servers_migrator:.1} s, the manager's sync {servers_sync:.1} s (source {source_sync:.1}, target {target_sync:.1}) | their (a)+(b) ÷ {cpus} = {server_floor:.2} s: no tool copies this data faster on this machine |"
    );
    println!(
        "| the source masters' own processes (not their forks), the CPU taken from serving their clients: (c) {source_main_migrator:.1} s, the manager's sync until ready {source_main_sync:.1} s | |"
    );
    println!("| baseline (a)+(b) | {baseline:.2} s |");
    println!(
        "| manager until `ready_for_cutover` | {t_ready:.2} s ({:.0} keys/s) — ratio **{:.2}** |",
        n as f64 / t_ready,
        t_ready / baseline
    );
    println!(
        "| manager until every shard caught up (first /status sample with every shard streaming at zero lag) | {t_caught:.2} s ({:.0} keys/s) — **{:.2} × max((a),(b))**, {:.2} × ((a)+(b)) |",
        n as f64 / t_caught,
        t_caught / limit,
        t_caught / baseline
    );
    if let Ok(t) = &migrator {
        println!(
            "| the migrator (c) ÷ the manager until caught up | **{:.2} ×** faster |",
            t.as_secs_f64() / t_caught
        );
    }
    println!(
        "| manager until caught up ÷ the CPU floor | **{:.2} ×** |",
        t_caught / cpu_floor
    );
    println!("| manager CPU (user + system) until ready | {cpu_full:.2} s |");
    println!(
        "| manager until caught up ÷ (the servers' own floor + the manager's CPU ÷ {cpus}) | **{:.2} ×** |",
        t_caught / (server_floor + cpu_full / cpus as f64)
    );
    println!(
        "| all shards in `streaming` (snapshot loaded) | {:.2} s |",
        all_streaming.unwrap_or(f64::NAN)
    );
    println!(
        "| manager peak RSS after the full sync (VmHWM) | {} MiB |",
        rss_full_kib / 1024
    );
    println!();
    println!("| incremental | value |");
    println!("|---|---|");
    println!("| source max, `redis-benchmark --cluster -t set -d 100 -P 16 -c 50` | {max_rps:.0} SET/s |");
    println!(
        "| load, {load_shape} for {:.1} s | {load_rps:.0} SET/s ({:.0} % of max) |",
        w1 - w0,
        100.0 * load_rps / max_rps
    );
    println!(
        "| source write rate in the window (cmdstat_set) | {source_rps:.0} cmd/s, {:.2} MB/s of replication stream |",
        src_bytes_rate / 1e6
    );
    println!(
        "| applied by the manager (/status commands_applied) | {applied_rps:.0} cmd/s ({:.2}× the source) |",
        applied_rps / source_rps
    );
    println!(
        "| lag bytes, source master_repl_offset − applied (p50 / p99) | {:.0} / {:.0} B |",
        load.0 .0, load.0 .1
    );
    println!(
        "| lag bytes as /status reports it (p50 / p99) | {:.0} / {:.0} B |",
        load.1 .0, load.1 .1
    );
    println!(
        "| time lag from /status applied offset (p50 / p99) | {:.0} / {:.0} ms |",
        ms(load.2 .0),
        ms(load.2 .1)
    );
    println!(
        "| same, only samples just after a publish ({} samples): time p50 / p99; bytes p50 / p99 | {:.0} / {:.0} ms; {:.0} / {:.0} B |",
        load.4 .4,
        ms(load.4 .0),
        ms(load.4 .1),
        load.4 .2,
        load.4 .3
    );
    println!(
        "| end-to-end probe, SET on source → visible on target (p50 / p99 / max, {} probes) | {:.1} / {:.1} / {:.1} ms |",
        load.3 .2,
        ms(load.3 .0),
        ms(load.3 .1),
        ms(load.5)
    );
    println!(
        "| during the max burst: time lag just after publishes p50/p99; probe p50/p99 ({} probes) | {:.0} / {:.0} ms; {:.1} / {:.1} ms |",
        burst.3 .2,
        ms(burst.4 .0),
        ms(burst.4 .1),
        ms(burst.3 .0),
        ms(burst.3 .1)
    );
    println!("| lag 3 s after the load stopped | {end_lag} B |");
    println!(
        "| manager peak RSS over the whole run (VmHWM) / RSS at the end | {} MiB / {} MiB |",
        rss_kib / 1024,
        rss_now_kib / 1024
    );
    println!(
        "| /status samples / source offset samples | {} / {} |",
        statuses.len(),
        history.values().map(Vec::len).sum::<usize>()
    );
    if let Ok(path) = std::env::var("BENCH_JSON") {
        let json = serde_json::json!({
            "dataset": dataset,
            "keys": total,
            "big_elements": big,
            "bgsave_s": t_bgsave.as_secs_f64(),
            "ingest_s": t_pipe.as_secs_f64(),
            "limit_s": limit,
            "machine_busy_s": {"bgsave": busy_bgsave, "ingest": busy_pipe, "migrator": busy_migrator, "sync_until_ready": busy_sync},
            "cpu_floor_s": cpu_floor,
            "servers_cpu_s": {"bgsave": servers_bgsave, "ingest": servers_pipe, "migrator": servers_migrator, "sync_until_ready": servers_sync, "sync_source": source_sync, "sync_target": target_sync, "source_process_migrator": source_main_migrator, "source_process_sync": source_main_sync},
            "server_floor_s": server_floor,
            "migrator_s": migrator.as_ref().ok().map(Duration::as_secs_f64),
            "port_restore": port_restore.map(|(s, busy, servers)| serde_json::json!({"s": s, "machine_busy_s": busy, "target_cpu_s": servers})),
            "migrator_over_manager": migrator.as_ref().ok().map(|t| t.as_secs_f64() / t_caught),
            "migrator_error": migrator.as_ref().err(),
            "caught_up_s": t_caught,
            "ready_s": t_ready,
            "caught_up_over_limit": t_caught / limit,
            "cpu_s_until_ready": cpu_full,
            "rss_mib_full_sync": rss_full_kib / 1024,
            "rss_mib_peak": rss_kib / 1024,
            "load": load_shape,
            "load_rps": load_rps,
            "applied_rps": applied_rps,
            "probe_ms": {"p50": ms(load.3 .0), "p99": ms(load.3 .1), "max": ms(load.5), "n": load.3 .2},
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).expect("BENCH_JSON");
        eprintln!("bench: figures in {path}");
    }
    let _ = std::io::stdout().flush();
}
