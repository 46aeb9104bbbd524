//! Source topology changes for the fault tests, made by the servers' own tools.
//!
//! Beside the data flow: a test moves the slots of a running source cluster the way an
//! operator would (`redis-cli --cluster reshard | add-node | rebalance | del-node`, or Valkey
//! 9's `CLUSTER MIGRATESLOTS`) while a sync runs, and reads whether slots are in motion
//! ([`slots_in_motion`]). Every change returns only once it is done *and* every master
//! agrees on who owns each slot, so the test's next step sees a settled source; a failure
//! panics with the tool's output or the job's state, never a bare timeout.

use std::collections::BTreeSet;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use redis::Value;

use crate::bin::redis_cli_bin;
use crate::client::{connect, run_cmd};
use crate::cluster::bulk_string;
use crate::{Cluster, Server};

const SLOT_COUNT: usize = 16384;

/// How long a change may take to be agreed by every master. Gossip spreads a new owner in
/// well under a second on loopback; the margin is for a loaded CI machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A Valkey slot-migration job in one of these states will not change any more.
const JOB_DONE_STATES: [&str; 4] = ["success", "failed", "cancelled", "canceled"];

/// One node of a `CLUSTER NODES` reply, reduced to what the checks here read.
#[derive(Clone, Debug)]
struct NodeLine {
    id: String,
    addr: String,
    master: bool,
    usable: bool,
    slots: Vec<(u16, u16)>,
    /// `[slot->-id]` and `[slot-<-id]` entries, as written.
    moving: Vec<String>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        let mut moving = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                moving.push((*s).to_string());
                continue;
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                slots.push((a, b));
            }
        }
        out.push(NodeLine {
            id: f[0].to_string(),
            // "ip:port@bus[,hostname]": the client address is before the '@'.
            addr: f[1].split('@').next().unwrap_or(f[1]).to_string(),
            master: flags.contains(&"master"),
            usable: !flags
                .iter()
                .any(|x| matches!(*x, "fail" | "fail?" | "handshake" | "noaddr")),
            slots,
            moving,
        });
    }
    out
}

fn query(addr: &str, password: Option<&str>, args: &[&[u8]]) -> Result<Value, String> {
    let mut conn = connect(addr, password).map_err(|e| format!("connect {addr}: {e}"))?;
    run_cmd(&mut conn, args).map_err(|e| {
        let name: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        format!("{} on {addr}: {e}", name.join(" "))
    })
}

fn cluster_nodes(addr: &str, password: Option<&str>) -> Result<Vec<NodeLine>, String> {
    query(addr, password, &[b"CLUSTER", b"NODES"]).map(|v| parse_nodes(&bulk_string(&v)))
}

/// Every usable master `seed` knows of (itself included).
fn masters_of(seed: &str, password: Option<&str>) -> Result<Vec<NodeLine>, String> {
    Ok(cluster_nodes(seed, password)?
        .into_iter()
        .filter(|n| n.master && n.usable)
        .collect())
}

/// The owner of every slot as `nodes` says it (`None` = unowned).
fn owners(nodes: &[NodeLine]) -> Vec<Option<String>> {
    let mut out = vec![None; SLOT_COUNT];
    for n in nodes.iter().filter(|n| n.master) {
        for &(a, b) in &n.slots {
            for s in a..=b.min(SLOT_COUNT as u16 - 1) {
                out[s as usize] = Some(n.id.clone());
            }
        }
    }
    out
}

/// One Valkey slot-migration job of `CLUSTER GETSLOTMIGRATIONS`, as field → value.
#[derive(Clone, Debug, Default)]
pub struct SlotMigrationJob {
    pub name: String,
    pub operation: String,
    pub slot_ranges: String,
    pub state: String,
    pub message: String,
}

impl SlotMigrationJob {
    /// True once the job can no longer change anything.
    pub fn finished(&self) -> bool {
        JOB_DONE_STATES.contains(&self.state.as_str())
    }
}

/// `CLUSTER GETSLOTMIGRATIONS` on `addr`: jobs running and recently finished (Valkey 9+).
/// A server without the command gives `Ok(vec![])`: it cannot have such jobs.
pub fn slot_migrations(
    addr: &str,
    password: Option<&str>,
) -> Result<Vec<SlotMigrationJob>, String> {
    let v = match query(addr, password, &[b"CLUSTER", b"GETSLOTMIGRATIONS"]) {
        Ok(v) => v,
        // Redis and older Valkey: "ERR unknown subcommand".
        Err(e) if e.contains("nknown subcommand") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Value::Array(jobs) = v else {
        return Err(format!("GETSLOTMIGRATIONS on {addr}: not an array: {v:?}"));
    };
    Ok(jobs.iter().map(parse_job).collect())
}

/// One job: a flat `[field, value, ...]` array in RESP2, a map in RESP3.
fn parse_job(v: &Value) -> SlotMigrationJob {
    let pairs: Vec<(String, String)> = match v {
        Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (bulk_string(&c[0]), bulk_string(&c[1])))
            .collect(),
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| (bulk_string(k), bulk_string(v)))
            .collect(),
        _ => Vec::new(),
    };
    let mut job = SlotMigrationJob::default();
    for (k, v) in pairs {
        match k.as_str() {
            "name" => job.name = v,
            "operation" => job.operation = v,
            "slot_ranges" => job.slot_ranges = v,
            "state" => job.state = v,
            "message" => job.message = v,
            _ => {}
        }
    }
    job
}

/// What of the source is in motion right now, one line each: a `[slot->-id]` /
/// `[slot-<-id]` marker on a master, or a Valkey slot-migration job not finished. Empty when
/// nothing moves; `Err` when a master could not be read, which is neither.
pub fn slots_in_motion(seed: &str, password: Option<&str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for m in &masters_of(seed, password)? {
        let nodes = cluster_nodes(&m.addr, password)?;
        if let Some(me) = nodes.iter().find(|n| n.id == m.id) {
            out.extend(me.moving.iter().map(|s| format!("{} {s}", m.addr)));
        }
        let jobs = slot_migrations(&m.addr, password)?;
        out.extend(jobs.iter().filter(|j| !j.finished()).map(|j| {
            format!(
                "{} job {} {} {} {}",
                m.addr, j.name, j.operation, j.slot_ranges, j.state
            )
        }));
    }
    Ok(out)
}

/// Why the source is not settled, or `None`: slots in motion, a slot without an owner, or
/// two masters that disagree on a slot's owner or on who the masters are.
pub fn unsettled(seed: &str, password: Option<&str>) -> Option<String> {
    match slots_in_motion(seed, password) {
        Ok(moving) if moving.is_empty() => {}
        Ok(moving) => return Some(format!("in motion: {}", moving.join("; "))),
        Err(e) => return Some(e),
    }
    let masters = match masters_of(seed, password) {
        Ok(m) => m,
        Err(e) => return Some(e),
    };
    let ids: BTreeSet<&str> = masters.iter().map(|m| m.id.as_str()).collect();
    let mut first: Option<(String, Vec<Option<String>>)> = None;
    for m in &masters {
        let nodes = match cluster_nodes(&m.addr, password) {
            Ok(n) => n,
            Err(e) => return Some(e),
        };
        let theirs: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.master && n.usable)
            .map(|n| n.id.as_str())
            .collect();
        if theirs != ids {
            return Some(format!(
                "{} knows other masters: {theirs:?} vs {ids:?}",
                m.addr
            ));
        }
        // A node that just joined, or just saw its slots change, says `fail` for a moment
        // (Redis waits 2 s before a master that was in the minority takes writes), and a
        // MIGRATE into it is then refused with CLUSTERDOWN.
        let state = query(&m.addr, password, &[b"CLUSTER", b"INFO"]).map(|v| {
            bulk_string(&v)
                .lines()
                .find_map(|l| l.strip_prefix("cluster_state:"))
                .map(|s| s.trim().to_string())
        });
        match state {
            Ok(Some(s)) if s == "ok" => {}
            other => return Some(format!("{} cluster_state: {other:?}", m.addr)),
        }
        let view = owners(&nodes);
        if let Some(s) = view.iter().position(Option::is_none) {
            return Some(format!("{} sees slot {s} without an owner", m.addr));
        }
        match &first {
            None => first = Some((m.addr.clone(), view)),
            Some((addr, other)) => {
                if let Some(s) = (0..SLOT_COUNT).find(|&s| other[s] != view[s]) {
                    return Some(format!(
                        "slot {s}: {addr} says {:?}, {} says {:?}",
                        other[s], m.addr, view[s]
                    ));
                }
            }
        }
    }
    None
}

/// Waits until [`unsettled`] says nothing.
///
/// # Panics
/// With the last reason after 60 s.
pub fn wait_settled(seed: &str, password: Option<&str>) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let Some(why) = unsettled(seed, password) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "the source cluster did not settle within {SETTLE_TIMEOUT:?}: {why}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The slots `id` owns, as `seed` sees them.
pub fn slots_of(seed: &str, password: Option<&str>, id: &str) -> Vec<(u16, u16)> {
    let nodes = cluster_nodes(seed, password).unwrap_or_else(|e| panic!("{e}"));
    nodes
        .into_iter()
        .find(|n| n.id == id)
        .map(|n| n.slots)
        .unwrap_or_default()
}

/// Runs `redis-cli --cluster <args>`; panics with its output unless it exits 0.
fn cluster_cli(args: &[&str], password: Option<&str>) -> String {
    let mut cmd = Command::new(redis_cli_bin());
    if let Some(p) = password {
        cmd.args(["-a", p, "--no-auth-warning"]);
    }
    cmd.arg("--cluster").args(args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // redis-cli exits 0 on some refusals, so its "[ERR]" lines count as failures too.
    if !out.status.success() || stdout.contains("[ERR]") {
        let tail: Vec<&str> = stdout.lines().rev().take(30).collect();
        panic!(
            "redis-cli --cluster {} failed ({}):\n{stderr}\n{}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    stdout
}

/// `redis-cli --cluster reshard`: moves `slots` slots from master `from_id` to master `to_id`,
/// then waits until every master agrees.
///
/// # Panics
/// If redis-cli fails or the cluster does not settle.
pub fn reshard(seed: &str, from_id: &str, to_id: &str, slots: usize, password: Option<&str>) {
    // redis-cli refuses to reshard a cluster whose nodes do not agree yet.
    wait_settled(seed, password);
    let n = slots.to_string();
    cluster_cli(
        &[
            "reshard",
            seed,
            "--cluster-from",
            from_id,
            "--cluster-to",
            to_id,
            "--cluster-slots",
            &n,
            "--cluster-yes",
        ],
        password,
    );
    wait_settled(seed, password);
}

/// `redis-cli --cluster rebalance --cluster-use-empty-masters`: spreads the slots over every
/// master, empty ones included, then waits until every master agrees.
pub fn rebalance_to_empty(seed: &str, password: Option<&str>) {
    wait_settled(seed, password);
    cluster_cli(
        &[
            "rebalance",
            seed,
            "--cluster-use-empty-masters",
            "--cluster-yes",
        ],
        password,
    );
    wait_settled(seed, password);
}

/// `redis-cli --cluster del-node`: removes master `id`, which must own no slot (empty it with
/// [`reshard`] first). redis-cli shuts the node down; the kit's handle then only reaps it.
pub fn del_node(seed: &str, id: &str, password: Option<&str>) {
    let owned = slots_of(seed, password, id);
    assert!(
        owned.is_empty(),
        "del-node of {id}, which still owns {owned:?}"
    );
    cluster_cli(&["del-node", seed, id], password);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let known: Vec<String> = masters_of(seed, password)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let nodes = cluster_nodes(&m.addr, password).ok()?;
                nodes.iter().any(|n| n.id == id).then_some(m.addr)
            })
            .collect();
        if known.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after del-node, {known:?} still list {id}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    wait_settled(seed, password);
}

/// Starts one more empty master like the cluster's nodes (same binary and options, a leased
/// port) and joins it with `redis-cli --cluster add-node`; returns once every node knows it
/// and the cluster is settled. The cluster adopts the server, so it is stopped by PID with
/// the others. Returns its index in [`Cluster::nodes`] and its node id.
pub fn add_master(cluster: &mut Cluster) -> (usize, String) {
    let seed = cluster.seed_addr();
    let password = cluster.password().map(str::to_string);
    let server = cluster.start_like_node();
    let id = bulk_string(&server.cmd(&[b"CLUSTER", b"MYID"]));
    let addr = server.addr();
    let index = cluster.adopt(server, id.clone());
    cluster_cli(&["add-node", &addr, &seed], password.as_deref());
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let nodes: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|s| s.is_running())
        .map(Server::addr)
        .collect();
    loop {
        let missing: Vec<&String> = nodes
            .iter()
            .filter(|a| {
                !cluster_nodes(a, password.as_deref())
                    .is_ok_and(|ns| ns.len() == nodes.len() && ns.iter().all(|n| n.usable))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after add-node of {addr}, {missing:?} do not know every node yet"
        );
        thread::sleep(Duration::from_millis(100));
    }
    wait_settled(&seed, password.as_deref());
    (index, id)
}

/// Valkey 9's atomic slot migration: `CLUSTER MIGRATESLOTS SLOTSRANGE first last NODE to_id`
/// sent to `node` (the slots' master), then waits until the job is finished on both ends and
/// every master sees `to_id` as the owner.
///
/// # Panics
/// If the command is refused, the job ends in any state but `success` (the message has its
/// state and message), or the cluster does not settle.
pub fn migrate_slots_atomic(node: &Server, first: u16, last: u16, to_id: &str) {
    let password = node.password();
    let before: BTreeSet<String> = slot_migrations(&node.addr(), password)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|j| j.name)
        .collect();
    let (a, b) = (first.to_string(), last.to_string());
    node.cmd(&[
        b"CLUSTER",
        b"MIGRATESLOTS",
        b"SLOTSRANGE",
        a.as_bytes(),
        b.as_bytes(),
        b"NODE",
        to_id.as_bytes(),
    ]);
    let to_addr = cluster_nodes(&node.addr(), password)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|n| n.id == to_id)
        .map(|n| n.addr)
        .unwrap_or_else(|| panic!("{} does not know node {to_id}", node.addr()));
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut name = None;
    loop {
        let jobs = slot_migrations(&node.addr(), password).unwrap_or_else(|e| panic!("{e}"));
        let mine = jobs.iter().find(|j| {
            name.as_ref()
                .map_or(!before.contains(&j.name), |n| &j.name == n)
        });
        if let Some(job) = mine {
            name = Some(job.name.clone());
            if job.finished() {
                assert!(
                    job.state == "success",
                    "slot migration {first}-{last} to {to_id} ended {:?}: {:?}",
                    job.state,
                    job.message
                );
                // The importing end reports its own copy of the job.
                let theirs = slot_migrations(&to_addr, password).unwrap_or_default();
                if theirs.iter().any(|j| j.name == job.name && j.finished()) {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "slot migration {first}-{last} to {to_id} not finished within {SETTLE_TIMEOUT:?}: {mine:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let stale: Vec<String> = masters_of(&node.addr(), password)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                let view = cluster_nodes(&m.addr, password).map(|n| owners(&n));
                !view.is_ok_and(|v| (first..=last).all(|s| v[s as usize].as_deref() == Some(to_id)))
            })
            .map(|m| m.addr)
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the slot migration, {stale:?} do not see {to_id} owning {first}-{last}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    wait_settled(&node.addr(), password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99 200 [5->-b2]
b2 127.0.0.1:7001@17001,host master - 0 0 2 connected 100-199 [5-<-a1]
c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected
";
        let n = parse_nodes(text);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].addr, "127.0.0.1:7000");
        assert_eq!(n[0].slots, vec![(0, 99), (200, 200)]);
        assert_eq!(n[0].moving, vec!["[5->-b2]".to_string()]);
        assert_eq!(n[1].addr, "127.0.0.1:7001");
        assert!(!n[2].master);
        let o = owners(&n);
        assert_eq!(o[99].as_deref(), Some("a1"));
        assert_eq!(o[150].as_deref(), Some("b2"));
        assert_eq!(o[201], None);
    }

    #[test]
    fn getslotmigrations_job() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let v = Value::Array(vec![
            s("name"),
            s("c7a4"),
            s("operation"),
            s("EXPORT"),
            s("slot_ranges"),
            s("0-999"),
            s("state"),
            s("waiting-to-snapshot"),
            s("cow_size"),
            Value::Int(0),
        ]);
        let j = parse_job(&v);
        assert_eq!(j.name, "c7a4");
        assert_eq!(j.slot_ranges, "0-999");
        assert!(!j.finished());
        let done = SlotMigrationJob {
            state: "success".into(),
            ..j
        };
        assert!(done.finished());
    }
}
