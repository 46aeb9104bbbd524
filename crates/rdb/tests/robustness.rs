//! Robustness: any chunking gives the same events; truncated or corrupted input gives an
//! error (with an offset inside the input), never a panic or a hang.

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
use proptest::prelude::*;
use rsm_rdb::{DecodeOptions, Decoder, Event, RdbError, Trailing};

/// Feed everything, then finish; the first error wins.
fn run(data: &[u8], opts: DecodeOptions, chunk: usize) -> Result<Vec<Event>, RdbError> {
    let mut d = Decoder::new(opts);
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.feed(Bytes::copy_from_slice(c), &mut ev)?;
    }
    d.finish()?;
    Ok(ev)
}

/// Like [`run`], but returns the version read and the trailing bytes reported.
fn run_keeping(
    data: &[u8],
    opts: DecodeOptions,
    chunk: usize,
) -> Result<(u16, Option<Trailing>), RdbError> {
    let mut d = Decoder::new(opts);
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.feed(Bytes::copy_from_slice(c), &mut ev)?;
    }
    d.finish()?;
    Ok((d.version().map_or(0, |v| v.number()), d.trailing()))
}

fn all_opts() -> Vec<DecodeOptions> {
    vec![
        DecodeOptions::elements(),
        DecodeOptions::raw(),
        DecodeOptions::raw_with_threshold(100),
    ]
}

#[test]
fn byte_by_byte_equals_one_shot() {
    for (name, rdb, _) in fixtures() {
        for opts in all_opts() {
            let one = decode_all(&rdb, opts.clone());
            let bytewise = decode_chunked(&rdb, opts.clone(), &[1]);
            assert_eq!(one, bytewise, "{name} {:?}", opts.mode);
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    // every prefix of the small fixtures, and a stride over the big ones
    for (name, rdb, _) in fixtures() {
        let step = if rdb.len() < 1000 { 1 } else { 7 };
        for cut in (0..rdb.len()).step_by(step) {
            for opts in [DecodeOptions::elements(), DecodeOptions::raw()] {
                let err = run(&rdb[..cut], opts, 4096).expect_err(&format!("{name} cut at {cut}"));
                assert!(
                    err.offset() <= cut as u64,
                    "{name} cut {cut}: offset {}",
                    err.offset()
                );
                assert!(
                    matches!(err, RdbError::Truncated { .. }),
                    "{name} cut {cut}: {err}"
                );
            }
        }
    }
}

#[test]
fn flipped_bytes_error_or_decode_but_never_panic() {
    for (name, rdb, _) in fixtures() {
        let step = if rdb.len() < 1000 { 1 } else { 13 };
        for at in (0..rdb.len()).step_by(step) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = rdb.clone();
                bad[at] ^= flip;
                for opts in [DecodeOptions::elements(), DecodeOptions::raw()] {
                    // The CRC64 makes any surviving corruption an error at the end, except
                    // a flip that turns the version into one without a checksum (< 5):
                    // the stored checksum then reads as 8 trailing bytes, which the decoder
                    // reports (trailing bytes are not an error, as in redis-server).
                    let r = run_keeping(&bad, opts, 1000);
                    let noticed = match &r {
                        Err(_) => true,
                        Ok((version, trailing)) => {
                            *version < 5 && trailing.map(|t| t.len) == Some(8)
                        }
                    };
                    assert!(
                        noticed,
                        "{name}: flip {flip:#x} at {at} went unnoticed: {r:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn corruption_without_checksum_never_panics() {
    // With checksum verification off, corrupt values get decoded as far as they go.
    for (_, rdb, _) in fixtures().into_iter().take(4) {
        for at in (9..rdb.len()).step_by(5) {
            let mut bad = rdb.clone();
            bad[at] = bad[at].wrapping_add(0x3b);
            let opts = DecodeOptions {
                verify_checksum: false,
                ..DecodeOptions::elements()
            };
            let _ = run(&bad, opts, 777);
        }
    }
}

#[test]
fn errors_name_the_offset() {
    // unknown value type 34 (past every type any server writes) right after the header
    let mut f = b"REDIS0014".to_vec();
    f.extend_from_slice(&[34, 1, b'k']);
    let e = run(&f, DecodeOptions::elements(), 100).unwrap_err();
    assert_eq!(e.to_string(), "unknown value type 34 at offset 9");
    let e = run(b"RUBBISH01", DecodeOptions::elements(), 100).unwrap_err();
    assert!(matches!(e, RdbError::BadMagic { .. }), "{e}");
    let e = run(b"REDIS0015", DecodeOptions::elements(), 100).unwrap_err();
    assert!(e.to_string().contains("unsupported RDB version 15"), "{e}");
    let e = run(b"VALKEY081", DecodeOptions::elements(), 100).unwrap_err();
    assert!(e.to_string().contains("unsupported RDB version 81"), "{e}");
    // Valkey type 23 (PATH_HASH, Valkey 9.2) is named, not "unknown"
    let mut f = b"VALKEY080".to_vec();
    f.extend_from_slice(&[23, 1, b'k']);
    let e = run(&f, DecodeOptions::elements(), 100).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("RDB type 23 (path hash (PATH_HASH), written by Valkey 9.2, RDB 81) at offset 9 cannot be migrated"),
        "{e}"
    );
}

/// Bytes after the checksum are ignored, as redis-server ignores them, and reported with
/// where they start; the events are those of the file alone, and the checksum before them
/// is still verified, however the input is split.
#[test]
fn trailing_bytes_are_reported_not_an_error() {
    for (name, rdb, _) in fixtures() {
        let junk = b"\0\0junk after the end\n";
        let padded = [&rdb[..], &junk[..]].concat();
        for chunk in [1, 7, 4096, padded.len()] {
            let mut d = Decoder::new(DecodeOptions::raw());
            let mut ev = Vec::new();
            for c in padded.chunks(chunk) {
                d.feed(Bytes::copy_from_slice(c), &mut ev)
                    .unwrap_or_else(|e| panic!("{name} chunk {chunk}: {e}"));
            }
            d.finish().unwrap();
            let t = d
                .trailing()
                .unwrap_or_else(|| panic!("{name}: not reported"));
            assert_eq!(t.offset, rdb.len() as u64, "{name} chunk {chunk}");
            assert_eq!(t.len, junk.len() as u64, "{name} chunk {chunk}");
            assert_eq!(ev, decode_all(&rdb, DecodeOptions::raw()), "{name}");
        }
        let mut d = Decoder::new(DecodeOptions::raw());
        let mut ev = Vec::new();
        d.feed(Bytes::copy_from_slice(&rdb), &mut ev).unwrap();
        assert_eq!(d.trailing(), None, "{name}");

        // A flipped bit in the body is still caught with the junk behind the checksum
        // (only files whose checksum is stored: version 5 and later, not zero).
        let stored = rdb.len() >= 8 && rdb[rdb.len() - 8..] != [0; 8] && rdb[..9] != *b"REDIS0004";
        if stored && rdb.len() > 40 {
            let mut bad = padded.clone();
            bad[20] ^= 0x01;
            let e = run(&bad, DecodeOptions::elements(), 4096);
            assert!(
                e.is_err(),
                "{name}: corruption before trailing bytes not caught"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_chunking_gives_identical_events(
        fixture in 0usize..15,
        sizes in proptest::collection::vec(1usize..600, 1..20),
        mode in 0usize..3,
    ) {
        let all = fixtures();
        let (name, rdb, _) = &all[fixture % all.len()];
        let opts = all_opts()[mode].clone();
        let one = decode_all(rdb, opts.clone());
        let chunked = decode_chunked(rdb, opts, &sizes);
        prop_assert_eq!(one, chunked, "{}", name);
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), magic in 0usize..3) {
        let head: &[u8] = [&b"REDIS0012"[..], b"VALKEY080", b"REDIS0006"][magic];
        let data = [head, &tail].concat();
        for opts in all_opts() {
            let _ = run(&data, opts, 17);
        }
    }
}
