//! The writer against real servers: every type into 3- and 4-master clusters, redirects
//! during a live reshard, the three conflict policies, `--targetdb`, `--filterkey` and
//! chunked big keys. Results are read back with the servers' own commands (the test kit's
//! independent client), never with our code.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod writer_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsm_engine::{Command, ConflictPolicy, EngineOptions, Entry, KeyPrefixes, ReplOffset};
use rsm_testkit::redis::Value;
use rsm_testkit::{
    fill_mixed, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Snapshot,
};
use rsm_writer::{WriteError, Writer};
use writer_util::*;

const TTL_TOLERANCE: Duration = Duration::from_secs(5);

fn slot_of(key: &[u8]) -> u16 {
    rsm_cluster::key_slot(key).get()
}

/// A hash tag whose slot lies in `[lo, hi]`, different from `avoid`.
fn tag_in(lo: u16, hi: u16, avoid: &[u16]) -> (String, u16) {
    (0..100_000)
        .map(|i| format!("t{i}"))
        .map(|t| {
            let s = slot_of(t.as_bytes());
            (t, s)
        })
        .find(|(_, s)| *s >= lo && *s <= hi && !avoid.contains(s))
        .expect("a tag for the range")
}

fn as_list(v: Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::BulkString(b) => b,
                other => panic!("list item {other:?}"),
            })
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_identical_in_3_and_4_master_clusters() {
    let source = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 150,
            ..Default::default()
        },
    );
    // RESTORE payloads of MBs go to the socket as their own buffers, not copied (see
    // `SHARED_ARG` in writer/node.rs): they must arrive byte for byte, between small ones.
    let big = vec![b'b'; 3 << 20];
    source.cmd(&[b"SET", b"big:str", &big]);
    let mut conn = source.conn();
    let mut h = rsm_testkit::redis::cmd("HSET");
    h.arg("big:hash");
    for i in 0..30_000 {
        h.arg(format!("field:{i}")).arg(format!("value-{i}"));
    }
    let _: () = h.query(&mut conn).expect("big hash");
    let rdb = rdb_of(&source);
    let expected = Snapshot::of(&source);
    assert!(
        expected.len() >= 900 && expected.with_ttl() > 0,
        "{expected}"
    );
    for masters in [3, 4] {
        let target = Cluster::start(ClusterOptions {
            masters,
            ..Default::default()
        });
        let w = restore(&rdb, &target.seed_addr(), EngineOptions::default()).await;
        assert_eq!(w.keys_written as usize, expected.len(), "{w}");
        assert_eq!(w.failed(), 0, "{w}");
        expected.assert_same(&Snapshot::of(&target), TTL_TOLERANCE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_values_go_in_chunks_and_land_identical() {
    let source = Server::start(ServerOptions::default());
    const N: usize = 200_000;
    // Built with pipelined commands of 1000 members each.
    let mut conn = source.conn();
    for base in (0..N).step_by(1000) {
        let mut p = rsm_testkit::redis::pipe();
        let mut h = rsm_testkit::redis::cmd("HSET");
        h.arg("big:hash");
        let mut l = rsm_testkit::redis::cmd("RPUSH");
        l.arg("big:list");
        for i in base..base + 1000 {
            h.arg(format!("field:{i}")).arg(format!("value-{}", i * 7));
            l.arg(format!("item-{i}"));
        }
        p.add_command(h).add_command(l);
        let _: () = p.query(&mut conn).expect("fill big keys");
    }
    source.cmd(&[b"PEXPIREAT", b"big:list", b"4102444800000"]);
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 20,
            ..Default::default()
        },
    );
    let rdb = rdb_of(&source);
    let expected = Snapshot::of(&source);
    let target = Cluster::start(ClusterOptions::default());
    let before = peak_rss();
    let w = restore(
        &rdb,
        &target.seed_addr(),
        EngineOptions {
            big_key_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .await;
    let rss = peak_rss();
    assert_eq!(w.failed(), 0, "{w}");
    expected.assert_same(&Snapshot::of(&target), TTL_TOLERANCE);
    eprintln!(
        "peak RSS {} MiB (before the restore {} MiB), {w}",
        rss >> 20,
        before >> 20
    );
    assert!(rss < 256 << 20, "peak RSS {} MiB", rss >> 20);
}

/// One source with keys that also exist in the target; the three policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_policies_fail_rewrite_skip() {
    let source = Server::start(ServerOptions::default());
    source.cmd(&[b"SET", b"conflict:str", b"new"]);
    source.cmd(&[b"SET", b"fresh:str", b"fresh"]);
    let items: Vec<String> = (0..5000).map(|i| format!("elem-{i}")).collect();
    let mut rpush: Vec<&[u8]> = vec![b"RPUSH", b"conflict:biglist"];
    rpush.extend(items.iter().map(|s| s.as_bytes()));
    source.cmd(&rpush);
    let rdb = rdb_of(&source);
    let expected = Snapshot::of(&source);
    // The big list goes in chunks (EXISTS/DEL path), the strings through RESTORE.
    let engine = |conflict| EngineOptions {
        conflict,
        big_key_size: Some(4096),
        ..Default::default()
    };

    // Fail: stops with an error naming the key and --rewrite; the target value stays.
    let target = Server::start(ServerOptions::default());
    target.cmd(&[b"SET", b"conflict:str", b"old"]);
    let (load, _) = restore_with(
        &rdb,
        writer_options(&target.addr(), engine(ConflictPolicy::Fail)),
    )
    .await;
    let err = load
        .expect_err("an existing key must stop the restore")
        .to_string();
    assert!(
        err.contains("conflict:str") && err.contains("--rewrite"),
        "{err}"
    );
    assert_eq!(
        target.cmd(&[b"GET", b"conflict:str"]),
        Value::BulkString(b"old".to_vec())
    );
    // The chunked path checks too.
    let target = Server::start(ServerOptions::default());
    target.cmd(&[b"SET", b"conflict:biglist", b"old"]);
    let (load, _) = restore_with(
        &rdb,
        writer_options(&target.addr(), engine(ConflictPolicy::Fail)),
    )
    .await;
    let err = load
        .expect_err("an existing big key must stop the restore")
        .to_string();
    assert!(
        err.contains("conflict:biglist") && err.contains("--rewrite"),
        "{err}"
    );
    assert_eq!(
        target.cmd(&[b"GET", b"conflict:biglist"]),
        Value::BulkString(b"old".to_vec())
    );

    // Rewrite: the source's values replace the target's.
    let target = Server::start(ServerOptions::default());
    target.cmd(&[b"SET", b"conflict:str", b"old"]);
    target.cmd(&[b"SET", b"conflict:biglist", b"old"]);
    let w = restore(&rdb, &target.addr(), engine(ConflictPolicy::Rewrite)).await;
    assert_eq!(
        (w.keys_written, w.skipped_existing, w.failed()),
        (3, 0, 0),
        "{w}"
    );
    expected.assert_same(&Snapshot::of(&target), TTL_TOLERANCE);

    // Skip: the target keeps its values, they are counted, the rest is written.
    let target = Server::start(ServerOptions::default());
    target.cmd(&[b"SET", b"conflict:str", b"old"]);
    target.cmd(&[b"SET", b"conflict:biglist", b"old"]);
    let w = restore(&rdb, &target.addr(), engine(ConflictPolicy::Skip)).await;
    assert_eq!(
        (w.keys_written, w.skipped_existing, w.failed()),
        (1, 2, 0),
        "{w}"
    );
    assert_eq!(
        target.cmd(&[b"GET", b"conflict:str"]),
        Value::BulkString(b"old".to_vec())
    );
    assert_eq!(
        target.cmd(&[b"GET", b"conflict:biglist"]),
        Value::BulkString(b"old".to_vec())
    );
    assert_eq!(
        target.cmd(&[b"GET", b"fresh:str"]),
        Value::BulkString(b"fresh".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targetdb_and_filterkey() {
    let source = Server::start(ServerOptions::default());
    for db in [0u32, 2] {
        let mut c = source.conn();
        let _: () = rsm_testkit::redis::cmd("SELECT")
            .arg(db)
            .query(&mut c)
            .unwrap();
        for i in 0..50 {
            let _: () = rsm_testkit::redis::cmd("SET")
                .arg(format!("a:{db}:{i}"))
                .arg(i)
                .query(&mut c)
                .unwrap();
            let _: () = rsm_testkit::redis::cmd("RPUSH")
                .arg(format!("b:{db}:{i}"))
                .arg(i)
                .query(&mut c)
                .unwrap();
        }
    }
    let rdb = rdb_of(&source);

    // --targetdb=5: both source dbs land in db 5, nothing elsewhere.
    let target = Server::start(ServerOptions::default());
    let w = restore(
        &rdb,
        &target.addr(),
        EngineOptions {
            target_db: Some(5),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(w.keys_written, 200, "{w}");
    let mut expected = Snapshot::of_db(&source, 0);
    expected.keys.extend(Snapshot::of_db(&source, 2).keys);
    expected.assert_same(&Snapshot::of_db(&target, 5), TTL_TOLERANCE);
    assert!(Snapshot::of_db(&target, 0).is_empty() && Snapshot::of_db(&target, 2).is_empty());

    // Without it, each key keeps its db; --filterkey keeps only a: keys.
    let target = Server::start(ServerOptions::default());
    let w = restore(
        &rdb,
        &target.addr(),
        EngineOptions {
            filter: KeyPrefixes::parse("a:").unwrap(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((w.keys_written, w.filtered), (100, 100), "{w}");
    for db in [0, 2] {
        let mut want = Snapshot::of_db(&source, db);
        want.keys.retain(|k, _| k.starts_with(b"a:"));
        want.assert_same(&Snapshot::of_db(&target, db), TTL_TOLERANCE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targetdb_other_than_0_is_refused_for_a_cluster() {
    let target = Cluster::start(ClusterOptions::default());
    let err = Writer::connect(writer_options(
        &target.seed_addr(),
        EngineOptions {
            target_db: Some(3),
            ..Default::default()
        },
    ))
    .await
    .expect_err("--targetdb=3 on a cluster");
    assert!(matches!(err, WriteError::TargetDbInCluster(3)), "{err}");
}

/// Writes per key must stay in order while slots move: MOVED for a slot reassigned after
/// the writer read the map, ASK for a slot being migrated, and a live MIGRATE of a third
/// slot that finishes while the writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_and_ask_during_a_live_reshard_lose_and_reorder_nothing() {
    live_reshard(false).await;
}

/// The same with exactly-once on: every RPUSH goes in MULTI/EXEC with its slot's marker
/// (ASKING before MULTI holds for the whole transaction), and the marker moves with its
/// slot: after the reshard the new owner holds it, with the last offset written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reshard_with_exactly_once_moves_the_markers_with_their_slots() {
    live_reshard(true).await;
}

async fn live_reshard(exactly_once: bool) {
    let cluster = Arc::new(Cluster::start(ClusterOptions::default()));
    let (r0, r1, r2) = (
        cluster.master_slot_range(0),
        cluster.master_slot_range(1),
        cluster.master_slot_range(2),
    );
    let _ = r1;
    let (t_moved, s_moved) = tag_in(r0.0, r0.1, &[]);
    let (t_ask, s_ask) = tag_in(r0.0, r0.1, &[s_moved]);
    let (t_live, s_live) = tag_in(r2.0, r2.1, &[]);
    let (t_calm, _) = tag_in(r1.0, r1.1, &[]);
    let id = |i: usize| cluster.node_id(i).to_string();
    let m = |i: usize| &cluster.masters()[i];

    let mut options = writer_options(&cluster.seed_addr(), EngineOptions::default());
    // As in a sync: a transaction whose data key and marker sit on two nodes of a slot in
    // migration gets TRYAGAIN until the migration ends; it waits for it.
    options.retry_forever = exactly_once;
    let writer = Writer::connect(options).await.unwrap();
    if exactly_once {
        let p = rsm_writer::progress::Progress {
            sync_id: 1,
            ..Default::default()
        };
        writer.set_progress(p).await.unwrap();
    }

    // MOVED: s_moved is empty, hand it from master 0 to master 1 behind the writer's back.
    for i in [1, 0, 2] {
        m(i).cmd(&[
            b"CLUSTER",
            b"SETSLOT",
            s_moved.to_string().as_bytes(),
            b"NODE",
            id(1).as_bytes(),
        ]);
    }
    // Half of the keys of s_ask exist on master 0 before the migration starts.
    for i in 0..25 {
        let k = format!("{{{t_ask}}}:{i}");
        m(0).cmd(&[b"RPUSH", k.as_bytes(), b"pre"]);
    }
    // ASK: s_ask is migrating from master 0 to master 1; some keys already exist on 0.
    m(1).cmd(&[
        b"CLUSTER",
        b"SETSLOT",
        s_ask.to_string().as_bytes(),
        b"IMPORTING",
        id(0).as_bytes(),
    ]);
    m(0).cmd(&[
        b"CLUSTER",
        b"SETSLOT",
        s_ask.to_string().as_bytes(),
        b"MIGRATING",
        id(1).as_bytes(),
    ]);

    // Live: migrate s_live from master 2 to master 0 key by key while writing, then finish.
    // Its keys exist on master 2 first (a migrating node sends new keys away with ASK).
    for i in 0..50 {
        let k = format!("{{{t_live}}}:{i}");
        m(2).cmd(&[b"RPUSH", k.as_bytes(), b"pre"]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let cluster = cluster.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (a, b) = (&cluster.masters()[2], &cluster.masters()[0]);
            let (ida, idb) = (
                cluster.node_id(2).to_string(),
                cluster.node_id(0).to_string(),
            );
            let slot = s_live.to_string();
            b.cmd(&[
                b"CLUSTER",
                b"SETSLOT",
                slot.as_bytes(),
                b"IMPORTING",
                ida.as_bytes(),
            ]);
            a.cmd(&[
                b"CLUSTER",
                b"SETSLOT",
                slot.as_bytes(),
                b"MIGRATING",
                idb.as_bytes(),
            ]);
            let migrate_some = || {
                let keys = as_list(a.cmd(&[b"CLUSTER", b"GETKEYSINSLOT", slot.as_bytes(), b"1"]));
                if keys.is_empty() {
                    return 0;
                }
                let port = b.port().to_string();
                let mut args: Vec<&[u8]> = vec![
                    b"MIGRATE",
                    b"127.0.0.1",
                    port.as_bytes(),
                    b"",
                    b"0",
                    b"5000",
                    b"KEYS",
                ];
                args.extend(keys.iter().map(|k| k.as_slice()));
                a.cmd(&args);
                keys.len()
            };
            let mut moved = 0;
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(500) && !stop.load(Ordering::Relaxed) {
                moved += migrate_some();
                std::thread::sleep(Duration::from_millis(5));
            }
            while migrate_some() > 0 {}
            for n in [0usize, 2, 1] {
                cluster.masters()[n].cmd(&[
                    b"CLUSTER",
                    b"SETSLOT",
                    slot.as_bytes(),
                    b"NODE",
                    idb.as_bytes(),
                ]);
            }
            moved
        })
    };

    // With exactly-once the ASK slot's migration must end while the writes go on (they
    // wait for it); without, it ends after them, so that ASK is seen for every round.
    let ask_done = exactly_once.then(|| {
        let cluster = cluster.clone();
        let (id0, id1) = (id(0), id(1));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            finish_migration(&cluster, s_ask, 0, 1, &id1, &[&id0]);
        })
    });
    const ROUNDS: usize = 60;
    const KEYS: usize = 50;
    let keys: Vec<String> = [&t_moved, &t_ask, &t_live, &t_calm]
        .iter()
        .flat_map(|t| (0..KEYS).map(move |i| format!("{{{t}}}:{i}")))
        .collect();
    let mut offset = 0;
    let mut last_live = 0;
    for r in 0..ROUNDS {
        for k in &keys {
            offset += 10;
            if k.starts_with(&format!("{{{t_live}}}")) {
                last_live = offset;
            }
            let args = vec![
                Bytes::from_static(b"RPUSH"),
                Bytes::from(k.clone()),
                Bytes::from(r.to_string()),
            ];
            writer
                .write(Entry::Command(Command::new(0, args, ReplOffset(offset))))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.flush().await.unwrap();
    if let Some(t) = ask_done {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let live_moved = live.join().unwrap();
    let w = writer.stats();
    assert_eq!(w.applied_offset, offset, "{w}");
    assert_eq!(w.commands_written as usize, ROUNDS * keys.len(), "{w}");

    // Finish the ASK slot's migration so every key is readable in one place.
    let rest = as_list(m(0).cmd(&[
        b"CLUSTER",
        b"GETKEYSINSLOT",
        s_ask.to_string().as_bytes(),
        b"1000",
    ]));
    if !rest.is_empty() {
        let port = m(1).port().to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            b"127.0.0.1",
            port.as_bytes(),
            b"",
            b"0",
            b"5000",
            b"KEYS",
        ];
        args.extend(rest.iter().map(|k| k.as_slice()));
        m(0).cmd(&args);
    }
    for i in [1, 0, 2] {
        m(i).cmd(&[
            b"CLUSTER",
            b"SETSLOT",
            s_ask.to_string().as_bytes(),
            b"NODE",
            id(1).as_bytes(),
        ]);
    }

    let want: Vec<Vec<u8>> = (0..ROUNDS).map(|r| r.to_string().into_bytes()).collect();
    let mut client = cluster.client();
    for k in &keys {
        let got = as_list(
            client
                .cmd_on_key(k.as_bytes(), &[b"LRANGE", k.as_bytes(), b"0", b"-1"])
                .unwrap(),
        );
        let got: Vec<Vec<u8>> = got.into_iter().filter(|x| x != b"pre").collect();
        assert_eq!(got, want, "key {k}: writes lost or reordered ({w})");
    }
    if exactly_once {
        // The marker of the live-migrated slot is on its new owner, master 0.
        let key = rsm_writer::progress::slot_marker_key(usize::from(s_live));
        let got = m(0).cmd(&[b"GET", &key]);
        let Value::BulkString(v) = got else {
            panic!("no marker for slot {s_live} on its new owner: {got:?}")
        };
        let mark = rsm_writer::progress::parse_marker(&v);
        assert_eq!(mark, Some((1, last_live)), "slot {s_live}'s marker");
    }
    eprintln!("live migration moved {live_moved} keys while writing; {w}");
    assert!(
        live_moved > 10,
        "the live migration overlapped too little with the writes"
    );
    assert!(w.moved > 0, "no MOVED seen: {w}");
    assert!(w.ask > 0, "no ASK seen: {w}");
}

/// Move every key of `slot` from master `from` to master `to`, then give the slot to `to`
/// on every master (`owner_id` is `to`'s node id).
fn finish_migration(
    cluster: &Cluster,
    slot: u16,
    from: usize,
    to: usize,
    owner_id: &str,
    _others: &[&str],
) {
    let (a, b) = (&cluster.masters()[from], &cluster.masters()[to]);
    let s = slot.to_string();
    loop {
        let keys = as_list(a.cmd(&[b"CLUSTER", b"GETKEYSINSLOT", s.as_bytes(), b"1000"]));
        if keys.is_empty() {
            break;
        }
        let port = b.port().to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            b"127.0.0.1",
            port.as_bytes(),
            b"",
            b"0",
            b"5000",
            b"KEYS",
        ];
        args.extend(keys.iter().map(|k| k.as_slice()));
        a.cmd(&args);
    }
    for n in [to, from] {
        cluster.masters()[n].cmd(&[
            b"CLUSTER",
            b"SETSLOT",
            s.as_bytes(),
            b"NODE",
            owner_id.as_bytes(),
        ]);
    }
    for n in 0..cluster.masters().len() {
        if n != to && n != from {
            cluster.masters()[n].cmd(&[
                b"CLUSTER",
                b"SETSLOT",
                s.as_bytes(),
                b"NODE",
                owner_id.as_bytes(),
            ]);
        }
    }
}

fn cmd(db: u32, words: &[&str], offset: u64) -> Command {
    Command::new(
        db,
        words.iter().map(|w| Bytes::from(w.to_string())).collect(),
        ReplOffset(offset),
    )
}

/// Multi-key commands and transactions against a cluster: split where the meaning allows,
/// MULTI/EXEC when one slot, a counted error for all-or-nothing commands across slots; and
/// `--filterkey` on mixed commands. Functions are broadcast to every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_transactions_and_functions_in_a_cluster() {
    let cluster = Cluster::start(ClusterOptions::default());
    let writer = Writer::connect(writer_options(
        &cluster.seed_addr(),
        EngineOptions {
            filter: KeyPrefixes::parse("k|{t}").unwrap(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let entries = vec![
        Entry::Command(cmd(
            0,
            &["MSET", "k1", "a", "k2", "b", "k3", "c", "x", "dropped"],
            1,
        )),
        Entry::Transaction(vec![
            cmd(0, &["SET", "{t}n", "5"], 2),
            cmd(0, &["INCR", "{t}n"], 3),
        ]),
        Entry::Transaction(vec![
            cmd(0, &["SET", "k4", "1"], 4),
            cmd(0, &["SET", "k5", "2"], 5),
        ]),
        Entry::Command(cmd(0, &["DEL", "k2", "k3", "x"], 6)),
        Entry::Command(cmd(0, &["SET", "other", "filtered"], 7)),
        Entry::Command(cmd(
            0,
            &[
                "FUNCTION",
                "LOAD",
                "#!lua name=rsmlib\nredis.register_function('rsmf', function() return 1 end)",
            ],
            8,
        )),
        Entry::Command(cmd(0, &["MSETNX", "k6", "1", "k7", "2"], 9)),
    ];
    for e in entries {
        writer.write(e).await.unwrap();
    }
    writer.flush().await.unwrap();
    let w = writer.stats();
    let get = |k: &str| cluster.cmd_on_key(k.as_bytes(), &[b"GET", k.as_bytes()]);
    assert_eq!(get("k1"), Value::BulkString(b"a".to_vec()));
    assert_eq!(get("k2"), Value::Nil);
    assert_eq!(get("k3"), Value::Nil);
    assert_eq!(get("x"), Value::Nil);
    assert_eq!(get("{t}n"), Value::BulkString(b"6".to_vec()));
    assert_eq!(get("k4"), Value::BulkString(b"1".to_vec()));
    assert_eq!(get("k5"), Value::BulkString(b"2".to_vec()));
    assert_eq!(get("other"), Value::Nil);
    assert_eq!(get("k6"), Value::Nil);
    // k6 and k7 are in different slots: MSETNX cannot be split; counted, watermark stops.
    assert_ne!(slot_of(b"k6"), slot_of(b"k7"));
    assert_eq!(w.failed_cross_slot, 1, "{w}");
    assert_eq!(w.filtered, 1, "{w}");
    assert_eq!(w.applied_offset, 8, "{w}");
    for m in cluster.masters() {
        let list = format!("{:?}", m.cmd(&[b"FUNCTION", b"LIST"]));
        assert!(
            list.contains("rsmlib"),
            "function missing on {}: {list}",
            m.addr()
        );
    }
}
