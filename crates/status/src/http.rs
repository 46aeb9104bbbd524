//! `--httpport`: the status page (`/`), the JSON status (`/status`) and
//! Prometheus metrics (`/metrics`). Handlers only read shard snapshots.
//!
//! Exposure: it binds to loopback unless told otherwise ([`exposure_warning`]);
//! with `--http-token` every endpoint wants `Authorization: Bearer TOKEN` or
//! `?token=TOKEN` ([`HttpToken`]); a client gets [`HEADER_READ_TIMEOUT`] to send its
//! request head, so half-open requests cannot pile up.
//!
//! What it promises: serving never touches the data path (handlers take snapshots of
//! atomics and one short lock per shard), and `ready_for_cutover` is true only while
//! every shard streams with nothing received left to apply, caught up for 3 s.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{now_ms, Phase, ShardSnapshot, ShardStatus};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// How long a client may take to send a request's line and headers before the
/// connection is closed: ample for any real client, and a connection that sends half a
/// request and goes quiet (slowloris) holds a file descriptor no longer than this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `--http-token`: what every request must carry. `Debug` never shows it. Shared, not
/// copied, by every request's check.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpToken(Arc<str>);

impl HttpToken {
    /// Wrap the operator's token.
    pub fn new(token: String) -> HttpToken {
        HttpToken(token.into())
    }

    /// Whether `given` is the token, in time that depends only on the lengths.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        // A length that differs fails the match by itself; the loop below only keeps the
        // time independent of where the bytes differ.
        let mut diff = u8::from(want.len() != given.len());
        // Compare every byte of the longer input, so the position of the first
        // difference does not show in the timing.
        for i in 0..want.len().max(given.len()) {
            // Past the end of either input, fillers that differ.
            let a = want.get(i).copied().unwrap_or(0);
            let b = given.get(i).copied().unwrap_or(0xff);
            diff |= a ^ b;
        }
        diff == 0
    }
}

/// Redacted, so that no `{:?}` of the options puts the token in a log.
impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(<redacted>)")
    }
}

/// How the HTTP port is served.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// `--http-token`: required on every endpoint when set.
    pub token: Option<HttpToken>,
}

/// The warning to log at start when the HTTP port is reachable from other
/// machines: any address but loopback. `None` for loopback.
/// Plain HTTP either way: a token keeps strangers out, not eavesdroppers.
pub fn exposure_warning(bind: IpAddr, token: bool) -> Option<String> {
    // Loopback: only this machine can reach it.
    if bind.is_loopback() {
        return None;
    }
    Some(if token {
        format!(
            "--http-bind={bind} serves the status to the network: anyone who can reach it and \
             knows the token sees the topology, offsets and errors (HTTP, not TLS)"
        )
    } else {
        format!(
            "--http-bind={bind} serves the status to the network WITHOUT A TOKEN: anyone who can \
             reach it sees the topology, offsets and errors; add --http-token-file or bind 127.0.0.1"
        )
    })
}

/// The token a request carries: `Authorization: Bearer TOKEN`, else `?token=TOKEN`
/// (percent-decoded), the form a browser can open. The scheme is case-insensitive and
/// followed by one or more spaces (RFC 7235 §2.1): `bearer TOKEN` is as good. Another
/// scheme carries no token (an empty one, which never matches).
fn request_token(req: &Request) -> Option<Vec<u8>> {
    // A header, when there is one, is the client's answer, right or wrong: the query is
    // not looked at then.
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.as_bytes().trim_ascii();
        let token = match value.iter().position(|&c| c == b' ') {
            Some(sp)
                if value
                    .get(..sp)
                    .is_some_and(|s| s.eq_ignore_ascii_case(b"Bearer")) =>
            {
                // All after the scheme and its spaces is the token.
                value.get(sp..).unwrap_or_default().trim_ascii()
            }
            _ => b"",
        };
        return Some(token.to_vec());
    }
    // The first `token=` of the query.
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode)
}

/// A query value as a browser encodes it: `%XX` and `+` decoded; a `%` without two hex
/// digits after it stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            c,
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            // A space, as a form encodes it.
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            // Anything else, a lone `%` included, as it is.
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// In front of every route (the page, `/status`, `/metrics`, `/verify`). A refusal says
/// how to send the token, and `WWW-Authenticate: Bearer` names the scheme.
async fn require_token(State(token): State<HttpToken>, req: Request, next: Next) -> Response {
    // No token or a wrong one get the same 401: a client learns nothing from the difference.
    if request_token(&req).is_some_and(|given| token.matches(&given)) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "401: this server wants --http-token: send `Authorization: Bearer TOKEN`, or open /?token=TOKEN\n",
    )
        .into_response()
}

/// A shard counts as caught up for cut-over after this long at lag 0: an instant of zero
/// lag proves little on a busy source; held this long, it says the shard keeps up.
pub const READY_AFTER_MS: u64 = 3000;

#[derive(Clone)]
pub struct Shared {
    /// Every shard's status, as its engine keeps it: handlers only read snapshots.
    pub shards: ShardList,
    /// The source and the target as the operator named them, for the report.
    pub source: String,
    pub target: String,
    /// When the run started, unix milliseconds.
    pub started_ms: u64,
    /// The last `--verify-on-ready` result, when there is one.
    pub verify: LastVerify,
    /// `--max-bandwidth` / `--max-ops`, shown with how much each has held back.
    pub limits: rsm_client::throttle::Limits,
}

/// The shards of the run. Not fixed: when the source's shards change, the manager
/// retires the shards whose slots changed and adds the new ones, in one step, so a
/// reader never sees a moment with neither.
#[derive(Debug, Clone, Default)]
pub struct ShardList(Arc<std::sync::RwLock<Vec<Arc<ShardStatus>>>>);

impl ShardList {
    pub fn new(shards: Vec<Arc<ShardStatus>>) -> ShardList {
        ShardList(Arc::new(std::sync::RwLock::new(shards)))
    }

    /// The shards now, in the order they were added.
    pub fn list(&self) -> Vec<Arc<ShardStatus>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove the shards of these serials and add `added`, at once.
    pub fn replace(&self, retired: &[usize], added: Vec<Arc<ShardStatus>>) {
        let mut list = self.0.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|s| !retired.contains(&s.serial));
        list.extend(added);
    }
}

/// The JSON report of the last verify run (the manager's `--verify-on-ready`),
/// served whole at `/verify` and summed up in `/status`. Written by the verify task,
/// read by the handlers: shared behind a lock.
#[derive(Debug, Clone, Default)]
pub struct LastVerify(Arc<Mutex<Option<VerifySummary>>>);

/// What `/status` says about the last verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// When the verify finished, unix milliseconds.
    pub finished_ms: u64,
    /// Whether the target held exactly what the source did.
    pub equal: bool,
    pub differences: u64,
    /// Where the whole report is.
    pub report: &'static str,
    /// The whole report, for `/verify`; kept out of `/status`, which stays small.
    #[serde(skip)]
    pub json: String,
}

impl LastVerify {
    /// Record a finished verify; it replaces the one before.
    pub fn set(&self, equal: bool, differences: u64, json: String) {
        let summary = VerifySummary {
            finished_ms: now_ms(),
            equal,
            differences,
            report: "/verify",
            json,
        };
        // Plain data: a panicked writer cannot leave it inconsistent.
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }

    /// A copy: the lock is held only while cloning.
    pub fn get(&self) -> Option<VerifySummary> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Keep at most this many topology warnings (the oldest go first).
const MAX_TOPOLOGY_WARNINGS: usize = 200;

/// A change in the source topology the operator must know about (a slot
/// migration, a shard added or removed, a master changed).
#[derive(Debug, Clone, Serialize)]
pub struct TopologyWarning {
    /// When the watch saw the change, unix milliseconds.
    pub at_ms: u64,
    /// What changed, in words for the operator.
    pub message: String,
}

/// Written by the manager's topology watch, read by `/status` and `/metrics`: the
/// changes it saw (warnings) and what, right now, keeps the run from being ready (the
/// gate: slots migrating, a slot-migration job running, slots whose owner differs from
/// the shards being synced).
#[derive(Debug, Clone, Default)]
pub struct TopologyWarnings(Arc<TopologyInner>);

#[derive(Debug, Default)]
struct TopologyInner {
    list: Mutex<Vec<TopologyWarning>>,
    /// Why the source's topology blocks a cut-over, as of the watch's last round.
    blocking: Mutex<Vec<String>>,
    /// Is a watch running? Without one (a standalone source) nothing is ever blocking,
    /// and nobody would answer a request for a fresh reading.
    watched: std::sync::atomic::AtomicBool,
    /// A handler asks the watch for a reading now rather than at its next tick.
    refresh: tokio::sync::Notify,
    /// Bumped after every round: a handler waits for the round after its request.
    rounds: std::sync::atomic::AtomicU64,
    round_done: tokio::sync::Notify,
}

/// How long `/status` waits for a fresh reading of the source's topology before it
/// says that it could not read one (and so is not ready).
pub const FRESH_TOPOLOGY_WAIT: std::time::Duration = Duration::from_secs(3);

impl TopologyWarnings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TopologyWarning>> {
        // Plain data: a panicked writer cannot leave it inconsistent.
        self.0.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, message: String) {
        let mut list = self.lock();
        // A source that keeps changing must not grow the report without end.
        if list.len() >= MAX_TOPOLOGY_WARNINGS {
            list.remove(0);
        }
        list.push(TopologyWarning {
            at_ms: now_ms(),
            message,
        });
    }

    /// A copy, oldest first.
    pub fn list(&self) -> Vec<TopologyWarning> {
        self.lock().clone()
    }

    /// The watch's reading of one round: what blocks a cut-over now (empty: nothing).
    pub fn set_blocking(&self, blocking: Vec<String>) {
        self.0.watched.store(true, Ordering::SeqCst);
        *self.0.blocking.lock().unwrap_or_else(|p| p.into_inner()) = blocking;
        self.0.rounds.fetch_add(1, Ordering::SeqCst);
        self.0.round_done.notify_waiters();
    }

    /// What blocked a cut-over at the watch's last round.
    pub fn blocking(&self) -> Vec<String> {
        self.0
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// For the watch: resolves when a handler wants a reading now.
    pub async fn refresh_requested(&self) {
        self.0.refresh.notified().await
    }

    /// What blocks a cut-over, read after this call: a migration that began just before
    /// the request is seen, whatever the watch's interval. A watch that does not answer
    /// in `wait` is itself a reason (the topology is unknown, so not known settled).
    pub async fn fresh_blocking(&self, wait: Duration) -> Vec<String> {
        if !self.0.watched.load(Ordering::SeqCst) {
            return self.blocking();
        }
        let seen = self.0.rounds.load(Ordering::SeqCst);
        let done = async {
            loop {
                let notified = self.0.round_done.notified();
                tokio::pin!(notified);
                // Registered before the check: a round that ends in between still wakes us.
                notified.as_mut().enable();
                // A round already running when we asked may have read before the request:
                // wait for the one after it.
                if self.0.rounds.load(Ordering::SeqCst) >= seen + 2 {
                    return;
                }
                self.0.refresh.notify_one();
                notified.await;
            }
        };
        match tokio::time::timeout(wait, done).await {
            Ok(()) => self.blocking(),
            Err(_) => vec![format!(
                "the source's topology could not be read within {} s",
                wait.as_secs()
            )],
        }
    }
}

/// `/status`: the whole run at one moment.
#[derive(Serialize)]
pub struct StatusReport {
    pub source: String,
    pub target: String,
    pub started_ms: u64,
    /// The server's clock, to read the report's other times against.
    pub now_ms: u64,
    /// Every shard ready (see [`shard_ready`]): the moment to cut over.
    pub ready_for_cutover: bool,
    pub shards: Vec<ShardReport>,
    /// Changes seen in the source topology since the start, oldest first.
    pub topology_warnings: Vec<TopologyWarning>,
    /// What in the source's topology keeps the run from being ready now: slots
    /// migrating, a slot-migration job, slots whose owner the shards being synced do not
    /// match yet. Empty when nothing does.
    pub topology_blocking: Vec<String>,
    /// The last verify (`--verify-on-ready`); the whole report is at `/verify`.
    pub last_verify: Option<VerifySummary>,
    /// The rate limits in force (`null` each when off) and what they have counted.
    pub limits: rsm_client::throttle::LimitsReport,
}

/// One shard in `/status`: its snapshot with what is computed from it.
#[derive(Serialize)]
pub struct ShardReport {
    /// Flattened: the shard's figures sit at the top of its JSON object.
    #[serde(flatten)]
    pub snapshot: ShardSnapshot,
    /// Seconds since the source was where the target is now (-1 when unknown).
    pub lag_seconds: f64,
    /// See [`shard_ready`].
    pub ready: bool,
}

/// The report, without topology warnings (for a caller that runs no topology watch).
pub fn report(shared: &Shared) -> StatusReport {
    report_with(shared, &TopologyWarnings::default(), Vec::new())
}

/// The report including the topology watch's warnings, and what in the topology blocks
/// a cut-over (read by the caller, fresh when it can wait for it).
pub fn report_with(
    shared: &Shared,
    warnings: &TopologyWarnings,
    blocking: Vec<String>,
) -> StatusReport {
    // One clock reading for every shard: their readiness is judged at the same moment.
    let now = now_ms();
    let shards: Vec<ShardReport> = shared
        .shards
        .list()
        .iter()
        .map(|s| {
            let snapshot = s.snapshot();
            let ready = shard_ready(&snapshot, now);
            // Unknown (-1) before streaming or beyond the sampled minute.
            let lag_seconds = snapshot.lag_ms.map_or(-1.0, |ms| ms as f64 / 1000.0);
            ShardReport {
                snapshot,
                lag_seconds,
                ready,
            }
        })
        .collect();
    StatusReport {
        source: shared.source.clone(),
        target: shared.target.clone(),
        started_ms: shared.started_ms,
        now_ms: now,
        // No shard, nothing synced: an empty run is never ready.
        // A source whose slots are moving, or whose shards the run does not match yet,
        // is not ready whatever the shards say: keys of the moving slots may still change
        // hands in the target.
        ready_for_cutover: !shards.is_empty()
            && shards.iter().all(|s| s.ready)
            && blocking.is_empty(),
        shards,
        topology_warnings: warnings.list(),
        topology_blocking: blocking,
        last_verify: shared.verify.get(),
        limits: shared.limits.report(),
    }
}

/// Ready for cut-over: streaming, nothing received left to apply at this very moment,
/// and caught up for [`READY_AFTER_MS`]. The caught-up time survives gaps under a second
/// (every write, and the source's PING every 10 s, puts a shard behind until it is applied
/// and confirmed); the zero lag asked for here does not, so a shard blinks off meanwhile.
pub fn shard_ready(s: &ShardSnapshot, now: u64) -> bool {
    s.phase == Phase::Streaming
        && s.lag_bytes == 0
        && s.timeline.caught_up_since_ms != 0
        && now.saturating_sub(s.timeline.caught_up_since_ms) >= READY_AFTER_MS
}

/// What every handler reads: the shards and the topology watch's warnings.
#[derive(Clone)]
struct AppState {
    /// The shards, the run's names, the last verify, the limits.
    shared: Shared,
    /// Empty when no topology watch runs.
    warnings: TopologyWarnings,
}

/// `/status`: the whole report, as JSON.
async fn status(State(app): State<AppState>) -> Json<StatusReport> {
    let blocking = app.warnings.fresh_blocking(FRESH_TOPOLOGY_WAIT).await;
    Json(report_with(&app.shared, &app.warnings, blocking))
}

/// `/metrics`: the same report, in the Prometheus text format (version 0.0.4).
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // The watch's last round: a scrape every few seconds need not make the source
    // answer one more reading each time.
    let blocking = app.warnings.blocking();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&report_with(&app.shared, &app.warnings, blocking)),
    )
}

/// `/verify`: the last verify's whole report; a 404 that says how to get one when none ran.
async fn last_verify(State(app): State<AppState>) -> impl IntoResponse {
    match app.shared.verify.get() {
        Some(v) => (
            axum::http::StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.json,
        ),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"no verify has run (start the manager with --verify-on-ready)\"}"
                .to_string(),
        ),
    }
}

/// `/`: a static page that reads `/status` from the browser (with the page's token as a
/// header, so it lands in no more URLs than needed).
async fn page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// Reads one figure of a shard, for its Prometheus family (one family per figure,
/// labelled by shard).
type Getter = fn(&ShardSnapshot) -> u64;

/// The per-shard metric families: name, type, help, and the figure. A table rather than
/// code, so that adding a counter is one line here and its help text sits next to it.
const SHARD_FAMILIES: &[(&str, &str, &str, Getter)] = &[
    // Per connection: back to 0 with each session (to Prometheus, a counter reset).
    (
        "rsm_rdb_received_bytes_total",
        "counter",
        "Snapshot bytes received from the source.",
        |s| s.rdb_bytes_received,
    ),
    (
        "rsm_rdb_size_bytes",
        // 0 for a diskless transfer, whose size nobody knows in advance.
        "gauge",
        "Snapshot size announced by the source (0 if unknown).",
        |s| s.rdb_bytes_total,
    ),
    // From here to the offsets: one count per shard that carries on across its
    // reconnections, never back to 0.
    (
        "rsm_keys_applied_total",
        "counter",
        "Snapshot keys written to the target.",
        |s| s.keys_applied,
    ),
    (
        "rsm_keys_skipped_total",
        "counter",
        "Snapshot keys that already existed and were kept.",
        |s| s.keys_skipped,
    ),
    (
        "rsm_keys_expired_total",
        "counter",
        "Snapshot keys already expired when read.",
        |s| s.keys_expired,
    ),
    (
        "rsm_keys_filtered_total",
        "counter",
        "Snapshot keys dropped by --filterkey.",
        |s| s.keys_filtered,
    ),
    (
        "rsm_keys_failed_total",
        "counter",
        "Snapshot keys the target refused.",
        |s| s.keys_failed,
    ),
    (
        "rsm_commands_applied_total",
        "counter",
        "Replicated commands applied to the target.",
        |s| s.commands_applied,
    ),
    (
        "rsm_commands_skipped_total",
        "counter",
        "Replicated commands skipped (filtered or meaningless on the target).",
        |s| s.commands_skipped,
    ),
    // Non-zero after a resume: the slot markers kept these from being applied twice.
    (
        "rsm_commands_already_applied_total",
        "counter",
        "Replicated commands the target's markers showed applied, not sent again.",
        |s| s.commands_already_applied,
    ),
    // Values the target could not take as they were.
    (
        "rsm_rebuilt_with_commands_total",
        "counter",
        "Snapshot values of a type the target cannot RESTORE, written with commands.",
        |s| s.translated.rebuilt_with_commands,
    ),
    (
        "rsm_details_lost_total",
        "counter",
        "Details of values the target cannot hold (field TTLs, stream counters, consumer times, ...); per kind in /status.",
        |s| s.translated.details_lost.total(),
    ),
    (
        "rsm_commands_failed_total",
        "counter",
        "Replicated commands the target refused.",
        |s| s.commands_failed,
    ),
    // Where the shard stands: the applied offset is the durable one (held by the target's
    // replicas too), so it trails the target's acknowledgements a little.
    (
        "rsm_source_offset_bytes",
        "gauge",
        "Replication offset received from the source.",
        |s| s.source_offset,
    ),
    (
        "rsm_applied_offset_bytes",
        "gauge",
        "Replication offset applied to the target.",
        |s| s.applied_offset,
    ),
    // 0 is one condition of ready.
    (
        "rsm_lag_bytes",
        "gauge",
        "Bytes received but not yet applied.",
        |s| s.lag_bytes,
    ),
    // Non-zero: the target is slower than the source, and the difference waits on disk.
    (
        "rsm_spill_bytes",
        "gauge",
        "Bytes waiting in the spill file.",
        |s| s.spill_bytes,
    ),
    // More than one for a shard: a session could not continue (the source's backlog no
    // longer reached back to the floor, or the target recorded nothing to continue from).
    (
        "rsm_full_syncs_total",
        "counter",
        "Full syncs started.",
        |s| s.full_syncs,
    ),
    // Each an interrupted session; the shard's last error in /status says why.
    (
        "rsm_reconnects_total",
        "counter",
        "Reconnects to the source.",
        |s| s.reconnects,
    ),
];

/// `/metrics` in the Prometheus text format: one family per figure, one sample per shard
/// (labelled with its serial and source), then the process-wide gauges.
pub fn render_metrics(r: &StatusReport) -> String {
    // Writing into a `String` cannot fail: the `let _` below lose nothing.
    let mut out = String::new();
    // The text format wants a family's samples together, after its HELP and TYPE: one
    // family at a time, every shard in it.
    for (name, kind, help, get) in SHARD_FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &r.shards {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",source=\"{}\"}} {}",
                s.snapshot.serial,
                s.snapshot.source,
                get(&s.snapshot)
            );
        }
    }
    // Not in the table: a float, -1 when unknown.
    let _ = writeln!(out, "# HELP rsm_lag_seconds Seconds since the source was where the target is now (-1 unknown).\n# TYPE rsm_lag_seconds gauge");
    for s in &r.shards {
        let _ = writeln!(
            out,
            "rsm_lag_seconds{{shard=\"{}\",source=\"{}\"}} {}",
            s.snapshot.serial, s.snapshot.source, s.lag_seconds
        );
    }
    // 0 or 1 per shard, by the rule of [`shard_ready`].
    let _ = writeln!(out, "# HELP rsm_shard_ready Whether the shard is streaming with no lag.\n# TYPE rsm_shard_ready gauge");
    for s in &r.shards {
        let _ = writeln!(
            out,
            "rsm_shard_ready{{shard=\"{}\",source=\"{}\"}} {}",
            s.snapshot.serial,
            s.snapshot.source,
            u8::from(s.ready)
        );
    }
    // Process-wide, without a shard label.
    let _ = writeln!(
        out,
        "# HELP rsm_topology_warnings Changes seen in the source topology since the start.\n# TYPE rsm_topology_warnings gauge\nrsm_topology_warnings {}",
        r.topology_warnings.len()
    );
    let _ = writeln!(
        out,
        "# HELP rsm_topology_blocking Reasons in the source topology that keep the run from being ready (slots moving, owners not matched yet).\n# TYPE rsm_topology_blocking gauge\nrsm_topology_blocking {}",
        r.topology_blocking.len()
    );
    // The one figure to gate a cut-over on.
    let _ = writeln!(out, "# HELP rsm_ready_for_cutover Whether every shard is ready.\n# TYPE rsm_ready_for_cutover gauge\nrsm_ready_for_cutover {}", u8::from(r.ready_for_cutover));
    out
}

/// Serve until the process ends. Returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    serve_with(
        addr,
        shared,
        TopologyWarnings::default(),
        HttpOptions::default(),
    )
    .await
}

/// [`serve`], with the topology watch's warnings in `/status` and `/metrics`,
/// and the options (the token).
pub async fn serve_with(
    addr: SocketAddr,
    shared: Shared,
    warnings: TopologyWarnings,
    options: HttpOptions,
) -> std::io::Result<SocketAddr> {
    // Read-only views: nothing served here changes the sync.
    let mut app = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/verify", get(last_verify))
        .with_state(AppState { shared, warnings });
    // A layer over the whole router: no route can be reached without the token.
    if let Some(token) = options.token {
        app = app.layer(axum::middleware::from_fn_with_state(token, require_token));
    }
    // Bound before returning: a bind error stops the start, and the caller learns the
    // real port.
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // For the life of the process: nothing stops it but the exit.
    tokio::spawn(accept_loop(listener, app));
    Ok(bound)
}

/// One task per connection, each with [`HEADER_READ_TIMEOUT`] for its request
/// heads (`axum::serve` sets no timer, so a half-sent request would hold its
/// connection forever).
async fn accept_loop(listener: tokio::net::TcpListener, app: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // The timer is what makes the header timeout work: without one, hyper quietly
            // disables it.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A client gone, or timed out: routine, so at debug level only.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        let t = HttpToken::new("s3cret".into());
        assert!(t.matches(b"s3cret"));
        // A prefix, a longer input, another case, nothing: none matches.
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret!"));
        assert!(!t.matches(b"S3cret"));
        assert!(!t.matches(b""));
        // Never in a debug print.
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn token_from_request() {
        // A request for this URI with, maybe, this Authorization header.
        let req = |uri: &str, auth: Option<&str>| {
            let mut r = axum::http::Request::builder().uri(uri);
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r.body(axum::body::Body::empty()).unwrap()
        };
        assert_eq!(
            request_token(&req("/", Some("Bearer abc"))),
            Some(b"abc".to_vec())
        );
        // Another scheme carries no token, and the query is not consulted instead.
        assert_eq!(request_token(&req("/", Some("Basic abc"))), Some(vec![]));
        // The scheme in any case, one or more spaces, surrounding blanks (RFC 7235).
        for scheme in ["bearer abc", "BEARER  abc", " Bearer abc "] {
            assert_eq!(
                request_token(&req("/", Some(scheme))),
                Some(b"abc".to_vec())
            );
        }
        // No space after the scheme, or no token: an empty one, which never matches.
        assert_eq!(request_token(&req("/", Some("Bearerabc"))), Some(vec![]));
        assert_eq!(request_token(&req("/", Some("Bearer"))), Some(vec![]));
        // The query form, percent-decoded, among other parameters.
        assert_eq!(
            request_token(&req("/?x=1&token=a%2Bb%3D", None)),
            Some(b"a+b=".to_vec())
        );
        // Neither: no token at all.
        assert_eq!(request_token(&req("/status", None)), None);
    }

    #[test]
    fn exposure() {
        // Loopback, v4 or v6, is silent.
        assert_eq!(exposure_warning("127.0.0.1".parse().unwrap(), false), None);
        assert_eq!(exposure_warning("::1".parse().unwrap(), false), None);
        // Every address, no token: the loudest warning.
        let open = exposure_warning("0.0.0.0".parse().unwrap(), false).unwrap();
        assert!(open.contains("WITHOUT A TOKEN"), "{open}");
        let lan = exposure_warning("10.1.2.3".parse().unwrap(), true).unwrap();
        assert!(
            lan.contains("10.1.2.3") && !lan.contains("WITHOUT"),
            "{lan}"
        );
    }
}
