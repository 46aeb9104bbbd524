//! `redis-port dump`: take a snapshot of one source node into an RDB file, by
//! asking for a full sync as a replica and keeping only the snapshot.
//!
//! The file is written under a temporary name and renamed when complete, so
//! a failed dump never leaves a truncated file under the requested name.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rsm_client::{ConnectOptions, Credentials, Endpoint, Side, TlsSettings};
use rsm_replica::handshake::{handshake, read_rdb_framing, SyncStart};
use rsm_replica::link::{Link, LinkCounters};
use rsm_replica::spool::{Segment, Spool};
use tokio::sync::watch;

pub struct DumpArgs {
    pub from: Endpoint,
    pub password: Option<Credentials>,
    pub tls: Option<Arc<TlsSettings>>,
    pub output: PathBuf,
    /// `--max-bandwidth` in bytes per second.
    pub max_bandwidth: Option<u64>,
}

/// Returns the number of snapshot bytes written.
pub async fn run(args: DumpArgs) -> Result<u64> {
    let source =
        ConnectOptions::new(Side::Source, args.password.clone()).with_tls(args.tls.clone());
    let (mut conn, info, start) = handshake(&args.from, &source, None).await?;
    let SyncStart::Full { replid, offset } = start else {
        bail!(
            "source {} offered a partial sync to a fresh replica",
            args.from
        );
    };
    eprintln!(
        "dump: {} ({}) is sending its snapshot (replid {replid}, offset {offset})",
        args.from,
        info.describe()
    );
    let framing = read_rdb_framing(&mut conn).await?;
    let tmp = args.output.with_extension("rdb.tmp");
    let spool_path = args.output.with_extension("spill");
    // The dump only keeps the snapshot; the memory limit just bounds what the
    // stream adds before we stop reading.
    let spool = Arc::new(Spool::new(
        spool_path,
        64 << 20,
        Arc::new(AtomicU64::new(0)),
    ));
    let counters = Arc::new(LinkCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let link = Link::spawn(
        conn,
        Some(framing),
        spool.clone(),
        counters.clone(),
        Arc::new(AtomicU64::new(0)),
        args.max_bandwidth
            .map(|r| Arc::new(rsm_client::throttle::Throttle::new(r))),
        stop_rx,
    );

    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut written = 0u64;
    loop {
        match spool.pop().await? {
            Segment::Rdb(bytes) => {
                file.write_all(&bytes)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                written += bytes.len() as u64;
            }
            Segment::RdbEnd => break,
            Segment::Stream(_) => bail!("stream data before the end of the snapshot"),
            Segment::Closed(reason) => {
                let _ = std::fs::remove_file(&tmp);
                bail!("the source closed the link after {written} snapshot bytes: {reason}");
            }
        }
    }
    let _ = stop_tx.send(true);
    link.abort();
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &args.output).with_context(|| {
        format!(
            "cannot rename {} to {}",
            tmp.display(),
            args.output.display()
        )
    })?;
    let total = counters.rdb_total.load(Ordering::Relaxed);
    if total != 0 && total != written {
        bail!("snapshot size mismatch: the source announced {total} bytes, got {written}");
    }
    Ok(written)
}
