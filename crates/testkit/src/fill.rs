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
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = FillReport::default();
    let n = opts.keys_per_type;
    let big = |i: usize| opts.big_every != 0 && i % opts.big_every == opts.big_every - 1;
    for kind in ["str", "list", "set", "zset", "hash", "stream"] {
        for i in 0..n {
            let mut key = format!("{}{kind}:{i}", opts.prefix).into_bytes();
            // Some binary-unsafe looking names: NUL, 0xFF, space, CR LF and a hash tag.
            match i % 10 {
                7 => key.extend_from_slice(b"\x00\xff \r\n"),
                8 => key.extend_from_slice(b"{tag}"),
                9 => key.extend_from_slice(b"{"),
                _ => {}
            }
            let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
            match kind {
                "str" => {
                    let v = match i % 4 {
                        0 => b(&format!("value-{i}")),
                        1 => b(&(rng.random::<i64>() >> (i % 60)).to_string()),
                        2 => random_bytes(&mut rng, 200),
                        _ => b"\r\n\x00{}\xff".to_vec(),
                    };
                    let v = if big(i) { vec![b'x'; 20_000 + i] } else { v };
                    cmds.push(vec![b("SET"), key.clone(), v]);
                }
                "list" => {
                    let count = if big(i) {
                        1000
                    } else {
                        rng.random_range(1..20)
                    };
                    let mut c = vec![b("RPUSH"), key.clone()];
                    for j in 0..count {
                        c.push(if j % 3 == 0 {
                            random_bytes(&mut rng, 30)
                        } else {
                            b(&format!("e{j}"))
                        });
                    }
                    cmds.push(c);
                }
                "set" => {
                    let count = if big(i) { 600 } else { rng.random_range(1..20) };
                    let mut c = vec![b("SADD"), key.clone()];
                    for j in 0..count {
                        // Even keys: integers only (intset); odd keys: strings.
                        c.push(if i % 2 == 0 {
                            b(&(rng.random::<i32>() as i64 * j as i64).to_string())
                        } else {
                            let mut m = b(&format!("m{j}-"));
                            m.extend(random_bytes(&mut rng, 10));
                            m
                        });
                    }
                    cmds.push(c);
                }
                "zset" => {
                    let count = if big(i) { 200 } else { rng.random_range(1..20) };
                    let mut c = vec![b("ZADD"), key.clone()];
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
                            m.extend(random_bytes(&mut rng, 8));
                        }
                        c.push(m);
                    }
                    cmds.push(c);
                }
                "hash" => {
                    let count = if big(i) { 600 } else { rng.random_range(1..20) };
                    let mut c = vec![b("HSET"), key.clone()];
                    for j in 0..count {
                        c.push(b(&format!("f{j}")));
                        c.push(if j % 2 == 0 {
                            random_bytes(&mut rng, 40)
                        } else {
                            b(&j.to_string())
                        });
                    }
                    cmds.push(c);
                }
                _ => {
                    // Explicit ids keep the stream deterministic.
                    let count = if big(i) { 300 } else { rng.random_range(1..10) };
                    for j in 0..count {
                        let id = format!("{}-{}", 1_700_000_000_000u64 + j as u64, j % 3);
                        cmds.push(vec![
                            b("XADD"),
                            key.clone(),
                            b(&id),
                            b("field"),
                            random_bytes(&mut rng, 20),
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
                    if i % 3 == 0 {
                        cmds.push(vec![b("XGROUP"), b("CREATE"), key.clone(), b("g2"), b("$")]);
                    }
                }
            }
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
