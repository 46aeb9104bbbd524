//! Decoder benchmark (not a timed test): `cargo bench -p rsm-rdb --bench decode [-- SIZE_MB]`.
//!
//! 1. Writes a synthetic RDB 9 file of SIZE_MB (default 256) to a temp dir: half of the keys
//!    are generated strings (16–200 bytes, some integers, 20 % with a TTL), the rest copies
//!    of every value of the Redis 6.2.14 fixture (real server bytes: ziplists, intsets,
//!    quicklists with LZF nodes, hashtables, skiplists, streams with groups).
//! 2. Streams it from disk in 1 MiB chunks through the decoder in raw mode, raw mode plus
//!    building a DUMP payload per key (what the RESTORE path does), and elements mode,
//!    reporting MB/s, keys/s and the peak RSS of each pass (VmHWM, reset between passes).
//! 3. On a smaller file of the same mix (SIZE_MB/8), times the PyPI parsers `rdb-py`
//!    (Rust-backed) and `rdbtools` (pure Python) if `python3` can import them, and prints
//!    our elements mode's speed as a ratio of theirs.
//!
//! RDB 9 because rdbtools reads nothing newer. No dependencies beyond the crate's own, so
//! CI can type-check it without building anything heavy.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rsm_rdb::{crc::Crc64, dump, DecodeOptions, Decoder, Event};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn len(n: usize, out: &mut Vec<u8>) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn string(b: &[u8], out: &mut Vec<u8>) {
    len(b.len(), out);
    out.extend_from_slice(b);
}

/// Every (type, raw value) of a fixture, as templates.
fn templates() -> Vec<(u8, Bytes)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/6.2.14.rdb");
    let data = std::fs::read(path).expect("fixture 6.2.14.rdb");
    let mut d = Decoder::new(DecodeOptions::raw());
    let mut ev = Vec::new();
    d.feed(Bytes::from(data), &mut ev).expect("fixture decodes");
    let mut out = Vec::new();
    let mut t = 0;
    for e in ev {
        match e {
            Event::KeyStart(m) => t = m.rdb_type,
            Event::RawValue(v) => out.push((t, v)),
            _ => {}
        }
    }
    out
}

/// Write the synthetic file; returns the key count.
fn generate(path: &Path, target_bytes: u64) -> u64 {
    let tpl = templates();
    let f = std::fs::File::create(path).expect("create bench file");
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut crc = Crc64::new();
    let mut rec = Vec::with_capacity(1 << 16);
    let mut put = |rec: &mut Vec<u8>, w: &mut BufWriter<std::fs::File>| {
        crc.update(rec);
        w.write_all(rec).unwrap();
        rec.clear();
    };
    rec.extend_from_slice(b"REDIS0009");
    rec.push(0xFA);
    string(b"redis-ver", &mut rec);
    string(b"6.2.14", &mut rec);
    rec.extend_from_slice(&[0xFE, 0]);
    put(&mut rec, &mut w);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0u64;
    let mut keys = 0u64;
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    while written < target_bytes {
        let r = rng.next();
        if r.is_multiple_of(5) {
            rec.push(0xFC);
            rec.extend_from_slice(&(4_102_444_800_000i64 + (r % 1000) as i64).to_le_bytes());
        }
        let key = format!("bench:key:{keys:010}");
        if r.is_multiple_of(2) {
            rec.push(0);
            string(key.as_bytes(), &mut rec);
            if r % 10 == 2 {
                // int-encoded
                rec.push(0xC2);
                rec.extend_from_slice(&((r >> 8) as i32).to_le_bytes());
            } else {
                let n = 16 + (r >> 16) as usize % 185;
                len(n, &mut rec);
                for i in 0..n {
                    rec.push(alphabet[((r >> (i % 48)) as usize + i * 7) % alphabet.len()]);
                }
            }
        } else {
            let (t, v) = &tpl[(r >> 8) as usize % tpl.len()];
            rec.push(*t);
            string(key.as_bytes(), &mut rec);
            rec.extend_from_slice(v);
        }
        written += rec.len() as u64;
        keys += 1;
        put(&mut rec, &mut w);
    }
    rec.push(0xFF);
    put(&mut rec, &mut w);
    let sum = crc.value();
    w.write_all(&sum.to_le_bytes()).unwrap();
    w.flush().unwrap();
    keys
}

fn peak_rss_reset() {
    // "5" resets VmHWM (Linux >= 4.0); ignore failure elsewhere
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[derive(Clone, Copy)]
enum Pass {
    Raw,
    RawPayload,
    Elements,
}

/// Decode the file from disk in 1 MiB chunks; returns (seconds, keys, peak RSS MiB).
fn pass(path: &Path, p: Pass) -> (f64, u64, f64) {
    peak_rss_reset();
    let opts = match p {
        Pass::Elements => DecodeOptions::elements(),
        _ => DecodeOptions::raw(),
    };
    let mut f = std::fs::File::open(path).unwrap();
    let start = Instant::now();
    let mut d = Decoder::new(opts);
    let mut ev = Vec::new();
    let mut keys = 0u64;
    let mut members = 0u64;
    let mut payload_bytes = 0u64;
    let mut rdb_type = 0;
    let mut buf = BytesMut::new();
    loop {
        buf.resize(1 << 20, 0);
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        d.feed(buf.split_to(n).freeze(), &mut ev).unwrap();
        for e in ev.drain(..) {
            match e {
                Event::KeyStart(m) => {
                    keys += 1;
                    rdb_type = m.rdb_type;
                }
                Event::RawValue(v) => {
                    if let Pass::RawPayload = p {
                        payload_bytes += dump::build_payload(rdb_type, &v, 9).len() as u64;
                    }
                }
                Event::Elements(_) => members += 1,
                _ => {}
            }
        }
    }
    d.finish().unwrap();
    std::hint::black_box((members, payload_bytes));
    (start.elapsed().as_secs_f64(), keys, peak_rss_mib())
}

fn python(path: &Path, which: &str) -> Option<f64> {
    let code = match which {
        "rdb-py" => "import rdb,sys,time\nt=time.time()\nfor _ in rdb.RdbDecoder(sys.argv[1]): pass\nprint(time.time()-t)",
        _ => "import sys,time\nfrom rdbtools import RdbParser\nclass C:\n    def __getattr__(self, n): return lambda *a, **k: None\nt=time.time()\nRdbParser(C()).parse(sys.argv[1])\nprint(time.time()-t)",
    };
    let out = std::process::Command::new("python3")
        .args(["-c", code])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  {which}: not available ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let mb: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    let dir = std::env::temp_dir().join(format!("rsm-rdb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.rdb");
    let t = Instant::now();
    let keys = generate(&big, mb << 20);
    let size = std::fs::metadata(&big).unwrap().len();
    println!(
        "generated {} ({:.1} MB, {} keys) in {:.1}s",
        big.display(),
        size as f64 / 1e6,
        keys,
        t.elapsed().as_secs_f64()
    );
    let _ = pass(&big, Pass::Raw); // warm the page cache
                                   // RSM_BENCH_ONLY=raw|elements: repeat one pass (for profiling), skip the comparison
    if let Ok(only) = std::env::var("RSM_BENCH_ONLY") {
        let p = if only == "raw" {
            Pass::Raw
        } else {
            Pass::Elements
        };
        for _ in 0..3 {
            let (secs, _, _) = pass(&big, p);
            println!("{only}: {:.1} MB/s", size as f64 / 1e6 / secs);
        }
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    for (name, p) in [
        ("raw", Pass::Raw),
        ("raw+payload", Pass::RawPayload),
        ("elements", Pass::Elements),
    ] {
        let (secs, k, rss) = pass(&big, p);
        println!(
            "{name:<12} {:8.1} MB/s {:10.0} keys/s   peak RSS {:6.1} MiB",
            size as f64 / 1e6 / secs,
            k as f64 / secs,
            rss
        );
    }
    std::fs::remove_file(&big).ok();

    let small = dir.join("small.rdb");
    generate(&small, (mb / 8).max(8) << 20);
    let ssize = std::fs::metadata(&small).unwrap().len() as f64 / 1e6;
    let _ = pass(&small, Pass::Elements);
    let (ours, _, _) = pass(&small, Pass::Elements);
    println!(
        "comparison on {:.1} MB, same mix: rsm-rdb elements {:.1} MB/s",
        ssize,
        ssize / ours
    );
    for which in ["rdb-py", "rdbtools"] {
        if let Some(secs) = python(&small, which) {
            println!(
                "  {which:<9} {:8.1} MB/s   rsm-rdb elements is {:.1}x faster",
                ssize / secs,
                secs / ours
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
