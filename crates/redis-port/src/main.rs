//! `redis-port`: the per-shard engine as its own command, with the classic
//! subcommands `sync`, `restore`, `dump` and `decode`.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rsm_client::Side;
use rsm_flags::tls::{Address, SideTls, TlsArgs};
use rsm_flags::write::{SourcePasswordArgs, TargetPasswordArgs, WriteArgs};

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
        /// The source node, HOST:PORT (rediss://HOST:PORT for TLS).
        #[arg(long, value_parser = Address::parse)]
        from: Address,
        /// The target (a standalone server, a proxy, or any node of a cluster), HOST:PORT
        /// (rediss://HOST:PORT for TLS).
        #[arg(long, value_parser = Address::parse)]
        target: Address,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        password: SourcePasswordArgs,
        #[command(flatten)]
        auth: TargetPasswordArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Read the snapshot from the source at most this fast: megabytes (10^6 bytes) per
        /// second, e.g. 50 or 12.5. Off by default.
        #[arg(long, value_name = "MB/s", value_parser = rsm_flags::parse::parse_bandwidth)]
        max_bandwidth: Option<u64>,
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
        /// The target (a standalone server, a proxy, or any node of a cluster), HOST:PORT
        /// (rediss://HOST:PORT for TLS).
        #[arg(long, value_parser = Address::parse)]
        target: Address,
        /// The --target-… TLS flags (and the shared --cacert, --tls-insecure).
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        auth: TargetPasswordArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Seconds to keep retrying a target that stopped answering before giving up.
        #[arg(long, value_name = "SECS", default_value = "60")]
        retry_timeout: u64,
    },
    /// Take a snapshot of one source node into an RDB file (as a replica would receive it).
    Dump {
        /// The source node, HOST:PORT (rediss://HOST:PORT for TLS).
        #[arg(long, value_parser = Address::parse)]
        from: Address,
        /// The --source-… TLS flags (and the shared --cacert, --tls-insecure).
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        password: SourcePasswordArgs,
        /// The RDB file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Read the snapshot at most this fast: megabytes (10^6 bytes) per second.
        #[arg(long, value_name = "MB/s", value_parser = rsm_flags::parse::parse_bandwidth)]
        max_bandwidth: Option<u64>,
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

/// The TLS of the one side a command talks to; flags for the other side are refused.
fn one_side_tls(tls: &TlsArgs, side: Side, scheme_tls: bool) -> Result<SideTls, cmd::UsageError> {
    let other = match side {
        Side::Source => Side::Target,
        Side::Target => Side::Source,
    };
    if tls.given_for(other) {
        return Err(cmd::UsageError(format!(
            "this command has no {other}: the --{other}-… TLS flags do not apply"
        )));
    }
    let resolved = tls.resolve(side, scheme_tls).map_err(cmd::UsageError)?;
    tls.check_shared(resolved.settings.is_some())
        .map_err(cmd::UsageError)?;
    if let Some(w) = &resolved.warning {
        eprintln!("{w}");
    }
    Ok(resolved)
}

/// Both sides' TLS for `sync`; a warning goes to stderr and the log.
fn both_tls(
    tls: &TlsArgs,
    from: &Address,
    target: &Address,
) -> Result<(SideTls, SideTls), cmd::UsageError> {
    let source = tls
        .resolve(Side::Source, from.tls)
        .map_err(cmd::UsageError)?;
    let dest = tls
        .resolve(Side::Target, target.tls)
        .map_err(cmd::UsageError)?;
    tls.check_shared(source.settings.is_some() || dest.settings.is_some())
        .map_err(cmd::UsageError)?;
    for w in source.warning.iter().chain(&dest.warning) {
        eprintln!("{w}");
        tracing::warn!("{w}");
    }
    Ok((source, dest))
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    exit_code(run(cli.command))
}

/// The command line, or the exit code when there is nothing to run: 0 after
/// `--help`/`--version`, 2 after a usage error (each printed).
fn parse_cli() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return Err(ExitCode::SUCCESS);
            }
            eprintln!("{}", rsm_flags::usage::clap_line(&e));
            Err(ExitCode::from(2))
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Decode { input, output } => cmd::decode::run(&input, output.as_deref()),
        Command::Dump {
            from,
            tls,
            password,
            output,
            max_bandwidth,
        } => dump(from, tls, password, output, max_bandwidth),
        Command::Restore {
            input,
            target,
            tls,
            auth,
            write,
            retry_timeout,
        } => restore(input, target, tls, auth, write, retry_timeout),
        Command::Sync {
            from,
            target,
            tls,
            password,
            auth,
            write,
            max_bandwidth,
            logfile,
            httpport,
        } => (|| {
            // Flag mistakes first: a usage error must not leave a log file behind.
            let password = password.credentials().map_err(cmd::UsageError)?;
            let auth = auth.credentials().map_err(cmd::UsageError)?;
            log::to_file(&logfile)?;
            let rt = runtime()?;
            let (source_tls, target_tls) = both_tls(&tls, &from, &target)?;
            rt.block_on(cmd::sync::run(cmd::sync::SyncArgs {
                from: from.endpoint,
                target: target.endpoint,
                password,
                auth,
                source_tls: source_tls.settings,
                target_tls: target_tls.settings,
                options: write.options(max_bandwidth),
                logfile,
                httpport,
            }))
        })(),
    }
}

fn dump(
    from: Address,
    tls: TlsArgs,
    password: SourcePasswordArgs,
    output: PathBuf,
    max_bandwidth: Option<u64>,
) -> anyhow::Result<()> {
    runtime().and_then(|rt| {
        let password = password.credentials().map_err(cmd::UsageError)?;
        let tls = one_side_tls(&tls, Side::Source, from.tls)?;
        rt.block_on(cmd::dump::run(cmd::dump::DumpArgs {
            from: from.endpoint,
            password,
            tls: tls.settings,
            output: output.clone(),
            max_bandwidth,
        }))
        .map(|n| eprintln!("dump: wrote {n} bytes to {}", output.display()))
    })
}

fn restore(
    input: PathBuf,
    target: Address,
    tls: TlsArgs,
    auth: TargetPasswordArgs,
    write: WriteArgs,
    retry_timeout: u64,
) -> anyhow::Result<()> {
    runtime().and_then(|rt| {
        log::to_stderr();
        let auth = auth.credentials().map_err(cmd::UsageError)?;
        let tls = one_side_tls(&tls, Side::Target, target.tls)?;
        rt.block_on(cmd::restore::run(cmd::restore::RestoreArgs {
            input,
            target: target.endpoint,
            auth,
            tls: tls.settings,
            // A file restore has no source to spare: no --max-bandwidth.
            options: write.options(None),
            // Redrawn in place with `\r`: only a terminal shows that as one line.
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            retry_timeout: std::time::Duration::from_secs(retry_timeout),
        }))
        .map(|summary| eprintln!("restore: {summary}"))
    })
}

/// 0 on success, 2 on a usage error, 1 on any other failure (printed).
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", rsm_flags::usage::error_line(e.as_ref()));
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
