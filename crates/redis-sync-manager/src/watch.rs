//! The topology watch: every few seconds, read the source's `CLUSTER NODES`
//! from every known node and say loudly (WARN in the manager's log, and
//! `topology_warnings` in `/status`) when something changed that the running
//! plan does not cover:
//!
//! - a slot starts or stops migrating (keys move between shards while both
//!   shards' streams are replayed independently, so a move's `DEL` on the old
//!   owner may reach the target after the new owner's writes — reference §E5);
//! - a shard appears or disappears, or slots change owner (the plan is stale:
//!   a new shard is not synced until the manager restarts);
//! - a shard's master changes (a failover; the engine follows it by itself)
//!   or is failing.
//!
//! It only reads; it never changes the source nor stops a shard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rsm_client::{ConnectOptions, Connection, Endpoint};
use rsm_cluster::{display_ranges, parse_cluster_nodes, Node, Topology};
use rsm_status::http::TopologyWarnings;
use tokio::sync::watch;

/// How often the topology is read.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
/// At most this many nodes are asked per round (markers are only on each
/// node's own line, so every master is asked).
const MAX_NODES: usize = 64;

/// What the watch compares between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summary {
    /// Slot ranges of each shard → (master id, master address).
    shards: BTreeMap<String, (String, String)>,
    /// Masters that serve slots and are flagged `fail`/`fail?`.
    failing: BTreeSet<String>,
    /// (slot, from address, to address) for every slot being moved.
    moving: BTreeSet<(u16, String, String)>,
}

fn summarize(topology: &Topology, asked: &Endpoint) -> Summary {
    let mut addr_of: BTreeMap<String, String> = BTreeMap::new();
    let all = topology
        .shards
        .iter()
        .flat_map(|s| std::iter::once(&s.master).chain(&s.replicas))
        .chain(&topology.empty_masters)
        .chain(&topology.orphan_replicas);
    for n in all.clone() {
        addr_of.insert(n.id.to_string(), node_addr(n, asked));
    }
    let name = |id: &str| {
        addr_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("node {id}"))
    };
    let mut s = Summary::default();
    for shard in &topology.shards {
        let addr = node_addr(&shard.master, asked);
        s.shards.insert(
            display_ranges(&shard.slots),
            (shard.master.id.to_string(), addr.clone()),
        );
        if shard.master.flags.failing() {
            s.failing.insert(addr);
        }
    }
    for n in all {
        for (slot, to) in &n.migrating {
            s.moving
                .insert((slot.get(), name(n.id.as_str()), name(to.as_str())));
        }
        for (slot, from) in &n.importing {
            s.moving
                .insert((slot.get(), name(from.as_str()), name(n.id.as_str())));
        }
    }
    s
}

fn node_addr(n: &Node, asked: &Endpoint) -> String {
    n.addr.endpoint(&asked.host)
}

/// The operator-facing lines for what changed from `old` to `new`.
fn changes(old: &Summary, new: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for (slot, from, to) in new.moving.difference(&old.moving) {
        out.push(format!(
            "slot {slot} is migrating from {from} to {to} in the source: keys that move while \
             the sync runs may be deleted in the target after they were written there; wait \
             for the migration to finish, then verify the target or restart the manager"
        ));
    }
    for (slot, from, to) in old.moving.difference(&new.moving) {
        out.push(format!(
            "slot {slot} is no longer migrating ({from} -> {to}); if it moved, restart the \
             manager so the plan matches the source, and verify the target"
        ));
    }
    for (slots, (id, addr)) in &new.shards {
        match old.shards.get(slots) {
            Some((old_id, old_addr)) if old_id != id => out.push(format!(
                "the master of slots {slots} changed from {old_addr} to {addr} (a failover); \
                 the shard follows it"
            )),
            Some(_) => {}
            None => out.push(format!(
                "slots {slots} are now a shard of their own, served by {addr}: the source was \
                 resharded or a shard was added; it is not synced as planned until the manager \
                 is restarted"
            )),
        }
    }
    for (slots, (_, addr)) in &old.shards {
        if !new.shards.contains_key(slots) {
            out.push(format!(
                "the shard of slots {slots} (was {addr}) no longer exists in this form: the \
                 source was resharded or a shard was removed; restart the manager once it has \
                 settled"
            ));
        }
    }
    for addr in new.failing.difference(&old.failing) {
        out.push(format!(
            "master {addr} of the source is failing; its shard waits for a failover and then \
             follows the new master"
        ));
    }
    out
}

/// Read every known node's view; `None` when no node answered.
async fn read_topology(
    known: &mut Vec<Endpoint>,
    opts: &ConnectOptions,
) -> Option<(Topology, Endpoint)> {
    let mut views = Vec::new();
    let mut asked = None;
    let mut learnt = Vec::new();
    for endpoint in known.iter().take(MAX_NODES) {
        let Ok(mut conn) = Connection::connect(endpoint, opts).await else {
            continue;
        };
        let Ok(text) = conn.request_text(&["CLUSTER", "NODES"]).await else {
            continue;
        };
        let Ok(nodes) = parse_cluster_nodes(&text) else {
            continue;
        };
        learnt.extend(
            nodes
                .iter()
                .filter(|n| !n.flags.handshake && !n.flags.noaddr && !n.flags.fail)
                .filter_map(|n| n.addr.endpoint(&endpoint.host).parse::<Endpoint>().ok()),
        );
        asked.get_or_insert_with(|| endpoint.clone());
        views.push(nodes);
    }
    for e in learnt {
        if !known.contains(&e) {
            known.push(e);
        }
    }
    let asked = asked?;
    Some((Topology::from_views(views), asked))
}

/// Watch until `stop` turns true.
pub async fn watch_topology(
    seeds: Vec<Endpoint>,
    source: ConnectOptions,
    warnings: TopologyWarnings,
    mut stop: watch::Receiver<bool>,
) {
    let interval = std::env::var("RSM_TOPOLOGY_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_INTERVAL);
    let mut opts = source;
    opts.connect_timeout = Duration::from_secs(2);
    opts.io_timeout = Duration::from_secs(5);
    let mut known = seeds;
    let mut last: Option<Summary> = None;
    let mut unreachable_said = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Some((topology, asked)) = read_topology(&mut known, &opts).await else {
            if !unreachable_said {
                let message =
                    "no node of the source answers CLUSTER NODES; topology changes cannot be seen"
                        .to_string();
                tracing::warn!("TOPOLOGY: {message}");
                warnings.push(message);
                unreachable_said = true;
            }
            continue;
        };
        unreachable_said = false;
        let now = summarize(&topology, &asked);
        // The first round is the baseline (the pre-flight check refused a
        // source with slots in motion), except for what is already moving.
        let before = last.clone().unwrap_or_else(|| Summary {
            moving: BTreeSet::new(),
            failing: BTreeSet::new(),
            ..now.clone()
        });
        for message in changes(&before, &now) {
            tracing::warn!("TOPOLOGY: {message}");
            warnings.push(message);
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn summary(text: &str) -> Summary {
        let t = Topology::from_views(vec![parse_cluster_nodes(text).unwrap()]);
        summarize(&t, &Endpoint::new("127.0.0.1", 1))
    }

    #[test]
    fn migration_failover_and_new_shard_are_reported() {
        let base = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 slave {A} 0 0 1 connected\n"
        ));
        let moving = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191 [100->-{B}]\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n"
        ));
        let msgs = changes(&base, &moving);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].starts_with("slot 100 is migrating from 127.0.0.1:7000 to 127.0.0.1:7001"),
            "{msgs:?}"
        );
        assert!(changes(&moving, &moving).is_empty());

        let failed_over = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,slave {C} 0 0 3 connected\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 master - 0 0 3 connected 0-8191\n"
        ));
        let msgs = changes(&base, &failed_over);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("changed from 127.0.0.1:7000 to 127.0.0.1:7002"));

        let resharded = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-4095\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 master - 0 0 4 connected 4096-8191\n"
        ));
        let msgs = changes(&base, &resharded);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("slots 4096-8191 are now")));
        assert!(msgs.iter().any(|m| m.contains("slots 0-8191 (was")));
    }
}
