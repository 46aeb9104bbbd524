//! `redis-sync-manager verify`: compare the source with the target, key by key.
//!
//! Sits beside the sync, not in it: it only reads both sides. Per source
//! master (or the standalone source) one scanner task `SCAN`s with a COUNT
//! hint and hands batches through a bounded channel to a few workers; each
//! worker owns its own connections to both sides and compares a batch with
//! pipelined reads (`compare.rs`). The target is scanned the same way for keys
//! the source does not have. A batch's differences are re-checked a few times
//! with short pauses before they count, because a live source changes under
//! us; the report says how many keys needed that.
//!
//! Promises: reads only; memory bounded by batch size × window, never by the
//! size of one key; exit 0 equal, 1 different (or failed), 2 usage error.

mod compare;
pub mod output;
mod route;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use rsm_client::{ConnectOptions, Connection, Credentials, Endpoint, Side, TlsSettings};
use rsm_engine::KeyPrefixes;
use rsm_writer::sync_marker::is_tool_key;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use compare::{CheckConfig, Checker};
use route::{probe, Router, SideInfo};

/// SCAN's COUNT hint; also about the size of one compared batch.
// A batch is pipelined phase by phase, so its size is what a round trip is
// spread over: with 1000 keys the per-batch latency is small next to the
// servers' work, while one batch's replies (a few small values each) stay
// modest in memory. COUNT is a hint: a call may return more or fewer keys.
const SCAN_COUNT: usize = 1000;
/// Batches queued per scanner before it waits for the workers.
// Bounded so that a scanner (one cheap SCAN per batch) cannot run ahead of
// its workers (several pipelines per batch) and hold a whole keyspace of key
// names in memory; a few batches are enough to keep the workers fed while the
// scanner waits for its next SCAN reply.
const QUEUE_BATCHES: usize = 4;
/// Workers per scanned node (each with its own connections to both sides).
// Two, so that one worker's pipeline is on the wire while the other works on
// its replies; more would mostly add load to servers that are live and serving
// their own clients while we compare them.
const WORKERS_PER_NODE: usize = 2;
/// How often a differing key is looked at again before it counts.
// A write on the source reaches the target one sync delay later, so a key can
// differ for a moment without anything being wrong. The pauses grow (100, 200,
// 300 ms) to give a lagging sync more time on each look, while a batch with a
// real difference pays at most 0.6 s for it.
const RECHECKS: u32 = 3;
const RECHECK_PAUSE: Duration = Duration::from_millis(100);

// Quick is the default: O(1) per key on the servers, so it can run against a
// busy production source at any time. Full reads every value on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Existence, type, length/cardinality, TTL.
    Quick,
    /// Everything in quick, plus whole values, stream groups and pending entries.
    Full,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "quick" => Ok(Mode::Quick),
            "full" => Ok(Mode::Full),
            _ => Err("expected quick or full".into()),
        }
    }
}

// The declaration order is the report's order (samples sort by it), and
// `category as usize` indexes the counts: `ALL` must list them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Missing,
    Extra,
    Type,
    Value,
    Ttl,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Missing,
        Category::Extra,
        Category::Type,
        Category::Value,
        Category::Ttl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Missing => "missing",
            Category::Extra => "extra",
            Category::Type => "type",
            Category::Value => "value",
            Category::Ttl => "ttl",
        }
    }
}

/// One difference: a key, the db it was found in, and what differs.
#[derive(Debug, Clone)]
pub struct Diff {
    pub category: Category,
    /// The source db, except for `extra`: a key found on the target, in the
    /// target db where it was found.
    pub db: u32,
    pub key: Bytes,
    pub detail: String,
}

impl Diff {
    fn new(category: Category, db: u32, key: &Bytes, detail: String) -> Diff {
        Diff {
            category,
            db,
            key: key.clone(),
            detail,
        }
    }
}

/// Everything `verify` needs, validated.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub from: Endpoint,
    pub target: Endpoint,
    pub source_credentials: Option<Credentials>,
    pub target_credentials: Option<Credentials>,
    /// Each side's TLS; plain TCP when `None`.
    pub source_tls: Option<Arc<TlsSettings>>,
    pub target_tls: Option<Arc<TlsSettings>>,
    /// `--filterkey`: only keys the sync copies are compared, on both sides.
    pub filter: KeyPrefixes,
    /// `--targetdb`: every source db was copied into this one target db.
    pub target_db: Option<u32>,
    pub mode: Mode,
    /// Check at most about this many keys on each side (spread over the nodes).
    pub sample: Option<u64>,
    pub ttl_tolerance_ms: i64,
    /// Differing keys listed per category.
    pub show: usize,
    /// Print a progress line every few seconds (on a TTY).
    pub progress: bool,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub mode: Mode,
    pub source_keys: u64,
    pub target_keys: u64,
    pub seconds: f64,
    /// Differing keys per category, indexed by `Category as usize`.
    counts: [u64; 5],
    /// Keys that differed at first look and were looked at again.
    pub rechecked: u64,
    /// Of those, the ones that matched on a later look.
    pub resolved: u64,
    /// The first `show` differing keys of each category.
    pub samples: Vec<Diff>,
}

impl VerifyReport {
    pub fn count(&self, c: Category) -> u64 {
        self.counts[c as usize]
    }

    pub fn differences(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn equal(&self) -> bool {
        self.differences() == 0
    }
}

/// What the workers share: counters (one owner each: the worker that found
/// it adds it) and the collected differences.
struct Shared {
    source_keys: AtomicU64,
    target_keys: AtomicU64,
    rechecked: AtomicU64,
    resolved: AtomicU64,
    /// Differences per category, and the first `show` of each.
    // Counts and samples under one lock, not atomics: whether a difference is
    // kept as a sample depends on its category's count, and both must agree.
    found: Mutex<(Vec<u64>, Vec<Diff>)>,
    show: usize,
}

impl Shared {
    fn new(show: usize) -> Shared {
        Shared {
            source_keys: AtomicU64::new(0),
            target_keys: AtomicU64::new(0),
            rechecked: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
            found: Mutex::new((vec![0; Category::ALL.len()], Vec::new())),
            show,
        }
    }

    fn record(&self, diffs: Vec<Diff>) {
        // A poisoned lock means another worker panicked; its error surfaces
        // through the join, so losing samples here is harmless.
        if let Ok(mut found) = self.found.lock() {
            // Every difference is counted; only the first `show` of each
            // category are kept, so memory does not grow with a bad copy.
            for d in diffs {
                let i = d.category as usize;
                found.0[i] += 1;
                if found.0[i] <= self.show as u64 {
                    found.1.push(d);
                }
            }
        }
    }
}

fn connect_options(
    side: Side,
    credentials: &Option<Credentials>,
    tls: &Option<Arc<TlsSettings>>,
) -> ConnectOptions {
    let mut o = ConnectOptions::new(side, credentials.clone()).with_tls(tls.clone());
    // Twice the client's default: a reply here may be big (a DUMP, a window of
    // big elements) and come from a server busy with its own clients, and a
    // timeout fails the whole run, not just one key.
    o.io_timeout = Duration::from_secs(60);
    o
}

/// What one scanner walks: a node, its dbs, and (for the target scan) the
/// source dbs a target db's keys may come from.
#[derive(Clone)]
struct ScanJob {
    node: Endpoint,
    opts: ConnectOptions,
    /// The dbs to walk, each with the source dbs its keys may come from
    /// (empty for the source's own scan).
    dbs: Vec<(u32, Vec<u32>)>,
    /// `--sample`: this node's share of the keys to check.
    limit: Option<u64>,
    /// A target scan, looking for keys the source lacks.
    extra: bool,
}

/// Compare the source with the target. Callable in-process (the manager may
/// run it when every shard is ready for cutover).
///
/// Both sides are scanned: the source for keys missing or different on the
/// target, the target for keys the source does not have. SCAN walks one
/// node's keys only, so a cluster side gets a scanner per master, all running
/// in parallel.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let src_opts = connect_options(Side::Source, &opts.source_credentials, &opts.source_tls);
    let dst_opts = connect_options(Side::Target, &opts.target_credentials, &opts.target_tls);
    let src = probe("source", &opts.from, &src_opts)
        .await
        .context("reading the source")?;
    let dst = probe("target", &opts.target, &dst_opts)
        .await
        .context("reading the target")?;
    if let Err(e) = rsm_command::TargetDb::new(opts.target_db).check(dst.cluster) {
        anyhow::bail!(
            "--targetdb={} needs a standalone target, but {} is a cluster",
            e.0,
            opts.target
        );
    }
    // A cluster of db 0 only takes every source db into it; one with
    // `cluster-databases` has each db, as a standalone target does.
    let target_db = match dst.cluster && !dst.multi_db_cluster {
        true => Some(0),
        false => opts.target_db,
    };
    // Source db → target db, and the reverse for the extra-key scan.
    let map_db = |db: u32| rsm_command::TargetDb::new(target_db).of(db);
    let src_dbs = src.dbs.clone();
    let dst_dbs = target_dbs(&src_dbs, map_db);
    let cfg = CheckConfig {
        mode: opts.mode,
        ttl_tolerance_ms: opts.ttl_tolerance_ms,
        src_pexpiretime: src.has_pexpiretime,
        dst_pexpiretime: dst.has_pexpiretime,
        target_db,
    };
    let shared = Arc::new(Shared::new(opts.show));
    let source_dbs = src_dbs.iter().map(|d| (*d, Vec::new())).collect();
    let mut jobs = scan_jobs(&src, &src_opts, source_dbs, opts.sample, false);
    jobs.extend(scan_jobs(&dst, &dst_opts, dst_dbs, opts.sample, true));
    // Every worker gets routers of its own (see `Checker`), all made alike.
    let checker = || Checker {
        src: Router::new("source", &src, &opts.from, &src_opts),
        dst: Router::new("target", &dst, &opts.target, &dst_opts),
        cfg: cfg.clone(),
    };
    compare_all(opts, jobs, &shared, checker).await?;
    report(opts, &shared, started)
}

/// Per target db, the source dbs whose keys land in it (in source db order):
/// one each without `--targetdb`, all of them with it.
fn target_dbs(src_dbs: &[u32], map_db: impl Fn(u32) -> u32) -> Vec<(u32, Vec<u32>)> {
    let mut dst_dbs: Vec<(u32, Vec<u32>)> = Vec::new();
    for db in src_dbs {
        let t = map_db(*db);
        match dst_dbs.iter_mut().find(|(d, _)| *d == t) {
            Some((_, v)) => v.push(*db),
            None => dst_dbs.push((t, vec![*db])),
        }
    }
    dst_dbs
}

/// One scan job per master of a side, each walking `dbs`.
// `--sample` is per side: each node takes an equal share, rounded up so that
// a small sample still reaches every node.
fn scan_jobs(
    side: &SideInfo,
    opts: &ConnectOptions,
    dbs: Vec<(u32, Vec<u32>)>,
    sample: Option<u64>,
    extra: bool,
) -> Vec<ScanJob> {
    let limit = sample.map(|s| s.div_ceil(side.masters.len().max(1) as u64));
    side.masters
        .iter()
        .map(|node| ScanJob {
            node: node.clone(),
            opts: opts.clone(),
            dbs: dbs.clone(),
            limit,
            extra,
        })
        .collect()
}

/// Run every job (a scanner and its workers) with the progress line beside
/// them, until all are done or one fails.
async fn compare_all(
    opts: &VerifyOptions,
    jobs: Vec<ScanJob>,
    shared: &Arc<Shared>,
    checker: impl Fn() -> Checker,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicBool::new(false));
    // Only on a terminal: in a pipe or a log the line would be noise every 2 s.
    let progress = (opts.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(shared.clone(), done.clone()));
    let mut tasks = JoinSet::new();
    for job in jobs {
        // Per node, not global: a slow node's queue fills and holds up its
        // own scanner only, while the other nodes go on.
        let (tx, rx) = mpsc::channel::<(u32, Vec<u32>, Vec<Bytes>)>(QUEUE_BATCHES);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let filter = opts.filter.clone();
        let scan = job.clone();
        tasks.spawn(async move { scan_node(scan, filter, tx).await });
        for _ in 0..WORKERS_PER_NODE {
            let checker = checker();
            let rx = rx.clone();
            let shared = shared.clone();
            let extra = job.extra;
            tasks.spawn(async move { work(checker, rx, shared, extra).await });
        }
    }
    let result = join_all(tasks).await;
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    result
}

/// The progress line on stderr every 2 s, until `done`.
fn spawn_progress(shared: Arc<Shared>, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        // The first tick is immediate: skip it, nothing has been counted yet.
        tick.tick().await;
        while !done.load(Ordering::Relaxed) {
            tick.tick().await;
            let differing = shared
                .found
                .lock()
                .map(|f| f.0.iter().sum::<u64>())
                .unwrap_or(0);
            eprintln!(
                "verify: {} source keys, {} target keys checked, {} differing, {} re-checked",
                shared.source_keys.load(Ordering::Relaxed),
                shared.target_keys.load(Ordering::Relaxed),
                differing,
                shared.rechecked.load(Ordering::Relaxed)
            );
        }
    })
}

/// Wait for every task; the first error is the result.
// On the first error the other tasks are aborted: a report with a failed
// part would claim keys equal that were never compared.
async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined
            .map_err(|e| anyhow::anyhow!("a verify task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = outcome {
            if result.is_ok() {
                result = Err(e);
                tasks.abort_all();
            }
        }
    }
    result
}

/// The report of a finished run: the counters, and the samples in a stable
/// order (by category, then key), whatever order the workers found them in.
fn report(opts: &VerifyOptions, shared: &Shared, started: Instant) -> anyhow::Result<VerifyReport> {
    let (counts, mut samples) = shared
        .found
        .lock()
        .map(|f| (f.0.clone(), f.1.clone()))
        .map_err(|_| anyhow::anyhow!("a verify worker panicked"))?;
    samples.sort_by(|a, b| (a.category, &a.key).cmp(&(b.category, &b.key)));
    let mut c = [0u64; 5];
    c.copy_from_slice(&counts[..5]);
    Ok(VerifyReport {
        mode: opts.mode,
        source_keys: shared.source_keys.load(Ordering::Relaxed),
        target_keys: shared.target_keys.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        counts: c,
        rechecked: shared.rechecked.load(Ordering::Relaxed),
        resolved: shared.resolved.load(Ordering::Relaxed),
        samples,
    })
}

/// Walk one node's keyspace (each listed db) and queue batches for the workers.
// SCAN, never KEYS: KEYS blocks a live server for the whole keyspace; SCAN
// walks it a step at a time and guarantees every key present for the whole
// walk is seen (maybe twice: a key compared twice only costs time).
async fn scan_node(
    job: ScanJob,
    filter: KeyPrefixes,
    tx: mpsc::Sender<(u32, Vec<u32>, Vec<Bytes>)>,
) -> anyhow::Result<()> {
    let mut conn = Connection::connect(&job.node, &job.opts).await?;
    let mut taken = 0u64;
    for (db, source_dbs) in &job.dbs {
        // One connection walks the dbs in turn; a cluster node of db 0 only is
        // asked for no other, and SELECT 0 is allowed there.
        conn.request_ok(&["SELECT".to_string(), db.to_string()])
            .await?;
        let mut cursor = Bytes::from_static(b"0");
        loop {
            // A reply that is not `[cursor, keys]` is an error (`scan`): starting over
            // from 0 would never end.
            let page = conn.scan(&cursor, None, SCAN_COUNT).await?;
            let mut batch: Vec<Bytes> = page
                .keys
                .into_iter()
                // The tool's own markers in the target are not data; a user's key that
                // merely starts like them is.
                .filter(|k| filter.keeps(k) && !is_tool_key(k))
                .collect();
            // A sample takes the first keys the scan meets: SCAN's order is
            // the hash table's, which is as good as random for a sample.
            if let Some(limit) = job.limit {
                batch.truncate(limit.saturating_sub(taken) as usize);
            }
            taken += batch.len() as u64;
            if !batch.is_empty() && tx.send((*db, source_dbs.clone(), batch)).await.is_err() {
                return Ok(()); // the workers stopped (an error is reported by them)
            }
            match page.next {
                Some(next) if job.limit.is_none_or(|l| taken < l) => cursor = next,
                _ => break,
            }
        }
    }
    Ok(())
}

// An mpsc channel has one receiver: the node's workers share it behind a
// mutex, so each batch goes to whichever worker asks first.
type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<(u32, Vec<u32>, Vec<Bytes>)>>>;

/// Compare the batches of one node's queue until the scanner is done.
async fn work(
    mut checker: Checker,
    rx: Queue,
    shared: Arc<Shared>,
    extra: bool,
) -> anyhow::Result<()> {
    loop {
        let next = rx.lock().await.recv().await;
        let Some((db, source_dbs, keys)) = next else {
            return Ok(());
        };
        let n = keys.len() as u64;
        let first = if extra {
            checker.check_extra(db, &source_dbs, &keys).await?
        } else {
            checker.check_batch(db, &keys).await?
        };
        let left = settle(&mut checker, db, &source_dbs, extra, first, &shared).await?;
        // Recorded only after the re-checks: what a first look found is a
        // candidate, not a difference.
        shared.record(left);
        let counter = if extra {
            &shared.target_keys
        } else {
            &shared.source_keys
        };
        // Counted when done, so that the progress line shows keys compared,
        // not keys queued.
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Look again at keys that differed, a few times with growing pauses; what
/// still differs after the last look is a difference.
async fn settle(
    checker: &mut Checker,
    db: u32,
    source_dbs: &[u32],
    extra: bool,
    mut diffs: Vec<Diff>,
    shared: &Shared,
) -> anyhow::Result<Vec<Diff>> {
    if diffs.is_empty() {
        return Ok(diffs);
    }
    // A key may have several differences (a TTL and a value): re-checks and
    // their counters go by key, not by difference.
    let distinct = |d: &[Diff]| {
        let mut keys: Vec<Bytes> = d.iter().map(|d| d.key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let initial = distinct(&diffs).len() as u64;
    shared.rechecked.fetch_add(initial, Ordering::Relaxed);
    for attempt in 1..=RECHECKS {
        tokio::time::sleep(RECHECK_PAUSE * attempt).await;
        // Only the keys that still differ, and the last look's verdict
        // replaces the earlier one: a key caught mid-copy may go from missing
        // to a value difference to equal.
        let keys = distinct(&diffs);
        diffs = if extra {
            checker.check_extra(db, source_dbs, &keys).await?
        } else {
            checker.check_batch(db, &keys).await?
        };
        if diffs.is_empty() {
            break;
        }
    }
    // Resolved: differed at first, equal at the last look (a sync that caught
    // up). The report shows it so that a busy source's churn is visible.
    let still = distinct(&diffs).len() as u64;
    shared
        .resolved
        .fetch_add(initial.saturating_sub(still), Ordering::Relaxed);
    Ok(diffs)
}

/// The `verify` subcommand: run, print the table, write the JSON report, and
/// turn the outcome into the exit code.
pub fn run_command(opts: VerifyOptions, report_file: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match runtime.block_on(verify(&opts)) {
        Ok(r) => r,
        // A run that failed exits 1 like one that found differences: a
        // script gating a cut-over on `verify` must never read "compared
        // nothing" as "equal".
        Err(e) => {
            eprintln!("error: {}", rsm_flags::usage::error_line(e.as_ref()));
            return ExitCode::from(1);
        }
    };
    print!("{}", output::render(&report));
    if let Some(path) = report_file {
        // The table is out already, but a report that was asked for and not
        // written is a failure: whoever reads the file would read an old one.
        if let Err(e) = std::fs::write(&path, output::json(&report)) {
            eprintln!(
                "error: cannot write the report {}: {e} (check --report)",
                path.display()
            );
            return ExitCode::from(1);
        }
    }
    if report.equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dbs_gather_the_source_dbs_mapped_into_them() {
        assert_eq!(
            target_dbs(&[0, 2, 5], |db| db),
            [(0, vec![0]), (2, vec![2]), (5, vec![5])]
        );
        // --targetdb=3: every source db lands in db 3.
        assert_eq!(target_dbs(&[0, 2, 5], |_| 3), [(3, vec![0, 2, 5])]);
    }

    #[test]
    fn a_sample_is_shared_between_the_masters() {
        let side = SideInfo {
            cluster: true,
            masters: ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            has_pexpiretime: true,
            map: None,
            dbs: vec![0],
            multi_db_cluster: false,
        };
        let opts = connect_options(Side::Target, &None, &None);
        let jobs = scan_jobs(&side, &opts, vec![(0, vec![0])], Some(10), true);
        assert_eq!(jobs.len(), 3);
        // Rounded up: 3 × 4 ≥ 10.
        assert!(jobs.iter().all(|j| j.limit == Some(4) && j.extra));
        let jobs = scan_jobs(&side, &opts, vec![(0, vec![])], None, false);
        assert!(jobs.iter().all(|j| j.limit.is_none() && !j.extra));
    }
}
