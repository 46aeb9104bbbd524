//! Handing requests to their nodes: the helpers over the node table.
//!
//! Where it sits: the pipeline ([`super::pipeline`]) decides where a request goes
//! ([`super::decide::route`]) and carries the decision out with these. They know the
//! nodes, the slot map and the slot order, never the pipeline: each takes the parts it
//! reads or changes, so the pipeline lends them while it holds others, and nothing here
//! calls back into it.
//!
//! What they keep: per-slot order across node queues. A request waits at its node (for
//! the connection, or room in the window) in the order it was made; when its slot gets
//! blocked, the requests of the slot that wait at nodes move into the slot's queue, in
//! order, because they were made before the ones that will queue behind the block.
//!
//! The small ones are `#[inline]`: they run once per request, from another codegen unit
//! (the writer bench measured a call and a request copy per hop without it).

use std::time::Instant;

use rsm_client::Endpoint;

use super::node::Node;
use super::order::SlotOrder;
use super::request::{Body, Req};

/// The node a request goes to: an ASK target (once), else a node fixed in advance (a
/// broadcast to every master), else its slot's owner in our map.
#[inline]
pub(super) fn node_for(owner: &[Option<usize>], req: &Req) -> Option<usize> {
    req.ask
        .or(req.pin)
        .or_else(|| owner.get(req.slot).copied().flatten())
}

/// The index of the node at `ep`, added if new. Nodes are never removed, so an index
/// handed out here stays valid (see [`node_at`]).
pub(super) fn node_index(nodes: &mut Vec<Node>, ep: Endpoint) -> usize {
    if let Some(i) = nodes.iter().position(|n| n.endpoint == ep) {
        return i;
    }
    nodes.push(Node::new(ep));
    nodes.len() - 1
}

/// The bounds of a node's in-flight window: commands and bytes sent but not answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub reqs: usize,
    pub bytes: usize,
}

/// Whether a request for `node`, taken from the queue of `from` (if any), must wait in
/// the node's queue instead of going now.
#[inline]
pub(super) fn must_wait(nodes: &[Node], node: usize, from: Option<usize>, w: Window) -> bool {
    let n = node_at(nodes, node);
    // Requests already waiting there go first: a newcomer may not overtake them, or a
    // later write of a slot could be sent before an earlier one.
    !n.connected()
        || (from != Some(node) && !n.waiting.is_empty())
        || n.window_full(w.reqs, w.bytes)
}

/// Park `req` in its node's queue. One taken from the head of that same queue goes back
/// to the head, so the queue keeps its order.
#[inline]
pub(super) fn wait_at(nodes: &mut [Node], node: usize, req: Req, from_here: bool) {
    let n = node_at_mut(nodes, node);
    if from_here {
        n.waiting.push_front(req);
    } else {
        n.waiting.push_back(req);
    }
}

/// Put `req` in flight on `node`. `select`: the target has databases (see
/// `TargetInfo::selects_db`), so a change of db is sent first. Counted in its slot first: a blocked slot
/// is released only once nothing of it is in flight.
#[inline]
pub(super) fn send(order: &mut SlotOrder, node: &mut Node, req: Req, select: bool) {
    order.sent(req.slot);
    node.encode(req, select);
}

/// The marker check for a request whose fate is unknown: `GET` of its slot's marker, in
/// its place in the order and counted on its entry (so the entry waits for the answer).
/// It carries the request's attempts, so a check that keeps failing backs off as long.
pub(super) fn marker_check(req: &Req) -> Req {
    let slot = req.slot;
    let mut check = Req::new(
        req.order,
        req.track,
        slot,
        req.db,
        Body::Check { slot },
        None,
    );
    check.attempts = req.attempts;
    check
}

/// Block `slot` until `not_before` (or, `gate`, until a gate or check answers). A new
/// block takes the slot's requests that wait in node queues: they were made before the
/// ones that will block behind them, so they must be re-sent in the queue's order, not
/// ahead of it.
pub(super) fn block_slot(
    order: &mut SlotOrder,
    nodes: &mut [Node],
    slot: usize,
    not_before: Instant,
    gate: bool,
) {
    order.block(slot, not_before, gate, || {
        nodes
            .iter_mut()
            .flat_map(|n| n.take_waiting_of(slot))
            .collect()
    });
}

/// Every request waiting at a node, taken out, in their original order (after the slot
/// map changed, each goes through routing again: it may belong to another node now).
pub(super) fn take_all_waiting(nodes: &mut [Node]) -> Vec<Req> {
    let mut all: Vec<Req> = nodes.iter_mut().flat_map(|n| n.waiting.drain(..)).collect();
    all.sort_by_key(|r| r.order);
    all
}

/// Whether a request of `slot` waits at any node. Such a slot is not released from its
/// block yet: its queue would overtake the waiting request.
pub(super) fn waits_anywhere(nodes: &[Node], slot: usize) -> bool {
    nodes.iter().any(|n| n.waits_for(slot))
}

/// Why `n` is down, while its connect back-off lasts: one connect attempt per back-off
/// period, not one per request routed to it.
#[inline]
pub(super) fn down(n: &Node, now: Instant) -> Option<&str> {
    n.down
        .as_ref()
        .filter(|(until, _)| now < *until)
        .map(|(_, why)| why.as_str())
}

/// The node at an index [`node_index`] handed out. Nodes are only ever added (a dead
/// master keeps its place, idle), so such an index stays valid for the life of the
/// writer; a free function so that it borrows `nodes`, not the whole pipeline.
#[allow(clippy::indexing_slicing)] // why: indices come from node_index; nodes are never removed
#[inline]
pub(super) fn node_at(nodes: &[Node], i: usize) -> &Node {
    &nodes[i]
}

/// [`node_at`], to change it.
#[allow(clippy::indexing_slicing)] // why: as for `node_at`
#[inline]
pub(super) fn node_at_mut(nodes: &mut [Node], i: usize) -> &mut Node {
    &mut nodes[i]
}
