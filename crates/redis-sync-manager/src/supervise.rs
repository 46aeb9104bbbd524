//! The shards of a run, kept equal to the source's shards while the source changes.
//!
//! At the start, one shard per shard of the plan. When the topology watch hands over a
//! settled topology whose shards differ from the ones being synced (slots moved by a
//! reshard or a Valkey 9 slot migration, a master added or emptied), the supervisor
//! re-plans: the shards whose slot set changed are stopped (their writes drained), and
//! then a shard is started for every new slot set, which copies its slots afresh from
//! the node now serving them (its full sync clears the target's keys in those slots
//! first: see `rsm_writer::sync_marker::begin_copy`). Shards whose slots did not change
//! are not touched, not even paused.
//!
//! Why stop-then-copy, and not a finer handoff of the moved slots alone: the two shards'
//! streams are independent, so the old owner's deletes of moved keys and the new owner's
//! writes reach the target in any order; a copy taken from the new owner after the old
//! shard's writes are drained, followed by the new owner's stream from the copy's
//! offset, is an exact cut with the machinery every full sync already proves (clear,
//! snapshot, markers, floor). It costs a full sync of the shards that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rsm_client::Endpoint;
use rsm_cluster::{display_ranges, Role, Topology};
use rsm_engine::shard::{run_shard_following, ShardError, ShardExit};
use rsm_engine::stop::STOP_BOUND;
use rsm_status::http::ShardList;
use rsm_status::ShardStatus;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use crate::config::SyncConfig;
use crate::discover::PlannedShard;
use crate::run::{follow_options, shard_spec, shard_status};
use crate::watch::Planned;

type Outcome = (usize, Result<ShardExit, ShardError>);

/// One running shard.
struct Running {
    slots: String,
    ranges: Vec<rsm_cluster::SlotRange>,
    status: Arc<ShardStatus>,
    stop: watch::Sender<bool>,
    abort: AbortHandle,
}

/// The shards of the run and what starting one needs.
pub struct Supervisor {
    pub config: SyncConfig,
    pub source_is_cluster: bool,
    pub target_is_cluster: bool,
    pub seeds: Vec<Endpoint>,
    pub state: PathBuf,
    pub permits: Arc<Semaphore>,
    pub shards: ShardList,
    pub planned: Planned,
    running: BTreeMap<usize, Running>,
    tasks: JoinSet<Outcome>,
    next_serial: usize,
    failed: usize,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: SyncConfig,
        source_is_cluster: bool,
        target_is_cluster: bool,
        seeds: Vec<Endpoint>,
        state: PathBuf,
        permits: Arc<Semaphore>,
        shards: ShardList,
        planned: Planned,
    ) -> Supervisor {
        Supervisor {
            config,
            source_is_cluster,
            target_is_cluster,
            seeds,
            state,
            permits,
            shards,
            planned,
            running: BTreeMap::new(),
            tasks: JoinSet::new(),
            next_serial: 0,
            failed: 0,
        }
    }

    /// Start a shard of the plan, with the status the run already shows for it.
    pub fn start(&mut self, s: &PlannedShard, status: Arc<ShardStatus>) {
        let spec = shard_spec(&self.config, s, &self.state);
        let follow = follow_options(&self.config, self.source_is_cluster, s, &self.seeds);
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = self.permits.clone();
        let serial = s.serial;
        let task_status = status.clone();
        let abort = self.tasks.spawn(async move {
            let r = run_shard_following(spec, follow, task_status, permits, stop_rx).await;
            (serial, r)
        });
        self.next_serial = self.next_serial.max(serial + 1);
        self.running.insert(
            serial,
            Running {
                slots: display_ranges(&s.slots),
                ranges: s.slots.clone(),
                status,
                stop: stop_tx,
                abort,
            },
        );
    }

    /// Run until every shard has ended (a stop, or each failed); how many failed.
    pub async fn run(
        mut self,
        mut replan: mpsc::Receiver<Topology>,
        mut stop: watch::Receiver<bool>,
    ) -> usize {
        let mut stopping = false;
        loop {
            tokio::select! {
                done = self.tasks.join_next() => match done {
                    Some(done) => self.ended(done),
                    None => return self.failed,
                },
                Some(topology) = replan.recv(), if !stopping => {
                    self.replan(&topology).await;
                }
                _ = stop.changed(), if !stopping => {
                    if *stop.borrow() {
                        stopping = true;
                        for r in self.running.values() {
                            let _ = r.stop.send(true);
                        }
                    }
                }
            }
        }
    }

    /// A shard's task ended: a failure is said and counted (the others go on).
    fn ended(&mut self, done: Result<Outcome, tokio::task::JoinError>) {
        match done {
            Ok((serial, result)) => {
                let Some(r) = self.running.remove(&serial) else {
                    return;
                };
                if let Err(e) = result {
                    self.failed += 1;
                    eprintln!("shard {serial} ({}) failed: {e}", r.status.source_now());
                }
            }
            // Aborted (a retired shard that would not stop) or panicked.
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                self.failed += 1;
                eprintln!("a shard crashed: {e}");
            }
        }
    }

    /// Make the running shards those of `topology`: retire the shards whose slots
    /// changed, then start one for every new slot set.
    async fn replan(&mut self, topology: &Topology) {
        let source_opts = crate::discover::opts(&self.config.source_connect());
        let role: Role = self.config.sync_role;
        let mut fresh =
            crate::discover::plan_shards(topology, &self.config.from, &source_opts, role).await;
        let wanted: BTreeSet<String> = fresh.iter().map(|s| display_ranges(&s.slots)).collect();
        let have: BTreeSet<String> = self.running.values().map(|r| r.slots.clone()).collect();
        let retire: Vec<usize> = self
            .running
            .iter()
            .filter(|(_, r)| !wanted.contains(&r.slots))
            .map(|(serial, _)| *serial)
            .collect();
        fresh.retain(|s| !have.contains(&display_ranges(&s.slots)));
        for serial in &retire {
            if let Some(r) = self.running.get(serial) {
                tracing::warn!(shard = serial, slots = %r.slots, "TOPOLOGY: the source's shards changed: this shard's sync ends (its slots are copied again by the shards now serving them)");
            }
        }
        let retired_slots: Vec<Vec<rsm_cluster::SlotRange>> = retire
            .iter()
            .filter_map(|serial| self.running.get(serial))
            .map(|r| r.ranges.clone())
            .collect();
        self.retire(&retire).await;
        for slots in &retired_slots {
            self.retire_record(slots).await;
        }
        let mut statuses = Vec::new();
        for s in &mut fresh {
            s.serial = self.next_serial;
            self.next_serial += 1;
            tracing::warn!(shard = s.serial, source = %s.node, slots = %display_ranges(&s.slots), "TOPOLOGY: the source's shards changed: new shard, copying its slots from the node now serving them");
            statuses.push(shard_status(s));
        }
        // One step for the readers: never a moment with neither the old shards nor the
        // new ones (which are not ready until their copy is in).
        self.shards.replace(&retire, statuses.clone());
        *self.planned.lock().unwrap_or_else(|p| p.into_inner()) = wanted;
        for (s, status) in fresh.iter().zip(statuses) {
            self.start(s, status);
        }
    }

    /// Take the resume point off a retired shard's record in the target (see
    /// `rsm_writer::sync_marker::retire_record`). Tried until it works (a stop that
    /// waits too long ends the process anyway): starting the new shards first could let a
    /// later copy resume over their writes.
    async fn retire_record(&self, slots: &[rsm_cluster::SlotRange]) {
        let connect = self.config.target_connect();
        let source = String::new();
        let scope = rsm_writer::sync_marker::CopyScope {
            target: &self.config.target,
            connect: &connect,
            cluster: self.target_is_cluster,
            slots,
            target_db: self.config.engine.target_db,
            source: &source,
        };
        let mut pause = Duration::from_millis(200);
        loop {
            match rsm_writer::sync_marker::retire_record(&scope).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(slots = %display_ranges(slots), error = %e, "cannot update a retired shard's record in the target; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Stop these shards and wait until they have ended: none of their writes may land
    /// after the new owners' copies begin. One that does not end in time is aborted.
    async fn retire(&mut self, serials: &[usize]) {
        let mut left: BTreeSet<usize> = serials.iter().copied().collect();
        for serial in &left {
            if let Some(r) = self.running.get(serial) {
                let _ = r.stop.send(true);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_BOUND + Duration::from_secs(5);
        while !left.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => match &done {
                    // A retired shard's stop is its end, not a failure to report.
                    Ok((serial, _)) if left.remove(serial) => {
                        self.running.remove(serial);
                    }
                    _ => self.ended(done),
                },
                Ok(None) => break,
                Err(_) => {
                    for serial in &left {
                        if let Some(r) = self.running.remove(serial) {
                            tracing::warn!(
                                shard = serial,
                                "a retired shard did not stop in time: aborted"
                            );
                            r.abort.abort();
                        }
                    }
                    break;
                }
            }
        }
    }
}
