//! Restore throughput: a generated RDB of ≥ 1 M mixed keys into a local 3-master cluster
//! through the loader and the writer, against `redis-cli --pipe` of the same RESTORE
//! commands pre-built per master (the ingestion limit), in the same run; then one hash and
//! one list of 1 M elements each through `--bigkeysize` (chunked commands).
//!
//! Then the stream phase: `BENCH_STREAM` (default 300 000) replicated commands through
//! the writer, SET-only and a non-idempotent INCR/RPUSH mix, each with exactly-once off
//! and on (slot markers in MULTI/EXEC), so its cost is a ratio measured in the same run.
//!
//! Run: `cargo bench -p rsm-engine --bench writer_restore` (env `BENCH_KEYS`, default
//! 1_000_000; `BENCH_BIG`, default 1_000_000 elements). Prints figures; asserts nothing
//! beyond the data landing.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsm_client::{ConnectOptions, Side};
use rsm_engine::loader::{Loader, LoaderOptions};

use rsm_engine::{Command, EngineOptions, Entry, ReplOffset};
use rsm_rdb::{dump, DecodeOptions, Decoder, Event};
use rsm_testkit::redis;
use rsm_testkit::{redis_cli_bin, Cluster, ClusterOptions, Server, ServerOptions};
use rsm_writer::progress::Progress;
use rsm_writer::{Writer, WriterOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Reset the peak-RSS mark (Linux ≥ 4.0), so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// 60 % strings, 10 % each list / hash / set / zset with 8 members.
fn generate(source: &Server, n: usize) {
    let strings = n * 6 / 10;
    source.cmd(&[
        b"DEBUG",
        b"POPULATE",
        strings.to_string().as_bytes(),
        b"s:",
        b"100",
    ]);
    let mut conn = source.conn();
    let per = (n - strings) / 4;
    for base in (0..per).step_by(1000) {
        let mut p = redis::pipe();
        for i in base..(base + 1000).min(per) {
            let mut l = redis::cmd("RPUSH");
            let mut h = redis::cmd("HSET");
            let mut s = redis::cmd("SADD");
            let mut z = redis::cmd("ZADD");
            l.arg(format!("l:{i}"));
            h.arg(format!("h:{i}"));
            s.arg(format!("e:{i}"));
            z.arg(format!("z:{i}"));
            for j in 0..8 {
                l.arg(format!("item-{j}-{i}"));
                h.arg(format!("f{j}")).arg(format!("value-{i}-{j}"));
                s.arg(format!("member-{j}-{i}"));
                z.arg(j as f64 * 1.5).arg(format!("m{j}"));
            }
            p.add_command(l)
                .add_command(h)
                .add_command(s)
                .add_command(z);
        }
        let _: () = p.query(&mut conn).expect("generate");
    }
}

fn rdb_of(server: &Server) -> Vec<u8> {
    server.cmd(&[b"SAVE"]);
    std::fs::read(server.dir().join("dump.rdb")).expect("dump.rdb")
}

fn dbsize(cluster: &Cluster) -> i64 {
    cluster
        .masters()
        .iter()
        .map(|m| match m.cmd(&[b"DBSIZE"]) {
            redis::Value::Int(n) => n,
            _ => 0,
        })
        .sum()
}

fn flush(cluster: &Cluster) {
    for m in cluster.masters() {
        m.cmd(&[b"FLUSHALL"]);
    }
}

async fn restore(rdb: &[u8], cluster: &Cluster, engine: EngineOptions) -> (Duration, String) {
    let opts = WriterOptions::new(
        cluster.seed_addr().parse().unwrap(),
        ConnectOptions::new(Side::Target, None),
        engine,
    );
    let start = Instant::now();
    let writer = Writer::connect(opts).await.expect("writer");
    let mut loader = Loader::new(LoaderOptions::default(), writer.clone());
    for chunk in rdb.chunks(256 * 1024) {
        loader
            .feed(Bytes::copy_from_slice(chunk))
            .await
            .expect("feed");
    }
    loader.finish().await.expect("finish");
    let took = start.elapsed();
    (took, writer.stats().to_string())
}

/// The same RESTOREs as a RESP stream per master, for `redis-cli --pipe`.
fn restore_streams(rdb: &[u8], cluster: &Cluster) -> Vec<Vec<u8>> {
    let ranges: Vec<(u16, u16)> = (0..3).map(|m| cluster.master_slot_range(m)).collect();
    let mut out = vec![Vec::new(); 3];
    let mut dec = Decoder::new(DecodeOptions::raw());
    let mut events = Vec::new();
    dec.feed(Bytes::copy_from_slice(rdb), &mut events)
        .expect("decode");
    let mut version = 10;
    let mut meta = None;
    for ev in events {
        match ev {
            Event::Header { version: v } => version = v.number(),
            Event::KeyStart(m) => meta = Some(m),
            Event::RawValue(raw) => {
                let Some(m) = meta.take() else { continue };
                let payload = dump::build_payload(m.rdb_type, &raw, version);
                let slot = rsm_cluster::key_slot(&m.key).get();
                let node = ranges
                    .iter()
                    .position(|(a, b)| slot >= *a && slot <= *b)
                    .unwrap_or(0);
                let mut buf = bytes::BytesMut::new();
                rsm_resp::encode_command(
                    &[&b"RESTORE"[..], &m.key, b"0", &payload, b"ABSTTL"],
                    &mut buf,
                );
                out[node].extend_from_slice(&buf);
            }
            _ => {}
        }
    }
    out
}

fn pipe_all(streams: &[Vec<u8>], cluster: &Cluster) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = dir.path().join(format!("m{i}.resp"));
            std::fs::write(&p, s).unwrap();
            p
        })
        .collect();
    let start = Instant::now();
    let children: Vec<_> = files
        .iter()
        .zip(cluster.masters())
        .map(|(f, m)| {
            Proc::new(redis_cli_bin())
                .args(["-p", &m.port().to_string(), "--pipe"])
                .stdin(std::fs::File::open(f).unwrap())
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

/// `n` stream commands (`INCR`+`RPUSH` pairs when `unsafe_mix`, else `SET`) through one
/// writer, exactly-once on or off; returns commands per second.
async fn stream(cluster: &Cluster, n: usize, unsafe_mix: bool, exactly_once: bool) -> f64 {
    let opts = WriterOptions::new(
        cluster.seed_addr().parse().unwrap(),
        ConnectOptions::new(Side::Target, None),
        EngineOptions::default(),
    );
    let writer = Writer::connect(opts).await.expect("writer");
    if exactly_once {
        let p = Progress {
            sync_id: 7,
            ..Default::default()
        };
        writer.set_progress(p).await.expect("progress");
    }
    let start = Instant::now();
    for i in 0..n {
        let key = Bytes::from(format!("s:{}", i % 10_000));
        let args = match (unsafe_mix, i % 2) {
            (false, _) => vec![Bytes::from_static(b"SET"), key, Bytes::from(i.to_string())],
            (true, 0) => vec![Bytes::from_static(b"INCR"), key],
            (true, _) => vec![
                Bytes::from_static(b"RPUSH"),
                Bytes::from(format!("l:{}", i % 10_000)),
                Bytes::from_static(b"x"),
            ],
        };
        let c = Command::new(0, args, ReplOffset(i as u64 + 1));
        writer.write(Entry::Command(c)).await.expect("write");
    }
    writer.flush().await.expect("flush");
    let took = start.elapsed();
    let stats = writer.finish().await.expect("finish");
    assert_eq!(stats.commands_written as usize, n, "{stats}");
    n as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(n) = std::env::var("BENCH_STREAM_ONLY") {
        return stream_phase(
            &Cluster::start(ClusterOptions::default()),
            n.parse().unwrap_or(300_000),
        )
        .await;
    }
    let n = env_usize("BENCH_KEYS", 1_000_000);
    let big = env_usize("BENCH_BIG", 1_000_000);
    let source = Server::start(ServerOptions {
        extra_config: vec![("enable-debug-command".into(), "local".into())],
        ..Default::default()
    });
    eprintln!("generating {n} mixed keys…");
    generate(&source, n);
    let rdb = rdb_of(&source);
    let mb = rdb.len() as f64 / 1e6;
    let cluster = Cluster::start(ClusterOptions::default());

    // (a) redis-cli --pipe of pre-built RESTOREs, one stream per master.
    let streams = restore_streams(&rdb, &cluster);
    let stream_mb: f64 = streams.iter().map(|s| s.len()).sum::<usize>() as f64 / 1e6;
    let t_pipe = pipe_all(&streams, &cluster);
    drop(streams);
    assert_eq!(
        dbsize(&cluster) as usize,
        n,
        "redis-cli --pipe loaded everything"
    );
    flush(&cluster);

    // (b) our loader + writer from the RDB bytes.
    reset_peak_rss();
    let base = peak_rss_mib();
    let (t_ours, stats) = restore(&rdb, &cluster, EngineOptions::default()).await;
    let rss = peak_rss_mib();
    assert_eq!(
        dbsize(&cluster) as usize,
        n,
        "restore loaded everything: {stats}"
    );
    println!("RDB: {n} keys, {mb:.1} MB; RESTORE streams {stream_mb:.1} MB");
    println!(
        "redis-port restore : {:.2} s, {:.0} keys/s, {:.1} MB/s of RDB, peak RSS {} MiB (process had {} MiB before)",
        t_ours.as_secs_f64(),
        n as f64 / t_ours.as_secs_f64(),
        mb / t_ours.as_secs_f64(),
        rss,
        base
    );
    println!(
        "redis-cli --pipe x3: {:.2} s, {:.0} keys/s, {:.1} MB/s of RDB  (ratio ours/pipe {:.2})",
        t_pipe.as_secs_f64(),
        n as f64 / t_pipe.as_secs_f64(),
        mb / t_pipe.as_secs_f64(),
        t_ours.as_secs_f64() / t_pipe.as_secs_f64()
    );
    println!("  {stats}");
    drop(rdb);

    // 1 M-element hash and list through --bigkeysize.
    flush(&cluster);
    source.cmd(&[b"FLUSHALL"]);
    let mut conn = source.conn();
    for base in (0..big).step_by(1000) {
        let mut h = redis::cmd("HSET");
        h.arg("big:hash");
        let mut l = redis::cmd("RPUSH");
        l.arg("big:list");
        for i in base..(base + 1000).min(big) {
            h.arg(format!("field:{i}")).arg(format!("value-{i}"));
            l.arg(format!("item-{i}"));
        }
        let _: () = redis::pipe()
            .add_command(h)
            .add_command(l)
            .query(&mut conn)
            .unwrap();
    }
    let rdb = rdb_of(&source);
    reset_peak_rss();
    let base = peak_rss_mib();
    let (t_big, stats) = restore(
        &rdb,
        &cluster,
        EngineOptions {
            big_key_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .await;
    let rss = peak_rss_mib();
    let hlen = cluster.cmd_on_key(b"big:hash", &[b"HLEN", b"big:hash"]);
    let llen = cluster.cmd_on_key(b"big:list", &[b"LLEN", b"big:list"]);
    println!(
        "--bigkeysize=1mb, {big}-field hash + {big}-item list ({:.1} MB RDB): {:.2} s, {:.0} elements/s, peak RSS {} MiB (process had {} MiB before, RDB held in memory by the bench: {} MiB); HLEN {hlen:?} LLEN {llen:?}",
        rdb.len() as f64 / 1e6,
        t_big.as_secs_f64(),
        (2 * big) as f64 / t_big.as_secs_f64(),
        rss,
        base,
        rdb.len() >> 20
    );
    println!("  {stats}");
    let _ = std::io::stdout().flush();
    stream_phase(&cluster, env_usize("BENCH_STREAM", 300_000)).await;
}

async fn stream_phase(cluster: &Cluster, n: usize) {
    for unsafe_mix in [false, true] {
        flush(cluster);
        let off = stream(cluster, n, unsafe_mix, false).await;
        flush(cluster);
        let on = stream(cluster, n, unsafe_mix, true).await;
        println!(
            "stream of {n} {}: exactly-once off {off:.0}/s, on {on:.0}/s (on/off {:.2})",
            if unsafe_mix { "INCR/RPUSH" } else { "SET" },
            on / off
        );
    }
}
