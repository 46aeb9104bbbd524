//! A real Redis Cluster on loopback: N masters with the slots split evenly, R replicas each.
//!
//! Built the way `redis-cli --cluster create` does it, through plain commands so no `redis-cli`
//! is needed: `CLUSTER SET-CONFIG-EPOCH` (distinct epochs, no collision dance), `ADDSLOTSRANGE`
//! (7.0+) or `ADDSLOTS`, `CLUSTER MEET`, then `CLUSTER REPLICATE`. `Cluster::start` returns only
//! once every node reports `cluster_state:ok`, every node agrees on the whole slot map and on who
//! replicates whom, and every replica's link is up. Node order: masters `0..masters`, then the
//! replicas of master 0, of master 1, ...

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::client::{run_cmd, ClusterConn, Target};
use crate::server::{Server, ServerOptions, ServerTls};

const SLOT_COUNT: usize = 16384;

/// How a [`Cluster`] is built. Default: 3 masters, no replicas, `redis_server_bin()`.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub masters: usize,
    pub replicas_per_master: usize,
    /// `requirepass` and `masterauth` on every node.
    pub password: Option<String>,
    /// Server binary; `None` = `$REDIS_SERVER` or `redis-server` on `PATH`.
    pub bin: Option<PathBuf>,
    /// Extra config for every node (replaces the kit's defaults of the same name).
    pub extra_config: Vec<(String, String)>,
    /// How long to wait for the cluster to settle.
    pub ready_timeout: Duration,
    /// A TLS port on every node, with `tls-cluster yes` and `tls-replication yes`: the bus
    /// and the replicas' links are TLS, and `CLUSTER NODES` asked over TLS lists the TLS
    /// ports. The kit still builds and reads the cluster through the plain ports.
    pub tls: Option<ServerTls>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            masters: 3,
            replicas_per_master: 0,
            password: None,
            bin: None,
            extra_config: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// A running cluster; dropping it stops every node.
pub struct Cluster {
    nodes: Vec<Server>,
    ids: Vec<String>,
    masters: usize,
    replicas_per_master: usize,
    password: Option<String>,
    /// How every node was started, for nodes a test adds later ([`Cluster::start_like_node`]).
    node_opts: ServerOptions,
    client: Mutex<Option<ClusterConn>>,
}

impl Cluster {
    /// Starts the nodes, builds the cluster and waits until it is fully settled.
    ///
    /// # Panics
    /// If a node does not start or the cluster does not settle within `ready_timeout`; the
    /// message names the unmet condition and carries every node's log tail.
    pub fn start(opts: ClusterOptions) -> Cluster {
        assert!(opts.masters >= 1, "a cluster needs at least one master");
        let n = opts.masters * (1 + opts.replicas_per_master);
        let node_opts = ServerOptions {
            bin: opts.bin.clone(),
            password: opts.password.clone(),
            cluster: true,
            extra_config: opts.extra_config.clone(),
            tls: opts.tls.clone(),
            ..Default::default()
        };
        let nodes: Vec<Server> = (0..n).map(|_| Server::start(node_opts.clone())).collect();
        let ids: Vec<String> = nodes
            .iter()
            .map(|s| bulk_string(&s.cmd(&[b"CLUSTER", b"MYID"])))
            .collect();
        let cluster = Cluster {
            nodes,
            ids,
            masters: opts.masters,
            replicas_per_master: opts.replicas_per_master,
            password: opts.password.clone(),
            node_opts,
            client: Mutex::new(None),
        };
        cluster.build(opts.ready_timeout);
        cluster
    }

    fn build(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, s) in self.nodes.iter().enumerate() {
            // Distinct epochs up front, as redis-cli does; the node is fresh so this succeeds.
            s.cmd(&[
                b"CLUSTER",
                b"SET-CONFIG-EPOCH",
                (i + 1).to_string().as_bytes(),
            ]);
        }
        for m in 0..self.masters {
            let (a, b) = self.master_slot_range(m);
            let s = &self.nodes[m];
            if s.version().redis_compatible_at_least(7, 0) {
                s.cmd(&[
                    b"CLUSTER",
                    b"ADDSLOTSRANGE",
                    a.to_string().as_bytes(),
                    b.to_string().as_bytes(),
                ]);
            } else {
                let nums: Vec<String> = (a..=b).map(|x| x.to_string()).collect();
                let mut args: Vec<&[u8]> = vec![b"CLUSTER", b"ADDSLOTS"];
                args.extend(nums.iter().map(|x| x.as_bytes()));
                s.cmd(&args);
            }
        }
        for s in &self.nodes[1..] {
            self.nodes[0].cmd(&[
                b"CLUSTER",
                b"MEET",
                b"127.0.0.1",
                s.port().to_string().as_bytes(),
            ]);
        }
        // Replicas can only REPLICATE a master they already know.
        for r in self.masters..self.nodes.len() {
            let m = (r - self.masters) / self.replicas_per_master.max(1);
            let master_id = self.ids[m].clone();
            loop {
                match self.nodes[r].try_cmd(&[b"CLUSTER", b"REPLICATE", master_id.as_bytes()]) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => self.fail(&format!(
                        "node {r} could not CLUSTER REPLICATE {master_id}: {e}"
                    )),
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        loop {
            let problem = match self.readiness_problem() {
                None => return,
                Some(p) => p,
            };
            if Instant::now() > deadline {
                self.fail(&format!("cluster not ready after {timeout:?}: {problem}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `None` when the cluster is fully settled, else the first unmet condition.
    fn readiness_problem(&self) -> Option<String> {
        let expected = self.expected_view();
        for (i, s) in self.nodes.iter().enumerate() {
            let state = s.info_field_cluster("cluster_state");
            if state.as_deref() != Some("ok") {
                return Some(format!("node {i} ({}) cluster_state:{state:?}", s.addr()));
            }
            let text = match s.try_cmd(&[b"CLUSTER", b"NODES"]) {
                Ok(v) => bulk_string(&v),
                Err(e) => return Some(format!("node {i} CLUSTER NODES: {e}")),
            };
            let view = parse_view(&text);
            if view != expected {
                return Some(format!(
                    "node {i} ({}) does not agree on the topology yet:\n{text}",
                    s.addr()
                ));
            }
            if i >= self.masters {
                let link = s.info_field("replication", "master_link_status");
                if link.as_deref() != Some("up") {
                    return Some(format!(
                        "replica {i} ({}) master_link_status:{link:?}",
                        s.addr()
                    ));
                }
            }
        }
        None
    }

    /// What every node's `CLUSTER NODES` must say: id → (role, master id, slot ranges).
    fn expected_view(&self) -> BTreeMap<String, NodeView> {
        let mut v = BTreeMap::new();
        for (i, id) in self.ids.iter().enumerate() {
            let nv = if i < self.masters {
                let (a, b) = self.master_slot_range(i);
                NodeView {
                    master: true,
                    master_id: None,
                    slots: vec![(a, b)],
                    healthy: true,
                }
            } else {
                let m = (i - self.masters) / self.replicas_per_master.max(1);
                NodeView {
                    master: false,
                    master_id: Some(self.ids[m].clone()),
                    slots: vec![],
                    healthy: true,
                }
            };
            v.insert(id.clone(), nv);
        }
        v
    }

    fn fail(&self, msg: &str) -> ! {
        let mut out = format!("{msg}\n");
        for (i, s) in self.nodes.iter().enumerate() {
            let _ = writeln!(out, "node {i} id {} {}:", self.ids[i], s.addr());
            out.push_str(&s.log_tail(15));
        }
        panic!("{out}");
    }

    /// The slots assigned to master `m` at start, split as `redis-cli --cluster create` does
    /// (3 masters: 0-5460, 5461-10922, 10923-16383).
    pub fn master_slot_range(&self, m: usize) -> (u16, u16) {
        let last = |i: usize| -> usize {
            if i + 1 >= self.masters {
                return SLOT_COUNT - 1;
            }
            let per = SLOT_COUNT as f64 / self.masters as f64;
            ((i as f64) * per + per - 1.0).round() as usize
        };
        let first = if m == 0 { 0 } else { last(m - 1) + 1 };
        (first as u16, last(m) as u16)
    }

    /// Starts one more server with the same binary and options as the cluster's nodes, not
    /// yet part of the cluster (see `add_master` in the reshard helpers).
    pub fn start_like_node(&self) -> Server {
        Server::start(self.node_opts.clone())
    }

    /// Takes ownership of a node a test joined to the cluster, so it is stopped with the
    /// others and its data counts in [`Snapshot`](crate::Snapshot)s. Returns its index in
    /// [`Cluster::nodes`]; adopted nodes come after the started ones, which keep their
    /// indices.
    pub fn adopt(&mut self, server: Server, id: String) -> usize {
        self.nodes.push(server);
        self.ids.push(id);
        // A cached slot map predates the node.
        *self.client.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self.nodes.len() - 1
    }

    /// Every node, masters first, then replicas, then the nodes adopted later.
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// The masters as started (a failover in a test does not reorder these).
    pub fn masters(&self) -> &[Server] {
        &self.nodes[..self.masters]
    }

    /// The replicas started for master `m`.
    pub fn replicas_of(&self, m: usize) -> &[Server] {
        let r = self.replicas_per_master;
        let start = self.masters + m * r;
        &self.nodes[start..start + r]
    }

    /// The cluster node id of node `i` (index into [`Cluster::nodes`]).
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// All node ids, in node order.
    pub fn node_ids(&self) -> &[String] {
        &self.ids
    }

    /// `"127.0.0.1:port"` of every node, in node order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Server::addr).collect()
    }

    /// An address to start discovery from (the first master).
    pub fn seed_addr(&self) -> String {
        self.nodes[0].addr()
    }

    /// `"127.0.0.1:<tls port>"` of the first node, when built with [`ClusterOptions::tls`].
    pub fn tls_seed_addr(&self) -> String {
        self.nodes[0].tls_addr()
    }

    /// The cluster password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A new connection to the master that currently owns `key`'s slot.
    pub fn conn_for_key(&self, key: &[u8]) -> Connection {
        let c = self.client();
        let addr = c
            .addr_for_key(key)
            .unwrap_or_else(|| {
                panic!(
                    "no node serves the slot of {:?}",
                    String::from_utf8_lossy(key)
                )
            })
            .to_string();
        let node = self
            .nodes
            .iter()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("slot owner {addr} is not a node of this cluster"));
        node.conn()
    }

    /// A routing client (slot map, MOVED/ASK) over all live nodes.
    pub fn client(&self) -> ClusterConn {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|s| s.is_running())
            .map(Server::addr)
            .collect();
        ClusterConn::new(seeds, self.password.clone())
            .unwrap_or_else(|e| panic!("cannot load the slot map of the cluster: {e}"))
    }

    /// Runs one command about `key` on its owner; panics on an error reply.
    pub fn cmd_on_key(&self, key: &[u8], args: &[&[u8]]) -> Value {
        self.try_cmd_on_key(key, args).unwrap_or_else(|e| {
            panic!(
                "{} on the owner of {:?} failed: {e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or(b"")),
                String::from_utf8_lossy(key)
            )
        })
    }

    /// Runs one command about `key` on its owner; server errors come back as `Err`.
    pub fn try_cmd_on_key(&self, key: &[u8], args: &[&[u8]]) -> redis::RedisResult<Value> {
        let cmd: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        let mut out = self.run_on_key(key, &[cmd])?;
        Ok(out.pop().unwrap_or(Value::Nil))
    }
}

impl Target for Cluster {
    fn run_on_key(&self, key: &[u8], cmds: &[Vec<Vec<u8>>]) -> redis::RedisResult<Vec<Value>> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.client());
        }
        let c = guard.as_mut().expect("client cached above");
        let res = c.run_on_key(key, cmds);
        if res.is_err() {
            *guard = None; // start over with a fresh map next time
        }
        res
    }

    /// Every live node whose `ROLE` says master (follows failovers done by a test).
    /// # Panics
    /// If a running node does not say its role: skipping it would compare a part of the data.
    fn data_conns(&self) -> Vec<Connection> {
        let mut out = Vec::new();
        for s in self.nodes.iter().filter(|s| s.is_running()) {
            // A fresh connection: a cached one may have been killed by the test.
            let mut conn = s.conn();
            let role = run_cmd(&mut conn, &[b"ROLE"])
                .unwrap_or_else(|e| panic!("ROLE on {} failed: {e}", s.addr()));
            let Value::Array(role) = role else {
                panic!("ROLE on {}: unexpected reply {role:?}", s.addr());
            };
            if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                out.push(conn);
            }
        }
        out
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addrs", &self.addrs())
            .field("ids", &self.ids)
            .field("masters", &self.masters)
            .field("replicas_per_master", &self.replicas_per_master)
            .finish()
    }
}

impl Server {
    fn info_field_cluster(&self, field: &str) -> Option<String> {
        let v = self.try_cmd(&[b"CLUSTER", b"INFO"]).ok()?;
        let text = bulk_string(&v);
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }
}

/// One node as seen in a `CLUSTER NODES` line, reduced to what readiness compares.
#[derive(Debug, PartialEq, Eq)]
struct NodeView {
    master: bool,
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
    healthy: bool,
}

/// A deliberately small `CLUSTER NODES` reader (the full parser is `rsm-cluster`, under test).
fn parse_view(text: &str) -> BTreeMap<String, NodeView> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        let healthy = !flags
            .iter()
            .any(|x| matches!(*x, "fail" | "fail?" | "handshake" | "noaddr"))
            && f[7] == "connected";
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue;
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                slots.push((a, b));
            }
        }
        out.insert(
            f[0].to_string(),
            NodeView {
                master: flags.contains(&"master"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
                healthy,
            },
        );
    }
    out
}

pub(crate) fn bulk_string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Okay => "OK".into(),
        other => format!("{other:?}"),
    }
}
