//! Helpers shared by the integration tests: fixture loading and event collection.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use rsm_rdb::{DecodeOptions, Decoder, Elements, Event, KeyMeta};
use serde_json::{json, Value};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// (name, rdb bytes, expected json) for every fixture.
pub fn fixtures() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "rdb").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    for n in names {
        let rdb = std::fs::read(fixtures_dir().join(format!("{n}.rdb"))).unwrap();
        let js: Value = serde_json::from_slice(
            &std::fs::read(fixtures_dir().join(format!("{n}.json"))).unwrap(),
        )
        .unwrap();
        out.push((n, rdb, js));
    }
    assert!(out.len() >= 11, "expected fixtures of all 11 servers");
    out
}

/// Binary-safe JSON, the convention of the fixture generator.
pub fn bj(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Feed `data` in the given chunk sizes (cycled) and collect every event.
pub fn decode_chunked(data: &[u8], opts: DecodeOptions, sizes: &[usize]) -> Vec<Event> {
    let mut d = Decoder::new(opts);
    let mut ev = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < data.len() {
        let n = sizes[k % sizes.len()].max(1).min(data.len() - i);
        d.feed(Bytes::copy_from_slice(&data[i..i + n]), &mut ev)
            .unwrap();
        i += n;
        k += 1;
    }
    d.finish().unwrap();
    ev
}

pub fn decode_all(data: &[u8], opts: DecodeOptions) -> Vec<Event> {
    decode_chunked(data, opts, &[data.len().max(1)])
}

/// One key as decoded: its meta and its events between KeyStart and KeyEnd.
pub struct DecodedKey {
    pub meta: KeyMeta,
    pub raw: Option<Bytes>,
    pub elements: Vec<Elements>,
}

pub fn keys(events: &[Event]) -> Vec<DecodedKey> {
    let mut out: Vec<DecodedKey> = Vec::new();
    for e in events {
        match e {
            Event::KeyStart(m) => out.push(DecodedKey {
                meta: m.clone(),
                raw: None,
                elements: Vec::new(),
            }),
            Event::RawValue(r) => out.last_mut().unwrap().raw = Some(r.clone()),
            Event::Elements(el) => out.last_mut().unwrap().elements.push(el.clone()),
            _ => {}
        }
    }
    out
}
