//! Re-reading the target's slot map, in a task of its own.
//!
//! Every known node (and the node the operator named) is asked at once; the first answer
//! wins. A node that accepts connections but never answers holds up nothing, and a master
//! that died is replaced in the map as soon as any other node knows its successor.

use std::time::Duration;

use rsm_client::{ConnectOptions, Connection, Endpoint};
use tokio::sync::mpsc;

use super::pipeline::Pipeline;
use super::target::{read_slot_map, SlotMap};

/// How long one node may take to give its slot map during a refresh.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Start re-reading the slot map in a task of its own, so that the writer task goes on
    /// taking replies from the nodes that still answer. At most one refresh runs at a time:
    /// while one does, blocked slots wait for its answer (see `drain_blocked`), and a second
    /// one would only race it.
    pub(super) fn start_refresh(&mut self) {
        // Asked for, and answered by the refresh started here or the one already running.
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
        // And every other node of the target known: those named after `--target`, and
        // those any writer of this process learnt.
        for other in self.opts.connect.seed_list() {
            if !candidates.contains(&other) {
                candidates.push(other);
            }
        }
        let opts = self.opts.connect.clone();
        let tx = self.reports.refreshes.clone();
        if self.info.cluster {
            tokio::spawn(ask_all(candidates, opts, tx));
        } else {
            // A standalone target has no slot map: its "map" is the node that is master
            // now, which after a failover is the promoted replica, not the node named.
            tokio::spawn(async move {
                let master = super::target::standalone_master(candidates, &opts).await;
                let _ = tx.send(master.map(|c| SlotMap::single(c.endpoint().clone())));
            });
        }
    }

    /// Other nodes of a standalone target to ask which one is master now.
    pub(super) fn has_other_nodes(&self) -> bool {
        self.opts
            .connect
            .seeds
            .as_ref()
            .is_some_and(|s| s.list().iter().any(|n| *n != self.opts.target))
    }

    /// A refresh answered: `None` when no node gave a map. Otherwise the map replaces the
    /// routing (each slot's owner, the masters that broadcasts go to), and the requests
    /// waiting in node queues are routed again, since some may belong to another node now.
    pub(super) fn on_refreshed(&mut self, map: Option<SlotMap>) {
        self.refreshing = false;
        let Some(map) = map else {
            tracing::warn!("could not refresh the target slot map from any node; retrying");
            // Try again on the next due retry, not at once in a loop.
            self.refresh_needed = true;
            return;
        };
        if self.opts.end_on_lost_master && !self.fatal() {
            // A reshard keeps its masters; a failover replaces one. The successor may lack
            // what the old one acknowledged, and nothing here can tell which writes.
            let lost = self
                .masters
                .iter()
                .filter_map(|&i| self.nodes.get(i))
                .find(|n| !map.owners().contains(&n.endpoint))
                .map(|n| n.endpoint.to_string());
            if let Some(endpoint) = lost {
                self.set_fatal(super::WriteError::MasterLost { endpoint });
                return;
            }
        }
        // Remembered for the whole process: once every node named on the command line is
        // gone, a later refresh, connect or durability check still knows whom to ask.
        if let Some(seeds) = &self.opts.connect.seeds {
            seeds.learn(map.owners().iter().cloned());
        }
        // Node indices only grow: a new master gets a new node, and one that left the map
        // keeps its index (idle), since queued requests may still hold it.
        let idx: Vec<usize> = map
            .owners()
            .iter()
            .map(|m| self.node_index(m.clone()))
            .collect();
        self.owner = map
            .slot_owners()
            .map(|o| o.and_then(|i| idx.get(i).copied()))
            .collect();
        self.masters = idx;
        tracing::debug!(
            masters = self.masters.len(),
            "refreshed the target slot map"
        );
        // In their original order: a slot's order must survive its move to another node.
        self.requeue_waiting();
    }
}

/// Ask every candidate at once and report the first map read, or `None` once every one
/// has failed or timed out. In parallel, not in turn: a dead node (a connect that hangs
/// until its timeout) or one that never answers would otherwise hold up the refresh, and
/// with it every blocked slot.
/// A map from a node that has not yet heard of a failover is no harm: the next `MOVED` or
/// failed connect asks again.
async fn ask_all(
    candidates: Vec<Endpoint>,
    opts: ConnectOptions,
    tx: mpsc::UnboundedSender<Option<SlotMap>>,
) {
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
            // Returning drops the JoinSet, which aborts the asks still running.
            let _ = tx.send(Some(map));
            return;
        }
    }
    let _ = tx.send(None);
}
