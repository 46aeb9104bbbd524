//! `redis-port restore`: load an RDB file (or stdin) into a target through the engine's
//! loader and writer, with a progress line on stderr and a summary at the end.
//!
//! Exit: `Ok` only when every key was written, skipped by policy, filtered or expired; any
//! failed key, a key conflict or a lost target is an error whose message carries the count
//! of keys written so far.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rsm_client::{ConnectOptions, Credentials, Endpoint, Side};
use rsm_engine::loader::{load_from, open_input, LoadSummary, Loader, LoaderOptions};
use rsm_engine::writer::{WriteSummary, Writer, WriterOptions};
use rsm_engine::{ConflictPolicy, EngineOptions, KeyPrefixes};

/// Validated flags of `restore`.
#[derive(Debug, Clone)]
pub struct RestoreArgs {
    /// The RDB file, or `-` for stdin.
    pub input: PathBuf,
    /// The target (any node of a target cluster).
    pub target: Endpoint,
    /// `--auth`.
    pub auth: Option<Credentials>,
    /// `--filterkey="p1|p2"` (empty = keep everything).
    pub filter: KeyPrefixes,
    /// `--targetdb`.
    pub target_db: Option<u32>,
    /// `--rewrite` / `--skip-existing` (default: stop on an existing key).
    pub conflict: ConflictPolicy,
    /// `--bigkeysize` in bytes.
    pub big_key_size: Option<u64>,
    /// Print the progress line (on by default; off for tests and pipes if wanted).
    pub progress: bool,
    /// How long a target that stopped answering is retried before giving up.
    pub retry_timeout: Duration,
}

/// What a finished restore did.
#[derive(Debug, Clone)]
pub struct ExitSummary {
    pub load: LoadSummary,
    pub written: WriteSummary,
}

impl std::fmt::Display for ExitSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored {} keys read from {} bytes: {}",
            self.load.keys, self.load.bytes, self.written
        )
    }
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<ExitSummary> {
    let engine = EngineOptions {
        filter: args.filter.clone(),
        target_db: args.target_db,
        conflict: args.conflict,
        big_key_size: args.big_key_size,
    };
    let (input, total) = open_input(&args.input)
        .await
        .with_context(|| format!("cannot open --input={}", args.input.display()))?;
    let mut opts = WriterOptions::new(
        args.target.clone(),
        ConnectOptions::new(Side::Target, args.auth.clone()),
        engine,
    );
    opts.retry_timeout = args.retry_timeout;
    let writer = Writer::connect(opts)
        .await
        .with_context(|| format!("cannot start writing to --target={}", args.target))?;
    let loader = Loader::new(
        LoaderOptions {
            big_key_threshold: None,
            conflict: args.conflict,
        },
        writer.clone(),
    );
    let show = args.progress;
    let result = load_from(input, total, loader, Duration::from_secs(1), |p| {
        if show {
            eprint!("\r\x1b[2K{p}");
        }
    })
    .await;
    if show {
        eprintln!();
    }
    let written = writer.stats();
    let finished = writer.finish().await;
    let (load, written) = match (result, finished) {
        (Ok((load, _)), Ok(w)) => (load, w),
        (Err(e), _) => {
            return Err(anyhow::Error::new(e).context(format!(
                "restore stopped after writing {} keys ({written})",
                written.keys_written
            )))
        }
        (Ok(_), Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "restore stopped after writing {} keys ({written})",
                written.keys_written
            )))
        }
    };
    let summary = ExitSummary { load, written };
    if written.failed() > 0 {
        anyhow::bail!(
            "{} keys could not be written (see the log above); {} keys written",
            written.failed(),
            written.keys_written
        );
    }
    Ok(summary)
}
