//! One target node: its connection, the requests waiting for it and its in-flight FIFO.
//!
//! A connection runs as two tasks of its own, a reader that forwards every reply to the
//! writer and a socket writer that sends what the writer encoded, so that a node that
//! stops answering holds up only its own requests. Connects run in a task of their own
//! too ([`spawn_connect`]): a node that accepts TCP but never answers delays nothing else.
//! Matching replies to requests ([`Node::on_frame`]) and encoding them
//! ([`Node::encode`]) are plain functions of this struct, tested without a server.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rsm_client::{ClientError, ConnectOptions, Connection, Endpoint};
use rsm_resp::{encode_command, encode_command_sharing, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::request::{Body, Req};
use rsm_command::entry::DbIndex;

/// A reply (or the connection's end) from node `.0`'s connection number `.1`.
pub(super) type Reply = (usize, u64, Result<Frame, ClientError>);
/// A connect attempt's result for node `.0`.
pub(super) type Connected = (usize, Result<Connection, ClientError>);

/// An argument this big (a RESTORE payload, a chunk of a big value) goes to the socket
/// writer as the entry's own allocation instead of being copied into the output buffer:
/// each copy of a 30 MB payload was 30 MB more of peak memory (the heap profile of a full
/// sync with four 1 M-element keys showed two such copies, 154 MB of a 285 MB peak).
const SHARED_ARG: usize = 64 << 10;

/// What the node owes a reply for, in the order sent: a node answers in order, so the
/// head of this FIFO is what the next reply is for.
// Nearly every element is a `Req`; boxing it would add an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Inflight {
    /// A `SELECT` the writer added: its reply settles no request.
    Select,
    /// An `ASKING` before a redirected request: likewise.
    Asking,
    Req {
        req: Req,
        replies_left: usize,
        first_err: Option<Bytes>,
    },
}

/// What one reply frame settled.
#[allow(clippy::large_enum_variant)] // `Done` is the common case: no box per reply.
pub(super) enum Answer {
    /// A part of a request (a queued command of a transaction), or a stray reply.
    Nothing,
    /// `SELECT` was refused: the connection cannot be used.
    SelectRefused { db: DbIndex, message: String },
    /// A request's last reply (`first_err`: an error among its earlier replies).
    Done {
        req: Req,
        last: Frame,
        first_err: Option<Bytes>,
    },
}

/// One target node as the writer sees it. Plain state: the connection's tasks only
/// report on channels, so every decision about the node is made by the writer task.
pub(super) struct Node {
    pub endpoint: Endpoint,
    /// Bumped on every (re)connect: replies from an older connection are stale.
    pub gen: u64,
    /// To the socket writer task; `None` while not connected.
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
    /// Encoded but not yet handed to the socket task: one hand-over per loop pass.
    out: BytesMut,
    inflight: VecDeque<Inflight>,
    /// Requests (not `SELECT`/`ASKING`) in `inflight`, and their bytes: the window.
    inflight_reqs: usize,
    inflight_bytes: usize,
    /// The db the connection has selected (a target with dbs), so `SELECT` is sent
    /// only on a change.
    db: Option<DbIndex>,
    /// After a failed connect: no new attempt before this time (and why it failed).
    pub down: Option<(Instant, String)>,
    pub connect_failures: u32,
    pub connecting: bool,
    /// Requests for this node that wait for its connection or for room in its window, in
    /// order. Waiting here, not in a shared queue, keeps one slow node from stalling all.
    pub waiting: VecDeque<Req>,
    /// It has answered a write of this writer (see `Shared::answered_by`).
    pub answered: bool,
}

impl Node {
    pub(super) fn new(endpoint: Endpoint) -> Node {
        Node {
            endpoint,
            gen: 0,
            tx: None,
            tasks: Vec::new(),
            out: BytesMut::new(),
            inflight: VecDeque::new(),
            inflight_reqs: 0,
            inflight_bytes: 0,
            db: None,
            down: None,
            connect_failures: 0,
            connecting: false,
            waiting: VecDeque::new(),
            answered: false,
        }
    }

    /// Connected: requests can be encoded for it now.
    pub(super) fn connected(&self) -> bool {
        self.tx.is_some()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.inflight_reqs
    }

    pub(super) fn nothing_in_flight(&self) -> bool {
        self.inflight.is_empty()
    }

    /// No room for one more request (one request always fits, however big).
    pub(super) fn window_full(&self, max_reqs: usize, max_bytes: usize) -> bool {
        self.inflight_reqs > 0
            && (self.inflight_reqs >= max_reqs || self.inflight_bytes >= max_bytes)
    }

    /// Close the connection: its tasks end, and its replies still on the way are stale
    /// (the generation changes). What was in flight stays: see [`Node::take_in_flight`].
    pub(super) fn disconnect(&mut self) {
        self.tx = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.gen += 1;
        // A new connection starts in db 0, and what was encoded for the old one is lost
        // with it (its requests are re-sent from their queues).
        self.db = None;
        self.out.clear();
    }

    /// Disconnect and hand back every request in flight (their fate is unknown).
    pub(super) fn take_in_flight(&mut self) -> Vec<Req> {
        self.disconnect();
        self.inflight_reqs = 0;
        self.inflight_bytes = 0;
        self.inflight
            .drain(..)
            .filter_map(|i| match i {
                Inflight::Req { req, .. } => Some(req),
                _ => None,
            })
            .collect()
    }

    /// Does a request of `slot` wait here?
    pub(super) fn waits_for(&self, slot: usize) -> bool {
        self.waiting.iter().any(|r| r.slot == slot)
    }

    /// The waiting requests of `slot`, taken out of the queue (in order). A marker check
    /// stays: it is what the slot waits for.
    pub(super) fn take_waiting_of(&mut self, slot: usize) -> Vec<Req> {
        let mine = |r: &Req| r.slot == slot && !matches!(r.body, Body::Check { .. });
        // The common case, without rebuilding the queue.
        if !self.waiting.iter().any(mine) {
            return Vec::new();
        }
        let (mine, rest): (VecDeque<Req>, VecDeque<Req>) = self.waiting.drain(..).partition(mine);
        self.waiting = rest;
        mine.into()
    }

    /// Encode `req` into the output buffer and put it in flight. `select`: the target has
    /// databases (see `TargetInfo::selects_db`), so a change of db is sent first.
    pub(super) fn encode(&mut self, mut req: Req, select: bool) {
        if select && self.db != Some(req.db) {
            encode_command(
                &[b("SELECT"), Bytes::from(req.db.to_string())],
                &mut self.out,
            );
            self.inflight.push_back(Inflight::Select);
            self.db = Some(req.db);
        }
        // Once: a retry after this attempt goes to the slot's owner again, unless a new
        // ASK says otherwise.
        if req.ask.take().is_some() {
            encode_command(&[b("ASKING")], &mut self.out);
            self.inflight.push_back(Inflight::Asking);
        }
        match &req.body {
            // Big arguments go to the socket task as their own buffers (see
            // `SHARED_ARG`); without a connection there is nobody to hand them to.
            Body::Cmd(a) | Body::Claim(a) | Body::Restore { args: a, .. } => match &self.tx {
                Some(tx) => encode_command_sharing(a, SHARED_ARG, &mut self.out, &mut |piece| {
                    let _ = tx.send(piece);
                }),
                None => encode_command(a, &mut self.out),
            },
            Body::Gate { key } => encode_command(&[b("EXISTS"), key.clone()], &mut self.out),
            Body::Check { slot } => encode_command(
                &[b("GET"), super::progress::slot_marker_key(*slot)],
                &mut self.out,
            ),
            // One request, `replies()` replies: the FIFO entry stays at the head until
            // EXEC's reply.
            Body::Multi(cmds) => {
                encode_command(&[b("MULTI")], &mut self.out);
                for c in cmds {
                    encode_command(c, &mut self.out);
                }
                encode_command(&[b("EXEC")], &mut self.out);
            }
        }
        self.inflight_reqs += 1;
        self.inflight_bytes += req.bytes;
        let replies_left = req.body.replies();
        self.inflight.push_back(Inflight::Req {
            req,
            replies_left,
            first_err: None,
        });
    }

    /// Hand what was encoded to the connection's writer task.
    pub(super) fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let buf = self.out.split().freeze();
        if let Some(tx) = &self.tx {
            // A closed channel means the connection's task ended; its error arrives
            // through the replies channel and the requests are retried from there.
            let _ = tx.send(buf);
        }
    }

    /// Match one reply to the head of the FIFO.
    pub(super) fn on_frame(&mut self, frame: Frame) -> Answer {
        // A reply with nothing owed is the server's doing (or ours): logged and dropped,
        // rather than matched to a request it does not belong to.
        let Some(front) = self.inflight.front_mut() else {
            tracing::warn!(node = %self.endpoint, reply = %frame.describe(), "reply with nothing in flight: ignored");
            return Answer::Nothing;
        };
        match front {
            Inflight::Select => {
                self.inflight.pop_front();
                match frame.as_error() {
                    Some(e) => Answer::SelectRefused {
                        db: self.db.unwrap_or(0),
                        message: rsm_resp::escape_controls(e),
                    },
                    None => Answer::Nothing,
                }
            }
            Inflight::Asking => {
                self.inflight.pop_front();
                // Not fatal: the request after it is judged by its own reply.
                if let Some(e) = frame.as_error() {
                    tracing::warn!(node = %self.endpoint, error = %rsm_resp::escape_controls(e), "ASKING refused");
                }
                Answer::Nothing
            }
            Inflight::Req {
                replies_left,
                first_err,
                ..
            } => {
                *replies_left -= 1;
                // A transaction's earlier replies (MULTI's OK, each QUEUED): only an error
                // among them matters, since EXEC then fails because of it.
                if *replies_left > 0 {
                    if let Some(e) = frame.as_error() {
                        first_err.get_or_insert_with(|| e.clone());
                    }
                    return Answer::Nothing;
                }
                let Some(Inflight::Req { req, first_err, .. }) = self.inflight.pop_front() else {
                    return Answer::Nothing;
                };
                self.inflight_reqs -= 1;
                self.inflight_bytes -= req.bytes;
                Answer::Done {
                    req,
                    last: frame,
                    first_err,
                }
            }
        }
    }

    /// Start the reader and writer tasks of a new connection; node `index` in replies.
    pub(super) fn attach(
        &mut self,
        index: usize,
        conn: Connection,
        replies: &mpsc::UnboundedSender<Reply>,
    ) {
        let (mut reader, mut writer) = conn.into_split();
        // An older connection's tasks end first: its late replies must not be taken for
        // this one's (they carry the old generation).
        self.disconnect();
        let gen = self.gen;
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let to_writer = replies.clone();
        let read_task = tokio::spawn(async move {
            loop {
                match reader.read_frame().await {
                    Ok((f, _)) => {
                        if to_writer.send((index, gen, Ok(f))).is_err() {
                            return;
                        }
                    }
                    // The end of the connection, read as the writer's news: it re-sends
                    // what was in flight.
                    Err(e) => {
                        let _ = to_writer.send((index, gen, Err(e)));
                        return;
                    }
                }
            }
        });
        let to_writer = replies.clone();
        let write_task = tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                // Small pieces are gathered into one write; a big one is written from
                // its own buffer, after what was gathered before it.
                let mut direct = None;
                if buf.len() >= SHARED_ARG {
                    direct = Some(buf);
                } else {
                    writer.send_raw(&buf);
                    while writer.pending() < (1 << 20) {
                        match rx.try_recv() {
                            Ok(more) if more.len() >= SHARED_ARG => {
                                direct = Some(more);
                                break;
                            }
                            Ok(more) => writer.send_raw(&more),
                            Err(_) => break,
                        }
                    }
                }
                let mut result = writer.flush().await;
                if let (Ok(()), Some(big)) = (&result, direct) {
                    result = writer.write_now(&big).await;
                }
                if let Err(e) = result {
                    let _ = to_writer.send((index, gen, Err(e)));
                    return;
                }
            }
            writer.shutdown().await;
        });
        // Kept to abort them on disconnect: a dropped JoinHandle does not stop a task.
        self.tx = Some(tx);
        self.tasks = vec![read_task, write_task];
        tracing::debug!(node = %self.endpoint, "connected to target node");
    }
}

/// Connect to node `index` in a task of its own; the result arrives on `tx`.
pub(super) fn spawn_connect(
    index: usize,
    endpoint: Endpoint,
    opts: ConnectOptions,
    tx: mpsc::UnboundedSender<Connected>,
) {
    tokio::spawn(async move {
        let r = Connection::connect(&endpoint, &opts).await;
        let _ = tx.send((index, r));
    });
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(seq: u64, db: DbIndex, body: Body) -> Req {
        Req::new((seq, 0), seq, 1, db, body, None)
    }

    fn words(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    fn done_seq(a: Answer) -> Option<u64> {
        match a {
            Answer::Done { req, .. } => Some(req.order.0),
            _ => None,
        }
    }

    #[test]
    fn select_is_sent_when_the_db_changes_and_its_reply_is_not_a_request() {
        let mut n = Node::new(Endpoint::new("127.0.0.1", 1));
        n.encode(req(1, 2, Body::Cmd(words("SET a 1"))), true);
        n.encode(req(2, 2, Body::Cmd(words("SET b 1"))), true);
        assert_eq!(
            &n.out[..],
            &b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n1\r\n"[..]
        );
        assert_eq!(n.in_flight(), 2);
        assert!(matches!(n.on_frame(ok()), Answer::Nothing));
        assert_eq!(done_seq(n.on_frame(ok())), Some(1));
        assert_eq!(done_seq(n.on_frame(ok())), Some(2));
        assert!(n.nothing_in_flight());
    }

    #[test]
    fn a_transaction_answers_once_with_its_first_queueing_error() {
        let mut n = Node::new(Endpoint::new("127.0.0.1", 1));
        let body = Body::Multi(vec![words("INCR a"), words("INCR b")]);
        n.encode(req(1, 0, body), false);
        assert!(matches!(n.on_frame(ok()), Answer::Nothing)); // MULTI
        let moved = Frame::Error(Bytes::from_static(b"MOVED 1 127.0.0.1:2"));
        assert!(matches!(n.on_frame(moved), Answer::Nothing));
        assert!(matches!(
            n.on_frame(Frame::Simple(Bytes::from_static(b"QUEUED"))),
            Answer::Nothing
        ));
        match n.on_frame(Frame::Error(Bytes::from_static(b"EXECABORT"))) {
            Answer::Done { first_err, .. } => {
                assert_eq!(first_err.as_deref(), Some(&b"MOVED 1 127.0.0.1:2"[..]))
            }
            _ => panic!("EXEC's reply ends the request"),
        }
    }

    #[test]
    fn asking_precedes_a_redirected_request_once() {
        let mut n = Node::new(Endpoint::new("127.0.0.1", 1));
        let mut r = req(1, 0, Body::Cmd(words("SET a 1")));
        r.ask = Some(0);
        n.encode(r, false);
        assert!(n.out.starts_with(b"*1\r\n$6\r\nASKING\r\n"));
        assert!(matches!(n.on_frame(ok()), Answer::Nothing));
        assert_eq!(done_seq(n.on_frame(ok())), Some(1));
    }

    #[test]
    fn windows_and_lost_connections() {
        let mut n = Node::new(Endpoint::new("127.0.0.1", 1));
        assert!(!n.window_full(1, 1), "an empty window takes any request");
        n.encode(req(1, 0, Body::Cmd(words("SET a 1"))), false);
        assert!(n.window_full(1, 1 << 20));
        assert!(!n.window_full(2, 1 << 20));
        let lost = n.take_in_flight();
        assert_eq!(lost.len(), 1);
        assert!(n.nothing_in_flight() && n.in_flight() == 0);
        assert_eq!(n.gen, 1, "replies of the old connection are now stale");
    }
}
