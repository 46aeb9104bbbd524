//! `redis-sync-manager`: parse and validate the command line, then hand over.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod config;

use cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let config = match cli.command {
        Some(command) => match command {},
        None => match cli.sync.into_config() {
            Ok(config) => config,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
    };
    let _ = config;
    ExitCode::SUCCESS
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
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("{first} (see --help)");
            ExitCode::from(2)
        }
    }
}
