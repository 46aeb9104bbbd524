//! The replication command stream, decoded into entries with offsets.
//!
//! Every byte of the stream counts in the replication offset (reference §D3),
//! including `SELECT`, `PING` and `REPLCONF GETACK`; keep-alive newlines never
//! appear here. `MULTI … EXEC` is gathered into one `Transaction` entry; from
//! Redis 7.2 a `SELECT` may sit inside the block, so the db is tracked per
//! command.

use bytes::{Bytes, BytesMut};
use rsm_resp::{decode, Frame};

use rsm_command::entry::{Command, DbIndex, Entry, ReplOffset};

/// One thing the stream said.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// Something to apply.
    Entry(Entry),
    /// The source asked for an acknowledgement (`REPLCONF GETACK *`).
    GetAck { offset: ReplOffset },
    /// Nothing to apply (a `PING`, a `SELECT`, a `MULTI` marker…), but the
    /// offset moved past it: the applied offset may follow once everything
    /// before it is applied.
    Marker { offset: ReplOffset },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("replication stream at offset {offset}: {source}")]
    Resp {
        offset: u64,
        #[source]
        source: rsm_resp::RespError,
    },
    #[error("replication stream at offset {offset}: expected a command, got {what}")]
    NotACommand { offset: u64, what: String },
    #[error("replication stream at offset {offset}: bad SELECT argument")]
    BadSelect { offset: u64 },
}

/// Turns stream bytes into items. Feed bytes, then drain with `next`.
#[derive(Debug)]
pub struct StreamReader {
    buf: BytesMut,
    /// Offset of the last byte consumed.
    offset: u64,
    db: DbIndex,
    multi: Option<Vec<Command>>,
}

impl StreamReader {
    /// `offset` is where the stream starts: the FULLRESYNC offset, or the
    /// applied offset we continued from.
    pub fn new(offset: u64) -> StreamReader {
        StreamReader {
            buf: BytesMut::new(),
            offset,
            // Every stream starts with a SELECT before the first keyed write;
            // db 0 is only a placeholder until then.
            db: 0,
            multi: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Offset of the last byte decoded so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes received but not yet forming a whole command.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next item, or `None` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, StreamError> {
        loop {
            let Some((frame, used)) =
                decode(&mut self.buf).map_err(|source| StreamError::Resp {
                    offset: self.offset,
                    source,
                })?
            else {
                return Ok(None);
            };
            let start = self.offset;
            self.offset += used as u64;
            let offset = ReplOffset(self.offset);
            let what = frame.describe();
            let Some(args) = frame_args(frame) else {
                return Err(StreamError::NotACommand {
                    offset: start,
                    what,
                });
            };
            let Some(name) = args.first().map(|a| a.to_ascii_lowercase()) else {
                return Err(StreamError::NotACommand {
                    offset: start,
                    what,
                });
            };
            match name.as_slice() {
                b"select" => {
                    self.db = args
                        .get(1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse().ok())
                        .ok_or(StreamError::BadSelect { offset: start })?;
                    if self.multi.is_none() {
                        return Ok(Some(StreamItem::Marker { offset }));
                    }
                }
                b"multi" => {
                    self.multi = Some(Vec::new());
                }
                b"exec" => {
                    let commands = self.multi.take().unwrap_or_default();
                    let commands = commands
                        .into_iter()
                        .map(|mut c| {
                            c.offset = offset;
                            c
                        })
                        .collect::<Vec<_>>();
                    if commands.is_empty() {
                        return Ok(Some(StreamItem::Marker { offset }));
                    }
                    return Ok(Some(StreamItem::Entry(Entry::Transaction(commands))));
                }
                b"ping" => {
                    if self.multi.is_none() {
                        return Ok(Some(StreamItem::Marker { offset }));
                    }
                }
                b"replconf" => {
                    let getack = args
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
                    if getack {
                        return Ok(Some(StreamItem::GetAck { offset }));
                    }
                    return Ok(Some(StreamItem::Marker { offset }));
                }
                _ => {
                    let command = Command::new(self.db, args, offset);
                    match self.multi.as_mut() {
                        Some(block) => block.push(command),
                        None => return Ok(Some(StreamItem::Entry(Entry::Command(command)))),
                    }
                }
            }
            // Inside MULTI: keep reading until EXEC.
        }
    }
}

fn frame_args(frame: Frame) -> Option<Vec<Bytes>> {
    frame.into_args()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsm_resp::encode_command;

    fn wire(cmds: &[&[&str]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for c in cmds {
            encode_command(c, &mut out);
        }
        out.to_vec()
    }

    fn drain(r: &mut StreamReader) -> Vec<StreamItem> {
        let mut items = Vec::new();
        while let Some(i) = r.next_item().unwrap() {
            items.push(i);
        }
        items
    }

    #[test]
    fn offsets_count_every_byte() {
        let bytes = wire(&[
            &["SELECT", "0"],
            &["SET", "k", "v"],
            &["PING"],
            &["REPLCONF", "GETACK", "*"],
        ]);
        let mut r = StreamReader::new(1000);
        // Byte by byte: partial input must not produce items early.
        let mut items = Vec::new();
        for b in &bytes {
            r.feed(&[*b]);
            items.extend(drain(&mut r));
        }
        assert_eq!(r.offset(), 1000 + bytes.len() as u64);
        assert_eq!(items.len(), 4);
        let StreamItem::Entry(Entry::Command(set)) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert_eq!(
            set.args,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")]
        );
        assert_eq!(
            set.offset,
            ReplOffset(1000 + wire(&[&["SELECT", "0"], &["SET", "k", "v"]]).len() as u64)
        );
        assert!(matches!(items[3], StreamItem::GetAck { offset } if offset.0 == r.offset()));
    }

    #[test]
    fn transactions_keep_select_inside() {
        // Redis 7.2+ puts SELECT inside the block.
        let bytes = wire(&[
            &["SELECT", "0"],
            &["MULTI"],
            &["SELECT", "3"],
            &["SET", "a", "1"],
            &["INCR", "a"],
            &["EXEC"],
            &["SET", "b", "2"],
        ]);
        let mut r = StreamReader::new(0);
        r.feed(&bytes);
        let items = drain(&mut r);
        assert_eq!(items.len(), 3, "{items:?}");
        let StreamItem::Entry(Entry::Transaction(cmds)) = &items[1] else {
            panic!()
        };
        assert_eq!(cmds.len(), 2);
        assert!(cmds.iter().all(|c| c.db == 3));
        let StreamItem::Entry(Entry::Command(after)) = &items[2] else {
            panic!()
        };
        assert_eq!(after.db, 3, "SELECT inside MULTI still switches the db");
        assert_eq!(
            cmds[1].offset,
            ReplOffset(
                wire(&[
                    &["SELECT", "0"],
                    &["MULTI"],
                    &["SELECT", "3"],
                    &["SET", "a", "1"],
                    &["INCR", "a"],
                    &["EXEC"]
                ])
                .len() as u64
            )
        );
    }

    #[test]
    fn garbage_is_an_error_with_the_offset() {
        let mut r = StreamReader::new(50);
        r.feed(b"+OK\r\n");
        let err = r.next_item().unwrap_err().to_string();
        assert!(err.contains("offset 50"), "{err}");
    }
}
