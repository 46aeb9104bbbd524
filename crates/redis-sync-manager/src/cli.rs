//! Command line of `redis-sync-manager`: the seed's flags, parsed and validated
//! into a `SyncConfig` before any socket opens.
//!
//! Both `--flag=value` and `--flag value` work (clap accepts either). Every
//! value parser says what it expects, so a bad value fails with one line that
//! names the flag and the expected form, and exit code 2.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rsm_client::{Credentials, Side};

use rsm_engine::KeyPrefixes;
use rsm_flags::parse::{secret, HTTP_TOKEN};
use rsm_flags::tls::{Address, SeedAddresses, TlsArgs};
use rsm_flags::write::{SourcePasswordArgs, TargetPasswordArgs, WriteArgs};
use rsm_status::http::HttpToken;

use rsm_cluster::Role;

use crate::config::SyncConfig;

const ABOUT: &str =
    "Live-migrate a Redis Cluster into another Redis deployment (cluster, proxy or standalone).

redis-sync-manager reads the source topology with CLUSTER NODES, picks one IP:PORT per shard \
(--sync-role), then syncs every shard: it acts as a replica (PSYNC), loads the snapshot into the \
target, and streams the shard's writes into the target until stopped.";

#[derive(Debug, Parser)]
#[command(
    name = "redis-sync-manager",
    version,
    about = ABOUT,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub sync: SyncArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare the source with the target: missing, extra, type, value and TTL differences.
    /// Exit code 0 when equal, 1 when differences remain, 2 on a usage error.
    Verify(VerifyArgs),
    /// After cut-over: remove the tool's own keys (its `__rsm:` progress markers) from
    /// the target. Run it once no sync writes into the target any more.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// IP:PORT of the target: a node of a cluster, or a standalone server
    /// (rediss://IP:PORT for TLS).
    #[arg(long, value_name = "DST_HOST:DST_PORT", value_parser = parse_address)]
    pub target: Address,

    #[command(flatten)]
    pub passwords: PasswordArgs,

    #[command(flatten)]
    pub tls: TlsArgs,
}

impl CleanupArgs {
    /// The target's TLS, and any warning to show; source flags are refused.
    pub fn target_tls(&self) -> Result<rsm_flags::tls::SideTls, String> {
        if self.tls.given_for(Side::Source) {
            return Err(
                "cleanup only talks to the target: --source-… TLS flags do not apply".into(),
            );
        }
        self.tls
            .check_shared(self.target.tls || self.tls.target_tls)?;
        self.tls.resolve(Side::Target, self.target.tls)
    }
}

/// Both sides' TLS, resolved, and the warnings to show at start.
pub struct BothTls {
    pub source: Option<std::sync::Arc<rsm_client::TlsSettings>>,
    pub target: Option<std::sync::Arc<rsm_client::TlsSettings>>,
    pub warnings: Vec<String>,
}

fn both_tls(tls: &TlsArgs, from: &Address, target: &Address) -> Result<BothTls, String> {
    let source = tls.resolve(Side::Source, from.tls)?;
    let dest = tls.resolve(Side::Target, target.tls)?;
    tls.check_shared(source.settings.is_some() || dest.settings.is_some())?;
    Ok(BothTls {
        source: source.settings,
        target: dest.settings,
        warnings: source.warning.into_iter().chain(dest.warning).collect(),
    })
}

/// `--password` (source) and `--auth` (target), shared by the sync and `verify`;
/// each also as a file (`--password-file`, `--auth-file`), which keeps it out of `ps`.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    #[command(flatten)]
    pub source: SourcePasswordArgs,
    #[command(flatten)]
    pub target: TargetPasswordArgs,
}

impl PasswordArgs {
    /// Source and target credentials; an empty password is a mistake, not "none".
    pub fn credentials(&self) -> Result<(Option<Credentials>, Option<Credentials>), String> {
        Ok((self.source.credentials()?, self.target.credentials()?))
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// IP:PORT of any process of the source cluster (or a standalone source);
    /// rediss://IP:PORT for TLS.
    #[arg(long, value_name = "SRC_HOST:SRC_PORT", value_parser = parse_address)]
    pub from: Address,

    /// IP:PORT of the target: a node of a cluster, or a standalone server;
    /// rediss://IP:PORT for TLS.
    #[arg(long, value_name = "DST_HOST:DST_PORT", value_parser = parse_address)]
    pub target: Address,

    #[command(flatten)]
    pub passwords: PasswordArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Compare only keys starting with one of these prefixes, e.g. "str1|str2|str3".
    #[arg(long, value_name = "str1|str2|str3", value_parser = parse_prefixes)]
    pub filterkey: Option<KeyPrefixes>,

    /// The db of a standalone target that every source key was written into.
    #[arg(long, value_name = "DB", value_parser = parse_db, allow_hyphen_values = true)]
    pub targetdb: Option<u32>,

    /// quick: existence, type, length, TTL. full: also whole values, stream groups and pending entries.
    #[arg(long, value_name = "quick|full", default_value = "quick", value_parser = parse_mode)]
    pub mode: crate::verify::Mode,

    /// Check only about N keys on each side (spread over the nodes).
    #[arg(long, value_name = "N", value_parser = parse_sample)]
    pub sample: Option<u64>,

    /// Expiry times may differ by this many milliseconds.
    #[arg(long, value_name = "MS", default_value = "2000", value_parser = parse_tolerance)]
    pub ttl_tolerance: i64,

    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// How many differing keys to list per category.
    #[arg(long, value_name = "N", default_value = "10")]
    pub show: usize,
}

impl VerifyArgs {
    /// The validated options, the report file and the TLS warnings to show.
    pub fn into_options(
        self,
    ) -> Result<(crate::verify::VerifyOptions, Option<PathBuf>, Vec<String>), String> {
        let (source_credentials, target_credentials) = self.passwords.credentials()?;
        let tls = both_tls(&self.tls, &self.from, &self.target)?;
        Ok((
            crate::verify::VerifyOptions {
                from: self.from.endpoint,
                target: self.target.endpoint,
                source_credentials,
                target_credentials,
                source_tls: tls.source,
                target_tls: tls.target,
                filter: self.filterkey.unwrap_or_default(),
                target_db: self.targetdb,
                mode: self.mode,
                sample: self.sample,
                ttl_tolerance_ms: self.ttl_tolerance,
                show: self.show,
                progress: true,
            },
            self.report,
            tls.warnings,
        ))
    }
}

fn parse_mode(s: &str) -> Result<crate::verify::Mode, String> {
    s.parse()
}

fn parse_sample(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "expected a number of keys, 1 or more".to_string())
}

fn parse_tolerance(s: &str) -> Result<i64, String> {
    s.parse::<u32>()
        .map(i64::from)
        .map_err(|_| "expected milliseconds, a whole number from 0".to_string())
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// IP:PORT of any process of the source Redis cluster (or a standalone source);
    /// rediss://IP:PORT for TLS.
    #[arg(long, value_name = "SRC_HOST:SRC_PORT", value_parser = parse_address, required = true)]
    pub from: Option<Address>,

    /// IP:PORT of the target: a node of a Redis cluster, a cluster proxy or a standalone
    /// server; rediss://IP:PORT for TLS. More nodes of a target cluster after commas
    /// (a:7000,b:7000) are tried when the first is down.
    #[arg(long, value_name = "DST_HOST:DST_PORT[,…]", value_parser = parse_seed_addresses, required = true)]
    pub target: Option<SeedAddresses>,

    #[command(flatten)]
    pub passwords: PasswordArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub write: WriteArgs,

    /// Read the snapshots from the source at most this fast, summed over every shard:
    /// megabytes (10^6 bytes) per second, e.g. 50 or 12.5. Off by default.
    #[arg(long, value_name = "MB/s", value_parser = rsm_flags::parse::parse_bandwidth)]
    pub max_bandwidth: Option<u64>,

    /// Log file of the manager; each shard logs beside it with its serial number
    /// added to the name (logs/redis-sync-manager.0.log, …).
    #[arg(
        long,
        value_name = "REDISPORT.LOG",
        default_value = "logs/redis-sync-manager.log"
    )]
    pub logfile: PathBuf,

    /// Serve the status page, /status (JSON) and /metrics (Prometheus) on this port.
    #[arg(long, value_name = "HTTPPORT", value_parser = parse_port)]
    pub httpport: Option<u16>,

    /// Address the HTTP port binds to. Anything but loopback exposes the status to the
    /// network: give it --http-token too.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub http_bind: IpAddr,

    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`) on every HTTP endpoint.
    /// Also from the environment: RSM_HTTP_TOKEN.
    // The environment variable is read by `secret`, not clap (see there).
    #[arg(long, value_name = "TOKEN")]
    pub http_token: Option<String>,

    /// Read the HTTP token (its first line) from FILE, which must be mode 0600 or stricter.
    #[arg(long, value_name = "FILE", conflicts_with = "http_token")]
    pub http_token_file: Option<PathBuf>,

    /// How many shards may run their full sync (source BGSAVE + snapshot load)
    /// at once; the plan shows the memory this needs on the source.
    #[arg(long, value_name = "INT", default_value = "1", value_parser = parse_parallel)]
    pub sync_parallel: usize,

    /// Sync each shard from its master or from one of its replicas.
    #[arg(long, value_name = "master|slave", default_value = "master", value_parser = parse_role)]
    pub sync_role: Role,

    /// Print the plan (shards, chosen nodes, memory estimate) and exit.
    #[arg(long)]
    pub dry_run: bool,

    /// Once every shard is ready for cut-over, run `verify --mode=full` once,
    /// log the result and show it in /status (the whole report at /verify).
    #[arg(long)]
    pub verify_on_ready: bool,
}

impl SyncArgs {
    /// The validated configuration. Cross-flag checks that clap cannot express live here.
    pub fn into_config(self) -> Result<SyncConfig, String> {
        let from = self
            .from
            .ok_or("--from is required: give the source as --from=HOST:PORT")?;
        let target = self
            .target
            .ok_or("--target is required: give the target as --target=HOST:PORT")?;
        let (source_credentials, target_credentials) = self.passwords.credentials()?;
        let tls = both_tls(&self.tls, &from, &target.first)?;
        let http_token = secret(
            HTTP_TOKEN,
            self.http_token.as_deref(),
            self.http_token_file.as_deref(),
        )?
        .map(HttpToken::new);
        Ok(SyncConfig {
            from: from.endpoint,
            target_seeds: rsm_client::Seeds::new(target.endpoints()),
            target: target.first.endpoint,
            source_credentials,
            target_credentials,
            source_tls: tls.source,
            target_tls: tls.target,
            tls_warnings: tls.warnings,
            engine: self.write.options(self.max_bandwidth),
            logfile: self.logfile,
            http_port: self.httpport,
            http_bind: self.http_bind,
            http_token,
            sync_parallel: self.sync_parallel,
            sync_role: self.sync_role,
            dry_run: self.dry_run,
            verify_on_ready: self.verify_on_ready,
        })
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s)
}

fn parse_seed_addresses(s: &str) -> Result<SeedAddresses, String> {
    SeedAddresses::parse(s)
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| "expected a port number from 1 to 65535".to_string())
}

fn parse_prefixes(s: &str) -> Result<KeyPrefixes, String> {
    KeyPrefixes::parse(s)
}

fn parse_db(s: &str) -> Result<u32, String> {
    rsm_flags::parse::parse_db(s)
}

fn parse_parallel(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "expected a whole number of shards, 1 or more".to_string())
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>()
        .map_err(|_| "expected master or slave".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(parse_role("master"), Ok(Role::Master));
        assert_eq!(parse_role("slave"), Ok(Role::Slave));
        assert!(parse_role("foo").is_err());
    }
}
