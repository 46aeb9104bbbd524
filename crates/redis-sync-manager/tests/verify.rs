//! `redis-sync-manager verify` against real servers: an exact copy is equal
//! (exit 0); deliberate differences of every kind are found, exactly those,
//! with exit 1; writes landing on both sides while verify runs produce no
//! false report. The copy and the seeded differences are made through the
//! kit's independent `redis` client (DUMP/RESTORE), never through our code.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsm_testkit::redis::{self, Value};
use rsm_testkit::{
    fill_mixed, Cluster, ClusterOptions, FillOptions, Server, ServerOptions, Target,
};

fn manager(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args(args)
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .output()
        .unwrap()
}

/// Run verify; the exit code and the (category, key) pairs of the JSON report.
fn verify(from: &str, target: &str, mode: &str, extra: &[&str]) -> (i32, Found, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut args = vec![
        "verify".to_string(),
        format!("--from={from}"),
        format!("--target={target}"),
        format!("--mode={mode}"),
        "--show=1000".to_string(),
        format!("--report={}", report.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = manager(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_else(|e| {
            panic!("no report ({e}); exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }))
        .unwrap();
    let found = json["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["category"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    eprintln!("{stdout}");
    (code, found, json)
}

fn keys_of(target: &impl Target) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for mut conn in target.data_conns() {
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query(&mut conn)
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    keys
}

/// Copy every key with DUMP/RESTORE (TTL kept) through the kit's client.
fn copy(from: &impl Target, to: &impl Target) {
    for key in keys_of(from) {
        let r = from
            .run_on_key(
                &key,
                &[
                    vec![b"DUMP".to_vec(), key.clone()],
                    vec![b"PTTL".to_vec(), key.clone()],
                ],
            )
            .unwrap();
        let (Value::BulkString(payload), Value::Int(ttl)) = (&r[0], &r[1]) else {
            panic!("DUMP/PTTL of {key:?}: {r:?}");
        };
        let ttl = (*ttl).max(0).to_string().into_bytes();
        to.run_on_key(
            &key,
            &[vec![
                b"RESTORE".to_vec(),
                key.clone(),
                ttl,
                payload.clone(),
                b"REPLACE".to_vec(),
            ]],
        )
        .unwrap();
    }
}

fn run(t: &impl Target, args: &[&[u8]]) -> Value {
    let cmd: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    t.run_on_key(args[1], &[cmd]).unwrap().remove(0)
}

fn first_pending_id(t: &impl Target, key: &[u8]) -> Vec<u8> {
    let Value::Array(entries) = run(t, &[b"XPENDING", key, b"g1", b"-", b"+", b"10"]) else {
        panic!("XPENDING");
    };
    let Some(Value::Array(first)) = entries.first() else {
        panic!("no pending entry in {key:?}");
    };
    let Value::BulkString(id) = &first[0] else {
        panic!("id")
    };
    id.clone()
}

/// (category, escaped key) pairs.
type Found = BTreeSet<(String, String)>;

fn pairs(v: &[(&str, &str)]) -> Found {
    v.iter()
        .map(|(c, k)| (c.to_string(), k.to_string()))
        .collect()
}

fn dataset() -> FillOptions {
    FillOptions {
        keys_per_type: 30,
        ttl_every: 5,
        big_every: 10,
        ..Default::default()
    }
}

/// Every kind of difference, on keys `fill_mixed` wrote (see its naming: i % 10 == 9 is big
/// and ends in `{`). Returns what quick and full mode must report.
fn seed_differences(target: &impl Target) -> (Found, Found) {
    run(target, &[b"DEL", b"str:1"]); // missing
    run(target, &[b"SET", b"extra:\x00\xff", b"x"]); // extra, binary name
    run(target, &[b"DEL", b"list:2"]);
    run(target, &[b"SET", b"list:2", b"now a string"]); // type
                                                        // Value differences that keep the length: only full mode sees them.
                                                        // str:3 holds "\r\n\0{}\xff" (i % 4 == 3): flip one byte, keep the length.
    run(target, &[b"SET", b"str:3", b"\r\n\x01{}\xff"]);
    run(target, &[b"LSET", b"list:3", b"0", b"changed"]);
    run(target, &[b"LSET", b"list:9{", b"700", b"changed"]); // big list, a later window
    let Value::Array(m) = run(target, &[b"SRANDMEMBER", b"set:3", b"1"]) else {
        panic!("set:3")
    };
    let Value::BulkString(m) = &m[0] else {
        panic!("member")
    };
    run(target, &[b"SREM", b"set:3", m]);
    run(target, &[b"SADD", b"set:3", b"not-in-source"]);
    let Value::Array(m) = run(target, &[b"SRANDMEMBER", b"set:9{", b"1"]) else {
        panic!("set:9{{")
    };
    let Value::BulkString(m) = &m[0] else {
        panic!("member")
    };
    run(target, &[b"SREM", b"set:9{", m]);
    run(target, &[b"SADD", b"set:9{", b"not-in-source"]); // big set
    let Value::Array(z) = run(target, &[b"ZRANGE", b"zset:3", b"0", b"0"]) else {
        panic!("zset:3")
    };
    let Value::BulkString(member) = &z[0] else {
        panic!("member")
    };
    run(target, &[b"ZADD", b"zset:3", b"XX", b"7.25", member]);
    run(target, &[b"HSET", b"hash:3", b"f0", b"changed\x01"]);
    run(target, &[b"HSET", b"hash:9{", b"f599", b"changed"]); // big hash
    let id = first_pending_id(target, b"stream:3");
    run(
        target,
        &[b"XCLAIM", b"stream:3", b"g1", b"other", b"0", &id],
    ); // PEL: owner
    let id = first_pending_id(target, b"stream:4");
    run(target, &[b"XACK", b"stream:4", b"g1", &id]); // PEL: one entry fewer
    run(target, &[b"XGROUP", b"SETID", b"stream:6", b"g1", b"0"]); // group last-delivered-id
                                                                   // TTL: str:5 has one (i % 5 == 0), str:6 has none, str:10 has one.
    run(target, &[b"PERSIST", b"str:5"]);
    run(target, &[b"PEXPIRE", b"str:6", b"86400000"]);
    run(target, &[b"PEXPIRE", b"str:10", b"86400000"]);
    let quick = pairs(&[
        ("missing", "str:1"),
        ("extra", "extra:\\x00\\xff"),
        ("type", "list:2"),
        ("ttl", "str:5"),
        ("ttl", "str:6"),
        ("ttl", "str:10"),
        // XCLAIM to a new consumer adds that consumer: the stream's length stays, so quick
        // mode sees nothing there; nor for the others below.
    ]);
    let mut full = quick.clone();
    full.extend(pairs(&[
        ("value", "str:3"),
        ("value", "list:3"),
        ("value", "list:9{"),
        ("value", "set:3"),
        ("value", "set:9{"),
        ("value", "zset:3"),
        ("value", "hash:3"),
        ("value", "hash:9{"),
        ("value", "stream:3"),
        ("value", "stream:4"),
        ("value", "stream:6"),
    ]));
    (quick, full)
}

#[test]
fn standalone_pair() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    let report = fill_mixed(&source, &dataset());
    copy(&source, &target);
    for mode in ["quick", "full"] {
        let (code, found, json) = verify(&source.addr(), &target.addr(), mode, &[]);
        assert_eq!(
            (code, found),
            (0, BTreeSet::new()),
            "identical copy, {mode} mode"
        );
        assert_eq!(json["source_keys"].as_u64(), Some(report.keys as u64));
    }

    let (quick, full) = seed_differences(&target);
    let (code, found, _) = verify(&source.addr(), &target.addr(), "quick", &[]);
    assert_eq!(code, 1);
    assert_eq!(found, quick, "quick mode");
    let (code, found, json) = verify(&source.addr(), &target.addr(), "full", &[]);
    assert_eq!(code, 1);
    assert_eq!(found, full, "full mode");
    assert_eq!(json["counts"]["value"].as_u64(), Some(11));
    // Every difference was looked at again before it counted, and none went away.
    assert_eq!(json["rechecked"].as_u64(), Some(full.len() as u64));
    assert_eq!(json["resolved"].as_u64(), Some(0));

    // --filterkey limits both scans: only the str: differences remain.
    let (code, found, _) = verify(
        &source.addr(),
        &target.addr(),
        "full",
        &["--filterkey=str:"],
    );
    assert_eq!(code, 1);
    let only_str: BTreeSet<_> = full
        .iter()
        .filter(|(_, k)| k.starts_with("str:"))
        .cloned()
        .collect();
    assert_eq!(found, only_str);
}

#[test]
fn standalone_targetdb() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 10,
            ..dataset()
        },
    );
    // Copy into db 3 of the target.
    let mut conn = target.conn();
    redis::cmd("SELECT").arg(3).query::<()>(&mut conn).unwrap();
    let mut src = source.conn();
    for key in keys_of(&source) {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut src).unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut src).unwrap();
        redis::cmd("RESTORE")
            .arg(&key)
            .arg(ttl.max(0))
            .arg(payload)
            .query::<()>(&mut conn)
            .unwrap();
    }
    let (code, found, _) = verify(&source.addr(), &target.addr(), "full", &["--targetdb=3"]);
    assert_eq!((code, found), (0, BTreeSet::new()));
    // Without --targetdb, db 0 of the target is empty: every key is missing.
    let (code, _, json) = verify(&source.addr(), &target.addr(), "quick", &[]);
    assert_eq!(code, 1);
    assert_eq!(json["counts"]["missing"].as_u64(), Some(60));
}

#[test]
fn cluster_pair() {
    let source = Cluster::start(ClusterOptions::default());
    let target = Cluster::start(ClusterOptions::default());
    fill_mixed(&source, &dataset());
    copy(&source, &target);
    let (code, found, _) = verify(&source.seed_addr(), &target.seed_addr(), "full", &[]);
    assert_eq!((code, found), (0, BTreeSet::new()), "identical clusters");
    // Verify through a node other than the first: routing must not depend on the seed.
    let (quick, full) = seed_differences(&target);
    let other = target.addrs()[2].clone();
    let (code, found, _) = verify(&source.seed_addr(), &other, "quick", &[]);
    assert_eq!((code, found), (1, quick));
    let (code, found, _) = verify(&source.seed_addr(), &other, "full", &[]);
    assert_eq!((code, found), (1, full));
}

/// Writes land on the source, then on the target (as a sync would apply them);
/// whatever verify sees in between must be re-checked away, not reported.
fn live_writes(
    source: Arc<dyn Target + Send + Sync>,
    target: Arc<dyn Target + Send + Sync>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let i = n % 50;
            let cmds: Vec<Vec<Vec<u8>>> = match n % 5 {
                0 => vec![vec![
                    b"SET".to_vec(),
                    format!("str:{i}").into_bytes(),
                    format!("live-{n}").into_bytes(),
                    b"KEEPTTL".to_vec(),
                ]],
                1 => vec![vec![
                    b"HSET".to_vec(),
                    format!("hash:{}", i % 7).into_bytes(),
                    b"live".to_vec(),
                    n.to_string().into_bytes(),
                ]],
                2 => vec![vec![
                    b"RPUSH".to_vec(),
                    format!("list:{}", i % 7).into_bytes(),
                    n.to_string().into_bytes(),
                ]],
                3 => vec![vec![
                    b"ZADD".to_vec(),
                    format!("zset:{}", i % 7).into_bytes(),
                    n.to_string().into_bytes(),
                    b"live".to_vec(),
                ]],
                _ => vec![vec![
                    b"SET".to_vec(),
                    format!("new:{n}").into_bytes(),
                    b"x".to_vec(),
                ]],
            };
            let key = cmds[0][1].clone();
            source.run_on_key(&key, &cmds).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            target.run_on_key(&key, &cmds).unwrap();
            n += 1;
        }
        n
    })
}

fn check_under_load(
    source: Arc<dyn Target + Send + Sync>,
    target: Arc<dyn Target + Send + Sync>,
    from: &str,
    to: &str,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = live_writes(source, target, stop.clone());
    let mut rechecked = 0;
    let started = std::time::Instant::now();
    let mut runs = 0;
    // Keep verifying for a few seconds so that many writes land mid-check.
    while runs < 4 || started.elapsed() < Duration::from_secs(4) {
        let mode = ["quick", "full"][runs % 2];
        let (code, found, json) = verify(from, to, mode, &[]);
        assert_eq!(
            (code, found),
            (0, BTreeSet::new()),
            "{mode} under load: {json}"
        );
        rechecked += json["rechecked"].as_u64().unwrap();
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(
        writes > 100,
        "the load was too light to mean anything: {writes} writes"
    );
    eprintln!("{writes} writes during verify; {rechecked} keys re-checked");
}

struct Shared<T>(T);
impl<T: Target> Target for Shared<T> {
    fn run_on_key(&self, key: &[u8], cmds: &[Vec<Vec<u8>>]) -> redis::RedisResult<Vec<Value>> {
        self.0.run_on_key(key, cmds)
    }
    fn data_conns(&self) -> Vec<redis::Connection> {
        self.0.data_conns()
    }
}

#[test]
fn live_writes_standalone() {
    let source = Arc::new(Shared(Server::start(ServerOptions::default())));
    let target = Arc::new(Shared(Server::start(ServerOptions::default())));
    fill_mixed(
        &source.0,
        &FillOptions {
            keys_per_type: 200,
            ..dataset()
        },
    );
    copy(&source.0, &target.0);
    let (from, to) = (source.0.addr(), target.0.addr());
    check_under_load(source, target, &from, &to);
}

#[test]
fn live_writes_cluster() {
    let source = Arc::new(Shared(Cluster::start(ClusterOptions::default())));
    let target = Arc::new(Shared(Cluster::start(ClusterOptions::default())));
    fill_mixed(
        &source.0,
        &FillOptions {
            keys_per_type: 200,
            ..dataset()
        },
    );
    copy(&source.0, &target.0);
    let (from, to) = (source.0.seed_addr(), target.0.seed_addr());
    check_under_load(source, target, &from, &to);
}

#[test]
fn usage_errors_name_the_flag() {
    for (arg, flag) in [
        ("--mode=slow", "--mode"),
        ("--ttl-tolerance=-5", "--ttl-tolerance"),
        ("--sample=0", "--sample"),
    ] {
        let out = manager(&["verify", "--from=127.0.0.1:1", "--target=127.0.0.1:2", arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    let out = manager(&["verify", "--target=127.0.0.1:2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}
