//! The formats newer than any server installed here (Redis 8.6 = RDB 13, Redis 8.8 = RDB
//! 14), built byte by byte from the layouts the Redis sources write: `rdbSaveObject`'s
//! stream types 26 (IDMP producers after the groups) and 27 (a NACK zone after each
//! group's consumers), `rdbSaveKeyMetadata`'s `KEY_META` opcode, and the types this
//! version refuses (array, hash templates, GCRA, Valkey's PATH_HASH).

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bytes::Bytes;
use common::*;
use rsm_rdb::constants::*;
use rsm_rdb::encode::encode_for;
use rsm_rdb::{
    dump, Consumer, DecodeOptions, Decoder, Elements, Event, IdmpEntry, IdmpProducer, KeyMetaClass,
    PendingEntry, RdbError, RdbVersion, StreamEntry, StreamGroup, StreamId, StreamIdmp, StreamMeta,
    MAX_CHUNK_ITEMS,
};

fn len(n: u64) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    }
}

fn s(b: &[u8]) -> Vec<u8> {
    [len(b.len() as u64), b.to_vec()].concat()
}

fn b(x: &str) -> Bytes {
    Bytes::copy_from_slice(x.as_bytes())
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

/// A stream id as the PEL and the NACK zone store it: 16 bytes, big-endian ms then seq.
fn raw_id(ms: u64, seq: u64) -> Vec<u8> {
    [ms.to_be_bytes(), seq.to_be_bytes()].concat()
}

/// Magic, records, EOF, CRC64 (computed with the `crc` crate, not this crate's).
fn file(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = [magic, body, &[RDB_OPCODE_EOF]].concat();
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// A listpack of short strings (every element < 64 bytes, 6-bit string encoding).
fn listpack(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for it in items {
        assert!(it.len() < 64);
        body.push(0x80 | it.len() as u8);
        body.extend_from_slice(it);
        body.push(1 + it.len() as u8);
    }
    let total = 6 + body.len() + 1;
    let mut lp = (total as u32).to_le_bytes().to_vec();
    lp.extend_from_slice(&(items.len() as u16).to_le_bytes());
    lp.extend_from_slice(&body);
    lp.push(0xff);
    lp
}

/// Entries 7-0 and 7-1 (fields a, b) in one node with master id 7-0.
fn stream_node() -> Vec<u8> {
    let items: [&[u8]; 15] = [
        b"2", b"0", b"2", b"a", b"b", b"0", // master: count, deleted, fields, terminator
        b"2", b"0", b"0", b"1", b"2", b"5", // 7-0: SAMEFIELDS, deltas, values, lp-count
        b"2", b"0", b"1",
    ];
    let mut lp_items: Vec<&[u8]> = items.to_vec();
    lp_items.extend_from_slice(&[b"3", b"4", b"5"]); // 7-1's values and lp-count
    [len(1), s(&raw_id(7, 0)), s(&listpack(&lp_items))].concat()
}

/// Type 21's metadata: length 2, last id 7-1, first 7-0, max deleted 0-0, 2 added.
fn stream_meta() -> Vec<u8> {
    [
        len(2),
        len(7),
        len(1),
        len(7),
        len(0),
        len(0),
        len(0),
        len(2),
    ]
    .concat()
}

/// Group "g": last id 7-1, entries read 2, PEL {7-0, 7-1, 9-0}, consumer "c" (seen 11,
/// active 12) owning `owned`.
fn group(owned: &[(u64, u64)]) -> Vec<u8> {
    let mut v = [s(b"g"), len(7), len(1), len(2), len(3)].concat();
    for (i, (ms, seq)) in [(7u64, 0u64), (7, 1), (9, 0)].into_iter().enumerate() {
        v.extend(raw_id(ms, seq));
        v.extend((1_000 + i as i64).to_le_bytes());
        v.extend(len(i as u64 + 1));
    }
    v.extend(len(1));
    v.extend(
        [
            s(b"c"),
            11i64.to_le_bytes().to_vec(),
            12i64.to_le_bytes().to_vec(),
        ]
        .concat(),
    );
    v.extend(len(owned.len() as u64));
    for &(ms, seq) in owned {
        v.extend(raw_id(ms, seq));
    }
    v
}

/// IDMP state: duration 100, max 50, producer "p1" with two records, "p2" with none,
/// 5 iids added, 1 duplicate.
/// A type-27 value: entries 7-0, 7-1 and 9-0 pending in one group, 7-0 and 9-0 owned by a
/// consumer; the NACK zone lists 7-1 (so it has no owner) and 9-0 (owned and NACKed).
fn nacked_stream() -> Vec<u8> {
    let nack = [len(2), raw_id(7, 1), raw_id(9, 0)].concat();
    [
        stream_node(),
        stream_meta(),
        len(1),
        group(&[(7, 0), (9, 0)]),
        nack,
        idmp(),
    ]
    .concat()
}

fn idmp() -> Vec<u8> {
    [
        len(100),
        len(50),
        len(2),
        s(b"p1"),
        len(2),
        s(b"i1"),
        len(7),
        len(0),
        s(b"i2"),
        len(7),
        len(1),
        s(b"p2"),
        len(0),
        len(5),
        len(1),
    ]
    .concat()
}

fn expected_idmp() -> StreamIdmp {
    StreamIdmp {
        duration: 100,
        max_entries: 50,
        producers: vec![
            IdmpProducer {
                pid: b("p1"),
                entries: vec![
                    IdmpEntry {
                        iid: b("i1"),
                        id: id(7, 0),
                    },
                    IdmpEntry {
                        iid: b("i2"),
                        id: id(7, 1),
                    },
                ],
            },
            IdmpProducer {
                pid: b("p2"),
                entries: vec![],
            },
        ],
        iids_added: Some(5),
        iids_duplicates: Some(1),
    }
}

fn pending(ms: u64, seq: u64, i: i64, consumer: &str, nacked: bool) -> PendingEntry {
    PendingEntry {
        id: id(ms, seq),
        delivery_time_ms: 1_000 + i,
        delivery_count: i as u64 + 1,
        consumer: b(consumer),
        nacked,
    }
}

fn expected_head() -> Vec<Elements> {
    vec![
        Elements::StreamEntries(vec![
            StreamEntry {
                id: id(7, 0),
                fields: vec![(b("a"), b("1")), (b("b"), b("2"))],
            },
            StreamEntry {
                id: id(7, 1),
                fields: vec![(b("a"), b("3")), (b("b"), b("4"))],
            },
        ]),
        Elements::StreamMeta(StreamMeta {
            length: 2,
            last_id: id(7, 1),
            first_id: Some(id(7, 0)),
            max_deleted_id: Some(id(0, 0)),
            entries_added: Some(2),
        }),
    ]
}

fn expected_group(pending: Vec<PendingEntry>) -> Elements {
    let owned = pending.iter().filter(|p| !p.consumer.is_empty()).count() as u64;
    Elements::StreamGroup(StreamGroup {
        name: b("g"),
        last_id: id(7, 1),
        entries_read: Some(2),
        pending_total: 3,
        pending,
        consumers: vec![Consumer {
            name: b("c"),
            seen_time_ms: 11,
            active_time_ms: Some(12),
            pending_count: owned,
        }],
    })
}

/// The events of `f` fed one byte at a time, checked against feeding it whole.
fn decode_both_ways(f: &[u8], opts: DecodeOptions) -> Vec<Event> {
    let whole = decode_chunked(f, opts.clone(), &[f.len()]);
    let bytewise = decode_chunked(f, opts, &[1]);
    assert_eq!(whole, bytewise);
    whole
}

fn one_key(events: &[Event]) -> (rsm_rdb::KeyMeta, Vec<Elements>) {
    let mut ks = keys(events);
    assert_eq!(ks.len(), 1);
    let k = ks.remove(0);
    (k.meta, k.elements)
}

#[test]
fn redis_86_stream_with_idempotent_producers() {
    let value = [
        stream_node(),
        stream_meta(),
        len(1),
        group(&[(7, 0)]),
        idmp(),
    ]
    .concat();
    let f = file(
        b"REDIS0013",
        &[vec![RDB_TYPE_STREAM_LISTPACKS_4], s(b"st"), value.clone()].concat(),
    );
    let events = decode_both_ways(&f, DecodeOptions::elements());
    assert_eq!(
        events[0],
        Event::Header {
            version: RdbVersion::Redis(13)
        }
    );
    let (meta, els) = one_key(&events);
    assert_eq!((meta.rdb_type, meta.key), (26, b("st")));
    let mut want = expected_head();
    want.push(expected_group(vec![
        pending(7, 0, 0, "c", false),
        pending(7, 1, 1, "", false),
        pending(9, 0, 2, "", false),
    ]));
    want.push(Elements::StreamIdmp(expected_idmp()));
    assert_eq!(els, want);

    // raw mode hands out exactly the value's bytes (walked, not decoded)
    let raw = decode_both_ways(&f, DecodeOptions::raw());
    assert!(raw.contains(&Event::RawValue(Bytes::from(value.clone()))));

    // the same value as a Redis 8.6 DUMP payload (trailer 13)
    let payload = dump::build_payload(RDB_TYPE_STREAM_LISTPACKS_4, &value, 13);
    let (t, from_dump) = dump::decode_payload(&payload).unwrap();
    assert_eq!((t, from_dump), (26, want));
    assert_eq!(
        dump::min_version(RDB_TYPE_STREAM_LISTPACKS_4, false),
        Some(RdbVersion::Redis(13))
    );
    // a Valkey file has no type 26
    let vk = file(
        b"VALKEY080",
        &[vec![RDB_TYPE_STREAM_LISTPACKS_4], s(b"st"), value].concat(),
    );
    let e = Decoder::new(DecodeOptions::elements())
        .feed(Bytes::from(vk), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.to_string(), "unknown value type 26 at offset 9");
}

#[test]
fn redis_88_stream_with_a_nack_zone() {
    let value = nacked_stream();
    let f = file(
        b"REDIS0014",
        &[vec![RDB_TYPE_STREAM_LISTPACKS_5], s(b"st"), value.clone()].concat(),
    );
    let (meta, els) = one_key(&decode_both_ways(&f, DecodeOptions::elements()));
    assert_eq!(meta.rdb_type, 27);
    let mut want = expected_head();
    want.push(expected_group(vec![
        pending(7, 0, 0, "c", false),
        pending(7, 1, 1, "", true),
        pending(9, 0, 2, "c", true),
    ]));
    want.push(Elements::StreamIdmp(expected_idmp()));
    assert_eq!(els, want);
    let raw = decode_both_ways(&f, DecodeOptions::raw());
    assert!(raw.contains(&Event::RawValue(Bytes::from(value.clone()))));

    // Into Redis 7.4 (type 21): the unowned entry is left out, the owned NACKed one keeps
    // its owner, and the IDMP state has nowhere to go; each is counted.
    let enc = encode_for(RdbVersion::Redis(12), 27, &els, 0).unwrap();
    assert_eq!(
        (
            enc.losses.pending_unowned,
            enc.losses.nack_marks,
            enc.losses.stream_idmp,
            enc.losses.stream_counters
        ),
        (1, 1, 1, 0)
    );
    let (t, back) = dump::decode_payload(&enc.payload.unwrap()).unwrap();
    assert_eq!(t, RDB_TYPE_STREAM_LISTPACKS_3);
    let mut want21 = expected_head();
    let Elements::StreamGroup(mut g) = expected_group(vec![
        pending(7, 0, 0, "c", false),
        pending(9, 0, 2, "c", false),
    ]) else {
        unreachable!()
    };
    g.pending_total = 2;
    want21.push(Elements::StreamGroup(g));
    assert_eq!(back, want21);

    // a NACK id that is not in the group's PEL is a corrupt value, never a guess
    let bad_nack = [len(1), raw_id(8, 0)].concat();
    let bad = [
        stream_node(),
        stream_meta(),
        len(1),
        group(&[(7, 0)]),
        bad_nack,
        idmp(),
    ]
    .concat();
    let bad = dump::build_payload(RDB_TYPE_STREAM_LISTPACKS_5, &bad, 14);
    let e = dump::decode_payload(&bad).unwrap_err();
    assert!(
        e.to_string().contains("NACK zone id 8-0 in the group PEL"),
        "{e}"
    );
}

#[test]
fn idmp_records_come_in_bounded_chunks() {
    let n = MAX_CHUNK_ITEMS as u64 + 10;
    let mut v = [stream_node(), stream_meta(), len(0)].concat();
    v.extend([len(60), len(n), len(1), s(b"p"), len(n)].concat());
    for i in 0..n {
        v.extend([s(format!("i{i}").as_bytes()), len(7), len(i)].concat());
    }
    v.extend([len(n), len(0)].concat());
    let payload = dump::build_payload(RDB_TYPE_STREAM_LISTPACKS_4, &v, 13);
    let (_, els) = dump::decode_payload(&payload).unwrap();
    let chunks: Vec<&StreamIdmp> = els
        .iter()
        .filter_map(|e| match e {
            Elements::StreamIdmp(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].producers.len(), 1);
    assert_eq!(chunks[0].producers[0].entries.len(), MAX_CHUNK_ITEMS);
    assert_eq!(
        (chunks[0].iids_added, chunks[0].iids_duplicates),
        (None, None)
    );
    // the producer goes on in the next chunk, named again
    assert_eq!(chunks[1].producers[0].pid, b("p"));
    assert_eq!(chunks[1].producers[0].entries.len(), 10);
    assert_eq!(
        chunks[1].producers[0].entries[9],
        IdmpEntry {
            iid: Bytes::from(format!("i{}", n - 1)),
            id: id(7, n - 1)
        }
    );
    assert_eq!(
        (chunks[1].iids_added, chunks[1].iids_duplicates),
        (Some(n), Some(0))
    );
    assert_eq!((chunks[1].duration, chunks[1].max_entries), (60, n));
}

/// The 32-bit class spec `keyMetaClassEncode` builds: 4 chars of 6 bits (charset
/// `A-Z a-z 0-9 _ -`), a 5-bit version, 3 flag bits.
fn class_spec(name: &str, version: u32, flags: u32) -> [u8; 4] {
    const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let chars = name.bytes().fold(0u32, |acc, ch| {
        acc << 6 | CHARSET.iter().position(|&x| x == ch).unwrap() as u32
    });
    (((chars << 5) | version) << 3 | flags).to_le_bytes()
}

/// `KEY_META` with one class "KMT1" v2 (ALLOW_IGNORE) holding UINT 42 and STRING "ab".
fn key_meta() -> (Vec<u8>, Vec<u8>) {
    let values = [
        len(RDB_MODULE_OPCODE_UINT),
        len(42),
        len(RDB_MODULE_OPCODE_STRING),
        s(b"ab"),
        len(RDB_MODULE_OPCODE_EOF),
    ]
    .concat();
    let block = [
        vec![RDB_OPCODE_KEY_META],
        len(1),
        class_spec("KMT1", 2, 1).to_vec(),
        values.clone(),
    ]
    .concat();
    (block, values)
}

#[test]
fn redis_86_key_meta_rides_with_the_key_and_its_expire() {
    let (block, values) = key_meta();
    let expire = [
        vec![RDB_OPCODE_EXPIRETIME_MS],
        1_900_000_000_123i64.to_le_bytes().to_vec(),
    ]
    .concat();
    let body = [
        expire,
        block.clone(),
        vec![RDB_TYPE_STRING],
        s(b"k"),
        s(b"v"),
        // a second key without metadata: nothing carries over
        vec![RDB_TYPE_STRING],
        s(b"k2"),
        s(b"w"),
    ]
    .concat();
    let f = file(b"REDIS0013", &body);
    let events = decode_both_ways(&f, DecodeOptions::elements());
    let ks = keys(&events);
    assert_eq!(ks.len(), 2);
    let m = &ks[0].meta;
    assert_eq!(
        (m.key.clone(), m.expire_at_ms),
        (b("k"), Some(1_900_000_000_123))
    );
    assert_eq!(
        m.meta_classes,
        vec![KeyMetaClass {
            name: "KMT1".into(),
            version: 2,
            flags: 1,
            raw: Bytes::from(values.clone()),
        }]
    );
    assert_eq!(ks[0].elements, vec![Elements::StringPart(b("v"))]);
    assert_eq!(
        (ks[1].meta.expire_at_ms, ks[1].meta.meta_classes.len()),
        (None, 0)
    );
    let mut d = Decoder::new(DecodeOptions::raw());
    d.feed(Bytes::from(f), &mut Vec::new()).unwrap();
    assert_eq!(d.key_meta_classes(), 1);

    // A Redis 8.6 DUMP puts the block before the type byte.
    let mut p = block.clone();
    p.extend([vec![RDB_TYPE_STRING], s(b"v")].concat());
    p.extend(13u16.to_le_bytes());
    let crc = rsm_rdb::crc::crc64(&p);
    p.extend(crc.to_le_bytes());
    let p = Bytes::from(p);
    let parsed = dump::parse_payload(&p).unwrap();
    assert_eq!(
        (
            parsed.rdb_type,
            parsed.value.as_ref(),
            parsed.key_meta.len()
        ),
        (RDB_TYPE_STRING, &s(b"v")[..], 1)
    );
    assert_eq!(
        dump::decode_payload(&p).unwrap(),
        (RDB_TYPE_STRING, vec![Elements::StringPart(b("v"))])
    );
    // rebuilt for an older target, the payload starts with the type byte again
    let old = dump::rewrite_trailer(&p, 12).unwrap();
    assert_eq!(old[0], RDB_TYPE_STRING);

    // 243 is KEY_META only in Redis files of RDB 13+; in Valkey files it is SLOT_IMPORT
    for magic in [&b"REDIS0012"[..], b"VALKEY080"] {
        let f = file(magic, &[block.clone(), vec![0], s(b"k"), s(b"v")].concat());
        let e = Decoder::new(DecodeOptions::elements())
            .feed(Bytes::from(f), &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.to_string(), "unknown opcode 243 at offset 9");
    }
    // A class its module requires (ALLOW_IGNORE unset): a server without the module refuses
    // it, and so does this decoder, naming it; never dropped without a word.
    let required = [
        vec![RDB_OPCODE_KEY_META],
        len(1),
        class_spec("Bl_m", 7, 0).to_vec(),
        len(RDB_MODULE_OPCODE_EOF),
    ]
    .concat();
    let f = file(
        b"REDIS0013",
        &[required.clone(), vec![0], s(b"k"), s(b"v")].concat(),
    );
    let e = Decoder::new(DecodeOptions::raw())
        .feed(Bytes::from(f), &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "key metadata class \"Bl_m\" (version 7) of the key at offset 11 cannot be migrated by \
         this version: only its module can write it, and the module did not allow servers \
         without it to drop it (flag ALLOW_IGNORE unset); remove the module's metadata from \
         these keys on the source, or migrate with the module's own tools"
    );
    let mut p = [required, vec![RDB_TYPE_STRING], s(b"v")].concat();
    p.extend(13u16.to_le_bytes());
    let crc = rsm_rdb::crc::crc64(&p);
    p.extend(crc.to_le_bytes());
    assert!(matches!(
        dump::parse_payload(&Bytes::from(p)),
        Err(RdbError::RequiredKeyMeta { offset: 2, .. })
    ));
    // a class count Redis never writes
    for n in [0u64, 8] {
        let f = file(b"REDIS0013", &[vec![RDB_OPCODE_KEY_META], len(n)].concat());
        let e = Decoder::new(DecodeOptions::elements())
            .feed(Bytes::from(f), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, RdbError::Invalid { offset: 10, .. }), "{e}");
    }
}

#[test]
fn types_no_target_can_hold_are_refused_in_one_line() {
    let tmpl = "hash template (HASH_TMPL_*), written by Redis development builds after 8.8, \
                RDB 15) at offset 9 cannot be migrated by this version: this version does not \
                decode hash templates (an unreleased format)";
    let cases: [(u8, &str); 6] = [
        (
            28,
            "array (sparse array), written by Redis 8.8, RDB 14) at offset 9 cannot be \
             migrated by this version: no type an older target loads can hold a sparse array",
        ),
        (29, tmpl),
        (30, tmpl),
        (31, tmpl),
        (32, tmpl),
        (
            33,
            "GCRA rate limiter, written by Redis development builds after 8.8, RDB 15) at \
             offset 9 cannot be migrated by this version: no type an older target loads can \
             hold a GCRA limiter",
        ),
    ];
    for (t, what) in cases {
        let want = format!(
            "RDB type {t} ({what}; delete or convert these keys on the source (or copy them \
             with a tool that knows the type) and start again"
        );
        let f = file(b"REDIS0014", &[vec![t], s(b"k"), len(1)].concat());
        for opts in [DecodeOptions::elements(), DecodeOptions::raw()] {
            let e = Decoder::new(opts)
                .feed(Bytes::from(f.clone()), &mut Vec::new())
                .unwrap_err();
            assert_eq!(e.to_string(), want);
            assert!(!e.to_string().contains('\n'));
            assert_eq!(e.offset(), 9);
        }
        // the same from a DUMP payload, at its first byte
        let p = dump::build_payload(t, &len(1), 14);
        let e = dump::decode_payload(&p).unwrap_err();
        assert_eq!(e.to_string(), want.replace("offset 9", "offset 0"));
        assert_eq!(dump::min_version(t, false), None);
    }
}

/// Real servers judge the re-encoding of Redis 8.6/8.8 streams: RESTOREd into each older
/// server (the default `redis-server` alone unless `$RSM_TEST_SERVERS` names the matrix),
/// the stream reads back with its own commands, and the pending entries that are left all
/// have an owner, so `XPENDING` with consumer details and `XCLAIM` are safe on them.
#[test]
fn newest_streams_restore_on_older_servers() {
    use rsm_testkit::redis::Value;
    use rsm_testkit::{test_server_bin, Server, ServerOptions};

    let v27 = nacked_stream();
    // type 26 with 7-1 and 9-0 owned by no one: no server writes that, but none may crash
    let v26 = [
        stream_node(),
        stream_meta(),
        len(1),
        group(&[(7, 0)]),
        idmp(),
    ]
    .concat();
    // (type, value, trailer, (unowned, NACK marks, IDMP), the PEL left: id and count)
    let cases = [
        (27, v27, 14, (1, 1, 1), vec![("7-0", 1), ("9-0", 3)]),
        (26, v26, 13, (2, 0, 1), vec![("7-0", 1)]),
    ];

    let matrix = std::env::var_os("RSM_TEST_SERVERS").is_some_and(|v| !v.is_empty());
    let labels: Vec<Option<&str>> = if matrix {
        [
            "redis-5.0.10",
            "redis-6.2.14",
            "redis-7.0.15",
            "redis-7.2.4",
            "redis-8.2.3",
            "valkey-8.1.8",
            "valkey-9.0.0",
            "valkey-9.1.2",
        ]
        .into_iter()
        .map(Some)
        .collect()
    } else {
        vec![None]
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        other => panic!("not a string: {other:?}"),
    };
    for label in labels {
        let srv = Server::start(ServerOptions {
            bin: label.map(test_server_bin),
            ..Default::default()
        });
        let cmd = |args: &[&str]| {
            let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
            srv.cmd(&a)
        };
        // the server's own RDB version, from the trailer of its DUMP
        cmd(&["SET", "v", "x"]);
        let Value::BulkString(own) = cmd(&["DUMP", "v"]) else {
            panic!("DUMP")
        };
        let target = dump::parse_payload(&Bytes::from(own)).unwrap().version();
        for (t, value, trailer, losses, pel_left) in &cases {
            let at = format!("{:?}, type {t}", srv.version());
            let payload = dump::build_payload(*t, value, *trailer);
            let (_, els) = dump::decode_payload(&payload).unwrap();
            let enc = encode_for(target, *t, &els, 0).unwrap();
            let l = &enc.losses;
            assert_eq!(
                (l.pending_unowned, l.nack_marks, l.stream_idmp),
                *losses,
                "{at}"
            );
            let p = enc.payload.unwrap();
            let r = srv.try_cmd(&[b"RESTORE", b"st", b"0", &p, b"REPLACE"]);
            assert!(r.is_ok(), "{at}: RESTORE refused: {r:?}");
            assert_eq!(cmd(&["XLEN", "st"]), Value::Int(2), "{at}");
            let Value::Array(pel) = cmd(&["XPENDING", "st", "g", "-", "+", "10"]) else {
                panic!("XPENDING")
            };
            let got: Vec<(String, String, String)> = pel
                .iter()
                .map(|e| match e {
                    Value::Array(f) => (text(&f[0]), text(&f[1]), text(&f[3])),
                    other => panic!("{other:?}"),
                })
                .collect();
            let want: Vec<(String, String, String)> = pel_left
                .iter()
                .map(|(id, n)| (id.to_string(), "c".to_string(), n.to_string()))
                .collect();
            assert_eq!(got, want, "{at}");
            if srv.version().at_least(6, 2) {
                cmd(&["XPENDING", "st", "g", "IDLE", "0", "-", "+", "10"]);
            }
            cmd(&["XCLAIM", "st", "g", "other", "0", "7-0", "9-0", "JUSTID"]);
            assert_eq!(cmd(&["PING"]), Value::SimpleString("PONG".into()), "{at}");
        }
    }
}

/// The versions after the newest this reads, and Valkey 9.2's compressed envelope
/// (`VKCS`, envelope version 1, codec 1 = LZ4, flags, stream kind 0 = RDB), each stop
/// with one line that says who writes them.
#[test]
fn newer_versions_and_the_compressed_envelope_are_refused_by_name() {
    let first_error = |f: &[u8]| {
        Decoder::new(DecodeOptions::elements())
            .feed(Bytes::copy_from_slice(f), &mut Vec::new())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        first_error(b"VALKEY081"),
        "unsupported RDB version 81 (valkey, written by Valkey 9.2) at offset 5: this version \
         reads REDIS0001..REDIS0014 (up to Redis 8.8) and VALKEY080 (Valkey 9.0/9.1); sync \
         from a server that writes one of those"
    );
    assert!(first_error(b"REDIS0015").starts_with(
        "unsupported RDB version 15 (redis, written by Redis development builds after 8.8)"
    ));
    let vkcs = [&b"VKCS"[..], &[1, 1, 0, 0], b"\x04\x22\x4d\x18"].concat();
    assert_eq!(
        first_error(&vkcs),
        "a compressed RDB (Valkey 9.2 VKCS envelope, codec 1) at offset 0: this version reads \
         plain RDB only; have the source send or save it uncompressed"
    );
    for v in [13, 14] {
        let f = file(format!("REDIS00{v}").as_bytes(), &[]);
        let ev = decode_both_ways(&f, DecodeOptions::elements());
        assert_eq!(
            ev,
            vec![
                Event::Header {
                    version: RdbVersion::Redis(v)
                },
                Event::Eof
            ]
        );
    }
}
