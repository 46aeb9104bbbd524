//! `redis-port sync`: one source node into the target, full sync then the
//! command stream, until SIGINT/SIGTERM; the same engine the manager runs
//! for each shard.
//!
//! A stop signal is passed to the engine as its shutdown watch, as the manager does: it
//! stops reading, applies what was received, writes the checkpoint, and the command exits
//! 0. The signal handlers are installed before anything starts, so an early SIGTERM is a
//! clean stop too, never the default kill. As in the manager ([`rsm_engine::stop`]), the
//! process ends at most 30 s after the first signal, and at once on a second one, with a
//! non-zero exit code then.
//!
//! Pre-flight, before anything is written: the target must not be the source itself (the
//! same process, or a node of the source's cluster), which would feed the source's own
//! writes back into it; that is a usage error (exit 2).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use anyhow::Result;
use rsm_client::{
    info_field, ConnectOptions, Connection, Credentials, Endpoint, Side, TlsSettings,
};
use rsm_cluster::{parse_cluster_nodes, same_servers, Deployment, ServerIdentity};
use rsm_engine::shard::{run_shard, ShardSpec};
use rsm_engine::stop::{exit_now, stop_on_signals, StopSignals, STOP_BOUND};
use rsm_engine::EngineOptions;
use rsm_status::{http, now_ms, ShardStatus};
use tokio::sync::{watch, Semaphore};

pub struct SyncArgs {
    pub from: Endpoint,
    pub target: Endpoint,
    pub password: Option<Credentials>,
    pub auth: Option<Credentials>,
    /// Each side's TLS; plain TCP when `None`.
    pub source_tls: Option<Arc<TlsSettings>>,
    pub target_tls: Option<Arc<TlsSettings>>,
    pub options: EngineOptions,
    /// Checkpoints and spill files go beside this log file.
    pub logfile: PathBuf,
    pub httpport: Option<u16>,
}

pub async fn run(args: SyncArgs) -> Result<()> {
    let signals =
        StopSignals::install().map_err(|e| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {e}"))?;
    refuse_same_servers(&args).await?;
    let state_dir = state_dir(&args.logfile);
    let status = ShardStatus::new(0, args.from.to_string(), "node".into(), "all".into());
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stop_handler(signals, stop_tx, state_dir.clone());
    if let Some(port) = args.httpport {
        serve_status(&args, port, &status).await?;
    }
    let spec = ShardSpec {
        serial: 0,
        source: args.from,
        source_credentials: args.password,
        target_seeds: rsm_client::Seeds::new(vec![args.target.clone()]),
        target: args.target,
        target_credentials: args.auth,
        source_tls: args.source_tls,
        target_tls: args.target_tls,
        options: args.options,
        state_dir,
        spool_memory: rsm_engine::shard::DEFAULT_SPOOL_MEMORY,
    };
    tracing::info!(source = %spec.source, target = %spec.target, "sync starting");
    let result = run_shard(spec, status.clone(), Arc::new(Semaphore::new(1)), stop_rx).await;
    let s = status.snapshot();
    let summary = format!(
        "{} keys and {} commands applied, applied offset {} of {}",
        s.keys_applied, s.commands_applied, s.applied_offset, s.source_offset
    );
    if let Err(e) = result {
        tracing::error!(error = %e, "sync failed; {summary}");
        return Err(e.into());
    }
    tracing::info!("sync stopped; {summary}");
    eprintln!("sync: stopped; {summary}");
    Ok(())
}

/// The pre-flight: a usage error when `--target` is the source itself.
async fn refuse_same_servers(args: &SyncArgs) -> Result<()> {
    let source_connect =
        ConnectOptions::new(Side::Source, args.password.clone()).with_tls(args.source_tls.clone());
    let target_connect =
        ConnectOptions::new(Side::Target, args.auth.clone()).with_tls(args.target_tls.clone());
    let source = identify(&args.from, &source_connect).await?;
    let target = identify(&args.target, &target_connect).await?;
    if let Some(same) = same_servers(&source, &target) {
        return Err(super::UsageError(format!(
            "--from and --target are the same servers: {same}; a source synced into itself \
             gets its own writes again"
        ))
        .into());
    }
    Ok(())
}

/// Checkpoints and spill files: a `state` folder beside the log file.
fn state_dir(logfile: &Path) -> PathBuf {
    let state_dir = logfile
        .parent()
        .map(|p| p.join("state"))
        .unwrap_or_else(|| PathBuf::from("state"));
    // Absolute, so the folder can be made again where it was if the working directory goes.
    std::path::absolute(&state_dir).unwrap_or(state_dir)
}

/// The first SIGINT/SIGTERM stops the engine through `stop_tx`; a second one,
/// or the stop taking too long, exits at once.
fn spawn_stop_handler(signals: StopSignals, stop_tx: watch::Sender<bool>, spill_dir: PathBuf) {
    tokio::spawn(async move {
        let forced = stop_on_signals(signals, stop_tx, |signal| {
            eprintln!(
                "sync: stopping ({}); draining what is in flight and writing the checkpoint; at most {} s, a second signal exits at once…",
                signal.name(),
                STOP_BOUND.as_secs()
            );
            tracing::info!(signal = signal.name(), "stop requested");
        })
        .await;
        exit_now(forced, &spill_dir);
    });
}

/// `--httpport`: the status page of the one shard, on 127.0.0.1.
async fn serve_status(args: &SyncArgs, port: u16, status: &Arc<ShardStatus>) -> Result<()> {
    let shared = http::Shared {
        shards: http::ShardList::new(vec![status.clone()]),
        source: args.from.to_string(),
        target: args.target.to_string(),
        started_ms: now_ms(),
        verify: Default::default(),
        limits: args.options.limits.clone(),
    };
    let bound = http::serve(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        shared,
    )
    .await?;
    eprintln!("sync: status on http://{bound}/");
    Ok(())
}

/// What a server says about itself (see `rsm_cluster::identity`): its `run_id`, and for a
/// cluster node its id and the ids of every node of its cluster. A server that cannot be
/// reached is an error naming the flag; a reply it refuses (a proxy) is just not known.
async fn identify(endpoint: &Endpoint, connect: &ConnectOptions) -> Result<Deployment> {
    let mut o = connect.clone();
    o.io_timeout = Duration::from_secs(10);
    let mut conn = Connection::connect(endpoint, &o).await?;
    let server = conn.info("server").await.unwrap_or_default();
    let cluster = conn.info("cluster").await.unwrap_or_default();
    let nodes = if info_field(&cluster, "cluster_enabled") == Some("1") {
        match conn.request_text(&["CLUSTER", "NODES"]).await {
            Ok(text) => parse_cluster_nodes(&text).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    } else {
        Vec::new()
    };
    Ok(Deployment {
        servers: vec![ServerIdentity {
            addr: endpoint.to_string(),
            run_id: info_field(&server, "run_id").map(str::to_string),
            node_id: nodes
                .iter()
                .find(|n| n.flags.myself)
                .map(|n| n.id.as_str().to_string()),
        }],
        cluster_node_ids: nodes.iter().map(|n| n.id.as_str().to_string()).collect(),
    })
}
