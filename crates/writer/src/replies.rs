//! What the writer does with each reply: settle the request, follow a redirect, apply the
//! conflict policy, rebuild a refused payload, or queue the request for another try in its
//! slot's order (and give it up once its deadline has passed).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsm_client::{ClientError, ServerError};
use rsm_resp::Frame;

use super::dispatch::{node_at, node_at_mut};
use super::node::Answer;
use super::order::backoff;
use super::pipeline::Pipeline;
use super::progress::{failed_key, marker_value, parse_marker};
use super::request::{judge, restore_parts, Body, Req, Verdict};
use super::{show_key, WriteError};
use rsm_command::ConflictPolicy;

/// Why a request is tried again.
pub(super) enum Cause {
    Redirect,
    Server(String),
    Connection(String),
    Unassigned,
}

impl Pipeline {
    pub(super) fn on_reply(&mut self, node: usize, gen: u64, r: Result<Frame, ClientError>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.gen != gen {
            return;
        }
        let frame = match r {
            Ok(f) => f,
            Err(e) => return self.node_lost(node, e.to_string()),
        };
        self.shared.stats.answers.fetch_add(1, Ordering::Relaxed);
        if !n.answered {
            // Before the watermark can move over this reply's write.
            n.answered = true;
            if let Ok(mut a) = self.shared.answered_by.lock() {
                a.push(n.endpoint.clone());
            }
        }
        match n.on_frame(frame) {
            Answer::Nothing => {}
            Answer::SelectRefused { db, message } => {
                let endpoint = n.endpoint.to_string();
                self.set_fatal(WriteError::Select {
                    endpoint,
                    db,
                    message,
                });
            }
            Answer::Done {
                req,
                last,
                first_err,
            } => {
                self.order.answered(req.slot);
                if matches!(req.body, Body::Check { .. }) && !last.is_error() {
                    return self.check_answered(req, &last);
                }
                let verdict = judge(&req.body, &last, first_err);
                self.on_verdict(node, req, verdict);
            }
        }
    }

    fn on_verdict(&mut self, node: usize, mut req: Req, verdict: Verdict) {
        let stats = &self.shared.stats;
        match verdict {
            Verdict::Applied { exists } => {
                stats.bytes.fetch_add(req.bytes as u64, Ordering::Relaxed);
                match &req.body {
                    Body::Gate { key } => {
                        let key = key.clone();
                        self.gate_answered(&req, key, exists);
                    }
                    Body::Claim(args) if !exists => {
                        stats.lost_pending_entries.fetch_add(1, Ordering::Relaxed);
                        let key = args.get(1).map_or(&[][..], |k| &k[..]);
                        tracing::warn!(key = %show_key(key), "a pending entry whose message was deleted cannot be recreated with commands");
                    }
                    _ => {}
                }
                self.complete(req.track, true);
            }
            Verdict::Moved(se) => {
                stats.moved.fetch_add(1, Ordering::Relaxed);
                self.moved(node, req, se);
            }
            Verdict::Ask(se) => {
                stats.ask.fetch_add(1, Ordering::Relaxed);
                let asked = node_at(&self.nodes, node).endpoint.clone();
                req.ask = se.redirect_target(&asked).map(|ep| self.node_index(ep));
                tracing::debug!(slot = req.slot, node = %asked, "ASK: re-sending with ASKING");
                self.retry(req, Cause::Redirect);
            }
            Verdict::BusyKey => self.busy_key(req),
            Verdict::BadPayload => self.fall_back(req),
            Verdict::Retry { text, refresh } => {
                self.refresh_needed |= refresh;
                self.retry(req, Cause::Server(text));
            }
            Verdict::Refused(text) => {
                let (what, key) = req.body.describe();
                self.reject(req.track, &what, &key, &text);
                if let Some(g) = req.group {
                    self.tracks.fail_group(g);
                }
                self.complete(req.track, false);
            }
            Verdict::PartlyFailed {
                failed,
                name,
                key,
                error,
            } => {
                if req.marked {
                    self.record_failed(node, &req);
                }
                // A lone command with its marker is no transaction to the operator.
                let commands = req
                    .body
                    .replies()
                    .saturating_sub(2 + usize::from(req.marked));
                let message = match commands {
                    1 => error,
                    n => format!("{error} ({failed} of a transaction's {n} commands failed)"),
                };
                self.reject(req.track, &name, &key, &message);
                self.complete(req.track, false);
            }
        }
    }

    /// A marked transaction ran but its command failed: EXEC does not roll back, so the
    /// slot's marker now covers a write that is not in the target. Record the exception
    /// in the slot (on the same connection, so after the marker), so that a resume
    /// applies it once the operator has removed the cause.
    fn record_failed(&mut self, node: usize, req: &Req) {
        let Some(p) = self.admitter.progress() else {
            return;
        };
        let cmd = vec![
            Bytes::from_static(b"SADD"),
            failed_key(req.slot),
            marker_value(p.sync_id, req.offset),
        ];
        let mut record = Req::new(req.order, req.track, req.slot, req.db, Body::Cmd(cmd), None);
        record.pin = Some(node);
        self.tracks.add(req.track, 1);
        self.order.sent(req.slot);
        self.recording = true;
        node_at_mut(&mut self.nodes, node).encode(record, !self.info.cluster);
    }

    /// The slot lives elsewhere now: re-send there, and re-read the map before the next
    /// retry. A redirect for another slot than the request's would be our routing bug: it
    /// is logged and not believed.
    fn moved(&mut self, node: usize, mut req: Req, se: ServerError) {
        let asked = node_at(&self.nodes, node).endpoint.clone();
        let redirected = match &se {
            ServerError::Moved { slot, .. } => usize::from(*slot),
            _ => req.slot,
        };
        if redirected != req.slot && req.slot < self.owner.len() {
            tracing::error!(request_slot = req.slot, redirected, node = %asked, "MOVED names another slot than the request's: routing by a fresh slot map");
        } else if let Some(ep) = se.redirect_target(&asked) {
            let to = self.node_index(ep);
            if let Some(o) = self.owner.get_mut(req.slot) {
                *o = Some(to);
            }
        }
        self.refresh_needed = true;
        req.ask = None;
        tracing::debug!(slot = req.slot, node = %asked, "MOVED: re-sending to the new owner");
        self.retry(req, Cause::Redirect);
    }

    /// RESTORE met an existing key: kept under `--skip-existing`, otherwise the writer
    /// stops naming it.
    fn busy_key(&mut self, req: Req) {
        let Some((key, _)) = (match &req.body {
            Body::Restore { args, .. } => restore_parts(args),
            _ => None,
        }) else {
            return self.complete(req.track, false);
        };
        if self.admitter.conflict == ConflictPolicy::Skip {
            self.shared
                .stats
                .skipped_existing
                .fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.tracks.get_mut(req.track) {
                t.counts_key = false;
            }
            return self.complete(req.track, true);
        }
        let e = self.key_conflict(key, req.db);
        // The reason first: completing a failed entry stops the writer too.
        self.set_fatal(e);
        self.complete(req.track, false);
    }

    /// The error for an existing key that the policy does not let us replace or keep.
    fn key_conflict(&self, key: &[u8], db: u32) -> WriteError {
        match self.admitter.merged_dbs() {
            Some(dbs) => WriteError::KeyMerged {
                key: show_key(key),
                db,
                sources: dbs
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            None => WriteError::KeyExists {
                key: show_key(key),
                db,
            },
        }
    }

    /// The slot's marker, read before re-sending writes whose fate was unknown: those it
    /// covers are in the target already (not sent again), the others go now.
    fn check_answered(&mut self, req: Req, marker: &Frame) {
        let sync_id = self.admitter.progress().map(|p| p.sync_id);
        let applied = marker
            .as_bytes()
            .and_then(|v| parse_marker(v))
            .filter(|(id, _)| Some(*id) == sync_id)
            .map_or(0, |(_, offset)| offset);
        let done = self.order.settle_doubt(req.slot, applied);
        tracing::info!(
            slot = req.slot,
            applied,
            already_in_target = done.len(),
            "checked the slot's marker after a lost connection"
        );
        for track in done {
            self.shared
                .stats
                .already_applied
                .fetch_add(1, Ordering::Relaxed);
            self.complete(track, true);
        }
        self.order.gate_answered(req.slot, Instant::now());
        self.complete(req.track, true);
    }

    /// A marker check that failed: the slot's doubtful writes ask again after a pause.
    fn check_again(&mut self, req: Req) {
        self.order
            .gate_answered(req.slot, Instant::now() + backoff(req.attempts + 1));
        self.complete(req.track, true);
    }

    fn gate_answered(&mut self, req: &Req, key: Bytes, exists: bool) {
        self.order.gate_answered(req.slot, Instant::now());
        if !exists {
            return;
        }
        if self.admitter.conflict != ConflictPolicy::Skip {
            self.fail_track(req.track, format!("key {} already exists", show_key(&key)));
            let e = self.key_conflict(&key, req.db);
            return self.set_fatal(e);
        }
        self.shared
            .stats
            .skipped_existing
            .fetch_add(1, Ordering::Relaxed);
        if let Some(g) = req.group {
            self.tracks.skip_group(g);
            // Drop what is queued for it; later pieces are dropped on arrival.
            for t in self.order.drop_group(req.slot, g) {
                self.complete(t, true);
            }
        }
    }

    /// The target refused a RESTORE payload: write the value as commands at the same place
    /// in the slot's order.
    fn fall_back(&mut self, req: Req) {
        let Body::Restore { args, expire } = &req.body else {
            return;
        };
        let Some((key, payload)) = restore_parts(args) else {
            return;
        };
        let rdb_type = payload.first().copied().unwrap_or(0);
        if self.admitter.refuse_type(rdb_type) {
            tracing::info!(rdb_type, target_rdb = %self.info.rdb_version, "target cannot RESTORE this type: rebuilding such values with commands");
        }
        let mut tally = Default::default();
        let now = super::pipeline::now_ms();
        let rebuilt = self
            .admitter
            .rebuild(key, payload, *expire, now, &mut tally);
        self.count(&tally);
        let mut cmds = match rebuilt {
            Ok(cmds) => cmds,
            Err(why) => {
                self.fail_track(req.track, why);
                return self.complete(req.track, false);
            }
        };
        // RESTORE checks BUSYKEY before the payload, so the key was absent, or REPLACE was
        // given and nothing was deleted yet.
        if self.admitter.conflict == ConflictPolicy::Rewrite {
            cmds.insert(0, vec![Bytes::from_static(b"DEL"), key.clone()]);
        }
        self.tracks.add(req.track, cmds.len() as u32);
        self.block_slot(req.slot, Instant::now(), false);
        for (i, c) in cmds.into_iter().enumerate() {
            let order = (req.order.0, req.order.1 + 1 + i as u32);
            let body = Body::rebuilding(c);
            let piece = Req::new(order, req.track, req.slot, req.db, body, req.group);
            self.order.queue_blocked(piece);
        }
        // The RESTORE itself is replaced by the commands.
        self.complete(req.track, true);
    }

    /// Queue a failed request for another try in its slot's order, or give it up.
    pub(super) fn retry(&mut self, mut req: Req, cause: Cause) {
        if matches!(req.body, Body::Check { .. }) {
            return self.check_again(req);
        }
        let now = Instant::now();
        req.attempts += 1;
        let first = *req.first_failure.get_or_insert(now);
        if !matches!(cause, Cause::Redirect) {
            self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        match &cause {
            Cause::Server(m) | Cause::Connection(m) => self.shared.set_stall(m),
            Cause::Unassigned => self
                .shared
                .set_stall(&format!("slot {} has no owner in the target", req.slot)),
            Cause::Redirect => {}
        }
        // Redirects loop only if the cluster is changing; give them the same deadline.
        if !self.opts.retry_forever && now.duration_since(first) > self.opts.retry_timeout {
            return self.give_up(req, cause);
        }
        let delay = match &cause {
            Cause::Redirect => Duration::ZERO,
            _ => backoff(req.attempts),
        };
        match &cause {
            Cause::Server(m) | Cause::Connection(m)
                if req.attempts == 1 || req.attempts.is_multiple_of(20) =>
            {
                let (slot, attempts) = (req.slot, req.attempts);
                self.warn_limited(|| {
                    tracing::warn!(slot, attempts, delay_ms = delay.as_millis() as u64, error = %m, "write failed, retrying in order after a pause");
                });
            }
            Cause::Unassigned if req.attempts == 1 => {
                tracing::warn!(slot = req.slot, "slot has no owner in the target; waiting");
                self.refresh_needed = true;
            }
            _ => {}
        }
        self.block_slot(req.slot, now + delay, false);
        self.order.queue_blocked(req);
    }

    /// The request's retry deadline has passed: a lost node stops the writer, anything
    /// else fails the entry (counted).
    fn give_up(&mut self, req: Req, cause: Cause) {
        let secs = self.opts.retry_timeout.as_secs();
        let why = match cause {
            Cause::Connection(cause) => {
                let endpoint = self.endpoint_of(&req);
                self.set_fatal(WriteError::TargetLost {
                    endpoint,
                    secs,
                    cause,
                });
                return self.complete(req.track, false);
            }
            Cause::Server(m) => m,
            Cause::Unassigned => format!("slot {} has no owner", req.slot),
            Cause::Redirect => "redirected too often".into(),
        };
        let (what, key) = req.body.describe();
        tracing::warn!(command = %what, key = %show_key(&key), secs, error = %why, "gave up a write after retrying");
        self.failure.get_or_insert_with(|| {
            format!(
                "gave up {what} {} after {secs}s of retries: {why}",
                show_key(&key)
            )
        });
        self.shared
            .stats
            .failed_retries
            .fetch_add(1, Ordering::Relaxed);
        if self.is_command(req.track) {
            self.count_command_failures(1);
        }
        if let Some(g) = req.group {
            self.tracks.fail_group(g);
        }
        self.complete(req.track, false);
    }

    /// A connection ended: what was in flight is re-sent in order (its fate is unknown),
    /// and the slot map is re-read, since the node may have been replaced.
    fn node_lost(&mut self, node: usize, cause: String) {
        let n = node_at_mut(&mut self.nodes, node);
        tracing::warn!(node = %n.endpoint, error = %cause, in_flight = n.in_flight(), "lost the connection to a target node; re-sending in order");
        for mut req in n.take_in_flight() {
            self.order.answered(req.slot);
            // A marked write may have been applied just before the loss: its slot's
            // marker decides before it is sent again.
            req.doubt |= req.marked;
            self.retry(req, Cause::Connection(cause.clone()));
        }
        self.refresh_needed = self.info.cluster;
    }
}
