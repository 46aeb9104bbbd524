//! Encodings no server in the matrix writes any more (RDB 1–8: linked lists, zipmaps,
//! ziplists, old zsets, EXPIRETIME in seconds, modules, 7.0-RC functions, 7.4-RC hashes),
//! and sizes too big for committed fixtures (chunking of big strings, lists and PELs),
//! built here byte by byte with a tiny RDB writer.

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
use rsm_rdb::{dump, DecodeOptions, Elements, Event, HashField, RdbVersion, StreamId};

fn len(n: u64) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if n <= u32::MAX as u64 {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
}

fn s(b: &[u8]) -> Vec<u8> {
    [len(b.len() as u64), b.to_vec()].concat()
}

fn lzf_s(b: &[u8]) -> Vec<u8> {
    let c = lzf::compress(b).unwrap();
    [vec![0xC3], len(c.len() as u64), len(b.len() as u64), c].concat()
}

/// A file: magic, body, EOF and (for version >= 5) the CRC64 computed with the `crc` crate.
fn file(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = [magic, body, &[RDB_OPCODE_EOF]].concat();
    let v: u16 = std::str::from_utf8(&magic[magic.len() - 3..])
        .unwrap()
        .parse()
        .unwrap();
    if v >= 5 {
        let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&f);
        f.extend_from_slice(&crc.to_le_bytes());
    }
    f
}

fn ziplist(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev = 0usize;
    for it in items {
        let start = body.len();
        body.push(prev as u8);
        assert!(it.len() < 64);
        body.push(it.len() as u8);
        body.extend_from_slice(it);
        prev = body.len() - start;
    }
    let total = 10 + body.len() + 1;
    let mut z = Vec::new();
    z.extend_from_slice(&(total as u32).to_le_bytes());
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(&(items.len() as u16).to_le_bytes());
    z.extend_from_slice(&body);
    z.push(0xff);
    z
}

fn listpack(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for it in items {
        assert!(it.len() < 4096);
        let start = body.len();
        if it.len() < 64 {
            body.push(0x80 | it.len() as u8);
        } else {
            body.push(0xE0 | (it.len() >> 8) as u8);
            body.push(it.len() as u8);
        }
        body.extend_from_slice(it);
        let l = body.len() - start;
        if l < 128 {
            body.push(l as u8);
        } else {
            body.push((l >> 7) as u8);
            body.push(0x80 | (l & 127) as u8);
        }
    }
    let total = 6 + body.len() + 1;
    let mut lp = Vec::new();
    lp.extend_from_slice(&(total as u32).to_le_bytes());
    lp.extend_from_slice(&(items.len().min(65535) as u16).to_le_bytes());
    lp.extend_from_slice(&body);
    lp.push(0xff);
    lp
}

fn key(t: u8, k: &[u8], value: Vec<u8>) -> Vec<u8> {
    [vec![t], s(k), value].concat()
}

fn b(x: &str) -> Bytes {
    Bytes::copy_from_slice(x.as_bytes())
}

fn elements_of(events: &[Event]) -> Vec<Vec<Elements>> {
    keys(events).into_iter().map(|k| k.elements).collect()
}

#[test]
fn rdb1_plain_types_and_expire_seconds() {
    let mut body = Vec::new();
    body.extend(key(RDB_TYPE_STRING, b"s", s(b"v")));
    body.push(RDB_OPCODE_EXPIRETIME);
    body.extend_from_slice(&1_700_000_000i32.to_le_bytes());
    body.extend(key(
        RDB_TYPE_LIST,
        b"l",
        [len(2), s(b"a"), s(b"b")].concat(),
    ));
    body.extend(key(RDB_TYPE_SET, b"set", [len(1), s(b"m")].concat()));
    let zset = [
        len(3),
        s(b"a"),
        vec![3],
        b"1.5".to_vec(),
        s(b"b"),
        vec![254],
        s(b"c"),
        vec![253],
    ]
    .concat();
    body.extend(key(RDB_TYPE_ZSET, b"z", zset));
    body.extend(key(
        RDB_TYPE_HASH,
        b"h",
        [len(1), s(b"f"), s(b"v")].concat(),
    ));
    let f = file(b"REDIS0001", &body);
    let ev = decode_all(&f, DecodeOptions::elements());
    assert_eq!(
        ev.first(),
        Some(&Event::Header {
            version: RdbVersion::Redis(1)
        })
    );
    let ks = keys(&ev);
    assert_eq!(ks[1].meta.expire_at_ms, Some(1_700_000_000_000));
    assert_eq!(
        ks[1].elements,
        vec![Elements::ListItems(vec![b("a"), b("b")])]
    );
    assert_eq!(ks[2].elements, vec![Elements::SetMembers(vec![b("m")])]);
    let Elements::ZSetMembers(z) = &ks[3].elements[0] else {
        panic!()
    };
    assert_eq!((z[0].1, z[1].1), (1.5, f64::INFINITY));
    assert!(z[2].1.is_nan());
    assert_eq!(
        ks[4].elements,
        vec![Elements::HashFields(vec![HashField {
            field: b("f"),
            value: b("v"),
            expire_at_ms: None
        }])]
    );
    // raw mode: the value bytes exactly
    let raw = keys(&decode_all(&f, DecodeOptions::raw()));
    assert_eq!(raw[1].raw.as_deref(), Some(&[2, 1, b'a', 1, b'b'][..]));
}

#[test]
fn rdb6_compact_encodings_lzf_and_int_keys() {
    let big = "compressible ".repeat(40);
    let mut body = vec![RDB_OPCODE_SELECTDB, 2];
    body.extend(key(RDB_TYPE_STRING, b"lzf", lzf_s(big.as_bytes())));
    body.extend([RDB_TYPE_STRING, 0xC1, 0x39, 0x30]); // key "12345" int16-encoded
    body.extend([0xC2, 0x00, 0x94, 0x35, 0x77]); // value 2000000000 int32
    let zipmap = [
        2, 1, b'a', 1, 0, b'1', 2, b'b', b'b', 2, 1, b'2', b'2', 0, 0xff,
    ];
    body.extend(key(RDB_TYPE_HASH_ZIPMAP, b"zm", s(&zipmap)));
    body.extend(key(
        RDB_TYPE_LIST_ZIPLIST,
        b"zl",
        s(&ziplist(&[b"x", b"y"])),
    ));
    body.extend(key(
        RDB_TYPE_ZSET_ZIPLIST,
        b"zz",
        s(&ziplist(&[b"m", b"2.25", b"n", b"-inf"])),
    ));
    body.extend(key(
        RDB_TYPE_HASH_ZIPLIST,
        b"hz",
        s(&ziplist(&[b"f", b"v"])),
    ));
    body.extend(key(
        RDB_TYPE_LIST_QUICKLIST,
        b"ql",
        [
            len(2),
            s(&ziplist(&[b"a"])),
            lzf_s(&ziplist(&[&b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"[..]; 3])),
        ]
        .concat(),
    ));
    let f = file(b"REDIS0006", &body);
    for sizes in [vec![f.len()], vec![1], vec![3, 5, 7]] {
        let ev = decode_chunked(&f, DecodeOptions::elements(), &sizes);
        let ks = keys(&ev);
        assert!(ks.iter().all(|k| k.meta.db == 2));
        assert_eq!(ks[0].elements, vec![Elements::StringPart(b(&big))]);
        assert_eq!(ks[1].meta.key, b("12345"));
        assert_eq!(ks[1].elements, vec![Elements::StringPart(b("2000000000"))]);
        let Elements::HashFields(h) = &ks[2].elements[0] else {
            panic!()
        };
        assert_eq!((h[1].field.clone(), h[1].value.clone()), (b("bb"), b("22")));
        assert_eq!(
            ks[3].elements,
            vec![Elements::ListItems(vec![b("x"), b("y")])]
        );
        assert_eq!(
            ks[4].elements,
            vec![Elements::ZSetMembers(vec![
                (b("m"), 2.25),
                (b("n"), f64::NEG_INFINITY)
            ])]
        );
        assert_eq!(ks[6].elements.len(), 1);
        let Elements::ListItems(l) = &ks[6].elements[0] else {
            panic!()
        };
        assert_eq!(l.len(), 4);
    }
}

#[test]
fn modules_module_aux_and_pre_ga_functions() {
    let module_id: u64 = 0x1234_5678_9abc_d003;
    let module_value = [
        len(module_id),
        len(2),
        len(7),
        len(5),
        s(b"blob"),
        len(4),
        1.5f64.to_le_bytes().to_vec(),
        len(3),
        vec![0, 0, 0x80, 0x3f],
        len(0),
    ]
    .concat();
    let mut body = Vec::new();
    body.push(RDB_OPCODE_MODULE_AUX);
    body.extend([len(module_id), len(2), len(1), len(5), s(b"aux"), len(0)].concat());
    body.push(RDB_OPCODE_FUNCTION_PRE_GA);
    body.extend([s(b"lib"), s(b"LUA"), len(1), s(b"desc"), s(b"code here")].concat());
    body.extend(key(RDB_TYPE_MODULE_2, b"m", module_value.clone()));
    body.extend(key(
        RDB_TYPE_ZSET_2,
        b"z2",
        [len(1), s(b"a"), 2.5f64.to_le_bytes().to_vec()].concat(),
    ));
    let f = file(b"REDIS0010", &body);
    let ev = decode_all(&f, DecodeOptions::elements());
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::ModuleAux { module_id: m, when: 1, .. } if *m == module_id)));
    // The 7.0-rc record keeps name and engine apart; GA servers want them in the body's
    // `#!` line (as their own loader rebuilds it), else FUNCTION LOAD says "Missing
    // library metadata".
    assert!(ev.contains(&Event::Function {
        code: b("#!LUA name=lib\ncode here")
    }));
    let ks = keys(&ev);
    assert_eq!(
        ks[0].elements,
        vec![Elements::Module {
            module_id,
            raw: Bytes::from(module_value.clone())
        }]
    );
    assert_eq!(
        ks[1].elements,
        vec![Elements::ZSetMembers(vec![(b("a"), 2.5)])]
    );
    // raw mode with a tiny threshold still hands a module out whole
    let raw = keys(&decode_chunked(
        &f,
        DecodeOptions::raw_with_threshold(4),
        &[2],
    ));
    assert_eq!(raw[0].raw.as_deref(), Some(&module_value[..]));
}

#[test]
fn redis_74_release_candidate_hashes() {
    let mut body = Vec::new();
    // type 22 (Redis RC): <len n> n x (<len abs ttl> field value)
    body.extend(key(
        22,
        b"h22",
        [
            len(2),
            len(0),
            s(b"a"),
            s(b"1"),
            len(1_800_000_000_000),
            s(b"b"),
            s(b"2"),
        ]
        .concat(),
    ));
    // type 23 (Redis RC): listpack of field, value, expiry triples, no min-expire
    body.extend(key(
        23,
        b"h23",
        s(&listpack(&[b"f", b"v", b"0", b"g", b"w", b"1800000000001"])),
    ));
    let f = file(b"REDIS0012", &body);
    let ks = keys(&decode_all(&f, DecodeOptions::elements()));
    let Elements::HashFields(h) = &ks[0].elements[0] else {
        panic!()
    };
    assert_eq!(
        (h[0].expire_at_ms, h[1].expire_at_ms),
        (None, Some(1_800_000_000_000))
    );
    let Elements::HashFields(h) = &ks[1].elements[0] else {
        panic!()
    };
    assert_eq!(
        (h[0].expire_at_ms, h[1].expire_at_ms),
        (None, Some(1_800_000_000_001))
    );
}

#[test]
fn big_values_come_in_bounded_chunks() {
    let big = vec![b'q'; 2 * MAX + 17];
    const MAX: usize = rsm_rdb::MAX_CHUNK_BYTES;
    let mut body = key(RDB_TYPE_STRING, b"big", s(&big));
    let n = 3000u64;
    let mut list = len(n);
    for i in 0..n {
        list.extend(s(format!("item-{i}").as_bytes()));
    }
    body.extend(key(RDB_TYPE_LIST, b"list", list));
    let f = file(b"REDIS0009", &body);
    for sizes in [vec![f.len()], vec![65536, 1000, 1]] {
        let ev = decode_chunked(&f, DecodeOptions::elements(), &sizes);
        let els = elements_of(&ev);
        let parts: Vec<usize> = els[0]
            .iter()
            .map(|e| match e {
                Elements::StringPart(p) => p.len(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(parts, vec![MAX, MAX, 17]);
        let chunks: Vec<usize> = els[1]
            .iter()
            .map(|e| match e {
                Elements::ListItems(v) => v.len(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(chunks, vec![1024, 1024, 952]);
    }
    // raw mode with a threshold: the big string switches to pieces before being buffered whole
    let ev = decode_chunked(&f, DecodeOptions::raw_with_threshold(4096), &[8192]);
    assert_eq!(elements_of(&ev)[0].len(), 3);
    assert!(!ev.iter().any(|e| matches!(e, Event::RawValue(_))));
}

#[test]
fn stream_v2_with_a_big_pel() {
    // one node: master id 5-0, fields [f], entries 5-0 .. 5-1499 (same fields), one deleted
    let n = 1500usize;
    let seqs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let mut items: Vec<Vec<u8>> = vec![
        n.to_string().into(),
        b"1".to_vec(),
        b"1".to_vec(),
        b"f".to_vec(),
        b"0".to_vec(),
    ];
    for (i, seq) in seqs.iter().enumerate() {
        let flags = if i == 3 { "3" } else { "2" };
        items.extend([
            flags.as_bytes().to_vec(),
            b"0".to_vec(),
            seq.clone().into_bytes(),
            format!("v{i}").into_bytes(),
            b"4".to_vec(),
        ]);
    }
    let refs: Vec<&[u8]> = items.iter().map(|v| v.as_slice()).collect();
    let mut master = 5u64.to_be_bytes().to_vec();
    master.extend_from_slice(&0u64.to_be_bytes());
    let mut v = [len(1), s(&master), s(&listpack(&refs))].concat();
    v.extend(
        [
            len(n as u64 - 1),
            len(5),
            len(n as u64 - 1),
            len(5),
            len(0),
            len(5),
            len(3),
            len(n as u64),
        ]
        .concat(),
    );
    v.extend(len(1)); // one group
    v.extend([s(b"g"), len(5), len(1499), len(1499)].concat());
    v.extend(len(1400)); // PEL
    for i in 0..1400u64 {
        v.extend_from_slice(&5u64.to_be_bytes());
        v.extend_from_slice(&(i + 100).to_be_bytes());
        v.extend_from_slice(&(1_000 + i as i64).to_le_bytes());
        v.extend(len(1));
    }
    v.extend(len(2));
    v.extend([s(b"c1"), 7i64.to_le_bytes().to_vec(), len(1)].concat());
    v.extend_from_slice(&5u64.to_be_bytes());
    v.extend_from_slice(&100u64.to_be_bytes());
    v.extend([s(b"c2"), 8i64.to_le_bytes().to_vec(), len(1399)].concat());
    for i in 1..1400u64 {
        v.extend_from_slice(&5u64.to_be_bytes());
        v.extend_from_slice(&(i + 100).to_be_bytes());
    }
    let f = file(
        b"REDIS0010",
        &key(RDB_TYPE_STREAM_LISTPACKS_2, b"x", v.clone()),
    );
    let els = &elements_of(&decode_chunked(&f, DecodeOptions::elements(), &[333]))[0];
    let Elements::StreamEntries(first) = &els[0] else {
        panic!()
    };
    assert_eq!(first.len(), 1024);
    assert_eq!(first[3].id, StreamId { ms: 5, seq: 4 }); // 5-3 is deleted
    let Elements::StreamEntries(second) = &els[1] else {
        panic!()
    };
    assert_eq!(second.len(), n - 1 - 1024);
    let Elements::StreamMeta(m) = &els[2] else {
        panic!()
    };
    assert_eq!((m.length, m.entries_added), (1499, Some(1500)));
    let Elements::StreamGroup(g) = &els[3] else {
        panic!()
    };
    assert_eq!(
        (g.pending_total, g.pending.len(), g.entries_read),
        (1400, 1024, Some(1499))
    );
    assert_eq!(g.pending[0].consumer, b("c1"));
    assert_eq!(g.pending[1].consumer, b("c2"));
    let Elements::StreamPending { group, entries } = &els[4] else {
        panic!()
    };
    assert_eq!((group.clone(), entries.len()), (b("g"), 376));
    // the same value through a DUMP payload
    let payload = dump::build_payload(RDB_TYPE_STREAM_LISTPACKS_2, &v, 10);
    assert_eq!(&dump::decode_payload(&payload).unwrap().1, els);
}

#[test]
fn dump_helpers() {
    // crc-fast agrees with the `crc` crate's CRC_64_REDIS
    let reference = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);
    for data in [&b"123456789"[..], b"", &[0xAB; 10_000][..]] {
        assert_eq!(rsm_rdb::crc::crc64(data), reference.checksum(data));
    }
    assert_eq!(rsm_rdb::crc::crc64(b"123456789"), 0xE9C6D914C4B8D9CA);
    // reference §C1: Redis 7.4.1 DUMP of "v"
    let p = dump::build_payload(0, &[1, b'v'], 12);
    assert_eq!(
        p.as_ref(),
        &[0, 1, b'v', 12, 0, 0x5a, 0x7e, 0xfa, 0x72, 0xe3, 0x12, 0x14, 0x87]
    );
    let parsed = dump::parse_payload(&p).unwrap();
    assert_eq!(
        (parsed.rdb_type, parsed.value.as_ref(), parsed.trailer),
        (0, &[1, b'v'][..], 12)
    );
    let old = dump::rewrite_trailer(&p, 9).unwrap();
    assert_eq!(dump::parse_payload(&old).unwrap().trailer, 9);
    assert_eq!(
        dump::parse_payload(&old).unwrap().version(),
        RdbVersion::Redis(9)
    );
    let mut bad = p.to_vec();
    bad[1] ^= 1;
    assert!(dump::parse_payload(&Bytes::from(bad)).is_err());
    assert!(dump::parse_payload(&Bytes::from_static(b"short")).is_err());
    // a payload whose value is cut short
    let cut = dump::build_payload(RDB_TYPE_LIST, &[3, 1, b'a'], 9);
    assert!(dump::decode_payload(&cut).is_err());
    let extra = dump::build_payload(RDB_TYPE_STRING, &[1, b'a', 0], 9);
    assert!(dump::decode_payload(&extra).is_err());
    // Valkey trailer: type 22 is HASH_2
    let h2 = [len(1), s(b"f"), s(b"v"), (-1i64).to_le_bytes().to_vec()].concat();
    let (_, els) = dump::decode_payload(&dump::build_payload(22, &h2, 80)).unwrap();
    assert_eq!(
        els,
        vec![Elements::HashFields(vec![HashField {
            field: b("f"),
            value: b("v"),
            expire_at_ms: None
        }])]
    );
    assert_eq!(
        dump::min_version(RDB_TYPE_SET_LISTPACK, false),
        Some(RdbVersion::Redis(11))
    );
    assert_eq!(dump::min_version(22, true), Some(RdbVersion::Valkey(80)));
    assert_eq!(dump::min_version(22, false), None);
    assert_eq!(RdbVersion::Valkey(80).dump_trailer(), 80);
}

#[test]
fn checksum_zero_is_skipped_and_mismatch_is_reported() {
    let mut f = file(b"REDIS0009", &key(0, b"k", s(b"v")));
    let n = f.len();
    f[n - 8..].fill(0);
    decode_all(&f, DecodeOptions::elements());
    f[n - 1] = 1;
    let mut d = rsm_rdb::Decoder::new(DecodeOptions::elements());
    let e = d.feed(Bytes::from(f), &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string().starts_with("checksum mismatch at offset 15"),
        "{e}"
    );
}

/// A value that outgrew the raw-mode threshold is parsed again from the bytes it had
/// buffered; with a chunk budget those come out a few chunks per call, not all at once
/// (tens of megabytes of members per shard with the engine's threshold), and nothing is
/// lost between the calls.
#[test]
fn a_chunk_budget_spreads_a_switched_value_over_calls_and_loses_nothing() {
    let n = 60_000u64;
    let member = |i: u64| format!("{i:0>100}");
    let mut set = len(n);
    for i in 0..n {
        set.extend(s(member(i).as_bytes()));
    }
    let mut body = key(RDB_TYPE_SET, b"big:set", set);
    body.extend(key(RDB_TYPE_STRING, b"after", s(b"small")));
    let f = file(b"REDIS0009", &body);
    let mut d = rsm_rdb::Decoder::new(DecodeOptions::raw_with_threshold(1 << 20));
    d.set_chunk_budget(Some(2));
    let mut events = Vec::new();
    let mut calls = 0;
    let mut most_in_a_call = 0;
    let mut take = |batch: &mut Vec<Event>, events: &mut Vec<Event>| {
        let chunks = batch
            .iter()
            .filter(|e| matches!(e, Event::Elements(_)))
            .count();
        most_in_a_call = most_in_a_call.max(chunks);
        events.append(batch);
    };
    let mut batch = Vec::new();
    // Two feeds: the first ends inside the value, past the threshold.
    let (a, b) = f.split_at(f.len() / 2);
    for part in [a, b] {
        d.feed(Bytes::copy_from_slice(part), &mut batch).unwrap();
        calls += 1;
        take(&mut batch, &mut events);
        while d.paused() {
            d.resume(&mut batch).unwrap();
            calls += 1;
            take(&mut batch, &mut events);
        }
    }
    d.finish().unwrap();
    assert!(most_in_a_call <= 2, "{most_in_a_call} chunks in one call");
    // 6 MB of members in chunks of at most 1024: about 60 chunks, two per call.
    assert!(calls > 20, "only {calls} calls");
    let chunks = &elements_of(&events)[0];
    let mut got = Vec::new();
    for c in chunks {
        let Elements::SetMembers(v) = c else {
            panic!("{c:?}")
        };
        got.extend(v.iter().cloned());
    }
    assert_eq!(
        got,
        (0..n).map(|i| Bytes::from(member(i))).collect::<Vec<_>>()
    );
    let last = keys(&events).pop().unwrap();
    assert_eq!(&last.meta.key[..], b"after");
    assert_eq!(last.raw.as_deref(), Some(&s(b"small")[..]));
}
