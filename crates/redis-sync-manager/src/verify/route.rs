//! One side of the comparison (source or target) as something that runs a
//! batch of single-key commands and hands the replies back in order.
//!
//! A cluster side routes each command by `key_slot` through a `SlotMap` read
//! from `CLUSTER NODES`, pipelines per node (send all, flush every node, then
//! read each node's FIFO), and re-runs the few replies that came back as
//! `MOVED`/`ASK` one by one. A standalone side keeps one connection per db.
//! Nothing here compares anything; `compare.rs` decides what to ask.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use rsm_client::{ClientError, ConnectOptions, Connection, Endpoint, ServerError};
use rsm_cluster::{key_slot, parse_cluster_nodes, SlotMap};
use rsm_resp::Frame;

/// How many redirects one command may follow before it is reported as failed.
// A slot being moved redirects once or twice (MOVED, then ASK during the
// migration); more means a cluster in flux or two nodes that disagree. The key
// then reads as failed, which is a difference the re-check looks at again.
const MAX_REDIRECTS: usize = 5;

/// A command about one key: the key routes it, `args` is what is sent.
// The key is kept apart because its place in `args` depends on the command
// (`TYPE key`, `XINFO GROUPS key`, `XPENDING key group …`).
pub struct KeyCmd {
    pub key: bytes::Bytes,
    pub args: Vec<Vec<u8>>,
}

impl KeyCmd {
    pub fn new(key: &bytes::Bytes, args: Vec<Vec<u8>>) -> KeyCmd {
        KeyCmd {
            key: key.clone(),
            args,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}: CLUSTER NODES could not be read: {1}")]
    Nodes(Endpoint, String),
    #[error("{0}: no node serves slot {1} (is the cluster complete?)")]
    Unserved(String, u16),
    #[error("{0} is not an address: {1}")]
    BadAddr(String, String),
}

enum Kind {
    Cluster {
        map: SlotMap,
        /// Connection per owner index of `map`, opened on first use.
        // On first use: a worker connects only to the nodes its batches
        // route to.
        // And per db: a cluster with `cluster-databases` (Valkey 9+) has more than db 0,
        // and a db is state of a connection.
        conns: HashMap<(usize, u32), Connection>,
        /// Connections used only to follow redirects, by address.
        by_addr: HashMap<(String, u32), Connection>,
    },
    Standalone {
        endpoint: Endpoint,
        /// Connection per db, opened (and `SELECT`ed) on first use.
        // SELECT is state of a connection: one per db keeps every pipeline
        // in its db without a SELECT round trip per batch.
        conns: HashMap<u32, Connection>,
    },
}

/// One side, owned by one worker task (never shared, so no locks).
pub struct Router {
    name: &'static str,
    opts: ConnectOptions,
    kind: Kind,
}

/// What a side looks like, read once before the workers start.
#[derive(Debug, Clone)]
pub struct SideInfo {
    pub cluster: bool,
    /// Masters serving slots (cluster) or the server itself.
    pub masters: Vec<Endpoint>,
    /// Every node answers PEXPIRETIME (7.0+ / Valkey).
    // Every node, not the seed alone: during a rolling upgrade the nodes of
    // one cluster run different versions, and one side asks one command.
    pub has_pexpiretime: bool,
    /// The slot map, for cluster sides.
    pub map: Option<SlotMap>,
    /// The dbs holding keys, from `INFO keyspace` (of every master of a cluster: with
    /// `cluster-databases` each may hold keys in other dbs).
    pub dbs: Vec<u32>,
    /// A cluster has more than db 0 (`cluster-databases` above 1, Valkey 9+), so its
    /// dbs are compared one by one rather than taken as the one db of a cluster.
    pub multi_db_cluster: bool,
}

/// Read a side's topology and versions.
pub async fn probe(
    name: &'static str,
    seed: &Endpoint,
    opts: &ConnectOptions,
) -> Result<SideInfo, RouteError> {
    let mut conn = Connection::connect(seed, opts).await?;
    let cluster_info = conn.info("cluster").await.unwrap_or_default();
    let cluster = rsm_client::info_field(&cluster_info, "cluster_enabled") == Some("1");
    if !cluster {
        let dbs = keyspace_dbs(&mut conn).await?;
        let has_pexpiretime = supports_pexpiretime(&mut conn).await?;
        return Ok(SideInfo {
            cluster,
            masters: vec![seed.clone()],
            has_pexpiretime,
            map: None,
            dbs,
            multi_db_cluster: false,
        });
    }
    let text = conn.request_text(&["CLUSTER", "NODES"]).await?;
    let nodes =
        parse_cluster_nodes(&text).map_err(|e| RouteError::Nodes(seed.clone(), e.to_string()))?;
    let map = SlotMap::from_nodes(&nodes, &seed.host);
    // Refused up front: the keys of an unserved slot can be neither scanned
    // nor looked up, and a report that skipped them would claim too much.
    if let Some(first) = map.uncovered().first() {
        return Err(RouteError::Unserved(name.to_string(), first.start().get()));
    }
    let mut masters = Vec::new();
    let mut has_pexpiretime = true;
    let mut dbs = Vec::new();
    for owner in map.owners() {
        let endpoint: Endpoint = owner.addr.parse().map_err(|e: rsm_client::EndpointError| {
            RouteError::BadAddr(owner.addr.clone(), e.to_string())
        })?;
        let mut c = Connection::connect(&endpoint, opts).await?;
        has_pexpiretime &= supports_pexpiretime(&mut c).await?;
        dbs.extend(keyspace_dbs(&mut c).await?);
        masters.push(endpoint);
    }
    dbs.sort_unstable();
    dbs.dedup();
    Ok(SideInfo {
        cluster,
        masters,
        has_pexpiretime,
        map: Some(map),
        dbs,
        multi_db_cluster: cluster_databases(&mut conn).await?.is_some_and(|n| n > 1),
    })
}

/// `cluster-databases` (Valkey 9+); `None` where there is no such setting (Redis, older
/// Valkey) or CONFIG is refused, and the cluster is taken to have db 0 only.
async fn cluster_databases(conn: &mut Connection) -> Result<Option<u32>, ClientError> {
    Ok(conn
        .config_number("cluster-databases")
        .await?
        .and_then(|n| u32::try_from(n).ok()))
}

/// Redis 7.0 added PEXPIRETIME; Valkey has it from its first release.
async fn supports_pexpiretime(conn: &mut Connection) -> Result<bool, ClientError> {
    let info = conn.info("server").await?;
    Ok(rsm_client::ServerVersion::from_info(&info).is_some_and(|v| v.redis_at_least(7, 0)))
}

/// `db0:keys=3,...` lines of `INFO keyspace`, as db numbers (db 0 when empty).
// Db 0 for an empty source still gives the target scan a db to walk: a target
// full of keys must come out as "extra", not as equal to an empty source.
async fn keyspace_dbs(conn: &mut Connection) -> Result<Vec<u32>, ClientError> {
    let info = conn.info("keyspace").await?;
    let mut dbs: Vec<u32> = rsm_client::keyspace(&info)
        .into_iter()
        .map(|(db, _)| db)
        .collect();
    if dbs.is_empty() {
        dbs.push(0);
    }
    dbs.sort_unstable();
    Ok(dbs)
}

impl Router {
    pub fn new(
        name: &'static str,
        info: &SideInfo,
        seed: &Endpoint,
        opts: &ConnectOptions,
    ) -> Self {
        let kind = match &info.map {
            // A copy of the map per router: a MOVED updates it without a lock,
            // and each worker learns of a moved slot the first time it meets it.
            Some(map) => Kind::Cluster {
                map: map.clone(),
                conns: HashMap::new(),
                by_addr: HashMap::new(),
            },
            None => Kind::Standalone {
                endpoint: seed.clone(),
                conns: HashMap::new(),
            },
        };
        Router {
            name,
            opts: opts.clone(),
            kind,
        }
    }

    /// Run `cmds` (all in `db`) and return one reply per command, in order.
    /// Error replies other than redirects come back as `Frame::Error`.
    pub async fn run(&mut self, db: u32, cmds: &[KeyCmd]) -> Result<Vec<Frame>, RouteError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let name = self.name;
        let opts = self.opts.clone();
        match &mut self.kind {
            Kind::Standalone { endpoint, conns } => {
                // One connection answers in the order it was sent: the replies
                // line up with `cmds` as they come.
                let conn = standalone_conn(conns, endpoint, db, &opts).await?;
                for c in cmds {
                    conn.send(&c.args);
                }
                conn.flush().await?;
                let mut out = Vec::with_capacity(cmds.len());
                for _ in cmds {
                    out.push(conn.read_frame().await?);
                }
                Ok(out)
            }
            Kind::Cluster {
                map,
                conns,
                by_addr,
            } => {
                // Group by owner, keeping each command's position.
                let mut by_owner: Vec<(usize, Vec<usize>)> = Vec::new();
                for (i, c) in cmds.iter().enumerate() {
                    let slot = key_slot(&c.key);
                    let owner = map
                        .owner_index_of(slot)
                        .ok_or_else(|| RouteError::Unserved(name.to_string(), slot.get()))?;
                    match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                        Some((_, v)) => v.push(i),
                        None => by_owner.push((owner, vec![i])),
                    }
                }
                // Every node's pipeline is on the wire before any reply is
                // read: a batch costs the slowest node's round trip, not the sum.
                for (owner, idx) in &by_owner {
                    let conn = owner_conn(conns, map, *owner, db, &opts).await?;
                    for i in idx {
                        conn.send(&cmds[*i].args);
                    }
                    conn.flush().await?;
                }
                let mut out = vec![Frame::Null; cmds.len()];
                let mut redirected = Vec::new();
                for (owner, idx) in &by_owner {
                    let conn = owner_conn(conns, map, *owner, db, &opts).await?;
                    for i in idx {
                        let f = conn.read_frame().await?;
                        if let Some(err) = f.as_error() {
                            match ServerError::classify(err) {
                                e @ (ServerError::Moved { .. } | ServerError::Ask { .. }) => {
                                    redirected.push((*i, e, conn.endpoint().clone()));
                                }
                                _ => out[*i] = f,
                            }
                        } else {
                            out[*i] = f;
                        }
                    }
                }
                // Rare (a slot moving during the check): follow each redirect alone.
                for (i, first, asked) in redirected {
                    out[i] = follow(by_addr, map, &cmds[i], first, asked, db, &opts).await?;
                }
                Ok(out)
            }
        }
    }
}

async fn standalone_conn<'a>(
    conns: &'a mut HashMap<u32, Connection>,
    endpoint: &Endpoint,
    db: u32,
    opts: &ConnectOptions,
) -> Result<&'a mut Connection, RouteError> {
    match conns.entry(db) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(v) => Ok(v.insert(connect_in(endpoint, db, opts).await?)),
    }
}

/// A new connection to `endpoint` with `db` selected (a new one starts in db 0).
async fn connect_in(
    endpoint: &Endpoint,
    db: u32,
    opts: &ConnectOptions,
) -> Result<Connection, RouteError> {
    let mut c = Connection::connect(endpoint, opts).await?;
    if db != 0 {
        c.request_ok(&["SELECT".to_string(), db.to_string()])
            .await?;
    }
    Ok(c)
}

async fn owner_conn<'a>(
    conns: &'a mut HashMap<(usize, u32), Connection>,
    map: &SlotMap,
    owner: usize,
    db: u32,
    opts: &ConnectOptions,
) -> Result<&'a mut Connection, RouteError> {
    match conns.entry((owner, db)) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(v) => {
            let addr = map
                .owners()
                .get(owner)
                .map(|o| o.addr.clone())
                .unwrap_or_default();
            let endpoint: Endpoint = addr.parse().map_err(|e: rsm_client::EndpointError| {
                RouteError::BadAddr(addr.clone(), e.to_string())
            })?;
            Ok(v.insert(connect_in(&endpoint, db, opts).await?))
        }
    }
}

/// Follow MOVED (update the map) and ASK (one `ASKING` + command) for one
/// command in `db`, on connections kept by address and db (`ASK` never changes
/// the map).
async fn follow(
    by_addr: &mut HashMap<(String, u32), Connection>,
    map: &mut SlotMap,
    cmd: &KeyCmd,
    mut redirect: ServerError,
    mut asked: Endpoint,
    db: u32,
    opts: &ConnectOptions,
) -> Result<Frame, RouteError> {
    for _ in 0..MAX_REDIRECTS {
        let Some(to) = redirect.redirect_target(&asked) else {
            break;
        };
        // `to` is resolved against the node that answered, not the seed: a
        // redirect with an empty host means "my host".
        let addr = to.to_string();
        let ask = matches!(redirect, ServerError::Ask { .. });
        if !ask {
            map.set_owner(key_slot(&cmd.key), &addr);
        }
        let at = (addr.clone(), db);
        if !by_addr.contains_key(&at) {
            let c = connect_in(&to, db, opts).await?;
            by_addr.insert(at.clone(), c);
        }
        let Some(conn) = by_addr.get_mut(&at) else {
            break;
        };
        if ask {
            conn.send(&["ASKING"]);
        }
        conn.send(&cmd.args);
        conn.flush().await?;
        // The first reply after ASKING is its own +OK, not the command's.
        if ask {
            let _ = conn.read_frame().await?;
        }
        let f = conn.read_frame().await?;
        asked = conn.endpoint().clone();
        match f.as_error().map(|e| ServerError::classify(e)) {
            Some(e @ (ServerError::Moved { .. } | ServerError::Ask { .. })) => redirect = e,
            // The slot is being moved and the node cannot answer just now:
            // a short pause, then the same command again.
            Some(ServerError::TryAgain) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return Ok(f),
        }
    }
    // A reply, not an `Err`: one key that cannot be read is a difference to
    // re-check, not a reason to stop the whole run.
    Ok(Frame::Error(bytes::Bytes::from_static(
        b"ERR verify: too many redirects",
    )))
}
