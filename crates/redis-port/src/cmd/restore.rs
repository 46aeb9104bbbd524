//! `redis-port restore`: load an RDB file (or stdin) into a target through the engine's
//! loader and writer, with a progress line on stderr and a summary at the end.
//!
//! A file is read twice: a first pass decodes it to the end and checks its CRC64 before
//! anything is written, so a corrupt file writes nothing (and cannot leave a damaged value
//! in the target). Stdin cannot be read twice: its keys are written as they arrive, and a
//! bad checksum is known only at the end. Bytes after the end of the RDB are ignored with a
//! warning, as `redis-server` ignores them.
//!
//! Exit: `Ok` only when every key was written, skipped by policy, filtered or expired; any
//! failed key, a key conflict or a lost target is an error whose message carries the number
//! of keys the target acknowledged (counted after the writer was flushed, so none is missed).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use rsm_client::{ConnectOptions, Credentials, Endpoint, Side, TlsSettings};
use rsm_engine::loader::{load_from, open_input, LoadSummary, Loader, LoaderOptions};
use rsm_engine::EngineOptions;
use rsm_rdb::{DecodeOptions, Decoder, RdbError, Trailing};
use rsm_writer::{WriteSummary, Writer, WriterOptions};

/// Validated flags of `restore`.
#[derive(Debug, Clone)]
pub struct RestoreArgs {
    /// The RDB file, or `-` for stdin.
    pub input: PathBuf,
    /// The target (any node of a target cluster).
    pub target: Endpoint,
    /// `--auth`.
    pub auth: Option<Credentials>,
    /// `--target-tls` and friends, or a `rediss://` target.
    pub tls: Option<std::sync::Arc<TlsSettings>>,
    /// The write flags (`--filterkey`, `--targetdb`, the conflict policy,
    /// `--bigkeysize`, `--max-ops`), as every engine takes them.
    pub options: EngineOptions,
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
    let engine = args.options.clone();
    if args.input != Path::new("-") {
        check_input(&args.input).await?;
    }
    let (input, total) = open_input(&args.input)
        .await
        .with_context(|| format!("cannot open --input={}", args.input.display()))?;
    let writer = connect_writer(&args, engine).await?;
    let loader = Loader::new(
        LoaderOptions {
            big_key_threshold: None,
            conflict: args.options.conflict,
            own_slots: None,
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
    // Wait for the target's answers to everything handed over before reading the counters:
    // a count taken earlier misses the writes still in flight. (A stopped writer answers at
    // once; its error is the one `finish` returns.)
    let _ = writer.flush().await;
    let written = writer.stats();
    let finished = writer.finish().await;
    let stopped = |e: &dyn std::error::Error| {
        anyhow::anyhow!(
            "restore stopped after writing {} keys ({written}): {}",
            written.keys_written,
            causes(e)
        )
    };
    let (load, written) = match (result, finished) {
        (Ok((load, _)), Ok(w)) => (load, w),
        (Err(e), _) => return Err(stopped(&e)),
        (Ok(_), Err(e)) => return Err(stopped(&e)),
    };
    let summary = ExitSummary { load, written };
    if written.failed() > 0 {
        anyhow::bail!(
            "{} keys could not be written (the target's reasons are in the warnings above); \
             {} keys written",
            written.failed(),
            written.keys_written
        );
    }
    Ok(summary)
}

/// The first pass over a file ([`check_file`], on a blocking thread): its warnings
/// logged, and an error, before anything is written, when the file cannot be restored.
async fn check_input(input: &Path) -> anyhow::Result<()> {
    let path = input.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || check_file(&path))
        .await
        .context("the checksum pass stopped")?;
    match checked {
        Ok((trailing, key_meta)) => {
            if let Some(t) = trailing {
                tracing::warn!(
                    offset = t.offset,
                    bytes = t.len,
                    "trailing bytes after the end of the RDB ignored, as redis-server ignores them"
                );
            }
            if key_meta > 0 {
                tracing::warn!(
                    classes = key_meta,
                    "module key metadata (KEY_META, Redis 8.6+) that its modules allow to drop is not written: only the module could write it"
                );
            }
            Ok(())
        }
        Err(CheckError::Io(e)) => {
            anyhow::bail!("cannot read --input={}: {e}", input.display())
        }
        // A well-formed file of a format this version refuses is not "invalid".
        Err(CheckError::Rdb(
            e @ (RdbError::UnsupportedVersion { .. }
            | RdbError::UnsupportedType { .. }
            | RdbError::RequiredKeyMeta { .. }
            | RdbError::CompressedEnvelope { .. }),
        )) => anyhow::bail!(
            "--input={} cannot be restored: {e}; nothing was written",
            input.display()
        ),
        Err(CheckError::Rdb(e)) => anyhow::bail!(
            "--input={} is not a valid RDB: {e}; nothing was written",
            input.display()
        ),
    }
}

/// The writer to `--target`, with the restore's retry timeout.
async fn connect_writer(args: &RestoreArgs, engine: EngineOptions) -> anyhow::Result<Writer> {
    let mut opts = WriterOptions::new(
        args.target.clone(),
        ConnectOptions::new(Side::Target, args.auth.clone()).with_tls(args.tls.clone()),
        engine,
    );
    opts.retry_timeout = args.retry_timeout;
    Writer::connect(opts)
        .await
        .with_context(|| format!("cannot start writing to --target={}", args.target))
}

#[derive(Debug)]
enum CheckError {
    Io(std::io::Error),
    Rdb(RdbError),
}

/// The first pass over a file: decode it to the end, which verifies its structure and its
/// CRC64, and say whether bytes follow the end and how many droppable module key-metadata
/// classes it holds. Memory stays bounded as in the loader:
/// values are sliced out of the read chunk (up to 1 MiB each, bigger ones are walked as
/// elements) and dropped with the events after each chunk.
fn check_file(path: &Path) -> Result<(Option<Trailing>, u64), CheckError> {
    const CHUNK: usize = 1 << 20;
    let mut file = std::fs::File::open(path).map_err(CheckError::Io)?;
    let mut decoder = Decoder::new(DecodeOptions::raw_with_threshold(CHUNK as u64));
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        buf.resize(CHUNK, 0);
        let n = file.read(&mut buf).map_err(CheckError::Io)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        decoder
            .feed(buf.split().freeze(), &mut events)
            .map_err(CheckError::Rdb)?;
        events.clear();
    }
    decoder.finish().map_err(CheckError::Rdb)?;
    Ok((decoder.trailing(), decoder.key_meta_classes()))
}

/// An error and its causes on one line, leaving out a cause whose text the line already
/// holds (`LoadError` shows its RDB error and also returns it as its source).
fn causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}
