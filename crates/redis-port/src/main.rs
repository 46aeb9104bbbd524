//! `redis-port`: the per-shard engine as its own command, with the classic
//! subcommands `sync`, `restore`, `dump` and `decode`.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rsm_client::{Credentials, Endpoint};
use rsm_engine::{ConflictPolicy, EngineOptions, KeyPrefixes};

mod cmd;
mod log;

#[derive(Debug, Parser)]
#[command(
    name = "redis-port",
    version,
    about = "Sync, restore, dump and decode Redis data, one node at a time."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicate one source node into the target: full sync, then the command stream, until stopped.
    Sync {
        /// The source node, HOST:PORT.
        #[arg(long, value_parser = parse_endpoint)]
        from: Endpoint,
        /// The target (a standalone server, a proxy, or any node of a cluster), HOST:PORT.
        #[arg(long, value_parser = parse_endpoint)]
        target: Endpoint,
        /// Source password; `user:password` selects an ACL user. Also from the
        /// environment: RSM_SOURCE_PASSWORD (read by `secret`, not clap, so that only
        /// the two flags conflict).
        #[arg(long)]
        password: Option<String>,
        /// Read the source password (first line) from FILE, mode 0600 or stricter.
        #[arg(long, value_name = "FILE", conflicts_with = "password")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        write: WriteFlags,
        /// Log file (INFO and above; warnings also on stderr); the checkpoint and any spill
        /// file go in a `state` folder beside it.
        #[arg(long, default_value = "logs/redis-port.log")]
        logfile: PathBuf,
        /// Serve the status page, /status and /metrics on this port (127.0.0.1).
        #[arg(long)]
        httpport: Option<u16>,
    },
    /// Load an RDB file (or - for standard input) into the target.
    Restore {
        /// The RDB file, or - for standard input. A file's checksum is verified in a first
        /// pass, before anything is written; from standard input keys are written as they
        /// are read, before the checksum at its end is known.
        #[arg(long, short = 'i')]
        input: PathBuf,
        /// The target (a standalone server, a proxy, or any node of a cluster), HOST:PORT.
        #[arg(long, value_parser = parse_endpoint)]
        target: Endpoint,
        #[command(flatten)]
        write: WriteFlags,
        /// Seconds to keep retrying a target that stopped answering before giving up.
        #[arg(long, value_name = "SECS", default_value = "60")]
        retry_timeout: u64,
    },
    /// Take a snapshot of one source node into an RDB file (as a replica would receive it).
    Dump {
        /// The source node, HOST:PORT.
        #[arg(long, value_parser = parse_endpoint)]
        from: Endpoint,
        /// Source password; `user:password` selects an ACL user. Also from the
        /// environment: RSM_SOURCE_PASSWORD (read by `secret`, not clap, so that only
        /// the two flags conflict).
        #[arg(long)]
        password: Option<String>,
        /// Read the source password (first line) from FILE, mode 0600 or stricter.
        #[arg(long, value_name = "FILE", conflicts_with = "password")]
        password_file: Option<PathBuf>,
        /// The RDB file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Decode an RDB file into JSON lines (one object per key, plus aux fields and functions).
    Decode {
        /// The RDB file, or - for standard input.
        #[arg(long, short = 'i')]
        input: String,
        /// Where to write the JSON lines (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

/// The flags that shape writes into the target, shared by `sync` and `restore`.
#[derive(Debug, Args)]
struct WriteFlags {
    /// Target password; `user:password` selects an ACL user. Also from the
    /// environment: RSM_TARGET_PASSWORD.
    #[arg(long)]
    auth: Option<String>,
    /// Read the target password (first line) from FILE, mode 0600 or stricter.
    #[arg(long, value_name = "FILE", conflicts_with = "auth")]
    auth_file: Option<PathBuf>,
    /// Only keys starting with one of these prefixes, e.g. "str1|str2|str3".
    #[arg(long, value_parser = KeyPrefixes::parse)]
    filterkey: Option<KeyPrefixes>,
    /// Write every key into this database of a standalone target.
    #[arg(long, value_parser = rsm_engine::options::parse_db, allow_hyphen_values = true)]
    targetdb: Option<u32>,
    /// Overwrite keys that already exist in the target.
    #[arg(long, conflicts_with = "skip_existing")]
    rewrite: bool,
    /// Keep the target's value of keys that already exist, and count them.
    #[arg(long)]
    skip_existing: bool,
    /// Values larger than SIZE are written in chunks of commands (512kb, 64mb, 1gb).
    #[arg(long, value_parser = rsm_engine::options::parse_size)]
    bigkeysize: Option<u64>,
}

impl WriteFlags {
    /// `--auth` or `--auth-file`.
    fn credentials(&self) -> Result<Option<Credentials>, cmd::UsageError> {
        credentials(
            rsm_engine::options::TARGET_PASSWORD,
            self.auth.as_deref(),
            self.auth_file.as_deref(),
        )
    }

    fn options(&self) -> EngineOptions {
        EngineOptions {
            filter: self.filterkey.clone().unwrap_or_default(),
            target_db: self.targetdb,
            conflict: if self.rewrite {
                ConflictPolicy::Rewrite
            } else if self.skip_existing {
                ConflictPolicy::Skip
            } else {
                ConflictPolicy::Fail
            },
            big_key_size: self.bigkeysize,
        }
    }
}

/// A password flag or its file flag, as credentials; a bad file is a usage error.
fn credentials(
    names: rsm_engine::options::SecretFlags<'_>,
    value: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<Credentials>, cmd::UsageError> {
    rsm_engine::options::secret(names, value, file)
        .map(|s| s.as_deref().map(Credentials::parse))
        .map_err(cmd::UsageError)
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse::<Endpoint>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", rsm_engine::usage::one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Decode { input, output } => cmd::decode::run(&input, output.as_deref()),
        Command::Dump {
            from,
            password,
            password_file,
            output,
        } => runtime().and_then(|rt| {
            let password = credentials(
                rsm_engine::options::SOURCE_PASSWORD,
                password.as_deref(),
                password_file.as_deref(),
            )?;
            rt.block_on(cmd::dump::run(cmd::dump::DumpArgs {
                from,
                password,
                output: output.clone(),
            }))
            .map(|n| eprintln!("dump: wrote {n} bytes to {}", output.display()))
        }),
        Command::Restore {
            input,
            target,
            write,
            retry_timeout,
        } => runtime().and_then(|rt| {
            log::to_stderr();
            let auth = write.credentials()?;
            let options = write.options();
            rt.block_on(cmd::restore::run(cmd::restore::RestoreArgs {
                input,
                target,
                auth,
                filter: options.filter,
                target_db: options.target_db,
                conflict: options.conflict,
                big_key_size: options.big_key_size,
                // Redrawn in place with `\r`: only a terminal shows that as one line.
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                retry_timeout: std::time::Duration::from_secs(retry_timeout),
            }))
            .map(|summary| eprintln!("restore: {summary}"))
        }),
        Command::Sync {
            from,
            target,
            password,
            password_file,
            write,
            logfile,
            httpport,
        } => log::to_file(&logfile)
            .and_then(|()| runtime())
            .and_then(|rt| {
                let password = credentials(
                    rsm_engine::options::SOURCE_PASSWORD,
                    password.as_deref(),
                    password_file.as_deref(),
                )?;
                let auth = write.credentials()?;
                rt.block_on(cmd::sync::run(cmd::sync::SyncArgs {
                    from,
                    target,
                    password,
                    auth,
                    options: write.options(),
                    logfile,
                    httpport,
                }))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<cmd::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
