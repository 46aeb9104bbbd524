//! Pre-flight: are the source and the target the same servers?
//!
//! Syncing a source into itself loops its replication stream back into it (with
//! `--rewrite`, every write is applied again and replicated again), so this must be refused
//! before anything is written. Addresses cannot tell: `127.0.0.1:7000`, `localhost:7000`
//! and a node's announced IP are one process. What a server says about itself can:
//! - `run_id` (`INFO server`) is random per process: equal run ids are one process;
//! - a cluster node's id (`CLUSTER NODES`, `myself`) is unique and every node of a cluster
//!   lists every other: a target node whose id is in the source's list (or a source node in
//!   the target's) belongs to the same cluster, even if it is another node of it.
//!
//! The callers read these facts (I/O stays with them); this module only compares.

/// What one server we reached says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerIdentity {
    /// `HOST:PORT` as it was reached, for the message.
    pub addr: String,
    /// `run_id` of `INFO server`; `None` if the server (a proxy, say) does not tell.
    pub run_id: Option<String>,
    /// The node's own id, for a cluster node.
    pub node_id: Option<String>,
}

/// One side of the sync: the servers reached, and the ids of every node of its cluster
/// as `CLUSTER NODES` lists them (reached or not); empty for a standalone server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    pub servers: Vec<ServerIdentity>,
    pub cluster_node_ids: Vec<String>,
}

impl Deployment {
    /// The reached servers' own ids first, so a message names the node given on the line.
    fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.servers
            .iter()
            .filter_map(|s| s.node_id.as_deref())
            .chain(self.cluster_node_ids.iter().map(String::as_str))
    }
}

/// Why the source and the target are the same servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SameServers {
    #[error("the target {target} is the source node {source_addr} (same run_id {run_id})")]
    SameProcess {
        source_addr: String,
        target: String,
        run_id: String,
    },
    #[error("the target {target} belongs to the source cluster (node {node_id} is in both)")]
    SameCluster { target: String, node_id: String },
}

/// `Some` when the target is (or shares a cluster with) the source. See the module docs.
pub fn same_servers(source: &Deployment, target: &Deployment) -> Option<SameServers> {
    for t in &target.servers {
        let Some(run_id) = t.run_id.as_deref().filter(|r| !r.is_empty()) else {
            continue;
        };
        if let Some(s) = source
            .servers
            .iter()
            .find(|s| s.run_id.as_deref() == Some(run_id))
        {
            return Some(SameServers::SameProcess {
                source_addr: s.addr.clone(),
                target: t.addr.clone(),
                run_id: run_id.to_string(),
            });
        }
    }
    let target_addr = target
        .servers
        .first()
        .map(|s| s.addr.clone())
        .unwrap_or_default();
    target
        .node_ids()
        .find(|id| !id.is_empty() && source.node_ids().any(|s| s == *id))
        .map(|id| SameServers::SameCluster {
            target: target_addr,
            node_id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(addr: &str, run_id: &str, node_id: Option<&str>) -> ServerIdentity {
        ServerIdentity {
            addr: addr.into(),
            run_id: Some(run_id.into()),
            node_id: node_id.map(str::to_string),
        }
    }

    fn cluster(servers: Vec<ServerIdentity>, ids: &[&str]) -> Deployment {
        Deployment {
            servers,
            cluster_node_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn different_servers_pass() {
        let source = cluster(
            vec![
                server("a:1", "r1", Some("n1")),
                server("a:2", "r2", Some("n2")),
            ],
            &["n1", "n2"],
        );
        let target = cluster(vec![server("b:1", "r9", Some("m1"))], &["m1", "m2"]);
        assert_eq!(same_servers(&source, &target), None);
        let standalone = cluster(vec![server("c:1", "r8", None)], &[]);
        assert_eq!(same_servers(&source, &standalone), None);
        assert_eq!(same_servers(&standalone, &target), None);
    }

    #[test]
    fn same_process_under_another_address() {
        let source = cluster(vec![server("127.0.0.1:7000", "r1", None)], &[]);
        let target = cluster(vec![server("localhost:7000", "r1", None)], &[]);
        assert_eq!(
            same_servers(&source, &target).unwrap().to_string(),
            "the target localhost:7000 is the source node 127.0.0.1:7000 (same run_id r1)"
        );
    }

    #[test]
    fn another_node_of_the_source_cluster() {
        // The target node is a replica the source side could not reach: only its id is known.
        let source = cluster(vec![server("a:1", "r1", Some("n1"))], &["n1", "n2", "n3"]);
        let target = cluster(vec![server("a:3", "r3", Some("n3"))], &["n1", "n2", "n3"]);
        assert_eq!(
            same_servers(&source, &target),
            Some(SameServers::SameCluster {
                target: "a:3".into(),
                node_id: "n3".into()
            })
        );
    }

    #[test]
    fn unknown_run_ids_never_match() {
        let mut s = server("a:1", "", None);
        s.run_id = None;
        let source = cluster(vec![s.clone()], &[]);
        let target = cluster(vec![s], &[]);
        assert_eq!(same_servers(&source, &target), None);
    }
}
