//! Whole-dataset snapshots for comparing a source with a target.
//!
//! A [`Snapshot`] is read with the server's own commands only (`SCAN`, `TYPE`, `PTTL`, and one
//! type-specific read per key), over every data node of a [`Target`]: the server itself, or every
//! live master of a cluster. Everything is kept as bytes and sorted, so two snapshots of equal
//! datasets compare equal regardless of node layout, encoding, or server version. Expiries are
//! stored as approximate absolute times (local clock + `PTTL`) and compared with a tolerance.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use crate::client::{run_cmd, Target};

/// A zset score, compared exactly (by `f64::total_cmp`), independent of how the server prints it
/// (`0.1` vs `0.10000000000000001` differs between versions).
#[derive(Clone, Copy, Debug)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A consumer group as far as a migration must preserve it (idle times are not compared).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupState {
    pub name: Vec<u8>,
    pub last_delivered_id: String,
    /// Pending entries: (entry id, consumer name).
    pub pending: Vec<(String, Vec<u8>)>,
    /// Consumers with their pending counts.
    pub consumers: Vec<(Vec<u8>, i64)>,
}

/// One stream entry: id and field/value pairs in order.
pub type StreamEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// A stream's entries, last generated id and groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamState {
    pub entries: Vec<StreamEntry>,
    pub last_generated_id: String,
    pub groups: Vec<GroupState>,
}

/// One key's value, by type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// In server order (score, then member).
    ZSet(Vec<(Vec<u8>, Score)>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Stream(StreamState),
    /// A type the kit does not read (module types): only its name is compared.
    Other(String),
}

impl KeyValue {
    /// The `TYPE` name.
    pub fn type_name(&self) -> &str {
        match self {
            KeyValue::String(_) => "string",
            KeyValue::List(_) => "list",
            KeyValue::Set(_) => "set",
            KeyValue::ZSet(_) => "zset",
            KeyValue::Hash(_) => "hash",
            KeyValue::Stream(_) => "stream",
            KeyValue::Other(t) => t,
        }
    }
}

/// One key: value and approximate absolute expiry (ms since the epoch), `None` if persistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub value: KeyValue,
    pub expire_at_ms: Option<i64>,
}

/// Every key of a dataset (db 0 unless read with [`Snapshot::of_db`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub keys: BTreeMap<Vec<u8>, KeyState>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Snapshot {
    /// Reads db 0 of every data node of `target`, without the migration tool's `__rsm:` keys.
    ///
    /// # Panics
    /// On a read error, or if two nodes hold the same key.
    pub fn of(target: &impl Target) -> Snapshot {
        let mut snap = Snapshot::default();
        for mut conn in target.data_conns() {
            snap.read_conn(&mut conn, 0);
        }
        snap
    }

    /// Reads database `db` of every data node of `target` (standalone servers have 16 dbs).
    pub fn of_db(target: &impl Target, db: u32) -> Snapshot {
        let mut snap = Snapshot::default();
        for mut conn in target.data_conns() {
            snap.read_conn(&mut conn, db);
        }
        snap
    }

    /// Adds the keys of database `db` reachable through `conn`.
    ///
    /// # Panics
    /// On a read error, or if a key is already in the snapshot.
    pub fn read_conn(&mut self, conn: &mut Connection, db: u32) {
        let dbs = db.to_string();
        if db != 0 {
            q(conn, &[b"SELECT", dbs.as_bytes()]);
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = q(conn, &[b"SCAN", &cursor, b"COUNT", b"1000"]);
            let mut parts = array(reply).into_iter();
            cursor = bytes(parts.next().unwrap_or(Value::Nil));
            keys.extend(
                array(parts.next().unwrap_or(Value::Nil))
                    .into_iter()
                    .map(bytes),
            );
            if cursor == b"0" {
                break;
            }
        }
        // The migration tool's own markers (documented forms) are not the data compared;
        // a user's key that merely starts with `__rsm:` is.
        keys.retain(|k| !tool_key(k));
        // SCAN may return a key twice.
        keys.sort();
        keys.dedup();
        for key in keys {
            let Some(state) = read_key(conn, &key) else {
                continue; // expired or deleted meanwhile
            };
            if self.keys.insert(key.clone(), state).is_some() {
                panic!("key {} found on two nodes", show(&key));
            }
        }
        if db != 0 {
            q(conn, &[b"SELECT", b"0"]);
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys per type name.
    pub fn type_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.keys.values() {
            *m.entry(s.value.type_name().to_string()).or_insert(0) += 1;
        }
        m
    }

    /// Keys with an expiry.
    pub fn with_ttl(&self) -> usize {
        self.keys
            .values()
            .filter(|s| s.expire_at_ms.is_some())
            .count()
    }

    /// Human-readable differences from `self` (expected) to `other` (actual); empty if equal.
    /// Expiry times may differ by up to `ttl_tolerance`.
    pub fn diff(&self, other: &Snapshot, ttl_tolerance: Duration) -> Vec<String> {
        let tol = ttl_tolerance.as_millis() as i64;
        let mut out = Vec::new();
        let keys: BTreeSet<&Vec<u8>> = self.keys.keys().chain(other.keys.keys()).collect();
        for k in keys {
            match (self.keys.get(k), other.keys.get(k)) {
                (Some(_), None) => out.push(format!("missing key {}", show(k))),
                (None, Some(b)) => out.push(format!(
                    "unexpected key {} ({})",
                    show(k),
                    b.value.type_name()
                )),
                (Some(a), Some(b)) => {
                    if a.value != b.value {
                        out.push(format!(
                            "value of {} differs: expected {}, got {}",
                            show(k),
                            brief(&a.value),
                            brief(&b.value)
                        ));
                    }
                    match (a.expire_at_ms, b.expire_at_ms) {
                        (None, None) => {}
                        (Some(x), Some(y)) if (x - y).abs() <= tol => {}
                        (x, y) => out.push(format!(
                            "expiry of {} differs: expected {}, got {}",
                            show(k),
                            show_exp(x),
                            show_exp(y)
                        )),
                    }
                }
                (None, None) => {}
            }
        }
        out
    }

    /// Panics with the first differences if `other` differs from `self` (expected).
    pub fn assert_same(&self, other: &Snapshot, ttl_tolerance: Duration) {
        let d = self.diff(other, ttl_tolerance);
        if d.is_empty() {
            return;
        }
        let mut msg = format!(
            "datasets differ: {} differences (expected {} keys, got {})\n",
            d.len(),
            self.len(),
            other.len()
        );
        for line in d.iter().take(20) {
            let _ = writeln!(msg, "  {line}");
        }
        if d.len() > 20 {
            let _ = writeln!(msg, "  ... and {} more", d.len() - 20);
        }
        panic!("{msg}");
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys {:?}, {} with TTL",
            self.len(),
            self.type_counts(),
            self.with_ttl()
        )
    }
}

fn show_exp(e: Option<i64>) -> String {
    match e {
        None => "none".into(),
        Some(ms) => format!("in {} ms", ms - now_ms()),
    }
}

fn brief(v: &KeyValue) -> String {
    let e = |b: &Vec<u8>| show(b);
    let s = match v {
        KeyValue::String(b) => format!("string {}", e(b)),
        KeyValue::List(l) => format!("list {:?}", l.iter().map(e).collect::<Vec<_>>()),
        KeyValue::Set(l) => format!("set {:?}", l.iter().map(e).collect::<Vec<_>>()),
        KeyValue::ZSet(l) => format!(
            "zset {:?}",
            l.iter()
                .map(|(m, s)| format!("{}={}", e(m), s.0))
                .collect::<Vec<_>>()
        ),
        KeyValue::Hash(h) => format!(
            "hash {:?}",
            h.iter()
                .map(|(f, v)| format!("{}={}", e(f), e(v)))
                .collect::<Vec<_>>()
        ),
        other => format!("{other:?}"),
    };
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// Printable form of a binary key.
pub(crate) fn show(k: &[u8]) -> String {
    format!("\"{}\"", k.escape_ascii())
}

fn q(conn: &mut Connection, args: &[&[u8]]) -> Value {
    run_cmd(conn, args).unwrap_or_else(|e| {
        panic!(
            "snapshot: {} failed: {e}",
            args.iter()
                .map(|a| a.escape_ascii().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )
    })
}

pub(crate) fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Nil => Vec::new(),
        other => panic!("snapshot: expected an array, got {other:?}"),
    }
}

pub(crate) fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Okay => b"OK".to_vec(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::VerbatimString { text, .. } => text.into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        other => panic!("snapshot: expected a string, got {other:?}"),
    }
}

pub(crate) fn text(v: Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

pub(crate) fn int(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        other => {
            let t = text(other);
            t.parse()
                .unwrap_or_else(|_| panic!("snapshot: expected an integer, got {t:?}"))
        }
    }
}

/// A flat `[name, value, name, value, ...]` reply (XINFO) as a map.
pub(crate) fn pairs(v: Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    match v {
        Value::Map(kv) => {
            for (k, v) in kv {
                m.insert(text(k), v);
            }
        }
        v => {
            let mut it = array(v).into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                m.insert(text(k), v);
            }
        }
    }
    m
}

fn read_key(conn: &mut Connection, key: &[u8]) -> Option<KeyState> {
    let ty = text(q(conn, &[b"TYPE", key]));
    let pttl = int(q(conn, &[b"PTTL", key]));
    if ty == "none" || pttl == -2 {
        return None;
    }
    let value = match ty.as_str() {
        "string" => match q(conn, &[b"GET", key]) {
            Value::Nil => return None,
            v => KeyValue::String(bytes(v)),
        },
        "list" => KeyValue::List(
            array(q(conn, &[b"LRANGE", key, b"0", b"-1"]))
                .into_iter()
                .map(bytes)
                .collect(),
        ),
        "set" => KeyValue::Set(
            array(q(conn, &[b"SMEMBERS", key]))
                .into_iter()
                .map(bytes)
                .collect(),
        ),
        "zset" => {
            let mut out = Vec::new();
            let mut it = array(q(conn, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])).into_iter();
            while let (Some(m), Some(s)) = (it.next(), it.next()) {
                let s = text(s);
                let score = s
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("snapshot: bad zset score {s:?}"));
                out.push((bytes(m), Score(score)));
            }
            KeyValue::ZSet(out)
        }
        "hash" => {
            let mut out = BTreeMap::new();
            let mut it = array(q(conn, &[b"HGETALL", key])).into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                out.insert(bytes(f), bytes(v));
            }
            KeyValue::Hash(out)
        }
        "stream" => KeyValue::Stream(read_stream(conn, key)),
        other => KeyValue::Other(other.to_string()),
    };
    let expire_at_ms = (pttl >= 0).then(|| now_ms() + pttl);
    Some(KeyState {
        value,
        expire_at_ms,
    })
}

fn read_stream(conn: &mut Connection, key: &[u8]) -> StreamState {
    let mut entries = Vec::new();
    for e in array(q(conn, &[b"XRANGE", key, b"-", b"+"])) {
        let mut parts = array(e).into_iter();
        let id = text(parts.next().unwrap_or(Value::Nil));
        let mut fields = Vec::new();
        let mut it = array(parts.next().unwrap_or(Value::Nil)).into_iter();
        while let (Some(f), Some(v)) = (it.next(), it.next()) {
            fields.push((bytes(f), bytes(v)));
        }
        entries.push((id, fields));
    }
    let info = pairs(q(conn, &[b"XINFO", b"STREAM", key]));
    let last_generated_id = info
        .get("last-generated-id")
        .cloned()
        .map(text)
        .unwrap_or_default();
    let mut groups = Vec::new();
    for g in array(q(conn, &[b"XINFO", b"GROUPS", key])) {
        let g = pairs(g);
        let name = g.get("name").cloned().map(bytes).unwrap_or_default();
        let last_delivered_id = g
            .get("last-delivered-id")
            .cloned()
            .map(text)
            .unwrap_or_default();
        let mut pending = Vec::new();
        for p in array(q(conn, &[b"XPENDING", key, &name, b"-", b"+", b"1000000"])) {
            let mut it = array(p).into_iter();
            let id = text(it.next().unwrap_or(Value::Nil));
            let consumer = bytes(it.next().unwrap_or(Value::Nil));
            pending.push((id, consumer));
        }
        let mut consumers = Vec::new();
        for c in array(q(conn, &[b"XINFO", b"CONSUMERS", key, &name])) {
            let c = pairs(c);
            consumers.push((
                c.get("name").cloned().map(bytes).unwrap_or_default(),
                c.get("pending").cloned().map(int).unwrap_or(0),
            ));
        }
        consumers.sort();
        groups.push(GroupState {
            name,
            last_delivered_id,
            pending,
            consumers,
        });
    }
    groups.sort();
    StreamState {
        entries,
        last_generated_id,
        groups,
    }
}

/// The forms of the migration tool's own keys, as its README documents them:
/// `__rsm:sync:{<slot ranges>}` (as `0-5460, 6000-6001`), and `__rsm:{at,failed,durable}:{<decimal tag>}`,
/// `__rsm:probe:<n>`. Written here from the documentation, not taken from the tool.
fn tool_key(key: &[u8]) -> bool {
    let Some(rest) = key.strip_prefix(b"__rsm:") else {
        return false;
    };
    let inner = |name: &[u8]| -> Option<Vec<u8>> {
        Some(
            rest.strip_prefix(name)?
                .strip_prefix(b"{")?
                .strip_suffix(b"}")?
                .to_vec(),
        )
    };
    let all = |v: &[u8], ok: fn(&u8) -> bool| !v.is_empty() && v.iter().all(ok);
    if let Some(r) = inner(b"sync:") {
        return all(&r, |b| {
            b.is_ascii_digit() || matches!(b, b'-' | b',' | b' ')
        });
    }
    if let Some(n) = rest.strip_prefix(b"probe:") {
        return all(n, u8::is_ascii_digit);
    }
    [&b"at:"[..], b"failed:", b"durable:"]
        .iter()
        .filter_map(|name| inner(name))
        .any(|tag| all(&tag, u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(keys: &[(&[u8], KeyValue, Option<i64>)]) -> Snapshot {
        Snapshot {
            keys: keys
                .iter()
                .map(|(k, v, e)| {
                    (
                        k.to_vec(),
                        KeyState {
                            value: v.clone(),
                            expire_at_ms: *e,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn diff_reports_each_kind_of_difference() {
        let a = snap(&[
            (b"a", KeyValue::String(b"1".to_vec()), None),
            (b"b\xff", KeyValue::String(b"2".to_vec()), Some(10_000)),
            (b"c", KeyValue::List(vec![]), None),
        ]);
        let b = snap(&[
            (b"a", KeyValue::String(b"1".to_vec()), None),
            (b"b\xff", KeyValue::String(b"2".to_vec()), Some(10_500)),
            (b"d", KeyValue::List(vec![]), None),
        ]);
        assert!(a.diff(&a, Duration::ZERO).is_empty());
        let d = a.diff(&b, Duration::from_millis(1000));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("missing key \"c\""));
        assert!(d[1].contains("unexpected key \"d\""));
        let d = a.diff(&b, Duration::from_millis(100));
        assert!(
            d.iter().any(|l| l.contains("expiry of \"b\\xff\"")),
            "{d:?}"
        );
    }

    #[test]
    fn scores_compare_by_value() {
        assert_eq!(
            Score("0.1".parse().unwrap()),
            Score("0.10000000000000001".parse().unwrap())
        );
        assert_eq!(Score("inf".parse().unwrap()), Score(f64::INFINITY));
        assert_eq!(Score("-inf".parse().unwrap()), Score(f64::NEG_INFINITY));
    }
}
