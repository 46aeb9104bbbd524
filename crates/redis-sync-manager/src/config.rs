//! The validated configuration of a sync run. Built once from the command
//! line; nothing below `main` reads flags.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rsm_client::{ConnectOptions, Credentials, Endpoint, Side, TlsSettings};
use rsm_cluster::Role;
use rsm_engine::EngineOptions;
use rsm_status::http::HttpToken;

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub from: Endpoint,
    /// The first node `--target` names.
    pub target: Endpoint,
    /// Every node `--target` names, and every target node learnt since: what a connection
    /// to the target as a whole tries when a node is gone (see [`rsm_client::Seeds`]).
    pub target_seeds: rsm_client::Seeds,
    pub source_credentials: Option<Credentials>,
    pub target_credentials: Option<Credentials>,
    /// TLS of each side (`--source-tls`, `rediss://`, …); plain TCP when `None`.
    pub source_tls: Option<Arc<TlsSettings>>,
    pub target_tls: Option<Arc<TlsSettings>>,
    /// `--tls-insecure` and friends: said loudly at start.
    pub tls_warnings: Vec<String>,
    /// The write flags and `--max-bandwidth`; its limits are one set of buckets for
    /// every shard.
    pub engine: EngineOptions,
    pub logfile: PathBuf,
    pub http_port: Option<u16>,
    pub http_bind: IpAddr,
    /// `--http-token`: what every HTTP request must carry.
    pub http_token: Option<HttpToken>,
    pub sync_parallel: usize,
    pub sync_role: Role,
    pub dry_run: bool,
    pub verify_on_ready: bool,
}

impl SyncConfig {
    /// What every source connection starts from: credentials and TLS.
    pub fn source_connect(&self) -> ConnectOptions {
        ConnectOptions::new(Side::Source, self.source_credentials.clone())
            .with_tls(self.source_tls.clone())
    }

    /// What every target connection starts from.
    pub fn target_connect(&self) -> ConnectOptions {
        ConnectOptions::new(Side::Target, self.target_credentials.clone())
            .with_tls(self.target_tls.clone())
            .with_seeds(self.target_seeds.clone())
    }

    /// The options every shard's engine runs with.
    pub fn engine_options(&self) -> EngineOptions {
        self.engine.clone()
    }
}
