//! Following a shard of a source cluster across failovers.
//!
//! A shard is its slots, not a node: when its master fails over (`CLUSTER
//! FAILOVER`, or a killed master and a promoted replica), the node that
//! serves those slots changes. Before every reconnect the engine asks
//! [`Follow::locate`] where the slots live now, reading `CLUSTER NODES` from
//! whichever known node answers (the old node, the seed, every node seen so
//! far), and continues there with `PSYNC replid offset+1`: the promoted
//! replica knows the old history as its `replid2` (PSYNC2) and answers
//! `+CONTINUE <newreplid>`.
//!
//! Only reads `CLUSTER NODES` and `INFO replication`; never changes the source.

use std::collections::BTreeSet;
use std::time::Duration;

use rsm_client::{info_field, ConnectOptions, Connection, Endpoint};
use rsm_cluster::{
    display_ranges, parse_cluster_nodes, select_node, Node, ReplicaStatus, Role, SlotRange,
    Topology,
};

/// At most this many nodes are asked per lookup; a view from any one is enough,
/// more only resolve disagreement right after a failover.
const MAX_VIEWS: usize = 16;

/// What the engine needs to find its shard again.
#[derive(Debug, Clone, Default)]
pub struct FollowOptions {
    /// Which node of the shard to sync from after a move; `None` = the role
    /// of the node the shard started on.
    pub role: Option<Role>,
    /// The shard's slots; `None` = learn them from the first node.
    pub slots: Option<Vec<SlotRange>>,
    /// More nodes to ask (the seed, the other nodes of the plan).
    pub seeds: Vec<Endpoint>,
    /// Set to turn following off (a standalone source, or the operator's choice).
    pub disabled: bool,
}

/// Where the shard's data can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The node to sync from.
    pub node: Endpoint,
    /// Its role: not the preferred one when that could not be had (see `note`).
    pub role: Role,
    /// The master that serves the shard's slots.
    pub master: Endpoint,
    /// Said when the preferred role could not be honoured, or slots split.
    pub note: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FollowError {
    /// No known node answered: where the slots are cannot be told.
    #[error("no node of the source answered CLUSTER NODES (asked {asked})")]
    NoView { asked: String },
    /// No master owns any of the shard's slots.
    #[error("no master serves slots {slots} of this shard")]
    Unserved { slots: String },
    /// The master is failing and no replica has taken over yet: the shard waits.
    #[error("master {master} of slots {slots} is failing; waiting for the source to fail over")]
    MasterFailing { master: String, slots: String },
}

/// The shard's identity in the source and the nodes known to answer about it.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The source side's options: every node learnt is dialled with its credentials and TLS.
    base: ConnectOptions,
    /// The shard's slots, fixed for the run: the shard is them, whichever node serves them.
    slots: Vec<SlotRange>,
    /// The role to sync from after a move.
    role: Role,
    /// Every node seen so far, first seen first: asked in turn when the current one does
    /// not answer (it may be the one that died).
    known: Vec<Endpoint>,
}

/// Short limits for topology reads: a dead node must not hold up the search for a live one.
fn opts(base: &ConnectOptions) -> ConnectOptions {
    let mut o = base.clone();
    o.connect_timeout = Duration::from_secs(2);
    o.io_timeout = Duration::from_secs(5);
    o
}

/// The address to dial for a node; an empty host means "the host you asked".
pub fn node_endpoint(node: &Node, asked: &Endpoint) -> Endpoint {
    let host = if node.addr.host.is_empty() {
        asked.host.clone()
    } else {
        node.addr.host.clone()
    };
    Endpoint::new(host, node.addr.port)
}

/// One node's view of the cluster; `None` when it cannot be had, and another node is asked.
async fn read_view(endpoint: &Endpoint, o: &ConnectOptions) -> Option<Vec<Node>> {
    let mut conn = Connection::connect(endpoint, o).await.ok()?;
    let text = conn.request_text(&["CLUSTER", "NODES"]).await.ok()?;
    parse_cluster_nodes(&text).ok()
}

impl Follow {
    /// Learn the shard from the node it starts on. `Ok(None)`: nothing to
    /// follow (a standalone source, or following turned off). An error means
    /// the node could not be asked; the caller tries again at the next reconnect.
    pub async fn learn(
        source: &Endpoint,
        base: ConnectOptions,
        options: &FollowOptions,
    ) -> Result<Option<Follow>, rsm_client::ClientError> {
        if options.disabled {
            return Ok(None);
        }
        let o = opts(&base);
        let mut conn = match Connection::connect(source, &o).await {
            Ok(conn) => conn,
            // The caller already knows the shard (the manager's plan): a dead
            // first node is exactly the case to follow.
            Err(_) if options.slots.is_some() && options.role.is_some() => {
                let mut follow = Follow {
                    base,
                    slots: options.slots.clone().unwrap_or_default(),
                    role: options.role.unwrap_or(Role::Master),
                    known: Vec::new(),
                };
                follow.remember(std::iter::once(source.clone()).chain(options.seeds.clone()));
                return Ok(Some(follow));
            }
            Err(e) => return Err(e),
        };
        let info = conn.info("cluster").await?;
        // A standalone source is one node: nothing to follow.
        if info_field(&info, "cluster_enabled") != Some("1") {
            return Ok(None);
        }
        let text = conn.request_text(&["CLUSTER", "NODES"]).await?;
        // A view we cannot read gives no shard: the sync goes on with the node as named,
        // without following.
        let Ok(nodes) = parse_cluster_nodes(&text) else {
            return Ok(None);
        };
        let Some(me) = nodes.iter().find(|n| n.flags.myself) else {
            return Ok(None);
        };
        // Started on a replica: the shard is its master's slots.
        let (own_slots, own_role) = if me.is_master() {
            (me.slots.clone(), Role::Master)
        } else {
            let master = nodes.iter().find(|n| Some(&n.id) == me.master_id.as_ref());
            (
                master.map(|m| m.slots.clone()).unwrap_or_default(),
                Role::Slave,
            )
        };
        // The caller's slots (the plan's) win over what this node says of itself.
        let slots = options.slots.clone().unwrap_or(own_slots);
        if slots.is_empty() {
            // A master without slots has no shard to follow.
            return Ok(None);
        }
        let mut known = vec![source.clone()];
        known.extend(options.seeds.iter().cloned());
        // Every node of the view, for later lookups; those in handshake or without an
        // address cannot be dialled.
        known.extend(
            nodes
                .iter()
                .filter(|n| !n.flags.handshake && !n.flags.noaddr)
                .map(|n| node_endpoint(n, source)),
        );
        let mut follow = Follow {
            base,
            slots,
            role: options.role.unwrap_or(own_role),
            known: Vec::new(),
        };
        follow.remember(known);
        Ok(Some(follow))
    }

    /// The shard's slots.
    pub fn slots(&self) -> &[SlotRange] {
        &self.slots
    }

    /// The shard's slots as the operator reads them (`0-5460`).
    pub fn slots_display(&self) -> String {
        display_ranges(&self.slots)
    }

    /// Add the endpoints not known yet, keeping first-seen order.
    fn remember(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let mut seen: BTreeSet<Endpoint> = self.known.iter().cloned().collect();
        for e in endpoints {
            if seen.insert(e.clone()) {
                self.known.push(e);
            }
        }
    }

    /// Where the shard's slots are served now, and which node of that shard
    /// to sync from. `current` is asked first.
    pub async fn locate(&mut self, current: &Endpoint) -> Result<Location, FollowError> {
        let o = opts(&self.base);
        let mut candidates = vec![current.clone()];
        candidates.extend(self.known.iter().filter(|e| *e != current).cloned());
        let mut views = Vec::new();
        let mut learnt = Vec::new();
        for endpoint in candidates.iter().take(MAX_VIEWS) {
            if let Some(view) = read_view(endpoint, &o).await {
                learnt.extend(
                    view.iter()
                        .filter(|n| !n.flags.handshake && !n.flags.noaddr)
                        .map(|n| node_endpoint(n, endpoint)),
                );
                // Remember which host the view came from, for empty addresses.
                views.push((endpoint.clone(), view));
            }
        }
        // Nodes added to the cluster since are known for the next lookup.
        self.remember(learnt);
        let Some(asked) = views.first().map(|(ep, _)| ep.clone()) else {
            return Err(FollowError::NoView {
                asked: candidates
                    .iter()
                    .take(MAX_VIEWS)
                    .map(Endpoint::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // Several views together: right after a failover nodes disagree, and `place` settles
        // it the cluster's way.
        let topology = Topology::from_views(views.into_iter().map(|(_, v)| v).collect());
        self.place(&topology, &asked).await
    }

    /// Pick the shard in `topology` that serves most of our slots (the highest
    /// config epoch among equals: the cluster's own rule for who is right).
    async fn place(&self, topology: &Topology, asked: &Endpoint) -> Result<Location, FollowError> {
        let ours: Vec<rsm_cluster::Slot> = self.slots.iter().flat_map(SlotRange::iter).collect();
        let best = topology
            .shards
            .iter()
            .map(|s| (ours.iter().filter(|slot| s.owns(**slot)).count(), s))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, s)| (*n, s.master.config_epoch));
        let Some((served, shard)) = best else {
            return Err(FollowError::Unserved {
                slots: self.slots_display(),
            });
        };
        let master = node_endpoint(&shard.master, asked);
        // Its master suspected or failed (`fail?`, `fail`): wait for the cluster to promote
        // a replica rather than sync from a node about to be replaced.
        if shard.master.flags.failing() {
            return Err(FollowError::MasterFailing {
                master: master.to_string(),
                slots: self.slots_display(),
            });
        }
        let mut note = (served < ours.len()).then(|| {
            format!(
                "only {served} of the shard's {} slots are served by {master}; the source was \
                 resharded: restart the manager to plan the shards again",
                ours.len()
            )
        });
        // The master, by choice or for want of a replica.
        if self.role == Role::Master || shard.replicas.is_empty() {
            if self.role == Role::Slave {
                note.get_or_insert_with(|| {
                    format!(
                        "the shard's new master {master} has no replica; syncing from the master"
                    )
                });
            }
            return Ok(Location {
                node: master.clone(),
                role: Role::Master,
                master,
                note,
            });
        }
        // A replica: the least behind among those with their link up and not failing, or
        // the master (with a note) when none is fit.
        let o = opts(&self.base);
        let (master_offset, statuses) = replication_view(shard, asked, &o).await;
        let selection = select_node(shard, Role::Slave, master_offset, &statuses);
        let role = if selection.node.is_master() {
            Role::Master
        } else {
            Role::Slave
        };
        if let Some(w) = &selection.warning {
            note.get_or_insert_with(|| w.to_string());
        }
        Ok(Location {
            node: node_endpoint(selection.node, asked),
            role,
            master,
            note,
        })
    }
}

/// What `select_node` needs to pick a replica: the master's offset (0 if it
/// cannot be read) and each replica's link state and offset (`None` where a
/// replica cannot be asked).
pub async fn replication_view(
    shard: &rsm_cluster::Shard,
    asked: &Endpoint,
    o: &ConnectOptions,
) -> (u64, Vec<Option<ReplicaStatus>>) {
    let master = node_endpoint(&shard.master, asked);
    // 0 when the master cannot be asked: every replica then counts as caught up, and
    // the link state alone decides.
    let master_offset = match Connection::connect(&master, o).await {
        Ok(mut c) => c
            .info("replication")
            .await
            .ok()
            .and_then(|i| info_field(&i, "master_repl_offset").and_then(|v| v.parse().ok()))
            .unwrap_or(0),
        Err(_) => 0,
    };
    let mut statuses = Vec::new();
    for replica in &shard.replicas {
        statuses.push(replica_status(&node_endpoint(replica, asked), o).await);
    }
    (master_offset, statuses)
}

/// A replica's link state and offset, from its own `INFO replication`; `None` when it
/// does not answer, which `select_node` counts as unfit.
async fn replica_status(endpoint: &Endpoint, o: &ConnectOptions) -> Option<ReplicaStatus> {
    let mut conn = Connection::connect(endpoint, o).await.ok()?;
    let info = conn.info("replication").await.ok()?;
    Some(ReplicaStatus {
        link_up: info_field(&info, "master_link_status") == Some("up"),
        // The replica's own offset; `master_repl_offset` stands in where it is missing.
        offset: info_field(&info, "slave_repl_offset")
            .or_else(|| info_field(&info, "master_repl_offset"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
