//! `restore` paths against real servers: an RDB from a newer server into an older target
//! (through trailer rewriting and, where the target cannot read a type, commands), and a
//! target that dies in the middle.
//!
//! The version matrix takes its binaries from `$RSM_TEST_SERVERS` (the directory holding
//! `redis-6.2.14`, …, or its parent); when unset it runs Debian's server against itself
//! and says so.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod writer_util;

use std::path::PathBuf;
use std::time::Duration;

use rsm_engine::loader::LoadError;
use rsm_engine::{ConflictPolicy, EngineOptions};
use rsm_testkit::redis::Value;
use rsm_testkit::{fill_mixed, FillOptions, Server, ServerOptions, Snapshot};
use rsm_writer::WriteError;
use writer_util::*;

/// A source with every type plus, where the server has them, hash fields with TTLs.
fn fill_source(source: &Server) -> usize {
    fill_mixed(
        source,
        &FillOptions {
            keys_per_type: 60,
            big_every: 10,
            ..Default::default()
        },
    );
    let v = source.version();
    let field_ttls = v.redis_compatible_at_least(7, 4)
        || (v.flavor == rsm_testkit::Flavor::Valkey && v.at_least(9, 0));
    if !field_ttls {
        return 0;
    }
    for (key, n) in [("hfe:small", 5usize), ("hfe:big", 700)] {
        let mut args: Vec<Vec<u8>> = vec![b"HSET".to_vec(), key.as_bytes().to_vec()];
        for i in 0..n {
            args.push(format!("f{i}").into_bytes());
            args.push(format!("v{i}").into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        source.cmd(&refs);
        source.cmd(&[
            b"HPEXPIREAT",
            key.as_bytes(),
            b"4102444800000",
            b"FIELDS",
            b"2",
            b"f0",
            b"f1",
        ]);
    }
    4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_rdb_into_older_target() {
    let pairs: Vec<(Option<PathBuf>, Option<PathBuf>, String)> =
        if std::env::var_os("RSM_TEST_SERVERS").is_some_and(|v| !v.is_empty()) {
            [
                ("redis-7.4.1", "redis-6.2.14"),
                ("valkey-9.1.2", "redis-6.2.14"),
                ("redis-8.2.3", "valkey-9.1.2"),
                ("valkey-9.1.2", "redis-7.0.15"),
            ]
            .iter()
            .map(|(s, t)| (matrix_bin(s), matrix_bin(t), format!("{s} -> {t}")))
            .collect()
        } else {
            eprintln!("RSM_TEST_SERVERS is unset: running Debian's redis-server into itself only");
            vec![(None, None, "debian -> debian".into())]
        };
    for (src_bin, dst_bin, label) in pairs {
        let source = start(src_bin);
        let field_ttls = fill_source(&source);
        let rdb = rdb_of(&source);
        let expected = Snapshot::of(&source);
        let target = start(dst_bin);
        let w = restore(&rdb, &target.addr(), EngineOptions::default()).await;
        eprintln!("{label}: {w}");
        assert_eq!(w.failed(), 0, "{label}: {w}");
        assert_eq!(w.keys_written as usize, expected.len(), "{label}: {w}");
        expected.assert_same(&Snapshot::of(&target), Duration::from_secs(5));
        if field_ttls > 0 {
            let tv = target.version();
            let target_has_hfe = tv.redis_compatible_at_least(7, 4)
                || (tv.flavor == rsm_testkit::Flavor::Valkey && tv.at_least(9, 0));
            if target_has_hfe {
                for key in ["hfe:small", "hfe:big"] {
                    let got = target.cmd(&[
                        b"HPEXPIRETIME",
                        key.as_bytes(),
                        b"FIELDS",
                        b"3",
                        b"f0",
                        b"f1",
                        b"f2",
                    ]);
                    assert_eq!(
                        got,
                        Value::Array(vec![
                            Value::Int(4102444800000),
                            Value::Int(4102444800000),
                            Value::Int(-1)
                        ]),
                        "{label}: field TTLs of {key}"
                    );
                }
            } else {
                // Counted, never silent.
                assert_eq!(w.lost.field_ttls as usize, field_ttls, "{label}: {w}");
                // Streams' losses are checked kind by kind in cross_version.rs.
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_restore_is_a_clear_error_with_the_count_written() {
    let source = Server::start(ServerOptions {
        extra_config: vec![("enable-debug-command".into(), "local".into())],
        ..Default::default()
    });
    const N: u64 = 300_000;
    source.cmd(&[
        b"DEBUG",
        b"POPULATE",
        N.to_string().as_bytes(),
        b"k:",
        b"64",
    ]);
    let rdb = rdb_of(&source);
    let target = Server::start(ServerOptions::default());
    let mut opts = writer_options(
        &target.addr(),
        EngineOptions {
            conflict: ConflictPolicy::Rewrite,
            ..Default::default()
        },
    );
    opts.retry_timeout = Duration::from_secs(2);
    let run = tokio::spawn(async move { restore_with(&rdb, opts).await });
    // Kill the target once some keys are in, as an operator's mistake would.
    let mut conn = target.conn();
    loop {
        let n: u64 = rsm_testkit::redis::cmd("DBSIZE").query(&mut conn).unwrap();
        if n >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    target.kill();
    let (load, w) = run.await.unwrap();
    let err = load.expect_err("the restore must fail when the target dies");
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Write(WriteError::TargetLost { .. })),
        "{text}"
    );
    assert!(
        text.contains(&target.addr()),
        "the error names the target: {text}"
    );
    // Only acknowledged keys count: writes in flight when the target died may be in its
    // memory (DBSIZE had reached 1000) without an answer, so the count can be lower.
    assert!(w.keys_written > 0 && w.keys_written < N, "{w}");
    eprintln!("error: {text}; {w}");
}

/// A function library saved by Redis 7.0-rc1/rc2 (opcode 246: name, engine and body kept
/// apart) loads into a GA server: the `#!` header is rebuilt as the servers' own loader
/// does. It used to be sent without it ("ERR Missing library metadata").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_ga_function_library_loads_into_a_ga_server() {
    let target = start(None);
    if !target.version().redis_compatible_at_least(7, 0) {
        eprintln!("the default server has no functions: nothing to check");
        return;
    }
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 1 << 14);
        if s.len() < 64 {
            out.push(s.len() as u8);
        } else {
            out.extend([0x40 | (s.len() >> 8) as u8, s.len() as u8]);
        }
        out.extend_from_slice(s);
    }
    let body = b"redis.register_function('rc_hello', function(keys, args) return 'hi' end)";
    let mut rdb = b"REDIS0010".to_vec();
    rdb.push(0xf6);
    string(&mut rdb, b"rclib");
    string(&mut rdb, b"LUA");
    rdb.push(1); // has a description, which GA libraries no longer have
    string(&mut rdb, b"an old library");
    string(&mut rdb, body);
    rdb.extend([0xfe, 0x00, 0x00, 0x01, b'k', 0x01, b'v']);
    rdb.push(0xff);
    rdb.extend([0u8; 8]); // checksum disabled
    let w = restore(&rdb, &target.addr(), EngineOptions::default()).await;
    assert_eq!(w.failed(), 0, "{w}");
    let reply = target.cmd(&[b"FCALL", b"rc_hello", b"0"]);
    assert_eq!(reply, Value::BulkString(b"hi".to_vec()));
}
