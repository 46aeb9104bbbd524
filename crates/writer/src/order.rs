//! Per-slot order across failures.
//!
//! When a request fails with something worth retrying (MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
//! LOADING, BUSY, OOM, a lost connection) its slot is *blocked*: the failed request and
//! every later request of that slot wait in a queue sorted by their original order. Once
//! no request of the slot is in flight any more and the back-off has passed, the queue is
//! re-sent in order. Later requests of the slot that were already in flight fail the same
//! way (the node is serial), so they join the queue at their place. A *gate* (EXISTS
//! before a chunked key under the fail/skip policies) blocks its slot the same way until
//! it answers.
//!
//! Pure: no I/O, no clock of its own (the caller passes `now`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rsm_cluster::SLOT_COUNT;

use super::request::{Order, Req};

/// The pseudo-slot of keyless requests (FLUSHALL, FUNCTION …): ordered among themselves.
pub(super) const KEYLESS: usize = SLOT_COUNT as usize;

/// A blocked slot: its requests in their original order, and when they may go again.
struct Blocked {
    queue: VecDeque<Req>,
    not_before: Instant,
    /// Waiting for a gate's answer, not for a time.
    gate: bool,
}

/// The blocked slots and how many requests of each slot are in flight.
pub(super) struct SlotOrder {
    /// Few at a time (a failing node's slots, a migrating slot), hence a map.
    blocked: HashMap<usize, Blocked>,
    /// Per slot (and the keyless pseudo-slot): a slot is released only at 0, since a
    /// request still in flight may fail and must then go before the queue.
    in_flight: Vec<u32>,
}

impl SlotOrder {
    pub(super) fn new() -> SlotOrder {
        SlotOrder {
            blocked: HashMap::new(),
            in_flight: vec![0; KEYLESS + 1],
        }
    }

    pub(super) fn nothing_blocked(&self) -> bool {
        self.blocked.is_empty()
    }

    pub(super) fn sent(&mut self, slot: usize) {
        if let Some(n) = self.in_flight.get_mut(slot) {
            *n += 1;
        }
    }

    pub(super) fn answered(&mut self, slot: usize) {
        if let Some(n) = self.in_flight.get_mut(slot) {
            *n = n.saturating_sub(1);
        }
    }

    /// `slot` is blocked: its requests wait in its queue.
    pub(super) fn is_blocked(&self, slot: usize) -> bool {
        // Almost always nothing is blocked: no hashing then, once per request.
        !self.blocked.is_empty() && self.blocked.contains_key(&slot)
    }

    /// Queue `req` behind its slot's block; gives it back when the slot is not blocked.
    pub(super) fn queue(&mut self, req: Req) -> Option<Req> {
        match self.blocked.get_mut(&req.slot) {
            Some(bl) => {
                insert_sorted(&mut bl.queue, req);
                None
            }
            None => Some(req),
        }
    }

    /// Block `slot` until `not_before` at least (or until a gate answers) and queue `req`
    /// there. `earlier`: requests of the slot taken from elsewhere (node queues) when the
    /// block is new; they were made before the ones that will queue behind them.
    pub(super) fn block(
        &mut self,
        slot: usize,
        not_before: Instant,
        gate: bool,
        earlier: impl FnOnce() -> Vec<Req>,
    ) {
        let bl = self.blocked.entry(slot).or_insert_with(|| {
            let mut queue = VecDeque::new();
            for r in earlier() {
                insert_sorted(&mut queue, r);
            }
            Blocked {
                queue,
                not_before,
                gate,
            }
        });
        bl.not_before = bl.not_before.max(not_before);
    }

    pub(super) fn queue_blocked(&mut self, req: Req) {
        if let Some(req) = self.queue(req) {
            // Only called right after `block`: cannot happen; keep the request anyway.
            self.block(req.slot, Instant::now(), false, Vec::new);
            let _ = self.queue(req);
        }
    }

    /// A gate of `slot` answered: its queue may go from `not_before` on.
    pub(super) fn gate_answered(&mut self, slot: usize, not_before: Instant) {
        if let Some(bl) = self.blocked.get_mut(&slot) {
            bl.gate = false;
            bl.not_before = not_before;
        }
    }

    /// The slot's marker says the target has its stream commands up to `applied`: take
    /// those out of the queue (their tracks are returned) and send the rest without doubt.
    pub(super) fn settle_doubt(&mut self, slot: usize, applied: u64) -> Vec<u64> {
        let mut done = Vec::new();
        if let Some(bl) = self.blocked.get_mut(&slot) {
            bl.queue.retain_mut(|r| {
                if r.offset > 0 && r.offset <= applied {
                    done.push(r.track);
                    return false;
                }
                r.doubt = false;
                true
            });
        }
        done
    }

    /// Drop the queued requests of `group` in `slot`; returns their tracks.
    pub(super) fn drop_group(&mut self, slot: usize, group: u64) -> Vec<u64> {
        let mut dropped = Vec::new();
        if let Some(bl) = self.blocked.get_mut(&slot) {
            bl.queue.retain(|r| {
                let mine = r.group == Some(group);
                if mine {
                    dropped.push(r.track);
                }
                !mine
            });
        }
        dropped
    }

    /// No request of `slot` is in flight.
    fn idle(&self, slot: usize) -> bool {
        self.in_flight.get(slot).is_none_or(|n| *n == 0)
    }

    fn due(&self, slot: usize, bl: &Blocked, now: Instant) -> bool {
        !bl.gate && bl.not_before <= now && self.idle(slot)
    }

    /// The earliest time a blocked slot may go (ignoring slots with requests in flight or
    /// a pending gate: their answer wakes the writer).
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.blocked
            .iter()
            .filter(|(s, b)| !b.gate && self.idle(**s))
            .map(|(_, b)| b.not_before)
            .min()
    }

    /// Are any blocked slots due?
    pub(super) fn any_due(&self, now: Instant) -> bool {
        self.blocked.iter().any(|(s, bl)| self.due(*s, bl, now))
    }

    /// Unblock the due slots for which `idle(slot)` holds (no request of theirs waits at
    /// a node): their queues, oldest slot first, each in order.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        idle: impl Fn(usize) -> bool,
    ) -> Vec<(usize, VecDeque<Req>)> {
        let mut due: Vec<(usize, Order)> = self
            .blocked
            .iter()
            .filter(|(s, bl)| self.due(**s, bl, now) && idle(**s))
            .map(|(s, bl)| (*s, bl.queue.front().map_or((0, 0), |r| r.order)))
            .collect();
        due.sort_by_key(|(_, o)| *o);
        due.into_iter()
            .filter_map(|(slot, _)| Some((slot, self.blocked.remove(&slot)?.queue)))
            .collect()
    }

    /// Put the rest of a released queue back: it goes once what was sent of the slot is
    /// answered (a slot's requests are never at two nodes at once, or a later one could
    /// be applied before an earlier one that fails).
    pub(super) fn requeue(&mut self, slot: usize, rest: VecDeque<Req>, now: Instant) {
        let bl = self.blocked.entry(slot).or_insert_with(|| Blocked {
            queue: VecDeque::new(),
            not_before: now,
            gate: false,
        });
        for r in rest {
            insert_sorted(&mut bl.queue, r);
        }
    }

    /// Every queued request (the writer stops).
    pub(super) fn drain(&mut self) -> Vec<Req> {
        self.blocked.drain().flat_map(|(_, b)| b.queue).collect()
    }
}

/// Insert in order; almost always at the back.
pub(super) fn insert_sorted(q: &mut VecDeque<Req>, req: Req) {
    let pos = q.partition_point(|r| r.order <= req.order);
    q.insert(pos, req);
}

/// Pause before the next attempt of a request that failed `attempts` times.
pub(super) fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((10u64 << attempts.min(7)).min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Body;

    fn req(seq: u64, slot: usize) -> Req {
        Req::new((seq, 0), seq, slot, 0, Body::Cmd(vec![]), None)
    }

    fn released(o: &mut SlotOrder, now: Instant) -> Vec<Req> {
        o.take_due(now, |_| true)
            .into_iter()
            .flat_map(|(_, q)| q)
            .collect()
    }

    fn orders(v: &[Req]) -> Vec<u64> {
        v.iter().map(|r| r.order.0).collect()
    }

    #[test]
    fn a_blocked_slot_keeps_the_original_order() {
        let now = Instant::now();
        let mut o = SlotOrder::new();
        assert!(o.queue(req(1, 7)).is_some(), "not blocked yet");
        o.block(7, now, false, || vec![req(4, 7), req(2, 7)]);
        o.queue_blocked(req(3, 7));
        o.queue_blocked(req(9, 7));
        assert!(o.queue(req(5, 8)).is_some(), "other slots are not held up");
        assert_eq!(orders(&released(&mut o, now)), vec![2, 3, 4, 9]);
        assert!(o.nothing_blocked());
    }

    #[test]
    fn a_slot_waits_for_its_pause_its_in_flight_requests_and_its_gate() {
        let now = Instant::now();
        let later = now + Duration::from_millis(50);
        let mut o = SlotOrder::new();
        o.block(1, later, false, Vec::new);
        o.queue_blocked(req(1, 1));
        assert!(released(&mut o, now).is_empty(), "pause not over");
        assert_eq!(o.next_wake(), Some(later));
        o.sent(1);
        assert!(
            released(&mut o, later).is_empty(),
            "a request of the slot is in flight"
        );
        assert_eq!(o.next_wake(), None, "its answer wakes the writer");
        o.answered(1);
        o.block(2, now, true, Vec::new);
        o.queue_blocked(req(2, 2));
        assert_eq!(
            orders(&released(&mut o, later)),
            vec![1],
            "the gate holds slot 2"
        );
        o.gate_answered(2, later);
        assert_eq!(orders(&released(&mut o, later)), vec![2]);
    }

    #[test]
    fn due_slots_go_oldest_first() {
        let now = Instant::now();
        let mut o = SlotOrder::new();
        o.block(5, now, false, Vec::new);
        o.queue_blocked(req(10, 5));
        o.block(6, now, false, Vec::new);
        o.queue_blocked(req(3, 6));
        assert_eq!(orders(&released(&mut o, now)), vec![3, 10]);
    }

    #[test]
    fn a_skipped_group_leaves_the_queue() {
        let now = Instant::now();
        let mut o = SlotOrder::new();
        o.block(1, now, true, Vec::new);
        let mut a = req(1, 1);
        a.group = Some(9);
        o.queue_blocked(a);
        o.queue_blocked(req(2, 1));
        assert_eq!(o.drop_group(1, 9), vec![1]);
        o.gate_answered(1, now);
        assert_eq!(orders(&released(&mut o, now)), vec![2]);
    }

    #[test]
    fn a_marker_settles_the_doubtful_writes_it_covers() {
        let now = Instant::now();
        let mut o = SlotOrder::new();
        o.block(3, now, true, Vec::new);
        for (seq, offset) in [(1, 100), (2, 150), (3, 200), (4, 0)] {
            let mut r = req(seq, 3);
            r.offset = offset;
            r.doubt = true;
            o.queue_blocked(r);
        }
        assert_eq!(o.settle_doubt(3, 150), vec![1, 2]);
        o.gate_answered(3, now);
        let left = released(&mut o, now);
        assert_eq!(orders(&left), vec![3, 4]);
        assert!(left.iter().all(|r| !r.doubt));
    }

    #[test]
    fn a_slot_with_requests_waiting_at_a_node_is_not_released_and_a_rest_waits() {
        let now = Instant::now();
        let mut o = SlotOrder::new();
        o.block(4, now, false, Vec::new);
        o.queue_blocked(req(1, 4));
        assert!(
            o.take_due(now, |s| s != 4).is_empty(),
            "one of its requests waits at a node"
        );
        let mut q = o.take_due(now, |_| true);
        assert_eq!(q.len(), 1);
        let (slot, mut queue) = q.remove(0);
        let first = queue.pop_front().unwrap();
        assert_eq!(first.order.0, 1);
        o.requeue(slot, queue, now);
        o.sent(4);
        o.requeue(4, [req(3, 4), req(2, 4)].into_iter().collect(), now);
        assert!(released(&mut o, now).is_empty(), "the first is in flight");
        o.answered(4);
        assert_eq!(orders(&released(&mut o, now)), vec![2, 3]);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(20));
        assert_eq!(backoff(30), Duration::from_millis(1000));
    }
}
