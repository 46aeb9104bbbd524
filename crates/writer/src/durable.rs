//! When an acknowledged write is durable on the target: held by a replica of the master
//! that acknowledged it, so that a SIGKILLed master whose replica is promoted loses none of
//! it.
//!
//! Where it sits: the shard's session asks before it lets its floor, its checkpoint or the
//! applied offset it reports move over what the writer's watermark says is acknowledged.
//! Why: the watermark moves on the masters' replies, and a master replies before its
//! replicas have the write. After a failover the session starts again from the floor, and
//! the floor must not lie about the new master.
//!
//! How, per master that has a replica (a cluster's `CLUSTER NODES` lists one not failed;
//! a standalone target's `INFO replication` reports one connected): on a connection of
//! its own, a `SET` of a scratch key the master owns, then `WAIT 1 <timeout>`. `WAIT` waits
//! for the writes of *its own client* only (`c->woff`, the master's replication offset just
//! after that client's last write); the writer's pipeline is another client. But one master
//! has one replication stream, in the order it executed commands: every write it
//! acknowledged to the writer before the `SET` ran lies before the `SET`'s offset, so one
//! replica acknowledging the `SET` has them all. The writer's connections are never
//! blocked by it. A master without replicas has nothing to wait for: its writes are as
//! durable as they will ever be.
//!
//! A failover between the acknowledgement and the check would let the check ask the new
//! master, which lacks the lost writes. So the check holds only while every node that has
//! answered a write of the writer is still a master owning slots: once one is gone,
//! nothing more is confirmed by this writer (it ends the session, see
//! `WriterOptions::end_on_lost_master`) and the next session continues from the floor,
//! with the slot markers of the new masters.

use std::collections::HashMap;
use std::time::Duration;

use rsm_client::{ConnectOptions, Connection, Endpoint};

use super::progress::slot_tag;
use super::target::read_slot_map;

/// How long one master's replicas may take to acknowledge, per check.
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Asks the target whether what its masters acknowledged is on a replica too.
pub struct Durability {
    /// The node named for the target: one more to ask for the slot map.
    target: Endpoint,
    connect: ConnectOptions,
    /// A cluster's masters come from its slot map; a standalone target has one master.
    cluster: bool,
    /// The db of a standalone target where the scratch key goes (`--targetdb`: the
    /// target's other dbs are not ours to write).
    db: u32,
    /// The masters seen last, to ask for the slot map first.
    known: Vec<Endpoint>,
    /// One connection per master, kept from one check to the next (they run every second
    /// or so); dropped when a check on it fails, so the next one connects afresh.
    conns: HashMap<Endpoint, Connection>,
}

impl Durability {
    pub fn new(target: Endpoint, connect: ConnectOptions, cluster: bool, db: u32) -> Durability {
        Durability {
            target,
            connect,
            cluster,
            db,
            known: Vec::new(),
            conns: HashMap::new(),
        }
    }

    /// `Ok` when every write the nodes in `answered` (the writer's
    /// [`super::Writer::answered_by`]) acknowledged before this call is on a replica of
    /// the node, or the node has none. `Err` says why not (yet).
    pub async fn confirm(&mut self, answered: &[Endpoint]) -> Result<(), String> {
        let owned = match (self.cluster, answered.first()) {
            // A standalone target's master is the node the writer wrote to: after a
            // failover, not the node named.
            (false, Some(master)) => HashMap::from([(master.clone(), 0)]),
            _ => self.owned_slots().await?,
        };
        self.known = owned.keys().cloned().collect();
        // A node that acknowledged writes and owns no slots now was replaced (or emptied):
        // what it acknowledged may be missing on its successor, and no WAIT can tell.
        let lost: Vec<String> = answered
            .iter()
            .filter(|m| !owned.contains_key(*m))
            .map(|m| m.to_string())
            .collect();
        if !lost.is_empty() {
            return Err(format!(
                "target master(s) {} no longer own slots: what they acknowledged may be lost",
                lost.join(", ")
            ));
        }
        // Every master at once: the check takes as long as the slowest, not their sum.
        let mut checks = tokio::task::JoinSet::new();
        for (ep, slot) in owned {
            let conn = self.conns.remove(&ep);
            let connect = self.connect.clone();
            let cluster = self.cluster;
            let db = self.db;
            checks.spawn(async move {
                // A stalled master holds up only its own check, and not for long.
                let one = confirm_one(conn, &ep, &connect, cluster, db, slot);
                let r = tokio::time::timeout(WAIT_TIMEOUT * 3, one)
                    .await
                    .unwrap_or_else(|_| Err("did not answer in time".into()));
                (ep, r)
            });
        }
        // Every check is waited for, so each good connection is kept; any failure fails
        // the whole confirmation (the last one names its master).
        let mut result = Ok(());
        while let Some(done) = checks.join_next().await {
            match done {
                Ok((ep, Ok(conn))) => {
                    self.conns.insert(ep, conn);
                }
                Ok((ep, Err(e))) => {
                    result = Err(format!("{ep}: {e}"));
                }
                Err(e) => result = Err(e.to_string()),
            }
        }
        result
    }

    /// Each master of the target now, with one slot it owns (0 for a standalone one).
    async fn owned_slots(&mut self) -> Result<HashMap<Endpoint, usize>, String> {
        if !self.cluster {
            return Ok(HashMap::from([(self.target.clone(), 0)]));
        }
        let mut seeds = self.known.clone();
        seeds.push(self.target.clone());
        // Every other node of the target known, for when the masters and the node named
        // are all gone (the named one dead for good, its replica promoted).
        for other in self.connect.seed_list() {
            if !seeds.contains(&other) {
                seeds.push(other);
            }
        }
        let mut last = String::from("no node to ask");
        for seed in seeds {
            let read = async {
                let mut c = Connection::connect(&seed, &self.connect)
                    .await
                    .map_err(|e| e.to_string())?;
                read_slot_map(&mut c, &seed)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(WAIT_TIMEOUT, read).await {
                Ok(Ok(map)) => {
                    // One slot per master: its scratch key must hash to a slot the master
                    // owns, or the SET is answered with MOVED.
                    let mut out = HashMap::new();
                    for (slot, owner) in map.slot_owners().enumerate() {
                        if let Some(ep) = owner.and_then(|i| map.owners().get(i)) {
                            out.entry(ep.clone()).or_insert(slot);
                        }
                    }
                    return Ok(out);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{seed} did not give its slot map in time"),
            }
        }
        Err(last)
    }
}

/// One master: its replicas, and if it has any, `SET` + `WAIT 1` on our own connection.
/// Gives the connection back for the next check.
async fn confirm_one(
    conn: Option<Connection>,
    ep: &Endpoint,
    connect: &ConnectOptions,
    cluster: bool,
    db: u32,
    slot: usize,
) -> Result<Connection, String> {
    let mut c = match conn {
        Some(c) => c,
        None => {
            let mut c = Connection::connect(ep, connect)
                .await
                .map_err(|e| e.to_string())?;
            // The scratch key goes into the tool's db (see `db`).
            if !cluster && db != 0 {
                c.request_ok(&["SELECT", &db.to_string()])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            c
        }
    };
    // Asked of the master itself, each time, since replicas come and go: without one
    // there is nothing to wait for, and WAIT would only sit out its timeout and answer 0.
    let replicas = if cluster {
        let nodes = c
            .request_text(&["CLUSTER", "NODES"])
            .await
            .map_err(|e| e.to_string())?;
        replicas_in_cluster_nodes(&nodes)
    } else {
        let info = c.info("replication").await.map_err(|e| e.to_string())?;
        info.iter()
            .find(|(k, _)| k == "connected_slaves")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    if replicas == 0 {
        return Ok(c);
    }
    // A key of the tool's own shape (`cleanup` removes it, `verify` passes over it). Its
    // value only says when it was last checked: any SET is a write that enters the
    // master's replication stream, which is all WAIT needs.
    let key = format!("__rsm:durable:{{{}}}", slot_tag(slot));
    let stamp = rsm_counters::now_ms().to_string();
    // A MOVED here means the master lost the slot since the map was read: not confirmed.
    c.request_ok(&[b"SET".as_slice(), key.as_bytes(), stamp.as_bytes()])
        .await
        .map_err(|e| e.to_string())?;
    let ms = WAIT_TIMEOUT.as_millis().to_string();
    let acked = c
        .request_ok(&["WAIT", "1", ms.as_str()])
        .await
        .map_err(|e| e.to_string())?
        .as_int()
        .unwrap_or(0);
    // WAIT answers how many replicas have the SET, at the latest when its timeout ends:
    // none (a replica lagging or cut off) means not confirmed yet; the caller asks again.
    if acked < 1 {
        return Err(format!(
            "no replica of its {replicas} acknowledged within {} ms",
            WAIT_TIMEOUT.as_millis()
        ));
    }
    Ok(c)
}

/// Replicas of the node that says `myself`, not failed. A replica marked `fail?` (suspected)
/// still counts: until the cluster agrees it is gone, it may be the one promoted.
fn replicas_in_cluster_nodes(text: &str) -> usize {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let Some(me) = lines.iter().find_map(|f| {
        let flags = f.get(2)?;
        flags
            .split(',')
            .any(|x| x == "myself")
            .then_some(*f.first()?)
    }) else {
        return 0;
    };
    lines
        .iter()
        .filter(|f| {
            let flags: Vec<&str> = f.get(2).map_or(Vec::new(), |s| s.split(',').collect());
            f.get(3) == Some(&me)
                && flags.iter().any(|x| *x == "slave" || *x == "replica")
                && !flags.contains(&"fail")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_replicas_of_myself_that_have_not_failed() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-16383
a2 127.0.0.1:7002@17002 slave a1 0 0 1 connected
a3 127.0.0.1:7003@17003 slave,fail a1 0 0 1 disconnected
a4 127.0.0.1:7004@17004 slave,fail? a1 0 0 1 connected
b2 127.0.0.1:7005@17005 slave b1 0 0 2 connected
";
        assert_eq!(replicas_in_cluster_nodes(nodes), 2);
        assert_eq!(replicas_in_cluster_nodes("garbage"), 0);
    }
}
