//! Unit tests for the command table. The independent oracle (the servers' own
//! `COMMAND GETKEYS`) is in `tests/command_keys.rs`; these pin each rule.

use bytes::Bytes;
use rsm_resp::Frame;

use super::*;

fn a(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn keys(t: &CommandTable, words: &[&str]) -> Vec<usize> {
    t.key_indices(&a(words))
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

#[test]
fn builtin_table_parses() {
    let t = parse::parse_builtin(BUILTIN).expect("builtin.txt parses");
    assert!(t.len() > 400, "only {} commands", t.len());
    for name in [
        "set",
        "xgroup|create",
        "function|load",
        "hsetex",
        "eval",
        "restore-asking",
        "stralgo",
    ] {
        assert!(t.get(name).is_some(), "{name} missing");
    }
}

#[test]
fn fixed_positions_and_ranges() {
    let t = CommandTable::builtin();
    assert_eq!(keys(&t, &["SET", "k", "v"]), [1]);
    assert_eq!(keys(&t, &["del", "a", "b", "c"]), [1, 2, 3]);
    assert_eq!(keys(&t, &["MSET", "a", "1", "b", "2"]), [1, 3]);
    assert_eq!(keys(&t, &["RENAME", "a", "b"]), [1, 2]);
    assert_eq!(keys(&t, &["BLPOP", "a", "b", "0"]), [1, 2]);
    assert_eq!(keys(&t, &["COPY", "a", "b", "REPLACE"]), [1, 2]);
}

#[test]
fn keynum_commands() {
    let t = CommandTable::builtin();
    assert_eq!(keys(&t, &["EVAL", "return 1", "2", "a", "b", "x"]), [3, 4]);
    assert_eq!(keys(&t, &["EVALSHA", "abc", "0", "x"]), Vec::<usize>::new());
    assert_eq!(keys(&t, &["FCALL", "f", "1", "a", "x"]), [3]);
    assert_eq!(
        keys(
            &t,
            &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]
        ),
        [1, 3, 4]
    );
    assert_eq!(keys(&t, &["LMPOP", "2", "a", "b", "LEFT"]), [2, 3]);
    assert_eq!(keys(&t, &["BLMPOP", "0", "1", "a", "LEFT"]), [3]);
    assert!(matches!(
        t.key_indices(&a(&["EVAL", "s", "x", "a"])),
        Err(CommandError::BadNumKeys { .. })
    ));
    assert!(matches!(
        t.key_indices(&a(&["EVAL", "s", "3", "a"])),
        Err(CommandError::OutOfRange { .. })
    ));
}

#[test]
fn keyword_search() {
    let t = CommandTable::builtin();
    assert_eq!(
        keys(&t, &["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"]),
        [4, 5]
    );
    assert_eq!(
        keys(&t, &["XREADGROUP", "GROUP", "g", "c", "streams", "a", "0"]),
        [5]
    );
    assert_eq!(
        keys(&t, &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "d"]),
        [1, 7]
    );
}

#[test]
fn subcommands() {
    let t = CommandTable::builtin();
    assert_eq!(keys(&t, &["XGROUP", "CREATE", "s", "g", "$"]), [2]);
    assert_eq!(keys(&t, &["xgroup", "setid", "s", "g", "0"]), [2]);
    assert_eq!(keys(&t, &["OBJECT", "ENCODING", "k"]), [2]);
    assert_eq!(keys(&t, &["FUNCTION", "LOAD", "code"]), Vec::<usize>::new());
    assert!(matches!(
        t.key_indices(&a(&["NOSUCHCMD", "x"])),
        Err(CommandError::Unknown(n)) if n == "nosuchcmd"
    ));
}

#[test]
fn hand_written_rules() {
    let t = CommandTable::builtin();
    assert_eq!(keys(&t, &["SORT", "k"]), [1]);
    assert_eq!(
        keys(&t, &["SORT", "k", "BY", "store", "STORE", "d"]),
        [1, 5]
    );
    assert_eq!(
        keys(&t, &["SORT", "k", "LIMIT", "0", "1", "STORE", "d"]),
        [1, 6]
    );
    assert_eq!(keys(&t, &["SORT_RO", "k", "ALPHA"]), [1]);
    assert_eq!(keys(&t, &["MIGRATE", "h", "1", "k", "0", "10"]), [3]);
    assert_eq!(
        keys(
            &t,
            &["MIGRATE", "h", "1", "", "0", "10", "AUTH", "keys", "KEYS", "a", "b"]
        ),
        [9, 10]
    );
    assert_eq!(keys(&t, &["STRALGO", "LCS", "KEYS", "a", "b"]), [3, 4]);
}

#[test]
fn arity_is_checked() {
    let t = CommandTable::builtin();
    assert!(matches!(
        t.key_indices(&a(&["GET"])),
        Err(CommandError::Arity { .. })
    ));
    assert!(matches!(
        t.key_indices(&a(&["GET", "a", "b"])),
        Err(CommandError::Arity { .. })
    ));
    assert_eq!(t.key_indices(&[]), Err(CommandError::Empty));
}

/// A ≤ 6.2 style entry: no key specs, only the triple.
fn legacy_entry(name: &str, arity: i64, flags: &[&str], f: i64, l: i64, s: i64) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(Bytes::copy_from_slice(name.as_bytes())),
        Frame::Integer(arity),
        Frame::Array(
            flags
                .iter()
                .map(|x| Frame::Simple(Bytes::copy_from_slice(x.as_bytes())))
                .collect(),
        ),
        Frame::Integer(f),
        Frame::Integer(l),
        Frame::Integer(s),
    ])
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn legacy_reply_uses_the_triple() {
    let reply = Frame::Array(vec![
        legacy_entry("mymod.set", -3, &["write"], 1, 1, 1),
        legacy_entry("mymod.mset", -3, &["write"], 1, -1, 2),
        legacy_entry("mymod.multi", -2, &["write", "movablekeys"], 0, 0, 0),
        Frame::Null,
    ]);
    let t = CommandTable::from_command_reply(&reply).expect("parses");
    assert_eq!(t.len(), 3);
    assert_eq!(keys(&t, &["MYMOD.SET", "k", "v"]), [1]);
    assert_eq!(keys(&t, &["mymod.mset", "a", "1", "b", "2"]), [1, 3]);
    assert!(matches!(
        t.key_indices(&a(&["mymod.multi", "x"])),
        Err(CommandError::MovableWithoutSpecs { .. })
    ));
}

#[test]
fn merge_source_wins_but_inherits_specs() {
    // A 6.2 source reports XREAD with movablekeys and no specs; the built-in
    // specs still find its keys. Its own flags win.
    let reply = Frame::Array(vec![
        legacy_entry("xread", -4, &["readonly", "movablekeys"], 0, 0, 0),
        legacy_entry("xgroup", -2, &["write"], 2, 2, 1),
        legacy_entry("newcmd", 2, &["write"], 1, 1, 1),
    ]);
    let t = CommandTable::for_source(&reply).expect("parses");
    assert_eq!(keys(&t, &["XREAD", "STREAMS", "a", "0"]), [2]);
    assert_eq!(keys(&t, &["newcmd", "k"]), [1]);
    // Subcommand entries from the built-in table still apply.
    assert_eq!(keys(&t, &["XGROUP", "CREATE", "s", "g", "$"]), [2]);
    assert!(!t
        .get("xread")
        .expect("present")
        .flags
        .contains(CommandFlags::BLOCKING));
}

/// A 7.0+ entry with key specs and subcommands, RESP2 flat arrays.
fn spec_frame(begin: Frame, find: Frame, flags: &[&str]) -> Frame {
    Frame::Array(vec![
        bulk("flags"),
        Frame::Array(flags.iter().map(|f| bulk(f)).collect()),
        bulk("begin_search"),
        begin,
        bulk("find_keys"),
        find,
    ])
}

#[test]
fn key_specs_and_subcommands_resp2_and_resp3() {
    let begin = Frame::Array(vec![
        bulk("type"),
        bulk("keyword"),
        bulk("spec"),
        Frame::Array(vec![
            bulk("keyword"),
            bulk("KEYS"),
            bulk("startfrom"),
            Frame::Integer(1),
        ]),
    ]);
    // RESP3 map for find_keys.
    let find = Frame::Map(vec![
        (bulk("type"), bulk("keynum")),
        (
            bulk("spec"),
            Frame::Map(vec![
                (bulk("keynumidx"), Frame::Integer(0)),
                (bulk("firstkey"), Frame::Integer(1)),
                (bulk("keystep"), Frame::Integer(1)),
            ]),
        ),
    ]);
    let sub = Frame::Array(vec![
        bulk("box|put"),
        Frame::Integer(-4),
        Frame::Array(vec![Frame::Simple(Bytes::from_static(b"write"))]),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![spec_frame(begin, find, &["OW", "update"])]),
        Frame::Array(vec![]),
    ]);
    let container = Frame::Array(vec![
        bulk("box"),
        Frame::Integer(-2),
        Frame::Array(vec![]),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![sub]),
    ]);
    let t = CommandTable::from_command_reply(&Frame::Array(vec![container])).expect("parses");
    assert_eq!(t.len(), 2);
    assert_eq!(
        keys(&t, &["BOX", "PUT", "x", "KEYS", "2", "a", "b"]),
        [5, 6]
    );
    let spec = t.get("box|put").expect("subcommand present");
    assert_eq!(spec.key_specs[0].flags, ["ow", "update"]);
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    for bad in [
        Frame::Error(Bytes::from_static(b"ERR unknown command")),
        Frame::Integer(3),
        Frame::Array(vec![Frame::Integer(1)]),
        Frame::Array(vec![Frame::Array(vec![bulk("x"), Frame::Integer(1)])]),
        Frame::Array(vec![legacy_entry("x", 1, &[], 1, 1, 1)
            .into_array()
            .map(|mut v| {
                v[1] = bulk("notanumber");
                Frame::Array(v)
            })
            .expect("array")]),
    ] {
        assert!(CommandTable::from_command_reply(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn classification() {
    let t = CommandTable::builtin();
    let c = |w: &[&str]| t.class(&a(w));
    assert_eq!(c(&["SET", "k", "v"]), CommandClass::Keyed { keys: vec![1] });
    assert_eq!(c(&["ping"]), CommandClass::Skip(SkipReason::Heartbeat));
    assert_eq!(
        c(&["REPLCONF", "GETACK", "*"]),
        CommandClass::Skip(SkipReason::ReplicationControl)
    );
    assert_eq!(
        c(&["PUBLISH", "c", "m"]),
        CommandClass::Skip(SkipReason::PubSub)
    );
    assert_eq!(
        c(&["SPUBLISH", "c", "m"]),
        CommandClass::Skip(SkipReason::PubSub)
    );
    assert_eq!(
        c(&["CLUSTER", "SYNCSLOTS", "ACK"]),
        CommandClass::Skip(SkipReason::ClusterInternal)
    );
    assert_eq!(c(&["SELECT", "0"]), CommandClass::Skip(SkipReason::Select));
    assert_eq!(c(&["MULTI"]), CommandClass::Skip(SkipReason::Transaction));
    assert_eq!(c(&["exec"]), CommandClass::Skip(SkipReason::Transaction));
    for b in [
        &["FLUSHALL"][..],
        &["flushdb", "ASYNC"],
        &["FUNCTION", "LOAD", "#!lua name=x\n"],
        &["function", "delete", "x"],
        &["FUNCTION", "FLUSH"],
        &["FUNCTION", "RESTORE", "payload"],
        &["SCRIPT", "LOAD", "return 1"],
        &["SCRIPT", "FLUSH"],
    ] {
        assert_eq!(c(b), CommandClass::Broadcast, "{b:?}");
    }
    assert_eq!(
        c(&["SCRIPT", "KILL"]),
        CommandClass::Skip(SkipReason::NoDataEffect)
    );
    assert_eq!(
        c(&["FUNCTION", "STATS"]),
        CommandClass::Skip(SkipReason::NoDataEffect)
    );
    assert_eq!(
        c(&["SWAPDB", "0", "1"]),
        CommandClass::Unsupported(UnsupportedReason::CrossDb)
    );
    assert_eq!(
        c(&["MOVE", "k", "1"]),
        CommandClass::Unsupported(UnsupportedReason::CrossDb)
    );
    assert_eq!(
        c(&["COPY", "a", "b", "DB", "2"]),
        CommandClass::Unsupported(UnsupportedReason::CrossDb)
    );
    assert_eq!(
        c(&["COPY", "a", "b"]),
        CommandClass::Keyed { keys: vec![1, 2] }
    );
    assert_eq!(
        c(&["EVAL", "redis.call('set','x','1')", "0"]),
        CommandClass::Unsupported(UnsupportedReason::KeylessWrite)
    );
    assert!(matches!(
        c(&["NOPE"]),
        CommandClass::Unsupported(UnsupportedReason::Keys(CommandError::Unknown(_)))
    ));
    assert!(matches!(
        c(&["GET"]),
        CommandClass::Unsupported(UnsupportedReason::Keys(CommandError::Arity { .. }))
    ));
}

#[test]
fn split_kinds() {
    let t = CommandTable::builtin();
    let k = |w: &[&str]| t.split_kind(&a(w));
    assert_eq!(k(&["MSET", "a", "1"]), SplitKind::PerKey(2));
    for n in ["DEL", "unlink", "TOUCH", "EXISTS", "MGET"] {
        assert_eq!(k(&[n, "a"]), SplitKind::PerKey(1), "{n}");
    }
    for n in [
        "MSETNX",
        "RENAME",
        "SMOVE",
        "LMOVE",
        "BLMOVE",
        "SINTERSTORE",
        "ZUNIONSTORE",
    ] {
        assert_eq!(k(&[n]), SplitKind::AllOrNothing, "{n}");
    }
}

#[test]
fn split_per_key_in_order() {
    let t = CommandTable::builtin();
    // Group by first letter.
    let g = |k: &[u8]| k.first().copied();
    assert_eq!(
        t.split_by(&a(&["MSET", "a1", "1", "b1", "2", "a2", "3"]), g)
            .expect("splits"),
        vec![a(&["MSET", "a1", "1", "a2", "3"]), a(&["MSET", "b1", "2"])]
    );
    assert_eq!(
        t.split_by(&a(&["DEL", "b", "a", "b2"]), g).expect("splits"),
        vec![a(&["DEL", "b", "b2"]), a(&["DEL", "a"])]
    );
    // One group: the command itself, even when all-or-nothing.
    assert_eq!(
        t.split_by(&a(&["RENAME", "a1", "a2"]), g)
            .expect("one group"),
        vec![a(&["RENAME", "a1", "a2"])]
    );
}

#[test]
fn split_refuses_all_or_nothing_across_groups() {
    let t = CommandTable::builtin();
    let g = |k: &[u8]| k.first().copied();
    for cmd in [
        &["MSETNX", "a", "1", "b", "2"][..],
        &["RENAME", "a", "b"],
        &["SMOVE", "a", "b", "m"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["SINTERSTORE", "d", "a", "b"],
    ] {
        assert!(
            matches!(t.split_by(&a(cmd), g), Err(SplitError::CrossGroup { groups, .. }) if groups >= 2),
            "{cmd:?}"
        );
    }
    assert!(matches!(
        t.split_by(&a(&["FLUSHALL"]), g),
        Err(SplitError::NoKeys { .. })
    ));
    assert!(matches!(
        t.split_by(&a(&["NOPE", "a"]), g),
        Err(SplitError::Keys(_))
    ));
}

/// Whatever the arguments, no rule panics and every index is inside the command.
#[test]
fn any_arguments_never_panic() {
    let t = CommandTable::builtin();
    let pool = [
        "k",
        "0",
        "1",
        "2",
        "-1",
        "99999999999999999999",
        "9223372036854775807",
        "STREAMS",
        "KEYS",
        "STORE",
        "",
        "LIMIT",
    ];
    let mut names: Vec<String> = t.names().map(str::to_string).collect();
    names.sort();
    let prefixes = crate::filter::KeyPrefixes::parse("k").expect("valid");
    for name in &names {
        let mut words: Vec<&str> = name.split('|').collect();
        let base = words.len();
        for len in 0..7 {
            for seed in 0..pool.len() {
                words.truncate(base);
                for i in 0..len {
                    words.push(pool[(seed * 7 + i * 3 + len) % pool.len()]);
                }
                let args = a(&words);
                if let Ok(ix) = t.key_indices(&args) {
                    assert!(
                        ix.iter().all(|&i| i > 0 && i < args.len()),
                        "{words:?}: {ix:?}"
                    );
                }
                let _ = t.class(&args);
                let _ = t.split_by(&args, |k| k.len());
                let _ = crate::filter::filter_command(&t, &prefixes, &args);
                let _ = absolutize_ttl(&args, 1);
            }
        }
    }
}
