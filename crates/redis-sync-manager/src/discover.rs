//! Reading the source: `CLUSTER NODES` from the seed and from every master
//! (migration markers appear only on a node's own line), the shards, the
//! node chosen per shard by `--sync-role`, and the facts the plan prints.
//! Also a first contact with the target, so a wrong address or password
//! fails here, before anything starts, and the check that the target is not
//! the source itself (same process, or a node of the source cluster).

use std::time::Duration;

use rsm_client::{info_field, ClientError, ConnectOptions, Connection, Endpoint};
use rsm_cluster::{
    parse_cluster_nodes, same_servers, select_node, Deployment, Node, PreflightError, Role,
    SameServers, SelectWarning, ServerIdentity, Topology, STANDALONE_NODE_ID,
};
use rsm_command::filter::KeyPrefixes;
use rsm_replica::follow::{node_endpoint, replication_view};

use crate::preflight;

/// One shard of the plan: where to sync from, and what it holds.
#[derive(Debug, Clone)]
pub struct PlannedShard {
    pub serial: usize,
    /// The slots it serves (every slot for a standalone source).
    pub slots: Vec<rsm_cluster::SlotRange>,
    /// The node we will replicate from.
    pub node: Endpoint,
    pub role: Role,
    pub used_memory: Option<u64>,
    pub keys: Option<u64>,
    pub warning: Option<SelectWarning>,
}

/// What we know about the target before starting.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    pub endpoint: Endpoint,
    pub cluster: bool,
    pub version: String,
    /// What the target says about itself, to tell it from the source.
    pub identity: Deployment,
    /// The nodes that take writes: a cluster's masters (from `CLUSTER NODES`), else the
    /// target itself.
    pub masters: Vec<Endpoint>,
}

#[derive(Debug)]
pub struct Plan {
    pub source_is_cluster: bool,
    pub shards: Vec<PlannedShard>,
    pub target: TargetFacts,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("source {endpoint}: CLUSTER NODES could not be read: {message}")]
    Nodes { endpoint: Endpoint, message: String },
    #[error("source cluster is not ready: {0}")]
    Preflight(PreflightError),
    #[error(
        "--targetdb={0} needs a standalone target, but {1} is a cluster (on a cluster only --targetdb=0 is taken)"
    )]
    TargetDbOnCluster(u32, Endpoint),
    #[error("source {0} has no master that serves slots")]
    Empty(Endpoint),
    #[error(
        "--from and --target are the same servers: {0}; a source synced into itself gets its own writes again"
    )]
    SameServers(SameServers),
    #[error("target {endpoint} cannot take writes: {why}; nothing was started")]
    TargetReadOnly { endpoint: Endpoint, why: String },
    #[error(
        "the source holds {total} key(s) under the tool's reserved prefix __rsm: ({named}); the sync keeps its progress records under that name in the target, so these keys would overwrite them or be overwritten. Rename them on the source (or leave them out with --filterkey), then start again; nothing was written"
    )]
    ReservedKeys { total: usize, named: String },
    #[error(
        "the source holds keys in db {dbs} ({nodes}), but {what}; nothing was written. Ways out: {ways}, --filterkey with prefixes that only the target's dbs hold, or {enough}"
    )]
    DbsTargetLacks {
        dbs: String,
        nodes: String,
        what: String,
        ways: String,
        enough: String,
    },
    #[error(
        "the source cluster has cluster-databases {databases}, so its writes may reach db {dbs} at any time, but {what}; nothing was written. Ways out: {ways}, or {enough}"
    )]
    SourceDbsTargetLacks {
        databases: u32,
        dbs: String,
        what: String,
        ways: String,
        enough: String,
    },
}

impl DiscoverError {
    /// A usage error (exit 2): the command line asks for something that must not run.
    pub fn is_usage(&self) -> bool {
        matches!(self, DiscoverError::SameServers(_))
    }
}

pub fn opts(base: &ConnectOptions) -> ConnectOptions {
    let mut o = base.clone();
    o.connect_timeout = Duration::from_secs(5);
    o.io_timeout = Duration::from_secs(10);
    o
}

/// Build the plan: topology, pre-flight checks, node per shard, target check.
pub async fn discover(
    from: &Endpoint,
    source: &ConnectOptions,
    target: &Endpoint,
    target_connect: &ConnectOptions,
    role: Role,
    target_db: Option<u32>,
    filter: &KeyPrefixes,
) -> Result<Plan, DiscoverError> {
    let source_opts = opts(source);
    let mut seed = Connection::connect(from, &source_opts).await?;
    let cluster_info = seed.info("cluster").await?;
    let source_is_cluster = info_field(&cluster_info, "cluster_enabled") == Some("1");

    let topology = if source_is_cluster {
        let seed_nodes = read_nodes(&mut seed).await?;
        let mut views = vec![seed_nodes.clone()];
        for master in seed_nodes
            .iter()
            .filter(|n| n.is_master() && !n.flags.failing() && !n.flags.myself)
        {
            let endpoint = node_endpoint(master, from);
            // A master we cannot reach is reported by the pre-flight check
            // (it will be flagged fail); its own view is only for markers.
            if let Ok(mut conn) = Connection::connect(&endpoint, &source_opts).await {
                if let Ok(view) = read_nodes(&mut conn).await {
                    views.push(view);
                }
            }
        }
        let topology = Topology::from_views(views);
        if let Some(first) = topology.preflight().into_iter().next() {
            return Err(DiscoverError::Preflight(first));
        }
        topology
    } else {
        Topology::standalone(&from.host, from.port)
    };
    if topology.shards.is_empty() {
        return Err(DiscoverError::Empty(from.clone()));
    }
    // Before anything else touches a node: a target that is the source must not even be
    // probed further.
    let target = check_target(target, target_connect).await?;
    let source_side = source_identity(&topology, from, &source_opts).await;
    if let Some(same) = same_servers(&source_side, &target.identity) {
        return Err(DiscoverError::SameServers(same));
    }

    let shards = plan_shards(&topology, from, &source_opts, role).await;

    if let Err(e) = rsm_command::TargetDb::new(target_db).check(target.cluster) {
        return Err(DiscoverError::TargetDbOnCluster(e.0, target.endpoint));
    }
    // Before any PSYNC: each of these used to be found after a fork or after writing.
    let nodes: Vec<Endpoint> = shards.iter().map(|s| s.node.clone()).collect();
    let sides = preflight::Sides {
        source_cluster: source_is_cluster,
        source_nodes: &nodes,
        source: &source_opts,
        target: &target,
        target_connect,
    };
    preflight::check(sides, filter, target_db).await?;
    Ok(Plan {
        source_is_cluster,
        shards,
        target,
    })
}

/// One node per shard, chosen by `--sync-role`, with the facts the plan prints.
pub async fn plan_shards(
    topology: &Topology,
    from: &Endpoint,
    source_opts: &ConnectOptions,
    role: Role,
) -> Vec<PlannedShard> {
    let mut shards = Vec::new();
    for (serial, shard) in topology.shards.iter().enumerate() {
        let (master_offset, statuses) = if role == Role::Slave && !shard.replicas.is_empty() {
            replication_view(shard, from, source_opts).await
        } else {
            (0, Vec::new())
        };
        let selection = select_node(shard, role, master_offset, &statuses);
        let node = node_endpoint(selection.node, from);
        let chosen_role = if selection.node.is_master() {
            Role::Master
        } else {
            Role::Slave
        };
        let (used_memory, keys) = node_size(&node, source_opts).await;
        shards.push(PlannedShard {
            serial,
            slots: shard.slots.clone(),
            node,
            role: chosen_role,
            used_memory,
            keys,
            warning: selection.warning.clone(),
        });
    }
    shards
}

async fn read_nodes(conn: &mut Connection) -> Result<Vec<Node>, DiscoverError> {
    let endpoint = conn.endpoint().clone();
    let text = conn.request_text(&["CLUSTER", "NODES"]).await?;
    parse_cluster_nodes(&text).map_err(|e| DiscoverError::Nodes {
        endpoint,
        message: e.to_string(),
    })
}

/// `used_memory` and the number of keys of a node; `None` where unreadable.
async fn node_size(endpoint: &Endpoint, opts: &ConnectOptions) -> (Option<u64>, Option<u64>) {
    let Ok(mut conn) = Connection::connect(endpoint, opts).await else {
        return (None, None);
    };
    let used = conn
        .info("memory")
        .await
        .ok()
        .and_then(|i| info_field(&i, "used_memory").and_then(|v| v.parse().ok()));
    let keys = conn.info("keyspace").await.ok().map(|info| {
        rsm_client::keyspace(&info)
            .iter()
            .map(|(_, keys)| keys)
            .sum()
    });
    (used, keys)
}

/// Every node of the source topology: its id, and its `run_id` where it answers.
async fn source_identity(topology: &Topology, from: &Endpoint, o: &ConnectOptions) -> Deployment {
    let mut o = o.clone();
    // A node that does not answer quickly is only known by its id, which is enough.
    o.connect_timeout = Duration::from_secs(2);
    let nodes = topology
        .shards
        .iter()
        .flat_map(|s| std::iter::once(&s.master).chain(&s.replicas))
        .chain(&topology.empty_masters)
        .chain(&topology.orphan_replicas);
    let mut side = Deployment::default();
    for node in nodes {
        let endpoint = node_endpoint(node, from);
        let run_id = match Connection::connect(&endpoint, &o).await {
            Ok(mut conn) => conn
                .info("server")
                .await
                .ok()
                .and_then(|i| info_field(&i, "run_id").map(str::to_string)),
            Err(_) => None,
        };
        let id = node.id.as_str();
        let node_id = (id != STANDALONE_NODE_ID).then(|| id.to_string());
        side.cluster_node_ids.extend(node_id.clone());
        side.servers.push(ServerIdentity {
            addr: endpoint.to_string(),
            run_id,
            node_id,
        });
    }
    side
}

async fn check_target(
    target: &Endpoint,
    connect: &ConnectOptions,
) -> Result<TargetFacts, DiscoverError> {
    // Through another node named in --target when the first is down.
    let mut conn = Connection::connect_seed(target, &opts(connect)).await?;
    let reached = conn.endpoint().clone();
    let server = conn.info("server").await?;
    let cluster = conn.info("cluster").await.unwrap_or_default();
    let is_cluster = info_field(&cluster, "cluster_enabled") == Some("1");
    // A proxy may refuse CLUSTER NODES: then only the run_id (if any) tells.
    let nodes = if is_cluster {
        read_nodes(&mut conn).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    // Every node of the target serves as a way in later, when the named ones are gone.
    if let Some(seeds) = &connect.seeds {
        seeds.learn(nodes.iter().map(|n| node_endpoint(n, &reached)));
    }
    let identity = Deployment {
        servers: vec![ServerIdentity {
            addr: reached.to_string(),
            run_id: info_field(&server, "run_id").map(str::to_string),
            node_id: nodes
                .iter()
                .find(|n| n.flags.myself)
                .map(|n| n.id.as_str().to_string()),
        }],
        cluster_node_ids: nodes.iter().map(|n| n.id.as_str().to_string()).collect(),
    };
    let version = rsm_client::ServerVersion::from_info(&server)
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let masters: Vec<Endpoint> = nodes
        .iter()
        .filter(|n| n.is_master() && !n.flags.failing() && !n.slots.is_empty())
        .map(|n| node_endpoint(n, &reached))
        .collect();
    Ok(TargetFacts {
        endpoint: target.clone(),
        cluster: is_cluster,
        version,
        identity,
        // A proxy that refuses CLUSTER NODES is asked as itself.
        masters: if masters.is_empty() {
            vec![reached.clone()]
        } else {
            masters
        },
    })
}
