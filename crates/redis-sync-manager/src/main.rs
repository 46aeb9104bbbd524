//! `redis-sync-manager`: parse and validate the command line, discover the
//! source, print the plan, then run one engine per shard.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod config;
mod discover;
mod logs;
mod plan;
mod preflight;
mod run;
mod supervise;
mod verify;
mod watch;

use cli::Cli;
use config::SyncConfig;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let config = match cli.command {
        Some(command) => match command {
            cli::Command::Cleanup(args) => return cleanup(args),
            cli::Command::Verify(args) => {
                return match args.into_options() {
                    Ok((opts, report, warnings)) => {
                        for w in warnings {
                            eprintln!("{w}");
                        }
                        verify::run_command(opts, report)
                    }
                    Err(message) => {
                        eprintln!("error: {message}");
                        ExitCode::from(2)
                    }
                };
            }
        },
        None => match cli.sync.into_config() {
            Ok(config) => config,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", rsm_flags::usage::error_line(e.as_ref()));
            let usage = e
                .downcast_ref::<discover::DiscoverError>()
                .is_some_and(discover::DiscoverError::is_usage);
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// `cleanup`: remove the progress markers from the target.
fn cleanup(args: cli::CleanupArgs) -> ExitCode {
    let (credentials, tls) = match args
        .passwords
        .credentials()
        .and_then(|(_, target)| args.target_tls().map(|tls| (target, tls)))
    {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = &tls.warning {
        eprintln!("{w}");
    }
    let connect = rsm_client::ConnectOptions::new(rsm_client::Side::Target, credentials)
        .with_tls(tls.settings);
    let target = args.target.endpoint;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let removed = runtime.block_on(rsm_writer::sync_marker::remove_progress_keys(
        &target, &connect,
    ));
    match removed {
        Ok(n) => {
            println!("removed {n} progress keys (the tool's own __rsm: keys) from {target}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cleanup of {target}: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: SyncConfig) -> anyhow::Result<ExitCode> {
    if !config.dry_run {
        logs::init(&config.logfile, true).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the log file {}: {e} (check --logfile)",
                config.logfile.display()
            )
        })?;
    }
    for w in &config.tls_warnings {
        if config.dry_run {
            eprintln!("{w}");
        } else {
            // WARN reaches the console as well as the log.
            tracing::warn!("{w}");
        }
    }
    let plan = discover::discover(
        &config.from,
        &config.source_connect(),
        &config.target,
        &config.target_connect(),
        config.sync_role,
        config.engine.target_db,
        &config.engine.filter,
    )
    .await?;
    print!(
        "{}",
        plan::render(&plan, config.sync_parallel, config.engine.big_key_size)
    );
    if config.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    run::run(config, plan).await
}

/// Print clap's verdict as one line (plus the hint to --help) and exit 2;
/// `--help` and `--version` print in full and exit 0.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", rsm_flags::usage::clap_line(&e));
            ExitCode::from(2)
        }
    }
}
