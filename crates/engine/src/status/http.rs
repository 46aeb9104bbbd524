//! `--httpport`: the status page (`/`), the JSON status (`/status`) and
//! Prometheus metrics (`/metrics`). Handlers only read shard snapshots.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::{now_ms, Phase, ShardSnapshot, ShardStatus};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// A shard counts as caught up for cut-over after this long at lag 0.
pub const READY_AFTER_MS: u64 = 3000;

#[derive(Clone)]
pub struct Shared {
    pub shards: Arc<Vec<Arc<ShardStatus>>>,
    pub source: String,
    pub target: String,
    pub started_ms: u64,
    /// The last `--verify-on-ready` result, when there is one.
    pub verify: LastVerify,
}

/// The JSON report of the last verify run (the manager's `--verify-on-ready`),
/// served whole at `/verify` and summed up in `/status`.
#[derive(Debug, Clone, Default)]
pub struct LastVerify(Arc<Mutex<Option<VerifySummary>>>);

/// What `/status` says about the last verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub finished_ms: u64,
    pub equal: bool,
    pub differences: u64,
    /// Where the whole report is.
    pub report: &'static str,
    #[serde(skip)]
    pub json: String,
}

impl LastVerify {
    pub fn set(&self, equal: bool, differences: u64, json: String) {
        let summary = VerifySummary {
            finished_ms: now_ms(),
            equal,
            differences,
            report: "/verify",
            json,
        };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }

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
    pub at_ms: u64,
    pub message: String,
}

/// Written by the manager's topology watch, read by `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct TopologyWarnings(Arc<Mutex<Vec<TopologyWarning>>>);

impl TopologyWarnings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TopologyWarning>> {
        // Plain data: a panicked writer cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, message: String) {
        let mut list = self.lock();
        if list.len() >= MAX_TOPOLOGY_WARNINGS {
            list.remove(0);
        }
        list.push(TopologyWarning {
            at_ms: now_ms(),
            message,
        });
    }

    pub fn list(&self) -> Vec<TopologyWarning> {
        self.lock().clone()
    }
}

#[derive(Serialize)]
pub struct StatusReport {
    pub source: String,
    pub target: String,
    pub started_ms: u64,
    pub now_ms: u64,
    pub ready_for_cutover: bool,
    pub shards: Vec<ShardReport>,
    /// Changes seen in the source topology since the start, oldest first.
    pub topology_warnings: Vec<TopologyWarning>,
    /// The last verify (`--verify-on-ready`); the whole report is at `/verify`.
    pub last_verify: Option<VerifySummary>,
}

#[derive(Serialize)]
pub struct ShardReport {
    #[serde(flatten)]
    pub snapshot: ShardSnapshot,
    /// Seconds since the source was where the target is now (-1 when unknown).
    pub lag_seconds: f64,
    pub ready: bool,
}

pub fn report(shared: &Shared) -> StatusReport {
    report_with(shared, &TopologyWarnings::default())
}

/// The report including the topology watch's warnings.
pub fn report_with(shared: &Shared, warnings: &TopologyWarnings) -> StatusReport {
    let now = now_ms();
    let shards: Vec<ShardReport> = shared
        .shards
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
        ready_for_cutover: !shards.is_empty() && shards.iter().all(|s| s.ready),
        shards,
        topology_warnings: warnings.list(),
        last_verify: shared.verify.get(),
    }
}

pub fn shard_ready(s: &ShardSnapshot, now: u64) -> bool {
    s.phase == Phase::Streaming
        && s.lag_bytes == 0
        && s.timeline.caught_up_since_ms != 0
        && now.saturating_sub(s.timeline.caught_up_since_ms) >= READY_AFTER_MS
}

#[derive(Clone)]
struct AppState {
    shared: Shared,
    warnings: TopologyWarnings,
}

async fn status(State(app): State<AppState>) -> Json<StatusReport> {
    Json(report_with(&app.shared, &app.warnings))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&report_with(&app.shared, &app.warnings)),
    )
}

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

async fn page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// Prometheus text format, one family per counter, labelled by shard.
pub fn render_metrics(r: &StatusReport) -> String {
    type Getter = fn(&ShardSnapshot) -> u64;
    let families: &[(&str, &str, &str, Getter)] = &[
        (
            "rsm_rdb_received_bytes_total",
            "counter",
            "Snapshot bytes received from the source.",
            |s| s.rdb_bytes_received,
        ),
        (
            "rsm_rdb_size_bytes",
            "gauge",
            "Snapshot size announced by the source (0 if unknown).",
            |s| s.rdb_bytes_total,
        ),
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
        (
            "rsm_commands_failed_total",
            "counter",
            "Replicated commands the target refused.",
            |s| s.commands_failed,
        ),
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
        (
            "rsm_lag_bytes",
            "gauge",
            "Bytes received but not yet applied.",
            |s| s.lag_bytes,
        ),
        (
            "rsm_spill_bytes",
            "gauge",
            "Bytes waiting in the spill file.",
            |s| s.spill_bytes,
        ),
        (
            "rsm_full_syncs_total",
            "counter",
            "Full syncs started.",
            |s| s.full_syncs,
        ),
        (
            "rsm_reconnects_total",
            "counter",
            "Reconnects to the source.",
            |s| s.reconnects,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
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
    let _ = writeln!(out, "# HELP rsm_lag_seconds Seconds since the source was where the target is now (-1 unknown).\n# TYPE rsm_lag_seconds gauge");
    for s in &r.shards {
        let _ = writeln!(
            out,
            "rsm_lag_seconds{{shard=\"{}\",source=\"{}\"}} {}",
            s.snapshot.serial, s.snapshot.source, s.lag_seconds
        );
    }
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
    let _ = writeln!(
        out,
        "# HELP rsm_topology_warnings Changes seen in the source topology since the start.\n# TYPE rsm_topology_warnings gauge\nrsm_topology_warnings {}",
        r.topology_warnings.len()
    );
    let _ = writeln!(out, "# HELP rsm_ready_for_cutover Whether every shard is ready.\n# TYPE rsm_ready_for_cutover gauge\nrsm_ready_for_cutover {}", u8::from(r.ready_for_cutover));
    out
}

/// Serve until the process ends. Returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    serve_with(addr, shared, TopologyWarnings::default()).await
}

/// [`serve`], with the topology watch's warnings in `/status` and `/metrics`.
pub async fn serve_with(
    addr: SocketAddr,
    shared: Shared,
    warnings: TopologyWarnings,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/verify", get(last_verify))
        .with_state(AppState { shared, warnings });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}
