//! Where `redis-port`'s `tracing` events go. The engine reports refused writes, retries and
//! reconnects as WARN events; a command that set up no subscriber would drop them, and the
//! operator would see a count without its reasons.
//!
//! - `sync`: everything from INFO up in `--logfile` (appended; its folder created), and
//!   WARN and above on stderr as well, so trouble is seen without opening the file.
//! - `restore`: WARN and above on stderr (a one-shot command has no log file).

use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// WARN and above to stderr.
pub fn to_stderr() {
    let _ = tracing_subscriber::registry()
        .with(stderr_layer())
        .try_init();
}

/// INFO and above to `path`, WARN and above also to stderr. An error names the file.
pub fn to_file(path: &Path) -> anyhow::Result<()> {
    let open = || -> io::Result<std::fs::File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)
    };
    let file = open().map_err(|e| {
        anyhow::anyhow!(
            "cannot open the log file {}: {e} (check --logfile)",
            path.display()
        )
    })?;
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let terminal = io::stderr().is_terminal();
    tracing_subscriber::fmt::layer()
        .with_ansi(terminal)
        .with_target(false)
        .with_writer(Stderr { terminal })
        .with_filter(LevelFilter::WARN)
}

/// stderr that first clears the current line on a terminal, so a warning does not land
/// in the middle of `restore`'s progress line (which is redrawn in place with `\r`).
#[derive(Clone, Copy)]
struct Stderr {
    terminal: bool,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut err = io::stderr().lock();
        if self.terminal {
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        *self
    }
}
