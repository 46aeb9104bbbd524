//! Deterministic mixed datasets for migration tests.
//!
//! [`fill_mixed`] writes `keys_per_type` keys of each type (string, list, set, zset, hash,
//! stream with consumer groups), derived only from `seed`, so two runs with the same options
//! write the same data. It covers the encodings a migrator must carry: small and big values
//! (listpack / intset vs quicklist / hashtable / skiplist), integer strings, binary bytes in keys
//! and values (NUL, CR LF, 0xFF, braces), float scores including ±inf, streams with pending
//! entries, and long TTLs (one hour and more, so nothing expires during a test).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::Target;

/// What [`fill_mixed`] writes.
#[derive(Clone, Debug)]
pub struct FillOptions {
    /// Number of keys of each of the six types.
    pub keys_per_type: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Prefix of every key name (use distinct prefixes to fill the same target twice).
    pub prefix: String,
    /// Every n-th key gets a TTL of one to two hours (0 = no TTLs).
    pub ttl_every: usize,
    /// Every n-th key is big enough to leave the compact encodings (0 = none).
    pub big_every: usize,
}

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            keys_per_type: 100,
            seed: 1,
            prefix: String::new(),
            ttl_every: 5,
            big_every: 50,
        }
    }
}

/// What [`fill_mixed`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FillReport {
    /// Keys written.
    pub keys: usize,
    /// Keys that got a TTL.
    pub with_ttl: usize,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max_len);
    (0..len).map(|_| rng.random()).collect()
}

/// Fills `target` with a deterministic mixed dataset.
///
/// # Panics
/// If a write fails.
pub fn fill_mixed(target: &impl Target, opts: &FillOptions) -> FillReport {
    // One generator for everything, drawn from in a fixed order (type by type, key by key):
    // the same options always write the same data.
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = FillReport::default();
    let big = |i: usize| opts.big_every != 0 && i % opts.big_every == opts.big_every - 1;
    for kind in ["str", "list", "set", "zset", "hash", "stream"] {
        for i in 0..opts.keys_per_type {
            let key = key_name(&opts.prefix, kind, i);
            let mut cmds = value_cmds(kind, &key, i, big(i), &mut rng);
            if opts.ttl_every != 0 && i % opts.ttl_every == 0 {
                let ms = 3_600_000 + rng.random_range(0..3_600_000u64);
                cmds.push(vec![b("PEXPIRE"), key.clone(), b(&ms.to_string())]);
                report.with_ttl += 1;
            }
            target.run_on_key(&key, &cmds).unwrap_or_else(|e| {
                panic!(
                    "fill_mixed: writing {:?} failed: {e}",
                    String::from_utf8_lossy(&key)
                )
            });
            report.keys += 1;
        }
    }
    report
}

/// `{prefix}{kind}:{i}`, with a binary or hash-tag suffix on some keys.
fn key_name(prefix: &str, kind: &str, i: usize) -> Vec<u8> {
    let mut key = format!("{prefix}{kind}:{i}").into_bytes();
    // Some binary-unsafe looking names: NUL, 0xFF, space, CR LF and a hash tag.
    match i % 10 {
        7 => key.extend_from_slice(b"\x00\xff \r\n"),
        8 => key.extend_from_slice(b"{tag}"),
        9 => key.extend_from_slice(b"{"),
        _ => {}
    }
    key
}

/// The commands that write key `i` of `kind` (without its TTL).
fn value_cmds(kind: &str, key: &[u8], i: usize, big: bool, rng: &mut StdRng) -> Vec<Vec<Vec<u8>>> {
    match kind {
        "str" => vec![string_cmd(key, i, big, rng)],
        "list" => vec![list_cmd(key, big, rng)],
        "set" => vec![set_cmd(key, i, big, rng)],
        "zset" => vec![zset_cmd(key, big, rng)],
        "hash" => vec![hash_cmd(key, big, rng)],
        _ => stream_cmds(key, i, big, rng),
    }
}

fn string_cmd(key: &[u8], i: usize, big: bool, rng: &mut StdRng) -> Vec<Vec<u8>> {
    // Drawn even for a big key, whose value replaces it: the draws of every later key stay
    // where they were.
    let v = match i % 4 {
        0 => b(&format!("value-{i}")),
        1 => b(&(rng.random::<i64>() >> (i % 60)).to_string()),
        2 => random_bytes(rng, 200),
        _ => b"\r\n\x00{}\xff".to_vec(),
    };
    let v = if big { vec![b'x'; 20_000 + i] } else { v };
    vec![b("SET"), key.to_vec(), v]
}

fn list_cmd(key: &[u8], big: bool, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = if big { 1000 } else { rng.random_range(1..20) };
    let mut c = vec![b("RPUSH"), key.to_vec()];
    for j in 0..count {
        c.push(if j % 3 == 0 {
            random_bytes(rng, 30)
        } else {
            b(&format!("e{j}"))
        });
    }
    c
}

fn set_cmd(key: &[u8], i: usize, big: bool, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = if big { 600 } else { rng.random_range(1..20) };
    let mut c = vec![b("SADD"), key.to_vec()];
    for j in 0..count {
        // Even keys: integers only (intset); odd keys: strings.
        c.push(if i.is_multiple_of(2) {
            b(&(rng.random::<i32>() as i64 * j as i64).to_string())
        } else {
            let mut m = b(&format!("m{j}-"));
            m.extend(random_bytes(rng, 10));
            m
        });
    }
    c
}

fn zset_cmd(key: &[u8], big: bool, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = if big { 200 } else { rng.random_range(1..20) };
    let mut c = vec![b("ZADD"), key.to_vec()];
    for j in 0..count {
        let score = match j % 6 {
            0 => "-inf".to_string(),
            1 => "inf".to_string(),
            2 => rng.random_range(-1000i64..1000).to_string(),
            3 => "0.1".to_string(),
            _ => format!("{}", rng.random::<f64>() * 1e6 - 5e5),
        };
        c.push(b(&score));
        let mut m = b(&format!("z{j}"));
        if j % 4 == 0 {
            m.extend(random_bytes(rng, 8));
        }
        c.push(m);
    }
    c
}

fn hash_cmd(key: &[u8], big: bool, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = if big { 600 } else { rng.random_range(1..20) };
    let mut c = vec![b("HSET"), key.to_vec()];
    for j in 0..count {
        c.push(b(&format!("f{j}")));
        c.push(if j % 2 == 0 {
            random_bytes(rng, 40)
        } else {
            b(&j.to_string())
        });
    }
    c
}

/// Entries, group `g1` with two entries pending for consumer `c1`, and on every third key
/// an empty group `g2`.
fn stream_cmds(key: &[u8], i: usize, big: bool, rng: &mut StdRng) -> Vec<Vec<Vec<u8>>> {
    let key = key.to_vec();
    let mut cmds = Vec::new();
    // Explicit ids keep the stream deterministic.
    let count = if big { 300 } else { rng.random_range(1..10) };
    for j in 0..count {
        let id = format!("{}-{}", 1_700_000_000_000u64 + j as u64, j % 3);
        cmds.push(vec![
            b("XADD"),
            key.clone(),
            b(&id),
            b("field"),
            random_bytes(rng, 20),
            b("n"),
            b(&j.to_string()),
        ]);
    }
    cmds.push(vec![b("XGROUP"), b("CREATE"), key.clone(), b("g1"), b("0")]);
    // Leave entries pending for consumer c1.
    cmds.push(vec![
        b("XREADGROUP"),
        b("GROUP"),
        b("g1"),
        b("c1"),
        b("COUNT"),
        b("2"),
        b("STREAMS"),
        key.clone(),
        b(">"),
    ]);
    if i.is_multiple_of(3) {
        cmds.push(vec![b("XGROUP"), b("CREATE"), key, b("g2"), b("$")]);
    }
    cmds
}

/// Writes `n` plain string keys `{prefix}{i}` = `v{i}`, without TTLs.
///
/// # Panics
/// If a write fails.
pub fn fill_strings(target: &impl Target, n: usize, prefix: &str) {
    for i in 0..n {
        let key = format!("{prefix}{i}").into_bytes();
        let cmd = vec![b("SET"), key.clone(), b(&format!("v{i}"))];
        target.run_on_key(&key, &[cmd]).unwrap_or_else(|e| {
            panic!(
                "fill_strings: writing {:?} failed: {e}",
                String::from_utf8_lossy(&key)
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Each key with the commands that would have written it.
    type Written = Vec<(Vec<u8>, Vec<Vec<Vec<u8>>>)>;

    /// Records what would be written, per key.
    #[derive(Default)]
    struct Recorder(RefCell<Written>);

    impl Target for Recorder {
        fn run_on_key(
            &self,
            key: &[u8],
            cmds: &[Vec<Vec<u8>>],
        ) -> redis::RedisResult<Vec<redis::Value>> {
            self.0.borrow_mut().push((key.to_vec(), cmds.to_vec()));
            Ok(Vec::new())
        }

        fn data_conns(&self) -> Vec<redis::Connection> {
            Vec::new()
        }
    }

    #[test]
    fn key_names_have_binary_and_hash_tag_suffixes() {
        assert_eq!(key_name("p:", "set", 3), b"p:set:3");
        assert_eq!(key_name("", "str", 17), b"str:17\x00\xff \r\n");
        assert_eq!(key_name("", "str", 18), b"str:18{tag}");
        assert_eq!(key_name("", "str", 19), b"str:19{");
    }

    #[test]
    fn the_same_options_write_the_same_commands() {
        let opts = FillOptions {
            keys_per_type: 20,
            ..Default::default()
        };
        let (a, b) = (Recorder::default(), Recorder::default());
        let report = fill_mixed(&a, &opts);
        fill_mixed(&b, &opts);
        assert!(a.0.borrow().as_slice() == b.0.borrow().as_slice());
        assert_eq!(report.keys, 6 * 20);
        // Keys 0, 5, 10 and 15 of each type.
        assert_eq!(report.with_ttl, 6 * 4);
        let written = a.0.borrow();
        let (key, cmds) = &written[5 * 20];
        assert_eq!(key, b"stream:0");
        // Key 0 of the streams also gets the empty group g2.
        assert_eq!(cmds.iter().filter(|c| c[0] == b"XGROUP").count(), 2);
        assert_eq!(cmds.last().map(|c| c[0].as_slice()), Some(&b"PEXPIRE"[..]));
    }
}
