//! `redis-port sync`: one source node into the target, full sync then the
//! command stream, until SIGINT/SIGTERM; the same engine the manager runs
//! for each shard.
//!
//! A stop signal is passed to the engine as its shutdown watch, as the manager does: it
//! stops reading, applies what was received, writes the checkpoint, and the command exits
//! 0. The signal handlers are installed before anything starts, so an early SIGTERM is a
//! clean stop too, never the default kill.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use rsm_client::{Credentials, Endpoint};
use rsm_engine::shard::{run_shard, ShardSpec};
use rsm_engine::status::{http, now_ms, ShardStatus};
use rsm_engine::EngineOptions;
use tokio::sync::{watch, Semaphore};

pub struct SyncArgs {
    pub from: Endpoint,
    pub target: Endpoint,
    pub password: Option<Credentials>,
    pub auth: Option<Credentials>,
    pub options: EngineOptions,
    /// Checkpoints and spill files go beside this log file.
    pub logfile: PathBuf,
    pub httpport: Option<u16>,
}

pub async fn run(args: SyncArgs) -> Result<()> {
    let state_dir = args
        .logfile
        .parent()
        .map(|p| p.join("state"))
        .unwrap_or_else(|| PathBuf::from("state"));
    let status = ShardStatus::new(0, args.from.to_string(), "node".into(), "all".into());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut signals = StopSignals::install()?;
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("sync: stopping; draining what is in flight and writing the checkpoint…");
        tracing::info!("stop requested");
        let _ = stop_tx.send(true);
    });
    if let Some(port) = args.httpport {
        let shared = http::Shared {
            shards: Arc::new(vec![status.clone()]),
            source: args.from.to_string(),
            target: args.target.to_string(),
            started_ms: now_ms(),
            verify: Default::default(),
        };
        let bound = http::serve(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            shared,
        )
        .await?;
        eprintln!("sync: status on http://{bound}/");
    }
    let spec = ShardSpec {
        serial: 0,
        source: args.from,
        source_credentials: args.password,
        target: args.target,
        target_credentials: args.auth,
        options: args.options,
        state_dir,
        listening_port: args.httpport.unwrap_or(0),
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

/// SIGINT and SIGTERM, registered at once (not on the first poll).
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate())
                .map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
            let int = signal(SignalKind::interrupt())
                .map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
            Ok(StopSignals { term, int })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
