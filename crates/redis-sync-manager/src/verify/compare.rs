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
//!
//! Across versions (sources and targets from Redis 5.0 to 8.2, Valkey 8.1 to
//! 9.1, in any pairing), the comparison asks each side only what it can answer
//! and compares only what both report:
//! - `PEXPIRETIME` is 7.0+; older sides answer `PTTL`, made absolute with the
//!   local clock;
//! - `XINFO STREAM`'s `max-deleted-entry-id`/`entries-added` and `XINFO
//!   GROUPS`' `entries-read` are 7.0+: compared when both sides have them;
//! - `XRANGE` with an exclusive start and `SMISMEMBER` are 6.2+: windows start
//!   at the next id instead, and set members are looked up one by one;
//! - a `DUMP` payload carries its RDB version and the value's encoding, which
//!   differ across versions even for equal values: a different payload only
//!   sends the key on to the element comparison;
//! - a RESP3 side answers `XINFO` with maps where RESP2 sends flat arrays;
//!   both read the same.

use std::collections::HashMap;

use bytes::Bytes;
use rsm_resp::Frame;

use super::route::{KeyCmd, RouteError, Router};
use super::{Category, Diff, Mode};

/// Elements per window for big keys, and the size under which a key is
/// fetched whole (and DUMPed) in one pipeline.
// A window is what one worker holds of one key per side at a time, so it is
// the bound behind "memory by window, never by key"; it is also one round
// trip, so it sets how many trips a big key costs. 512 keeps a window's reply
// small for any sane element size while a key of a few thousand elements still
// takes only a handful of trips. The same number caps the DUMP fast path,
// because a DUMP reply carries the whole value at once.
pub const WINDOW: i64 = 512;
/// Strings above this are compared in `GETRANGE` windows of this size.
// A string is a single element, so the element window says nothing about its
// size: strings get a byte window of their own. At 1 MiB a string of the
// server's largest size (512 MiB) still costs at most 512 round trips.
const STRING_WINDOW: i64 = 1 << 20;

/// What a checker needs to know about both sides.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub mode: Mode,
    /// Expiries further apart than this differ (see [`now_ms`] for why two
    /// equal keys rarely report the very same expiry).
    pub ttl_tolerance_ms: i64,
    /// The source answers `PEXPIRETIME` (Redis 7.0+, every Valkey).
    pub src_pexpiretime: bool,
    /// The same for the target; the two may differ (a 6.2 source into 7.2).
    pub dst_pexpiretime: bool,
    /// Map a source db to the target db (`--targetdb`).
    pub target_db: Option<u32>,
}

/// One worker's pair of routers.
// Owned by one worker task and never shared: the routers keep their own
// connections, so a worker's pipelines never wait on another worker's.
pub struct Checker {
    pub src: Router,
    pub dst: Router,
    pub cfg: CheckConfig,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The local clock, read once per batch to turn `PTTL` (remaining ms) into an
/// absolute expiry comparable with `PEXPIRETIME`.
// Two PTTL sides are converted with the same reading, so the local clock's
// error cancels out between them; what remains is the time between the two
// servers' answers, which the tolerance absorbs. Against a PEXPIRETIME side
// the local clock's offset from that server adds to it. A clock before 1970
// reads 0, which keeps PTTL sides comparable with each other.
fn now_ms() -> i64 {
    rsm_counters::now_ms() as i64
}

// A reply that is not a string (an error, a nil) is described, not dropped:
// a difference's detail then shows what actually came back.
fn text(f: &Frame) -> String {
    match f.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => f.describe(),
    }
}

/// Absolute expiry in ms, `None` when the key has none (or is gone).
// Both commands answer -1 for "no expiry" and -2 for "no such key"; a key that
// vanished is already caught by `TYPE` in the same pipeline, so both map to
// `None` here.
fn expiry(f: &Frame, absolute: bool, now: i64) -> Option<i64> {
    match f.as_int() {
        Some(n) if n >= 0 => Some(if absolute { n } else { now + n }),
        _ => None,
    }
}

/// The TTL difference between two absolute expiries, if any beyond `tolerance_ms`.
fn ttl_diff(se: Option<i64>, de: Option<i64>, tolerance_ms: i64) -> Option<String> {
    match (se, de) {
        (None, None) => None,
        (Some(a), Some(b)) if (a - b).abs() <= tolerance_ms => None,
        (Some(a), Some(b)) => Some(format!("expiry differs by {} ms", a - b)),
        (Some(_), None) => Some("source has a TTL, target has none".to_string()),
        (None, Some(_)) => Some("target has a TTL, source has none".to_string()),
    }
}

// Every one of these is O(1) on the server, so the length phase costs one
// cheap pipeline per batch however big the keys are. Types not listed (module
// types, types newer than this tool) have no generic length command; `DUMP` is
// the only comparison they get.
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

/// A key still under comparison, as phase 1 and 2 found it on the source.
#[derive(Debug)]
struct Row {
    key: Bytes,
    /// The `TYPE` reply, equal on both sides (phase 1 stops a key otherwise).
    kind: String,
    /// The length both sides agree on; 0 until phase 2, and for unknown types.
    len: i64,
}

/// Small enough for `DUMP` and for a whole-value fetch in one reply.
// Unknown types have no length, so their size is unknown; they are DUMPed
// anyway, because nothing else can compare them.
fn is_small(r: &Row) -> bool {
    match r.kind.as_str() {
        "string" => r.len <= STRING_WINDOW,
        k if length_cmd(k).is_none() => true,
        _ => r.len <= WINDOW,
    }
}

/// `TYPE` and expiry of each key, two commands per key, in key order.
fn type_and_expiry_cmds(keys: &[Bytes], pexpiretime: bool) -> Vec<KeyCmd> {
    let ttl = if pexpiretime { "PEXPIRETIME" } else { "PTTL" };
    keys.iter()
        .flat_map(|k| {
            [
                KeyCmd::new(k, vec![b("TYPE"), k.to_vec()]),
                KeyCmd::new(k, vec![b(ttl), k.to_vec()]),
            ]
        })
        .collect()
}

/// Phase 4's three paths for the keys phase 3 left: small keys fetched whole,
/// small streams (batched on their own), and big keys compared window by window.
fn by_path(rows: Vec<Row>) -> (Vec<Row>, Vec<Bytes>, Vec<Row>) {
    let mut whole = Vec::new();
    let mut small_streams = Vec::new();
    let mut windowed = Vec::new();
    for r in rows {
        if is_small(&r) && r.kind == "stream" {
            // A stream is more than its entries (ids, groups, PELs): even a
            // small one needs several replies, see `small_streams`.
            small_streams.push(r.key);
        } else if is_small(&r) {
            whole.push(r);
        } else {
            windowed.push(r);
        }
    }
    (whole, small_streams, windowed)
}

/// The command that reads a small key's whole value.
// The reply's order matters only where the type has one (list: index order,
// zset: rank order); `compare_whole` sorts sets and hashes before comparing.
fn whole_value_args(kind: &str, key: &Bytes) -> Vec<Vec<u8>> {
    let k = key.to_vec();
    match kind {
        "string" => vec![b("GET"), k],
        "list" => vec![b("LRANGE"), k, b("0"), b("-1")],
        "set" => vec![b("SMEMBERS"), k],
        "zset" => vec![b("ZRANGE"), k, b("0"), b("-1"), b("WITHSCORES")],
        _ => vec![b("HGETALL"), k],
    }
}

impl Checker {
    // `--targetdb` sends every source db into one target db. A cluster target
    // of db 0 only (no `cluster-databases`) gets `Some(0)` from `verify`.
    fn tdb(&self, db: u32) -> u32 {
        rsm_command::TargetDb::new(self.cfg.target_db).of(db)
    }

    /// Same command on both sides at once.
    // Concurrent rather than one after the other: a batch costs the slower
    // side's round trip, not the sum, and the two reads land as close in time
    // as we can make them, which narrows the gap in which a live write makes
    // them disagree.
    async fn both(
        &mut self,
        db: u32,
        cmds: &[KeyCmd],
    ) -> Result<(Vec<Frame>, Vec<Frame>), RouteError> {
        let tdb = self.tdb(db);
        let (s, d) = tokio::join!(self.src.run(db, cmds), self.dst.run(tdb, cmds));
        Ok((s?, d?))
    }

    /// One command on both sides: the windowed paths, where each reply decides
    /// whether (and from where) the next window is read.
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
    // Each phase hands on only the keys it could not settle, so the costlier
    // phases see fewer keys: in a healthy copy nearly every key stops at the
    // DUMP of phase 3 and the element phase sees only big keys and streams.
    pub async fn check_batch(&mut self, db: u32, keys: &[Bytes]) -> Result<Vec<Diff>, RouteError> {
        let mut diffs = Vec::new();
        let rows = self.compare_types(db, keys, &mut diffs).await?;
        let rows = self.compare_lengths(db, rows, &mut diffs).await?;
        // Quick mode promises existence, type, length and TTL: O(1) per key on
        // the servers, whatever the size of the values.
        if self.cfg.mode == Mode::Quick {
            return Ok(diffs);
        }
        let rows = self.compare_dumps(db, rows, &mut diffs).await?;
        self.compare_elements(db, rows, &mut diffs).await?;
        Ok(diffs)
    }

    /// Phase 1: type and expiry. Returns the keys present on both sides with
    /// the same type, for the later phases.
    async fn compare_types(
        &mut self,
        db: u32,
        keys: &[Bytes],
        diffs: &mut Vec<Diff>,
    ) -> Result<Vec<Row>, RouteError> {
        // Each side gets its own expiry command (a 6.2 source into a 7.2
        // target: PTTL on one side, PEXPIRETIME on the other), so the two
        // pipelines differ and `both` does not fit.
        let tdb = self.tdb(db);
        let src_cmds = type_and_expiry_cmds(keys, self.cfg.src_pexpiretime);
        let dst_cmds = type_and_expiry_cmds(keys, self.cfg.dst_pexpiretime);
        let (s, d) = tokio::join!(self.src.run(db, &src_cmds), self.dst.run(tdb, &dst_cmds));
        let (s, d) = (s?, d?);
        // One reading for the whole batch, taken after both replies: see `now_ms`.
        let now = now_ms();
        let mut rows = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (st, sx) = (&s[2 * i], &s[2 * i + 1]);
            let (dt, dx) = (&d[2 * i], &d[2 * i + 1]);
            let (st, dt) = (text(st), text(dt));
            if st == "none" {
                // Deleted or expired on the source since the scan found it: a
                // key the source no longer has is not a difference (the sync
                // deletes it on the target too; the extra-key scan sees it if not).
                continue;
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
                // Values of different types cannot be compared: this is the
                // key's only difference.
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
            // A TTL difference does not end the comparison: the value may
            // differ as well, and that is a difference of its own category.
            if let Some(detail) = ttl_diff(se, de, self.cfg.ttl_tolerance_ms) {
                diffs.push(Diff::new(Category::Ttl, db, key, detail));
            }
            rows.push(Row {
                key: key.clone(),
                kind: st,
                len: 0,
            });
        }
        Ok(rows)
    }

    /// Phase 2: lengths. Returns the keys whose lengths agree (and those of
    /// types without a length), with `len` filled in: the later phases choose
    /// their path by it.
    async fn compare_lengths(
        &mut self,
        db: u32,
        mut rows: Vec<Row>,
        diffs: &mut Vec<Diff>,
    ) -> Result<Vec<Row>, RouteError> {
        let measured: Vec<usize> = (0..rows.len())
            .filter(|i| length_cmd(&rows[*i].kind).is_some())
            .collect();
        let cmds: Vec<KeyCmd> = measured
            .iter()
            .map(|i| {
                let r = &rows[*i];
                // The fallback is never sent: `measured` holds only types
                // that have a length command.
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
            // No number from the source (a WRONGTYPE after the key changed
            // type since phase 1) counts as a difference: the re-check decides.
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
        // A key whose length differs has its value difference already: one
        // per key is enough, the later phases would only repeat it.
        Ok(rows
            .into_iter()
            .zip(same_len)
            .filter_map(|(r, same)| same.then_some(r))
            .collect())
    }

    /// Phase 3: `DUMP` of the small keys on both sides (and of unknown types,
    /// which have no other way). Returns the keys it could not settle.
    async fn compare_dumps(
        &mut self,
        db: u32,
        rows: Vec<Row>,
        diffs: &mut Vec<Diff>,
    ) -> Result<Vec<Row>, RouteError> {
        let dumped: Vec<usize> = (0..rows.len()).filter(|i| is_small(&rows[*i])).collect();
        let cmds: Vec<KeyCmd> = dumped
            .iter()
            .map(|i| KeyCmd::new(&rows[*i].key, vec![b("DUMP"), rows[*i].key.to_vec()]))
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        let mut settled = vec![false; rows.len()];
        for (j, i) in dumped.iter().enumerate() {
            match (&s[j], &d[j]) {
                // A DUMP payload is the value's RDB serialization plus the RDB
                // version and a checksum: equal bytes mean an equal value.
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
                // Different payloads prove nothing: the same value has other
                // bytes in another encoding (listpack on one side, hashtable
                // on the other), under another RDB version (a cross-version
                // copy), or with other stream consumer seen-times. The
                // elements decide.
                _ => {}
            }
        }
        Ok(rows
            .into_iter()
            .zip(settled)
            .filter_map(|(r, settled)| (!settled).then_some(r))
            .collect())
    }

    /// Phase 4: the elements of every key phase 3 left, by the path its size
    /// and type call for. Differences come in that order: whole keys, small
    /// streams, windowed keys.
    async fn compare_elements(
        &mut self,
        db: u32,
        rows: Vec<Row>,
        diffs: &mut Vec<Diff>,
    ) -> Result<(), RouteError> {
        let (whole, small_streams, windowed) = by_path(rows);
        self.compare_whole_keys(db, &whole, diffs).await?;
        diffs.extend(self.small_streams(db, &small_streams).await?);
        self.compare_windowed(db, &windowed, diffs).await
    }

    /// Small non-stream keys, fetched whole in one pipeline per side.
    async fn compare_whole_keys(
        &mut self,
        db: u32,
        rows: &[Row],
        diffs: &mut Vec<Diff>,
    ) -> Result<(), RouteError> {
        let cmds: Vec<KeyCmd> = rows
            .iter()
            .map(|r| KeyCmd::new(&r.key, whole_value_args(&r.kind, &r.key)))
            .collect();
        let (s, d) = self.both(db, &cmds).await?;
        for (j, r) in rows.iter().enumerate() {
            if let Some(detail) = compare_whole(&r.kind, &s[j], &d[j]) {
                diffs.push(Diff::new(Category::Value, db, &r.key, detail));
            }
        }
        Ok(())
    }

    /// Big keys and big streams, one key at a time, window by window; each
    /// stops at its first differing window.
    // One key at a time, not pipelined over the batch: that is what keeps a
    // worker's memory at one window per side, whatever the batch holds.
    async fn compare_windowed(
        &mut self,
        db: u32,
        rows: &[Row],
        diffs: &mut Vec<Diff>,
    ) -> Result<(), RouteError> {
        for r in rows {
            let detail = match r.kind.as_str() {
                "string" => self.string_windows(db, &r.key, r.len).await?,
                "list" => {
                    self.rank_windows(db, &r.key, r.len, "LRANGE", false)
                        .await?
                }
                "zset" => self.rank_windows(db, &r.key, r.len, "ZRANGE", true).await?,
                // Hashes and sets have no stable order between two servers
                // (nor even between two encodings on one), so they cannot be
                // windowed by rank: they are scanned and looked up instead.
                "hash" => self.scan_lookup(db, &r.key, true).await?,
                "set" => self.scan_lookup(db, &r.key, false).await?,
                _ => self.stream(db, &r.key).await?,
            };
            if let Some(detail) = detail {
                diffs.push(Diff::new(Category::Value, db, &r.key, detail));
            }
        }
        Ok(())
    }

    /// Keys found on the target (in target db `tdb`) that no mapped source db has.
    // Every mapped source db is asked, since `--targetdb` may send several
    // source dbs into this one target db: the key may come from any of them.
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
        // Asked after the source on purpose: a key deleted on the source
        // between the target's scan and now is, by this look, gone from the
        // target too once the sync has carried the delete.
        let d = self.dst.run(tdb, &cmds).await?;
        Ok(keys
            .iter()
            .zip(present)
            .zip(d)
            .filter(|((_, p), f)| !*p && f.as_int() == Some(1))
            .map(|((k, _), _)| Diff::new(Category::Extra, tdb, k, "absent from the source".into()))
            .collect())
    }

    // Byte windows at the same offsets on both sides; lengths are already
    // equal (phase 2), so the windows line up.
    async fn string_windows(
        &mut self,
        db: u32,
        key: &Bytes,
        len: i64,
    ) -> Result<Option<String>, RouteError> {
        let mut at = 0;
        while at < len {
            // GETRANGE's end is inclusive.
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
    // Ranks are the same on both sides for equal values (lists keep insertion
    // order; zsets order by score, then member bytes). An insertion on the
    // source between two windows shifts every later rank and shows up as a
    // difference; the re-check sorts that out.
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
            // A zset member whose score changed keeps its rank only by
            // chance: the scores must be compared along with the members.
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
    // Only the source is scanned: two SCANs of the two sides return elements
    // in unrelated orders, so they could not be compared page by page. SCAN may
    // return an element twice; looking it up twice is harmless.
    async fn scan_lookup(
        &mut self,
        db: u32,
        key: &Bytes,
        hash: bool,
    ) -> Result<Option<String>, RouteError> {
        let tdb = self.tdb(db);
        let scan = if hash { "HSCAN" } else { "SSCAN" };
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self.scan_page(db, key, scan, &cursor).await?;
            let Some([next, items]) = reply
                .as_array()
                .and_then(|a| <&[Frame; 2]>::try_from(a).ok())
            else {
                return Ok(Some(format!("{scan} failed: {}", reply.describe())));
            };
            let items = items.as_array().unwrap_or(&[]);
            // SCAN may return an empty page before the end; nothing to look up then.
            if !items.is_empty() {
                let d = self.dst.run(tdb, &lookup_cmds(key, items, hash)).await?;
                if let Some(detail) = lookup_diff(items, &d, hash) {
                    return Ok(Some(detail));
                }
            }
            // A cursor that is not a string ends the walk: looping on from "0"
            // would never end.
            cursor = next
                .as_bytes()
                .map(|c| c.to_vec())
                .unwrap_or_else(|| b("0"));
            if cursor == b"0" {
                return Ok(None);
            }
        }
    }

    /// One `HSCAN`/`SSCAN` page of the source.
    // COUNT is only a hint: a page may hold more (a compact encoding is
    // returned whole) or fewer elements than asked.
    async fn scan_page(
        &mut self,
        db: u32,
        key: &Bytes,
        scan: &str,
        cursor: &[u8],
    ) -> Result<Frame, RouteError> {
        let cmds = [KeyCmd::new(
            key,
            vec![
                b(scan),
                key.to_vec(),
                cursor.to_vec(),
                b("COUNT"),
                WINDOW.to_string().into_bytes(),
            ],
        )];
        Ok(self.src.run(db, &cmds).await?.pop().unwrap_or(Frame::Null))
    }

    /// Streams that fit in one window, batched: entries, stream ids and
    /// groups in one pipeline, then every group's consumers and PEL in a
    /// second. A PEL filling the whole window goes to the windowed path.
    // Batched because a stream needs several replies (entries, XINFO STREAM,
    // XINFO GROUPS, per group XINFO CONSUMERS and XPENDING): one at a time, a
    // batch of small streams would cost several round trips per key.
    async fn small_streams(&mut self, db: u32, keys: &[Bytes]) -> Result<Vec<Diff>, RouteError> {
        let mut diffs = Vec::new();
        let groups = self.small_stream_heads(db, keys, &mut diffs).await?;
        let deeper = self
            .small_stream_groups(db, keys, &groups, &mut diffs)
            .await?;
        // The windowed path starts the stream over, entries included: simpler
        // than resuming mid-PEL, and rare (a PEL that fills a whole window).
        for i in deeper {
            if let Some(detail) = self.stream(db, &keys[i]).await? {
                diffs.push(Diff::new(Category::Value, db, &keys[i], detail));
            }
        }
        Ok(diffs)
    }

    /// The first pipeline of [`Self::small_streams`]: entries, `XINFO STREAM`
    /// and `XINFO GROUPS`. Returns (key index, group name) of every group of
    /// the streams that agree so far.
    async fn small_stream_heads(
        &mut self,
        db: u32,
        keys: &[Bytes],
        diffs: &mut Vec<Diff>,
    ) -> Result<Vec<(usize, Vec<u8>)>, RouteError> {
        // No COUNT on XRANGE: these streams have at most WINDOW entries (phase 2
        // measured them), so the whole stream is one window.
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
            // Entries are compared frame for frame: ids and field/value pairs
            // in id order, which is the same on every server.
            // The same order as the windowed path, so a stream reports the
            // same first difference whichever path it takes.
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
        Ok(per_group)
    }

    /// The second pipeline of [`Self::small_streams`]: each group's consumers
    /// and first PEL window. Returns the indexes of the streams whose PEL
    /// filled the window and agreed so far: the windowed path reads the rest.
    async fn small_stream_groups(
        &mut self,
        db: u32,
        keys: &[Bytes],
        per_group: &[(usize, Vec<u8>)],
        diffs: &mut Vec<Diff>,
    ) -> Result<Vec<usize>, RouteError> {
        let (s, d) = self.both(db, &group_state_cmds(keys, per_group)).await?;
        // At most one value difference per stream, as the windowed path (which
        // stops at the first) gives: the report counts keys, not findings.
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
            // An error (NOGROUP) reads as an empty PEL: compared on its own.
            } else if pel(&s[2 * n + 1]) != pel(&d[2 * n + 1])
                || s[2 * n + 1].is_error() != d[2 * n + 1].is_error()
            {
                Some(format!("group {g}: pending entries differ"))
            } else {
                // A full window may have more behind it: only the windowed
                // path (which re-reads the whole stream) can tell.
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
        Ok(deeper
            .into_iter()
            .filter(|i| !reported.contains(i))
            .collect())
    }

    /// Streams: entries in id windows, the stream's own ids and counters, each
    /// consumer group's state, its consumers' pending counts, and its PEL (ids,
    /// consumers and delivery counts; idle times differ by nature).
    // Stops at the first difference, cheapest checks first: one is enough to
    // count the key, and the re-check looks at it again anyway.
    async fn stream(&mut self, db: u32, key: &Bytes) -> Result<Option<String>, RouteError> {
        if let Some(detail) = self.stream_entries(db, key).await? {
            return Ok(Some(detail));
        }
        let (s, d) = self
            .one(db, key, vec![b("XINFO"), b("STREAM"), key.to_vec()])
            .await?;
        if let Some(detail) = stream_meta_diff(&s, &d) {
            return Ok(Some(detail));
        }
        self.stream_groups(db, key).await
    }

    /// A stream's entries, `XRANGE` window by window from the first id.
    async fn stream_entries(&mut self, db: u32, key: &Bytes) -> Result<Option<String>, RouteError> {
        let mut start = b("-");
        loop {
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![
                        b("XRANGE"),
                        key.to_vec(),
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
            let last = entries
                .last()
                .and_then(|e| e.as_array()?.first()?.as_bytes().cloned());
            match next_window(last, entries.len()) {
                Some(n) => start = n,
                None => return Ok(None),
            }
        }
    }

    /// Every consumer group of a stream: its fields, its consumers and its PEL.
    async fn stream_groups(&mut self, db: u32, key: &Bytes) -> Result<Option<String>, RouteError> {
        let k = key.to_vec();
        let (s, d) = self
            .one(db, key, vec![b("XINFO"), b("GROUPS"), k.clone()])
            .await?;
        let (sg, dg) = (sorted_groups(&s), sorted_groups(&d));
        if let Some(detail) = group_count_diff(&sg, &dg) {
            return Ok(Some(detail));
        }
        for (a, c) in sg.iter().zip(&dg) {
            if let Some(detail) = group_diff(a, c) {
                return Ok(Some(detail));
            }
            let g = group_name(a).into_bytes();
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![b("XINFO"), b("CONSUMERS"), k.clone(), g.clone()],
                )
                .await?;
            if consumers(&s) != consumers(&d) {
                return Ok(Some(format!(
                    "group {}: consumers or their pending counts differ",
                    String::from_utf8_lossy(&g)
                )));
            }
            if let Some(detail) = self.pel_windows(db, key, &g).await? {
                return Ok(Some(detail));
            }
        }
        Ok(None)
    }

    /// One group's PEL, extended `XPENDING` window by window from the first id.
    // The extended form (start, end, count) is the only one that lists the
    // entries, with their consumer and delivery count; the summary form would
    // only give totals, which the group fields already compare.
    async fn pel_windows(
        &mut self,
        db: u32,
        key: &Bytes,
        group: &[u8],
    ) -> Result<Option<String>, RouteError> {
        let mut start = b("-");
        loop {
            let (s, d) = self
                .one(
                    db,
                    key,
                    vec![
                        b("XPENDING"),
                        key.to_vec(),
                        group.to_vec(),
                        start.clone(),
                        b("+"),
                        WINDOW.to_string().into_bytes(),
                    ],
                )
                .await?;
            let (sp, dp) = (pel(&s), pel(&d));
            // An error (NOGROUP: the group vanished on one side) reads as an
            // empty PEL, so the error itself has to be compared too.
            if sp != dp || s.is_error() != d.is_error() {
                return Ok(Some(format!(
                    "group {}: pending entries differ after id {}",
                    String::from_utf8_lossy(group),
                    String::from_utf8_lossy(&start)
                )));
            }
            let last = sp.last().and_then(|(id, _, _)| id.as_bytes().cloned());
            match next_window(last, sp.len()) {
                Some(n) => start = n,
                None => return Ok(None),
            }
        }
    }
}

/// The start of the next window after one that returned `len` items ending at
/// id `last`; `None` when this window was the last.
// A window shorter than WINDOW is the end. A full one may be the end too; one
// more (empty) read tells, which is cheaper than asking for the length first.
fn next_window(last: Option<Bytes>, len: usize) -> Option<Vec<u8>> {
    match last {
        Some(last) if len as i64 == WINDOW => next_id(&last),
        _ => None,
    }
}

/// `XINFO STREAM` fields that must match (those both servers report).
// `max-deleted-entry-id` and `entries-added` exist from 7.0 on: a 6.2 side
// does not report them, and a field one side lacks is skipped, not a
// difference. The length and the first/last entries are left out: XLEN and the
// entries themselves are compared already.
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

/// `XINFO GROUPS` as one field map per group, sorted by name.
// Sorted so the two sides pair up group by group whatever order each server
// lists them in.
fn sorted_groups(f: &Frame) -> Vec<HashMap<String, Frame>> {
    let mut v: Vec<_> = f.as_array().unwrap_or(&[]).iter().map(flat_map).collect();
    v.sort_by_key(|g| g.get("name").map(text));
    v
}

fn group_count_diff(
    sg: &[HashMap<String, Frame>],
    dg: &[HashMap<String, Frame>],
) -> Option<String> {
    (sg.len() != dg.len()).then(|| {
        format!(
            "stream has {} groups on the source, {} on the target",
            sg.len(),
            dg.len()
        )
    })
}

fn group_name(g: &HashMap<String, Frame>) -> String {
    g.get("name").map(text).unwrap_or_default()
}

/// The fields of one group (source `a`, target `c`) that must match.
// `lag` is left out: the server derives it from `entries-read` (compared here)
// and the stream's counters (compared by `stream_meta_diff`). `name` and `last-delivered-id` exist on every version (5.0+), so one
// missing is a difference; `entries-read` is 7.0+ and is compared only when
// both sides report it.
fn group_diff(a: &HashMap<String, Frame>, c: &HashMap<String, Frame>) -> Option<String> {
    let name = group_name(a);
    for field in [
        "name",
        "consumers",
        "pending",
        "last-delivered-id",
        "entries-read",
    ] {
        match (a.get(field), c.get(field)) {
            (Some(x), Some(y)) if x != y => {
                return Some(format!(
                    "group {name}: {field} source {}, target {}",
                    text(x),
                    text(y)
                ));
            }
            (None, _) | (_, None) if field == "name" || field == "last-delivered-id" => {
                return Some(format!("group {name}: {field} missing on one side"));
            }
            _ => {}
        }
    }
    None
}

/// `XINFO GROUPS` of both sides: the group names when they agree.
fn groups_diff(s: &Frame, d: &Frame) -> Result<Vec<Vec<u8>>, String> {
    let (sg, dg) = (sorted_groups(s), sorted_groups(d));
    if let Some(m) = group_count_diff(&sg, &dg) {
        return Err(m);
    }
    let mut names = Vec::new();
    for (a, c) in sg.iter().zip(&dg) {
        if let Some(m) = group_diff(a, c) {
            return Err(m);
        }
        names.push(group_name(a).into_bytes());
    }
    Ok(names)
}

/// The second pipeline of small streams: `XINFO CONSUMERS` and the first PEL
/// window of every (key index, group), two commands each.
// A stream small enough for this path can still have a PEL longer than a
// window (entries deleted after delivery stay pending): only the first window
// is read here, a full one sends the stream to the windowed path.
fn group_state_cmds(keys: &[Bytes], per_group: &[(usize, Vec<u8>)]) -> Vec<KeyCmd> {
    per_group
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
        .collect()
}

/// `XINFO CONSUMERS` as sorted (name, pending); idle times differ by nature.
// Idle (and 7.2's inactive) times count from the last time each server saw the
// consumer act, so they are never equal between two servers and are left out.
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
// Idle time is "now minus last delivery" on each server's clock at the moment
// it answers: it differs between any two reads, even of the same server.
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
// `XRANGE key (id +` (exclusive start) needs 6.2; sources down to 5.0 are
// supported, so the next window starts at the next possible id instead.
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
// A RESP3 connection gets a map frame instead; both shapes land in the same
// map, so the comparison does not depend on the protocol a side speaks.
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

/// The `SISMEMBER`s (set) or the one `HMGET` (hash) that look a scan page's
/// members up on the target.
// Sets: one SISMEMBER per member, pipelined, rather than SMISMEMBER, which
// needs 6.2. Hashes: HMGET has been there from the start and takes the whole
// page in one command.
fn lookup_cmds(key: &Bytes, items: &[Frame], hash: bool) -> Vec<KeyCmd> {
    if hash {
        // HSCAN pages are [field, value, field, value…]: the fields only.
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
    }
}

/// The first scanned member the target lacks (or, for a hash, holds with
/// another value), given the target's replies to [`lookup_cmds`].
fn lookup_diff(items: &[Frame], d: &[Frame], hash: bool) -> Option<String> {
    if hash {
        // An HMGET that failed (WRONGTYPE after a type change) has no values:
        // each field then meets a nil and the key counts as differing.
        let values = d.first().and_then(Frame::as_array).unwrap_or(&[]);
        for (pair, got) in items
            .chunks(2)
            .zip(values.iter().chain(std::iter::repeat(&Frame::Null)))
        {
            if pair.get(1) != Some(got) {
                return Some(format!(
                    "hash field {} differs",
                    super::output::escape(pair[0].as_bytes().map(|x| &x[..]).unwrap_or(b""))
                ));
            }
        }
    } else {
        for (m, got) in items.iter().zip(d) {
            if got.as_int() != Some(1) {
                return Some(format!(
                    "set member {} absent from the target",
                    super::output::escape(m.as_bytes().map(|x| &x[..]).unwrap_or(b""))
                ));
            }
        }
    }
    None
}

/// Compare two whole values (or two rank windows) of `kind`.
fn compare_whole(kind: &str, s: &Frame, d: &Frame) -> Option<String> {
    // A failed read (WRONGTYPE: the key changed type under us) proves nothing
    // either way; it is reported so that the re-check looks again.
    if s.is_error() || d.is_error() {
        return Some(format!(
            "read failed: source {}, target {}",
            s.describe(),
            d.describe()
        ));
    }
    match kind {
        // Byte strings and ordered lists: equal means the same frames.
        "string" | "list" => (s != d).then(|| format!("{kind} values differ")),
        // Sets and hashes come back in an order that depends on each server's
        // encoding and hash seed (random per process): sorted before comparing.
        "set" => (sorted_members(s) != sorted_members(d)).then(|| "set members differ".to_string()),
        "hash" => (sorted_fields(s) != sorted_fields(d)).then(|| "hash fields differ".to_string()),
        _ => zset_diff(s, d),
    }
}

/// `SMEMBERS` sorted.
fn sorted_members(f: &Frame) -> Vec<Bytes> {
    let mut v: Vec<Bytes> = f
        .as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|x| x.as_bytes().cloned())
        .collect();
    v.sort();
    v
}

/// `HGETALL` as (field, value) pairs sorted by field.
fn sorted_fields(f: &Frame) -> Vec<(Frame, Frame)> {
    let mut v: Vec<(Frame, Frame)> = f
        .as_array()
        .unwrap_or(&[])
        .chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
        .collect();
    // By field only: a hash has each field once.
    v.sort_by(|a, b| a.0.as_bytes().cmp(&b.0.as_bytes()));
    v
}

/// Two `ZRANGE … WITHSCORES` replies: members in rank order; scores compared
/// as numbers, since servers of different versions print the same double
/// differently.
fn zset_diff(s: &Frame, d: &Frame) -> Option<String> {
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
    // A score that is not a number parses to `None` on both sides and
    // compares equal; member bytes still have to match.
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

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_string()))
    }

    fn row(kind: &str, len: i64) -> Row {
        Row {
            key: Bytes::from(format!("{kind}:{len}")),
            kind: kind.into(),
            len,
        }
    }

    #[test]
    fn ttl_within_tolerance_is_equal() {
        assert_eq!(ttl_diff(None, None, 0), None);
        assert_eq!(ttl_diff(Some(1000), Some(2999), 2000), None);
        assert_eq!(
            ttl_diff(Some(1000), Some(3001), 2000).as_deref(),
            Some("expiry differs by -2001 ms")
        );
        assert_eq!(
            ttl_diff(Some(1), None, 2000).as_deref(),
            Some("source has a TTL, target has none")
        );
        assert_eq!(
            ttl_diff(None, Some(1), 2000).as_deref(),
            Some("target has a TTL, source has none")
        );
    }

    #[test]
    fn expiry_from_pttl_or_pexpiretime() {
        assert_eq!(expiry(&Frame::Integer(500), false, 1000), Some(1500));
        assert_eq!(expiry(&Frame::Integer(500), true, 1000), Some(500));
        assert_eq!(expiry(&Frame::Integer(-1), false, 1000), None);
        assert_eq!(expiry(&Frame::Integer(-2), true, 1000), None);
    }

    #[test]
    fn paths_by_size_and_type() {
        let rows = vec![
            row("string", STRING_WINDOW),
            row("string", STRING_WINDOW + 1),
            row("hash", WINDOW),
            row("set", WINDOW + 1),
            row("stream", WINDOW),
            row("stream", WINDOW + 1),
        ];
        let (whole, streams, windowed) = by_path(rows);
        let keys = |v: &[Row]| v.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(&whole),
            [format!("string:{STRING_WINDOW}"), format!("hash:{WINDOW}")]
        );
        assert_eq!(streams, [format!("stream:{WINDOW}")]);
        assert_eq!(
            keys(&windowed),
            [
                format!("string:{}", STRING_WINDOW + 1),
                format!("set:{}", WINDOW + 1),
                format!("stream:{}", WINDOW + 1)
            ]
        );
        // Unknown types have no length (0) but are always small: DUMP is all they get.
        assert!(is_small(&row("MBbloom--", 0)));
    }

    #[test]
    fn next_window_only_after_a_full_one() {
        let last = Some(Bytes::from_static(b"7-3"));
        assert_eq!(
            next_window(last.clone(), WINDOW as usize),
            Some(b"7-4".to_vec())
        );
        assert_eq!(next_window(last, WINDOW as usize - 1), None);
        assert_eq!(next_window(None, WINDOW as usize), None);
    }

    #[test]
    fn groups_pair_by_name_and_skip_fields_one_side_lacks() {
        let group = |name: &str, ldi: &str, extra: &[(&str, &str)]| {
            let mut v = vec![
                bulk("name"),
                bulk(name),
                bulk("last-delivered-id"),
                bulk(ldi),
            ];
            for (k, x) in extra {
                v.extend([bulk(k), bulk(x)]);
            }
            Frame::Array(v)
        };
        // Listed in another order, and only one side (7.0+) reports entries-read.
        let s = Frame::Array(vec![
            group("a", "1-0", &[("entries-read", "3")]),
            group("b", "2-0", &[]),
        ]);
        let d = Frame::Array(vec![group("b", "2-0", &[]), group("a", "1-0", &[])]);
        assert_eq!(groups_diff(&s, &d), Ok(vec![b("a"), b("b")]));
        let d = Frame::Array(vec![group("b", "2-1", &[]), group("a", "1-0", &[])]);
        assert_eq!(
            groups_diff(&s, &d),
            Err("group b: last-delivered-id source 2-0, target 2-1".into())
        );
        let d = Frame::Array(vec![group("a", "1-0", &[])]);
        assert_eq!(
            groups_diff(&s, &d),
            Err("stream has 2 groups on the source, 1 on the target".into())
        );
    }

    #[test]
    fn stream_meta_skips_fields_one_side_lacks() {
        let s = Frame::Array(vec![
            bulk("last-generated-id"),
            bulk("5-0"),
            bulk("entries-added"),
            bulk("7"),
        ]);
        let d = Frame::Array(vec![bulk("last-generated-id"), bulk("5-0")]);
        assert_eq!(stream_meta_diff(&s, &d), None);
        let d = Frame::Map(vec![(bulk("last-generated-id"), bulk("6-0"))]);
        assert_eq!(
            stream_meta_diff(&s, &d).as_deref(),
            Some("stream last-generated-id: source 5-0, target 6-0")
        );
    }

    #[test]
    fn idle_times_are_ignored() {
        let entry = |idle: i64| {
            Frame::Array(vec![Frame::Array(vec![
                bulk("1-0"),
                bulk("c1"),
                Frame::Integer(idle),
                Frame::Integer(2),
            ])])
        };
        assert_eq!(pel(&entry(5)), pel(&entry(9000)));
        let consumer = |idle: i64| {
            Frame::Array(vec![Frame::Array(vec![
                bulk("name"),
                bulk("c1"),
                bulk("pending"),
                Frame::Integer(1),
                bulk("idle"),
                Frame::Integer(idle),
            ])])
        };
        assert_eq!(consumers(&consumer(5)), consumers(&consumer(9000)));
    }

    #[test]
    fn lookups_of_a_scan_page() {
        let key = Bytes::from_static(b"k");
        let page = [bulk("f"), bulk("1"), bulk("g"), bulk("2")];
        let cmds = lookup_cmds(&key, &page, true);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].args, [b("HMGET"), b("k"), b("f"), b("g")]);
        let same = [Frame::Array(vec![bulk("1"), bulk("2")])];
        assert_eq!(lookup_diff(&page, &same, true), None);
        let other = [Frame::Array(vec![bulk("1"), Frame::Null])];
        assert_eq!(
            lookup_diff(&page, &other, true).as_deref(),
            Some("hash field g differs")
        );
        // A failed HMGET has no values: every field differs.
        let failed = [Frame::Error(Bytes::from_static(b"WRONGTYPE"))];
        assert!(lookup_diff(&page, &failed, true).is_some());

        let members = [bulk("x"), bulk("y")];
        assert_eq!(lookup_cmds(&key, &members, false).len(), 2);
        let found = [Frame::Integer(1), Frame::Integer(0)];
        assert_eq!(
            lookup_diff(&members, &found, false).as_deref(),
            Some("set member y absent from the target")
        );
    }
}
