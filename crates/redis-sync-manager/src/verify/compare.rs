//! The comparison of one batch of keys between source and target.
//!
//! Phases, each one pipelined over the whole batch on both sides at once:
//! 1. `TYPE` + expiry (`PEXPIRETIME`, or `PTTL` + the local clock on servers
//!    before 7.0) → missing, type and TTL differences;
//! 2. the length (`STRLEN`/`LLEN`/`SCARD`/`ZCARD`/`HLEN`/`XLEN`) → quick mode
//!    stops here;
//! 3. full mode: `DUMP` of small keys on both sides; byte-identical payloads
//!    (same value, same RDB version) settle the key without looking inside;
//! 4. otherwise the elements: small keys fetched whole in one pipeline, big
//!    keys and streams compared window by window (`LRANGE`/`ZRANGE` by rank on
//!    both sides, `HSCAN`/`SSCAN` on the source checked member by member on the
//!    target), so memory stays bounded by the window, never by the key.
//!
//! A batch's differences are only candidates: the caller re-checks them, since
//! a live source changes under us.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rsm_resp::Frame;

use super::route::{KeyCmd, RouteError, Router};
use super::{Category, Diff, Mode};

/// Elements per window for big keys, and the size under which a key is
/// fetched whole (and DUMPed) in one pipeline.
pub const WINDOW: i64 = 512;
/// Strings above this are compared in `GETRANGE` windows of this size.
const STRING_WINDOW: i64 = 1 << 20;

/// What a checker needs to know about both sides.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub mode: Mode,
    pub ttl_tolerance_ms: i64,
    pub src_pexpiretime: bool,
    pub dst_pexpiretime: bool,
    /// Map a source db to the target db (`--targetdb`).
    pub target_db: Option<u32>,
}

/// One worker's pair of routers.
pub struct Checker {
    pub src: Router,
    pub dst: Router,
    pub cfg: CheckConfig,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(f: &Frame) -> String {
    match f.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => f.describe(),
    }
}

/// Absolute expiry in ms, `None` when the key has none (or is gone).
fn expiry(f: &Frame, absolute: bool, now: i64) -> Option<i64> {
    match f.as_int() {
        Some(n) if n >= 0 => Some(if absolute { n } else { now + n }),
        _ => None,
    }
}

fn length_cmd(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "string" => "STRLEN",
        "list" => "LLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "hash" => "HLEN",
        "stream" => "XLEN",
        _ => return None,
    })
}

struct Row {
    key: Bytes,
    kind: String,
    len: i64,
}

impl Checker {
    fn tdb(&self, db: u32) -> u32 {
        self.cfg.target_db.unwrap_or(db)
    }

    /// Same command on both sides at once.
    async fn both(
        &mut self,
        db: u32,
        cmds: &[KeyCmd],
    ) -> Result<(Vec<Frame>, Vec<Frame>), RouteError> {
        let tdb = self.tdb(db);
        let (s, d) = tokio::join!(self.src.run(db, cmds), self.dst.run(tdb, cmds));
        Ok((s?, d?))
    }

    async fn one(
        &mut self,
        db: u32,
        key: &Bytes,
        args: Vec<Vec<u8>>,
    ) -> Result<(Frame, Frame), RouteError> {
        let cmds = [KeyCmd::new(key, args)];
        let (mut s, mut d) = self.both(db, &cmds).await?;
        Ok((
            s.pop().unwrap_or(Frame::Null),
            d.pop().unwrap_or(Frame::Null),
        ))
    }

    /// Compare `keys` (found on the source in `db`); every difference found.
    pub async fn check_batch(&mut self, db: u32, keys: &[Bytes]) -> Result<Vec<Diff>, RouteError> {
        let mut diffs = Vec::new();
        let ttl_cmd = |abs: bool| if abs { "PEXPIRETIME" } else { "PTTL" };
        // Phase 1: type + expiry. The two sides may use different expiry commands.
        let tdb = self.tdb(db);
        let src_cmds: Vec<KeyCmd> = keys
            .iter()
            .flat_map(|k| {
                [
                    KeyCmd::new(k, vec![b("TYPE"), k.to_vec()]),
                    KeyCmd::new(k, vec![b(ttl_cmd(self.cfg.src_pexpiretime)), k.to_vec()]),
                ]
            })
            .collect();
        let dst_cmds: Vec<KeyCmd> = keys
            .iter()
            .flat_map(|k| {
                [
                    KeyCmd::new(k, vec![b("TYPE"), k.to_vec()]),
                    KeyCmd::new(k, vec![b(ttl_cmd(self.cfg.dst_pexpiretime)), k.to_vec()]),
                ]
            })
            .collect();
        let (s, d) = tokio::join!(self.src.run(db, &src_cmds), self.dst.run(tdb, &dst_cmds));
        let (s, d) = (s?, d?);
        let now = now_ms();
        let mut rows = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (st, sx) = (&s[2 * i], &s[2 * i + 1]);
            let (dt, dx) = (&d[2 * i], &d[2 * i + 1]);
            let (st, dt) = (text(st), text(dt));
            if st == "none" {
                continue; // gone from the source meanwhile: nothing to compare
            }
            if dt == "none" {
                diffs.push(Diff::new(
                    Category::Missing,
                    db,
                    key,
                    format!("{st} absent from the target"),
                ));
                continue;
            }
            if st != dt {
                diffs.push(Diff::new(
                    Category::Type,
                    db,
                    key,
                    format!("source {st}, target {dt}"),
                ));
                continue;
            }
            let se = expiry(sx, self.cfg.src_pexpiretime, now);
            let de = expiry(dx, self.cfg.dst_pexpiretime, now);
            let ttl_diff = match (se, de) {
                (None, None) => None,
                (Some(a), Some(b)) if (a - b).abs() <= self.cfg.ttl_tolerance_ms => None,
                (Some(a), Some(b)) => Some(format!("expiry differs by {} ms", a - b)),
                (Some(_), None) => Some("source has a TTL, target has none".to_string()),
                (None, Some(_)) => Some("target has a TTL, source has none".to_string()),
            };
            if let Some(detail) = ttl_diff {
                diffs.push(Diff::new(Category::Ttl, db, key, detail));
            }
            rows.push(Row {
                key: key.clone(),
                kind: st,
                len: 0,
            });
        }

        // Phase 2: lengths.
        let measured: Vec<usize> = (0..rows.len())
            .filter(|i| length_cmd(&rows[*i].kind).is_some())
            .collect();
        let cmds: Vec<KeyCmd> = measured
            .iter()
            .map(|i| {
                let r = &rows[*i];
                KeyCmd::new(
                    &r.key,
                    vec![b(length_cmd(&r.kind).unwrap_or("EXISTS")), r.key.to_vec()],
                )
            })
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        let mut same_len = vec![true; rows.len()];
        for (j, i) in measured.iter().enumerate() {
            let (a, c) = (s[j].as_int(), d[j].as_int());
            if a.is_none() || a != c {
                same_len[*i] = false;
                diffs.push(Diff::new(
                    Category::Value,
                    db,
                    &rows[*i].key,
                    format!(
                        "{} length: source {}, target {}",
                        rows[*i].kind,
                        text(&s[j]),
                        text(&d[j])
                    ),
                ));
            } else {
                rows[*i].len = a.unwrap_or(0);
            }
        }
        if self.cfg.mode == Mode::Quick {
            return Ok(diffs);
        }

        // Phase 3: DUMP equality for small keys (and unknown types, which have no other way).
        let rows: Vec<Row> = rows
            .into_iter()
            .zip(same_len)
            .filter_map(|(r, same)| same.then_some(r))
            .collect();
        let small = |r: &Row| match r.kind.as_str() {
            "string" => r.len <= STRING_WINDOW,
            k if length_cmd(k).is_none() => true,
            _ => r.len <= WINDOW,
        };
        let dumped: Vec<usize> = (0..rows.len()).filter(|i| small(&rows[*i])).collect();
        let cmds: Vec<KeyCmd> = dumped
            .iter()
            .map(|i| KeyCmd::new(&rows[*i].key, vec![b("DUMP"), rows[*i].key.to_vec()]))
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        let mut settled = vec![false; rows.len()];
        for (j, i) in dumped.iter().enumerate() {
            match (&s[j], &d[j]) {
                (Frame::Bulk(a), Frame::Bulk(c)) if a == c => settled[*i] = true,
                _ if length_cmd(&rows[*i].kind).is_none() => {
                    // A module or unknown type: DUMP is the only comparison we have.
                    settled[*i] = true;
                    if s[j] != d[j] {
                        diffs.push(Diff::new(
                            Category::Value,
                            db,
                            &rows[*i].key,
                            "DUMP payloads differ".into(),
                        ));
                    }
                }
                _ => {}
            }
        }

        // Phase 4: elements. Small non-stream keys fetched whole, in one pipeline.
        let mut whole = Vec::new();
        let mut windowed = Vec::new();
        let mut small_streams = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if settled[i] {
                continue;
            }
            if small(r) && r.kind == "stream" {
                small_streams.push(r.key.clone());
            } else if small(r) {
                whole.push(i);
            } else {
                windowed.push(i);
            }
        }
        let cmds: Vec<KeyCmd> = whole
            .iter()
            .map(|i| {
                let r = &rows[*i];
                let k = r.key.to_vec();
                let args = match r.kind.as_str() {
                    "string" => vec![b("GET"), k],
                    "list" => vec![b("LRANGE"), k, b("0"), b("-1")],
                    "set" => vec![b("SMEMBERS"), k],
                    "zset" => vec![b("ZRANGE"), k, b("0"), b("-1"), b("WITHSCORES")],
                    _ => vec![b("HGETALL"), k],
                };
                KeyCmd::new(&r.key, args)
            })
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        for (j, i) in whole.iter().enumerate() {
            let r = &rows[*i];
            if let Some(detail) = compare_whole(&r.kind, &s[j], &d[j]) {
                diffs.push(Diff::new(Category::Value, db, &r.key, detail));
            }
        }
        diffs.extend(self.small_streams(db, &small_streams).await?);
        for i in windowed {
            let r = &rows[i];
            let detail = match r.kind.as_str() {
                "string" => self.string_windows(db, &r.key, r.len).await?,
                "list" => {
                    self.rank_windows(db, &r.key, r.len, "LRANGE", false)
                        .await?
                }
                "zset" => self.rank_windows(db, &r.key, r.len, "ZRANGE", true).await?,
                "hash" => self.scan_lookup(db, &r.key, true).await?,
                "set" => self.scan_lookup(db, &r.key, false).await?,
                _ => self.stream(db, &r.key).await?,
            };
            if let Some(detail) = detail {
                diffs.push(Diff::new(Category::Value, db, &r.key, detail));
            }
        }
        Ok(diffs)
    }

    /// Keys found on the target (in target db `tdb`) that no mapped source db has.
    pub async fn check_extra(
        &mut self,
        tdb: u32,
        source_dbs: &[u32],
        keys: &[Bytes],
    ) -> Result<Vec<Diff>, RouteError> {
        let cmds: Vec<KeyCmd> = keys
            .iter()
            .map(|k| KeyCmd::new(k, vec![b("EXISTS"), k.to_vec()]))
            .collect();
        let mut present = vec![false; keys.len()];
        for db in source_dbs {
            let s = self.src.run(*db, &cmds).await?;
            for (p, f) in present.iter_mut().zip(&s) {
                *p |= f.as_int() == Some(1);
            }
        }
        // The key must still be on the target: it may have been deleted on both sides.
        let d = self.dst.run(tdb, &cmds).await?;
        Ok(keys
            .iter()
            .zip(present)
            .zip(d)
            .filter(|((_, p), f)| !*p && f.as_int() == Some(1))
            .map(|((k, _), _)| Diff::new(Category::Extra, tdb, k, "absent from the source".into()))
            .collect())
    }

    async fn string_windows(
        &mut self,
        db: u32,
        key: &Bytes,
        len: i64,
    ) -> Result<Option<String>, RouteError> {
        let mut at = 0;
        while at < len {
            let end = at + STRING_WINDOW - 1;
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![
                        b("GETRANGE"),
                        key.to_vec(),
                        at.to_string().into_bytes(),
                        end.to_string().into_bytes(),
                    ],
                )
                .await?;
            if s != d {
                return Ok(Some(format!("string bytes differ in {at}..={end}")));
            }
            at += STRING_WINDOW;
        }
        Ok(None)
    }

    /// Lists and sorted sets: the same rank window on both sides must match.
    async fn rank_windows(
        &mut self,
        db: u32,
        key: &Bytes,
        len: i64,
        cmd: &str,
        scores: bool,
    ) -> Result<Option<String>, RouteError> {
        let mut at = 0;
        while at < len {
            let end = at + WINDOW - 1;
            let mut args = vec![
                b(cmd),
                key.to_vec(),
                at.to_string().into_bytes(),
                end.to_string().into_bytes(),
            ];
            if scores {
                args.push(b("WITHSCORES"));
            }
            let (s, d) = self.one(db, key, args).await?;
            let kind = if scores { "zset" } else { "list" };
            if let Some(detail) = compare_whole(kind, &s, &d) {
                return Ok(Some(format!("{detail} (ranks {at}..={end})")));
            }
            at += WINDOW;
        }
        Ok(None)
    }

    /// Hashes and sets: scan the source, look each member up on the target.
    /// With the lengths already equal, "every source member is on the target
    /// with the same value" means equal.
    async fn scan_lookup(
        &mut self,
        db: u32,
        key: &Bytes,
        hash: bool,
    ) -> Result<Option<String>, RouteError> {
        let tdb = self.tdb(db);
        let mut cursor = b"0".to_vec();
        loop {
            let scan = if hash { "HSCAN" } else { "SSCAN" };
            let cmds = [KeyCmd::new(
                key,
                vec![
                    b(scan),
                    key.to_vec(),
                    cursor.clone(),
                    b("COUNT"),
                    WINDOW.to_string().into_bytes(),
                ],
            )];
            let reply = self.src.run(db, &cmds).await?.pop().unwrap_or(Frame::Null);
            let Some([next, items]) = reply
                .as_array()
                .and_then(|a| <&[Frame; 2]>::try_from(a).ok())
            else {
                return Ok(Some(format!("{scan} failed: {}", reply.describe())));
            };
            let items = items.as_array().unwrap_or(&[]);
            let lookups: Vec<KeyCmd> = if hash {
                let mut args = vec![b("HMGET"), key.to_vec()];
                args.extend(
                    items
                        .iter()
                        .step_by(2)
                        .filter_map(|f| f.as_bytes().map(|x| x.to_vec())),
                );
                vec![KeyCmd::new(key, args)]
            } else {
                items
                    .iter()
                    .filter_map(|m| m.as_bytes())
                    .map(|m| KeyCmd::new(key, vec![b("SISMEMBER"), key.to_vec(), m.to_vec()]))
                    .collect()
            };
            if !items.is_empty() {
                let d = self.dst.run(tdb, &lookups).await?;
                if hash {
                    let values = d.first().and_then(Frame::as_array).unwrap_or(&[]);
                    for (pair, got) in items
                        .chunks(2)
                        .zip(values.iter().chain(std::iter::repeat(&Frame::Null)))
                    {
                        if pair.get(1) != Some(got) {
                            return Ok(Some(format!(
                                "hash field {} differs",
                                super::output::escape(
                                    pair[0].as_bytes().map(|x| &x[..]).unwrap_or(b"")
                                )
                            )));
                        }
                    }
                } else {
                    for (m, got) in items.iter().zip(&d) {
                        if got.as_int() != Some(1) {
                            return Ok(Some(format!(
                                "set member {} absent from the target",
                                super::output::escape(m.as_bytes().map(|x| &x[..]).unwrap_or(b""))
                            )));
                        }
                    }
                }
            }
            cursor = next
                .as_bytes()
                .map(|c| c.to_vec())
                .unwrap_or_else(|| b("0"));
            if cursor == b"0" {
                return Ok(None);
            }
        }
    }

    /// Streams that fit in one window, batched: entries, stream ids and
    /// groups in one pipeline, then every group's consumers and PEL in a
    /// second. A PEL filling the whole window goes to the windowed path.
    async fn small_streams(&mut self, db: u32, keys: &[Bytes]) -> Result<Vec<Diff>, RouteError> {
        let mut diffs = Vec::new();
        let cmds: Vec<KeyCmd> = keys
            .iter()
            .flat_map(|k| {
                [
                    KeyCmd::new(k, vec![b("XRANGE"), k.to_vec(), b("-"), b("+")]),
                    KeyCmd::new(k, vec![b("XINFO"), b("STREAM"), k.to_vec()]),
                    KeyCmd::new(k, vec![b("XINFO"), b("GROUPS"), k.to_vec()]),
                ]
            })
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        let mut per_group: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let j = 3 * i;
            let found = if s[j] != d[j] {
                Some("stream entries differ".to_string())
            } else if let Some(m) = stream_meta_diff(&s[j + 1], &d[j + 1]) {
                Some(m)
            } else {
                match groups_diff(&s[j + 2], &d[j + 2]) {
                    Ok(names) => {
                        per_group.extend(names.into_iter().map(|g| (i, g)));
                        None
                    }
                    Err(m) => Some(m),
                }
            };
            if let Some(detail) = found {
                diffs.push(Diff::new(Category::Value, db, key, detail));
            }
        }
        let cmds: Vec<KeyCmd> = per_group
            .iter()
            .flat_map(|(i, g)| {
                let k = &keys[*i];
                [
                    KeyCmd::new(k, vec![b("XINFO"), b("CONSUMERS"), k.to_vec(), g.clone()]),
                    KeyCmd::new(
                        k,
                        vec![
                            b("XPENDING"),
                            k.to_vec(),
                            g.clone(),
                            b("-"),
                            b("+"),
                            WINDOW.to_string().into_bytes(),
                        ],
                    ),
                ]
            })
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        let mut reported: Vec<usize> = Vec::new();
        let mut deeper: Vec<usize> = Vec::new();
        for (n, (i, g)) in per_group.iter().enumerate() {
            if reported.contains(i) {
                continue;
            }
            let g = String::from_utf8_lossy(g);
            let detail = if consumers(&s[2 * n]) != consumers(&d[2 * n]) {
                Some(format!(
                    "group {g}: consumers or their pending counts differ"
                ))
            } else if pel(&s[2 * n + 1]) != pel(&d[2 * n + 1])
                || s[2 * n + 1].is_error() != d[2 * n + 1].is_error()
            {
                Some(format!("group {g}: pending entries differ"))
            } else {
                if pel(&s[2 * n + 1]).len() as i64 == WINDOW && !deeper.contains(i) {
                    deeper.push(*i);
                }
                None
            };
            if let Some(detail) = detail {
                reported.push(*i);
                diffs.push(Diff::new(Category::Value, db, &keys[*i], detail));
            }
        }
        for i in deeper.into_iter().filter(|i| !reported.contains(i)) {
            if let Some(detail) = self.stream(db, &keys[i]).await? {
                diffs.push(Diff::new(Category::Value, db, &keys[i], detail));
            }
        }
        Ok(diffs)
    }

    /// Streams: entries in id windows, the stream's own ids and counters, each
    /// consumer group's state, its consumers' pending counts, and its PEL (ids,
    /// consumers and delivery counts; idle times differ by nature).
    async fn stream(&mut self, db: u32, key: &Bytes) -> Result<Option<String>, RouteError> {
        let k = key.to_vec();
        let mut start = b("-");
        loop {
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![
                        b("XRANGE"),
                        k.clone(),
                        start.clone(),
                        b("+"),
                        b("COUNT"),
                        WINDOW.to_string().into_bytes(),
                    ],
                )
                .await?;
            if s != d {
                return Ok(Some(format!(
                    "stream entries differ after id {}",
                    String::from_utf8_lossy(&start)
                )));
            }
            let entries = s.as_array().unwrap_or(&[]);
            match entries
                .last()
                .and_then(|e| e.as_array()?.first()?.as_bytes().cloned())
            {
                Some(last) if entries.len() as i64 == WINDOW => match next_id(&last) {
                    Some(n) => start = n,
                    None => break,
                },
                _ => break,
            }
        }
        let (s, d) = self
            .one(db, key, vec![b("XINFO"), b("STREAM"), k.clone()])
            .await?;
        let (s, d) = (flat_map(&s), flat_map(&d));
        for field in ["last-generated-id", "max-deleted-entry-id", "entries-added"] {
            if let (Some(a), Some(c)) = (s.get(field), d.get(field)) {
                if a != c {
                    return Ok(Some(format!(
                        "stream {field}: source {}, target {}",
                        text(a),
                        text(c)
                    )));
                }
            }
        }
        let (s, d) = self
            .one(db, key, vec![b("XINFO"), b("GROUPS"), k.clone()])
            .await?;
        let groups = |f: &Frame| -> Vec<HashMap<String, Frame>> {
            let mut v: Vec<_> = f.as_array().unwrap_or(&[]).iter().map(flat_map).collect();
            v.sort_by_key(|g| g.get("name").map(text));
            v
        };
        let (sg, dg) = (groups(&s), groups(&d));
        if sg.len() != dg.len() {
            return Ok(Some(format!(
                "stream has {} groups on the source, {} on the target",
                sg.len(),
                dg.len()
            )));
        }
        for (a, c) in sg.iter().zip(&dg) {
            let name = a.get("name").map(text).unwrap_or_default();
            for field in [
                "name",
                "consumers",
                "pending",
                "last-delivered-id",
                "entries-read",
            ] {
                if let (Some(x), Some(y)) = (a.get(field), c.get(field)) {
                    if x != y {
                        return Ok(Some(format!(
                            "group {name}: {field} source {}, target {}",
                            text(x),
                            text(y)
                        )));
                    }
                } else if field == "name" || field == "last-delivered-id" {
                    return Ok(Some(format!("group {name}: {field} missing on one side")));
                }
            }
            let g = name.into_bytes();
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![b("XINFO"), b("CONSUMERS"), k.clone(), g.clone()],
                )
                .await?;
            let consumers = |f: &Frame| -> Vec<(String, String)> {
                let mut v: Vec<_> = f
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .map(flat_map)
                    .map(|c| {
                        (
                            c.get("name").map(text).unwrap_or_default(),
                            c.get("pending").map(text).unwrap_or_default(),
                        )
                    })
                    .collect();
                v.sort();
                v
            };
            if consumers(&s) != consumers(&d) {
                return Ok(Some(format!(
                    "group {}: consumers or their pending counts differ",
                    String::from_utf8_lossy(&g)
                )));
            }
            let mut start = b("-");
            loop {
                let (s, d) = self
                    .one(
                        db,
                        key,
                        vec![
                            b("XPENDING"),
                            k.clone(),
                            g.clone(),
                            start.clone(),
                            b("+"),
                            WINDOW.to_string().into_bytes(),
                        ],
                    )
                    .await?;
                let pel = |f: &Frame| -> Vec<(Frame, Frame, Frame)> {
                    f.as_array()
                        .unwrap_or(&[])
                        .iter()
                        .filter_map(|e| match e.as_array()? {
                            [id, consumer, _idle, count] => {
                                Some((id.clone(), consumer.clone(), count.clone()))
                            }
                            _ => None,
                        })
                        .collect()
                };
                let (sp, dp) = (pel(&s), pel(&d));
                if sp != dp || s.is_error() != d.is_error() {
                    return Ok(Some(format!(
                        "group {}: pending entries differ after id {}",
                        String::from_utf8_lossy(&g),
                        String::from_utf8_lossy(&start)
                    )));
                }
                match sp.last().and_then(|(id, _, _)| id.as_bytes().cloned()) {
                    Some(last) if sp.len() as i64 == WINDOW => match next_id(&last) {
                        Some(n) => start = n,
                        None => break,
                    },
                    _ => break,
                }
            }
        }
        Ok(None)
    }
}

/// `XINFO STREAM` fields that must match (those both servers report).
fn stream_meta_diff(s: &Frame, d: &Frame) -> Option<String> {
    let (s, d) = (flat_map(s), flat_map(d));
    for field in ["last-generated-id", "max-deleted-entry-id", "entries-added"] {
        if let (Some(a), Some(c)) = (s.get(field), d.get(field)) {
            if a != c {
                return Some(format!(
                    "stream {field}: source {}, target {}",
                    text(a),
                    text(c)
                ));
            }
        }
    }
    None
}

/// `XINFO GROUPS` of both sides: the group names when they agree.
fn groups_diff(s: &Frame, d: &Frame) -> Result<Vec<Vec<u8>>, String> {
    let groups = |f: &Frame| -> Vec<HashMap<String, Frame>> {
        let mut v: Vec<_> = f.as_array().unwrap_or(&[]).iter().map(flat_map).collect();
        v.sort_by_key(|g| g.get("name").map(text));
        v
    };
    let (sg, dg) = (groups(s), groups(d));
    if sg.len() != dg.len() {
        return Err(format!(
            "stream has {} groups on the source, {} on the target",
            sg.len(),
            dg.len()
        ));
    }
    let mut names = Vec::new();
    for (a, c) in sg.iter().zip(&dg) {
        let name = a.get("name").map(text).unwrap_or_default();
        for field in [
            "name",
            "consumers",
            "pending",
            "last-delivered-id",
            "entries-read",
        ] {
            match (a.get(field), c.get(field)) {
                (Some(x), Some(y)) if x != y => {
                    return Err(format!(
                        "group {name}: {field} source {}, target {}",
                        text(x),
                        text(y)
                    ));
                }
                (None, _) | (_, None) if field == "name" || field == "last-delivered-id" => {
                    return Err(format!("group {name}: {field} missing on one side"));
                }
                _ => {}
            }
        }
        names.push(name.into_bytes());
    }
    Ok(names)
}

/// `XINFO CONSUMERS` as sorted (name, pending); idle times differ by nature.
fn consumers(f: &Frame) -> Vec<(String, String)> {
    let mut v: Vec<_> = f
        .as_array()
        .unwrap_or(&[])
        .iter()
        .map(flat_map)
        .map(|c| {
            (
                c.get("name").map(text).unwrap_or_default(),
                c.get("pending").map(text).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Extended `XPENDING` as (id, consumer, delivery count), without idle times.
fn pel(f: &Frame) -> Vec<(Frame, Frame, Frame)> {
    f.as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| match e.as_array()? {
            [id, consumer, _idle, count] => Some((id.clone(), consumer.clone(), count.clone())),
            _ => None,
        })
        .collect()
}

/// The smallest stream id after `id` (an exclusive start that works before 6.2).
fn next_id(id: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(id).ok()?;
    let (ms, seq) = s.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(
        match seq.checked_add(1) {
            Some(seq) => format!("{ms}-{seq}"),
            None => format!("{}-0", ms.checked_add(1)?),
        }
        .into_bytes(),
    )
}

/// RESP2 `[name, value, name, value…]` (XINFO replies) as a map.
fn flat_map(f: &Frame) -> HashMap<String, Frame> {
    let mut m = HashMap::new();
    if let Some(items) = f.as_array() {
        for pair in items.chunks(2) {
            if let [k, v] = pair {
                m.insert(text(k), v.clone());
            }
        }
    }
    if let Frame::Map(pairs) = f {
        for (k, v) in pairs {
            m.insert(text(k), v.clone());
        }
    }
    m
}

/// Compare two whole values (or two rank windows) of `kind`.
fn compare_whole(kind: &str, s: &Frame, d: &Frame) -> Option<String> {
    if s.is_error() || d.is_error() {
        return Some(format!(
            "read failed: source {}, target {}",
            s.describe(),
            d.describe()
        ));
    }
    match kind {
        "string" | "list" => (s != d).then(|| format!("{kind} values differ")),
        "set" => {
            let sort = |f: &Frame| {
                let mut v: Vec<Bytes> = f
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|x| x.as_bytes().cloned())
                    .collect();
                v.sort();
                v
            };
            (sort(s) != sort(d)).then(|| "set members differ".to_string())
        }
        "hash" => {
            let sort = |f: &Frame| {
                let mut v: Vec<(Frame, Frame)> = f
                    .as_array()
                    .unwrap_or(&[])
                    .chunks(2)
                    .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
                    .collect();
                v.sort_by(|a, b| a.0.as_bytes().cmp(&b.0.as_bytes()));
                v
            };
            (sort(s) != sort(d)).then(|| "hash fields differ".to_string())
        }
        _ => {
            // zset: members in rank order; scores compared as numbers, since
            // servers of different versions print the same double differently.
            let pairs = |f: &Frame| -> Vec<(Bytes, Option<f64>)> {
                f.as_array()
                    .unwrap_or(&[])
                    .chunks(2)
                    .filter_map(|p| {
                        let m = p.first()?.as_bytes()?.clone();
                        let sc = std::str::from_utf8(p.get(1)?.as_bytes()?)
                            .ok()?
                            .parse::<f64>()
                            .ok();
                        Some((m, sc))
                    })
                    .collect()
            };
            let (a, c) = (pairs(s), pairs(d));
            if a.len() != c.len() {
                return Some("zset members differ".into());
            }
            for ((m1, s1), (m2, s2)) in a.iter().zip(&c) {
                if m1 != m2 {
                    return Some(format!("zset member {} differs", super::output::escape(m1)));
                }
                if s1 != s2 {
                    return Some(format!(
                        "zset score of {} differs",
                        super::output::escape(m1)
                    ));
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_ids() {
        assert_eq!(next_id(b"5-1").as_deref(), Some(&b"5-2"[..]));
        assert_eq!(
            next_id(b"5-18446744073709551615").as_deref(),
            Some(&b"6-0"[..])
        );
        assert_eq!(next_id(b"junk"), None);
    }

    #[test]
    fn zset_scores_compare_as_numbers() {
        let z = |score: &str| {
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"m")),
                Frame::Bulk(Bytes::from(score.to_string())),
            ])
        };
        assert_eq!(
            compare_whole("zset", &z("0.1"), &z("0.10000000000000001")),
            None
        );
        assert!(compare_whole("zset", &z("0.1"), &z("0.2")).is_some());
        assert_eq!(compare_whole("zset", &z("inf"), &z("inf")), None);
    }

    #[test]
    fn sets_and_hashes_ignore_order() {
        let a = |v: &[&'static [u8]]| {
            Frame::Array(
                v.iter()
                    .map(|x| Frame::Bulk(Bytes::from_static(x)))
                    .collect(),
            )
        };
        assert_eq!(
            compare_whole("set", &a(&[b"x", b"y"]), &a(&[b"y", b"x"])),
            None
        );
        assert_eq!(
            compare_whole(
                "hash",
                &a(&[b"f", b"1", b"g", b"2"]),
                &a(&[b"g", b"2", b"f", b"1"])
            ),
            None
        );
        assert!(compare_whole(
            "hash",
            &a(&[b"f", b"1", b"g", b"2"]),
            &a(&[b"g", b"1", b"f", b"2"])
        )
        .is_some());
        assert!(compare_whole("list", &a(&[b"x", b"y"]), &a(&[b"y", b"x"])).is_some());
    }
}
