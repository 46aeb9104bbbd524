//! Fuzz the streaming decoder: arbitrary bytes, fed in two chunks split at a position taken
//! from the input, in every mode. It must return (Ok or Err), never panic, hang or allocate
//! without bound. Starting from a valid magic lets the fuzzer reach the record parser fast;
//! seed the corpus with crates/rdb/tests/fixtures/*.rdb.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rsm_rdb::{DecodeOptions, Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (usize::from(split) * rest.len()) / 256;
    for opts in [
        DecodeOptions::elements(),
        DecodeOptions::raw(),
        DecodeOptions::raw_with_threshold(64),
        DecodeOptions {
            verify_checksum: false,
            ..DecodeOptions::elements()
        },
    ] {
        let mut d = Decoder::new(opts);
        let mut events = Vec::new();
        let (a, b) = rest.split_at(cut);
        if d.feed(Bytes::copy_from_slice(a), &mut events).is_ok() {
            let _ = d.feed(Bytes::copy_from_slice(b), &mut events);
        }
        let _ = d.finish();
    }
});
