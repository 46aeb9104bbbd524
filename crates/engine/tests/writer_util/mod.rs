//! Helpers shared by the writer and restore integration tests: make an RDB with a real
//! server, push it through the loader and the writer, read process memory.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use rsm_client::{ConnectOptions, Endpoint, Side};
use rsm_engine::loader::{LoadError, LoadSummary, Loader, LoaderOptions};
use rsm_engine::EngineOptions;
use rsm_testkit::{Server, ServerOptions};
use rsm_writer::{WriteSummary, Writer, WriterOptions};

/// `SAVE` on a real server and the bytes of the RDB it wrote.
pub fn rdb_of(server: &Server) -> Vec<u8> {
    server.cmd(&[b"SAVE"]);
    std::fs::read(server.dir().join("dump.rdb")).expect("read dump.rdb after SAVE")
}

pub fn endpoint(addr: &str) -> Endpoint {
    addr.parse().expect("testkit address")
}

pub fn writer_options(target: &str, engine: EngineOptions) -> WriterOptions {
    let mut o = WriterOptions::new(
        endpoint(target),
        ConnectOptions::new(Side::Target, None),
        engine,
    );
    o.retry_timeout = Duration::from_secs(20);
    o
}

/// Load `rdb` into the target the way `redis-port restore` does, in 64 KiB chunks.
pub async fn restore_with(
    rdb: &[u8],
    opts: WriterOptions,
) -> (Result<LoadSummary, LoadError>, WriteSummary) {
    restore_chunked(rdb, opts, None).await
}

/// [`restore_with`], writing every value above `big_key_threshold` bytes in chunks of
/// commands (as `--bigkeysize` does).
pub async fn restore_chunked(
    rdb: &[u8],
    opts: WriterOptions,
    big_key_threshold: Option<u64>,
) -> (Result<LoadSummary, LoadError>, WriteSummary) {
    let conflict = opts.engine.conflict;
    let writer = Writer::connect(opts).await.expect("writer connects");
    let mut loader = Loader::new(
        LoaderOptions {
            big_key_threshold,
            conflict,
            own_slots: None,
        },
        writer.clone(),
    );
    let mut result = Ok(());
    for chunk in rdb.chunks(64 * 1024) {
        if let Err(e) = loader.feed(Bytes::copy_from_slice(chunk)).await {
            result = Err(e);
            break;
        }
    }
    let load = match result {
        Ok(()) => loader.finish().await,
        Err(e) => Err(e),
    };
    let _ = writer.clone().finish().await;
    (load, writer.stats())
}

pub async fn restore(rdb: &[u8], target: &str, engine: EngineOptions) -> WriteSummary {
    let (load, w) = restore_with(rdb, writer_options(target, engine)).await;
    let load = load.unwrap_or_else(|e| panic!("restore failed: {e}; writer: {w}"));
    assert!(load.keys > 0, "the RDB had keys");
    w
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A version-matrix binary from `$RSM_TEST_SERVERS` (the directory holding `redis-6.2.14`,
/// …, or its parent); `None` when unset (the default server).
pub fn matrix_bin(label: &str) -> Option<std::path::PathBuf> {
    let dir =
        std::path::PathBuf::from(std::env::var_os("RSM_TEST_SERVERS").filter(|v| !v.is_empty())?);
    for p in [dir.join(label), dir.join("bin").join(label)] {
        if p.is_file() {
            return Some(p);
        }
    }
    panic!(
        "RSM_TEST_SERVERS={} has no `{label}`: run shared/tools/install-test-servers.sh",
        dir.display()
    );
}

pub fn start(bin: Option<std::path::PathBuf>) -> Server {
    Server::start(ServerOptions {
        bin,
        ..Default::default()
    })
}
