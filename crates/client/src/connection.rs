//! One async connection to one Redis node: connect, authenticate, send, read.
//!
//! Reads and writes are buffered by hand (`BytesMut` on both sides) so callers
//! can pipeline: queue many commands with `send`, `flush` once, then read the
//! replies in order. The replica link reuses the read buffer for raw RDB bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsm_resp::{decode, encode_command, escape_controls, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::credentials::Credentials;
use crate::endpoint::Endpoint;
use crate::error::{ClientError, Side};
use crate::reply::ServerError;
use crate::tls::{TlsProblem, TlsSettings};

/// How long to wait, and who to be.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub side: Side,
    pub credentials: Option<Credentials>,
    pub connect_timeout: Duration,
    /// Limit for one request/reply round trip (not for long streams).
    pub io_timeout: Duration,
    /// TLS for every connection of this side; plain TCP when `None`.
    pub tls: Option<Arc<TlsSettings>>,
    /// Other nodes of the same deployment, for [`Connection::connect_seed`].
    pub seeds: Option<crate::Seeds>,
}

impl ConnectOptions {
    pub fn new(side: Side, credentials: Option<Credentials>) -> Self {
        ConnectOptions {
            side,
            credentials,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            tls: None,
            seeds: None,
        }
    }

    /// The other nodes known of this side's deployment (none without [`Self::with_seeds`]).
    pub fn seed_list(&self) -> Vec<Endpoint> {
        self.seeds
            .as_ref()
            .map(crate::Seeds::list)
            .unwrap_or_default()
    }

    /// The same options, reaching the deployment through these nodes too.
    pub fn with_seeds(mut self, seeds: crate::Seeds) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// The same options with this side's TLS settings.
    pub fn with_tls(mut self, tls: Option<Arc<TlsSettings>>) -> Self {
        self.tls = tls;
        self
    }
}

/// The reading half of a plain or TLS socket. An enum rather than a boxed trait
/// object: the plain path costs one branch per read, no allocation, no lock.
#[derive(Debug)]
enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a plain or TLS socket.
#[derive(Debug)]
enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

const READ_CHUNK: usize = 64 * 1024;

/// Reading side: a socket half and the bytes read but not yet decoded.
#[derive(Debug)]
pub struct FrameReader {
    read: ReadHalf,
    buf: BytesMut,
    side: Side,
    endpoint: Endpoint,
}

/// Writing side: a socket half and the commands queued but not yet flushed.
#[derive(Debug)]
pub struct FrameWriter {
    write: WriteHalf,
    buf: BytesMut,
    side: Side,
    endpoint: Endpoint,
}

/// A connected, authenticated node.
#[derive(Debug)]
pub struct Connection {
    reader: FrameReader,
    writer: FrameWriter,
    opts: ConnectOptions,
}

impl Connection {
    /// Connect and authenticate. A wrong password, a refused port and an
    /// unreachable host each give their own error naming the flag to check.
    pub async fn connect(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let side = opts.side;
        let stream = match tokio::time::timeout(
            opts.connect_timeout,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    side,
                    endpoint: endpoint.clone(),
                    secs: opts.connect_timeout.as_secs(),
                })
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::Refused {
                    side,
                    endpoint: endpoint.clone(),
                })
            }
            Ok(Err(source)) => {
                return Err(ClientError::Unreachable {
                    side,
                    endpoint: endpoint.clone(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        // Pipelined small writes must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (read, write) = match &opts.tls {
            None => {
                let (r, w) = stream.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Some(tls) => {
                let (r, w) = tokio::io::split(handshake(stream, endpoint, opts, tls).await?);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        };
        let mut conn = Connection {
            reader: FrameReader {
                read,
                buf: BytesMut::with_capacity(READ_CHUNK),
                side,
                endpoint: endpoint.clone(),
            },
            writer: FrameWriter {
                write,
                buf: BytesMut::with_capacity(READ_CHUNK),
                side,
                endpoint: endpoint.clone(),
            },
            opts: opts.clone(),
        };
        match conn.authenticate().await {
            Ok(()) => Ok(conn),
            Err(e) => Err(first_exchange_error(e, opts.tls.is_some())),
        }
    }

    async fn authenticate(&mut self) -> Result<(), ClientError> {
        let side = self.opts.side;
        let endpoint = self.reader.endpoint.clone();
        if let Some(creds) = self.opts.credentials.clone() {
            let reply = match &creds.user {
                Some(user) => {
                    self.request(&[
                        b"AUTH".as_slice(),
                        user.as_bytes(),
                        creds.password.as_bytes(),
                    ])
                    .await?
                }
                None => {
                    self.request(&[b"AUTH".as_slice(), creds.password.as_bytes()])
                        .await?
                }
            };
            if let Some(err) = reply.as_error() {
                let text = escape_controls(err);
                // A server without a password answers AUTH with an error that is
                // harmless: the connection works. Anything else is a real failure.
                let harmless = text.contains("without any password configured")
                    || text.contains("no password is set");
                if !harmless {
                    return Err(ClientError::AuthFailed {
                        side,
                        endpoint,
                        detail: text,
                    });
                }
            }
        }
        let reply = self.request(&[b"PING".as_slice()]).await?;
        if let Some(err) = reply.as_error() {
            return Err(match ServerError::classify(err) {
                ServerError::Auth if self.opts.credentials.is_none() => {
                    ClientError::AuthRequired { side, endpoint }
                }
                ServerError::Auth => ClientError::AuthFailed {
                    side,
                    endpoint,
                    detail: escape_controls(err),
                },
                _ => ClientError::Server {
                    side,
                    endpoint,
                    command: "PING".into(),
                    kind: ServerError::classify(err),
                    message: escape_controls(err),
                },
            });
        }
        Ok(())
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.reader.endpoint
    }

    pub fn side(&self) -> Side {
        self.opts.side
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// Queue a command; nothing is sent until `flush`.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.writer.send(args)
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush().await
    }

    /// Next reply, waiting at most the I/O timeout.
    pub async fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let limit = self.opts.io_timeout;
        self.reader.read_frame_within(limit).await.map(|(f, _)| f)
    }

    /// One round trip. An error reply is returned as `Frame::Error`, not `Err`.
    pub async fn request<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        self.send(args);
        self.flush().await?;
        self.read_frame().await
    }

    /// One round trip where an error reply is an `Err` naming the command.
    pub async fn request_ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        let reply = self.request(args).await?;
        if let Some(err) = reply.as_error() {
            let command = args
                .iter()
                .take(2)
                .map(|a| escape_controls(a.as_ref()))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(ClientError::Server {
                side: self.opts.side,
                endpoint: self.reader.endpoint.clone(),
                command,
                kind: ServerError::classify(err),
                message: escape_controls(err),
            });
        }
        Ok(reply)
    }

    /// One step of `SCAN cursor [MATCH pattern] COUNT count` in the connection's db. Every
    /// walk of a keyspace in the tool goes through here, so that "cursor 0 is the end" and
    /// "a reply that is not `[cursor, keys]` is an error, never an empty page" are decided
    /// once: starting over from 0 on a bad reply would never end, and an empty page taken
    /// for the end would skip keys.
    pub async fn scan(
        &mut self,
        cursor: &[u8],
        pattern: Option<&[u8]>,
        count: usize,
    ) -> Result<ScanPage, ClientError> {
        let count = count.to_string();
        let mut args: Vec<&[u8]> = vec![b"SCAN", cursor];
        if let Some(p) = pattern {
            args.extend([b"MATCH".as_slice(), p]);
        }
        args.extend([b"COUNT".as_slice(), count.as_bytes()]);
        let reply = self.request_ok(&args).await?;
        let unexpected = |reply: &Frame| ClientError::Unexpected {
            side: self.opts.side,
            endpoint: self.reader.endpoint.clone(),
            command: "SCAN",
            reply: reply.describe(),
        };
        let Some([next, keys]) = reply.as_array() else {
            return Err(unexpected(&reply));
        };
        let (Some(next), Some(keys)) = (next.as_bytes(), keys.as_array()) else {
            return Err(unexpected(&reply));
        };
        Ok(ScanPage {
            next: (next.as_ref() != b"0" && !next.is_empty()).then(|| next.clone()),
            keys: keys.iter().filter_map(|k| k.as_bytes().cloned()).collect(),
        })
    }

    /// A bulk/simple string reply as text (INFO, CLUSTER NODES, CONFIG GET values).
    pub async fn request_text<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
    ) -> Result<String, ClientError> {
        let reply = self.request_ok(args).await?;
        match reply.as_bytes() {
            Some(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            None => Err(ClientError::Server {
                side: self.opts.side,
                endpoint: self.reader.endpoint.clone(),
                command: escape_controls(args.first().map(|a| a.as_ref()).unwrap_or(b"")),
                kind: ServerError::Other(String::new()),
                message: format!("unexpected reply {}", reply.describe()),
            }),
        }
    }

    /// A numeric setting by `CONFIG GET name`, from either reply shape (RESP2 array, RESP3
    /// map); `None` where CONFIG is refused or the server has no such setting.
    pub async fn config_number(&mut self, name: &str) -> Result<Option<u64>, ClientError> {
        let reply = self.request(&["CONFIG", "GET", name]).await?;
        let value = match &reply {
            Frame::Array(items) => items.get(1).and_then(Frame::as_bytes),
            Frame::Map(pairs) => pairs.first().and_then(|(_, v)| v.as_bytes()),
            _ => None,
        };
        Ok(value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok()))
    }

    /// `INFO section` as key → value pairs.
    pub async fn info(&mut self, section: &str) -> Result<Vec<(String, String)>, ClientError> {
        let text = self.request_text(&["INFO", section]).await?;
        Ok(parse_info(&text))
    }

    /// Split into independently owned halves for a pipelined writer (one task
    /// sends, another reads replies in FIFO order).
    pub fn into_split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }

    pub fn reader_mut(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    pub fn writer_mut(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }
}

impl FrameWriter {
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        encode_command(args, &mut self.buf);
    }

    /// Raw bytes already in RESP form (e.g. a command re-sent exactly as received).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Write `bytes` now, after anything buffered, without copying them into the buffer.
    pub async fn write_now(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.flush().await?;
        self.write
            .write_all(bytes)
            .await
            .map_err(|source| ClientError::Io {
                side: self.side,
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.write.write_all(&self.buf).await;
        self.buf.clear();
        result.map_err(|source| ClientError::Io {
            side: self.side,
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    pub async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

impl FrameReader {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Next frame and the exact number of bytes it took, waiting as long as it takes.
    pub async fn read_frame(&mut self) -> Result<(Frame, usize), ClientError> {
        loop {
            match decode(&mut self.buf) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(source) => {
                    return Err(ClientError::Protocol {
                        side: self.side,
                        endpoint: self.endpoint.clone(),
                        source,
                    })
                }
            }
            self.fill().await?;
        }
    }

    pub async fn read_frame_within(
        &mut self,
        limit: Duration,
    ) -> Result<(Frame, usize), ClientError> {
        match tokio::time::timeout(limit, self.read_frame()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                side: self.side,
                endpoint: self.endpoint.clone(),
                secs: limit.as_secs(),
            }),
        }
    }

    /// Read more bytes from the socket into the buffer; returns how many.
    pub async fn fill(&mut self) -> Result<usize, ClientError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match self.read.read_buf(&mut self.buf).await {
            Ok(0) => Err(ClientError::Closed {
                side: self.side,
                endpoint: self.endpoint.clone(),
            }),
            Ok(n) => Ok(n),
            Err(source) => Err(ClientError::Io {
                side: self.side,
                endpoint: self.endpoint.clone(),
                source,
            }),
        }
    }

    /// The bytes read but not yet consumed (the replica link takes RDB bytes from here).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Up to `max` raw bytes: first what is buffered, else one socket read.
    pub async fn read_raw(&mut self, max: usize) -> Result<Bytes, ClientError> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        let n = self.buf.len().min(max);
        Ok(self.buf.split_to(n).freeze())
    }
}

/// What a failure of the first command (AUTH or PING) means. A TLS port drops a
/// plain client at its first bytes, without a reply; over TLS 1.3 the server's
/// verdict on our client certificate arrives only now, at the first read.
fn first_exchange_error(e: ClientError, tls: bool) -> ClientError {
    match e {
        ClientError::Closed { side, endpoint } if !tls => {
            ClientError::PlainToTls { side, endpoint }
        }
        ClientError::Io {
            side,
            endpoint,
            source,
        } if !tls
            && matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            ClientError::PlainToTls { side, endpoint }
        }
        ClientError::Io {
            side,
            endpoint,
            source,
        } if tls => match TlsProblem::after_handshake(&source) {
            Some(problem) => ClientError::Tls {
                side,
                endpoint,
                problem,
            },
            None => ClientError::Io {
                side,
                endpoint,
                source,
            },
        },
        other => other,
    }
}

/// The TLS handshake on a connected socket, within the connect timeout; a failure
/// is read once into a `TlsProblem` that says what to change.
async fn handshake(
    stream: TcpStream,
    endpoint: &Endpoint,
    opts: &ConnectOptions,
    tls: &TlsSettings,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let side = opts.side;
    let fail = |problem| ClientError::Tls {
        side,
        endpoint: endpoint.clone(),
        problem,
    };
    let name = tls
        .server_name(endpoint)
        .ok_or_else(|| fail(TlsProblem::BadServerName))?;
    let shown = name.to_str().into_owned();
    match tokio::time::timeout(opts.connect_timeout, tls.connector().connect(name, stream)).await {
        Err(_) => Err(fail(TlsProblem::NoAnswer {
            secs: opts.connect_timeout.as_secs(),
        })),
        Ok(Err(e)) => Err(fail(TlsProblem::from_handshake(&e, &shown))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Parse INFO text (`key:value` lines, `#` section headers).
pub fn parse_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        // Values end up in the plan and in messages (versions, roles, addresses):
        // escaped like every other server text; ordinary values are unchanged.
        .map(|(k, v)| {
            (
                escape_controls(k.trim().as_bytes()),
                escape_controls(v.trim().as_bytes()),
            )
        })
        .collect()
}

/// Look up one INFO field.
pub fn info_field<'a>(info: &'a [(String, String)], key: &str) -> Option<&'a str> {
    info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The dbs of an `INFO keyspace` reply and their key counts (`db3:keys=7,expires=0,…`), in
/// the order the server lists them. A server lists only dbs that hold keys, so an empty
/// server gives an empty list; a line this does not understand is left out rather than
/// guessed at.
pub fn keyspace(info: &[(String, String)]) -> Vec<(u32, u64)> {
    info.iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v.split(',').next()?.strip_prefix("keys=")?.parse().ok()?;
            Some((db, keys))
        })
        .collect()
}

/// One step of a `SCAN` ([`Connection::scan`]): the keys, and the cursor to go on from
/// (`None` once the walk is complete).
#[derive(Debug, Default)]
pub struct ScanPage {
    pub next: Option<Bytes>,
    pub keys: Vec<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lists_each_db_with_its_keys() {
        let info = parse_info("# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb5:keys=12,expires=0,avg_ttl=0,subexpiry=0\r\n");
        assert_eq!(keyspace(&info), vec![(0, 3), (5, 12)]);
        assert_eq!(keyspace(&parse_info("# Keyspace\r\n")), vec![]);
        assert_eq!(
            keyspace(&parse_info("dbx:keys=1\r\ndb1:nokeys\r\n")),
            vec![]
        );
    }
}
