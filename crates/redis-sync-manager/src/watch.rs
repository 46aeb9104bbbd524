//! The topology watch: every few seconds (and whenever `/status` asks), read the
//! source's `CLUSTER NODES` from every known node, and its slot-migration jobs, and
//!
//! - say loudly (WARN in the log, `topology_warnings` in `/status`) what changed: a slot
//!   migrating, a shard added or removed, slots changing owner, a failover, a failing
//!   master;
//! - say what keeps the run from being ready now (`topology_blocking`): slots migrating
//!   or importing, a slot-migration job running (Valkey 9 `CLUSTER MIGRATESLOTS`), nodes
//!   that do not agree on who owns a slot, or shards whose slots differ from the shards
//!   being synced — while any of that holds, the keys of those slots may still change
//!   hands in the target, and a cut-over would lose or keep the wrong ones;
//! - once the source has settled (nothing moving, every node agreeing, the same shards
//!   two rounds in a row) and its shards differ from the ones being synced, hand the new
//!   topology to the manager, which re-plans (see `run.rs`).
//!
//! It only reads the source; it never changes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsm_client::{ConnectOptions, Connection, Endpoint};
use rsm_cluster::{
    display_ranges, parse_cluster_nodes, ranges_of, Node, Slot, SlotRange, Topology, SLOT_COUNT,
};
use rsm_resp::Frame;
use rsm_status::http::TopologyWarnings;
use tokio::sync::{mpsc, watch};

/// How often the topology is read when nobody asks sooner.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many nodes are asked per round (markers are only on each
/// node's own line, so every master is asked).
const MAX_NODES: usize = 64;
/// Slot-migration job states that mean the job is over (Valkey 9 `GETSLOTMIGRATIONS`).
const JOB_OVER: &[&str] = &["success", "failed", "cancelled", "canceled"];

/// The slot sets of the shards the manager syncs now, as `display_ranges` shows them:
/// written by the manager when it (re)plans, read by the watch each round.
pub type Planned = Arc<Mutex<BTreeSet<String>>>;

/// What the watch compares between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summary {
    /// Slot ranges of each shard → (master id, master address).
    shards: BTreeMap<String, (String, String)>,
    /// Masters that serve slots and are flagged `fail`/`fail?`.
    failing: BTreeSet<String>,
    /// (slot, from address, to address) for every slot being moved.
    moving: BTreeSet<(u16, String, String)>,
    /// Slots whose owner some node's view gives differently from the others.
    disagree: Vec<SlotRange>,
    /// Slot-migration jobs not over: "slots on node (state)".
    jobs: BTreeSet<String>,
}

impl Summary {
    /// Nothing moving, nobody disagreeing: the owners read are the owners.
    fn still(&self) -> bool {
        self.moving.is_empty() && self.jobs.is_empty() && self.disagree.is_empty()
    }
}

/// One round's reading: every view, and the jobs each node reported.
struct Reading {
    topology: Topology,
    asked: Endpoint,
    views: Vec<Vec<Node>>,
    jobs: BTreeSet<String>,
}

fn summarize(r: &Reading) -> Summary {
    let (topology, asked) = (&r.topology, &r.asked);
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
    s.disagree = disagreeing_slots(topology, &r.views);
    s.jobs = r.jobs.clone();
    s
}

/// The owner of every slot in one list of nodes (`None`: unassigned).
fn owners<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<Option<&'a str>> {
    let mut by_slot = vec![None; usize::from(SLOT_COUNT)];
    for n in nodes.filter(|n| n.is_master()) {
        for r in &n.slots {
            for slot in r.start().get()..=r.end().get() {
                if let Some(o) = by_slot.get_mut(usize::from(slot)) {
                    *o = Some(n.id.as_str());
                }
            }
        }
    }
    by_slot
}

/// Slots some view gives another owner than the merged topology does: mid-move, a node
/// that has not yet heard of a `SETSLOT … NODE` still names the old owner.
fn disagreeing_slots(topology: &Topology, views: &[Vec<Node>]) -> Vec<SlotRange> {
    let merged = owners(topology.shards.iter().map(|s| &s.master));
    let mut differ = Vec::new();
    for view in views {
        for (slot, (seen, agreed)) in owners(view.iter()).iter().zip(&merged).enumerate() {
            // A view with the slot unassigned is a node that knows less, not a claim.
            if seen.is_some() && seen != agreed {
                differ.push(slot as u16);
            }
        }
    }
    ranges_of(differ.into_iter().filter_map(Slot::new))
}

fn node_addr(n: &Node, asked: &Endpoint) -> String {
    n.addr.endpoint(&asked.host)
}

/// What keeps a cut-over from being safe now, in words for the operator (empty: nothing).
fn blocking(now: &Summary, planned: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut moving: BTreeMap<(&str, &str), Vec<u16>> = BTreeMap::new();
    for (slot, from, to) in &now.moving {
        moving.entry((from, to)).or_default().push(*slot);
    }
    for ((from, to), slots) in moving {
        out.push(format!(
            "slots {} are migrating from {from} to {to}",
            display_ranges(&ranges_of(slots.into_iter().filter_map(Slot::new)))
        ));
    }
    for job in &now.jobs {
        out.push(format!("a slot-migration job is running: {job}"));
    }
    if !now.disagree.is_empty() {
        out.push(format!(
            "the source's nodes do not agree yet on who owns slots {}",
            display_ranges(&now.disagree)
        ));
    }
    let current: BTreeSet<&String> = now.shards.keys().collect();
    let synced: BTreeSet<&String> = planned.iter().collect();
    if current != synced {
        let gone: Vec<&str> = synced.difference(&current).map(|s| s.as_str()).collect();
        let new: Vec<&str> = current.difference(&synced).map(|s| s.as_str()).collect();
        out.push(format!(
            "the source's shards changed (now slots {}; synced as {}): the shards that \
             gained or lost slots are copied again from their new owners",
            new.join(" | "),
            gone.join(" | ")
        ));
    }
    out
}

/// The slots moving, grouped by (from, to), as ranges.
fn moving_groups(moving: &BTreeSet<(u16, String, String)>) -> BTreeMap<(&str, &str), String> {
    let mut by_pair: BTreeMap<(&str, &str), Vec<Slot>> = BTreeMap::new();
    for (slot, from, to) in moving {
        by_pair
            .entry((from, to))
            .or_default()
            .extend(Slot::new(*slot));
    }
    by_pair
        .into_iter()
        .map(|(pair, slots)| (pair, display_ranges(&ranges_of(slots))))
        .collect()
}

/// The operator-facing lines for what changed from one round to the next: slots
/// starting to move and all moves over (one line each, not one per slot: a reshard moves
/// thousands), jobs started, masters failing. Shard changes are said once the source has
/// settled (see [`shard_changes`]): a reshard passes through a new shape every round.
fn changes(old: &Summary, new: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    if old.moving.is_empty() && !new.moving.is_empty() {
        for ((from, to), slots) in moving_groups(&new.moving) {
            out.push(format!(
                "slots {slots} are migrating from {from} to {to} in the source: not ready for \
                 cut-over until the moves are over and the shards that gained or lost slots \
                 copied them again from their new owners"
            ));
        }
    }
    if !old.moving.is_empty() && new.moving.is_empty() {
        out.push("no slot is migrating in the source any more".to_string());
    }
    for job in new.jobs.difference(&old.jobs) {
        out.push(format!("a slot-migration job started: {job}"));
    }
    for addr in new.failing.difference(&old.failing) {
        out.push(format!(
            "master {addr} of the source is failing; its shard waits for a failover and then \
             follows the new master"
        ));
    }
    out
}

/// The operator-facing lines for how the shards changed between two settled readings.
fn shard_changes(old: &Summary, new: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for (slots, (id, addr)) in &new.shards {
        match old.shards.get(slots) {
            Some((old_id, old_addr)) if old_id != id => out.push(format!(
                "the master of slots {slots} changed from {old_addr} to {addr} (a failover); \
                 the shard follows it"
            )),
            Some(_) => {}
            None => out.push(format!(
                "slots {slots} are now a shard of their own, served by {addr}: synced from there"
            )),
        }
    }
    for (slots, (_, addr)) in &old.shards {
        if !new.shards.contains_key(slots) {
            out.push(format!(
                "the shard of slots {slots} (was {addr}) no longer exists in this form: its \
                 sync ends, and the shards now serving its slots copy them"
            ));
        }
    }
    out
}

/// A node's slot-migration jobs that are not over (none where the command is unknown:
/// servers before Valkey 9).
async fn running_jobs(conn: &mut Connection, out: &mut BTreeSet<String>) {
    let Ok(Frame::Array(jobs)) = conn.request(&["CLUSTER", "GETSLOTMIGRATIONS"]).await else {
        return;
    };
    let at = conn.endpoint().to_string();
    for job in jobs {
        let fields = job_fields(job);
        let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("?");
        if JOB_OVER.contains(&field("state")) {
            continue;
        }
        out.insert(format!(
            "{} of slots {} on {at} ({})",
            field("operation").to_ascii_lowercase(),
            field("slot_ranges"),
            field("state")
        ));
    }
}

/// A job as name → value, from the flat array (RESP2) or map (RESP3) it comes as.
fn job_fields(job: Frame) -> BTreeMap<String, String> {
    let text = |f: &Frame| match f {
        Frame::Bulk(b) | Frame::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Integer(i) => i.to_string(),
        _ => String::new(),
    };
    match job {
        Frame::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?), text(kv.get(1)?))))
            .collect(),
        Frame::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        _ => BTreeMap::new(),
    }
}

/// Read every known node's view; `None` when no node answered.
async fn read_topology(known: &mut Vec<Endpoint>, opts: &ConnectOptions) -> Option<Reading> {
    let mut views = Vec::new();
    let mut asked = None;
    let mut learnt = Vec::new();
    let mut jobs = BTreeSet::new();
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
        if nodes.iter().any(|n| n.flags.myself && n.is_master()) {
            running_jobs(&mut conn, &mut jobs).await;
        }
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
    Some(Reading {
        topology: Topology::from_views(views.clone()),
        asked,
        views,
        jobs,
    })
}

/// Where the watch's findings go.
pub struct WatchOutputs {
    /// Warnings and what blocks a cut-over, for `/status` and `/metrics`.
    pub warnings: TopologyWarnings,
    /// The shards being synced now (written by the manager).
    pub planned: Planned,
    /// A settled topology whose shards differ from the planned ones, for the manager to
    /// re-plan from. Full (the manager busy with the last one): the next round tries again.
    pub replan: mpsc::Sender<Topology>,
}

/// Watch until `stop` turns true.
pub async fn watch_topology(
    seeds: Vec<Endpoint>,
    source: ConnectOptions,
    out: WatchOutputs,
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
    // The last settled reading: shard changes are said between two of them.
    let mut calm: Option<Summary> = None;
    let mut unreachable_said = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = out.warnings.refresh_requested() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Some(reading) = read_topology(&mut known, &opts).await else {
            if !unreachable_said {
                let message =
                    "no node of the source answers CLUSTER NODES; topology changes cannot be seen"
                        .to_string();
                tracing::warn!("TOPOLOGY: {message}");
                out.warnings.push(message.clone());
                unreachable_said = true;
            }
            out.warnings.set_blocking(vec![message_unreadable()]);
            continue;
        };
        unreachable_said = false;
        let now = summarize(&reading);
        round(&out, &now, last.as_ref(), &mut calm, reading.topology);
        last = Some(now);
    }
}

/// One round's outcome: what to say, the gate, and a re-plan once the source has settled.
fn round(
    out: &WatchOutputs,
    now: &Summary,
    last: Option<&Summary>,
    calm: &mut Option<Summary>,
    topology: Topology,
) {
    // The first round is the baseline for the warnings (the pre-flight check refused
    // a source with slots in motion), except for what is already moving.
    let before = last.cloned().unwrap_or_else(|| Summary {
        moving: BTreeSet::new(),
        failing: BTreeSet::new(),
        jobs: BTreeSet::new(),
        ..now.clone()
    });
    let planned = out
        .planned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    out.warnings.set_blocking(blocking(now, &planned));
    // Settled: nothing moving now nor in the round before, and the same shards twice.
    // A reshard moves slot after slot, and between two slots nothing is marked
    // moving; the second round keeps the manager from re-planning in such a gap.
    let settled = now.still() && last.is_some_and(|l| l.still() && l.shards == now.shards);
    let mut said = changes(&before, now);
    if settled {
        let base = calm.get_or_insert_with(|| now.clone());
        said.extend(shard_changes(base, now));
        *base = now.clone();
    }
    for message in said {
        tracing::warn!("TOPOLOGY: {message}");
        out.warnings.push(message);
    }
    let differs = now.shards.keys().ne(planned.iter());
    if settled && differs {
        // Full: the manager is still carrying out the last one; asked again next round.
        let _ = out.replan.try_send(topology);
    }
}

fn message_unreadable() -> String {
    "no node of the source answers CLUSTER NODES: whether its slots are moving is unknown"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn summary(text: &str) -> Summary {
        let views = vec![parse_cluster_nodes(text).unwrap()];
        summarize(&Reading {
            topology: Topology::from_views(views.clone()),
            asked: Endpoint::new("127.0.0.1", 1),
            views,
            jobs: BTreeSet::new(),
        })
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
            msgs[0].starts_with("slots 100 are migrating from 127.0.0.1:7000 to 127.0.0.1:7001"),
            "{msgs:?}"
        );
        assert!(changes(&moving, &moving).is_empty());
        assert_eq!(
            changes(&moving, &base),
            vec!["no slot is migrating in the source any more".to_string()]
        );

        let failed_over = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,slave {C} 0 0 3 connected\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 master - 0 0 3 connected 0-8191\n"
        ));
        let msgs = shard_changes(&base, &failed_over);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("changed from 127.0.0.1:7000 to 127.0.0.1:7002"));

        let resharded = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-4095\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 master - 0 0 4 connected 4096-8191\n"
        ));
        let msgs = shard_changes(&base, &resharded);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("slots 4096-8191 are now")));
        assert!(msgs.iter().any(|m| m.contains("slots 0-8191 (was")));
    }

    #[test]
    fn moving_slots_jobs_and_unmatched_shards_block_a_cutover() {
        let base = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n"
        ));
        let planned: BTreeSet<String> = base.shards.keys().cloned().collect();
        assert!(blocking(&base, &planned).is_empty());
        assert!(base.still());

        let moving = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191 [100->-{B}] [101->-{B}]\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n"
        ));
        let why = blocking(&moving, &planned);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("slots 100-101 are migrating"), "{why:?}");
        assert!(!moving.still());

        // Between two slots of a reshard nothing is marked, but the owners changed.
        let moved = summary(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99 102-8191\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 3 connected 100-101 8192-16383\n"
        ));
        let why = blocking(&moved, &planned);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("the source's shards changed"), "{why:?}");
        let now: BTreeSet<String> = moved.shards.keys().cloned().collect();
        assert!(blocking(&moved, &now).is_empty());

        let mut job = base.clone();
        job.jobs
            .insert("import of slots 0-999 on 127.0.0.1:7001 (snapshotting)".into());
        let why = blocking(&job, &planned);
        assert!(
            why[0].starts_with("a slot-migration job is running"),
            "{why:?}"
        );
        assert!(!job.still());
    }

    #[test]
    fn a_node_that_names_another_owner_is_disagreement() {
        let a_view = parse_cluster_nodes(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 3 connected 100-16383\n"
        ))
        .unwrap();
        // B has not heard yet that slots 50-99 moved to it... and claims them already,
        // while A still serves them: the merged owner is one of them, the other differs.
        let b_view = parse_cluster_nodes(&format!(
            "{A} 127.0.0.1:7000@17000 master - 0 0 1 connected 0-49\n\
             {B} 127.0.0.1:7001@17001 myself,master - 0 0 4 connected 50-16383\n"
        ))
        .unwrap();
        let views = vec![a_view.clone(), b_view];
        let topology = Topology::from_views(views.clone());
        assert_eq!(
            display_ranges(&disagreeing_slots(&topology, &views)),
            "50-99"
        );
        let agreed = vec![a_view];
        let topology = Topology::from_views(agreed.clone());
        assert!(disagreeing_slots(&topology, &agreed).is_empty());
    }

    #[test]
    fn slot_migration_jobs_are_read_from_either_reply_shape() {
        let bulk = |s: &str| Frame::Bulk(bytes::Bytes::from(s.to_string()));
        let flat = Frame::Array(vec![
            bulk("operation"),
            bulk("IMPORT"),
            bulk("slot_ranges"),
            bulk("0-999"),
            bulk("state"),
            bulk("success"),
        ]);
        let f = job_fields(flat);
        assert_eq!(f.get("state").map(String::as_str), Some("success"));
        assert_eq!(f.get("slot_ranges").map(String::as_str), Some("0-999"));
        let map = Frame::Map(vec![(bulk("state"), bulk("snapshotting"))]);
        assert_eq!(
            job_fields(map).get("state").map(String::as_str),
            Some("snapshotting")
        );
    }
}
