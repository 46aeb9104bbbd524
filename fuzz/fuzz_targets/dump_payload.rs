//! Fuzz DUMP payload decoding: the first byte is the type, the rest the value; the payload
//! is built with a valid CRC so the fuzzer explores the value parser, not the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsm_rdb::dump;

fuzz_target!(|data: &[u8]| {
    let Some((&t, value)) = data.split_first() else {
        return;
    };
    for trailer in [9u16, 12, 80] {
        let p = dump::build_payload(t, value, trailer);
        let _ = dump::decode_payload(&p);
        let _ = dump::rewrite_trailer(&p, 7);
    }
    let _ = dump::parse_payload(&bytes::Bytes::copy_from_slice(data));
});
