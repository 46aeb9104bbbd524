//! Running the plan: one engine per shard in this process, at most
//! `--sync-parallel` of them in full sync at once, until SIGINT/SIGTERM.
//!
//! A shard whose link drops reconnects by itself (the engine continues with
//! PSYNC from its checkpoint, on the new master after a source failover).
//! The topology watch ([`crate::watch`]) reports slot migrations and shard
//! changes in the source, keeps the run from being ready while slots move, and hands a
//! settled new topology to the supervisor ([`crate::supervise`]), which re-plans the
//! shards that changed. A shard that fails for a reason a retry cannot
//! cure (a key conflict, a refused write) stops alone, loudly; the others go
//! on, and the exit code says something failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rsm_client::Endpoint;
use rsm_engine::shard::ShardSpec;
use rsm_engine::stop::{exit_now, stop_on_signals, StopSignals, STOP_BOUND};
use rsm_replica::follow::FollowOptions;
use rsm_status::{now_ms, Phase, ShardStatus};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::SyncConfig;
use crate::discover::{Plan, PlannedShard};
use crate::plan::human_bytes;
use crate::supervise::Supervisor;
use crate::watch::{Planned, WatchOutputs};
use rsm_status::http;

/// Where checkpoints and spill files live: beside the logs. Made absolute now, so that
/// the folder can be made again where it was if the working directory is removed.
pub fn state_dir(config: &SyncConfig) -> PathBuf {
    let dir = config
        .logfile
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let dir = dir.join("state");
    std::path::absolute(&dir).unwrap_or(dir)
}

pub async fn run(config: SyncConfig, plan: Plan) -> anyhow::Result<ExitCode> {
    let signals =
        StopSignals::install().map_err(|e| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {e}"))?;
    let statuses: Vec<Arc<ShardStatus>> = plan.shards.iter().map(shard_status).collect();
    for s in &plan.shards {
        tracing::info!(shard = s.serial as u64, source = %s.node, slots = %rsm_cluster::display_ranges(&s.slots), "shard planned");
    }

    let state = state_dir(&config);
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stop_handler(signals, stop_tx, state.clone());

    let shared = status_shared(&config, &statuses);
    let warnings = http::TopologyWarnings::default();
    let seeds = source_seeds(&config, &plan);
    let planned: Planned = Arc::new(std::sync::Mutex::new(
        plan.shards
            .iter()
            .map(|s| rsm_cluster::display_ranges(&s.slots))
            .collect(),
    ));
    // Capacity 1: a re-plan waiting is enough; the watch offers a newer one next round.
    let (replan_tx, replan_rx) = mpsc::channel(1);
    if plan.source_is_cluster {
        tokio::spawn(crate::watch::watch_topology(
            seeds.clone(),
            config.source_connect(),
            WatchOutputs {
                warnings: warnings.clone(),
                planned: planned.clone(),
                replan: replan_tx,
            },
            stop_rx.clone(),
        ));
    }
    if let Some(port) = config.http_port {
        serve_status(&config, port, &shared, &warnings).await?;
    }

    let mut shards = Supervisor::new(
        config.clone(),
        plan.source_is_cluster,
        plan.target.cluster,
        seeds,
        state,
        Arc::new(Semaphore::new(config.sync_parallel)),
        shared.shards.clone(),
        planned,
    );
    for (s, status) in plan.shards.iter().zip(&statuses) {
        shards.start(s, status.clone());
    }

    let console = tokio::spawn(console_loop(
        shared.clone(),
        warnings.clone(),
        stop_rx.clone(),
    ));
    let verifier = config.verify_on_ready.then(|| {
        tokio::spawn(verify_when_ready(
            config.clone(),
            shared.clone(),
            warnings.clone(),
            stop_rx.clone(),
        ))
    });
    let failed = shards.run(replan_rx, stop_rx).await;
    console.abort();
    if let Some(v) = verifier {
        v.abort();
    }
    print_summary(&shared, &warnings);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The status of a planned shard, before its engine starts.
pub fn shard_status(s: &PlannedShard) -> Arc<ShardStatus> {
    let role = match s.role {
        rsm_cluster::Role::Master => "master",
        rsm_cluster::Role::Slave => "slave",
    };
    ShardStatus::new(
        s.serial,
        s.node.to_string(),
        role.to_string(),
        rsm_cluster::display_ranges(&s.slots),
    )
}

/// The report as the console and `--verify-on-ready` read it: with what in the source's
/// topology blocks a cut-over, as of the watch's last round.
fn report_now(shared: &http::Shared, warnings: &http::TopologyWarnings) -> http::StatusReport {
    http::report_with(shared, warnings, warnings.blocking())
}

/// The first SIGINT/SIGTERM stops the shards through `stop_tx`; a second one,
/// or the stop taking too long, exits at once.
fn spawn_stop_handler(signals: StopSignals, stop_tx: watch::Sender<bool>, spill_dir: PathBuf) {
    tokio::spawn(async move {
        let forced = stop_on_signals(signals, stop_tx, |signal| {
            eprintln!(
                "stopping ({}): draining what is in flight and writing checkpoints; at most {} s, a second signal exits at once…",
                signal.name(),
                STOP_BOUND.as_secs()
            );
            tracing::info!(signal = signal.name(), "stop requested");
        })
        .await;
        exit_now(forced, &spill_dir);
    });
}

/// What the status page, the console and `--verify-on-ready` read.
fn status_shared(config: &SyncConfig, statuses: &[Arc<ShardStatus>]) -> http::Shared {
    http::Shared {
        shards: http::ShardList::new(statuses.to_vec()),
        source: config.from.to_string(),
        target: config.target.to_string(),
        started_ms: now_ms(),
        verify: Default::default(),
        limits: config.engine.limits.clone(),
    }
}

/// Every node of the plan and the seed: enough to find the others.
fn source_seeds(config: &SyncConfig, plan: &Plan) -> Vec<Endpoint> {
    let mut seeds: Vec<Endpoint> = vec![config.from.clone()];
    for s in &plan.shards {
        if !seeds.contains(&s.node) {
            seeds.push(s.node.clone());
        }
    }
    seeds
}

/// `--httpport`: serve the status page, and say where.
async fn serve_status(
    config: &SyncConfig,
    port: u16,
    shared: &http::Shared,
    warnings: &http::TopologyWarnings,
) -> anyhow::Result<()> {
    if let Some(warning) = http::exposure_warning(config.http_bind, config.http_token.is_some()) {
        // WARN reaches the console as well as the log.
        tracing::warn!("{warning}");
    }
    let bound = http::serve_with(
        SocketAddr::new(config.http_bind, port),
        shared.clone(),
        warnings.clone(),
        http::HttpOptions {
            token: config.http_token.clone(),
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot serve HTTP on {}:{port}: {e} (is --httpport free?)",
            config.http_bind
        )
    })?;
    println!("status page: http://{bound}/  (JSON: /status, metrics: /metrics)");
    if config.http_token.is_some() {
        // Never the token itself: stdout often goes to a log.
        println!(
            "  every endpoint wants the --http-token: `Authorization: Bearer TOKEN`, \
             or open http://{bound}/?token=TOKEN"
        );
    }
    Ok(())
}

/// What one shard's engine is given.
pub fn shard_spec(config: &SyncConfig, s: &PlannedShard, state: &Path) -> ShardSpec {
    ShardSpec {
        serial: s.serial,
        source: s.node.clone(),
        source_credentials: config.source_credentials.clone(),
        target: config.target.clone(),
        target_seeds: config.target_seeds.clone(),
        target_credentials: config.target_credentials.clone(),
        source_tls: config.source_tls.clone(),
        target_tls: config.target_tls.clone(),
        options: config.engine_options(),
        state_dir: state.to_path_buf(),
        spool_memory: rsm_engine::shard::DEFAULT_SPOOL_MEMORY,
    }
}

/// How one shard follows its slots through source failovers.
pub fn follow_options(
    config: &SyncConfig,
    source_is_cluster: bool,
    s: &PlannedShard,
    seeds: &[Endpoint],
) -> FollowOptions {
    FollowOptions {
        role: Some(config.sync_role),
        // A shard that lists no slots learns them from its node.
        slots: (!s.slots.is_empty()).then(|| s.slots.clone()),
        seeds: seeds.to_vec(),
        disabled: !source_is_cluster,
    }
}

/// `--verify-on-ready`: wait for every shard to be ready for cut-over, then
/// compare source and target once, in full, and publish the result.
async fn verify_when_ready(
    config: SyncConfig,
    shared: http::Shared,
    warnings: http::TopologyWarnings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let blocking = warnings.fresh_blocking(http::FRESH_TOPOLOGY_WAIT).await;
        if http::report_with(&shared, &warnings, blocking).ready_for_cutover {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
    tracing::info!("every shard is ready for cut-over; running verify --mode=full");
    let opts = crate::verify::VerifyOptions {
        from: config.from.clone(),
        target: config.target.clone(),
        source_credentials: config.source_credentials.clone(),
        target_credentials: config.target_credentials.clone(),
        source_tls: config.source_tls.clone(),
        target_tls: config.target_tls.clone(),
        filter: config.engine.filter.clone(),
        target_db: config.engine.target_db,
        mode: crate::verify::Mode::Full,
        sample: None,
        ttl_tolerance_ms: 2000,
        show: 20,
        progress: false,
    };
    match crate::verify::verify(&opts).await {
        Ok(report) => {
            let json = crate::verify::output::json(&report);
            if report.equal() {
                tracing::info!(
                    source_keys = report.source_keys,
                    "verify: source and target are equal"
                );
            } else {
                tracing::warn!(
                    differences = report.differences(),
                    "verify: source and target differ; see /verify"
                );
            }
            shared
                .verify
                .set(report.equal(), report.differences(), json);
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "verify could not run"),
    }
}

/// A plain status line per shard every few seconds: it works the same on a
/// terminal, in a pipe and in CI logs.
/// On a terminal, one live progress line per shard and a total line; in a
/// pipe or a CI log, a plain status line per shard every few seconds.
async fn console_loop(
    shared: http::Shared,
    warnings: http::TopologyWarnings,
    stop: watch::Receiver<bool>,
) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        live_console(shared, warnings, stop).await
    } else {
        plain_console(shared, warnings, stop).await
    }
}

async fn plain_console(
    shared: http::Shared,
    warnings: http::TopologyWarnings,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let r = report_now(&shared, &warnings);
        for s in &r.shards {
            println!("{}", shard_line(s));
        }
        println!("{}", total_line(&r));
    }
}

async fn live_console(
    shared: http::Shared,
    warnings: http::TopologyWarnings,
    mut stop: watch::Receiver<bool>,
) {
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    // Bars on stdout; warnings go to stderr and the log files.
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
    let style = ProgressStyle::with_template("[{bar:24}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let total = multi.add(ProgressBar::new_spinner());
    // One bar per shard; shards come and go when the source's shards change.
    let mut bars: Vec<ProgressBar> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                let _ = multi.clear();
                return;
            }
        }
        let r = report_now(&shared, &warnings);
        while bars.len() < r.shards.len() {
            let bar = multi.insert_before(&total, ProgressBar::new(1000));
            bar.set_style(style.clone());
            bars.push(bar);
        }
        while bars.len() > r.shards.len() {
            if let Some(bar) = bars.pop() {
                multi.remove(&bar);
            }
        }
        for (bar, s) in bars.iter().zip(&r.shards) {
            let snap = &s.snapshot;
            // Snapshot progress while loading; a full bar once streaming.
            let permille = match snap.phase {
                Phase::Streaming => 1000,
                _ if snap.rdb_bytes_total > 0 => {
                    1000 * snap.rdb_bytes_loaded / snap.rdb_bytes_total.max(1)
                }
                _ => 0,
            };
            bar.set_position(permille.min(1000));
            bar.set_message(shard_line(s));
        }
        total.set_message(total_line(&r));
        total.tick();
    }
}

fn total_line(r: &http::StatusReport) -> String {
    let keys: u64 = r.shards.iter().map(|s| s.snapshot.keys_applied).sum();
    let lag: u64 = r.shards.iter().map(|s| s.snapshot.lag_bytes).sum();
    format!(
        "total: {} shard(s), {} ready, {keys} keys, lag {lag} B; ready_for_cutover={}",
        r.shards.len(),
        r.shards.iter().filter(|s| s.ready).count(),
        r.ready_for_cutover
    )
}

fn shard_line(s: &http::ShardReport) -> String {
    let snap = &s.snapshot;
    let phase = if s.ready {
        "ready".to_string()
    } else {
        format!("{:?}", snap.phase).to_lowercase()
    };
    let rdb = if snap.rdb_bytes_total > 0 {
        format!(
            "{:.0}%",
            100.0 * snap.rdb_bytes_loaded as f64 / snap.rdb_bytes_total as f64
        )
    } else {
        human_bytes(snap.rdb_bytes_received)
    };
    format!(
        "shard {} {} {:<13} rdb {:>9} keys {} cmds {} lag {} B spill {}{}",
        snap.serial,
        snap.source,
        phase,
        rdb,
        snap.keys_applied,
        snap.commands_applied,
        snap.lag_bytes,
        human_bytes(snap.spill_bytes),
        snap.last_error
            .as_deref()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    )
}

fn print_summary(shared: &http::Shared, warnings: &http::TopologyWarnings) {
    let r = report_now(shared, warnings);
    println!("summary:");
    for s in &r.shards {
        let snap = &s.snapshot;
        println!(
            "shard {} {}: {} keys written, {} skipped, {} expired, {} filtered, {} failed; {} commands applied, {} failed; applied offset {} of {}{}",
            snap.serial,
            snap.source,
            snap.keys_applied,
            snap.keys_skipped,
            snap.keys_expired,
            snap.keys_filtered,
            snap.keys_failed,
            snap.commands_applied,
            snap.commands_failed,
            snap.applied_offset,
            snap.source_offset,
            if snap.phase == Phase::Failed { " (FAILED)" } else { "" }
        );
    }
}
