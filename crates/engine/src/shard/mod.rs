//! One shard's sync, end to end: handshake with the source node, snapshot
//! into the target, then the command stream, for as long as it runs.
//!
//! The loop survives link drops: it reconnects with `PSYNC replid applied+1`
//! (from the floor the target records for the shard; the local checkpoint only
//! informs), and only falls back to a full sync when the source refuses to
//! continue or the target records nothing to continue from. At most
//! `--sync-parallel` shards hold a full-sync permit at once; a shard that
//! continues needs none.
//!
//! A shard of a source cluster is its slots, not a node: before reconnecting,
//! the loop asks the source where those slots are served now
//! ([`rsm_replica::follow`]) and, after a failover, continues on the new
//! node with the same PSYNC (the promoted replica knows the old history).

mod publish;
mod session;
mod timing;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rsm_client::{
    ConnectOptions, Connection, Credentials, Endpoint, ServerError, Side, TlsSettings,
};
use rsm_cluster::SlotRange;
use tokio::sync::{watch, Semaphore};

use crate::loader::LoadError;
use rsm_command::table::CommandTable;
use rsm_replica::checkpoint::CheckpointFile;
use rsm_replica::follow::{Follow, FollowError, FollowOptions};
use rsm_replica::ReplicaError;
use rsm_status::{Phase, ShardStatus};
use rsm_writer::EngineOptions;
use rsm_writer::WriteError;
use session::{sync_once, Context};

/// Memory the spool may use before it spills to disk, unless the spec says otherwise;
/// beyond it the snapshot waits in the page cache (the spill file), not in the process.
/// A diskless source sends faster than a target loads, so the spool is full most of a
/// full sync: at 32 MiB, three shards peaked at 269 MiB on the performance issue's
/// dataset, at 16 MiB at 174-197 MiB, and no slower (5.88 s / 5.90 s).
pub const DEFAULT_SPOOL_MEMORY: usize = 16 << 20;
/// Pause before reconnecting after a failure; doubles up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// The longest pause: a source or target down for long is asked twice a minute, not
/// hammered.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything one shard's engine needs.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// The shard's number: it names the checkpoint and the spill file, and labels the
    /// shard's logs and metrics.
    pub serial: usize,
    /// The node the shard starts on; after a source failover the loop follows the
    /// shard's slots to another node.
    pub source: Endpoint,
    pub source_credentials: Option<Credentials>,
    /// The target, or any node of a target cluster.
    pub target: Endpoint,
    /// Other nodes of the target to reach it through when `target` is gone for good;
    /// shared by every shard, and grown by what their writers learn.
    pub target_seeds: rsm_client::Seeds,
    pub target_credentials: Option<Credentials>,
    /// TLS for the source side's connections (every node learnt too); plain when `None`.
    pub source_tls: Option<Arc<TlsSettings>>,
    /// TLS for the target side's connections.
    pub target_tls: Option<Arc<TlsSettings>>,
    /// What every shard of the run shares: the filter, the conflict policy, the target db,
    /// the rate limits.
    pub options: EngineOptions,
    /// Where the checkpoint and any spill file live.
    pub state_dir: PathBuf,
    /// Bytes the spool keeps in memory before it spills to a file in `state_dir`.
    pub spool_memory: usize,
}

impl ShardSpec {
    /// The options every source connection of this shard starts from.
    pub fn source_connect(&self) -> ConnectOptions {
        ConnectOptions::new(Side::Source, self.source_credentials.clone())
            .with_tls(self.source_tls.clone())
    }

    /// The options every target connection of this shard starts from.
    pub fn target_connect(&self) -> ConnectOptions {
        ConnectOptions::new(Side::Target, self.target_credentials.clone())
            .with_tls(self.target_tls.clone())
            .with_seeds(self.target_seeds.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The source side: connecting, the handshake, the source's refusal.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The target side: a write refused or lost, or the writer stopped.
    #[error(transparent)]
    Write(#[from] rsm_writer::WriteError),
    /// The session's rules broken: snapshot bytes after its end, a second end, or a target
    /// that acknowledged less than was sent at the end of the snapshot or at a flush.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A key conflict in slots the target held keys in before this sync: the operator's
    /// data, which only the conflict policy may replace.
    #[error("{0} (the target already held keys in this shard's slots before this sync began, so they are not this sync's own)")]
    PreexistingKey(WriteError),
    /// The stream could not be decoded (bad RESP, something not a command, a bad
    /// `SELECT`): the offsets after it cannot be trusted, so the shard stops.
    #[error("replication stream: {0}")]
    Stream(#[from] rsm_replica::stream::StreamError),
    /// The state folder (checkpoint, spill file) could not be written or read.
    #[error("local state in {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The replication link ended, or the session had to end where it stood: the next
    /// session continues from the floor.
    #[error("replication link lost: {0}")]
    LinkLost(String),
    /// The snapshot could not be decoded or written.
    #[error("snapshot: {0}")]
    Load(#[from] LoadError),
}

impl ShardError {
    /// Errors that a reconnect can cure; the rest stop the shard.
    pub fn is_retryable(&self) -> bool {
        match self {
            ShardError::LinkLost(_) => true,
            ShardError::Replica(ReplicaError::Client(e)) => e.is_transient(),
            // A source loading its dataset answers once it is done; other refusals (ACL,
            // auth, PSYNC disabled) need the operator.
            ShardError::Replica(ReplicaError::Refused { kind, .. }) => {
                *kind == ServerError::Loading
            }
            // No answer to PSYNC in time (a BGSAVE that took too long): asked again.
            ShardError::Replica(ReplicaError::Stalled(_)) => true,
            ShardError::Write(e) => e.is_retryable(),
            ShardError::Load(LoadError::Write(e)) => e.is_retryable(),
            _ => false,
        }
    }

    /// Errors that another node of the shard may not have: a replica whose
    /// master link is down refuses PSYNC, but the shard may live on elsewhere.
    pub fn is_cured_by_following(&self) -> bool {
        matches!(
            self,
            ShardError::Replica(ReplicaError::Refused {
                kind: ServerError::NoMasterLink,
                ..
            })
        )
    }
}

/// How a run of the shard ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardExit {
    /// On request, with what is durable recorded in the target and the checkpoint.
    Stopped,
}

/// Run until `shutdown` turns true or an error needs the operator. Follows
/// failovers of a cluster source, learning the shard from its first node.
pub async fn run_shard(
    spec: ShardSpec,
    status: Arc<ShardStatus>,
    full_sync_permits: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) -> Result<ShardExit, ShardError> {
    run_shard_following(
        spec,
        FollowOptions::default(),
        status,
        full_sync_permits,
        shutdown,
    )
    .await
}

/// [`run_shard`] with what the caller knows of the shard: its slots, the
/// role to sync from after a failover, more nodes to ask.
///
/// Each turn of the loop is one session. A stop is looked at before every connection,
/// so one asked during a back-off ends the shard there. The source is relocated only
/// after an interruption (the first connection goes where the plan said), and the
/// command table is read once: a failover stays in the same cluster, whose nodes answer
/// `COMMAND` alike. A session ends `Ok` only on a stop; an error that needs the operator
/// stops the shard with its floor where the session's close left it, so that a run after
/// the fix continues from there.
pub async fn run_shard_following(
    spec: ShardSpec,
    follow_options: FollowOptions,
    status: Arc<ShardStatus>,
    full_sync_permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ShardExit, ShardError> {
    let mut spec = spec;
    // Absolute from here on: if the working directory is removed while the sync runs,
    // the folder is made again where it was, not looked for under a directory now gone.
    if let Ok(dir) = std::path::absolute(&spec.state_dir) {
        spec.state_dir = dir;
    }
    let checkpoint = checkpoint_file(&spec)?;
    let mut backoff = BACKOFF_START;
    let mut table: Option<Arc<CommandTable>> = None;
    // The node synced from now; changes when the source fails over.
    let mut source = spec.source.clone();
    let mut follow: Option<Follow> = None;
    let mut follow_known = follow_options.disabled;
    let mut relocate = false;
    loop {
        if *shutdown.borrow() {
            status.set_phase(Phase::Stopped);
            return Ok(ShardExit::Stopped);
        }
        if !follow_known {
            // Until the first node answers, the shard cannot be learnt; the
            // next reconnect tries again.
            if let Some(f) = learn_follow(&spec, &source, &follow_options).await {
                follow = f;
                follow_known = true;
            }
        }
        if relocate && !relocated(&spec, &status, follow.as_mut(), &mut source, backoff).await {
            pause(backoff, &mut shutdown).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        let table = match &table {
            Some(t) => Arc::clone(t),
            None => table
                .insert(Arc::new(command_table(&spec, &source).await))
                .clone(),
        };
        let place = Place::new(&source, follow.as_ref());
        let began = std::time::Instant::now();
        let cx = Context {
            spec: &spec,
            place: &place,
            status: &status,
            checkpoint: &checkpoint,
            permits: &full_sync_permits,
            table: &table,
            shutdown: shutdown.clone(),
        };
        match sync_once(cx).await {
            Ok(()) => {
                status.set_phase(Phase::Stopped);
                return Ok(ShardExit::Stopped);
            }
            Err(e) if e.is_retryable() || (follow.is_some() && e.is_cured_by_following()) => {
                // A session that ran for a while was no failure to back off from.
                if began.elapsed() > BACKOFF_MAX * 2 {
                    backoff = BACKOFF_START;
                }
                interrupted(&spec, &status, &source, &e, backoff);
                relocate = true;
                pause(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                tracing::error!(shard = spec.serial, source = %source, error = %e, "shard stopped");
                status.set_error(Some(e.to_string()));
                status.set_phase(Phase::Failed);
                return Err(e);
            }
        }
    }
}

/// After an interruption: find the node that serves the shard now (a failover may have
/// moved it). False while none does (the caller waits and asks again).
async fn relocated(
    spec: &ShardSpec,
    status: &ShardStatus,
    follow: Option<&mut Follow>,
    source: &mut Endpoint,
    backoff: Duration,
) -> bool {
    let Some(f) = follow else {
        return true;
    };
    match relocate_source(spec, status, f, source).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(shard = spec.serial, source = %source, error = %e, retry_in_ms = backoff.as_millis() as u64, "waiting for the source to fail over");
            status.set_error(Some(e.to_string()));
            status.set_phase(Phase::Reconnecting);
            false
        }
    }
}

/// The shard's slots, learnt from its first node: `None` while that node does not
/// answer, `Some(None)` for a standalone source (or following turned off).
async fn learn_follow(
    spec: &ShardSpec,
    source: &Endpoint,
    options: &FollowOptions,
) -> Option<Option<Follow>> {
    let f = Follow::learn(source, spec.source_connect(), options)
        .await
        .ok()?;
    if let Some(f) = &f {
        tracing::info!(shard = spec.serial, slots = %f.slots_display(), "following the shard's slots across source failovers");
    }
    Some(f)
}

/// The shard's checkpoint file, in a state folder that exists from here on: the spool
/// spills and the checkpoint is written there, and neither may find it missing.
fn checkpoint_file(spec: &ShardSpec) -> Result<CheckpointFile, ShardError> {
    rsm_replica::checkpoint::create_state_dir(&spec.state_dir)
        .map_err(state_err(&spec.state_dir))?;
    Ok(CheckpointFile::new(
        spec.state_dir
            .join(format!("shard-{}.checkpoint", spec.serial)),
    ))
}

/// Say that the sync was interrupted and will reconnect after `backoff`.
fn interrupted(
    spec: &ShardSpec,
    status: &ShardStatus,
    source: &Endpoint,
    e: &ShardError,
    backoff: Duration,
) {
    tracing::warn!(shard = spec.serial, source = %source, error = %e, retry_in_ms = backoff.as_millis() as u64, "sync interrupted; reconnecting");
    status.set_error(Some(e.to_string()));
    status.set_phase(Phase::Reconnecting);
    status.counters.reconnects.fetch_add(1, Ordering::Relaxed);
}

/// Wait `backoff`, or less if a stop is asked for.
async fn pause(backoff: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(backoff) => {}
        _ = shutdown.changed() => {}
    }
}

/// Before reconnecting: where are the shard's slots served now? Moves `source` after a
/// failover; `Err` while the master is failing and no replica has taken over yet.
async fn relocate_source(
    spec: &ShardSpec,
    status: &ShardStatus,
    follow: &mut Follow,
    source: &mut Endpoint,
) -> Result<(), FollowError> {
    match follow.locate(source).await {
        Ok(loc) if loc.node != *source => {
            let reason = match &loc.note {
                Some(note) => format!("the source failed over; {note}"),
                None => "the source failed over".to_string(),
            };
            tracing::warn!(shard = spec.serial, from = %source, to = %loc.node, role = %loc.role, master = %loc.master, slots = %follow.slots_display(), note = loc.note.as_deref().unwrap_or(""), "SOURCE MOVED: the shard's slots are served elsewhere now; continuing there");
            status.set_source(&loc.node.to_string(), &reason);
            // The same cluster answers COMMAND the same; no re-read.
            *source = loc.node;
            Ok(())
        }
        Ok(loc) => {
            if let Some(note) = loc.note {
                tracing::warn!(shard = spec.serial, source = %source, "{note}");
            }
            Ok(())
        }
        // Reconnecting to a failing master would only fail again: wait for the promotion.
        Err(e @ FollowError::MasterFailing { .. }) => Err(e),
        Err(e) => {
            // Try the node we know; its own error is clearer.
            tracing::warn!(shard = spec.serial, source = %source, error = %e, "cannot read the source topology");
            Ok(())
        }
    }
}

/// Where this connection's sync reads from.
struct Place<'a> {
    /// The node synced from on this connection.
    source: &'a Endpoint,
    /// The shard's slots in a cluster source, for the checkpoint.
    slots: Option<String>,
    /// The same as ranges; every slot for a standalone source.
    ranges: Vec<SlotRange>,
    /// Slot by slot, whether it is the shard's: what the stream may write (`None`: every
    /// slot, a standalone source).
    own: Option<Arc<Vec<bool>>>,
}

impl<'a> Place<'a> {
    /// The shard's slots from `follow`; without it (a standalone source, or following
    /// turned off) every slot, and none named in the checkpoint.
    fn new(source: &'a Endpoint, follow: Option<&Follow>) -> Place<'a> {
        Place {
            source,
            slots: follow.map(Follow::slots_display),
            ranges: follow.map_or_else(|| vec![SlotRange::full()], |f| f.slots().to_vec()),
            own: follow.map(|f| {
                let mut own = vec![false; usize::from(rsm_cluster::SLOT_COUNT)];
                for r in f.slots() {
                    for slot in r.start().index()..=r.end().index() {
                        if let Some(o) = own.get_mut(slot) {
                            *o = true;
                        }
                    }
                }
                Arc::new(own)
            }),
        }
    }
}

/// The source's own command table (`COMMAND`), over the built-in one; the
/// built-in one alone if the source will not say (an ACL without +command).
async fn command_table(spec: &ShardSpec, source: &Endpoint) -> CommandTable {
    let opts = spec.source_connect();
    let reply = match Connection::connect(source, &opts).await {
        Ok(mut conn) => conn.request(&["COMMAND"]).await.ok(),
        Err(_) => None,
    };
    match reply.as_ref().map(CommandTable::for_source) {
        Some(Ok(table)) => table,
        Some(Err(e)) => {
            tracing::warn!(shard = spec.serial, error = %e, "cannot use the source's COMMAND reply; using the built-in command table");
            CommandTable::builtin()
        }
        None => {
            tracing::warn!(
                shard = spec.serial,
                "the source did not answer COMMAND; using the built-in command table"
            );
            CommandTable::builtin()
        }
    }
}

/// An I/O error of the state folder, naming the path the operator must look at.
fn state_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::State {
        path: path.display().to_string(),
        source,
    }
}
