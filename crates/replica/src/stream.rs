//! The replication command stream, decoded into entries with offsets.
//!
//! Every byte of the stream counts in the replication offset (reference §D3),
//! including `SELECT`, `PING` and `REPLCONF GETACK`; keep-alive newlines never
//! appear here. `MULTI … EXEC` is gathered into one `Transaction` entry; from
//! Redis 7.2 a `SELECT` may sit inside the block, so the db is tracked per
//! command.
//!
//! Each item carries the offset just after it: the replication offset a replica
//! reports once it has applied it, and a resume asks PSYNC for that plus one.

use bytes::{Bytes, BytesMut};
use rsm_resp::{decode, Frame};

use rsm_command::entry::{Command, DbIndex, Entry, ReplOffset};

/// One thing the stream said.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// Something to apply: a command, or a whole `MULTI … EXEC` block as one
    /// `Transaction`.
    Entry(Entry),
    /// The source asked for an acknowledgement (`REPLCONF GETACK *`): it goes out at
    /// once, not at the next second.
    GetAck { offset: ReplOffset },
    /// Nothing to apply (a `PING`, a `SELECT`, a `MULTI` marker…), but the
    /// offset moved past it: the applied offset may follow once everything
    /// before it is applied.
    Marker { offset: ReplOffset },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Not RESP: nothing after this point can be framed.
    #[error("replication stream at offset {offset}: {source}")]
    Resp {
        offset: u64,
        #[source]
        source: rsm_resp::RespError,
    },
    /// A frame that is no command (a reply, a bare value): not what a source streams.
    #[error("replication stream at offset {offset}: expected a command, got {what}")]
    NotACommand { offset: u64, what: String },
    /// A `SELECT` without a db number: every later write's db would be a guess.
    #[error("replication stream at offset {offset}: bad SELECT argument")]
    BadSelect { offset: u64 },
}

/// Turns stream bytes into items. Feed bytes, then drain with `next`.
#[derive(Debug)]
pub struct StreamReader {
    /// Bytes received and not yet decoded: a command cut by a read waits here whole.
    buf: BytesMut,
    /// Offset of the last byte consumed.
    offset: u64,
    /// The db of the last `SELECT`: every command carries the db it ran in.
    db: DbIndex,
    /// The commands of an open `MULTI`, gathered until `EXEC`.
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

    /// Append bytes as they came; they may end mid-command.
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
    ///
    /// It loops only inside a block: outside one, every command is an item, carrying the
    /// offset once it is applied (a PSYNC from it plus one continues with the next
    /// command). Names arrive in any case. Inside `MULTI`, commands are gathered, to be
    /// applied as the source applied them, at once:
    /// - `SELECT` outside a block is a marker; inside one it is no item, but switches the
    ///   db of the block's commands after it (7.2+) and stays in force after the block;
    /// - `EXEC` gives every gathered command the EXEC's offset (the block is applied
    ///   whole, so its end is each command's place in the stream); with nothing
    ///   gathered (only `SELECT`s and `PING`s, or no `MULTI` at all) it is a marker: no
    ///   write, but its bytes count;
    /// - `PING`, the source's keep-alive (every `repl-ping-replica-period`), is a marker;
    /// - `REPLCONF GETACK` asks for an ACK (a `WAIT` on the source sends it); any other
    ///   `REPLCONF` is the source's bookkeeping, a marker.
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
            // Described before the frame is consumed, for an error naming it.
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

/// A command's arguments; `None` for a frame that is not an array of strings.
fn frame_args(frame: Frame) -> Option<Vec<Bytes>> {
    frame.into_args()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsm_resp::encode_command;

    /// Commands as a source writes them into its stream.
    fn wire(cmds: &[&[&str]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for c in cmds {
            encode_command(c, &mut out);
        }
        out.to_vec()
    }

    /// Every item the bytes fed so far make.
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
        // SELECT, PING and GETACK count in the offset like the SET.
        assert_eq!(r.offset(), 1000 + bytes.len() as u64);
        assert_eq!(items.len(), 4);
        let StreamItem::Entry(Entry::Command(set)) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert_eq!(
            set.args,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")]
        );
        // A command's offset is the one just after it.
        assert_eq!(
            set.offset,
            ReplOffset(1000 + wire(&[&["SELECT", "0"], &["SET", "k", "v"]]).len() as u64)
        );
        // GETACK is an item of its own, so the ACK goes out at once.
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
        // The first SELECT, the block, the SET after it.
        assert_eq!(items.len(), 3, "{items:?}");
        let StreamItem::Entry(Entry::Transaction(cmds)) = &items[1] else {
            panic!()
        };
        assert_eq!(cmds.len(), 2);
        // SELECT, MULTI and EXEC are no commands of the block; the SELECT inside it
        // applies to both that follow.
        assert!(cmds.iter().all(|c| c.db == 3));
        let StreamItem::Entry(Entry::Command(after)) = &items[2] else {
            panic!()
        };
        assert_eq!(after.db, 3, "SELECT inside MULTI still switches the db");
        // Every command of the block carries the offset just after its EXEC.
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
        // A reply where a command belongs: the error says where, in stream offsets.
        let mut r = StreamReader::new(50);
        r.feed(b"+OK\r\n");
        let err = r.next_item().unwrap_err().to_string();
        assert!(err.contains("offset 50"), "{err}");
    }
}
