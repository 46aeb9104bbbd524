//! The nodes through which a deployment can be reached as a whole.
//!
//! A cluster client that knows only the node the operator named is stuck once that node
//! dies for good, even though the cluster promoted its replica and goes on. So every
//! connection made to reach "the target" (to read its slot map, its progress records, its
//! facts) tries the nodes named on the command line and every node learnt since from
//! `CLUSTER NODES` or a slot map, in the order of the last one that answered first.
//! Connections to one given node (a master that owns a slot) never go elsewhere.

use std::sync::{Arc, Mutex, PoisonError};

use crate::{ClientError, ConnectOptions, Connection, Endpoint};

/// How many learnt nodes are kept: every node of a large cluster is more than needed to
/// find one that answers, and the list is walked on every such connect.
const MAX_SEEDS: usize = 64;

/// Shared by every clone: a node learnt by one shard's writer serves the others.
#[derive(Debug, Clone, Default)]
pub struct Seeds(Arc<Mutex<Vec<Endpoint>>>);

impl Seeds {
    pub fn new(named: Vec<Endpoint>) -> Seeds {
        let seeds = Seeds::default();
        seeds.learn(named);
        seeds
    }

    /// Add nodes not known yet, after those already known.
    pub fn learn(&self, nodes: impl IntoIterator<Item = Endpoint>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for node in nodes {
            if list.len() >= MAX_SEEDS {
                break;
            }
            if !list.contains(&node) {
                list.push(node);
            }
        }
    }

    /// The nodes in the order they are tried.
    pub fn list(&self) -> Vec<Endpoint> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `node` answered: try it first next time.
    fn answered(&self, node: &Endpoint) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = list.iter().position(|n| n == node) {
            let n = list.remove(at);
            list.insert(0, n);
        }
    }
}

/// Errors that say "this node is not there", where another node may be: not a wrong
/// password or a TLS mismatch, which every node would answer alike.
fn node_is_gone(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Refused { .. }
            | ClientError::Unreachable { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::Timeout { .. }
            | ClientError::Closed { .. }
            | ClientError::Io { .. }
    )
}

impl Connection {
    /// A connection to the deployment `first` belongs to: `first` if it answers, else the
    /// first of `opts.seeds` that does (the one that answered last is tried first). The
    /// error is `first`'s when no node answers.
    pub async fn connect_seed(
        first: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let Some(seeds) = &opts.seeds else {
            return Connection::connect(first, opts).await;
        };
        let mut candidates = seeds.list();
        if !candidates.contains(first) {
            candidates.insert(0, first.clone());
        }
        let mut first_error = None;
        for node in &candidates {
            match Connection::connect(node, opts).await {
                Ok(conn) => {
                    seeds.answered(node);
                    if node != first {
                        tracing::debug!(named = %first, answered = %node, "reached the deployment through another of its nodes");
                    }
                    return Ok(conn);
                }
                Err(e) if node_is_gone(&e) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Connection::connect(first, opts).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new("127.0.0.1", port)
    }

    #[test]
    fn learns_each_node_once_and_tries_the_last_that_answered_first() {
        let seeds = Seeds::new(vec![ep(1), ep(2)]);
        seeds.learn([ep(2), ep(3)]);
        assert_eq!(seeds.list(), vec![ep(1), ep(2), ep(3)]);
        seeds.answered(&ep(3));
        assert_eq!(seeds.list(), vec![ep(3), ep(1), ep(2)]);
        // Clones share the list.
        let other = seeds.clone();
        other.learn([ep(4)]);
        assert_eq!(seeds.list().len(), 4);
    }

    #[test]
    fn keeps_a_bounded_list() {
        let seeds = Seeds::default();
        seeds.learn((1..=200).map(ep));
        assert_eq!(seeds.list().len(), MAX_SEEDS);
    }
}
