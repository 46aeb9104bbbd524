//! RESP encoder: commands we send, and frames re-serialised for tests and spill files.

use bytes::{BufMut, BytesMut};

use crate::frame::Frame;

/// Append `*N\r\n$len\r\narg\r\n…` for one command.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.reserve(command_len(args));
    header(b'*', args.len() as u64, out);
    for arg in args {
        bulk(arg.as_ref(), out);
    }
}

/// [`encode_command`] for arguments that may be big (a RESTORE payload of many MB): an
/// argument of `shared_from` bytes or more is not copied into `out` but handed to `emit`
/// as it is (the same allocation), after `emit` got what `out` held before it. Joined in
/// the order `emit` received them, followed by what is left in `out`, the pieces are the
/// command's exact encoding.
pub fn encode_command_sharing(
    args: &[bytes::Bytes],
    shared_from: usize,
    out: &mut BytesMut,
    emit: &mut dyn FnMut(bytes::Bytes),
) {
    if args.iter().all(|a| a.len() < shared_from) {
        return encode_command(args, out);
    }
    header(b'*', args.len() as u64, out);
    for arg in args {
        if arg.len() < shared_from {
            bulk(arg, out);
            continue;
        }
        header(b'$', arg.len() as u64, out);
        emit(out.split().freeze());
        emit(arg.clone());
        out.put_slice(b"\r\n");
    }
}

/// Exact encoded size of a command, for in-flight byte accounting.
pub fn command_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    let mut n = 1 + digits(args.len() as u64) + 2;
    for arg in args {
        let len = arg.as_ref().len();
        n += 1 + digits(len as u64) + 2 + len + 2;
    }
    n
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn header(kind: u8, n: u64, out: &mut BytesMut) {
    let mut buf = itoa::Buffer::new();
    out.put_u8(kind);
    out.put_slice(buf.format(n).as_bytes());
    out.put_slice(b"\r\n");
}

fn bulk(data: &[u8], out: &mut BytesMut) {
    header(b'$', data.len() as u64, out);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Serialise any frame (RESP3 types in their RESP3 form).
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Simple(b) => line(b'+', b, out),
        Frame::Error(b) => line(b'-', b, out),
        Frame::Integer(n) => {
            let mut buf = itoa::Buffer::new();
            line(b':', buf.format(*n).as_bytes(), out)
        }
        Frame::Bulk(b) => bulk(b, out),
        Frame::Null => out.put_slice(b"$-1\r\n"),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            let kind = match frame {
                Frame::Array(_) => b'*',
                Frame::Set(_) => b'~',
                _ => b'>',
            };
            header(kind, v.len() as u64, out);
            for f in v {
                encode_frame(f, out);
            }
        }
        Frame::Double(b) => line(b',', b, out),
        Frame::Boolean(b) => line(b'#', if *b { b"t" } else { b"f" }, out),
        Frame::BigNumber(b) => line(b'(', b, out),
        Frame::Verbatim(b) => {
            header(b'=', b.len() as u64, out);
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Frame::BlobError(b) => {
            header(b'!', b.len() as u64, out);
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Frame::Map(pairs) => {
            header(b'%', pairs.len() as u64, out);
            for (k, v) in pairs {
                encode_frame(k, out);
                encode_frame(v, out);
            }
        }
    }
}

fn line(kind: u8, text: &[u8], out: &mut BytesMut) {
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}
