//! Fuzz the RESP decoder: arbitrary bytes fed in two pieces must never panic
//! or loop, and a frame decoded from pieces must equal the one from one piece.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn decode_all(pieces: &[&[u8]]) -> (Vec<rsm_resp::Frame>, bool) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match rsm_resp::decode(&mut buf) {
                Ok(Some((frame, _))) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).min(rest.len());
    let (whole, whole_err) = decode_all(&[rest]);
    let (split, split_err) = decode_all(&[&rest[..cut], &rest[cut..]]);
    // Where neither errored, splitting the input must not change what was decoded.
    if !whole_err && !split_err {
        assert_eq!(whole, split);
    }
});
