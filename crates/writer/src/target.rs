//! What the target is: cluster or standalone (a proxy looks standalone), its version, the
//! highest RDB version its `RESTORE` accepts, `proto-max-bulk-len`, and — for a cluster —
//! who owns which slot.
//!
//! Read once at start (and the slot map again on `MOVED`), before any data is written.
//! Before, because the writer decides by it up front: which commands it may send (one
//! the target refuses would fail the write that carries it), which RDB version a RESTORE
//! payload must carry, and how big a value may grow before it goes as commands.

use bytes::Bytes;
use rsm_client::{
    info_field, ClientError, ConnectOptions, Connection, Endpoint, Family, ServerError,
    ServerVersion,
};
use rsm_cluster::{Slot, SlotRange};
use rsm_rdb::RdbVersion;
use rsm_resp::Frame;

use super::WriteError;

/// Default `proto-max-bulk-len` when `CONFIG GET` is not allowed (managed services): the
/// server's own default (512 MB).
pub const DEFAULT_PROTO_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;

/// The target as detected at start. Fixed for the writer's life: only the slot map is
/// read again (after `MOVED`, a lost node), never the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// `cluster_enabled:1`: writes are routed by slot, and only db 0 exists unless
    /// `databases` says more (Valkey 9's `cluster-databases`). A proxy in front of a
    /// cluster says 0 and is written to as one node.
    pub cluster: bool,
    /// Its family and version (Redis 0.0.0 when `INFO` hides it).
    pub version: ServerVersion,
    /// The DUMP trailer the target writes: the highest RDB version it accepts.
    pub rdb_version: RdbVersion,
    /// The largest argument it reads: a RESTORE payload must stay below it, so bigger
    /// values are written as commands (see `Writer::big_key_threshold`).
    pub proto_max_bulk_len: u64,
    /// How many dbs the target has, when `CONFIG GET` answers: `databases` of a
    /// standalone target, `cluster-databases` of a cluster (Valkey 9+; `None` on Redis).
    /// A write for a db beyond it would follow a refused `SELECT` into the current db.
    pub databases: Option<u32>,
    /// `MULTI` works (some proxies refuse it): needed to write exactly once.
    pub transactions: bool,
}

impl TargetInfo {
    /// Does a write need its db `SELECT`ed first? On a standalone target, and on a
    /// cluster with more than db 0: the replication stream's `SELECT n` must reach the
    /// target as the connection's db. A cluster of db 0 only is sent no `SELECT`, as
    /// before `cluster-databases` existed: there is nothing to switch to.
    pub fn selects_db(&self) -> bool {
        !self.cluster || self.databases.is_some_and(|n| n > 1)
    }

    /// True if the target understands commands introduced in Redis `major.minor`
    /// (every Valkey descends from Redis 7.2). Decided by version, not by trying: a
    /// refused command would fail the write that carried it.
    pub fn redis_at_least(&self, major: u32, minor: u32) -> bool {
        self.version.redis_at_least(major, minor)
    }

    /// `HPEXPIREAT` and friends: Redis 7.4+, Valkey 9+.
    pub fn hash_field_ttl(&self) -> bool {
        self.version.hash_field_ttl()
    }
}

/// Who owns each slot of a cluster target: the endpoints the writer dials. A standalone
/// target is one node owning every slot, so routing and per-slot order work the same.
pub type SlotMap = rsm_cluster::SlotMap<Endpoint>;

/// The RDB version a server of this version writes (reference §A3), used when the DUMP
/// probe is not possible.
fn rdb_version_for(version: &ServerVersion) -> RdbVersion {
    let (major, minor) = version.major_minor();
    if version.is_valkey() {
        return if major >= 9 {
            RdbVersion::Valkey(80)
        } else {
            RdbVersion::Redis(11)
        };
    }
    RdbVersion::Redis(match (major, minor) {
        // 5.0 to 6.2. Older servers wrote less (4.0: 8); the probe finds that out where it
        // can, and a payload refused anyway is rebuilt with commands.
        (0..=6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        // 7.4 and 8.x as far as seen (8.2.3 writes 12); a later, higher number is the
        // probe's to find.
        _ => 12,
    })
}

/// Connect to the seed, read INFO, CONFIG and (for a cluster) the slot map, and probe the
/// RDB version with DUMP on a scratch key that is removed again. `home_db`: the db of a
/// standalone target where the scratch key may go (see `sync_marker::home_db`).
///
/// Every question goes to the node reached, which may not be the one named, and:
/// - a version `INFO` hides counts as the oldest: nothing the target may lack is sent, and
///   the probe still finds the RDB version it takes;
/// - `INFO cluster` rather than `CLUSTER INFO`, since a standalone server answers it too;
/// - `CONFIG GET` answers `[name, value]` in RESP2, a map in RESP3; where CONFIG is
///   refused, `proto-max-bulk-len` is taken as the server default and `databases` stays
///   unknown (a cluster then has db 0 only; a standalone target's count bounds
///   `--targetdb` and the source dbs it can take);
/// - a cluster's masters are remembered for the whole process: should the node named
///   die, any writer, refresh or durability check still finds the cluster. A standalone
///   target is one node owning every slot, routed and ordered the same way;
/// - `MULTI` is tried on the node reached: a proxy answers for what it forwards;
/// - the probe runs on the owner of the scratch key's slot (its `SET` on any other node
///   would only answer `MOVED`), and beats the version table: it is what this very server
///   writes. The table stands for a target that refuses the probe.
pub async fn detect(
    seed: &Endpoint,
    opts: &ConnectOptions,
    home_db: u32,
) -> Result<(TargetInfo, SlotMap), WriteError> {
    // Any node of the target will do when the one named is gone for good.
    let mut conn = connect_target(seed, opts).await?;
    let seed = &conn.endpoint().clone();
    let info = conn.info("server").await?;
    let version = ServerVersion::from_info(&info)
        .unwrap_or_else(|| ServerVersion::parse(Family::Redis, "0.0.0"));
    let cluster_info = conn.info("cluster").await?;
    let cluster = info_field(&cluster_info, "cluster_enabled") == Some("1");

    let proto_max_bulk_len = match conn
        .request(&["CONFIG", "GET", "proto-max-bulk-len"])
        .await?
    {
        Frame::Array(items) => items
            .get(1)
            .and_then(Frame::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(DEFAULT_PROTO_MAX_BULK_LEN),
        Frame::Map(pairs) => pairs
            .first()
            .and_then(|(_, v)| v.as_int())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(DEFAULT_PROTO_MAX_BULK_LEN),
        _ => DEFAULT_PROTO_MAX_BULK_LEN,
    };

    let slots = if cluster {
        let map = read_slot_map(&mut conn, seed).await?;
        if let Some(seeds) = &opts.seeds {
            seeds.learn(map.owners().iter().cloned());
        }
        map
    } else {
        SlotMap::single(seed.clone())
    };
    let databases = databases(&mut conn, cluster).await?;

    let transactions = transactions_work(&mut conn).await?;
    // Probe on a master that owns the scratch key's slot (the seed may be a replica).
    let mut rdb_version = rdb_version_for(&version);
    let probe = probe_key(&slots);
    if let Some((node, key)) = probe {
        let mut pconn;
        let c = match slots.owners().get(node) {
            Some(owner) if owner != seed => {
                pconn = Connection::connect(owner, opts).await?;
                &mut pconn
            }
            _ => &mut conn,
        };
        // A db the target lacks is refused later with its own message; probe in db 0
        // then, which the DEL leaves as it was.
        if !cluster && home_db != 0 && databases.is_none_or(|n| home_db < n) {
            c.request_ok(&["SELECT", &home_db.to_string()]).await?;
        }
        if let Some(v) = probe_rdb_version(c, &key).await? {
            rdb_version = v;
        }
    }
    Ok((
        TargetInfo {
            cluster,
            version,
            rdb_version,
            proto_max_bulk_len,
            databases,
            transactions,
        },
        slots,
    ))
}

/// A connection to the target as a whole, through any node known when `seed` is gone
/// (see [`rsm_client::Seeds`]): for a cluster any node (each knows the slot map); for a
/// standalone target the master among them, since a replica refuses writes, and after its
/// master died for good and it was promoted, it is the master the named node was.
pub async fn connect_target(
    seed: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Connection, ClientError> {
    // The node named if it answers, else the first known node that does.
    let mut conn = Connection::connect_seed(seed, opts).await?;
    if !standalone_replica(&mut conn).await? {
        return Ok(conn);
    }
    match standalone_master(opts.seed_list(), opts).await {
        Some(master) => Ok(master),
        // No master in reach: the replica says why writes fail (READONLY), and a retry
        // asks again.
        None => Ok(conn),
    }
}

/// Is this a replica of a standalone (not cluster) deployment? Such a node is never
/// written to: it refuses writes (`READONLY`), and what a writable replica takes stays
/// with it, never reaching its master.
async fn standalone_replica(conn: &mut Connection) -> Result<bool, ClientError> {
    // A cluster's replica is no standalone replica: the slot map leads past it. An INFO
    // cluster that fails counts as "not a cluster", and the replication section decides.
    let cluster = conn.info("cluster").await.unwrap_or_default();
    if info_field(&cluster, "cluster_enabled") == Some("1") {
        return Ok(false);
    }
    let repl = conn.info("replication").await?;
    Ok(info_field(&repl, "role") == Some("slave"))
}

/// The first of `candidates` that answers as a master. One that cannot be reached, or
/// answers as a replica, is passed over; `None`: no master in reach (mid-failover), and
/// the caller asks again later.
pub(super) async fn standalone_master(
    candidates: impl IntoIterator<Item = Endpoint>,
    opts: &ConnectOptions,
) -> Option<Connection> {
    // The first master found wins: a standalone deployment has one, a failover aside.
    for ep in candidates {
        let Ok(mut conn) = Connection::connect(&ep, opts).await else {
            continue;
        };
        if let Ok(false) = standalone_replica(&mut conn).await {
            return Some(conn);
        }
    }
    None
}

/// `MULTI` then `DISCARD`: does the target take transactions at all? Some proxies refuse
/// `MULTI`; exactly-once (slot markers written in one `MULTI … EXEC` with their command)
/// is then off, and the session says so. `DISCARD` leaves the connection as it was.
async fn transactions_work(conn: &mut Connection) -> Result<bool, WriteError> {
    let reply = conn.request(&["MULTI"]).await?;
    if let Some(e) = reply.as_error() {
        if ServerError::classify(e) == ServerError::NoPerm {
            // The server has them; the user may not run them: that is the operator's to fix.
            return Err(WriteError::Topology(format!(
                "the target user may not run MULTI ({}): grant it +multi +exec, which writing exactly once needs",
                rsm_resp::escape_controls(e)
            )));
        }
        tracing::debug!(reply = %reply.describe(), "the target refuses MULTI");
        return Ok(false);
    }
    conn.request(&["DISCARD"]).await?;
    Ok(true)
}

/// `--targetdb` must name a db the standalone target has: a refused `SELECT` in the
/// writer's pipeline would come too late (the commands behind it go to the current db).
/// Asks `CONFIG GET databases`; where CONFIG is refused (ACLs, managed services), a
/// `SELECT` probe answers the same question.
pub async fn check_target_db(
    seed: &Endpoint,
    opts: &ConnectOptions,
    db: u32,
) -> Result<(), WriteError> {
    let mut conn = connect_target(seed, opts).await?;
    let reply = conn.request(&["CONFIG", "GET", "databases"]).await?;
    // CONFIG answered: the count decides, without touching any db.
    if let Some(n) = config_databases(&reply) {
        // Numbered from 0: `databases 16` is dbs 0 to 15.
        if db >= n {
            return Err(WriteError::TargetDbOutOfRange {
                endpoint: seed.to_string(),
                db,
                databases: n,
            });
        }
        return Ok(());
    }
    // A SELECT on this connection only, which is dropped right after.
    let select = conn.request(&["SELECT", &db.to_string()]).await?;
    if let Some(e) = select.as_error() {
        return Err(WriteError::Select {
            endpoint: seed.to_string(),
            db,
            message: rsm_resp::escape_controls(e),
        });
    }
    Ok(())
}

/// How many dbs the target has (see [`TargetInfo::databases`]): a standalone server's
/// `databases`, a cluster's `cluster-databases` (Valkey 9+; Redis has no such setting and
/// answers nothing, which `TargetDb::place` reads as db 0 only).
async fn databases(conn: &mut Connection, cluster: bool) -> Result<Option<u32>, ClientError> {
    let setting = match cluster {
        true => "cluster-databases",
        false => "databases",
    };
    Ok(config_databases(
        &conn.request(&["CONFIG", "GET", setting]).await?,
    ))
}

/// The value of a `CONFIG GET databases` reply (RESP2 array or RESP3 map). It comes as
/// text (`"16"`) either way; `None` when CONFIG was refused.
fn config_databases(reply: &Frame) -> Option<u32> {
    let value = match reply {
        // `["databases", "16"]`: the value comes second.
        Frame::Array(items) => items.get(1)?.as_bytes()?,
        Frame::Map(pairs) => pairs.first()?.1.as_bytes()?,
        _ => return None,
    };
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A scratch key in a slot some master owns (the first `__rsm:probe:<n>` whose slot has an
/// owner), with that master's index, under the tool's own prefix (which no source key
/// may use), so that it can never be a user's key. Several numbers are tried since a
/// cluster with unassigned slots may not own the first one's slot.
fn probe_key(slots: &SlotMap) -> Option<(usize, Bytes)> {
    for i in 0..100_000u32 {
        let key = format!("__rsm:probe:{i}");
        if let Some(node) = slots.owner_index_of(rsm_cluster::key_slot(key.as_bytes())) {
            return Some((node, Bytes::from(key)));
        }
    }
    None
}

/// `SET key x NX PX 60000`, `DUMP key`, `DEL key`: the DUMP trailer is exactly the RDB
/// version the server writes and accepts. The short TTL removes the key even if the DEL is
/// lost; `NX` leaves a key of that name alone, should one exist. `None` when the server
/// refuses (ACLs, a read-only proxy) or the key existed: fall back to the version table.
async fn probe_rdb_version(
    conn: &mut Connection,
    key: &[u8],
) -> Result<Option<RdbVersion>, ClientError> {
    // Refused, or NX met a key of that name: nothing of ours to DUMP.
    let set = conn
        .request(&[b"SET".as_slice(), key, b"x", b"NX", b"PX", b"60000"])
        .await?;
    if set.is_error() || matches!(set, Frame::Null) {
        return Ok(None);
    }
    let dump = conn.request(&[b"DUMP".as_slice(), key]).await?;
    // Its reply does not matter: the TTL removes the key should the DEL be refused.
    let _ = conn.request(&[b"DEL".as_slice(), key]).await?;
    // The payload ends with the 2-byte RDB version and the 8-byte CRC. A DUMP refused
    // or too short leaves the table's answer standing.
    Ok(dump.as_bytes().and_then(|p| {
        let trailer = p.len().checked_sub(10).and_then(|at| p.get(at..at + 2))?;
        let version: [u8; 2] = trailer.try_into().ok()?;
        Some(RdbVersion::from_dump_trailer(u16::from_le_bytes(version)))
    }))
}

/// The slot map from `CLUSTER SHARDS` (7.0+) or `CLUSTER SLOTS`. `asked` fills in an empty
/// or `?` endpoint ("the host you are talking to").
pub async fn read_slot_map(conn: &mut Connection, asked: &Endpoint) -> Result<SlotMap, WriteError> {
    let shards = conn.request(&["CLUSTER", "SHARDS"]).await?;
    // 5.0 to 6.2 have no CLUSTER SHARDS (an error reply): CLUSTER SLOTS says the same.
    let ranges = if shards.is_error() {
        let slots = conn.request_ok(&["CLUSTER", "SLOTS"]).await?;
        parse_cluster_slots(&slots, asked)
    } else {
        // A TLS client must dial the nodes' TLS ports: CLUSTER SHARDS lists both.
        parse_cluster_shards(&shards, asked, conn.options().tls.is_some())
    }
    // A reply we cannot read stops here rather than routing by half a map.
    .ok_or_else(|| {
        WriteError::Topology(format!(
            "cannot read the slot map of target {asked}: unexpected CLUSTER SHARDS/SLOTS reply"
        ))
    })?;
    let mut map = SlotMap::empty();
    for (start, end, ep) in ranges {
        // A range past the last slot (a bad reply) is cut, not trusted.
        let last = end.min(rsm_cluster::SLOT_COUNT - 1);
        let range = Slot::try_from(start)
            .ok()
            .zip(Slot::try_from(last).ok())
            .and_then(|(a, b)| SlotRange::new(a, b));
        if let Some(range) = range {
            map.assign(range, ep);
        }
    }
    // No slot assigned: every write would meet CLUSTERDOWN. Better said once, now.
    if map.owners().is_empty() {
        return Err(WriteError::Topology(format!(
            "target {asked} is a cluster with no slots assigned"
        )));
    }
    Ok(map)
}

/// A string field of a reply (bulk or simple), as text.
fn text(f: &Frame) -> Option<String> {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `[key, value, key, value…]` (RESP2) or a RESP3 map, as pairs.
fn pairs(f: &Frame) -> Vec<(String, &Frame)> {
    match f {
        Frame::Map(p) => p.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        _ => f
            .as_array()
            .unwrap_or(&[])
            .chunks(2)
            .filter_map(|c| Some((text(c.first()?)?, c.get(1)?)))
            .collect(),
    }
}

/// The address to dial for a node: its `endpoint` (a hostname when
/// `cluster-preferred-endpoint-type` says so); when that is empty or `?` (unknown
/// endpoint, no hostname), its ip; with no ip either, the host the reply came from, which
/// is what an empty endpoint means (reference §E3).
fn endpoint_of(
    host: Option<String>,
    ip: Option<String>,
    port: i64,
    asked: &Endpoint,
) -> Option<Endpoint> {
    let port = u16::try_from(port).ok()?;
    let host = host
        .filter(|h| !h.is_empty() && h != "?")
        .or(ip.filter(|h| !h.is_empty()))
        .unwrap_or_else(|| asked.host.clone());
    Some(Endpoint::new(host, port))
}

/// `CLUSTER SHARDS`: (first slot, last slot, master endpoint) triples. With `tls` the
/// nodes' `tls-port` (their `port` when they have none), else their `port`. A shard
/// without a healthy master gives no ranges.
fn parse_cluster_shards(
    f: &Frame,
    asked: &Endpoint,
    tls: bool,
) -> Option<Vec<(u16, u16, Endpoint)>> {
    let (first, second) = if tls {
        ("tls-port", "port")
    } else {
        ("port", "tls-port")
    };
    let mut out = Vec::new();
    for shard in f.as_array()? {
        let p = pairs(shard);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let slots: Vec<i64> = get("slots")?
            .as_array()?
            .iter()
            .filter_map(Frame::as_int)
            .collect();
        let master = get("nodes")?.as_array()?.iter().find_map(|n| {
            let np = pairs(n);
            let field = |k: &str| np.iter().find(|(x, _)| x == k).map(|(_, v)| *v);
            // A master the cluster has marked failed is not dialled: its slots stay
            // unowned in this map, and their writes wait for the failover.
            let role = field("role").and_then(text)?;
            let health = field("health").and_then(text).unwrap_or_default();
            (role == "master" && health != "failed").then(|| {
                endpoint_of(
                    field("endpoint").and_then(text),
                    field("ip").and_then(text),
                    // A node without the port preferred (a cluster without TLS) is
                    // dialled at the one it lists.
                    field(first)
                        .or_else(|| field(second))
                        .and_then(Frame::as_int)
                        .unwrap_or(0),
                    asked,
                )
            })?
        });
        let Some(master) = master else { continue };
        // `slots` is a flat list of (start, end) pairs.
        for r in slots.chunks(2) {
            if let [a, b] = r {
                out.push((
                    u16::try_from(*a).ok()?,
                    u16::try_from(*b).ok()?,
                    master.clone(),
                ));
            }
        }
    }
    Some(out)
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, id, …], replicas…]`. The first node of
/// each range is its master, the only node written to. No health is given: a failed
/// master stays listed until the failover, and writes to it retry until then.
fn parse_cluster_slots(f: &Frame, asked: &Endpoint) -> Option<Vec<(u16, u16, Endpoint)>> {
    let mut out = Vec::new();
    for r in f.as_array()? {
        let r = r.as_array()?;
        let start = u16::try_from(r.first()?.as_int()?).ok()?;
        let end = u16::try_from(r.get(1)?.as_int()?).ok()?;
        let m = r.get(2)?.as_array()?;
        let ep = endpoint_of(m.first().and_then(text), None, m.get(1)?.as_int()?, asked)?;
        out.push((start, end, ep));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_string()))
    }

    /// The fallback table, for when the probe cannot run: Valkey 8 writes Redis's 11,
    /// Valkey 9 its own 80.
    #[test]
    fn rdb_versions_by_server_version() {
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Redis, "6.2")),
            RdbVersion::Redis(9)
        );
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Redis, "7.0")),
            RdbVersion::Redis(10)
        );
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Redis, "7.2")),
            RdbVersion::Redis(11)
        );
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Redis, "8.2")),
            RdbVersion::Redis(12)
        );
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Valkey, "8.1")),
            RdbVersion::Redis(11)
        );
        assert_eq!(
            rdb_version_for(&ServerVersion::parse(Family::Valkey, "9.1")),
            RdbVersion::Valkey(80)
        );
    }

    /// An empty host (`cluster-preferred-endpoint-type unknown-endpoint`) means the host
    /// asked, with the port the reply gives.
    #[test]
    fn parses_cluster_slots_with_empty_host() {
        let asked = Endpoint::new("10.0.0.9", 7000);
        let reply = Frame::Array(vec![Frame::Array(vec![
            Frame::Integer(0),
            Frame::Integer(5460),
            Frame::Array(vec![bulk(""), Frame::Integer(7001), bulk("id")]),
        ])]);
        let r = parse_cluster_slots(&reply, &asked).unwrap();
        assert_eq!(r, vec![(0, 5460, Endpoint::new("10.0.0.9", 7001))]);
    }

    /// Only a shard's master is written to; each of its slot ranges maps to it.
    #[test]
    fn parses_cluster_shards_skipping_replicas() {
        let asked = Endpoint::new("h", 1);
        let node = |port, role| {
            Frame::Array(vec![
                bulk("port"),
                Frame::Integer(port),
                bulk("ip"),
                bulk("127.0.0.1"),
                bulk("endpoint"),
                bulk("127.0.0.1"),
                bulk("role"),
                bulk(role),
                bulk("health"),
                bulk("online"),
            ])
        };
        let reply = Frame::Array(vec![Frame::Array(vec![
            bulk("slots"),
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(9),
                Frame::Integer(20),
                Frame::Integer(20),
            ]),
            bulk("nodes"),
            Frame::Array(vec![node(2, "replica"), node(3, "master")]),
        ])]);
        let r = parse_cluster_shards(&reply, &asked, false).unwrap();
        let ep = Endpoint::new("127.0.0.1", 3);
        assert_eq!(r, vec![(0, 9, ep.clone()), (20, 20, ep)]);
    }

    /// A TLS client that dialled the plain port would fail its handshake on every node.
    #[test]
    fn a_tls_client_takes_the_tls_port_of_cluster_shards() {
        let asked = Endpoint::new("h", 1);
        let node = Frame::Array(vec![
            bulk("port"),
            Frame::Integer(7000),
            bulk("tls-port"),
            Frame::Integer(7100),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk("master"),
        ]);
        let reply = Frame::Array(vec![Frame::Array(vec![
            bulk("slots"),
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(16383)]),
            bulk("nodes"),
            Frame::Array(vec![node]),
        ])]);
        let port = |tls| parse_cluster_shards(&reply, &asked, tls).unwrap()[0].2.port;
        assert_eq!(port(true), 7100);
        assert_eq!(port(false), 7000);
    }
}
