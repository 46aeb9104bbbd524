//! `redis-port sync`: one source node into the target, full sync then the
//! command stream, until SIGINT/SIGTERM; the same engine the manager runs
//! for each shard.

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
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("sync: stopping; draining what is in flight and writing the checkpoint…");
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
    run_shard(spec, status.clone(), Arc::new(Semaphore::new(1)), stop_rx).await?;
    let s = status.snapshot();
    eprintln!(
        "sync: stopped; {} keys and {} commands applied, applied offset {} of {}",
        s.keys_applied, s.commands_applied, s.applied_offset, s.source_offset
    );
    Ok(())
}
