//! Handing requests to their nodes: routing by the slot map, the per-node waiting queues,
//! connects, and re-sending blocked slots in order.

use std::time::Instant;

use rsm_client::{ClientError, Connection, Endpoint};

use super::node::{spawn_connect, Node};
use super::order::backoff;
use super::pipeline::Pipeline;
use super::replies::Cause;
use super::request::{Body, Req};

impl Pipeline {
    fn node_for(&self, req: &Req) -> Option<usize> {
        req.ask
            .or(req.pin)
            .or_else(|| self.owner.get(req.slot).copied().flatten())
    }

    pub(super) fn endpoint_of(&self, req: &Req) -> String {
        self.node_for(req)
            .map(|n| node_at(&self.nodes, n).endpoint.to_string())
            .unwrap_or_default()
    }

    fn window_full(&self, node: usize) -> bool {
        node_at(&self.nodes, node).window_full(self.opts.max_inflight, self.opts.max_inflight_bytes)
    }

    /// Hand every request made from admitted entries to its node (sent, or waiting there).
    pub(super) fn pump(&mut self) {
        while let Some(req) = self.ready.pop_front() {
            self.dispatch(req, None);
        }
    }

    /// Send now if its node is connected and has room; otherwise the request waits in
    /// its node's queue (or, when its slot is blocked, in the slot's queue), in order.
    /// `from`: the node whose queue it came from (it goes back to the front there).
    /// Returns false when the request had to wait.
    pub(super) fn dispatch(&mut self, req: Req, from: Option<usize>) -> bool {
        if req
            .group
            .is_some_and(|g| self.tracks.skipped().contains(&g))
        {
            self.complete(req.track, true);
            return true;
        }
        // A marker check goes ahead of its blocked slot: the slot waits for it. (Asked
        // first rather than moving the request in and out of the slot order: at a million
        // requests a second, each move of a request is a copy of a couple hundred bytes.)
        if !matches!(req.body, Body::Check { .. }) {
            if self.order.is_blocked(req.slot) {
                self.order.queue_blocked(req);
                return true;
            }
            if req.doubt {
                return self.check_first(req);
            }
        }
        let Some(node) = self.node_for(&req) else {
            self.retry(req, Cause::Unassigned);
            return true;
        };
        let n = node_at(&self.nodes, node);
        if !n.connected() && !n.connecting {
            // One connect attempt per back-off period, not one per queued request.
            let now = Instant::now();
            if let Some((_, why)) = n.down.as_ref().filter(|(until, _)| now < *until) {
                let why = why.clone();
                self.retry(req, Cause::Connection(why));
                return true;
            }
            self.start_connect(node);
        }
        let n = node_at(&self.nodes, node);
        let must_wait = !n.connected()
            || (from != Some(node) && !n.waiting.is_empty())
            || self.window_full(node);
        if must_wait {
            let n = node_at_mut(&mut self.nodes, node);
            if from == Some(node) {
                n.waiting.push_front(req);
            } else {
                n.waiting.push_back(req);
            }
            return false;
        }
        let gate = matches!(req.body, Body::Gate { .. });
        let slot = req.slot;
        self.order.sent(slot);
        node_at_mut(&mut self.nodes, node).encode(req, !self.info.cluster);
        if gate {
            self.block_slot(slot, Instant::now(), true);
        }
        true
    }

    /// A write whose fate is unknown: hold its slot and read the slot's marker first.
    fn check_first(&mut self, req: Req) -> bool {
        let (slot, track, db, order, attempts) =
            (req.slot, req.track, req.db, req.order, req.attempts);
        self.block_slot(slot, Instant::now(), true);
        self.order.queue_blocked(req);
        let mut check = Req::new(order, track, slot, db, Body::Check { slot }, None);
        check.attempts = attempts;
        self.tracks.add(track, 1);
        self.dispatch(check, None);
        true
    }

    /// Block `slot`. A new block takes the slot's requests that wait in node queues: they
    /// were made before the ones that will block behind them, so they must be re-sent in
    /// the queue's order, not ahead of it.
    pub(super) fn block_slot(&mut self, slot: usize, not_before: Instant, gate: bool) {
        let nodes = &mut self.nodes;
        self.order.block(slot, not_before, gate, || {
            nodes
                .iter_mut()
                .flat_map(|n| n.take_waiting_of(slot))
                .collect()
        });
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
        while node_at(&self.nodes, node).connected() && !self.window_full(node) {
            let Some(req) = node_at_mut(&mut self.nodes, node).waiting.pop_front() else {
                break;
            };
            if !self.dispatch(req, Some(node)) {
                break;
            }
        }
    }

    pub(super) fn drain_all_waiting(&mut self) {
        for node in 0..self.nodes.len() {
            if !node_at(&self.nodes, node).waiting.is_empty() {
                self.drain_waiting(node);
            }
        }
    }

    /// Every waiting request through routing again, in their original order (after the
    /// slot map changed, a request may belong to another node now).
    pub(super) fn requeue_waiting(&mut self) {
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

    /// Re-send the queues of blocked slots whose pause is over and that have nothing in
    /// flight any more. While a slot-map refresh runs, they wait for its answer.
    pub(super) fn drain_blocked(&mut self) {
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
            .take_due(now, |slot| !nodes.iter().any(|n| n.waits_for(slot)));
        for (slot, mut queue) in due {
            // One node at a time per slot: after a redirect, some of a slot's requests go
            // with ASKING to one node and the rest to its owner.
            let first = queue.front().and_then(|r| self.node_for(r));
            while let Some(req) = queue.pop_front() {
                if self.node_for(&req) != first {
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

    pub(super) fn on_connected(&mut self, node: usize, r: Result<Connection, ClientError>) {
        // A standalone target named with other nodes may have had its replica promoted.
        let may_move = self.info.cluster || self.has_other_nodes();
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.connecting = false;
        match r {
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
                n.down = Some((Instant::now() + backoff(n.connect_failures), why.clone()));
                let waiting: Vec<Req> = n.waiting.drain(..).collect();
                for req in waiting {
                    self.retry(req, Cause::Connection(why.clone()));
                }
            }
        }
    }

    /// The index of the node at `ep`, added if new.
    pub(super) fn node_index(&mut self, ep: Endpoint) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.endpoint == ep) {
            return i;
        }
        self.nodes.push(Node::new(ep));
        self.nodes.len() - 1
    }
}

/// The node at an index [`Pipeline::node_index`] handed out. Nodes are only ever added
/// (a dead master keeps its place, idle), so such an index stays valid for the life of
/// the writer; a free function so that it borrows `nodes`, not the whole pipeline.
#[allow(clippy::indexing_slicing)] // why: indices come from node_index; nodes are never removed
pub(super) fn node_at(nodes: &[Node], i: usize) -> &Node {
    &nodes[i]
}

/// [`node_at`], to change it.
#[allow(clippy::indexing_slicing)] // why: as for `node_at`
pub(super) fn node_at_mut(nodes: &mut [Node], i: usize) -> &mut Node {
    &mut nodes[i]
}
