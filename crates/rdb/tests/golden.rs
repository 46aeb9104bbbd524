//! Golden tests: every fixture made by a real server (scripts/gen-rdb-fixtures.py) decodes
//! to exactly what that server returned through its own read commands, and raw values
//! wrapped as DUMP payloads equal the server's own DUMP output byte for byte.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use rsm_rdb::{dump, DecodeOptions, Elements, Event, RdbVersion};
use serde_json::{json, Value};

fn value_json(els: &[Elements], type_name: &str) -> Value {
    match type_name {
        "string" => {
            let mut s = Vec::new();
            for e in els {
                let Elements::StringPart(p) = e else {
                    panic!("not a string part: {e:?}")
                };
                s.extend_from_slice(p);
            }
            bj(&s)
        }
        "list" => Value::Array(
            els.iter()
                .flat_map(|e| match e {
                    Elements::ListItems(v) => v.iter().map(|b| bj(b)).collect::<Vec<_>>(),
                    _ => panic!("not list items: {e:?}"),
                })
                .collect(),
        ),
        "set" => {
            let mut v: Vec<Value> = els
                .iter()
                .flat_map(|e| match e {
                    Elements::SetMembers(v) => v.iter().map(|b| bj(b)).collect::<Vec<_>>(),
                    _ => panic!("not set members: {e:?}"),
                })
                .collect();
            v.sort_by_key(|x| serde_json::to_string(x).unwrap());
            Value::Array(v)
        }
        _ => unreachable!(),
    }
}

fn check_fixture(name: &str, rdb: &[u8], js: &Value) {
    let events = decode_all(rdb, DecodeOptions::elements());
    let version = match events.first() {
        Some(Event::Header { version }) => *version,
        e => panic!("{name}: first event {e:?}"),
    };
    assert!(matches!(events.last(), Some(Event::Eof)), "{name}: no Eof");
    let decoded = keys(&events);
    let expected = js["keys"].as_array().unwrap();
    assert_eq!(decoded.len(), expected.len(), "{name}: key count");

    // functions
    let funcs: Vec<Value> = events
        .iter()
        .filter_map(|e| match e {
            Event::Function { code } => Some(bj(code)),
            _ => None,
        })
        .collect();
    assert_eq!(&Value::Array(funcs), &js["functions"], "{name}: functions");

    let by_key: BTreeMap<(u64, String), &common::DecodedKey> = decoded
        .iter()
        .map(|k| ((k.meta.db, bj(&k.meta.key).to_string()), k))
        .collect();
    for exp in expected {
        let id = (exp["db"].as_u64().unwrap(), exp["key"].to_string());
        let k = by_key
            .get(&id)
            .unwrap_or_else(|| panic!("{name}: key {id:?} not decoded"));
        let ctx = format!("{name} key {}", exp["key"]);
        let t = exp["type"].as_str().unwrap();
        assert_eq!(
            rsm_rdb::constants::type_name(k.meta.rdb_type, version.is_valkey()),
            t,
            "{ctx}: type"
        );
        assert_eq!(
            k.meta.expire_at_ms.is_some(),
            exp["has_ttl"].as_bool().unwrap(),
            "{ctx}: ttl presence"
        );
        if let Some(ms) = exp["expire_at_ms"].as_i64() {
            assert_eq!(k.meta.expire_at_ms, Some(ms), "{ctx}: expiry");
        }
        match t {
            "string" | "list" | "set" => {
                assert_eq!(value_json(&k.elements, t), exp["value"], "{ctx}: value")
            }
            "zset" => check_zset(&ctx, &k.elements, &exp["value"]),
            "hash" => check_hash(&ctx, &k.elements, exp),
            "stream" => check_stream(&ctx, &k.elements, &exp["value"]),
            _ => panic!("{ctx}: unexpected type {t}"),
        }
        // the server's DUMP decodes to the same elements
        let payload = Bytes::from(b64(exp["dump"].as_str().unwrap()));
        let (rdb_type, els) = dump::decode_payload(&payload).unwrap();
        assert_eq!(rdb_type, k.meta.rdb_type, "{ctx}: DUMP type byte");
        assert_eq!(els, k.elements, "{ctx}: DUMP elements");
    }
}

fn check_zset(ctx: &str, els: &[Elements], exp: &Value) {
    let mut got: Vec<(Value, f64)> = els
        .iter()
        .flat_map(|e| match e {
            Elements::ZSetMembers(v) => v.iter().map(|(m, s)| (bj(m), *s)).collect::<Vec<_>>(),
            _ => panic!("{ctx}: not zset members: {e:?}"),
        })
        .collect();
    // the skiplist encoding is written highest score first; compare in ZRANGE order
    got.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap()
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    });
    let want: Vec<(Value, f64)> = exp
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].clone(),
                rsm_rdb::blobs::parse_double(p[1].as_str().unwrap().as_bytes()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "{ctx}: zset");
}

fn check_hash(ctx: &str, els: &[Elements], exp: &Value) {
    let mut got = serde_json::Map::new();
    let mut ttls = serde_json::Map::new();
    for e in els {
        let Elements::HashFields(v) = e else {
            panic!("{ctx}: not hash fields: {e:?}")
        };
        for f in v {
            let key = match bj(&f.field) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if let Some(t) = f.expire_at_ms {
                ttls.insert(key.clone(), json!(t));
            }
            got.insert(key, bj(&f.value));
        }
    }
    assert_eq!(Value::Object(got), exp["value"], "{ctx}: hash");
    match exp.get("field_expire_at_ms") {
        Some(want) => assert_eq!(&Value::Object(ttls), want, "{ctx}: field TTLs"),
        None => assert!(ttls.is_empty(), "{ctx}: unexpected field TTLs"),
    }
}

fn check_stream(ctx: &str, els: &[Elements], exp: &Value) {
    let mut entries = Vec::new();
    let mut meta = None;
    let mut groups = Vec::new();
    for e in els {
        match e {
            Elements::StreamEntries(v) => entries.extend(v.iter().cloned()),
            Elements::StreamMeta(m) => meta = Some(m.clone()),
            Elements::StreamGroup(g) => groups.push(g.clone()),
            Elements::StreamPending { .. } => panic!("{ctx}: PEL small enough for one chunk"),
            _ => panic!("{ctx}: not a stream chunk: {e:?}"),
        }
    }
    let got_entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!([
                e.id.to_string(),
                e.fields
                    .iter()
                    .flat_map(|(f, v)| [bj(f), bj(v)])
                    .collect::<Vec<_>>()
            ])
        })
        .collect();
    assert_eq!(Value::Array(got_entries), exp["entries"], "{ctx}: entries");
    let m = meta.expect("stream meta");
    assert_eq!(json!(m.length), exp["length"], "{ctx}: length");
    assert_eq!(
        json!(m.last_id.to_string()),
        exp["last_id"],
        "{ctx}: last id"
    );
    if let Some(v) = exp.get("max-deleted-entry-id") {
        assert_eq!(
            json!(m.max_deleted_id.unwrap().to_string()),
            *v,
            "{ctx}: max deleted id"
        );
    }
    if let Some(v) = exp.get("recorded-first-entry-id") {
        assert_eq!(
            json!(m.first_id.unwrap().to_string()),
            *v,
            "{ctx}: first id"
        );
    }
    if let Some(v) = exp.get("entries_added") {
        assert_eq!(json!(m.entries_added.unwrap()), *v, "{ctx}: entries added");
    }
    let want_groups = exp["groups"].as_array().unwrap();
    assert_eq!(groups.len(), want_groups.len(), "{ctx}: group count");
    for (g, w) in groups.iter().zip(want_groups) {
        let gctx = format!("{ctx} group {}", w["name"]);
        assert_eq!(bj(&g.name), w["name"], "{gctx}: name");
        assert_eq!(
            json!(g.last_id.to_string()),
            w["last_id"],
            "{gctx}: last id"
        );
        if let Some(er) = w.get("entries_read") {
            assert_eq!(json!(g.entries_read), *er, "{gctx}: entries read");
        }
        assert_eq!(
            json!(g.pending_total),
            w["pending"],
            "{gctx}: pending count"
        );
        let pel: Vec<Value> = g
            .pending
            .iter()
            .map(|p| json!([p.id.to_string(), bj(&p.consumer), p.delivery_count]))
            .collect();
        assert_eq!(Value::Array(pel), w["pel"], "{gctx}: PEL");
        let mut consumers: Vec<Value> = g
            .consumers
            .iter()
            .map(|c| json!({"name": bj(&c.name), "pending": c.pending_count}))
            .collect();
        consumers.sort_by_key(|x| serde_json::to_string(x).unwrap());
        assert_eq!(Value::Array(consumers), w["consumers"], "{gctx}: consumers");
        if let Some(full) = exp.get("full_groups") {
            let f = &full[g.name.iter().map(|&b| b as char).collect::<String>()];
            for p in &g.pending {
                assert_eq!(
                    json!(p.delivery_time_ms),
                    f["pel_delivery_ms"][p.id.to_string()],
                    "{gctx}: delivery time"
                );
            }
            for c in &g.consumers {
                let n = String::from_utf8_lossy(&c.name).into_owned();
                assert_eq!(
                    json!(c.seen_time_ms),
                    f["consumer_seen_ms"][&n],
                    "{gctx}: seen time"
                );
                if let Some(a) = f["consumer_active_ms"].get(&n) {
                    assert_eq!(json!(c.active_time_ms), *a, "{gctx}: active time");
                }
            }
        }
    }
}

#[test]
fn fixtures_decode_to_server_content() {
    for (name, rdb, js) in fixtures() {
        check_fixture(&name, &rdb, &js);
    }
}

#[test]
fn raw_values_rebuild_the_servers_dump_payloads() {
    for (name, rdb, js) in fixtures() {
        let events = decode_all(&rdb, DecodeOptions::raw());
        let Some(Event::Header { version }) = events.first() else {
            panic!()
        };
        let decoded = keys(&events);
        let expected = js["keys"].as_array().unwrap();
        for k in &decoded {
            let raw = k
                .raw
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no raw value"));
            assert!(k.elements.is_empty());
            let built = dump::build_payload(k.meta.rdb_type, raw, version.dump_trailer());
            let want = expected
                .iter()
                .find(|e| e["db"].as_u64() == Some(k.meta.db) && e["key"] == bj(&k.meta.key))
                .unwrap();
            assert_eq!(
                built.as_ref(),
                b64(want["dump"].as_str().unwrap()).as_slice(),
                "{name} key {}: DUMP payload",
                want["key"]
            );
        }
    }
}

#[test]
fn big_value_threshold_switches_to_the_same_elements() {
    for (name, rdb, _) in fixtures() {
        let elements = keys(&decode_all(&rdb, DecodeOptions::elements()));
        let mixed = keys(&decode_all(&rdb, DecodeOptions::raw_with_threshold(200)));
        let Some(Event::Header { version }) =
            decode_all(&rdb, DecodeOptions::raw()).first().cloned()
        else {
            panic!()
        };
        let mut switched = 0;
        for (e, m) in elements.iter().zip(&mixed) {
            assert_eq!(e.meta, m.meta);
            match &m.raw {
                Some(raw) => {
                    assert!(raw.len() <= 200, "{name}: raw value above the threshold");
                    let els = dump::decode_value(m.meta.rdb_type, raw.clone(), version).unwrap();
                    assert_eq!(els, e.elements, "{name}: raw value re-decoded");
                }
                None => {
                    switched += 1;
                    assert_eq!(m.elements, e.elements, "{name}: switched value");
                }
            }
        }
        let main_fixture =
            !name.contains('-') || (name.starts_with("valkey-") && !name.contains("cluster"));
        if main_fixture {
            assert!(
                switched > 5,
                "{name}: expected some big values, got {switched}"
            );
        }
    }
}

#[test]
fn versions_and_special_records() {
    for (name, rdb, _) in fixtures() {
        let events = decode_all(&rdb, DecodeOptions::elements());
        let Some(Event::Header { version }) = events.first() else {
            panic!()
        };
        let want = if name.starts_with("valkey-9") {
            RdbVersion::Valkey(80)
        } else if name.starts_with("valkey-8") || name.starts_with("7.2") {
            RdbVersion::Redis(11)
        } else if name.starts_with("7.0") {
            RdbVersion::Redis(10)
        } else if name.starts_with("7.4") || name.starts_with("8.") {
            RdbVersion::Redis(12)
        } else {
            RdbVersion::Redis(9)
        };
        assert_eq!(*version, want, "{name}");
        let ks = keys(&events);
        if name.ends_with("-lru") {
            assert!(
                ks.iter()
                    .all(|k| k.meta.idle.is_some() && k.meta.freq.is_none()),
                "{name}"
            );
        } else if name.ends_with("-lfu") {
            assert!(
                ks.iter()
                    .all(|k| k.meta.freq.is_some() && k.meta.idle.is_none()),
                "{name}"
            );
            assert!(
                ks.iter().any(|k| k.meta.freq.unwrap() > 5),
                "{name}: LFU counters"
            );
        } else {
            assert!(
                ks.iter()
                    .all(|k| k.meta.freq.is_none() && k.meta.idle.is_none()),
                "{name}"
            );
        }
        if name == "8.2.3-cluster" {
            let slots = events
                .iter()
                .filter(|e| matches!(e, Event::SlotInfo { .. }))
                .count();
            assert!(slots >= 10, "{name}: SLOT_INFO records");
        }
        if name == "valkey-9.1.2-cluster" {
            assert!(events
                .iter()
                .any(|e| matches!(e, Event::Aux { key, .. } if key.as_ref() == b"slot-info")));
        }
        let dbs: Vec<u64> = ks.iter().map(|k| k.meta.db).collect();
        if !name.contains('-') || name.starts_with("valkey-") && !name.contains("cluster") {
            assert!(dbs.contains(&3), "{name}: db 3");
        }
    }
}

/// Runs the fixture generator live against the `redis-server` on PATH (CI installs
/// Debian's 7.0.15) and checks the fresh snapshot the same way as the committed ones.
/// Fails, naming what is missing, when `redis-server` or `python3` is not on PATH: a skip
/// would not show in a passing run, and CI would stop checking the generator unnoticed.
#[test]
fn generator_runs_live_against_the_local_redis_server() {
    let which = |exe: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {exe}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let missing: Vec<&str> = ["redis-server", "python3"]
        .into_iter()
        .filter(|exe| which(exe).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} not on PATH; run `scripts/test.sh` in the workspace to install it and run the \
         tests (or `apt-get install -y redis-server python3`)",
        missing.join(" and ")
    );
    let server = which("redis-server").expect("checked above");
    let out = std::process::Command::new(&server)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .expect("version in redis-server --version")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen-rdb-fixtures.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .args([
            "--server", &server, "--name", &version, "--port", "30150", "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "generator failed");
    let rdb = std::fs::read(dir.path().join(format!("{version}.rdb"))).unwrap();
    let js: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{version}.json"))).unwrap())
            .unwrap();
    check_fixture(&format!("live {version}"), &rdb, &js);
}

/// The fixtures really contain the rarer quicklist node forms: LZF-compressed nodes
/// (`list-compress-depth 1`) and, from 7.0, PLAIN nodes (a big element on its own).
#[test]
fn fixtures_contain_compressed_and_plain_quicklist_nodes() {
    fn small_len(v: &[u8], i: &mut usize) -> usize {
        let b = v[*i];
        *i += 1;
        match b >> 6 {
            0 => (b & 0x3f) as usize,
            1 => {
                *i += 1;
                (((b & 0x3f) as usize) << 8) | v[*i - 1] as usize
            }
            _ => panic!("unexpected length form"),
        }
    }
    /// (compressed, plain) node counts of a quicklist / quicklist-2 raw value.
    fn nodes(t: u8, v: &[u8]) -> (usize, usize) {
        let mut i = 0;
        let n = small_len(v, &mut i);
        let (mut lzf, mut plain) = (0, 0);
        for _ in 0..n {
            if t == 18 && small_len(v, &mut i) == 1 {
                plain += 1;
            }
            if v[i] == 0xC3 {
                lzf += 1;
                i += 1;
                let c = small_len(v, &mut i);
                small_len(v, &mut i);
                i += c;
            } else {
                i += small_len(v, &mut i);
            }
        }
        assert_eq!(i, v.len());
        (lzf, plain)
    }
    for (name, rdb, _) in fixtures() {
        if name.contains('-') && !name.starts_with("valkey-") || name.contains("cluster") {
            continue;
        }
        let ks = keys(&decode_all(&rdb, DecodeOptions::raw()));
        let get = |k: &str| ks.iter().find(|x| x.meta.key.as_ref() == k.as_bytes());
        let c = get("l:compressed").unwrap();
        assert!(
            nodes(c.meta.rdb_type, c.raw.as_ref().unwrap()).0 > 0,
            "{name}: LZF nodes"
        );
        if let Some(p) = get("l:plain") {
            assert_eq!(
                nodes(p.meta.rdb_type, p.raw.as_ref().unwrap()).1,
                1,
                "{name}: PLAIN node"
            );
        } else {
            assert!(
                name.starts_with('5') || name.starts_with('6'),
                "{name}: l:plain missing"
            );
        }
    }
}
