//! The command table against an independent oracle: each real server's own
//! `COMMAND GETKEYS` answer for a list of representative commands.
//!
//! Runs against the Debian `redis-server`; with `$RSM_TEST_SERVERS` set (the
//! install script's DEST, binaries under `bin/`), also against the version
//! matrix named in `MATRIX`. Both the table built from the server's own
//! `COMMAND` reply (merged over the built-in one, as the engine does) and the
//! built-in table alone must agree with the server.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use rsm_command::table::CommandTable;
use rsm_resp::Frame;
use rsm_testkit::redis::Value;
use rsm_testkit::{test_server_bin, Server, ServerOptions, ServerVersion};

/// Versions checked when `$RSM_TEST_SERVERS` is set: the oldest (no key specs,
/// the legacy triple + inherited specs), the last without specs, the newest of each family.
const MATRIX: &[&str] = &[
    "redis-5.0.10",
    "redis-6.2.14",
    "redis-8.2.3",
    "valkey-9.1.2",
];

/// Representative commands: fixed positions, ranges with steps, keynum,
/// keyword search, subcommands, and the hand-written rules.
const CASES: &[&[&str]] = &[
    &["GET", "k"],
    &["SET", "k", "v", "EX", "10"],
    &["SETEX", "k", "10", "v"],
    &["PSETEX", "k", "10", "v"],
    &["GETEX", "k", "PERSIST"],
    &["GETDEL", "k"],
    &["GETSET", "k", "v"],
    &["APPEND", "k", "v"],
    &["INCRBYFLOAT", "k", "1.5"],
    &["SETRANGE", "k", "0", "v"],
    &["MSET", "a", "1", "b", "2", "c", "3"],
    &["MSETNX", "a", "1", "b", "2"],
    &["MSETEX", "2", "a", "1", "b", "2", "EX", "10"],
    &["MGET", "a", "b", "c"],
    &["DEL", "a", "b", "c"],
    &["UNLINK", "a", "b"],
    &["EXISTS", "a", "b"],
    &["TOUCH", "a", "b"],
    &["EXPIRE", "k", "10"],
    &["PEXPIREAT", "k", "1700000000000"],
    &["PERSIST", "k"],
    &["RENAME", "a", "b"],
    &["RENAMENX", "a", "b"],
    &["COPY", "a", "b", "REPLACE"],
    &["MOVE", "k", "1"],
    &["DUMP", "k"],
    &["RESTORE", "k", "0", "payload", "REPLACE"],
    &["RESTORE-ASKING", "k", "0", "payload"],
    &["OBJECT", "ENCODING", "k"],
    &["MEMORY", "USAGE", "k"],
    &["LPUSH", "l", "a", "b"],
    &["LINSERT", "l", "BEFORE", "a", "b"],
    &["RPOPLPUSH", "a", "b"],
    &["LMOVE", "a", "b", "LEFT", "RIGHT"],
    &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
    &["BLPOP", "a", "b", "0"],
    &["BRPOPLPUSH", "a", "b", "0"],
    &["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"],
    &["BLMPOP", "0", "2", "a", "b", "RIGHT"],
    &["SADD", "s", "m1", "m2"],
    &["SMOVE", "a", "b", "m"],
    &["SINTERSTORE", "d", "a", "b"],
    &["SUNIONSTORE", "d", "a", "b", "c"],
    &["SDIFFSTORE", "d", "a"],
    &["SINTERCARD", "2", "a", "b", "LIMIT", "1"],
    &["HSET", "h", "f", "v", "f2", "v2"],
    &["HDEL", "h", "f"],
    &["HINCRBYFLOAT", "h", "f", "1.5"],
    &["HEXPIRE", "h", "100", "FIELDS", "1", "f"],
    &["HPEXPIREAT", "h", "1700000000000", "FIELDS", "2", "f", "g"],
    &["HSETEX", "h", "PX", "100", "FIELDS", "1", "f", "v"],
    &["HGETDEL", "h", "FIELDS", "1", "f"],
    &["ZADD", "z", "1", "m"],
    &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
    &["ZINTERSTORE", "d", "3", "a", "b", "c", "AGGREGATE", "MAX"],
    &["ZDIFFSTORE", "d", "2", "a", "b"],
    &["ZUNION", "2", "a", "b", "WITHSCORES"],
    &["ZRANGESTORE", "d", "src", "0", "-1"],
    &["ZMPOP", "2", "a", "b", "MIN"],
    &["BZMPOP", "0", "2", "a", "b", "MAX", "COUNT", "3"],
    &["BZPOPMIN", "a", "b", "0"],
    &["ZINTERCARD", "2", "a", "b"],
    &["PFADD", "p", "x"],
    &["PFCOUNT", "a", "b"],
    &["PFMERGE", "d", "a", "b"],
    &["GEOADD", "g", "0", "0", "m"],
    &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "d"],
    &["GEORADIUSBYMEMBER", "g", "m", "1", "km", "STOREDIST", "d"],
    &[
        "GEOSEARCHSTORE",
        "d",
        "src",
        "FROMMEMBER",
        "m",
        "BYRADIUS",
        "1",
        "km",
    ],
    &["XADD", "s", "*", "f", "v"],
    &["XTRIM", "s", "MAXLEN", "10"],
    &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    &["XGROUP", "SETID", "s", "g", "0"],
    &["XGROUP", "CREATECONSUMER", "s", "g", "c"],
    &["XGROUP", "DESTROY", "s", "g"],
    &["XACK", "s", "g", "1-1"],
    &["XCLAIM", "s", "g", "c", "0", "1-1", "FORCE", "JUSTID"],
    &["XAUTOCLAIM", "s", "g", "c", "0", "0"],
    &["XSETID", "s", "5-0"],
    &["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "a",
        "b",
        ">",
        ">",
    ],
    &["EVAL", "return 1", "2", "a", "b", "x"],
    &[
        "EVALSHA",
        "0123456789012345678901234567890123456789",
        "1",
        "a",
        "x",
    ],
    &["EVAL_RO", "return 1", "1", "a"],
    &["FCALL", "f", "2", "a", "b", "x"],
    &["FCALL_RO", "f", "1", "a"],
    &["SORT", "k", "BY", "w*", "GET", "#", "STORE", "d"],
    &["SORT", "k", "LIMIT", "0", "10", "ALPHA"],
    &["SORT_RO", "k", "ALPHA"],
    &["MIGRATE", "h", "1", "k", "0", "10"],
    &[
        "MIGRATE", "h", "1", "", "0", "10", "REPLACE", "KEYS", "a", "b",
    ],
    &["BITOP", "AND", "d", "a", "b"],
    &["BITFIELD", "k", "SET", "u8", "0", "1"],
    &["SETBIT", "k", "7", "1"],
    &["LCS", "a", "b"],
    &["STRALGO", "LCS", "KEYS", "a", "b"],
];

/// `COMMAND` (RESP2, or RESP3 after `HELLO 3`) read off a raw socket and
/// decoded by our own decoder, as the engine will do.
fn command_reply(server: &Server, resp3: bool) -> Frame {
    let mut sock = TcpStream::connect(server.addr()).expect("connect");
    let mut out = Vec::new();
    if resp3 {
        out.extend_from_slice(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    }
    out.extend_from_slice(b"*1\r\n$7\r\nCOMMAND\r\n");
    sock.write_all(&out).expect("send COMMAND");
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let wanted = if resp3 { 2 } else { 1 };
    let mut chunk = [0u8; 65536];
    while frames.len() < wanted {
        while let Some((frame, _)) = rsm_resp::decode(&mut buf).expect("valid RESP") {
            frames.push(frame);
        }
        if frames.len() >= wanted {
            break;
        }
        let n = sock.read(&mut chunk).expect("read COMMAND reply");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    frames.pop().expect("one frame read")
}

/// The server's own answer: key names, or the error text.
fn server_keys(server: &Server, args: &[&str]) -> Result<Vec<Vec<u8>>, String> {
    let mut cmd: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    cmd.extend(args.iter().map(|a| a.as_bytes()));
    match server.try_cmd(&cmd) {
        Ok(Value::Array(items)) => Ok(items
            .into_iter()
            .map(|v| match v {
                Value::BulkString(b) => b,
                other => panic!("GETKEYS returned {other:?}"),
            })
            .collect()),
        Ok(other) => panic!("GETKEYS returned {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

fn sorted(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut k = keys.to_vec();
    k.sort();
    k
}

/// Places where an old server's own metadata is wrong and ours is right. Each
/// is matched exactly (the server's answer as recorded), so if a server stops
/// behaving like this the case is compared normally again.
fn known_divergence(
    version: ServerVersion,
    case: &[&str],
    server: &Result<Vec<Vec<u8>>, String>,
) -> Option<&'static str> {
    match (case, server) {
        // 5.0 declares TOUCH with last key 1 (fixed in 6.0: `1, -1, 1`).
        (["TOUCH", "a", "b"], Ok(k)) if !version.at_least(6, 0) && k == &[b"a".to_vec()] => {
            Some("5.0 declares TOUCH's last key as 1; every argument is a key")
        }
        // 5.0 declares MEMORY with no keys; USAGE's key is argument 2.
        (["MEMORY", "USAGE", "k"], Err(e))
            if !version.at_least(6, 0) && e.contains("no key arguments") =>
        {
            Some("5.0 declares MEMORY without keys; MEMORY USAGE's argument 2 is a key")
        }
        _ => None,
    }
}

fn check_server(server: &Server) {
    let version = server.version();
    let reply = command_reply(server, false);
    let own = CommandTable::from_command_reply(&reply).expect("COMMAND reply parses");
    let merged = CommandTable::for_source(&reply).expect("COMMAND reply parses");
    let builtin = CommandTable::builtin();
    if version.at_least(7, 0) {
        // The RESP3 shape (maps) must give the very same table.
        let reply3 = command_reply(server, true);
        assert_eq!(
            CommandTable::from_command_reply(&reply3).expect("RESP3 COMMAND reply parses"),
            own,
            "{version}: RESP2 and RESP3 COMMAND replies give different tables"
        );
    }
    let mut compared = 0;
    let mut unknown = Vec::new();
    let mut failures = Vec::new();
    let mut diverged = Vec::new();
    let mut reordered = Vec::new();
    for case in CASES {
        let args: Vec<Bytes> = case
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        // Only commands this server knows; the others are counted, not hidden.
        if own.lookup(&args).is_err() {
            unknown.push(case[0]);
            continue;
        }
        let expected = server_keys(server, case);
        if let Some(why) = known_divergence(version, case, &expected) {
            diverged.push(format!("{case:?}: {why}"));
            continue;
        }
        let expected = match expected {
            Ok(k) => k,
            Err(e) => {
                failures.push(format!("{case:?}: the server refused GETKEYS: {e}"));
                continue;
            }
        };
        for (label, table) in [("source+builtin", &merged), ("builtin", &builtin)] {
            let ours = table
                .keys(&args)
                .map(|ks| ks.into_iter().map(|k| k.to_vec()).collect::<Vec<_>>());
            match ours {
                Ok(k) if k == expected => {}
                // Before 7.0 the servers' getkeys procedures list keys in
                // another order (ZUNIONSTORE: sources, then destination); the
                // set of keys, which is what routing needs, must still agree.
                Ok(k) if !version.at_least(7, 0) && sorted(&k) == sorted(&expected) => {
                    reordered.push(case[0]);
                }
                Ok(k) => failures.push(format!(
                    "{case:?} ({label}): ours {:?}, server {:?}",
                    k.iter()
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect::<Vec<_>>(),
                    expected
                        .iter()
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect::<Vec<_>>()
                )),
                Err(e) => failures.push(format!("{case:?} ({label}): ours failed: {e}")),
            }
        }
        compared += 1;
    }
    println!(
        "{version}: {compared} commands agree with COMMAND GETKEYS; not known to this server: \
         {unknown:?}; same keys in another order: {reordered:?}; known server bugs: {diverged:?}"
    );
    assert!(
        failures.is_empty(),
        "{version}: {} disagreements with COMMAND GETKEYS:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every server in the matrix knows at least this many of the cases (5.0 the fewest).
    assert!(compared >= 60, "{version}: only {compared} cases compared");
}

#[test]
fn key_indices_match_command_getkeys() {
    let debian = Server::start(ServerOptions::default());
    check_server(&debian);
    drop(debian);
    if std::env::var_os("RSM_TEST_SERVERS").is_none_or(|v| v.is_empty()) {
        println!(
            "RSM_TEST_SERVERS is not set: checked only the default redis-server; \
             set it to the test-servers folder to check {MATRIX:?} too"
        );
        return;
    }
    for label in MATRIX {
        let server = Server::start(ServerOptions {
            bin: Some(test_server_bin(label)),
            ..Default::default()
        });
        check_server(&server);
    }
}

/// The built-in table covers every command every supported server reports
/// (checked against the ones installed; the Debian server always).
#[test]
fn builtin_covers_every_server_command() {
    let mut servers = vec![Server::start(ServerOptions::default())];
    if std::env::var_os("RSM_TEST_SERVERS").is_some_and(|v| !v.is_empty()) {
        for label in MATRIX {
            servers.push(Server::start(ServerOptions {
                bin: Some(test_server_bin(label)),
                ..Default::default()
            }));
        }
    }
    let builtin = CommandTable::builtin();
    for server in &servers {
        let own = CommandTable::from_command_reply(&command_reply(server, false))
            .expect("COMMAND reply parses");
        let mut missing: Vec<String> = Vec::new();
        for case in ["get", "xgroup|create", "function|load", "set", "eval"] {
            assert!(
                own.get(case).is_some() || !server.version().at_least(7, 0),
                "{case}"
            );
        }
        for name in own_names(&own) {
            if builtin.get(&name).is_none() {
                missing.push(name);
            }
        }
        assert!(
            missing.is_empty(),
            "{}: the built-in table lacks {missing:?}; rerun scripts/gen-command-table.py",
            server.version()
        );
    }
}

fn own_names(t: &CommandTable) -> Vec<String> {
    t.names().map(str::to_string).collect()
}
