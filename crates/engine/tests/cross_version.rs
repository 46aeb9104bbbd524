//! Cross-version fidelity: an RDB from one server version restored into another arrives
//! exactly wherever the target can represent it, and what it cannot hold is counted per
//! kind, never silently dropped or invented.
//!
//! Streams are the hard case: a pending entry whose message was deleted, delivery counts
//! and times, consumers' seen-times, a consumer with nothing pending, an empty stream with
//! a group, the 7.0 counters (entries-read, entries-added, max-deleted-entry-id). Hashes
//! with field TTLs bring a field that expires between the snapshot and the restore: it
//! must not come back as a permanent field on a target without field TTLs.
//!
//! Pairs come from `$RSM_TEST_SERVERS` (scripts/test.sh installs them); without it the
//! default server runs into itself, and the test says so.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod writer_util;

use std::path::PathBuf;
use std::time::Duration;

use rsm_engine::EngineOptions;
use rsm_testkit::{fill_mixed, FillOptions, Flavor, Server, ServerVersion, Snapshot, StreamDetail};
use rsm_writer::WriteSummary;
use writer_util::*;

const STREAMS: [&str; 2] = ["st:pel", "st:empty"];

fn pairs(list: &[(&str, &str)]) -> Vec<(Option<PathBuf>, Option<PathBuf>, String)> {
    if std::env::var_os("RSM_TEST_SERVERS").is_some_and(|v| !v.is_empty()) {
        list.iter()
            .map(|(s, t)| (matrix_bin(s), matrix_bin(t), format!("{s} -> {t}")))
            .collect()
    } else {
        eprintln!("RSM_TEST_SERVERS is unset: running the default redis-server into itself only");
        vec![(None, None, "default -> default".into())]
    }
}

fn has_field_ttls(v: ServerVersion) -> bool {
    v.redis_compatible_at_least(7, 4) || (v.flavor == Flavor::Valkey && v.at_least(9, 0))
}

fn run(server: &Server, words: &[&str]) {
    let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    server.cmd(&args);
}

/// The streams (and, where the source has them, hashes with field TTLs) the test is
/// about, plus a mixed dataset of every type. Returns whether field TTLs were set.
fn fill(source: &Server) -> bool {
    fill_mixed(
        source,
        &FillOptions {
            keys_per_type: 20,
            big_every: 5,
            ..Default::default()
        },
    );
    for i in 1..=250 {
        let (id, v) = (format!("{i}-1"), format!("v{i}"));
        if i % 50 == 0 {
            // Other fields than the node's first entry: not "same fields" in the listpack.
            run(source, &["XADD", "st:pel", &id, "a", "1", "b", &v]);
        } else {
            run(source, &["XADD", "st:pel", &id, "f", &v]);
        }
    }
    run(source, &["XGROUP", "CREATE", "st:pel", "g1", "0"]);
    run(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "alice",
            "COUNT",
            "5",
            "STREAMS",
            "st:pel",
            ">",
        ],
    );
    run(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "bob",
            "COUNT",
            "2",
            "STREAMS",
            "st:pel",
            ">",
        ],
    );
    // Delivered twice: a delivery count of 2.
    run(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "bob",
            "COUNT",
            "1",
            "STREAMS",
            "st:pel",
            "0",
        ],
    );
    run(source, &["XACK", "st:pel", "g1", "3-1"]);
    // 2-1 (alice's) and 6-1 (bob's) are pending and deleted; 100-1 only deleted.
    run(source, &["XDEL", "st:pel", "2-1", "6-1", "100-1"]);
    run(source, &["XGROUP", "CREATE", "st:pel", "g2", "$"]);
    // A consumer with nothing pending.
    run(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g2",
            "idle",
            "COUNT",
            "1",
            "STREAMS",
            "st:pel",
            ">",
        ],
    );
    // An empty stream whose group still has a pending entry.
    run(source, &["XADD", "st:empty", "5-1", "f", "v"]);
    run(source, &["XGROUP", "CREATE", "st:empty", "g", "0"]);
    run(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "st:empty",
            ">",
        ],
    );
    run(source, &["XDEL", "st:empty", "5-1"]);

    if !has_field_ttls(source.version()) {
        return false;
    }
    run(
        source,
        &["HSET", "hfe:mix", "live", "1", "perm", "2", "soon", "3"],
    );
    run(
        source,
        &[
            "HPEXPIREAT",
            "hfe:mix",
            "4102444800000",
            "FIELDS",
            "1",
            "live",
        ],
    );
    run(source, &["HSET", "hfe:gone", "soon", "1"]);
    for key in ["hfe:mix", "hfe:gone"] {
        run(source, &["HPEXPIRE", key, "1500", "FIELDS", "1", "soon"]);
    }
    true
}

/// What the test compared, so that a pair where nothing could be compared is noticed.
#[derive(Default, Debug)]
struct Compared {
    delivery_times: usize,
    seen_times: usize,
    active_times: usize,
    counters: usize,
}

/// `got` equals `want` in every field both servers report; `want` is what the target
/// should hold (the source's view, minus what the test expects lost).
fn same_stream(label: &str, key: &str, want: &StreamDetail, got: &StreamDetail, c: &mut Compared) {
    let at = format!("{label}: {key}");
    assert_eq!(got.ids, want.ids, "{at}: entry ids");
    assert_eq!(got.length, want.length, "{at}: length");
    assert_eq!(
        got.last_generated_id, want.last_generated_id,
        "{at}: last id"
    );
    if let (Some(w), Some(g)) = (&want.max_deleted_entry_id, &got.max_deleted_entry_id) {
        assert_eq!(g, w, "{at}: max-deleted-entry-id");
        c.counters += 1;
    }
    if let (Some(w), Some(g)) = (want.entries_added, got.entries_added) {
        assert_eq!(g, w, "{at}: entries-added");
        c.counters += 1;
    }
    let names = |s: &StreamDetail| s.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{at}: groups");
    for (w, g) in want.groups.iter().zip(&got.groups) {
        let at = format!("{at} group {}", String::from_utf8_lossy(&w.name));
        assert_eq!(
            g.last_delivered_id, w.last_delivered_id,
            "{at}: last-delivered-id"
        );
        if let (Some(wr), Some(gr)) = (w.entries_read, g.entries_read) {
            assert_eq!(gr, wr, "{at}: entries-read");
            c.counters += 1;
        }
        let pel = |d: &rsm_testkit::GroupDetail| {
            d.pending
                .iter()
                .map(|p| (p.id.clone(), p.consumer.clone(), p.delivery_count))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pel(g),
            pel(w),
            "{at}: pending entries (id, owner, deliveries)"
        );
        for (wp, gp) in w.pending.iter().zip(&g.pending) {
            if let (Some(wt), Some(gt)) = (wp.delivery_time, gp.delivery_time) {
                assert_eq!(gt, wt, "{at}: delivery time of {}", wp.id);
                c.delivery_times += 1;
            }
        }
        let cons = |d: &rsm_testkit::GroupDetail| {
            d.consumers
                .iter()
                .map(|c| (c.name.clone(), c.pel_count))
                .collect::<Vec<_>>()
        };
        assert_eq!(cons(g), cons(w), "{at}: consumers (name, pending)");
        for (wc, gc) in w.consumers.iter().zip(&g.consumers) {
            let who = String::from_utf8_lossy(&wc.name);
            if let (Some(wt), Some(gt)) = (wc.seen_time, gc.seen_time) {
                assert_eq!(gt, wt, "{at}: seen-time of {who}");
                c.seen_times += 1;
            }
            if let (Some(wt), Some(gt)) = (wc.active_time, gc.active_time) {
                assert_eq!(gt, wt, "{at}: active-time of {who}");
                c.active_times += 1;
            }
        }
    }
}

/// The counters a pre-7.0 target has no room for, read from the source.
fn counters_of(d: &StreamDetail) -> u64 {
    let deleted = d
        .max_deleted_entry_id
        .as_deref()
        .is_some_and(|id| id != "0-0");
    u64::from(d.entries_added.is_some())
        + u64::from(deleted)
        + d.groups.iter().filter(|g| g.entries_read.is_some()).count() as u64
}

/// Every stream of the (small) dataset; `SCAN … TYPE` is 6.0+, so by `TYPE` one by one.
fn stream_keys(server: &Server) -> Vec<Vec<u8>> {
    use rsm_testkit::redis::Value;
    let Value::Array(keys) = server.cmd(&[b"KEYS", b"*"]) else {
        panic!("KEYS reply")
    };
    let mut out: Vec<Vec<u8>> = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(b) => Some(b),
            _ => None,
        })
        .filter(|k| matches!(server.cmd(&[b"TYPE", k]), Value::SimpleString(t) if t == "stream"))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_field_ttls_across_versions() {
    for (src_bin, dst_bin, label) in pairs(&[
        ("valkey-9.1.2", "redis-7.0.15"),
        ("valkey-9.1.2", "redis-6.2.14"),
        ("redis-7.4.1", "redis-7.0.15"),
        ("redis-8.2.3", "redis-7.2.4"),
        ("redis-6.2.14", "redis-7.0.15"),
        ("redis-5.0.10", "valkey-9.1.2"),
    ]) {
        let source = start(src_bin);
        let hfe = fill(&source);
        let rdb = rdb_of(&source);
        if hfe {
            // The `soon` fields expire after the snapshot, before the restore.
            std::thread::sleep(Duration::from_millis(1700));
        }
        // The source's own view now is what the target must hold.
        let expected = Snapshot::of(&source);
        let (sv, keys) = (source.version(), stream_keys(&source));
        let want: Vec<StreamDetail> = keys.iter().map(|k| StreamDetail::of(&source, k)).collect();
        let target = start(dst_bin);
        let tv = target.version();
        let w = restore(&rdb, &target.addr(), EngineOptions::default()).await;
        eprintln!("{label}: {w}");
        assert_eq!(w.failed(), 0, "{label}: {w}");
        expected.assert_same(&Snapshot::of(&target), Duration::from_secs(5));
        let mut compared = Compared::default();
        for (k, want) in keys.iter().zip(&want) {
            let got = StreamDetail::of(&target, k);
            let name = String::from_utf8_lossy(k);
            same_stream(&label, &name, want, &got, &mut compared);
        }
        eprintln!("{label}: compared {compared:?}");
        if sv.redis_compatible_at_least(6, 0) && tv.redis_compatible_at_least(6, 0) {
            assert!(
                compared.delivery_times > 0 && compared.seen_times > 0,
                "{label}: {compared:?}"
            );
        }
        if sv.redis_compatible_at_least(7, 0) && tv.redis_compatible_at_least(7, 0) {
            assert!(compared.counters > 0, "{label}: {compared:?}");
        }
        assert_losses(&label, &w, hfe, sv, tv, &want);
        for key in STREAMS {
            assert!(
                keys.iter().any(|k| k == key.as_bytes()),
                "{label}: {key} was built"
            );
        }
    }
}

fn assert_losses(
    label: &str,
    w: &WriteSummary,
    hfe: bool,
    sv: ServerVersion,
    tv: ServerVersion,
    streams: &[StreamDetail],
) {
    let old_target = |major, minor| !tv.redis_compatible_at_least(major, minor);
    let counters: u64 = if old_target(7, 0) {
        streams.iter().map(counters_of).sum()
    } else {
        0
    };
    assert_eq!(w.lost.stream_counters, counters, "{label}: {w}");
    // Active times exist from 7.2; an older target's format cannot hold them.
    let active: u64 = if sv.redis_compatible_at_least(7, 2) && old_target(7, 2) {
        streams.iter().map(|s| s.consumers() as u64).sum()
    } else {
        0
    };
    assert_eq!(w.lost.consumer_times, active, "{label}: {w}");
    assert_eq!(w.lost.pending_entries, 0, "{label}: {w}");
    assert_eq!(w.lost.consumers, 0, "{label}: {w}");
    if hfe && !has_field_ttls(tv) {
        assert_eq!(w.lost.field_ttls, 1, "{label}: the live field's TTL: {w}");
        assert_eq!(w.expired_fields, 2, "{label}: the `soon` fields: {w}");
        assert_eq!(
            w.expired, 1,
            "{label}: hfe:gone had only an expired field: {w}"
        );
    } else {
        assert_eq!(w.lost.field_ttls, 0, "{label}: {w}");
    }
}

/// Values above `--bigkeysize` go as commands on any target: what commands can set is set
/// (the 7.0 counters, delivery counts and times), what they cannot is counted: a pending
/// entry whose message was deleted (XCLAIM refuses it), consumers' seen-times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_streams_through_commands_keep_what_commands_can_set() {
    let bin = std::env::var_os("RSM_TEST_SERVERS")
        .filter(|v| !v.is_empty())
        .and_then(|_| matrix_bin("redis-8.2.3"));
    let source = start(bin.clone());
    fill(&source);
    let rdb = rdb_of(&source);
    let keys = STREAMS;
    let mut want: Vec<StreamDetail> = keys
        .iter()
        .map(|k| StreamDetail::of(&source, k.as_bytes()))
        .collect();
    // What the target should hold: the pending entries of deleted messages gone.
    let mut gone = 0;
    for s in &mut want {
        for g in &mut s.groups {
            let before = g.pending.len();
            g.pending.retain(|p| s.ids.contains(&p.id));
            gone += before - g.pending.len();
            for c in &mut g.consumers {
                c.pel_count = g.pending.iter().filter(|p| p.consumer == c.name).count() as i64;
                c.seen_time = None;
                c.active_time = None;
            }
        }
    }
    assert_eq!(
        gone, 3,
        "2-1, 6-1 and st:empty's 5-1 were built pending and deleted"
    );
    let target = start(bin);
    let (load, w) = restore_chunked(
        &rdb,
        writer_options(&target.addr(), EngineOptions::default()),
        Some(16),
    )
    .await;
    load.unwrap_or_else(|e| panic!("restore failed: {e}; {w}"));
    eprintln!("--bigkeysize=16: {w}");
    assert_eq!(w.failed(), 0, "{w}");
    let mut compared = Compared::default();
    for (k, want) in keys.iter().zip(&want) {
        let got = StreamDetail::of(&target, k.as_bytes());
        same_stream("commands", k, want, &got, &mut compared);
    }
    assert!(
        compared.counters >= 4 && compared.delivery_times > 0,
        "{compared:?}"
    );
    assert_eq!(w.lost.pending_entries, gone as u64, "{w}");
    // Every consumer of every stream (the mixed dataset's too) went through commands.
    let consumers: usize = stream_keys(&source)
        .iter()
        .map(|k| StreamDetail::of(&source, k).consumers())
        .sum();
    assert_eq!(w.lost.consumer_times, consumers as u64, "{w}");
}

/// A newer source's replicated writes into an older target: `SET … PXAT` (every expiry
/// a 7.0+ source replicates) into a target before 6.2, hash field TTLs (`HSETEX`,
/// `HPEXPIREAT`, `HPERSIST`) into a target without them. Each arrives in a form the
/// target knows; the field TTLs it cannot hold are counted, nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_into_older_targets() {
    for (src_bin, dst_bin, label) in pairs(&[
        ("redis-8.2.3", "redis-6.0.9"),
        ("valkey-9.1.2", "redis-7.2.4"),
        ("redis-7.0.15", "redis-5.0.10"),
    ]) {
        let source = start(src_bin);
        let target = start(dst_bin);
        let (sv, tv) = (source.version(), target.version());
        run(&source, &["SET", "before", "v", "EX", "1000"]);
        let state = tempfile::tempdir().unwrap();
        let shard = common::start(
            &source.addr(),
            &target.addr(),
            state.path(),
            EngineOptions::default(),
            rsm_engine::shard::DEFAULT_SPOOL_MEMORY,
        );
        shard.wait_caught_up(&source).await;
        let mut ttl_fields = 0;
        for i in 0..100 {
            run(&source, &["SET", &format!("s:{i}"), "v", "EX", "1000"]);
            run(
                &source,
                &["SET", &format!("p:{i}"), "v", "PX", "900000", "NX"],
            );
            run(&source, &["SET", &format!("n:{i}"), "v"]);
            if has_field_ttls(sv) {
                let h = format!("h:{i}");
                run(
                    &source,
                    &[
                        "HSETEX", &h, "EX", "1000", "FIELDS", "2", "a", "1", "b", "2",
                    ],
                );
                run(&source, &["HSET", &h, "c", "3"]);
                run(&source, &["HPEXPIRE", &h, "900000", "FIELDS", "1", "c"]);
                run(&source, &["HPERSIST", &h, "FIELDS", "1", "a"]);
                // b and c keep a TTL on the source.
                ttl_fields += 2;
            }
        }
        shard.wait_caught_up(&source).await;
        let snap = shard.status.snapshot();
        eprintln!("{label}: {:?}", snap.translated);
        assert_eq!(snap.commands_failed, 0, "{label}: {:?}", snap.last_error);
        Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
        let ttl = |k: &str| match target.cmd(&[b"PTTL", k.as_bytes()]) {
            rsm_testkit::redis::Value::Int(n) => n,
            other => panic!("PTTL {other:?}"),
        };
        assert!(
            ttl("s:7") > 900_000 && ttl("p:7") > 800_000,
            "{label}: expiries arrived"
        );
        assert_eq!(ttl("n:7"), -1, "{label}");
        // What the target cannot hold is counted once per field TTL the source set:
        // HSETEX's two, HPEXPIRE's one (HPERSIST removes one, nothing to lose there).
        let lost = snap.translated.details_lost;
        if has_field_ttls(sv) && !has_field_ttls(tv) {
            assert_eq!(lost.field_ttls, 300, "{label}: {lost:?}");
            assert!(ttl_fields > 0);
        } else {
            assert_eq!(lost.field_ttls, 0, "{label}: {lost:?}");
        }
        shard.stop().await.unwrap();
    }
}

/// The stream issue 27 item 11 is about: entries deleted with `XDEL` (entries-added ahead
/// of the length, a max-deleted id), a group that has read 155 entries (150 of them
/// without acknowledgement, 5 pending), a group created at `$` after the deletions, one
/// created at a given id (whose entries-read the source itself does not know: null), and
/// one at `0` that has read nothing; and a stream emptied by `XDEL` after its group read
/// it all.
fn fill_counters(source: &Server) {
    for i in 1..=200 {
        run(
            source,
            &["XADD", "st:counters", &format!("{i}-1"), "f", "v"],
        );
    }
    run(source, &["XGROUP", "CREATE", "st:counters", "g-read", "0"]);
    for (count, noack) in [("150", true), ("5", false)] {
        let mut words = vec!["XREADGROUP", "GROUP", "g-read", "c", "COUNT", count];
        if noack {
            words.push("NOACK");
        }
        words.extend(["STREAMS", "st:counters", ">"]);
        run(source, &words);
    }
    run(source, &["XDEL", "st:counters", "20-1", "180-1"]);
    run(source, &["XGROUP", "CREATE", "st:counters", "g-new", "$"]);
    run(
        source,
        &["XGROUP", "CREATE", "st:counters", "g-mid", "100-1"],
    );
    run(source, &["XGROUP", "CREATE", "st:counters", "g-zero", "0"]);
    for i in 1..=3 {
        run(source, &["XADD", "st:drained", &format!("{i}-1"), "f", "v"]);
    }
    run(source, &["XGROUP", "CREATE", "st:drained", "g", "$"]);
    run(source, &["XDEL", "st:drained", "1-1", "2-1", "3-1"]);
}

const COUNTER_STREAMS: [&str; 2] = ["st:counters", "st:drained"];

/// `XINFO GROUPS`: each group's name with its entries-read and lag as the server says
/// them (`None`: null, or not reported before 7.0).
fn groups_said(server: &Server, key: &str) -> Vec<(String, Option<i64>, Option<i64>)> {
    use rsm_testkit::redis::Value;
    let Value::Array(groups) = server.cmd(&[b"XINFO", b"GROUPS", key.as_bytes()]) else {
        panic!("XINFO GROUPS reply")
    };
    let mut out: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let fields: Vec<Value> = match g {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                other => panic!("group {other:?}"),
            };
            let (mut name, mut read, mut lag) = (String::new(), None, None);
            for pair in fields.chunks(2) {
                let word = match &pair[0] {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    _ => continue,
                };
                match (word.as_str(), &pair[1]) {
                    ("name", Value::BulkString(b)) => name = String::from_utf8_lossy(b).into(),
                    ("entries-read", Value::Int(n)) => read = Some(*n),
                    ("lag", Value::Int(n)) => lag = Some(*n),
                    _ => {}
                }
            }
            (name, read, lag)
        })
        .collect();
    out.sort();
    out
}

/// Issue 27 item 11: a stream written as commands (every value above `--bigkeysize=1`)
/// lost its groups' entries-read (null where the source said 150) and its entries-added,
/// exit 0, nothing counted. A 7.0+ target takes both (`XGROUP CREATE … ENTRIESREAD`,
/// `XSETID … ENTRIESADDED … MAXDELETEDID`): there the stream must read, in
/// `XINFO STREAM FULL` and `XINFO GROUPS` (lag included), exactly as the same snapshot
/// loaded by the target itself (`RESTORE`): the source's own counters from a 7.0+ source,
/// those the target derives from an older one (RDB type 15, no counters). An older target
/// holds none of them, and exactly those the source had are counted as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_counters_through_commands_are_set_or_counted_as_lost() {
    for (src_bin, dst_bin, label) in pairs(&[
        ("redis-7.0.15", "redis-7.0.15"),
        ("redis-7.4.1", "redis-7.4.1"),
        ("redis-8.2.3", "redis-8.2.3"),
        ("valkey-9.1.2", "valkey-9.1.2"),
        ("redis-6.2.14", "redis-7.0.15"),
        ("redis-5.0.10", "redis-8.2.3"),
        ("redis-6.2.14", "valkey-9.1.2"),
        ("redis-8.2.3", "redis-6.2.14"),
    ]) {
        let source = start(src_bin.clone());
        fill_counters(&source);
        let rdb = rdb_of(&source);
        let from_source: Vec<StreamDetail> = COUNTER_STREAMS
            .iter()
            .map(|k| StreamDetail::of(&source, k.as_bytes()))
            .collect();
        let target = start(dst_bin.clone());
        let (load, w) = restore_chunked(
            &rdb,
            writer_options(&target.addr(), EngineOptions::default()),
            Some(1),
        )
        .await;
        load.unwrap_or_else(|e| panic!("{label}: restore failed: {e}; {w}"));
        eprintln!("{label}: {w}");
        assert_eq!(w.failed(), 0, "{label}: {w}");
        assert_eq!(
            w.lost.pending_entries, 0,
            "{label}: nothing pending was deleted"
        );
        let got: Vec<StreamDetail> = COUNTER_STREAMS
            .iter()
            .map(|k| StreamDetail::of(&target, k.as_bytes()))
            .collect();
        for (g, s) in got.iter().zip(&from_source) {
            assert_eq!(g.ids, s.ids, "{label}: entries");
        }
        if !target.version().redis_compatible_at_least(7, 0) {
            // entries-added, the max-deleted id, and each group's entries-read that the
            // source knows (g-mid's is null there: nothing to lose).
            let had: u64 = from_source.iter().map(counters_of).sum();
            assert!(had >= 3, "{label}: {from_source:?}");
            assert_eq!(w.lost.stream_counters, had, "{label}: {w}");
            continue;
        }
        assert_eq!(w.lost.stream_counters, 0, "{label}: {w}");
        // The target's own reading of the same snapshot.
        let loaded = start(dst_bin);
        restore(&rdb, &loaded.addr(), EngineOptions::default()).await;
        for ((key, got), from_source) in COUNTER_STREAMS.iter().zip(&got).zip(&from_source) {
            let label = format!("{label} {key}");
            let want = StreamDetail::of(&loaded, key.as_bytes());
            if source.version() == target.version() {
                assert_eq!(
                    &want, from_source,
                    "{label}: RESTORE keeps the stream whole"
                );
            }
            assert_eq!(got.length, want.length, "{label}: length");
            assert_eq!(
                got.last_generated_id, want.last_generated_id,
                "{label}: last id"
            );
            assert_eq!(
                got.entries_added, want.entries_added,
                "{label}: entries-added"
            );
            assert_eq!(
                got.max_deleted_entry_id, want.max_deleted_entry_id,
                "{label}: max-deleted-entry-id"
            );
            let read = |d: &StreamDetail| {
                d.groups
                    .iter()
                    .map(|g| {
                        let name = String::from_utf8_lossy(&g.name).into_owned();
                        (name, g.last_delivered_id.clone(), g.entries_read)
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                read(got),
                read(&want),
                "{label}: entries-read (XINFO STREAM FULL)"
            );
            assert_eq!(
                groups_said(&target, key),
                groups_said(&loaded, key),
                "{label}: entries-read and lag (XINFO GROUPS)"
            );
        }
    }
}
