//! Choosing which node of a shard to replicate from.
//!
//! Pure: the caller gathers each replica's replication status (`INFO replication` on the
//! replica: `master_link_status` and `slave_repl_offset`) and the master's offset, and gets back
//! a node plus, when it had to fall back to the master, a [`SelectWarning`] to log.
//! `Role::Master` always picks the master; `Role::Slave` picks the connected, healthy replica
//! with the smallest lag, so the source master is spared the full sync.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::nodes::{Node, NodeId};
use crate::topology::Shard;

/// Which node of each shard to sync from (`--sync-role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    /// A replica (called `slave` in Redis' own vocabulary).
    Slave,
}

/// A `--sync-role` value that is neither `master` nor `slave`/`replica`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown role {0:?} (expected `master` or `slave`)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s.to_ascii_lowercase().as_str() {
            "master" | "primary" => Ok(Role::Master),
            "slave" | "replica" => Ok(Role::Slave),
            _ => Err(UnknownRole(s.to_string())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Slave => "slave",
        })
    }
}

/// A replica's replication status, as read by the caller from the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// `master_link_status:up`.
    pub link_up: bool,
    /// `slave_repl_offset` (or `master_repl_offset` on the replica).
    pub offset: u64,
}

/// Why the selection fell back to the master although a replica was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectWarning {
    /// The shard has no replica at all.
    NoReplicas { master: NodeId, addr: String },
    /// Replicas exist but none is healthy and connected (or its status is unknown).
    NoHealthyReplica {
        master: NodeId,
        addr: String,
        replicas: usize,
    },
}

impl fmt::Display for SelectWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectWarning::NoReplicas { master, addr } => write!(
                f,
                "shard of master {master} ({addr}) has no replica; syncing from the master"
            ),
            SelectWarning::NoHealthyReplica {
                master,
                addr,
                replicas,
            } => write!(
                f,
                "none of the {replicas} replicas of master {master} ({addr}) is connected and \
                 healthy; syncing from the master"
            ),
        }
    }
}

/// The chosen node of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection<'a> {
    pub node: &'a Node,
    /// For a replica: bytes behind the master offset given by the caller.
    pub lag: Option<u64>,
    /// Set when a replica was asked for but the master was chosen.
    pub warning: Option<SelectWarning>,
}

/// Picks the node to sync from.
///
/// `statuses[i]` is the status of `shard.replicas[i]` (`None` = could not be read); missing
/// trailing entries count as `None`. A replica qualifies if its link is up and it is not
/// flagged `fail`, `fail?`, `handshake` or `noaddr`. Among those, the smallest lag
/// (`master_offset - offset`, 0 if ahead) wins; ties go to the earlier replica in the shard.
pub fn select_node<'a>(
    shard: &'a Shard,
    role: Role,
    master_offset: u64,
    statuses: &[Option<ReplicaStatus>],
) -> Selection<'a> {
    let master = Selection {
        node: &shard.master,
        lag: None,
        warning: None,
    };
    if role == Role::Master {
        return master;
    }
    let best = shard
        .replicas
        .iter()
        .zip(statuses.iter().copied().chain(std::iter::repeat(None)))
        .filter_map(|(node, status)| {
            let st = status?;
            let f = &node.flags;
            let healthy = st.link_up && !f.failing() && !f.handshake && !f.noaddr;
            healthy.then(|| (master_offset.saturating_sub(st.offset), node))
        })
        // min_by_key keeps the first of equal keys: ties go to the earlier replica.
        .min_by_key(|(lag, _)| *lag);
    match best {
        Some((lag, node)) => Selection {
            node,
            lag: Some(lag),
            warning: None,
        },
        None => {
            let id = shard.master.id.clone();
            let addr = shard.master.addr.to_string();
            let warning = if shard.replicas.is_empty() {
                SelectWarning::NoReplicas { master: id, addr }
            } else {
                SelectWarning::NoHealthyReplica {
                    master: id,
                    addr,
                    replicas: shard.replicas.len(),
                }
            };
            Selection {
                warning: Some(warning),
                ..master
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::parse_cluster_nodes;
    use crate::topology::Topology;

    const M: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const R1: &str = "1111111111111111111111111111111111111111";
    const R2: &str = "2222222222222222222222222222222222222222";
    const R3: &str = "3333333333333333333333333333333333333333";

    fn shard(r3_flags: &str) -> Shard {
        let text = format!(
            "{M} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n\
             {R1} 127.0.0.1:7001@17001 slave {M} 0 1 1 connected\n\
             {R2} 127.0.0.1:7002@17002 slave {M} 0 1 1 connected\n\
             {R3} 127.0.0.1:7003@17003 {r3_flags} {M} 0 1 1 connected\n"
        );
        let mut t = Topology::from_nodes(parse_cluster_nodes(&text).unwrap());
        t.shards.remove(0)
    }

    fn up(offset: u64) -> Option<ReplicaStatus> {
        Some(ReplicaStatus {
            link_up: true,
            offset,
        })
    }

    #[test]
    fn master_role_picks_master() {
        let s = shard("slave");
        let sel = select_node(&s, Role::Master, 100, &[up(100), up(100), up(100)]);
        assert_eq!(sel.node.id.as_str(), M);
        assert_eq!(sel.warning, None);
    }

    #[test]
    fn smallest_lag_wins_and_ties_go_first() {
        let s = shard("slave");
        let sel = select_node(&s, Role::Slave, 1000, &[up(900), up(990), up(950)]);
        assert_eq!(sel.node.id.as_str(), R2);
        assert_eq!(sel.lag, Some(10));
        let sel = select_node(&s, Role::Slave, 1000, &[up(1000), up(1000), up(1200)]);
        assert_eq!(sel.node.id.as_str(), R1);
        assert_eq!(sel.lag, Some(0));
    }

    #[test]
    fn down_unknown_and_failing_replicas_are_skipped() {
        let s = shard("slave,fail?");
        let down = Some(ReplicaStatus {
            link_up: false,
            offset: 1000,
        });
        // R1 down, R2 unknown, R3 flagged fail?
        let sel = select_node(&s, Role::Slave, 1000, &[down, None, up(1000)]);
        assert_eq!(sel.node.id.as_str(), M);
        match sel.warning {
            Some(ref w @ SelectWarning::NoHealthyReplica { replicas: 3, .. }) => {
                assert!(w.to_string().contains("none of the 3 replicas"), "{w}");
            }
            other => panic!("{other:?}"),
        }
        // Missing statuses count as unknown.
        assert!(select_node(&s, Role::Slave, 0, &[]).warning.is_some());
    }

    #[test]
    fn no_replicas_warns() {
        let t = Topology::standalone("127.0.0.1", 6379);
        let sel = select_node(&t.shards[0], Role::Slave, 0, &[]);
        assert!(matches!(
            sel.warning,
            Some(SelectWarning::NoReplicas { .. })
        ));
    }

    #[test]
    fn roles_parse() {
        assert_eq!("MASTER".parse::<Role>(), Ok(Role::Master));
        assert_eq!("replica".parse::<Role>(), Ok(Role::Slave));
        assert_eq!("slave".parse::<Role>().unwrap().to_string(), "slave");
        assert!("leader".parse::<Role>().is_err());
    }
}
