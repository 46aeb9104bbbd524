//! `redis-port`: the per-shard engine as its own command.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rsm_client::{Credentials, Endpoint};

mod cmd;

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
    /// Decode an RDB file into JSON lines (one object per key, plus aux fields and functions).
    Decode {
        /// The RDB file, or - for standard input.
        #[arg(long, short = 'i')]
        input: String,
        /// Where to write the JSON lines (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// Take a snapshot of one source node into an RDB file (as a replica would receive it).
    Dump {
        /// The source node, HOST:PORT.
        #[arg(long, value_parser = parse_endpoint)]
        from: Endpoint,
        /// Source password; `user:password` selects an ACL user.
        #[arg(long, env = "RSM_SOURCE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The RDB file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
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
            output,
        } => runtime().and_then(|rt| {
            rt.block_on(cmd::dump::run(cmd::dump::DumpArgs {
                from,
                password: password.as_deref().map(Credentials::parse),
                output: output.clone(),
            }))
            .map(|n| eprintln!("dump: wrote {n} bytes to {}", output.display()))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
