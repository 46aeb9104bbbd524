//! What the writer does about a request, decided as a value: where it goes next
//! ([`route`]), what its reply (or the loss of its connection) means for the writer
//! ([`decide`]), and whether and when a failed one is tried again ([`again`]).
//!
//! Where it sits: the pipeline ([`super::pipeline`]) hands requests to their nodes, a node
//! matches each reply to its request ([`super::node`]) and [`judge`] says what the reply
//! means. The choice of what to do about it is made here: settle, follow a redirect, queue
//! behind the slot's block, back off, read the slot's marker first, apply the conflict
//! policy, rebuild with commands, give up. The pipeline carries the choice out.
//!
//! What it promises: the same facts give the same action. Pure: no I/O, no writer state,
//! no clock (the caller passes `now`). This is the shape of redis-rs's cluster
//! `choose_response`: a function decides, a thin loop acts, so every rule below is tested
//! with plain values instead of a cluster that misbehaves on cue.
//!
//! [`judge`]: super::request::judge

use std::time::{Duration, Instant};

use bytes::Bytes;
use rsm_client::{Endpoint, ServerError};

use super::order::backoff;
use super::progress::parse_marker;
use super::request::{restore_parts, Body, Req, Verdict};
use rsm_command::ConflictPolicy;

/// Why a request is tried again. It decides the pause (a redirect goes at once), whether
/// the attempt counts as a retry, what the status shows as the stall, and how the writer
/// gives up once the deadline has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cause {
    /// `MOVED` or `ASK`: the cluster told us where the slot is.
    Redirect,
    /// An error reply worth another try (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `OOM`, …).
    Server(String),
    /// The node's connection was lost or could not be made.
    Connection(String),
    /// No node owns the slot in our slot map.
    Unassigned,
}

/// The request's kind, as far as the decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A command or a transaction: any non-error reply is success.
    Write,
    /// `RESTORE`. `parts`: its key and payload can be read from its arguments (a conflict
    /// names the key, a fall-back rebuilds the payload; without them neither is possible).
    Restore { parts: bool },
    /// `EXISTS` before a value written in pieces.
    Gate,
    /// `GET` of the slot's marker before writes in doubt are re-sent.
    Check,
    /// `XCLAIM … FORCE JUSTID` recreating a pending entry.
    Claim,
}

/// The facts of a request that the decisions depend on: a few words copied out of the
/// [`Req`], so that a test states them without building bodies.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReqFacts {
    pub kind: Kind,
    pub slot: usize,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When its first attempt failed: the retry deadline counts from there, not from the
    /// last attempt, so a write that keeps failing is given up after `--retry-timeout`.
    pub first_failure: Option<Instant>,
    /// Written with its slot's marker, in one transaction.
    pub marked: bool,
    /// Replies the node sends for it (a transaction: its commands, `MULTI` and `EXEC`).
    pub replies: usize,
}

impl ReqFacts {
    #[inline]
    pub(super) fn of(req: &Req) -> ReqFacts {
        let kind = match &req.body {
            Body::Cmd(_) | Body::Multi(_) => Kind::Write,
            Body::Restore { args, .. } => Kind::Restore {
                parts: restore_parts(args).is_some(),
            },
            Body::Gate { .. } => Kind::Gate,
            Body::Check { .. } => Kind::Check,
            Body::Claim(_) => Kind::Claim,
        };
        ReqFacts {
            kind,
            slot: req.slot,
            attempts: req.attempts,
            first_failure: req.first_failure,
            marked: req.marked,
            replies: req.body.replies(),
        }
    }
}

/// The facts of the writer that the decisions about a reply depend on.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriterFacts<'a> {
    /// What to do with a key that exists in the target (`--rewrite`, `--skip-existing`).
    pub conflict: ConflictPolicy,
    /// Slots in our slot map: a request beyond them is keyless (its pseudo-slot has no
    /// owner to correct).
    pub slots: usize,
    /// The node that answered: a redirect with an empty host means this one.
    pub node: &'a Endpoint,
    /// This sync's id, when it writes slot markers: a marker of another sync (an earlier
    /// run, another tool) proves nothing about our writes.
    pub sync_id: Option<u64>,
}

/// What happened to a request in flight.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Its reply, judged by [`judge`](super::request::judge).
    Reply(Verdict),
    /// Its connection ended before the reply (why): it may or may not have been applied.
    Lost(String),
}

/// Where a `MOVED` sends the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NewOwner {
    /// The node named owns the slot now.
    Node(Endpoint),
    /// The redirect is for this other slot than the request's: our routing put the
    /// request on a wrong node, so the redirect is not believed for the request's slot.
    Misrouted(usize),
    /// The error named no node (cannot happen for a parsed `MOVED`).
    Unknown,
}

/// What to do about a request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Applied: settle it.
    Applied,
    /// Applied, but `XCLAIM` claimed nothing: the entry's message was deleted, so the
    /// pending entry cannot be recreated with commands (counted, warned, settled).
    ClaimLost,
    /// A gate found the key absent: the slot's pieces may go.
    GateOpen,
    /// A gate found the key and `--skip-existing` keeps it: the key's pieces are dropped.
    GateSkip,
    /// A gate found the key and the policy neither keeps nor replaces it: stop, naming it.
    GateConflict,
    /// `RESTORE` met an existing key and `--skip-existing` keeps it: settled, not counted
    /// as written.
    KeySkipped,
    /// `RESTORE` met an existing key and the policy forbids replacing it: stop, naming it.
    KeyConflict,
    /// Not applied, for a reason already known (`BUSYKEY` on a RESTORE without a key).
    NotApplied,
    /// The target cannot read the RESTORE payload: rebuild the value with commands at the
    /// same place in the slot's order. `delete_first`: a `DEL` goes ahead of them.
    FallBack { delete_first: bool },
    /// `MOVED`: the slot lives elsewhere for good. Correct our map, re-read it, and send
    /// again ([`again`] with [`Cause::Redirect`]).
    Moved { owner: NewOwner },
    /// `ASK`: send this request once more, with `ASKING`, to `to`. The map stays.
    Ask { to: Option<Endpoint> },
    /// Try again in the slot's order ([`again`]). `refresh_map`: re-read the slot map
    /// first; `doubt`: its fate is unknown, so the slot's marker decides before it is
    /// sent again.
    Retry {
        cause: Cause,
        refresh_map: bool,
        doubt: bool,
    },
    /// Refused for good: counted, and the entry (with its key's other pieces) failed.
    Refuse { text: String },
    /// EXEC ran but a command in it failed. `record`: the transaction carried the slot's
    /// marker, so the failure is recorded in the target next to it.
    PartlyFailed {
        record: bool,
        name: String,
        key: Bytes,
        message: String,
    },
    /// The slot's marker says the target has this sync's stream commands up to `applied`:
    /// those waiting in doubt are settled, the rest are sent again.
    SettleDoubt { applied: u64 },
}

/// Decide what to do about a request's outcome.
// Always inlined: it runs once per reply, where the reply is read, and there the common
// case (applied) folds into a few instructions.
#[inline(always)]
pub(super) fn decide(outcome: Outcome, req: &ReqFacts, w: &WriterFacts) -> Action {
    let verdict = match outcome {
        Outcome::Reply(v) => v,
        // The write may have been applied just before the loss. A plain write is simply
        // sent again (writing it twice does the same), but a marked one is a stream
        // command that may not be idempotent (INCR, RPUSH): its slot's marker, written in
        // the same transaction, tells whether it is in already.
        Outcome::Lost(why) => {
            return Action::Retry {
                cause: Cause::Connection(why),
                refresh_map: false,
                doubt: req.marked,
            }
        }
    };
    match verdict {
        // Once per reply: no allocation, no clock, a jump on the kind.
        Verdict::Applied { exists } => applied(req.kind, exists, w.conflict),
        Verdict::Marker(value) => Action::SettleDoubt {
            applied: marker_offset(value.as_deref(), w.sync_id),
        },
        Verdict::Moved(se) => Action::Moved {
            owner: new_owner(&se, req.slot, w),
        },
        // ASK is about one key during a migration: the slot still belongs to the node
        // asked until the migration ends (then a MOVED says so), so the map stays.
        Verdict::Ask(se) => Action::Ask {
            to: se.redirect_target(w.node),
        },
        Verdict::BusyKey => match req.kind {
            Kind::Restore { parts: true } if w.conflict == ConflictPolicy::Skip => {
                Action::KeySkipped
            }
            Kind::Restore { parts: true } => Action::KeyConflict,
            _ => Action::NotApplied,
        },
        // RESTORE checks BUSYKEY before the payload, so the key was absent, or REPLACE was
        // given and nothing was deleted yet: under `--rewrite` the commands must replace
        // what is there, so a DEL goes first.
        Verdict::BadPayload => Action::FallBack {
            delete_first: w.conflict == ConflictPolicy::Rewrite,
        },
        // TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, OOM: the node will take the write later.
        // READONLY / MASTERDOWN: the node is a replica now (its master was replaced), so
        // the map is re-read before the next try.
        Verdict::Retry { text, refresh } => Action::Retry {
            cause: Cause::Server(text),
            refresh_map: refresh,
            doubt: false,
        },
        Verdict::Refused(text) => Action::Refuse { text },
        Verdict::PartlyFailed {
            failed,
            name,
            key,
            error,
        } => Action::PartlyFailed {
            // EXEC does not roll back: the marker now covers a write that is not in the
            // target, and only a record next to it lets a resume apply it.
            record: req.marked,
            name,
            key,
            message: partly_failed_message(req, failed, error),
        },
    }
}

/// The offset this sync's marker `value` covers. No marker, or one of another sync (an
/// earlier run, another tool): nothing of ours is known to be in, so 0, and every write
/// in doubt is sent again.
fn marker_offset(value: Option<&[u8]>, sync_id: Option<u64>) -> u64 {
    value
        .and_then(parse_marker)
        .filter(|(id, _)| Some(*id) == sync_id)
        .map_or(0, |(_, offset)| offset)
}

/// What the operator reads for a transaction whose `failed` commands failed, the first
/// with `error`.
fn partly_failed_message(req: &ReqFacts, failed: usize, error: String) -> String {
    // A lone command with its marker is no transaction to the operator.
    let commands = req.replies.saturating_sub(2 + usize::from(req.marked));
    match commands {
        1 => error,
        n => format!("{error} ({failed} of a transaction's {n} commands failed)"),
    }
}

/// An applied request: a gate's and a claim's answer carry news, the rest is just settled.
#[inline]
fn applied(kind: Kind, exists: bool, conflict: ConflictPolicy) -> Action {
    match (kind, exists) {
        (Kind::Gate, false) => Action::GateOpen,
        // The pieces of a key are only written when the key is absent: a piece written
        // over an existing value would merge into it, not replace it.
        (Kind::Gate, true) if conflict == ConflictPolicy::Skip => Action::GateSkip,
        (Kind::Gate, true) => Action::GateConflict,
        (Kind::Claim, false) => Action::ClaimLost,
        _ => Action::Applied,
    }
}

/// Where a `MOVED` for the request's `slot` sends it.
fn new_owner(se: &ServerError, slot: usize, w: &WriterFacts) -> NewOwner {
    let redirected = match se {
        ServerError::Moved { slot, .. } => usize::from(*slot),
        _ => slot,
    };
    // A redirect for another slot than the request's would be our routing bug: believing
    // it would move a whole slot on the word of a reply about another one. A keyless
    // request has no slot of its own to compare.
    if redirected != slot && slot < w.slots {
        return NewOwner::Misrouted(redirected);
    }
    se.redirect_target(w.node)
        .map_or(NewOwner::Unknown, NewOwner::Node)
}

/// How long a write may keep failing.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// `--retry-timeout`, counted from the first failure.
    pub timeout: Duration,
    /// Retry for as long as it takes (a sync waits for its target).
    pub forever: bool,
}

/// Whether and when a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Again {
    /// A marker check failed: it is settled, and its slot's writes in doubt ask again
    /// after `delay` (a new check is made when they are sent).
    CheckAfter { delay: Duration },
    /// Queue it in its slot's order, to go no sooner than `delay` from now. `warn`: log
    /// this attempt; `refresh_map`: re-read the slot map before it goes.
    After {
        delay: Duration,
        warn: bool,
        refresh_map: bool,
    },
    /// Its deadline has passed. `stop`: the writer stops (its node stayed unreachable)
    /// rather than failing just this entry.
    GiveUp { stop: bool },
}

/// Whether and when a request that failed (`cause`) for the `req.attempts + 1`-th time is
/// tried again, at `now`.
pub(super) fn again(req: &ReqFacts, cause: &Cause, policy: RetryPolicy, now: Instant) -> Again {
    if req.kind == Kind::Check {
        // A check is not retried itself: the writes in doubt behind it make a new one when
        // they are routed again, so the new check goes to whichever node owns the slot by
        // then. Nor is it given up: those writes carry the deadline.
        return Again::CheckAfter {
            delay: backoff(req.attempts + 1),
        };
    }
    let attempts = req.attempts + 1;
    let first = req.first_failure.unwrap_or(now);
    // Redirects loop only while the cluster changes: they get the same deadline.
    if !policy.forever && now.duration_since(first) > policy.timeout {
        // A node that stays unreachable fails every write sent to it: stop and say which
        // node, instead of failing the entries one by one. A server's error is about this
        // write only.
        return Again::GiveUp {
            stop: matches!(cause, Cause::Connection(_)),
        };
    }
    // A redirect names where to go now; anything else needs the target to change first,
    // and hammering it would not hasten that.
    let delay = match cause {
        Cause::Redirect => Duration::ZERO,
        _ => backoff(attempts),
    };
    let (warn, refresh_map) = match cause {
        // The first failure, then every twentieth: a stalled target keeps the log readable.
        Cause::Server(_) | Cause::Connection(_) => {
            (attempts == 1 || attempts.is_multiple_of(20), false)
        }
        // A slot without owner is a map we read mid-change: say so once, and read it again.
        Cause::Unassigned => (attempts == 1, attempts == 1),
        // Redirects are routine during a reshard: counted, not logged.
        Cause::Redirect => (false, false),
    };
    Again::After {
        delay,
        warn,
        refresh_map,
    }
}

/// Where a request goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Its key is skipped (`--skip-existing` found it): settled without sending.
    Skip,
    /// Its slot is blocked behind an earlier failure: it waits in the slot's queue.
    Queue,
    /// Its fate after a lost connection is unknown: the slot's marker is read first.
    CheckFirst,
    /// No node owns its slot.
    Unassigned,
    /// To this node (sent, or waiting there for the connection or room in the window).
    Node(usize),
}

/// The facts [`route`] depends on.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteFacts {
    /// The request is a marker check.
    pub check: bool,
    /// Its key is one `--skip-existing` skipped.
    pub skipped: bool,
    /// Its slot is blocked (an earlier request of the slot failed, or a gate is pending).
    pub blocked: bool,
    /// Its fate is unknown (sent on a connection lost before the reply).
    pub doubt: bool,
    /// The node for it: an ASK target, a pinned node, or the slot's owner.
    pub node: Option<usize>,
}

/// Where a request goes next.
#[inline]
pub(super) fn route(f: RouteFacts) -> Route {
    // A skipped key's later pieces arrive after the gate said so: dropped, even when the
    // slot is blocked (they would only wait to be dropped).
    if f.skipped {
        return Route::Skip;
    }
    // A marker check goes ahead of its blocked slot: it is what the slot waits for.
    if !f.check {
        // Per-slot order: nothing of a blocked slot may overtake the failed write at its
        // head, or a later write of a key could land before an earlier one.
        if f.blocked {
            return Route::Queue;
        }
        if f.doubt {
            return Route::CheckFirst;
        }
    }
    match f.node {
        Some(n) => Route::Node(n),
        None => Route::Unassigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::judge;
    use rsm_resp::Frame;

    fn facts(kind: Kind) -> ReqFacts {
        ReqFacts {
            kind,
            slot: 100,
            attempts: 0,
            first_failure: None,
            marked: false,
            replies: 1,
        }
    }

    fn node() -> Endpoint {
        Endpoint::new("10.0.0.1", 7000)
    }

    fn writer(ep: &Endpoint, conflict: ConflictPolicy) -> WriterFacts<'_> {
        WriterFacts {
            conflict,
            slots: 16384,
            node: ep,
            sync_id: Some(7),
        }
    }

    fn reply(kind: Kind, v: Verdict) -> Action {
        let ep = node();
        decide(
            Outcome::Reply(v),
            &facts(kind),
            &writer(&ep, ConflictPolicy::Fail),
        )
    }

    /// The verdict `judge` gives an error reply to a plain command.
    fn judged(text: &str) -> Verdict {
        let set = Body::Cmd(vec![Bytes::from_static(b"SET"), Bytes::from_static(b"k")]);
        judge(&set, &Frame::Error(Bytes::from(text.to_string())), None)
    }

    /// The verdict `judge` gives an error reply to a RESTORE.
    fn judged_restore(text: &str) -> Verdict {
        let restore = Body::Restore {
            args: ["RESTORE", "k", "0", "payload"]
                .map(|w| Bytes::from_static(w.as_bytes()))
                .to_vec(),
            expire: None,
        };
        judge(&restore, &Frame::Error(Bytes::from(text.to_string())), None)
    }

    fn retry(text: &str, refresh_map: bool) -> Action {
        Action::Retry {
            cause: Cause::Server(text.into()),
            refresh_map,
            doubt: false,
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        timeout: Duration::from_secs(10),
        forever: false,
    };

    #[test]
    fn an_applied_write_is_settled() {
        let ok = Verdict::Applied { exists: false };
        assert_eq!(reply(Kind::Write, ok), Action::Applied);
        let ok = Verdict::Applied { exists: false };
        assert_eq!(reply(Kind::Restore { parts: true }, ok), Action::Applied);
    }

    #[test]
    fn moved_corrects_the_slot_map_to_the_node_named() {
        assert_eq!(
            reply(Kind::Write, judged("MOVED 100 10.0.0.2:7001")),
            Action::Moved {
                owner: NewOwner::Node(Endpoint::new("10.0.0.2", 7001))
            }
        );
    }

    #[test]
    fn moved_with_an_empty_host_means_the_node_asked() {
        assert_eq!(
            reply(Kind::Write, judged("MOVED 100 :7001")),
            Action::Moved {
                owner: NewOwner::Node(Endpoint::new("10.0.0.1", 7001))
            }
        );
    }

    #[test]
    fn moved_for_another_slot_is_not_believed() {
        assert_eq!(
            reply(Kind::Write, judged("MOVED 4242 10.0.0.2:7001")),
            Action::Moved {
                owner: NewOwner::Misrouted(4242)
            }
        );
    }

    #[test]
    fn moved_for_a_keyless_request_follows_the_node_named() {
        let ep = node();
        let mut req = facts(Kind::Write);
        req.slot = 16384;
        assert_eq!(
            decide(
                Outcome::Reply(judged("MOVED 5 10.0.0.2:7001")),
                &req,
                &writer(&ep, ConflictPolicy::Fail)
            ),
            Action::Moved {
                owner: NewOwner::Node(Endpoint::new("10.0.0.2", 7001))
            },
            "no slot of its own to compare"
        );
    }

    #[test]
    fn ask_resends_once_to_the_node_named_and_keeps_the_map() {
        assert_eq!(
            reply(Kind::Write, judged("ASK 100 10.0.0.3:7002")),
            Action::Ask {
                to: Some(Endpoint::new("10.0.0.3", 7002))
            }
        );
    }

    #[test]
    fn tryagain_clusterdown_loading_busy_and_oom_back_off_without_a_new_map() {
        for text in [
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            assert_eq!(
                reply(Kind::Write, judged(text)),
                retry(text, false),
                "{text}"
            );
        }
    }

    #[test]
    fn a_replaced_master_answering_as_a_replica_has_the_map_read_again() {
        for text in [
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert_eq!(
                reply(Kind::Write, judged(text)),
                retry(text, true),
                "{text}"
            );
        }
    }

    #[test]
    fn busykey_follows_the_conflict_policy() {
        let ep = node();
        let req = facts(Kind::Restore { parts: true });
        let busy = |policy| {
            decide(
                Outcome::Reply(judged_restore("BUSYKEY Target key name already exists.")),
                &req,
                &writer(&ep, policy),
            )
        };
        assert_eq!(busy(ConflictPolicy::Fail), Action::KeyConflict);
        assert_eq!(busy(ConflictPolicy::Skip), Action::KeySkipped);
        // `--rewrite` sends RESTORE … REPLACE, which never meets BUSYKEY: if it did, the
        // key is not silently kept.
        assert_eq!(busy(ConflictPolicy::Rewrite), Action::KeyConflict);
        let unreadable = facts(Kind::Restore { parts: false });
        assert_eq!(
            decide(
                Outcome::Reply(Verdict::BusyKey),
                &unreadable,
                &writer(&ep, ConflictPolicy::Skip)
            ),
            Action::NotApplied
        );
    }

    #[test]
    fn a_gate_opens_skips_or_stops_by_the_conflict_policy() {
        let ep = node();
        let gate = |exists, policy| {
            decide(
                Outcome::Reply(Verdict::Applied { exists }),
                &facts(Kind::Gate),
                &writer(&ep, policy),
            )
        };
        assert_eq!(gate(false, ConflictPolicy::Fail), Action::GateOpen);
        assert_eq!(gate(false, ConflictPolicy::Skip), Action::GateOpen);
        assert_eq!(gate(true, ConflictPolicy::Skip), Action::GateSkip);
        assert_eq!(gate(true, ConflictPolicy::Fail), Action::GateConflict);
    }

    #[test]
    fn a_claim_that_claimed_nothing_is_a_lost_pending_entry() {
        let claimed = Verdict::Applied { exists: true };
        assert_eq!(reply(Kind::Claim, claimed), Action::Applied);
        let nothing = Verdict::Applied { exists: false };
        assert_eq!(reply(Kind::Claim, nothing), Action::ClaimLost);
    }

    #[test]
    fn a_refused_payload_is_rebuilt_with_a_del_first_only_under_rewrite() {
        let ep = node();
        let req = facts(Kind::Restore { parts: true });
        let bad = |policy| {
            decide(
                Outcome::Reply(judged_restore("ERR Bad data format")),
                &req,
                &writer(&ep, policy),
            )
        };
        assert_eq!(
            bad(ConflictPolicy::Rewrite),
            Action::FallBack { delete_first: true }
        );
        assert_eq!(
            bad(ConflictPolicy::Fail),
            Action::FallBack {
                delete_first: false
            }
        );
        assert_eq!(
            bad(ConflictPolicy::Skip),
            Action::FallBack {
                delete_first: false
            }
        );
    }

    #[test]
    fn a_refusal_is_final() {
        assert_eq!(
            reply(Kind::Write, judged("WRONGTYPE Operation against a key")),
            Action::Refuse {
                text: "WRONGTYPE Operation against a key".into()
            }
        );
    }

    #[test]
    fn a_partly_failed_transaction_is_recorded_next_to_its_marker() {
        let ep = node();
        let partly = || Verdict::PartlyFailed {
            failed: 1,
            name: "INCR".into(),
            key: Bytes::from_static(b"k"),
            error: "WRONGTYPE x".into(),
        };
        // One command with its marker: MULTI, INCR, SET marker, EXEC.
        let mut marked = facts(Kind::Write);
        marked.marked = true;
        marked.replies = 4;
        assert_eq!(
            decide(
                Outcome::Reply(partly()),
                &marked,
                &writer(&ep, ConflictPolicy::Fail)
            ),
            Action::PartlyFailed {
                record: true,
                name: "INCR".into(),
                key: Bytes::from_static(b"k"),
                message: "WRONGTYPE x".into()
            },
            "a lone command with its marker is no transaction to the operator"
        );
        // A source transaction of three commands, unmarked.
        let mut plain = facts(Kind::Write);
        plain.replies = 5;
        assert_eq!(
            decide(
                Outcome::Reply(partly()),
                &plain,
                &writer(&ep, ConflictPolicy::Fail)
            ),
            Action::PartlyFailed {
                record: false,
                name: "INCR".into(),
                key: Bytes::from_static(b"k"),
                message: "WRONGTYPE x (1 of a transaction's 3 commands failed)".into()
            }
        );
    }

    #[test]
    fn a_lost_connection_puts_marked_writes_in_doubt() {
        let ep = node();
        let w = writer(&ep, ConflictPolicy::Fail);
        let mut marked = facts(Kind::Write);
        marked.marked = true;
        assert_eq!(
            decide(Outcome::Lost("reset".into()), &marked, &w),
            Action::Retry {
                cause: Cause::Connection("reset".into()),
                refresh_map: false,
                doubt: true
            }
        );
        assert_eq!(
            decide(Outcome::Lost("reset".into()), &facts(Kind::Write), &w),
            Action::Retry {
                cause: Cause::Connection("reset".into()),
                refresh_map: false,
                doubt: false
            },
            "an unmarked write is simply sent again"
        );
    }

    #[test]
    fn the_marker_settles_writes_in_doubt_only_when_it_is_this_syncs() {
        let marker = |v: Option<&'static str>| {
            reply(
                Kind::Check,
                Verdict::Marker(v.map(|s| Bytes::from_static(s.as_bytes()))),
            )
        };
        assert_eq!(
            marker(Some("0000000000000007:1500")),
            Action::SettleDoubt { applied: 1500 }
        );
        assert_eq!(
            marker(Some("0000000000000008:1500")),
            Action::SettleDoubt { applied: 0 },
            "another sync's marker proves nothing"
        );
        assert_eq!(marker(None), Action::SettleDoubt { applied: 0 });
        assert_eq!(marker(Some("garbage")), Action::SettleDoubt { applied: 0 });
    }

    #[test]
    fn a_failed_write_backs_off_longer_each_time_and_warns_first_and_every_twentieth() {
        let now = Instant::now();
        let cause = Cause::Server("LOADING".into());
        let mut req = facts(Kind::Write);
        assert_eq!(
            again(&req, &cause, POLICY, now),
            Again::After {
                delay: backoff(1),
                warn: true,
                refresh_map: false
            }
        );
        req.attempts = 1;
        req.first_failure = Some(now);
        assert_eq!(
            again(&req, &cause, POLICY, now),
            Again::After {
                delay: backoff(2),
                warn: false,
                refresh_map: false
            }
        );
        req.attempts = 19;
        assert_eq!(
            again(&req, &cause, POLICY, now),
            Again::After {
                delay: backoff(20),
                warn: true,
                refresh_map: false
            }
        );
    }

    #[test]
    fn a_redirect_goes_at_once_and_quietly() {
        let now = Instant::now();
        assert_eq!(
            again(&facts(Kind::Write), &Cause::Redirect, POLICY, now),
            Again::After {
                delay: Duration::ZERO,
                warn: false,
                refresh_map: false
            }
        );
    }

    #[test]
    fn a_slot_without_owner_reads_the_map_again_once() {
        let now = Instant::now();
        let mut req = facts(Kind::Write);
        assert_eq!(
            again(&req, &Cause::Unassigned, POLICY, now),
            Again::After {
                delay: backoff(1),
                warn: true,
                refresh_map: true
            }
        );
        req.attempts = 1;
        assert_eq!(
            again(&req, &Cause::Unassigned, POLICY, now),
            Again::After {
                delay: backoff(2),
                warn: false,
                refresh_map: false
            }
        );
    }

    #[test]
    fn after_the_retry_budget_a_write_is_given_up_and_a_lost_node_stops_the_writer() {
        let start = Instant::now();
        let late = start + POLICY.timeout + Duration::from_millis(1);
        let mut req = facts(Kind::Write);
        req.attempts = 5;
        req.first_failure = Some(start);
        let server = Cause::Server("OOM".into());
        assert!(matches!(
            again(&req, &server, POLICY, start + POLICY.timeout),
            Again::After { .. }
        ));
        assert_eq!(
            again(&req, &server, POLICY, late),
            Again::GiveUp { stop: false }
        );
        assert_eq!(
            again(&req, &Cause::Redirect, POLICY, late),
            Again::GiveUp { stop: false },
            "redirects get the same deadline"
        );
        assert_eq!(
            again(&req, &Cause::Connection("refused".into()), POLICY, late),
            Again::GiveUp { stop: true }
        );
        let forever = RetryPolicy {
            forever: true,
            ..POLICY
        };
        assert!(matches!(
            again(&req, &server, forever, late + Duration::from_secs(3600)),
            Again::After { .. }
        ));
    }

    #[test]
    fn a_failed_marker_check_is_settled_and_its_slot_asks_again_later() {
        let now = Instant::now();
        let mut check = facts(Kind::Check);
        check.attempts = 2;
        check.first_failure = Some(now - Duration::from_secs(3600));
        assert_eq!(
            again(&check, &Cause::Connection("reset".into()), POLICY, now),
            Again::CheckAfter { delay: backoff(3) },
            "never given up: the writes behind it carry the deadline"
        );
    }

    fn to(node: Option<usize>) -> RouteFacts {
        RouteFacts {
            check: false,
            skipped: false,
            blocked: false,
            doubt: false,
            node,
        }
    }

    #[test]
    fn a_request_goes_to_its_node_or_waits_for_an_owner() {
        assert_eq!(route(to(Some(2))), Route::Node(2));
        assert_eq!(route(to(None)), Route::Unassigned);
    }

    #[test]
    fn a_slot_blocked_behind_an_earlier_failure_holds_later_writes() {
        let blocked = RouteFacts {
            blocked: true,
            ..to(Some(2))
        };
        assert_eq!(route(blocked), Route::Queue);
        let doubtful = RouteFacts {
            doubt: true,
            ..blocked
        };
        assert_eq!(
            route(doubtful),
            Route::Queue,
            "in doubt, it still waits its turn"
        );
    }

    #[test]
    fn a_write_in_doubt_has_its_slots_marker_read_first() {
        let doubtful = RouteFacts {
            doubt: true,
            ..to(Some(2))
        };
        assert_eq!(route(doubtful), Route::CheckFirst);
    }

    #[test]
    fn a_marker_check_goes_ahead_of_its_blocked_slot() {
        let check = RouteFacts {
            check: true,
            blocked: true,
            doubt: true,
            ..to(Some(1))
        };
        assert_eq!(route(check), Route::Node(1));
    }

    #[test]
    fn a_skipped_keys_pieces_are_dropped_even_behind_a_block() {
        let skipped = RouteFacts {
            skipped: true,
            blocked: true,
            ..to(None)
        };
        assert_eq!(route(skipped), Route::Skip);
    }
}
