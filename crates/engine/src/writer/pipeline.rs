//! The writer task: turns entries into requests, routes them to target nodes, keeps a FIFO
//! of in-flight requests per node and checks every reply against it.
//!
//! Ordering is kept per slot. When a request fails with something worth retrying (MOVED,
//! ASK, TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, OOM, a lost connection) its slot is *blocked*:
//! the failed request and every later request of that slot wait in a queue sorted by their
//! original order. Once no request of the slot is in flight any more and the back-off has
//! passed, the queue is re-sent in order (to the new owner, or with ASKING to the node an ASK
//! named). Later requests of the slot that were already in flight fail the same way (the
//! node is serial), so they join the queue at their place. A *gate* (EXISTS before a
//! chunked key under the fail/skip policies) blocks its slot the same way until it answers.
//!
//! Only this task touches the node connections; a reader task per connection forwards
//! replies, a writer task per connection does the socket writes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rsm_client::{ClientError, Connection, Endpoint, Retry, ServerError};
use rsm_rdb::constants::RDB_TYPE_MODULE_2;
use rsm_rdb::{dump, Elements, RdbVersion};
use rsm_resp::{encode_command, Frame};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use super::commands::{element_commands, elements_size, Capabilities, ValueState};
use super::route::{key_layout, key_positions, key_slot, split_by, KeyLayout, SLOT_COUNT};
use super::target::{read_slot_map, SlotMap, TargetInfo};
use super::{show_key, Msg, Shared, WriteError, WriterOptions};
use crate::entry::{Command, DbIndex, Entry};
use crate::options::ConflictPolicy;

/// The pseudo-slot of keyless requests (FLUSHALL, FUNCTION …): ordered among themselves.
const KEYLESS: usize = SLOT_COUNT;

/// Position in the original order: (request sequence, sub-request when one was replaced by
/// several, e.g. a refused RESTORE by the commands that rebuild the value).
type Order = (u64, u32);

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Approximate bytes an entry occupies while buffered, for the writer's byte bound.
pub(crate) fn entry_size(e: &Entry) -> usize {
    let args = |a: &[Bytes]| a.iter().map(|x| x.len() + 48).sum::<usize>();
    match e {
        Entry::Restore { key, payload, .. } => key.len() + payload.len() + 64,
        Entry::BigKeyStart { key, .. } => key.len() + 64,
        Entry::BigKeyChunk(els) => elements_size(els) + 64,
        Entry::BigKeyEnd => 64,
        Entry::Command(c) => args(&c.args),
        Entry::Transaction(cs) => cs.iter().map(|c| args(&c.args)).sum(),
    }
}

/// What a request sends and how its reply is judged.
#[derive(Debug)]
enum Body {
    /// Any non-error reply is success.
    Cmd(Vec<Bytes>),
    /// `RESTORE …`; BUSYKEY follows the conflict policy, a refused payload is rebuilt with
    /// commands.
    Restore {
        args: Vec<Bytes>,
        key: Bytes,
        payload: Bytes,
        expire: Option<i64>,
    },
    /// `EXISTS key` before a value written in pieces (fail/skip policies).
    Gate { key: Bytes },
    /// `MULTI`, the commands, `EXEC`.
    Multi(Vec<Vec<Bytes>>),
}

impl Body {
    fn replies(&self) -> usize {
        match self {
            Body::Multi(c) => c.len() + 2,
            _ => 1,
        }
    }
}

#[derive(Debug)]
struct Req {
    order: Order,
    /// The entry this request belongs to (index into the tracks).
    track: u64,
    slot: usize,
    /// A node fixed in advance (broadcasts).
    pin: Option<usize>,
    /// Send with ASKING to this node (once).
    ask: Option<usize>,
    db: DbIndex,
    body: Body,
    /// The key written in pieces (or rebuilt) this request belongs to, for the skip policy.
    group: Option<u64>,
    attempts: u32,
    first_failure: Option<Instant>,
    bytes: usize,
}

/// One entry given to the writer, until all its requests are answered.
struct Track {
    remaining: u32,
    failed: bool,
    /// Count a written key when this entry completes (RESTORE, end of a chunked key).
    counts_key: bool,
    counts_command: bool,
    offset: u64,
    group: Option<u64>,
    permit: Option<OwnedSemaphorePermit>,
}

// Nearly every element is a `Req`; boxing it would add an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Inflight {
    Select,
    Asking,
    Req {
        req: Req,
        replies_left: usize,
        first_err: Option<Bytes>,
    },
}

struct Node {
    endpoint: Endpoint,
    /// Bumped on every (re)connect: replies from an older connection are stale.
    gen: u64,
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
    out: BytesMut,
    inflight: VecDeque<Inflight>,
    inflight_reqs: usize,
    inflight_bytes: usize,
    db: Option<DbIndex>,
    /// After a failed connect: no new attempt before this time (and why it failed).
    down: Option<(Instant, String)>,
    connect_failures: u32,
    /// A connect runs in its own task: a node that accepts TCP but never answers must not
    /// hold up the other nodes.
    connecting: bool,
    /// Requests for this node that wait for its connection or for room in its window, in
    /// order. Waiting here, not in the shared queue, keeps one slow node from stalling all.
    waiting: VecDeque<Req>,
}

impl Node {
    fn new(endpoint: Endpoint) -> Node {
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
        }
    }

    fn disconnect(&mut self) {
        self.tx = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.gen += 1;
        self.db = None;
        self.out.clear();
    }
}

struct Blocked {
    queue: VecDeque<Req>,
    not_before: Instant,
    /// Waiting for a gate's answer, not for a time.
    gate: bool,
}

/// The piece-by-piece key being received (`BigKeyStart` … `BigKeyEnd`).
struct Big {
    group: u64,
    key: Bytes,
    db: DbIndex,
    slot: usize,
    expire: Option<i64>,
    state: ValueState,
    /// Filtered, expired or bad db: its chunks are dropped.
    dropped: bool,
}

enum Cause {
    Redirect,
    Server(String),
    Connection(String),
    Unassigned,
}

type Reply = (usize, u64, Result<Frame, ClientError>);
type Connected = (usize, Result<Connection, ClientError>);

/// How long one node may take to give its slot map during a refresh.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

struct Pipeline {
    opts: WriterOptions,
    info: TargetInfo,
    caps: Capabilities,
    shared: Arc<Shared>,
    nodes: Vec<Node>,
    owner: Vec<Option<usize>>,
    masters: Vec<usize>,
    replies_tx: mpsc::UnboundedSender<Reply>,
    connects_tx: mpsc::UnboundedSender<Connected>,
    refresh_tx: mpsc::UnboundedSender<Option<SlotMap>>,
    /// A slot-map refresh task is running; blocked slots wait for its answer.
    refreshing: bool,
    /// Requests made from admitted entries, not yet sent (the head waits for a window).
    ready: VecDeque<Req>,
    blocked: HashMap<usize, Blocked>,
    slot_inflight: Vec<u32>,
    tracks: VecDeque<Track>,
    track_base: u64,
    next_seq: u64,
    next_group: u64,
    big: Option<Big>,
    skipped_groups: HashSet<u64>,
    failed_groups: HashSet<u64>,
    /// Payload types this target refused: later keys of these types go straight to commands.
    refused_types: HashSet<u8>,
    refresh_needed: bool,
    watermark_frozen: bool,
    /// Why the first entry that will not be applied failed (for [`WriteError::NotApplied`]).
    failure: Option<String>,
    flush_waiters: Vec<oneshot::Sender<Result<(), WriteError>>>,
    warned: u64,
}

/// What the writer task hears from the tasks it started.
struct Events {
    replies: mpsc::UnboundedReceiver<Reply>,
    connects: mpsc::UnboundedReceiver<Connected>,
    refreshes: mpsc::UnboundedReceiver<Option<SlotMap>>,
}

pub(crate) fn spawn(
    opts: WriterOptions,
    info: TargetInfo,
    slots: SlotMap,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
) -> JoinHandle<()> {
    let (replies_tx, replies_rx) = mpsc::unbounded_channel();
    let (connects_tx, connects_rx) = mpsc::unbounded_channel();
    let (refresh_tx, refresh_rx) = mpsc::unbounded_channel();
    let caps = Capabilities {
        hash_field_ttl: info.hash_field_ttl(),
        stream_v2: info.redis_at_least(7, 0),
        create_consumer: info.redis_at_least(6, 2),
    };
    let nodes: Vec<Node> = slots.masters.iter().cloned().map(Node::new).collect();
    let masters = (0..nodes.len()).collect();
    let p = Pipeline {
        opts,
        info,
        caps,
        shared,
        nodes,
        owner: slots.owner,
        masters,
        replies_tx,
        connects_tx,
        refresh_tx,
        refreshing: false,
        ready: VecDeque::new(),
        blocked: HashMap::new(),
        slot_inflight: vec![0; SLOT_COUNT + 1],
        tracks: VecDeque::new(),
        track_base: 0,
        next_seq: 0,
        next_group: 0,
        big: None,
        skipped_groups: HashSet::new(),
        failed_groups: HashSet::new(),
        refused_types: HashSet::new(),
        refresh_needed: false,
        watermark_frozen: false,
        failure: None,
        flush_waiters: Vec::new(),
        warned: 0,
    };
    tokio::spawn(p.run(
        rx,
        Events {
            replies: replies_rx,
            connects: connects_rx,
            refreshes: refresh_rx,
        },
    ))
}

impl Pipeline {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, events: Events) {
        let Events {
            mut replies,
            mut connects,
            mut refreshes,
        } = events;
        let mut input_open = true;
        loop {
            self.drain_blocked();
            self.drain_all_waiting();
            self.pump();
            self.flush_out();
            if self.blocked.is_empty() {
                self.shared.clear_stall();
            }
            self.answer_flushes();
            let fatal = self.fatal();
            if !input_open && (self.idle() || (fatal && self.nothing_in_flight())) {
                break;
            }
            let accept = input_open && self.ready.is_empty();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                Some((node, gen, r)) = replies.recv() => {
                    self.on_reply(node, gen, r);
                    // Take every reply already there before sending more.
                    while let Ok((node, gen, r)) = replies.try_recv() {
                        self.on_reply(node, gen, r);
                    }
                }
                Some((node, r)) = connects.recv() => self.on_connected(node, r),
                Some(map) = refreshes.recv() => self.on_refreshed(map),
                msg = rx.recv(), if accept => {
                    match msg {
                        None => input_open = false,
                        Some(m) => {
                            self.on_msg(m);
                            // Batch what is already queued, up to a window's worth.
                            while self.ready.len() < self.opts.max_inflight {
                                match rx.try_recv() {
                                    Ok(m) => self.on_msg(m),
                                    Err(mpsc::error::TryRecvError::Empty) => break,
                                    Err(mpsc::error::TryRecvError::Disconnected) => {
                                        input_open = false;
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
        for n in &mut self.nodes {
            n.disconnect();
        }
        self.answer_flushes();
    }

    fn fatal(&self) -> bool {
        self.shared
            .fatal
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(true)
    }

    fn set_fatal(&mut self, e: WriteError) {
        tracing::error!(error = %e, "writer stopped");
        if let Ok(mut f) = self.shared.fatal.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        // Nothing more will be sent: give up what waits, so its bytes are released.
        let ready: Vec<Req> = self.ready.drain(..).collect();
        let blocked: Vec<Req> = self
            .blocked
            .drain()
            .flat_map(|(_, b)| b.queue.into_iter())
            .collect();
        let waiting: Vec<Req> = self
            .nodes
            .iter_mut()
            .flat_map(|n| n.waiting.drain(..))
            .collect();
        for r in ready.into_iter().chain(blocked).chain(waiting) {
            self.complete(r.track, false);
        }
    }

    /// Stop without waiting for the target: what is queued or in flight counts as not
    /// applied, so the watermark stays before it (used by a stop while the target stalls).
    fn abandon(&mut self) {
        if !self.fatal() {
            self.set_fatal(WriteError::Abandoned);
        }
        for node in 0..self.nodes.len() {
            let n = &mut self.nodes[node];
            n.disconnect();
            n.inflight_reqs = 0;
            n.inflight_bytes = 0;
            let lost: Vec<Inflight> = n.inflight.drain(..).collect();
            for i in lost {
                if let Inflight::Req { req, .. } = i {
                    self.slot_inflight[req.slot] -= 1;
                    self.complete(req.track, false);
                }
            }
        }
    }

    fn nothing_in_flight(&self) -> bool {
        self.nodes.iter().all(|n| n.inflight.is_empty())
    }

    fn idle(&self) -> bool {
        self.ready.is_empty()
            && self.blocked.is_empty()
            && self.nodes.iter().all(|n| n.waiting.is_empty())
            && self.nothing_in_flight()
            && self.tracks.is_empty()
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let fatal = self.shared.fatal();
        if fatal.is_none() && !self.idle() {
            return;
        }
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(match &fatal {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            });
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.blocked
            .iter()
            .filter(|(s, b)| !b.gate && self.slot_inflight[**s] == 0)
            .map(|(_, b)| b.not_before)
            .min()
    }

    // ---- admission: entries → requests -------------------------------------------------

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Flush(w) => self.flush_waiters.push(w),
            Msg::Abandon => self.abandon(),
            Msg::Conflict(policy) => self.opts.engine.conflict = policy,
            Msg::Mark(offset) => {
                let track = self.track_base + self.tracks.len() as u64;
                self.tracks.push_back(Track {
                    remaining: 1,
                    failed: false,
                    counts_key: false,
                    counts_command: false,
                    offset,
                    group: None,
                    permit: None,
                });
                self.complete(track, true);
            }
            Msg::Entry(e, permit) => {
                let track = self.track_base + self.tracks.len() as u64;
                self.tracks.push_back(Track {
                    remaining: 1, // held during admission
                    failed: false,
                    counts_key: false,
                    counts_command: false,
                    offset: 0,
                    group: None,
                    permit,
                });
                if !self.fatal() {
                    self.admit(track, e);
                }
                self.complete(track, true);
            }
        }
    }

    fn track_mut(&mut self, track: u64) -> Option<&mut Track> {
        let i = track.checked_sub(self.track_base)?;
        self.tracks.get_mut(usize::try_from(i).ok()?)
    }

    /// The entry will not be (wholly) applied; `why` is kept for the writer's error.
    fn fail_track(&mut self, track: u64, why: String) {
        self.failure.get_or_insert(why);
        if let Some(t) = self.track_mut(track) {
            t.failed = true;
        }
    }

    /// The db a write goes to, or `None` (counted) if the target cannot hold it: a cluster
    /// has only db 0, a standalone server its `databases`.
    fn target_db(&self, db: DbIndex) -> Option<DbIndex> {
        let db = self.opts.engine.target_db.unwrap_or(db);
        let fits = match (self.info.cluster, self.info.databases) {
            (true, _) => db == 0,
            (false, Some(n)) => db < n,
            (false, None) => true,
        };
        fits.then_some(db)
    }

    fn push(&mut self, track: u64, slot: usize, db: DbIndex, body: Body, group: Option<u64>) {
        let bytes = match &body {
            Body::Cmd(a) | Body::Restore { args: a, .. } => a.iter().map(|x| x.len() + 16).sum(),
            Body::Gate { key } => key.len() + 32,
            Body::Multi(cs) => cs.iter().flatten().map(|x| x.len() + 16).sum(),
        };
        if let Some(t) = self.track_mut(track) {
            t.remaining += 1;
        }
        let order = (self.next_seq, 0);
        self.next_seq += 1;
        self.ready.push_back(Req {
            order,
            track,
            slot,
            pin: None,
            ask: None,
            db,
            body,
            group,
            attempts: 0,
            first_failure: None,
            bytes,
        });
    }

    fn admit(&mut self, track: u64, e: Entry) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        match e {
            Entry::Restore {
                db,
                key,
                payload,
                expire_at_ms,
                usage,
            } => {
                if !self.opts.engine.filter.keeps(&key) {
                    stats.filtered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if expire_at_ms.is_some_and(|at| at <= now_ms()) {
                    stats.expired.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let Some(db) = self.target_db(db) else {
                    stats.failed_db.fetch_add(1, Ordering::Relaxed);
                    self.fail_track(
                        track,
                        format!(
                            "key {} is in db {db}, which the target does not have (use --targetdb)",
                            show_key(&key)
                        ),
                    );
                    return;
                };
                if let Some(t) = self.track_mut(track) {
                    t.counts_key = true;
                }
                let slot = usize::from(key_slot(&key));
                let rdb_type = payload.first().copied().unwrap_or(0);
                let trailer = trailer_of(&payload);
                if !self.can_restore(rdb_type, trailer) {
                    self.admit_as_commands(track, db, slot, key, payload, expire_at_ms);
                    return;
                }
                let payload = match trailer {
                    Some(t) if needs_rewrite(t, self.info.rdb_version) => {
                        match dump::rewrite_trailer(&payload, self.info.rdb_version.number()) {
                            Ok(p) => p,
                            Err(err) => {
                                self.reject(track, "RESTORE", &key, &err.to_string());
                                return;
                            }
                        }
                    }
                    _ => payload,
                };
                let ttl =
                    expire_at_ms.map_or(Bytes::from_static(b"0"), |at| Bytes::from(at.to_string()));
                let mut args = vec![b("RESTORE"), key.clone(), ttl, payload.clone(), b("ABSTTL")];
                if self.opts.engine.conflict == ConflictPolicy::Rewrite {
                    args.push(b("REPLACE"));
                }
                // IDLETIME and FREQ together are a syntax error; a server writes only one.
                if let Some(idle) = usage.idle_secs {
                    args.extend([b("IDLETIME"), Bytes::from(idle.to_string())]);
                } else if let Some(freq) = usage.freq {
                    args.extend([b("FREQ"), Bytes::from(freq.to_string())]);
                }
                self.push(
                    track,
                    slot,
                    db,
                    Body::Restore {
                        args,
                        key,
                        payload,
                        expire: expire_at_ms,
                    },
                    None,
                );
            }
            Entry::BigKeyStart {
                db,
                key,
                rdb_type: _,
                expire_at_ms,
            } => {
                let group = self.next_group;
                self.next_group += 1;
                let slot = usize::from(key_slot(&key));
                let mut dropped = false;
                if !self.opts.engine.filter.keeps(&key) {
                    stats.filtered.fetch_add(1, Ordering::Relaxed);
                    dropped = true;
                } else if expire_at_ms.is_some_and(|at| at <= now_ms()) {
                    stats.expired.fetch_add(1, Ordering::Relaxed);
                    dropped = true;
                }
                let tdb = self.target_db(db);
                if tdb.is_none() && !dropped {
                    stats.failed_db.fetch_add(1, Ordering::Relaxed);
                    self.fail_track(
                        track,
                        format!(
                            "key {} is in db {db}, which the target does not have (use --targetdb)",
                            show_key(&key)
                        ),
                    );
                    dropped = true;
                }
                let db = tdb.unwrap_or(0);
                if !dropped {
                    self.open_value(track, group, db, slot, &key);
                }
                self.big = Some(Big {
                    group,
                    key,
                    db,
                    slot,
                    expire: expire_at_ms,
                    state: ValueState::default(),
                    dropped,
                });
            }
            Entry::BigKeyChunk(els) => {
                let Some(mut big) = self.big.take() else {
                    tracing::error!("element chunk outside BigKeyStart/BigKeyEnd: dropped");
                    stats.failed_rejected.fetch_add(1, Ordering::Relaxed);
                    self.fail_track(track, "element chunk outside a big key".into());
                    return;
                };
                if !big.dropped && !self.skipped_groups.contains(&big.group) {
                    if let Some(t) = self.track_mut(track) {
                        t.group = Some(big.group);
                    }
                    self.chunk_commands(track, &mut big, els);
                }
                self.big = Some(big);
            }
            Entry::BigKeyEnd => {
                let Some(mut big) = self.big.take() else {
                    tracing::error!("BigKeyEnd without BigKeyStart: ignored");
                    return;
                };
                if big.dropped || self.skipped_groups.contains(&big.group) {
                    return;
                }
                let lost = std::mem::take(&mut big.state.lost_details);
                stats.lost_details.fetch_add(lost, Ordering::Relaxed);
                if let Some(t) = self.track_mut(track) {
                    t.counts_key = true;
                    t.group = Some(big.group);
                }
                if let Some(at) = big.expire {
                    let cmd = vec![b("PEXPIREAT"), big.key.clone(), Bytes::from(at.to_string())];
                    self.push(track, big.slot, big.db, Body::Cmd(cmd), Some(big.group));
                }
            }
            Entry::Command(c) => {
                if let Some(t) = self.track_mut(track) {
                    t.offset = c.offset.0;
                    t.counts_command = true;
                }
                self.admit_command(track, c);
            }
            Entry::Transaction(cmds) => {
                let offset = cmds.last().map_or(0, |c| c.offset.0);
                if let Some(t) = self.track_mut(track) {
                    t.offset = offset;
                    t.counts_command = true;
                }
                self.admit_transaction(track, cmds);
            }
        }
    }

    /// Before a value written in pieces: DEL under `--rewrite`, otherwise a gate (EXISTS)
    /// that decides between writing, skipping and stopping.
    fn open_value(&mut self, track: u64, group: u64, db: DbIndex, slot: usize, key: &Bytes) {
        match self.opts.engine.conflict {
            ConflictPolicy::Rewrite => self.push(
                track,
                slot,
                db,
                Body::Cmd(vec![b("DEL"), key.clone()]),
                Some(group),
            ),
            ConflictPolicy::Fail | ConflictPolicy::Skip => self.push(
                track,
                slot,
                db,
                Body::Gate { key: key.clone() },
                Some(group),
            ),
        }
    }

    fn chunk_commands(&mut self, track: u64, big: &mut Big, els: Elements) {
        if let Elements::Module { raw, .. } = &els {
            // A module value cannot be rebuilt with commands: RESTORE it whole.
            let payload =
                dump::build_payload(RDB_TYPE_MODULE_2, raw, self.info.rdb_version.number());
            let ttl = big.expire.map_or(b("0"), |at| Bytes::from(at.to_string()));
            let mut args = vec![
                b("RESTORE"),
                big.key.clone(),
                ttl,
                payload.clone(),
                b("ABSTTL"),
            ];
            args.push(b("REPLACE")); // the gate or DEL before it settled the conflict
            let body = Body::Restore {
                args,
                key: big.key.clone(),
                payload,
                expire: big.expire,
            };
            self.push(track, big.slot, big.db, body, Some(big.group));
            return;
        }
        for cmd in element_commands(&big.key, els, &mut big.state, self.caps) {
            self.push(track, big.slot, big.db, Body::Cmd(cmd), Some(big.group));
        }
    }

    /// A payload this target cannot RESTORE: decode it and write commands instead.
    fn admit_as_commands(
        &mut self,
        track: u64,
        db: DbIndex,
        slot: usize,
        key: Bytes,
        payload: Bytes,
        expire: Option<i64>,
    ) {
        let group = self.next_group;
        self.next_group += 1;
        if let Some(t) = self.track_mut(track) {
            t.group = Some(group);
        }
        let Some(cmds) = self.rebuild(&key, &payload, expire, track) else {
            return;
        };
        self.open_value(track, group, db, slot, &key);
        for c in cmds {
            self.push(track, slot, db, Body::Cmd(c), Some(group));
        }
    }

    /// The commands that rebuild a payload's value (plus its expiry), or `None` (counted)
    /// when it cannot be decoded or is a module value.
    fn rebuild(
        &mut self,
        key: &Bytes,
        payload: &Bytes,
        expire: Option<i64>,
        track: u64,
    ) -> Option<Vec<Vec<Bytes>>> {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let (rdb_type, chunks) = match dump::decode_payload(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(key = %show_key(key), error = %e, "cannot decode the payload to rebuild it with commands");
                stats.failed_untranslatable.fetch_add(1, Ordering::Relaxed);
                self.fail_track(
                    track,
                    format!(
                        "key {}: cannot rebuild the value with commands: {e}",
                        show_key(key)
                    ),
                );
                return None;
            }
        };
        if rdb_type == RDB_TYPE_MODULE_2 {
            tracing::warn!(key = %show_key(key), target_rdb = %self.info.rdb_version, "the target refused a module value; it cannot be rebuilt with commands");
            stats.failed_untranslatable.fetch_add(1, Ordering::Relaxed);
            self.fail_track(track, format!("key {}: the target refused a module value, which cannot be rebuilt with commands", show_key(key)));
            return None;
        }
        stats.transcoded.fetch_add(1, Ordering::Relaxed);
        let mut st = ValueState::default();
        let mut cmds = Vec::new();
        for els in chunks {
            cmds.extend(element_commands(key, els, &mut st, self.caps));
        }
        stats
            .lost_details
            .fetch_add(st.lost_details, Ordering::Relaxed);
        if let Some(at) = expire {
            cmds.push(vec![
                b("PEXPIREAT"),
                key.clone(),
                Bytes::from(at.to_string()),
            ]);
        }
        Some(cmds)
    }

    /// Does the target know this payload's type (reference §C3)? Types it refused before
    /// are not tried again.
    fn can_restore(&self, rdb_type: u8, trailer: Option<u16>) -> bool {
        if self.refused_types.contains(&rdb_type) {
            return false;
        }
        let valkey_payload = trailer.is_some_and(|t| RdbVersion::from_dump_trailer(t).is_valkey());
        let target = self.info.rdb_version;
        match dump::min_version(rdb_type, valkey_payload) {
            // Unknown to us: let the target decide.
            None => true,
            Some(RdbVersion::Redis(v)) => match target {
                RdbVersion::Redis(t) => v <= t,
                // Valkey reads every Redis type up to 21, not the 7.4 field-TTL hashes.
                RdbVersion::Valkey(_) => v <= 11,
            },
            Some(RdbVersion::Valkey(_)) => target.is_valkey(),
        }
    }

    fn admit_command(&mut self, track: u64, c: Command) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let Command { db, args, .. } = c;
        let layout = key_layout(&args);
        if layout == KeyLayout::Skip {
            return;
        }
        let Some(db) = self.target_db(db) else {
            stats.failed_db.fetch_add(1, Ordering::Relaxed);
            self.fail_track(
                track,
                format!("a command for db {db}, which the target does not have (use --targetdb)"),
            );
            return;
        };
        if let KeyLayout::Keyless { broadcast } = layout {
            let targets: Vec<usize> = if broadcast {
                self.masters.clone()
            } else {
                self.masters.first().copied().into_iter().collect()
            };
            for n in targets {
                self.push(track, KEYLESS, db, Body::Cmd(args.clone()), None);
                if let Some(r) = self.ready.back_mut() {
                    r.pin = Some(n);
                }
            }
            return;
        }
        let positions = key_positions(&args);
        if positions.is_empty() {
            // Malformed (numkeys wrong): the target will say why.
            self.push(track, KEYLESS, db, Body::Cmd(args), None);
            if let Some(r) = self.ready.back_mut() {
                r.pin = self.masters.first().copied();
            }
            return;
        }
        let filter = &self.opts.engine.filter;
        let kept = positions
            .iter()
            .filter(|&&i| filter.keeps(&args[i]))
            .count();
        let args = if kept == 0 {
            stats.filtered.fetch_add(1, Ordering::Relaxed);
            return;
        } else if kept < positions.len() {
            let filter = filter.clone();
            match split_by(&args, |k| filter.keeps(k).then_some(0u8)) {
                Some(mut pieces) if pieces.len() == 1 => pieces.remove(0).1,
                _ => {
                    tracing::debug!(command = %rsm_resp::escape_controls(&args[0]), "multi-key command with keys on both sides of --filterkey dropped");
                    stats.filtered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        } else {
            args
        };
        let slots: Vec<u16> = key_positions(&args)
            .iter()
            .map(|&i| key_slot(&args[i]))
            .collect();
        let first = slots.first().copied().unwrap_or(0);
        if !self.info.cluster || slots.iter().all(|s| *s == first) {
            self.push(track, usize::from(first), db, Body::Cmd(args), None);
            return;
        }
        match split_by(&args, |k| Some(key_slot(k))) {
            Some(pieces) => {
                for (slot, piece) in pieces {
                    self.push(track, usize::from(slot), db, Body::Cmd(piece), None);
                }
            }
            None => {
                tracing::warn!(command = %rsm_resp::escape_controls(&args[0]), key = %show_key(&args[positions[0]]), "all-or-nothing command with keys in several slots of the target cluster: not written");
                stats.failed_cross_slot.fetch_add(1, Ordering::Relaxed);
                let what = format!(
                    "{} with keys in several slots of the target cluster cannot be written",
                    rsm_resp::escape_controls(&args[0])
                );
                self.fail_track(track, what);
            }
        }
    }

    fn admit_transaction(&mut self, track: u64, cmds: Vec<Command>) {
        let mut slot = None;
        let mut one_unit = cmds
            .iter()
            .all(|c| Some(c.db) == cmds.first().map(|f| f.db));
        let filter = self.opts.engine.filter.clone();
        for c in &cmds {
            for i in key_positions(&c.args) {
                let s = key_slot(&c.args[i]);
                if !filter.keeps(&c.args[i]) || slot.is_some_and(|x| x != s) {
                    one_unit = false;
                }
                slot = Some(s);
            }
            if matches!(
                key_layout(&c.args),
                KeyLayout::Keyless { .. } | KeyLayout::Skip
            ) {
                one_unit = false;
            }
        }
        if one_unit && cmds.len() > 1 {
            if let (Some(db), Some(first)) = (cmds.first().map(|c| c.db), slot) {
                if let Some(db) = self.target_db(db) {
                    let body = Body::Multi(cmds.into_iter().map(|c| c.args).collect());
                    self.push(track, usize::from(first), db, body, None);
                    return;
                }
            }
        }
        if cmds.len() > 1 {
            tracing::debug!(
                commands = cmds.len(),
                "transaction spans slots or the filter: written as separate commands"
            );
        }
        for c in cmds {
            self.admit_command(track, c);
        }
    }

    fn reject(&mut self, track: u64, what: &str, key: &[u8], message: &str) {
        self.shared
            .stats
            .failed_rejected
            .fetch_add(1, Ordering::Relaxed);
        self.warn_limited(|| {
            tracing::warn!(command = what, key = %show_key(key), error = message, "target refused a write");
        });
        self.fail_track(
            track,
            format!("the target refused {what} {}: {message}", show_key(key)),
        );
    }

    fn warn_limited(&mut self, f: impl FnOnce()) {
        self.warned += 1;
        if self.warned <= 20 || self.warned.is_power_of_two() {
            f();
        }
    }

    // ---- completion and the watermark --------------------------------------------------

    fn complete(&mut self, track: u64, ok: bool) {
        let Some(t) = self.track_mut(track) else {
            return;
        };
        t.remaining = t.remaining.saturating_sub(1);
        if !ok {
            t.failed = true;
        }
        if t.remaining == 0 {
            t.permit = None;
        }
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let mut stop = None;
        while self.tracks.front().is_some_and(|t| t.remaining == 0) {
            let Some(t) = self.tracks.pop_front() else {
                break;
            };
            self.track_base += 1;
            let group_failed = t.group.is_some_and(|g| self.failed_groups.contains(&g));
            let group_skipped = t.group.is_some_and(|g| self.skipped_groups.contains(&g));
            let ok = !t.failed && !group_failed;
            if t.failed {
                if let Some(g) = t.group {
                    self.failed_groups.insert(g);
                }
            }
            if ok && t.counts_key && !group_skipped {
                stats.keys_written.fetch_add(1, Ordering::Relaxed);
            }
            if ok && t.counts_command {
                stats.commands_written.fetch_add(1, Ordering::Relaxed);
            }
            // Snapshot entries carry no offset, but a failed one still holds the watermark:
            // the end-of-snapshot mark after it must not claim the snapshot is in the target.
            if !ok {
                self.watermark_frozen = true;
                if self.opts.stop_on_failure && stop.is_none() {
                    stop = Some(WriteError::NotApplied {
                        reason: self
                            .failure
                            .clone()
                            .unwrap_or_else(|| "a write was not applied".into()),
                    });
                }
            }
            if t.offset > 0 && !self.watermark_frozen {
                stats.applied_offset.store(t.offset, Ordering::Release);
            }
        }
        if self.tracks.is_empty() {
            // Groups are only needed while their entries are pending.
            self.failed_groups.clear();
        }
        if let Some(e) = stop {
            if !self.fatal() {
                self.set_fatal(e);
            }
        }
    }

    // ---- sending ---------------------------------------------------------------------

    fn node_for(&self, req: &Req) -> Option<usize> {
        req.ask
            .or(req.pin)
            .or_else(|| self.owner.get(req.slot).copied().flatten())
    }

    fn window_full(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.inflight_reqs > 0
            && (n.inflight_reqs >= self.opts.max_inflight
                || n.inflight_bytes >= self.opts.max_inflight_bytes)
    }

    /// Hand every request made from admitted entries to its node (sent, or waiting there).
    fn pump(&mut self) {
        while let Some(req) = self.ready.pop_front() {
            self.dispatch(req, None);
        }
    }

    /// Send now if its node is connected and has room; otherwise the request waits in
    /// its node's queue (or, when its slot is blocked, in the slot's queue), in order.
    /// `from`: the node whose queue it came from (it goes back to the front there).
    /// Returns false when the request had to wait.
    fn dispatch(&mut self, req: Req, from: Option<usize>) -> bool {
        if req.group.is_some_and(|g| self.skipped_groups.contains(&g)) {
            self.complete(req.track, true);
            return true;
        }
        if let Some(bl) = self.blocked.get_mut(&req.slot) {
            insert_sorted(&mut bl.queue, req);
            return true;
        }
        let Some(node) = self.node_for(&req) else {
            self.retry(req, Cause::Unassigned);
            return true;
        };
        let now = Instant::now();
        let n = &mut self.nodes[node];
        if n.tx.is_none() && !n.connecting {
            // One connect attempt per back-off period, not one per queued request.
            if let Some((_, why)) = n.down.as_ref().filter(|(until, _)| now < *until) {
                let why = why.clone();
                self.retry(req, Cause::Connection(why));
                return true;
            }
            self.start_connect(node);
        }
        let n = &mut self.nodes[node];
        let must_wait = n.tx.is_none()
            || (from != Some(node) && !n.waiting.is_empty())
            || self.window_full(node);
        if must_wait {
            let n = &mut self.nodes[node];
            if from == Some(node) {
                n.waiting.push_front(req);
            } else {
                n.waiting.push_back(req);
            }
            return false;
        }
        let gate = matches!(req.body, Body::Gate { .. });
        let slot = req.slot;
        self.send(node, req);
        if gate {
            self.block_slot(slot, Instant::now(), true);
        }
        true
    }

    /// The slot's blocked queue, created if needed. A new one takes the slot's requests
    /// that wait in node queues: they were made before the ones that will block behind
    /// them, so they must be re-sent in the queue's order, not ahead of it.
    fn block_slot(&mut self, slot: usize, not_before: Instant, gate: bool) -> &mut Blocked {
        let mut queue = VecDeque::new();
        if !self.blocked.contains_key(&slot) {
            for n in &mut self.nodes {
                if n.waiting.iter().any(|r| r.slot == slot) {
                    let (mine, rest): (VecDeque<Req>, VecDeque<Req>) =
                        n.waiting.drain(..).partition(|r| r.slot == slot);
                    n.waiting = rest;
                    for r in mine {
                        insert_sorted(&mut queue, r);
                    }
                }
            }
        }
        self.blocked.entry(slot).or_insert(Blocked {
            queue,
            not_before,
            gate,
        })
    }

    /// Send what waits for `node` while its window has room.
    fn drain_waiting(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.tx.is_none() {
            // Lost since: the head goes through routing again, which reconnects (or, while
            // the node is down, queues it for a retry in its slot's order).
            if !n.connecting {
                if let Some(req) = n.waiting.pop_front() {
                    self.dispatch(req, Some(node));
                }
            }
            return;
        }
        while self.nodes[node].tx.is_some() && !self.window_full(node) {
            let Some(req) = self.nodes[node].waiting.pop_front() else {
                break;
            };
            if !self.dispatch(req, Some(node)) {
                break;
            }
        }
    }

    fn drain_all_waiting(&mut self) {
        for node in 0..self.nodes.len() {
            if !self.nodes[node].waiting.is_empty() {
                self.drain_waiting(node);
            }
        }
    }

    /// Every waiting request through routing again, in their original order (after the
    /// slot map changed, a request may belong to another node now).
    fn requeue_waiting(&mut self) {
        let mut all: Vec<Req> = self
            .nodes
            .iter_mut()
            .flat_map(|n| n.waiting.drain(..))
            .collect();
        all.sort_by_key(|r| r.order);
        for req in all {
            self.dispatch(req, None);
        }
    }

    /// Connect in a task of its own; [`Pipeline::on_connected`] takes the result.
    fn start_connect(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.connecting = true;
        let endpoint = n.endpoint.clone();
        let opts = self.opts.connect.clone();
        let tx = self.connects_tx.clone();
        tokio::spawn(async move {
            let r = Connection::connect(&endpoint, &opts).await;
            let _ = tx.send((node, r));
        });
    }

    fn on_connected(&mut self, node: usize, r: Result<Connection, ClientError>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.connecting = false;
        match r {
            Ok(conn) => {
                n.connect_failures = 0;
                n.down = None;
                self.attach(node, conn);
                self.drain_waiting(node);
            }
            Err(e) => {
                // A master that refuses connections may have been replaced by its replica:
                // only a fresh slot map finds the new owner (the writer retries forever).
                self.refresh_needed |= self.info.cluster;
                n.connect_failures += 1;
                let why = e.to_string();
                n.down = Some((Instant::now() + backoff(n.connect_failures), why.clone()));
                let waiting: Vec<Req> = n.waiting.drain(..).collect();
                for req in waiting {
                    self.retry(req, Cause::Connection(why.clone()));
                }
            }
        }
    }

    fn send(&mut self, node: usize, mut req: Req) {
        let cluster = self.info.cluster;
        let n = &mut self.nodes[node];
        if !cluster && n.db != Some(req.db) {
            encode_command(&[b("SELECT"), Bytes::from(req.db.to_string())], &mut n.out);
            n.inflight.push_back(Inflight::Select);
            n.db = Some(req.db);
        }
        if req.ask.take().is_some() {
            encode_command(&[b("ASKING")], &mut n.out);
            n.inflight.push_back(Inflight::Asking);
        }
        match &req.body {
            Body::Cmd(a) | Body::Restore { args: a, .. } => encode_command(a, &mut n.out),
            Body::Gate { key } => encode_command(&[b("EXISTS"), key.clone()], &mut n.out),
            Body::Multi(cmds) => {
                encode_command(&[b("MULTI")], &mut n.out);
                for c in cmds {
                    encode_command(c, &mut n.out);
                }
                encode_command(&[b("EXEC")], &mut n.out);
            }
        }
        n.inflight_reqs += 1;
        n.inflight_bytes += req.bytes;
        self.slot_inflight[req.slot] += 1;
        let replies_left = req.body.replies();
        n.inflight.push_back(Inflight::Req {
            req,
            replies_left,
            first_err: None,
        });
    }

    fn flush_out(&mut self) {
        for n in &mut self.nodes {
            if n.out.is_empty() {
                continue;
            }
            let buf = n.out.split().freeze();
            if let Some(tx) = &n.tx {
                // A closed channel means the connection's task ended; its error arrives
                // through the replies channel and the requests are retried from there.
                let _ = tx.send(buf);
            }
        }
    }

    /// Start the reader and writer tasks of a new connection to `node`.
    fn attach(&mut self, node: usize, conn: Connection) {
        let endpoint = self.nodes[node].endpoint.clone();
        let (mut reader, mut writer) = conn.into_split();
        let n = &mut self.nodes[node];
        n.disconnect();
        let gen = n.gen;
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let replies = self.replies_tx.clone();
        let read_task = tokio::spawn(async move {
            loop {
                match reader.read_frame().await {
                    Ok((f, _)) => {
                        if replies.send((node, gen, Ok(f))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = replies.send((node, gen, Err(e)));
                        return;
                    }
                }
            }
        });
        let replies = self.replies_tx.clone();
        let write_task = tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                writer.send_raw(&buf);
                while writer.pending() < (1 << 20) {
                    match rx.try_recv() {
                        Ok(more) => writer.send_raw(&more),
                        Err(_) => break,
                    }
                }
                if let Err(e) = writer.flush().await {
                    let _ = replies.send((node, gen, Err(e)));
                    return;
                }
            }
            writer.shutdown().await;
        });
        n.tx = Some(tx);
        n.tasks = vec![read_task, write_task];
        tracing::debug!(node = %endpoint, "connected to target node");
    }

    // ---- replies ---------------------------------------------------------------------

    fn on_reply(&mut self, node: usize, gen: u64, r: Result<Frame, ClientError>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.gen != gen {
            return;
        }
        let frame = match r {
            Ok(f) => f,
            Err(e) => {
                self.node_lost(node, e.to_string());
                return;
            }
        };
        let Some(front) = n.inflight.front_mut() else {
            tracing::warn!(node = %n.endpoint, reply = %frame.describe(), "reply with nothing in flight: ignored");
            return;
        };
        match front {
            Inflight::Select => {
                n.inflight.pop_front();
                if let Some(e) = frame.as_error() {
                    let err = WriteError::Select {
                        endpoint: n.endpoint.to_string(),
                        db: n.db.unwrap_or(0),
                        message: rsm_resp::escape_controls(e),
                    };
                    self.set_fatal(err);
                }
            }
            Inflight::Asking => {
                n.inflight.pop_front();
                if let Some(e) = frame.as_error() {
                    tracing::warn!(node = %n.endpoint, error = %rsm_resp::escape_controls(e), "ASKING refused");
                }
            }
            Inflight::Req {
                replies_left,
                first_err,
                ..
            } => {
                *replies_left -= 1;
                if *replies_left > 0 {
                    if let Some(e) = frame.as_error() {
                        first_err.get_or_insert_with(|| e.clone());
                    }
                    return;
                }
                let Some(Inflight::Req { req, first_err, .. }) = n.inflight.pop_front() else {
                    return;
                };
                n.inflight_reqs -= 1;
                n.inflight_bytes -= req.bytes;
                self.slot_inflight[req.slot] -= 1;
                self.outcome(node, req, frame, first_err);
            }
        }
    }

    fn outcome(&mut self, node: usize, req: Req, last: Frame, first_err: Option<Bytes>) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let err = match (&req.body, last.as_error()) {
            // MULTI/EXEC: a refusal while queueing (MOVED, …) makes EXEC fail: judge by it.
            (Body::Multi(_), Some(e)) => Some(first_err.unwrap_or_else(|| e.clone())),
            (Body::Multi(cmds), None) => {
                let failed = last
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|f| f.is_error()).count());
                if failed > 0 {
                    let first = cmds.first().map(|c| rsm_resp::escape_controls(&c[0]));
                    self.reject(
                        req.track,
                        "EXEC",
                        first.as_deref().unwrap_or("").as_bytes(),
                        &format!("{failed} commands of the transaction failed"),
                    );
                    self.complete(req.track, false);
                    return;
                }
                None
            }
            (_, e) => e.cloned(),
        };
        let Some(err) = err else {
            if let Body::Gate { key } = &req.body {
                self.gate_answered(&req, key.clone(), last.as_int() == Some(1));
            }
            stats.bytes.fetch_add(req.bytes as u64, Ordering::Relaxed);
            self.complete(req.track, true);
            return;
        };
        let se = ServerError::classify(&err);
        let text = rsm_resp::escape_controls(&err);
        match (&se, &req.body) {
            (ServerError::Moved { .. }, _) => {
                stats.moved.fetch_add(1, Ordering::Relaxed);
                let asked = self.nodes[node].endpoint.clone();
                if let Some(ep) = se.redirect_target(&asked) {
                    let to = self.node_index(ep);
                    if let Some(o) = self.owner.get_mut(req.slot) {
                        *o = Some(to);
                    }
                }
                self.refresh_needed = true;
                let mut req = req;
                req.ask = None;
                tracing::debug!(slot = req.slot, node = %asked, error = %text, "MOVED: re-sending to the new owner");
                self.retry(req, Cause::Redirect);
            }
            (ServerError::Ask { .. }, _) => {
                stats.ask.fetch_add(1, Ordering::Relaxed);
                let asked = self.nodes[node].endpoint.clone();
                let mut req = req;
                req.ask = se.redirect_target(&asked).map(|ep| self.node_index(ep));
                tracing::debug!(slot = req.slot, node = %asked, error = %text, "ASK: re-sending with ASKING");
                self.retry(req, Cause::Redirect);
            }
            (ServerError::BusyKey, Body::Restore { key, .. }) => match self.opts.engine.conflict {
                ConflictPolicy::Skip => {
                    stats.skipped_existing.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = self.track_mut(req.track) {
                        t.counts_key = false;
                    }
                    self.complete(req.track, true);
                }
                _ => {
                    let e = WriteError::KeyExists {
                        key: show_key(key),
                        db: req.db,
                    };
                    // The reason first: completing a failed entry stops the writer too.
                    self.set_fatal(e);
                    self.complete(req.track, false);
                }
            },
            (ServerError::BadPayload, Body::Restore { .. }) => self.fall_back(req),
            _ if matches!(se.retry(), Retry::Backoff | Retry::RefreshTopology) => {
                if se.retry() == Retry::RefreshTopology {
                    self.refresh_needed = true;
                }
                self.retry(req, Cause::Server(text));
            }
            _ => {
                let (what, key) = describe(&req);
                self.reject(req.track, &what, &key, &text);
                if let Some(g) = req.group {
                    self.failed_groups.insert(g);
                }
                self.complete(req.track, false);
            }
        }
    }

    fn gate_answered(&mut self, req: &Req, key: Bytes, exists: bool) {
        let now = Instant::now();
        if let Some(bl) = self.blocked.get_mut(&req.slot) {
            bl.gate = false;
            bl.not_before = now;
        }
        if !exists {
            return;
        }
        match self.opts.engine.conflict {
            ConflictPolicy::Skip => {
                self.shared
                    .stats
                    .skipped_existing
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(g) = req.group {
                    self.skipped_groups.insert(g);
                    // Drop what is queued for it; later pieces are dropped on arrival.
                    let mut dropped = Vec::new();
                    if let Some(bl) = self.blocked.get_mut(&req.slot) {
                        bl.queue.retain(|r| {
                            let mine = r.group == Some(g);
                            if mine {
                                dropped.push(r.track);
                            }
                            !mine
                        });
                    }
                    for t in dropped {
                        self.complete(t, true);
                    }
                }
            }
            _ => {
                self.fail_track(req.track, format!("key {} already exists", show_key(&key)));
                self.set_fatal(WriteError::KeyExists {
                    key: show_key(&key),
                    db: req.db,
                });
            }
        }
    }

    /// The target refused a RESTORE payload: write the value as commands at the same place
    /// in the slot's order.
    fn fall_back(&mut self, req: Req) {
        let Body::Restore {
            key,
            payload,
            expire,
            ..
        } = &req.body
        else {
            return;
        };
        let rdb_type = payload.first().copied().unwrap_or(0);
        if self.refused_types.insert(rdb_type) {
            tracing::info!(rdb_type, target_rdb = %self.info.rdb_version, "target cannot RESTORE this type: rebuilding such values with commands");
        }
        let (key, payload, expire) = (key.clone(), payload.clone(), *expire);
        let Some(mut cmds) = self.rebuild(&key, &payload, expire, req.track) else {
            self.complete(req.track, false);
            return;
        };
        // RESTORE checks BUSYKEY before the payload, so the key was absent, or REPLACE was
        // given and nothing was deleted yet.
        if self.opts.engine.conflict == ConflictPolicy::Rewrite {
            cmds.insert(0, vec![b("DEL"), key.clone()]);
        }
        let n = cmds.len() as u32;
        if let Some(t) = self.track_mut(req.track) {
            t.remaining += n;
        }
        let bl = self.block_slot(req.slot, Instant::now(), false);
        for (i, c) in cmds.into_iter().enumerate() {
            let bytes = c.iter().map(|x| x.len() + 16).sum();
            insert_sorted(
                &mut bl.queue,
                Req {
                    order: (req.order.0, req.order.1 + 1 + i as u32),
                    track: req.track,
                    slot: req.slot,
                    pin: None,
                    ask: None,
                    db: req.db,
                    body: Body::Cmd(c),
                    group: req.group,
                    attempts: 0,
                    first_failure: None,
                    bytes,
                },
            );
        }
        // The RESTORE itself is replaced by the commands.
        self.complete(req.track, true);
    }

    fn node_index(&mut self, ep: Endpoint) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.endpoint == ep) {
            return i;
        }
        self.nodes.push(Node::new(ep));
        self.nodes.len() - 1
    }

    /// Queue a failed request for another try in its slot's order, or give it up.
    fn retry(&mut self, mut req: Req, cause: Cause) {
        let now = Instant::now();
        req.attempts += 1;
        let first = *req.first_failure.get_or_insert(now);
        let shared = self.shared.clone();
        let stats = &shared.stats;
        if !matches!(cause, Cause::Redirect) {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        match &cause {
            Cause::Server(m) | Cause::Connection(m) => self.shared.set_stall(m),
            Cause::Unassigned => self
                .shared
                .set_stall(&format!("slot {} has no owner in the target", req.slot)),
            Cause::Redirect => {}
        }
        // Redirects loop only if the cluster is changing; give them the same deadline.
        if !self.opts.retry_forever && now.duration_since(first) > self.opts.retry_timeout {
            let secs = self.opts.retry_timeout.as_secs();
            match cause {
                Cause::Connection(msg) => {
                    let endpoint = self
                        .node_for(&req)
                        .map(|n| self.nodes[n].endpoint.to_string())
                        .unwrap_or_default();
                    self.set_fatal(WriteError::TargetLost {
                        endpoint,
                        secs,
                        cause: msg,
                    });
                    self.complete(req.track, false);
                }
                other => {
                    let why = match other {
                        Cause::Server(m) => m,
                        Cause::Unassigned => format!("slot {} has no owner", req.slot),
                        _ => "redirected too often".into(),
                    };
                    let (what, key) = describe(&req);
                    tracing::warn!(command = %what, key = %show_key(&key), secs, error = %why, "gave up a write after retrying");
                    self.failure.get_or_insert_with(|| {
                        format!(
                            "gave up {what} {} after {secs}s of retries: {why}",
                            show_key(&key)
                        )
                    });
                    stats.failed_retries.fetch_add(1, Ordering::Relaxed);
                    if let Some(g) = req.group {
                        self.failed_groups.insert(g);
                    }
                    self.complete(req.track, false);
                }
            }
            return;
        }
        let delay = match &cause {
            Cause::Redirect => Duration::ZERO,
            _ => backoff(req.attempts),
        };
        match &cause {
            Cause::Server(m) | Cause::Connection(m)
                if req.attempts == 1 || req.attempts.is_multiple_of(20) =>
            {
                // Rate-limited: a dead node fails every request in flight at once.
                let (slot, attempts) = (req.slot, req.attempts);
                self.warn_limited(|| {
                    tracing::warn!(slot, attempts, delay_ms = delay.as_millis() as u64, error = %m, "write failed, retrying in order after a pause");
                });
            }
            Cause::Unassigned if req.attempts == 1 => {
                tracing::warn!(slot = req.slot, "slot has no owner in the target; waiting");
                self.refresh_needed = true;
            }
            _ => {}
        }
        let bl = self.block_slot(req.slot, now, false);
        bl.not_before = bl.not_before.max(now + delay);
        insert_sorted(&mut bl.queue, req);
    }

    fn node_lost(&mut self, node: usize, cause: String) {
        let n = &mut self.nodes[node];
        tracing::warn!(node = %n.endpoint, error = %cause, in_flight = n.inflight_reqs, "lost the connection to a target node; re-sending in order");
        n.disconnect();
        n.inflight_reqs = 0;
        n.inflight_bytes = 0;
        let lost: Vec<Inflight> = n.inflight.drain(..).collect();
        for i in lost {
            if let Inflight::Req { req, .. } = i {
                self.slot_inflight[req.slot] -= 1;
                self.retry(req, Cause::Connection(cause.clone()));
            }
        }
        self.refresh_needed = self.info.cluster;
    }

    /// Re-send the queues of blocked slots whose pause is over and that have nothing in
    /// flight any more. While a slot-map refresh runs, they wait for its answer.
    fn drain_blocked(&mut self) {
        if self.blocked.is_empty() || self.fatal() {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<(usize, Order)> = self
            .blocked
            .iter()
            .filter(|(s, bl)| !bl.gate && bl.not_before <= now && self.slot_inflight[**s] == 0)
            .map(|(s, bl)| (*s, bl.queue.front().map_or((0, 0), |r| r.order)))
            .collect();
        if due.is_empty() {
            return;
        }
        if self.refresh_needed && self.info.cluster {
            self.start_refresh();
        }
        if self.refreshing {
            return;
        }
        due.sort_by_key(|(_, o)| *o);
        for (slot, _) in due {
            let Some(bl) = self.blocked.remove(&slot) else {
                continue;
            };
            for req in bl.queue {
                self.dispatch(req, None);
            }
        }
    }

    /// Ask every known node (and the operator's seed) for the slot map at once, in a task
    /// of its own: the first answer wins, and a node that never answers holds up nothing.
    fn start_refresh(&mut self) {
        self.refresh_needed = false;
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let mut candidates: Vec<Endpoint> = self.nodes.iter().map(|n| n.endpoint.clone()).collect();
        // The node the operator named may be a replica we never wrote to: it knows the map.
        if !candidates.contains(&self.opts.target) {
            candidates.push(self.opts.target.clone());
        }
        let opts = self.opts.connect.clone();
        let tx = self.refresh_tx.clone();
        tokio::spawn(async move {
            let mut asks = tokio::task::JoinSet::new();
            for ep in candidates {
                let opts = opts.clone();
                asks.spawn(async move {
                    let read = async {
                        let mut conn = Connection::connect(&ep, &opts).await.ok()?;
                        read_slot_map(&mut conn, &ep).await.ok()
                    };
                    tokio::time::timeout(REFRESH_TIMEOUT, read)
                        .await
                        .ok()
                        .flatten()
                });
            }
            while let Some(answer) = asks.join_next().await {
                if let Ok(Some(map)) = answer {
                    let _ = tx.send(Some(map));
                    return;
                }
            }
            let _ = tx.send(None);
        });
    }

    fn on_refreshed(&mut self, map: Option<SlotMap>) {
        self.refreshing = false;
        let Some(map) = map else {
            tracing::warn!("could not refresh the target slot map from any node; retrying");
            // Try again on the next due retry, not at once in a loop.
            self.refresh_needed = true;
            return;
        };
        let idx: Vec<usize> = map
            .masters
            .into_iter()
            .map(|m| self.node_index(m))
            .collect();
        self.owner = map
            .owner
            .into_iter()
            .map(|o| o.and_then(|i| idx.get(i).copied()))
            .collect();
        self.masters = idx;
        tracing::debug!(
            masters = self.masters.len(),
            "refreshed the target slot map"
        );
        self.requeue_waiting();
    }
}

fn describe(req: &Req) -> (String, Bytes) {
    match &req.body {
        Body::Cmd(a) | Body::Restore { args: a, .. } => (
            rsm_resp::escape_controls(a.first().map_or(&b""[..], |x| &x[..])),
            a.get(1).cloned().unwrap_or_default(),
        ),
        Body::Gate { key } => ("EXISTS".into(), key.clone()),
        Body::Multi(c) => (
            "MULTI".into(),
            c.first()
                .and_then(|c| c.get(1))
                .cloned()
                .unwrap_or_default(),
        ),
    }
}

fn insert_sorted(q: &mut VecDeque<Req>, req: Req) {
    // Almost always appended at the back.
    let pos = q.partition_point(|r| r.order <= req.order);
    q.insert(pos, req);
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((10u64 << attempts.min(7)).min(1000))
}

fn trailer_of(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    (n >= 11).then(|| u16::from_le_bytes([payload[n - 10], payload[n - 9]]))
}

/// Does a payload with this trailer need a new one before the target accepts it? Older
/// versions of the same flavor load as they are (§A3); a newer or foreign one does not.
fn needs_rewrite(trailer: u16, target: RdbVersion) -> bool {
    let payload = RdbVersion::from_dump_trailer(trailer);
    match (payload, target) {
        (RdbVersion::Redis(p), RdbVersion::Redis(t)) => p > t,
        // Valkey 9 treats 12..79 as foreign even in relaxed mode.
        (RdbVersion::Redis(p), RdbVersion::Valkey(_)) => p > 11,
        (RdbVersion::Valkey(p), RdbVersion::Valkey(t)) => p > t,
        (RdbVersion::Valkey(_), RdbVersion::Redis(_)) => true,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_rules() {
        assert!(!needs_rewrite(9, RdbVersion::Redis(12)));
        assert!(needs_rewrite(12, RdbVersion::Redis(9)));
        assert!(needs_rewrite(12, RdbVersion::Valkey(80)));
        assert!(!needs_rewrite(11, RdbVersion::Valkey(80)));
        assert!(needs_rewrite(80, RdbVersion::Redis(12)));
        assert!(!needs_rewrite(80, RdbVersion::Valkey(80)));
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(20));
        assert_eq!(backoff(30), Duration::from_millis(1000));
    }
}
