//! Pre-flight: what would stop the sync later, asked before anything forks or writes.
//!
//! Where it sits: [`crate::discover`] calls it once the plan's nodes and the target are
//! known, before any `PSYNC`. Why: every check here used to be found out later, after a
//! source fork per shard (a read-only target stopped every shard on `READONLY` once its
//! snapshot was made) or after writing (a db the target lacks stopped the shard after its
//! db-0 keys were in). Each refusal is one line naming what is wrong and the ways out.
//!
//! It reads only: `INFO`, `CONFIG GET` (optional: managed services refuse it) and `SCAN`
//! of the source nodes the plan syncs from (a replica with `--sync-role=slave`).
//!
//! The dbs rule: every db the source holds keys in (that `--filterkey` keeps) must have a
//! place in the target (see `TargetDb::place`), and so must every db a source cluster can
//! write to (its `cluster-databases`, Valkey 9+), used yet or not: a stream write to a db
//! the target lacks would stop its shard mid-sync. A standalone source is held to the
//! first half only: every standalone server has 16 dbs, which would refuse each one into
//! a cluster, and its dbs in use are what operators mean to move.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use rsm_client::{info_field, ConnectOptions, Connection, Endpoint};
use rsm_command::filter::KeyPrefixes;
use rsm_writer::sync_marker::{glob_prefix, MARKER_PREFIX};

use crate::discover::DiscoverError;

/// How many keys a refusal names.
const NAMED: usize = 5;
/// `COUNT` of each `SCAN` step: large enough that a million keys take a second or so.
const SCAN_COUNT: usize = 1000;

/// What pre-flight looks at: the source nodes the plan syncs from, and the target.
pub struct Sides<'a> {
    /// The source is a cluster: its `cluster-databases` bounds the dbs its stream can
    /// write to.
    pub source_cluster: bool,
    pub source_nodes: &'a [Endpoint],
    pub source: &'a ConnectOptions,
    pub target: &'a crate::discover::TargetFacts,
    pub target_connect: &'a ConnectOptions,
}

/// Every check, in order: the target takes writes, then the source's keyspace fits it.
pub async fn check(
    sides: Sides<'_>,
    filter: &KeyPrefixes,
    target_db: Option<u32>,
) -> Result<(), DiscoverError> {
    let target = sides.target;
    let target_opts = opts(sides.target_connect);
    target_accepts_writes(&target.masters, target.cluster, &target_opts).await?;
    let dbs = TargetDbs {
        cluster: target.cluster,
        databases: target_databases(target, &target_opts).await?,
        target_db,
    };
    source_keyspace(sides.source_nodes, sides.source, filter, dbs).await?;
    if sides.source_cluster {
        source_capacity(sides.source_nodes, sides.source, dbs).await?;
    }
    Ok(())
}

/// A target that cannot take writes, found before any source forks.
///
/// `nodes`: the masters to ask (a cluster's, from `CLUSTER NODES`), or the target itself.
async fn target_accepts_writes(
    nodes: &[Endpoint],
    cluster: bool,
    connect: &ConnectOptions,
) -> Result<(), DiscoverError> {
    for node in nodes {
        let mut conn = Connection::connect(node, connect).await?;
        if let Some(why) = refuses_writes(&mut conn, cluster).await? {
            return Err(DiscoverError::TargetReadOnly {
                endpoint: node.clone(),
                why,
            });
        }
    }
    Ok(())
}

/// Why this node would refuse our writes, if it would.
async fn refuses_writes(
    conn: &mut Connection,
    cluster: bool,
) -> Result<Option<String>, DiscoverError> {
    let repl = conn.info("replication").await?;
    // A cluster's replica redirects writes to its master: only a standalone one is a dead end.
    if !cluster && info_field(&repl, "role") == Some("slave") {
        let master = match (
            info_field(&repl, "master_host"),
            info_field(&repl, "master_port"),
        ) {
            (Some(h), Some(p)) => format!(" of {h}:{p}"),
            _ => String::new(),
        };
        return Ok(Some(format!(
            "it is a read-only replica{master} (role:slave); point --target at the master, or run REPLICAOF NO ONE on it first"
        )));
    }
    // `min_slaves_good_slaves` is in INFO only while min-replicas-to-write is on.
    if let Some(good) = info_field(&repl, "min_slaves_good_slaves").and_then(|v| v.parse().ok()) {
        let needed = config_u64(conn, "min-replicas-to-write").await?;
        if let Some(needed) = needed.filter(|n| *n > good) {
            return Ok(Some(format!(
                "it refuses writes with NOREPLICAS: min-replicas-to-write is {needed} and {good} replica(s) are in reach; connect its replicas or lower the setting"
            )));
        }
    }
    let memory = conn.info("memory").await?;
    let num = |k: &str| info_field(&memory, k).and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(used)) = (num("maxmemory"), num("used_memory")) {
        let policy = info_field(&memory, "maxmemory_policy").unwrap_or("");
        if max > 0 && used >= max && policy == "noeviction" {
            return Ok(Some(format!(
                "it is full: used_memory {used} of maxmemory {max} with maxmemory-policy noeviction, so every write gets OOM; raise maxmemory or free memory first"
            )));
        }
    }
    Ok(None)
}

async fn config_u64(conn: &mut Connection, name: &str) -> Result<Option<u64>, DiscoverError> {
    Ok(conn.config_number(name).await?)
}

/// What the target can hold, for [`source_keyspace`] and [`source_capacity`].
#[derive(Debug, Clone, Copy)]
struct TargetDbs {
    pub cluster: bool,
    /// How many dbs the target has, when `CONFIG GET` answers (see [`target_databases`]).
    pub databases: Option<u32>,
    /// `--targetdb`.
    pub target_db: Option<u32>,
}

impl TargetDbs {
    fn map(&self) -> rsm_command::TargetDb {
        rsm_command::TargetDb::new(self.target_db)
    }

    /// Can a key of source db `db` be written?
    fn holds(&self, db: u32) -> bool {
        self.map().place(db, self.cluster, self.databases).is_some()
    }

    /// The dbs of a source of `databases` dbs that have no place in the target, as text
    /// (`1-15`); `None` when every one has.
    fn lacking(&self, databases: u32) -> Option<String> {
        if self.map().fits_all(databases, self.cluster, self.databases) {
            return None;
        }
        let last = databases.checked_sub(1)?;
        let first = (0..last).find(|db| !self.holds(*db)).unwrap_or(last);
        Some(match first == last {
            true => last.to_string(),
            false => format!("{first}-{last}"),
        })
    }

    /// What the target has, for a refusal.
    fn has(&self) -> String {
        match (self.cluster, self.databases) {
            (true, None) => {
                "the target cluster has only db 0 (no cluster-databases: Redis, or Valkey before 9.0)".to_string()
            }
            (true, Some(0 | 1)) => "the target cluster has only db 0 (cluster-databases 1)".to_string(),
            (true, Some(n)) => format!(
                "the target cluster has cluster-databases {n} (db 0-{})",
                n.saturating_sub(1)
            ),
            (false, Some(n)) => {
                format!("the target has {n} databases (0-{})", n.saturating_sub(1))
            }
            (false, None) => "the target lacks them".to_string(),
        }
    }

    /// The `--targetdb` way out: db 0 on a cluster, the only one it takes.
    fn merge_way(&self) -> String {
        let n = if self.cluster { "0" } else { "N" };
        format!("--targetdb={n} (every source db merged into db {n}: a key name found in two dbs is then a conflict, settled by --rewrite or --skip-existing)")
    }

    /// A target with room for `need` dbs (unknown: "enough").
    fn enough(&self, need: Option<u32>) -> String {
        let need = need.map_or("enough".to_string(), |n| format!("{n} or more"));
        match self.cluster {
            true => format!("a target cluster configured with cluster-databases {need} (Valkey 9.0+), or a standalone target"),
            false => format!("a standalone target with databases {need}"),
        }
    }
}

/// How many dbs the target has: a standalone server's `databases`, the smallest
/// `cluster-databases` of a cluster's masters (Valkey 9+). `None` where `CONFIG GET` is
/// refused, or answers nothing (Redis has no `cluster-databases`): a cluster then has db
/// 0 only.
async fn target_databases(
    target: &crate::discover::TargetFacts,
    connect: &ConnectOptions,
) -> Result<Option<u32>, DiscoverError> {
    let (setting, nodes) = match target.cluster {
        true => ("cluster-databases", target.masters.as_slice()),
        false => ("databases", std::slice::from_ref(&target.endpoint)),
    };
    let mut least: Option<u32> = None;
    for node in nodes {
        let mut conn = Connection::connect(node, connect).await?;
        let n = config_u64(&mut conn, setting).await?;
        if let Some(n) = n.and_then(|n| u32::try_from(n).ok()) {
            least = Some(least.map_or(n, |l| l.min(n)));
        }
    }
    Ok(least)
}

/// A source cluster's `cluster-databases` against the target: a stream write to a db the
/// target lacks would stop its shard mid-sync, after the snapshot's other dbs were
/// written, so room for it is checked before the start, used yet or not. Where the source
/// refuses `CONFIG GET` (a least-privilege user) this is unknown, and the data path still
/// stops a shard at the first write it cannot place, before writing it.
async fn source_capacity(
    nodes: &[Endpoint],
    connect: &ConnectOptions,
    dbs: TargetDbs,
) -> Result<(), DiscoverError> {
    let mut most: Option<u32> = None;
    for node in nodes {
        let mut conn = Connection::connect(node, connect).await?;
        let n = config_u64(&mut conn, "cluster-databases").await?;
        if let Some(n) = n.and_then(|n| u32::try_from(n).ok()) {
            most = Some(most.map_or(n, |m| m.max(n)));
        }
    }
    let Some(databases) = most else {
        return Ok(());
    };
    match dbs.lacking(databases) {
        Some(lacking) => Err(DiscoverError::SourceDbsTargetLacks {
            databases,
            dbs: lacking,
            what: dbs.has(),
            ways: dbs.merge_way(),
            enough: dbs.enough(Some(databases)),
        }),
        None => Ok(()),
    }
}

/// The source's keyspace against what the sync can do with it, per node synced from:
/// keys under the tool's prefix (they would be overwritten by, or forge, its progress
/// records), and keys in dbs the target cannot hold.
async fn source_keyspace(
    nodes: &[Endpoint],
    connect: &ConnectOptions,
    filter: &KeyPrefixes,
    dbs: TargetDbs,
) -> Result<(), DiscoverError> {
    let mut reserved = 0usize;
    let mut named: Vec<String> = Vec::new();
    let mut lacking: BTreeSet<u32> = BTreeSet::new();
    let mut holders: BTreeSet<String> = BTreeSet::new();
    let mut unscanned = false;
    for node in nodes {
        let mut conn = Connection::connect(node, connect).await?;
        for db in dbs_with_keys(&mut conn).await? {
            // A least-privilege source user (see the README's ACL rules) may not SELECT
            // or SCAN: the check is skipped, and the data path still stops a shard at
            // the first source key under the prefix, before writing it.
            let reserved_keys = match select(&mut conn, db).await {
                Ok(()) => scan_matching(&mut conn, &glob_prefix(MARKER_PREFIX), None).await,
                Err(e) => Err(e),
            };
            let reserved_keys = match reserved_keys {
                Err(e) if no_perm(&e) => {
                    unscanned = true;
                    if !dbs.holds(db) {
                        // Without SCAN a filter cannot clear the db: INFO says it has keys.
                        lacking.insert(db);
                        holders.insert(node.to_string());
                    }
                    continue;
                }
                other => other?,
            };
            for key in reserved_keys {
                if !filter.keeps(&key) {
                    continue;
                }
                reserved += 1;
                if named.len() < NAMED {
                    named.push(format!("{} (db {db}, {node})", rsm_writer::show_key(&key)));
                }
            }
            if !dbs.holds(db) && has_filtered_key(&mut conn, filter).await? {
                lacking.insert(db);
                holders.insert(node.to_string());
            }
        }
    }
    if unscanned {
        tracing::warn!("the source user may not SELECT/SCAN (+select +scan): keys under __rsm: were not looked for before the start; a shard stops at the first one it meets");
    }
    if reserved > 0 {
        return Err(DiscoverError::ReservedKeys {
            total: reserved,
            named: named.join(", "),
        });
    }
    if !lacking.is_empty() {
        return Err(DiscoverError::DbsTargetLacks {
            dbs: lacking
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            nodes: holders.into_iter().collect::<Vec<_>>().join(", "),
            what: dbs.has(),
            ways: dbs.merge_way(),
            enough: dbs.enough(lacking.last().map(|db| db + 1)),
        });
    }
    Ok(())
}

/// The dbs `INFO keyspace` lists with keys.
async fn dbs_with_keys(conn: &mut Connection) -> Result<Vec<u32>, DiscoverError> {
    let info = conn.info("keyspace").await?;
    Ok(rsm_client::keyspace(&info)
        .into_iter()
        .filter(|(_, keys)| *keys > 0)
        .map(|(db, _)| db)
        .collect())
}

/// `SELECT db`; the connection starts in db 0, which needs no permission.
async fn select(conn: &mut Connection, db: u32) -> Result<(), DiscoverError> {
    if db != 0 {
        conn.request_ok(&["SELECT", &db.to_string()]).await?;
    }
    Ok(())
}

/// The user may not run the command (an ACL rule).
fn no_perm(e: &DiscoverError) -> bool {
    matches!(
        e,
        DiscoverError::Client(rsm_client::ClientError::Server {
            kind: rsm_client::ServerError::NoPerm,
            ..
        })
    )
}

/// Does the current db hold a key the filter keeps? Without a filter, yes (`INFO` said so).
async fn has_filtered_key(
    conn: &mut Connection,
    filter: &KeyPrefixes,
) -> Result<bool, DiscoverError> {
    if filter.is_empty() {
        return Ok(true);
    }
    for prefix in filter.prefixes() {
        if !scan_matching(conn, &glob_prefix(prefix), Some(1))
            .await?
            .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `SCAN … MATCH pattern` over the whole db; stops once `limit` keys are found.
async fn scan_matching(
    conn: &mut Connection,
    pattern: &[u8],
    limit: Option<usize>,
) -> Result<Vec<Bytes>, DiscoverError> {
    let mut found = Vec::new();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let page = conn.scan(&cursor, Some(pattern), SCAN_COUNT).await?;
        found.extend(page.keys);
        if limit.is_some_and(|n| found.len() >= n) {
            return Ok(found);
        }
        match page.next {
            Some(n) => cursor = n,
            None => return Ok(found),
        }
    }
}

/// The connect options pre-flight uses: short timeouts, it only asks.
fn opts(base: &ConnectOptions) -> ConnectOptions {
    let mut o = base.clone();
    o.connect_timeout = Duration::from_secs(5);
    o.io_timeout = Duration::from_secs(10);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_db_fits_the_target_it_is_mapped_to() {
        let cluster = TargetDbs {
            cluster: true,
            databases: None,
            target_db: None,
        };
        assert!(cluster.holds(0));
        assert!(!cluster.holds(1));
        let merged = TargetDbs {
            target_db: Some(0),
            ..cluster
        };
        assert!(merged.holds(5), "--targetdb=0 merges db 5 into db 0");
        let standalone = TargetDbs {
            cluster: false,
            databases: Some(4),
            target_db: None,
        };
        assert!(standalone.holds(3));
        assert!(!standalone.holds(4));
        let valkey = TargetDbs {
            databases: Some(16),
            ..cluster
        };
        assert!(valkey.holds(15), "cluster-databases 16 has db 15");
        assert!(!valkey.holds(16));
    }

    /// A source cluster's `cluster-databases` is refused as a range of the dbs the target
    /// lacks, whether they hold keys yet or not.
    #[test]
    fn the_dbs_a_source_can_write_to_that_the_target_lacks() {
        let redis = TargetDbs {
            cluster: true,
            databases: None,
            target_db: None,
        };
        assert_eq!(redis.lacking(16).as_deref(), Some("1-15"));
        assert_eq!(redis.lacking(2).as_deref(), Some("1"));
        assert_eq!(redis.lacking(1), None);
        let valkey = |n| TargetDbs {
            databases: Some(n),
            ..redis
        };
        assert_eq!(valkey(16).lacking(16), None);
        assert_eq!(valkey(8).lacking(16).as_deref(), Some("8-15"));
        let merged = TargetDbs {
            target_db: Some(0),
            ..redis
        };
        assert_eq!(merged.lacking(16), None, "--targetdb=0 has a place for all");
        let standalone = TargetDbs {
            cluster: false,
            databases: Some(4),
            target_db: None,
        };
        assert_eq!(standalone.lacking(16).as_deref(), Some("4-15"));
        // The ways out fit the kind of target: db 0 is the one a cluster takes.
        assert!(redis.merge_way().starts_with("--targetdb=0 "));
        assert!(redis
            .enough(Some(16))
            .contains("cluster-databases 16 or more"));
        assert!(standalone.merge_way().starts_with("--targetdb=N "));
    }
}
