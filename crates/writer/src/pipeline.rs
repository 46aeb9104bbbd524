//! The writer task: the one owner of the writer's state. It takes entries from the handle,
//! has them admitted ([`super::admit`]), hands the requests to their nodes
//! ([`super::dispatch`]), judges the replies ([`super::replies`]) and settles entries into
//! the watermark ([`super::watermark`]).
//!
//! Everything slow runs in tasks of its own that report back on channels: each node
//! connection's reader and socket writer, each connect, each slot-map refresh. This task
//! only decides, so it never waits on one node while another has work.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::admit::{Admitted, Admitter, Dest, Planned, Tally};
use super::dispatch::node_at_mut;
use super::node::{Connected, Node, Reply};
use super::order::SlotOrder;
use super::request::Req;
use super::target::{SlotMap, TargetInfo};
use super::watermark::{Settled, Tracks};
use super::{Msg, Shared, WriteError, WriterOptions};
use rsm_command::entry::Entry;

/// The wall clock as the servers' expiry times count it (signed, as they compare).
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

/// The ends of the channels on which the writer's helper tasks report.
pub(super) struct Reports {
    pub replies: mpsc::UnboundedSender<Reply>,
    pub connects: mpsc::UnboundedSender<Connected>,
    pub refreshes: mpsc::UnboundedSender<Option<SlotMap>>,
}

struct Inbox {
    replies: mpsc::UnboundedReceiver<Reply>,
    connects: mpsc::UnboundedReceiver<Connected>,
    refreshes: mpsc::UnboundedReceiver<Option<SlotMap>>,
}

pub(super) struct Pipeline {
    pub opts: WriterOptions,
    pub info: TargetInfo,
    pub shared: Arc<Shared>,
    pub admitter: Admitter,
    pub nodes: Vec<Node>,
    /// `owner[slot]`: index into `nodes`.
    pub owner: Vec<Option<usize>>,
    pub masters: Vec<usize>,
    pub reports: Reports,
    /// A slot-map refresh task is running; blocked slots wait for its answer.
    pub refreshing: bool,
    pub refresh_needed: bool,
    /// Requests made from admitted entries, not yet handed to a node.
    pub ready: VecDeque<Req>,
    pub order: SlotOrder,
    pub tracks: Tracks,
    next_seq: u64,
    /// Why the first entry that will not be applied failed (for [`WriteError::NotApplied`]).
    pub failure: Option<String>,
    flush_waiters: Vec<oneshot::Sender<Result<(), WriteError>>>,
    warned: u64,
    /// A failed write's record is on its way to the target.
    pub recording: bool,
    /// Admission's output, kept so that its buffer is reused entry after entry.
    admission: Admitted,
    /// `--max-ops` is in debt: no new entry is taken before this.
    paused_until: Option<Instant>,
}

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

impl Pipeline {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut inbox: Inbox) {
        let mut input_open = true;
        loop {
            self.drain_blocked();
            self.drain_all_waiting();
            self.pump();
            for n in &mut self.nodes {
                n.flush();
            }
            if self.order.nothing_blocked() {
                self.shared.clear_stall();
            }
            self.answer_flushes();
            if !input_open && (self.idle() || (self.fatal() && self.nothing_in_flight())) {
                break;
            }
            let paused = self.paused_until.filter(|t| Instant::now() < *t);
            self.paused_until = paused;
            let accept = input_open && self.ready.is_empty() && paused.is_none();
            let wake = self.order.next_wake();
            tokio::select! {
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
        for n in &mut self.nodes {
            n.disconnect();
        }
        self.answer_flushes();
    }

    /// Handle `first` and what is already queued behind it, up to a window's worth.
    /// Returns whether the input is still open.
    fn take_messages(&mut self, first: Msg, rx: &mut mpsc::Receiver<Msg>) -> bool {
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

    pub(super) fn fatal(&self) -> bool {
        self.shared
            .fatal
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(true)
    }

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
        for node in 0..self.nodes.len() {
            for req in node_at_mut(&mut self.nodes, node).take_in_flight() {
                self.order.answered(req.slot);
                self.complete(req.track, false);
            }
        }
    }

    pub(super) fn nothing_in_flight(&self) -> bool {
        self.nodes.iter().all(|n| n.nothing_in_flight())
    }

    fn idle(&self) -> bool {
        self.ready.is_empty()
            && self.order.nothing_blocked()
            && self.nodes.iter().all(|n| n.waiting.is_empty())
            && self.nothing_in_flight()
            && self.tracks.is_empty()
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let fatal = self.shared.fatal();
        // A failed write's record (see `replies::record_failed`) must be in before the
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

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Flush(w) => self.flush_waiters.push(w),
            Msg::Abandon => self.abandon(),
            Msg::Conflict(policy) => self.admitter.conflict = policy,
            Msg::Progress(p) => self.admitter.set_progress(p),
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
        if let Some(why) = a.failure.take() {
            self.fail_track(track, why);
        }
        for p in a.reqs.drain(..) {
            match p.dest {
                Dest::Slot => self.queue_req(track, p, None),
                Dest::AnyMaster => {
                    let pin = self.masters.first().copied();
                    self.queue_req(track, p, pin);
                }
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

    pub(super) fn count(&self, t: &Tally) {
        let s = &self.shared.stats;
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
    pub(super) fn count_command_failures(&self, n: u64) {
        if n > 0 {
            self.shared
                .stats
                .commands_failed
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Whether `track` is a replicated command (or transaction) rather than snapshot data.
    pub(super) fn is_command(&mut self, track: u64) -> bool {
        self.tracks.get_mut(track).is_some_and(|t| t.counts_command)
    }

    /// The entry will not be (wholly) applied; `why` is kept for the writer's error.
    pub(super) fn fail_track(&mut self, track: u64, why: String) {
        self.failure.get_or_insert(why);
        self.tracks.fail(track);
    }

    /// The target refused a write for good: counted, logged (rate-limited), the entry
    /// failed.
    pub(super) fn reject(&mut self, track: u64, what: &str, key: &[u8], message: &str) {
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
    pub(super) fn warn_limited(&mut self, f: impl FnOnce()) {
        self.warned += 1;
        if self.warned <= 20 || self.warned.is_power_of_two() {
            f();
        }
    }

    /// One request of `track` answered (`ok`: applied); settle what can be settled.
    pub(super) fn complete(&mut self, track: u64, ok: bool) {
        let Settled {
            keys,
            commands,
            applied,
            failed,
        } = self.tracks.complete(track, ok);
        let stats = &self.shared.stats;
        if keys > 0 {
            stats.keys_written.fetch_add(keys, Ordering::Relaxed);
        }
        if commands > 0 {
            stats
                .commands_written
                .fetch_add(commands, Ordering::Relaxed);
        }
        if let Some(offset) = applied {
            self.shared.applied_offset.store(offset, Ordering::Release);
        }
        if failed && self.opts.stop_on_failure && !self.fatal() {
            let reason = self
                .failure
                .clone()
                .unwrap_or_else(|| "a write was not applied".into());
            self.set_fatal(WriteError::NotApplied { reason });
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
