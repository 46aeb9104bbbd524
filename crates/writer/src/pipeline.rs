//! The writer task: the one owner of the writer's state. It takes entries from the handle,
//! has them admitted ([`super::admit`]), routes the requests to their nodes (with the
//! helpers of [`super::dispatch`]), has each reply judged ([`super::request::judge`]) and
//! decided ([`super::decide`]), carries the decision out, and settles entries into the
//! watermark ([`super::watermark`]).
//!
//! Everything slow runs in tasks of its own that report back on channels: each node
//! connection's reader and socket writer, each connect, each slot-map refresh. This task
//! never waits on one node while another has work.
//!
//! Which way the code leans: this file uses the others, they never use it. What to do
//! about a request (where it goes, what its reply means, whether to try again) is a value
//! from [`super::decide`], tested there with plain facts; here it is only carried out:
//! counters, logs, the slot order, the node queues, the tracks. (The slot-map refresh,
//! [`super::refresh`], is still a part of this task in a file of its own.)

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rsm_client::{ClientError, Connection};
use rsm_resp::Frame;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::admit::{Admitted, Admitter, Dest, Planned, Tally};
use super::decide::{
    again, decide, route, Action, Again, Cause, NewOwner, Outcome, ReqFacts, RetryPolicy, Route,
    RouteFacts, WriterFacts,
};
use super::dispatch::{
    block_slot, down, marker_check, must_wait, node_at, node_at_mut, node_for, node_index, send,
    take_all_waiting, wait_at, waits_anywhere, Window,
};
use super::node::{spawn_connect, Answer, Connected, Node, Reply};
use super::order::{backoff, SlotOrder};
use super::replies::{conflict_key, failed_record, gave_up_why, key_conflict, rebuilt_pieces};
use super::request::{judge, restore_parts, Body, Req};
use super::target::{SlotMap, TargetInfo};
use super::watermark::{Settled, Tracks};
use super::{show_key, Msg, Shared, WriteError, WriterOptions};
use rsm_command::entry::Entry;

/// The wall clock in Unix milliseconds: expiries travel as absolute times (`PEXPIREAT`,
/// `RESTORE … ABSTTL`), so admission compares them with this, not with `Instant`.
pub(super) fn now_ms() -> i64 {
    rsm_counters::now_ms() as i64
}

/// What an entry costs besides its bytes while it is buffered: the entry in the channel,
/// its request (with its argument vector) in a queue and in flight, its track, and the
/// allocator's headers. Measured, not guessed: with 64 bytes here, a full sync of 1 M small
/// keys held ~3.5 times the writer's 64 MiB bound (725 MiB peak RSS for 3 shards; the heap
/// profile showed ~800 bytes per buffered entry of ~200 bytes of data).
const ENTRY_OVERHEAD: usize = 600;
/// Per argument: its `Bytes` handle and its allocation's header.
const ARG_OVERHEAD: usize = 48;

/// Bytes an entry occupies while buffered, for the writer's byte bound.
pub(crate) fn entry_size(e: &Entry) -> usize {
    let args = |a: &[bytes::Bytes]| a.iter().map(|x| x.len() + ARG_OVERHEAD).sum::<usize>();
    ENTRY_OVERHEAD
        + match e {
            Entry::Restore { key, payload, .. } => key.len() + payload.len() + 3 * ARG_OVERHEAD,
            Entry::BigKeyStart { key, .. } => key.len(),
            Entry::BigKeyChunk(els) => super::commands::elements_size(els),
            Entry::BigKeyEnd => 0,
            Entry::Command(c) => args(&c.args),
            Entry::Transaction(cs) => cs.iter().map(|c| args(&c.args)).sum(),
        }
}

/// The ends of the channels on which the writer's helper tasks report. Unbounded: each
/// carries at most what the writer sent or started (replies to requests in flight, one
/// connect per node, one refresh), so the bound is the in-flight window's.
pub(super) struct Reports {
    pub replies: mpsc::UnboundedSender<Reply>,
    pub connects: mpsc::UnboundedSender<Connected>,
    pub refreshes: mpsc::UnboundedSender<Option<SlotMap>>,
}

/// The receiving ends of [`Reports`], read only by the loop in [`Pipeline::run`].
struct Inbox {
    replies: mpsc::UnboundedReceiver<Reply>,
    connects: mpsc::UnboundedReceiver<Connected>,
    refreshes: mpsc::UnboundedReceiver<Option<SlotMap>>,
}

/// The writer task's state. The fields other files of the task read (the slot-map
/// refresh, [`super::refresh`]) are `pub`; the rest is this file's alone.
pub(super) struct Pipeline {
    pub opts: WriterOptions,
    pub info: TargetInfo,
    shared: Arc<Shared>,
    admitter: Admitter,
    /// Every node the writer has known, by index; a node is never removed (see
    /// [`node_at`]), so an index in a request or in `owner` stays valid.
    pub nodes: Vec<Node>,
    /// `owner[slot]`: index into `nodes`.
    pub owner: Vec<Option<usize>>,
    /// The masters, indices into `nodes`: where broadcasts (FLUSHALL, FUNCTION …) go.
    pub masters: Vec<usize>,
    pub reports: Reports,
    /// A slot-map refresh task is running; blocked slots wait for its answer.
    pub refreshing: bool,
    /// The next release of a blocked slot re-reads the map first (after a MOVED, a lost
    /// node, a replica's READONLY, a slot without owner).
    pub refresh_needed: bool,
    /// Requests made from admitted entries, not yet handed to a node.
    ready: VecDeque<Req>,
    /// Blocked slots and their queues, and what of each slot is in flight.
    order: SlotOrder,
    /// One track per entry, in order: the watermark moves over settled ones only.
    tracks: Tracks,
    /// The next request's place in the original order (see [`super::request::Order`]).
    next_seq: u64,
    /// Why the first entry that will not be applied failed (for [`WriteError::NotApplied`]).
    failure: Option<String>,
    /// Callers of `flush`, answered once everything before it is settled.
    flush_waiters: Vec<oneshot::Sender<Result<(), WriteError>>>,
    /// Warnings logged so far, for [`Pipeline::warn_limited`].
    warned: u64,
    /// A failed write's record is on its way to the target.
    recording: bool,
    /// Admission's output, kept so that its buffer is reused entry after entry.
    admission: Admitted,
    /// `--max-ops` is in debt: no new entry is taken before this.
    paused_until: Option<Instant>,
}

/// Start the writer task over a target whose slot map is `slots`. Every node starts as
/// a master with no connection: connects happen when the first request needs one.
pub(crate) fn spawn(
    opts: WriterOptions,
    info: TargetInfo,
    slots: SlotMap,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
) -> JoinHandle<()> {
    let (replies, replies_rx) = mpsc::unbounded_channel();
    let (connects, connects_rx) = mpsc::unbounded_channel();
    let (refreshes, refresh_rx) = mpsc::unbounded_channel();
    let nodes: Vec<Node> = slots.owners().iter().cloned().map(Node::new).collect();
    let admitter = Admitter::new(
        info.clone(),
        opts.engine.filter.clone(),
        opts.engine.target_db,
        opts.engine.conflict,
    );
    let p = Pipeline {
        // The map lists the slots' owners, which are the masters.
        masters: (0..nodes.len()).collect(),
        nodes,
        owner: slots.slot_owners().collect(),
        opts,
        info,
        shared,
        admitter,
        reports: Reports {
            replies,
            connects,
            refreshes,
        },
        refreshing: false,
        refresh_needed: false,
        ready: VecDeque::new(),
        order: SlotOrder::new(),
        tracks: Tracks::default(),
        next_seq: 0,
        failure: None,
        flush_waiters: Vec::new(),
        warned: 0,
        recording: false,
        admission: Admitted::default(),
        paused_until: None,
    };
    let inbox = Inbox {
        replies: replies_rx,
        connects: connects_rx,
        refreshes: refresh_rx,
    };
    tokio::spawn(p.run(rx, inbox))
}

/// The loop, the entries and the tracks.
impl Pipeline {
    /// The writer task: until the input ends and everything is settled (or the writer has
    /// failed and nothing is in flight any more).
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut inbox: Inbox) {
        let mut input_open = true;
        loop {
            // Older work first: released slot queues, then what waits at nodes, then new
            // requests, so that the room in each node's window goes to the oldest.
            self.drain_blocked();
            self.drain_all_waiting();
            self.pump();
            // One write to each node's socket task per pass, not one per request.
            for n in &mut self.nodes {
                n.flush();
            }
            if self.order.nothing_blocked() {
                self.shared.clear_stall();
            }
            self.answer_flushes();
            // A failed writer still waits for what is in flight: those replies settle
            // their tracks, and the target may have applied them.
            if !input_open && (self.idle() || (self.fatal() && self.nothing_in_flight())) {
                break;
            }
            let paused = self.paused_until.filter(|t| Instant::now() < *t);
            self.paused_until = paused;
            let accept = input_open && self.ready.is_empty() && paused.is_none();
            let wake = self.order.next_wake();
            tokio::select! {
                // Replies first: they free window room and bytes, which everything else
                // waits for; taking input first would only queue more behind them.
                biased;
                Some((node, gen, r)) = inbox.replies.recv() => {
                    self.on_reply(node, gen, r);
                    // Take every reply already there before sending more.
                    while let Ok((node, gen, r)) = inbox.replies.try_recv() {
                        self.on_reply(node, gen, r);
                    }
                }
                Some((node, r)) = inbox.connects.recv() => self.on_connected(node, r),
                Some(map) = inbox.refreshes.recv() => self.on_refreshed(map),
                msg = rx.recv(), if accept => match msg {
                    None => input_open = false,
                    Some(m) => input_open = self.take_messages(m, &mut rx),
                },
                _ = sleep_until(wake), if wake.is_some() => {}
                _ = sleep_until(paused), if paused.is_some() => {}
            }
        }
        // Ends the socket tasks: nothing more is read, and the target sees a clean close.
        for n in &mut self.nodes {
            n.disconnect();
        }
        self.answer_flushes();
    }

    /// Handle `first` and what is already queued behind it, up to a window's worth.
    /// Returns whether the input is still open.
    fn take_messages(&mut self, first: Msg, rx: &mut mpsc::Receiver<Msg>) -> bool {
        // A window's worth per pass: enough to fill the nodes' windows in one flush,
        // not so much that replies wait behind admission. A `--max-ops` pause stops
        // taking at once.
        self.on_msg(first);
        while self.ready.len() < self.opts.max_inflight && self.paused_until.is_none() {
            match rx.try_recv() {
                Ok(m) => self.on_msg(m),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// The writer has failed (a poisoned lock counts as failed: nothing it guarded can be
    /// trusted any more).
    pub(super) fn fatal(&self) -> bool {
        self.shared
            .fatal
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(true)
    }

    /// Stop the writer with `e`. The first error wins: it is the cause, later ones are
    /// its consequences.
    pub(super) fn set_fatal(&mut self, e: WriteError) {
        tracing::error!(error = %e, "writer stopped");
        if let Ok(mut f) = self.shared.fatal.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        // Nothing more will be sent: give up what waits, so its bytes are released.
        let mut given_up: Vec<Req> = self.ready.drain(..).collect();
        given_up.extend(self.order.drain());
        for n in &mut self.nodes {
            given_up.extend(n.waiting.drain(..));
        }
        for r in given_up {
            self.complete(r.track, false);
        }
    }

    /// Stop without waiting for the target: what is queued or in flight counts as not
    /// applied, so the watermark stays before it (used by a stop while the target stalls).
    fn abandon(&mut self) {
        if !self.fatal() {
            self.set_fatal(WriteError::Abandoned);
        }
        // In flight too: a stop must not wait for a node that stalls. Their replies, if
        // any, come on a connection now closed and are ignored.
        for node in 0..self.nodes.len() {
            for req in node_at_mut(&mut self.nodes, node).take_in_flight() {
                self.order.answered(req.slot);
                self.complete(req.track, false);
            }
        }
    }

    /// No request of any node awaits its reply.
    fn nothing_in_flight(&self) -> bool {
        self.nodes.iter().all(|n| n.nothing_in_flight())
    }

    /// Nothing queued anywhere, nothing in flight, every track settled: a flush is done.
    fn idle(&self) -> bool {
        self.ready.is_empty()
            && self.order.nothing_blocked()
            && self.nodes.iter().all(|n| n.waiting.is_empty())
            && self.nothing_in_flight()
            && self.tracks.is_empty()
    }

    /// Answer the callers of `flush` once it is true that everything given before is
    /// settled (or the writer failed: then with its error).
    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let fatal = self.shared.fatal();
        // A failed write's record (see `record_failed`) must be in before the
        // caller moves on.
        let recording = self.recording && !self.nothing_in_flight();
        if (fatal.is_none() && !self.idle()) || recording {
            return;
        }
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(match &fatal {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            });
        }
    }

    /// One message of the handle, in the order given: a policy or progress change applies
    /// to the entries after it, never to those before.
    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Flush(w) => self.flush_waiters.push(w),
            Msg::Abandon => self.abandon(),
            Msg::Conflict(policy) => self.admitter.conflict = policy,
            Msg::Progress(p) => self.admitter.set_progress(p),
            // A source offset with nothing to write (a PING, a filtered command): a track
            // of its own lets the watermark move over it in its place, not before.
            Msg::Mark(offset) => {
                let track = self.tracks.open(None);
                if let Some(t) = self.tracks.get_mut(track) {
                    t.offset = offset;
                }
                self.complete(track, true);
            }
            Msg::Entry(e, permit) => {
                // Held open by admission, so a request answered at once cannot settle it.
                let track = self.tracks.open(permit);
                // Entries still in the channel when the writer failed are not written:
                // their tracks settle at once, without an offset, so the watermark does
                // not pass them.
                if !self.fatal() {
                    let mut admitted = std::mem::take(&mut self.admission);
                    self.admitter
                        .admit(e, &now_ms, self.tracks.skipped(), &mut admitted);
                    self.pace(&admitted);
                    self.admitted(track, &mut admitted);
                    self.admission = admitted;
                }
                self.complete(track, true);
            }
        }
    }

    /// Count the commands an admitted entry will send against `--max-ops`. Re-sends after
    /// a redirect or a lost connection are not counted again: they are rare, and the
    /// limit is about the load the migration puts on the target, not its retries.
    fn pace(&mut self, a: &Admitted) {
        let Some(limit) = self.opts.engine.limits.target_ops.as_deref() else {
            return;
        };
        let ops: usize = a
            .reqs
            .iter()
            .map(|p| {
                let copies = match p.dest {
                    Dest::Masters => self.masters.len(),
                    Dest::Slot | Dest::AnyMaster => 1,
                };
                p.body.replies() * copies
            })
            .sum();
        if let Some(wait) = limit.take(ops as u64) {
            self.paused_until = Some(Instant::now() + wait);
        }
    }

    /// Record what admission decided for `track` and queue its requests.
    fn admitted(&mut self, track: u64, a: &mut Admitted) {
        self.count(&a.tally);
        if a.counts_command {
            let t = &a.tally;
            let failed =
                t.failed_db + t.failed_untranslatable + t.failed_cross_slot + t.failed_rejected;
            self.count_command_failures(failed);
        }
        if let Some(t) = self.tracks.get_mut(track) {
            t.counts_key = a.counts_key;
            t.counts_command = a.counts_command;
            t.offset = a.offset;
            t.group = a.group;
        }
        // Admission refused (part of) the entry: the track fails before any of its
        // requests is sent, so no reply can settle it as applied.
        if let Some(why) = a.failure.take() {
            self.fail_track(track, why);
        }
        for p in a.reqs.drain(..) {
            match p.dest {
                Dest::Slot => self.queue_req(track, p, None),
                // Pinned to the first master, always the same one: such requests keep
                // their order among themselves as if they had a slot.
                Dest::AnyMaster => {
                    let pin = self.masters.first().copied();
                    self.queue_req(track, p, pin);
                }
                // A broadcast's copies share the track: the entry is applied once every
                // master has it.
                Dest::Masters => {
                    for m in self.masters.clone() {
                        let copy = Planned {
                            body: p.body.clone(),
                            ..p
                        };
                        self.queue_req(track, copy, Some(m));
                    }
                }
            }
        }
    }

    /// Make a request of `p`, next in the original order, and queue it for its node.
    fn queue_req(&mut self, track: u64, p: Planned, pin: Option<usize>) {
        let order = (self.next_seq, 0);
        self.next_seq += 1;
        let mut req = Req::new(order, track, p.slot, p.db, p.body, p.group);
        req.pin = pin;
        req.offset = p.offset;
        req.marked = p.marked;
        self.tracks.add(track, 1);
        self.ready.push_back(req);
    }

    /// Add admission's counts to the shared counters: the writer task is their one owner.
    fn count(&self, t: &Tally) {
        let s = &self.shared.stats;
        // Skipped when zero: most entries count nothing, and an atomic add is not free.
        let add = |c: &std::sync::atomic::AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&s.filtered, t.filtered);
        add(&s.expired, t.expired);
        add(&s.failed_db, t.failed_db);
        add(&s.failed_untranslatable, t.failed_untranslatable);
        add(&s.failed_cross_slot, t.failed_cross_slot);
        add(&s.failed_rejected, t.failed_rejected);
        add(&s.transcoded, t.transcoded);
        add(&s.reencoded, t.reencoded);
        add(&s.lost_field_ttls, t.lost.field_ttls);
        add(&s.lost_stream_counters, t.lost.stream_counters);
        add(&s.lost_consumer_times, t.lost.consumer_times);
        add(&s.lost_consumers, t.lost.consumers);
        add(&s.lost_pending_entries, t.lost.pending_entries);
        add(&s.expired_fields, t.expired_fields);
        add(&s.already_applied, t.already_applied);
    }

    /// Failures just counted that belong to a replicated command, not a snapshot key: the
    /// status shows them under commands.
    fn count_command_failures(&self, n: u64) {
        if n > 0 {
            self.shared
                .stats
                .commands_failed
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Whether `track` is a replicated command (or transaction) rather than snapshot data.
    fn is_command(&mut self, track: u64) -> bool {
        self.tracks.get_mut(track).is_some_and(|t| t.counts_command)
    }

    /// The entry will not be (wholly) applied; `why` is kept for the writer's error.
    fn fail_track(&mut self, track: u64, why: String) {
        self.failure.get_or_insert(why);
        self.tracks.fail(track);
    }

    /// The target refused a write for good: counted, logged (rate-limited), the entry
    /// failed.
    fn reject(&mut self, track: u64, what: &str, key: &[u8], message: &str) {
        self.shared
            .stats
            .failed_rejected
            .fetch_add(1, Ordering::Relaxed);
        if self.is_command(track) {
            self.count_command_failures(1);
        }
        self.warn_limited(|| {
            tracing::warn!(command = what, key = %super::show_key(key), error = message, "target refused a write");
        });
        self.fail_track(
            track,
            format!(
                "the target refused {what} {}: {message}",
                super::show_key(key)
            ),
        );
    }

    /// Log the first twenty times, then at powers of two: a dead node fails every request
    /// in flight at once.
    fn warn_limited(&mut self, f: impl FnOnce()) {
        self.warned += 1;
        if self.warned <= 20 || self.warned.is_power_of_two() {
            f();
        }
    }

    /// One request of `track` answered (`ok`: applied); settle what can be settled.
    fn complete(&mut self, track: u64, ok: bool) {
        let Settled {
            keys,
            commands,
            applied,
            failed,
        } = self.tracks.complete(track, ok);
        // Counted when an entry settles, not per reply: an entry of several requests is
        // one key or one command to the operator.
        let stats = &self.shared.stats;
        if keys > 0 {
            stats.keys_written.fetch_add(keys, Ordering::Relaxed);
        }
        if commands > 0 {
            stats
                .commands_written
                .fetch_add(commands, Ordering::Relaxed);
        }
        // Release: whoever reads the watermark (the ACK to the source, the progress
        // markers) must also see the counters of the writes it covers.
        if let Some(offset) = applied {
            self.shared.applied_offset.store(offset, Ordering::Release);
        }
        // A sync stops at the first write it lost: what follows may depend on it, and
        // the watermark cannot pass it anyway.
        if failed && self.opts.stop_on_failure && !self.fatal() {
            let reason = self
                .failure
                .clone()
                .unwrap_or_else(|| "a write was not applied".into());
            self.set_fatal(WriteError::NotApplied { reason });
        }
    }
}

/// Sending: requests to their nodes, in per-slot order. Where a request goes is
/// [`route`]'s decision; the node queues, connects and windows are the helpers'
/// ([`super::dispatch`]).
impl Pipeline {
    /// The endpoint a request is (or would be) sent to, for messages.
    fn endpoint_of(&self, req: &Req) -> String {
        node_for(&self.owner, req)
            .map(|n| node_at(&self.nodes, n).endpoint.to_string())
            .unwrap_or_default()
    }

    /// Per node, so that one slow node fills only its own window: the others go on.
    #[inline]
    fn window(&self) -> Window {
        Window {
            reqs: self.opts.max_inflight,
            bytes: self.opts.max_inflight_bytes,
        }
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
        // Once per request: the facts are a few loads (a blocked-slot lookup only while
        // some slot is blocked), and the decision a jump.
        let facts = RouteFacts {
            check: matches!(req.body, Body::Check { .. }),
            skipped: req
                .group
                .is_some_and(|g| self.tracks.skipped().contains(&g)),
            // Asked, rather than handing the request to the slot order and getting it
            // back when the slot is not blocked: at a million requests a second, each
            // move of a request is a copy of a couple hundred bytes.
            blocked: self.order.is_blocked(req.slot),
            doubt: req.doubt,
            node: node_for(&self.owner, &req),
        };
        let node = match route(facts) {
            Route::Node(node) => node,
            Route::Skip => {
                self.complete(req.track, true);
                return true;
            }
            Route::Queue => {
                self.order.queue_blocked(req);
                return true;
            }
            Route::CheckFirst => {
                self.check_first(req);
                return true;
            }
            Route::Unassigned => {
                self.retry(req, Cause::Unassigned);
                return true;
            }
        };
        // While a failed connect's back-off lasts, the request does not wait at the node
        // (it could wait forever): it is retried in its slot's order, under the retry
        // deadline, like any failure.
        if let Some(why) = self.connect_if_needed(node) {
            self.retry(req, Cause::Connection(why));
            return true;
        }
        if must_wait(&self.nodes, node, from, self.window()) {
            wait_at(&mut self.nodes, node, req, from == Some(node));
            return false;
        }
        let gate = matches!(req.body, Body::Gate { .. });
        let slot = req.slot;
        let select = self.info.selects_db();
        // Sent from here, not from a function of its own: the request is moved once per
        // hop, and each move is a copy of a couple hundred bytes.
        send(
            &mut self.order,
            node_at_mut(&mut self.nodes, node),
            req,
            select,
        );
        // A gate holds its slot until it answers: whether the key's pieces are written at
        // all depends on it.
        if gate {
            self.block_slot(slot, Instant::now(), true);
        }
        true
    }

    /// Connect to `node` unless it is connected or connecting: connected on first use, so
    /// a node the writer never needs is never dialled (the request waits at the node
    /// meanwhile, in order). `Some(why)` while the node's connect back-off lasts.
    fn connect_if_needed(&mut self, node: usize) -> Option<String> {
        let n = node_at(&self.nodes, node);
        if n.connected() || n.connecting {
            return None;
        }
        if let Some(why) = down(n, Instant::now()) {
            return Some(why.to_string());
        }
        self.start_connect(node);
        None
    }

    /// A write whose fate is unknown: hold its slot and read the slot's marker first. The
    /// write and every later one of the slot wait behind the check; its answer settles
    /// those the marker covers ([`Action::SettleDoubt`]).
    fn check_first(&mut self, req: Req) {
        let check = marker_check(&req);
        self.block_slot(req.slot, Instant::now(), true);
        self.order.queue_blocked(req);
        self.tracks.add(check.track, 1);
        self.dispatch(check, None);
    }

    /// [`block_slot`] over this writer's order and nodes.
    fn block_slot(&mut self, slot: usize, not_before: Instant, gate: bool) {
        block_slot(&mut self.order, &mut self.nodes, slot, not_before, gate);
    }

    /// Send what waits for `node` while its window has room.
    fn drain_waiting(&mut self, node: usize) {
        let n = node_at_mut(&mut self.nodes, node);
        if !n.connected() {
            // Lost since: the head goes through routing again, which reconnects (or, while
            // the node is down, queues it for a retry in its slot's order).
            if !n.connecting {
                if let Some(req) = n.waiting.pop_front() {
                    self.dispatch(req, Some(node));
                }
            }
            return;
        }
        let w = self.window();
        while node_at(&self.nodes, node).connected()
            && !node_at(&self.nodes, node).window_full(w.reqs, w.bytes)
        {
            let Some(req) = node_at_mut(&mut self.nodes, node).waiting.pop_front() else {
                break;
            };
            // It had to wait (back at the head): the ones behind it keep their place.
            if !self.dispatch(req, Some(node)) {
                break;
            }
        }
    }

    /// [`drain_waiting`](Self::drain_waiting) for every node with a queue: room opens
    /// when replies arrive, and a connect may have finished.
    fn drain_all_waiting(&mut self) {
        for node in 0..self.nodes.len() {
            if !node_at(&self.nodes, node).waiting.is_empty() {
                self.drain_waiting(node);
            }
        }
    }

    /// Every waiting request through routing again, in their original order (after the
    /// slot map changed, a request may belong to another node now).
    pub(super) fn requeue_waiting(&mut self) {
        for req in take_all_waiting(&mut self.nodes) {
            self.dispatch(req, None);
        }
    }

    /// Re-send the queues of blocked slots whose pause is over and that have nothing in
    /// flight any more. While a slot-map refresh runs, they wait for its answer: sent on
    /// the old map they would likely be redirected again.
    fn drain_blocked(&mut self) {
        if self.order.nothing_blocked() || self.fatal() {
            return;
        }
        let now = Instant::now();
        if !self.order.any_due(now) {
            return;
        }
        if self.refresh_needed && (self.info.cluster || self.has_other_nodes()) {
            self.start_refresh();
        }
        if self.refreshing {
            return;
        }
        let nodes = &self.nodes;
        let due = self
            .order
            .take_due(now, |slot| !waits_anywhere(nodes, slot));
        for (slot, mut queue) in due {
            // One node at a time per slot: after a redirect, some of a slot's requests go
            // with ASKING to one node and the rest to its owner; were both in flight at
            // once, a later write could be applied before an earlier one that fails.
            let first = queue.front().and_then(|r| node_for(&self.owner, r));
            while let Some(req) = queue.pop_front() {
                if node_for(&self.owner, &req) != first {
                    queue.push_front(req);
                    break;
                }
                self.dispatch(req, None);
            }
            if !queue.is_empty() {
                self.order.requeue(slot, queue, now);
            }
        }
    }

    /// Connect to `node` in a task of its own (see [`spawn_connect`]): a node that
    /// accepts TCP but never answers must not hold up the others. The result comes back
    /// through [`Pipeline::on_connected`].
    fn start_connect(&mut self, node: usize) {
        let n = node_at_mut(&mut self.nodes, node);
        n.connecting = true;
        spawn_connect(
            node,
            n.endpoint.clone(),
            self.opts.connect.clone(),
            self.reports.connects.clone(),
        );
    }

    /// A connect finished: send what waited for it, or hand the waiting requests to
    /// their slots' order for a retry.
    fn on_connected(&mut self, node: usize, r: Result<Connection, ClientError>) {
        // A standalone target named with other nodes may have had its replica promoted.
        let may_move = self.info.cluster || self.has_other_nodes();
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.connecting = false;
        match r {
            // A fresh connection: its back-off starts over.
            Ok(conn) => {
                n.connect_failures = 0;
                n.down = None;
                n.attach(node, conn, &self.reports.replies);
                self.drain_waiting(node);
            }
            Err(e) => {
                // A master that refuses connections may have been replaced by its replica:
                // only a fresh slot map (of a standalone target: the node that is master
                // now) finds the new owner (the writer retries forever).
                self.refresh_needed |= may_move;
                n.connect_failures += 1;
                let why = e.to_string();
                // Back off connects, not only requests: every request routed to the node
                // meanwhile is retried in its slot's order instead of reconnecting.
                n.down = Some((Instant::now() + backoff(n.connect_failures), why.clone()));
                let waiting: Vec<Req> = n.waiting.drain(..).collect();
                for req in waiting {
                    self.retry(req, Cause::Connection(why.clone()));
                }
            }
        }
    }

    /// The index of the node at `ep`, added if new.
    pub(super) fn node_index(&mut self, ep: rsm_client::Endpoint) -> usize {
        node_index(&mut self.nodes, ep)
    }
}

/// Replies: each is judged ([`judge`]), decided ([`decide`]) and carried out here. The
/// decision is a value, so this part holds no rule of its own beyond the order in which
/// an action's effects happen (counter, then log, then the slot order, then the track).
impl Pipeline {
    /// A reply frame from `node`'s connection number `gen`, or the connection's end.
    fn on_reply(&mut self, node: usize, gen: u64, r: Result<Frame, ClientError>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        // A reply of an older connection of the node: its requests were taken back when
        // that connection was lost, and are re-sent in order already.
        if n.gen != gen {
            return;
        }
        let frame = match r {
            Ok(f) => f,
            // A read or write error ends the connection, whatever was in flight.
            Err(e) => return self.node_lost(node, e.to_string()),
        };
        self.shared.stats.answers.fetch_add(1, Ordering::Relaxed);
        if !n.answered {
            // Recorded before the watermark can move over this reply's write: read after
            // the watermark, the list names every node that acknowledged a write it
            // covers (whose replicas must hold it before the offset counts as durable).
            n.answered = true;
            if let Ok(mut a) = self.shared.answered_by.lock() {
                a.push(n.endpoint.clone());
            }
        }
        match n.on_frame(frame) {
            Answer::Nothing => {}
            // Every request on this connection would go to the wrong db: stop, naming it.
            Answer::SelectRefused { db, message } => {
                let endpoint = n.endpoint.to_string();
                self.set_fatal(WriteError::Select {
                    endpoint,
                    db,
                    message,
                });
            }
            Answer::Done {
                req,
                last,
                first_err,
            } => {
                // Answered, whatever the verdict: a blocked slot waits for nothing of it
                // in flight before it is released.
                self.order.answered(req.slot);
                let verdict = judge(&req.body, &last, first_err);
                let action = self.choose(node, &req, Outcome::Reply(verdict));
                self.apply(node, req, action);
            }
        }
    }

    /// What [`decide`] makes of `outcome` for `req` (sent to `node`). The request is only
    /// borrowed: moved once, into [`apply`](Self::apply), as it would be without a
    /// decision in between.
    // Always inlined: once per reply, and a call costs more than the decision.
    #[inline(always)]
    fn choose(&self, node: usize, req: &Req, outcome: Outcome) -> Action {
        // Copies and borrows, read fresh for each reply: the conflict policy changes
        // with `Msg::Conflict` and a second merged db, the slot map with a refresh.
        let writer = WriterFacts {
            conflict: self.admitter.conflict,
            slots: self.owner.len(),
            node: &node_at(&self.nodes, node).endpoint,
            sync_id: self.admitter.progress().map(|p| p.sync_id),
        };
        decide(outcome, &ReqFacts::of(req), &writer)
    }

    /// Carry out what [`decide`] chose for `req`, answered by (or lost with) `node`.
    #[inline]
    fn apply(&mut self, node: usize, mut req: Req, action: Action) {
        let stats = &self.shared.stats;
        match action {
            // The common case first: once per reply, a counter and the track.
            Action::Applied => {
                stats.bytes.fetch_add(req.bytes as u64, Ordering::Relaxed);
                self.complete(req.track, true);
            }
            Action::ClaimLost => {
                stats.bytes.fetch_add(req.bytes as u64, Ordering::Relaxed);
                self.claim_lost(&req);
            }
            Action::GateOpen | Action::GateSkip | Action::GateConflict => {
                stats.bytes.fetch_add(req.bytes as u64, Ordering::Relaxed);
                self.gate_answered(&req, &action);
                self.complete(req.track, true);
            }
            Action::KeySkipped => self.key_skipped(&req),
            Action::KeyConflict => {
                let key = conflict_key(&req.body);
                let e = key_conflict(self.admitter.merged_dbs(), key, req.db);
                // The reason first: completing a failed entry stops the writer too.
                self.set_fatal(e);
                self.complete(req.track, false);
            }
            Action::NotApplied => self.complete(req.track, false),
            Action::FallBack { delete_first } => self.fall_back(req, delete_first),
            Action::Moved { owner } => {
                stats.moved.fetch_add(1, Ordering::Relaxed);
                self.moved(node, req, owner);
            }
            Action::Ask { to } => {
                stats.ask.fetch_add(1, Ordering::Relaxed);
                req.ask = to.map(|ep| self.node_index(ep));
                let asked = &node_at(&self.nodes, node).endpoint;
                tracing::debug!(slot = req.slot, node = %asked, "ASK: re-sending with ASKING");
                self.retry(req, Cause::Redirect);
            }
            Action::Retry {
                cause,
                refresh_map,
                doubt,
            } => {
                self.refresh_needed |= refresh_map;
                req.doubt |= doubt;
                self.retry(req, cause);
            }
            Action::Refuse { text } => self.refuse(&req, &text),
            Action::PartlyFailed {
                record,
                name,
                key,
                message,
            } => {
                if record {
                    self.record_failed(node, &req);
                }
                self.reject(req.track, &name, &key, &message);
                self.complete(req.track, false);
            }
            Action::SettleDoubt { applied } => self.settle_doubt(&req, applied),
        }
    }

    /// [`Action::ClaimLost`]: counted and said, since nothing in the target will show it.
    fn claim_lost(&mut self, req: &Req) {
        self.shared
            .stats
            .lost_pending_entries
            .fetch_add(1, Ordering::Relaxed);
        let key = match &req.body {
            Body::Claim(args) => args.get(1).map_or(&[][..], |k| &k[..]),
            _ => &[],
        };
        tracing::warn!(key = %show_key(key), "a pending entry whose message was deleted cannot be recreated with commands");
        self.complete(req.track, true);
    }

    /// [`Action::KeySkipped`]: the target keeps its own value, so the key is settled but
    /// not counted as written (the status would claim a copy that did not happen).
    fn key_skipped(&mut self, req: &Req) {
        self.shared
            .stats
            .skipped_existing
            .fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.tracks.get_mut(req.track) {
            t.counts_key = false;
        }
        self.complete(req.track, true);
    }

    /// [`Action::Refuse`]: counted and logged as a refused write, the entry failed.
    fn refuse(&mut self, req: &Req, text: &str) {
        let (what, key) = req.body.describe();
        self.reject(req.track, &what, &key, text);
        // A refused piece fails its whole key: the others would leave a partial value.
        if let Some(g) = req.group {
            self.tracks.fail_group(g);
        }
        self.complete(req.track, false);
    }

    /// A marked transaction ran but its command failed: record the exception in the slot
    /// (see [`failed_record`]), so that a resume applies it once the operator has removed
    /// the cause. Without slot markers there is nothing to record against.
    fn record_failed(&mut self, node: usize, req: &Req) {
        let Some(p) = self.admitter.progress() else {
            return;
        };
        let record = failed_record(req, node, p.sync_id);
        self.tracks.add(req.track, 1);
        // Flushes wait for it (see `answer_flushes`): the caller must not move on before
        // the record is in.
        self.recording = true;
        let select = self.info.selects_db();
        send(
            &mut self.order,
            node_at_mut(&mut self.nodes, node),
            record,
            select,
        );
    }

    /// `MOVED`: correct our map to the new owner (unless the redirect is not believed),
    /// re-read the whole map before the next retry (a MOVED rarely comes alone: a reshard
    /// or failover moved more than this slot), and re-send.
    fn moved(&mut self, node: usize, mut req: Req, owner: NewOwner) {
        let asked = node_at(&self.nodes, node).endpoint.clone();
        match owner {
            NewOwner::Misrouted(redirected) => {
                tracing::error!(request_slot = req.slot, redirected, node = %asked, "MOVED names another slot than the request's: routing by a fresh slot map");
            }
            NewOwner::Node(ep) => {
                let to = self.node_index(ep);
                if let Some(o) = self.owner.get_mut(req.slot) {
                    *o = Some(to);
                }
            }
            NewOwner::Unknown => {}
        }
        self.refresh_needed = true;
        // An ASK target of an earlier try is stale: the migration it was for has ended.
        req.ask = None;
        tracing::debug!(slot = req.slot, node = %asked, "MOVED: re-sending to the new owner");
        self.retry(req, Cause::Redirect);
    }

    /// The slot's marker was read: the writes in doubt it covers are in the target
    /// already and are settled without being sent again (a stream command such as INCR
    /// must not be applied twice); the others go now, in order.
    fn settle_doubt(&mut self, req: &Req, applied: u64) {
        let done = self.order.settle_doubt(req.slot, applied);
        tracing::info!(
            slot = req.slot,
            applied,
            already_in_target = done.len(),
            "checked the slot's marker after a lost connection"
        );
        for track in done {
            self.shared
                .stats
                .already_applied
                .fetch_add(1, Ordering::Relaxed);
            self.complete(track, true);
        }
        self.order.gate_answered(req.slot, Instant::now());
        self.complete(req.track, true);
    }

    /// A gate answered ([`Action::GateOpen`], [`Action::GateSkip`] or
    /// [`Action::GateConflict`]): the slot may go on, and the key's pieces are written,
    /// dropped, or the writer stops.
    fn gate_answered(&mut self, req: &Req, action: &Action) {
        self.order.gate_answered(req.slot, Instant::now());
        match action {
            Action::GateConflict => {
                let key = conflict_key(&req.body);
                self.fail_track(req.track, format!("key {} already exists", show_key(key)));
                let e = key_conflict(self.admitter.merged_dbs(), key, req.db);
                self.set_fatal(e);
            }
            Action::GateSkip => {
                self.shared
                    .stats
                    .skipped_existing
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(g) = req.group {
                    self.tracks.skip_group(g);
                    // Drop what is queued for it; later pieces are dropped on arrival
                    // ([`Route::Skip`]).
                    for t in self.order.drop_group(req.slot, g) {
                        self.complete(t, true);
                    }
                }
            }
            _ => {}
        }
    }

    /// The target refused a RESTORE payload: write the value as commands at the same place
    /// in the slot's order (`delete_first`: a `DEL` ahead of them).
    fn fall_back(&mut self, req: Req, delete_first: bool) {
        // Only a RESTORE with its key and payload is judged `BadPayload`.
        let Body::Restore { args, expire } = &req.body else {
            return;
        };
        let Some((key, payload)) = restore_parts(args) else {
            return;
        };
        let rdb_type = payload.first().copied().unwrap_or(0);
        // Said once per type: the values of that type that follow are rebuilt at once,
        // without a refused RESTORE each.
        if self.admitter.refuse_type(rdb_type) {
            tracing::info!(rdb_type, target_rdb = %self.info.rdb_version, "target cannot RESTORE this type: rebuilding such values with commands");
        }
        // The rebuild is admission's work done late: counted the same way (expired
        // fields, lost TTLs, …).
        let mut tally = Default::default();
        let rebuilt = self
            .admitter
            .rebuild(key, payload, *expire, now_ms(), &mut tally);
        self.count(&tally);
        let mut cmds = match rebuilt {
            Ok(cmds) => cmds,
            // Not decodable, or a module value: neither way can write it.
            Err(why) => {
                self.fail_track(req.track, why);
                return self.complete(req.track, false);
            }
        };
        if delete_first {
            cmds.insert(0, vec![Bytes::from_static(b"DEL"), key.clone()]);
        }
        self.tracks.add(req.track, cmds.len() as u32);
        // Blocked so that the slot's later writes wait behind the pieces.
        self.block_slot(req.slot, Instant::now(), false);
        for piece in rebuilt_pieces(&req, cmds) {
            self.order.queue_blocked(piece);
        }
        // The RESTORE itself is replaced by the commands.
        self.complete(req.track, true);
    }

    /// Queue a failed request for another try in its slot's order, or give it up
    /// ([`again`] decides which, and when).
    fn retry(&mut self, mut req: Req, cause: Cause) {
        let now = Instant::now();
        let policy = RetryPolicy {
            timeout: self.opts.retry_timeout,
            forever: self.opts.retry_forever,
        };
        let then = again(&ReqFacts::of(&req), &cause, policy, now);
        if let Again::CheckAfter { delay } = then {
            // The check is settled; its slot stays blocked for `delay`, then the writes
            // in doubt are routed again and make a new check.
            self.order.gate_answered(req.slot, now + delay);
            return self.complete(req.track, true);
        }
        // What `again` assumed: one more attempt, the deadline counted from the first.
        req.attempts += 1;
        req.first_failure.get_or_insert(now);
        // A redirect is the cluster working as designed, not a failure: not a retry.
        if !matches!(cause, Cause::Redirect) {
            self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        // The status shows why the writer is stalled until the slot goes again.
        match &cause {
            Cause::Server(m) | Cause::Connection(m) => self.shared.set_stall(m),
            Cause::Unassigned => self
                .shared
                .set_stall(&format!("slot {} has no owner in the target", req.slot)),
            Cause::Redirect => {}
        }
        let Again::After {
            delay,
            warn,
            refresh_map,
        } = then
        else {
            return self.give_up(req, cause);
        };
        if warn {
            match &cause {
                Cause::Server(m) | Cause::Connection(m) => {
                    let (slot, attempts) = (req.slot, req.attempts);
                    self.warn_limited(|| {
                        tracing::warn!(slot, attempts, delay_ms = delay.as_millis() as u64, error = %m, "write failed, retrying in order after a pause");
                    });
                }
                Cause::Unassigned => {
                    tracing::warn!(slot = req.slot, "slot has no owner in the target; waiting");
                }
                Cause::Redirect => {}
            }
        }
        self.refresh_needed |= refresh_map;
        // The failed write waits in its slot's queue at its place in the original order,
        // and nothing later of the slot overtakes it.
        self.block_slot(req.slot, now + delay, false);
        self.order.queue_blocked(req);
    }

    /// The request's retry deadline has passed: a lost node stops the writer, anything
    /// else fails the entry (counted).
    fn give_up(&mut self, req: Req, cause: Cause) {
        let secs = self.opts.retry_timeout.as_secs();
        // The node stayed unreachable for the whole deadline: every write for it would
        // fail the same way, so the writer stops with one error naming the node.
        if let Cause::Connection(cause) = cause {
            let endpoint = self.endpoint_of(&req);
            self.set_fatal(WriteError::TargetLost {
                endpoint,
                secs,
                cause,
            });
            return self.complete(req.track, false);
        }
        let why = gave_up_why(cause, req.slot);
        let (what, key) = req.body.describe();
        tracing::warn!(command = %what, key = %show_key(&key), secs, error = %why, "gave up a write after retrying");
        // Only the first failure is the writer's error: the ones after it follow from it.
        self.failure.get_or_insert_with(|| {
            format!(
                "gave up {what} {} after {secs}s of retries: {why}",
                show_key(&key)
            )
        });
        self.shared
            .stats
            .failed_retries
            .fetch_add(1, Ordering::Relaxed);
        if self.is_command(req.track) {
            self.count_command_failures(1);
        }
        // Its key's other pieces fail with it: a partial value is no value.
        if let Some(g) = req.group {
            self.tracks.fail_group(g);
        }
        self.complete(req.track, false);
    }

    /// A connection ended: what was in flight is re-sent in order (its fate is unknown,
    /// see [`Outcome::Lost`]), and in a cluster the slot map is re-read, since the node
    /// may have been replaced by its replica.
    fn node_lost(&mut self, node: usize, cause: String) {
        let n = node_at_mut(&mut self.nodes, node);
        tracing::warn!(node = %n.endpoint, error = %cause, in_flight = n.in_flight(), "lost the connection to a target node; re-sending in order");
        for req in n.take_in_flight() {
            self.order.answered(req.slot);
            let action = self.choose(node, &req, Outcome::Lost(cause.clone()));
            self.apply(node, req, action);
        }
        self.refresh_needed = self.info.cluster;
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
