//! Decoder properties: any frame, split at any byte boundary, decodes to the
//! same value and consumes exactly its own bytes.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rsm_resp::{decode, encode_command, encode_frame, Frame, RespError};

fn frame_strategy() -> impl Strategy<Value = Frame> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from);
    // Simple strings and errors cannot hold CR or LF.
    let line = "[a-zA-Z0-9 :._-]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()));
    let leaf = prop_oneof![
        line.clone().prop_map(Frame::Simple),
        line.clone().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes.clone().prop_map(Frame::Bulk),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[0-9]{1,5}\\.[0-9]{1,4}".prop_map(|s| Frame::Double(Bytes::from(s.into_bytes()))),
        "[0-9]{20,30}".prop_map(|s| Frame::BigNumber(Bytes::from(s.into_bytes()))),
        bytes.clone().prop_map(Frame::BlobError),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Frame::Map),
        ]
    })
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode_frame(f, &mut out);
    }
    out.to_vec()
}

/// Feed `wire` in pieces cut at `cuts`, decoding greedily after each piece.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<Vec<(Frame, usize)>, RespError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        buf.extend_from_slice(&wire[last..cut]);
        last = cut;
        while let Some(item) = decode(&mut buf)? {
            out.push(item);
        }
    }
    assert!(buf.is_empty(), "bytes left over after the last frame");
    Ok(out)
}

proptest! {
    #[test]
    fn every_split_point_gives_the_same_frames(frames in proptest::collection::vec(frame_strategy(), 1..4)) {
        let wire = encoded(&frames);
        // Every single split point, then every byte on its own.
        for cut in 0..=wire.len() {
            let got = decode_in_pieces(&wire, &[cut]).unwrap();
            let decoded: Vec<Frame> = got.iter().map(|(f, _)| f.clone()).collect();
            prop_assert_eq!(&decoded, &frames);
            let total: usize = got.iter().map(|(_, n)| n).sum();
            prop_assert_eq!(total, wire.len());
        }
        let all: Vec<usize> = (0..wire.len()).collect();
        let got = decode_in_pieces(&wire, &all).unwrap();
        prop_assert_eq!(got.len(), frames.len());
    }

    #[test]
    fn consumed_length_equals_encoded_length(frame in frame_strategy()) {
        let wire = encoded(std::slice::from_ref(&frame));
        let mut buf = BytesMut::from(&wire[..]);
        let (_, used) = decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&data[..]);
        // Errors are fine; a panic or an infinite loop is not.
        while let Ok(Some(_)) = decode(&mut buf) {}
    }

    #[test]
    fn commands_decode_to_their_arguments(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8)) {
        let mut out = BytesMut::new();
        encode_command(&args, &mut out);
        prop_assert_eq!(out.len(), rsm_resp::command_len(&args));
        let (frame, _) = decode(&mut out).unwrap().unwrap();
        let got: Vec<Vec<u8>> = frame.into_args().unwrap().into_iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(got, args);
    }
}

#[test]
fn incomplete_input_is_not_an_error() {
    for partial in [
        &b""[..],
        b"*",
        b"*2\r\n",
        b"*2\r\n$3\r\nfoo\r\n$3\r\nba",
        b"$5\r\nhel",
        b"+OK\r",
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(decode(&mut buf).unwrap(), None, "{partial:?}");
        assert_eq!(&buf[..], partial, "buffer must be untouched");
    }
}

#[test]
fn malformed_input_is_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"?oops\r\n", "unknown type byte 0x3f"),
        (b"$abc\r\n", "invalid length"),
        (b"$-2\r\n", "invalid length"),
        (b":12a\r\n", "invalid integer"),
        (b"$3\r\nfooXY", "not followed by CRLF"),
        (b"*1\r\n!x\r\n", "invalid length"),
    ];
    for (input, want) in cases {
        let mut buf = BytesMut::from(*input);
        let err = decode(&mut buf).unwrap_err().to_string();
        assert!(err.contains(want), "{input:?}: {err}");
    }
}

#[test]
fn nulls_and_resp3_types() {
    let mut buf = BytesMut::from(&b"$-1\r\n*-1\r\n_\r\n#t\r\n,inf\r\n=7\r\ntxt:abc\r\n%1\r\n+k\r\n:1\r\n|1\r\n+a\r\n+b\r\n:7\r\n"[..]);
    let mut got = Vec::new();
    while let Some((f, _)) = decode(&mut buf).unwrap() {
        got.push(f);
    }
    assert_eq!(
        got,
        vec![
            Frame::Null,
            Frame::Null,
            Frame::Null,
            Frame::Boolean(true),
            Frame::Double(Bytes::from_static(b"inf")),
            Frame::Verbatim(Bytes::from_static(b"txt:abc")),
            Frame::Map(vec![(
                Frame::Simple(Bytes::from_static(b"k")),
                Frame::Integer(1)
            )]),
            // The attribute is dropped; the frame it annotates remains.
            Frame::Integer(7),
        ]
    );
}

#[test]
fn bulk_strings_are_slices_of_the_read_buffer() {
    let mut buf = BytesMut::from(&b"$5\r\nhello\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let (frame, _) = decode(&mut buf).unwrap().unwrap();
    let Frame::Bulk(b) = frame else {
        panic!("not a bulk")
    };
    assert_eq!(&b[..], b"hello");
    assert_eq!(b.as_ptr() as usize, base + 4, "bulk data was copied");
}

#[test]
fn a_command_with_shared_arguments_encodes_to_the_same_bytes() {
    let big = Bytes::from(vec![7u8; 300]);
    let args = [
        Bytes::from_static(b"RESTORE"),
        Bytes::from_static(b"key"),
        Bytes::from_static(b"0"),
        big.clone(),
        Bytes::from_static(b"REPLACE"),
        big.clone(),
    ];
    let mut whole = BytesMut::new();
    rsm_resp::encode_command(&args, &mut whole);

    let mut out = BytesMut::new();
    let mut pieces: Vec<Bytes> = Vec::new();
    rsm_resp::encode_command_sharing(&args, 100, &mut out, &mut |p| pieces.push(p));
    // The big arguments are handed over as they are, not copied.
    let shared: Vec<&Bytes> = pieces.iter().filter(|p| p.len() == 300).collect();
    assert_eq!(shared.len(), 2);
    assert!(shared.iter().all(|p| p.as_ptr() == big.as_ptr()));
    let mut joined: Vec<u8> = pieces.concat();
    joined.extend_from_slice(&out);
    assert_eq!(joined, whole.to_vec());

    // Nothing big: everything stays in `out`.
    let mut out = BytesMut::new();
    rsm_resp::encode_command_sharing(&args[..3], 100, &mut out, &mut |_| panic!("emitted"));
    let mut small = BytesMut::new();
    rsm_resp::encode_command(&args[..3], &mut small);
    assert_eq!(out, small);
}
