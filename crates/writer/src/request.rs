//! One request to a target node, and how its reply is judged.
//!
//! Pure: no I/O. The writer turns each entry into requests ([`super::admit`]), keeps them
//! in per-slot order ([`super::order`]) and sends them through a node
//! ([`super::node`]); when the reply arrives, [`judge`] says what it means, and
//! [`super::decide`] what the writer does about it.
//!
//! The split matters: `judge` knows the reply and the request's body, nothing of the
//! writer, so an error reply is classified once ([`ServerError::classify`]) and every
//! later decision works on a [`Verdict`], never on error text.

use std::time::Instant;

use bytes::Bytes;
use rsm_client::{Retry, ServerError};
use rsm_resp::Frame;

use rsm_command::entry::DbIndex;

/// Position in the original order: (request sequence, sub-request when one was replaced by
/// several, e.g. a refused RESTORE by the commands that rebuild the value).
pub(super) type Order = (u64, u32);

/// What a request sends and how its reply is judged.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Body {
    /// Any non-error reply is success.
    Cmd(Vec<Bytes>),
    /// `RESTORE …`; BUSYKEY follows the conflict policy, a refused payload is rebuilt with
    /// commands.
    /// The key and payload are read from `args` (see [`restore_parts`]): one copy of each
    /// handle per request, which matters at a million keys.
    Restore {
        args: Vec<Bytes>,
        expire: Option<i64>,
    },
    /// `EXISTS key` before a value written in pieces (fail/skip policies).
    Gate { key: Bytes },
    /// `MULTI`, the commands, `EXEC`.
    Multi(Vec<Vec<Bytes>>),
    /// `GET` of the slot's marker, before re-sending writes whose fate is unknown.
    Check { slot: usize },
    /// `XCLAIM … FORCE JUSTID` recreating a pending entry: it claims nothing (an empty
    /// reply) when the entry's message was deleted, and that loss is counted.
    Claim(Vec<Bytes>),
}

/// `RESTORE key ttl payload …`: the key and the payload.
pub(super) fn restore_parts(args: &[Bytes]) -> Option<(&Bytes, &Bytes)> {
    Some((args.get(1)?, args.get(3)?))
}

impl Body {
    /// A command that rebuilds part of a value.
    pub(super) fn rebuilding(cmd: Vec<Bytes>) -> Body {
        if cmd
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"XCLAIM"))
        {
            Body::Claim(cmd)
        } else {
            Body::Cmd(cmd)
        }
    }

    /// Replies the node sends for it.
    pub(super) fn replies(&self) -> usize {
        match self {
            Body::Multi(c) => c.len() + 2,
            _ => 1,
        }
    }

    /// Approximate bytes on the wire, for the per-node byte window.
    pub(super) fn size(&self) -> usize {
        match self {
            Body::Cmd(a) | Body::Claim(a) | Body::Restore { args: a, .. } => {
                a.iter().map(|x| x.len() + 16).sum()
            }
            Body::Gate { key } => key.len() + 32,
            Body::Multi(cs) => cs.iter().flatten().map(|x| x.len() + 16).sum(),
            Body::Check { .. } => 48,
        }
    }

    /// The command name and its first key, for messages.
    pub(super) fn describe(&self) -> (String, Bytes) {
        let name = |a: &[Bytes]| rsm_resp::escape_controls(a.first().map_or(&b""[..], |x| &x[..]));
        match self {
            Body::Cmd(a) | Body::Claim(a) | Body::Restore { args: a, .. } => {
                (name(a), a.get(1).cloned().unwrap_or_default())
            }
            Body::Gate { key } => ("EXISTS".into(), key.clone()),
            Body::Check { slot } => ("GET".into(), super::progress::slot_marker_key(*slot)),
            Body::Multi(c) => (
                "MULTI".into(),
                c.first()
                    .and_then(|c| c.get(1))
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }
}

#[derive(Debug)]
pub(super) struct Req {
    pub order: Order,
    /// The entry this request belongs to (see [`super::watermark::Tracks`]).
    pub track: u64,
    pub slot: usize,
    /// A node fixed in advance (broadcasts).
    pub pin: Option<usize>,
    /// Send with ASKING to this node (once).
    pub ask: Option<usize>,
    pub db: DbIndex,
    pub body: Body,
    /// The key written in pieces (or rebuilt) this request belongs to, for the skip policy.
    pub group: Option<u64>,
    pub attempts: u32,
    pub first_failure: Option<Instant>,
    pub bytes: usize,
    /// The source offset of the stream command (0: a snapshot write).
    pub offset: u64,
    /// Written with its slot's marker, in one transaction.
    pub marked: bool,
    /// Sent on a connection that was lost before the reply: it may or may not have been
    /// applied. The slot's marker decides before it is sent again.
    pub doubt: bool,
}

impl Req {
    pub(super) fn new(
        order: Order,
        track: u64,
        slot: usize,
        db: DbIndex,
        body: Body,
        group: Option<u64>,
    ) -> Req {
        Req {
            order,
            track,
            slot,
            pin: None,
            ask: None,
            db,
            bytes: body.size(),
            body,
            group,
            attempts: 0,
            first_failure: None,
            offset: 0,
            marked: false,
            doubt: false,
        }
    }
}

/// What a reply means for its request.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Applied. `exists`: a gate's answer.
    Applied { exists: bool },
    /// A marker check's answer: the slot's marker value (`None`: the slot has none).
    Marker(Option<Bytes>),
    /// The slot lives on another node now (the reply's own slot, for a check).
    Moved(ServerError),
    /// Send once more with ASKING to the node named.
    Ask(ServerError),
    /// RESTORE found the key there (no REPLACE).
    BusyKey,
    /// RESTORE's payload is one the target cannot read: rebuild with commands.
    BadPayload,
    /// Worth another try after a pause (`refresh`: re-read the slot map first).
    Retry { text: String, refresh: bool },
    /// Refused for good.
    Refused(String),
    /// EXEC ran, but some of the transaction's commands failed.
    PartlyFailed {
        failed: usize,
        /// The first command that failed (name, first key), and the target's error for it.
        name: String,
        key: Bytes,
        error: String,
    },
}

/// Judge the last reply of a request (`first_err`: an error among its earlier replies,
/// i.e. a command MULTI refused to queue).
pub(super) fn judge(body: &Body, last: &Frame, first_err: Option<Bytes>) -> Verdict {
    let err = match (body, last.as_error()) {
        // MULTI/EXEC: a refusal while queueing (MOVED, …) makes EXEC fail: judge by it.
        (Body::Multi(_), Some(e)) => first_err.unwrap_or_else(|| e.clone()),
        (Body::Multi(cmds), None) => {
            let replies = last.as_array().unwrap_or_default();
            let failed = replies.iter().filter(|f| f.is_error()).count();
            let Some(i) = replies.iter().position(Frame::is_error) else {
                return Verdict::Applied { exists: false };
            };
            let cmd = cmds.get(i).map_or(&[][..], |c| &c[..]);
            let name = cmd
                .first()
                .map_or_else(String::new, |n| rsm_resp::escape_controls(n));
            let key = cmd.get(1).cloned().unwrap_or_default();
            let error = replies
                .get(i)
                .and_then(Frame::as_error)
                .map_or_else(String::new, |e| rsm_resp::escape_controls(e));
            return Verdict::PartlyFailed {
                failed,
                name,
                key,
                error,
            };
        }
        (_, Some(e)) => e.clone(),
        // The marker's value is the answer: which writes in doubt are in the target.
        (Body::Check { .. }, None) => return Verdict::Marker(last.as_bytes().cloned()),
        (_, None) => {
            let exists = match body {
                Body::Gate { .. } => last.as_int() == Some(1),
                Body::Claim(_) => last.as_array().is_some_and(|a| !a.is_empty()),
                _ => false,
            };
            return Verdict::Applied { exists };
        }
    };
    let se = ServerError::classify(&err);
    let text = rsm_resp::escape_controls(&err);
    match (&se, body) {
        (ServerError::Moved { .. }, _) => Verdict::Moved(se),
        (ServerError::Ask { .. }, _) => Verdict::Ask(se),
        (ServerError::BusyKey, Body::Restore { .. }) => Verdict::BusyKey,
        (ServerError::BadPayload, Body::Restore { .. }) => Verdict::BadPayload,
        _ => match se.retry() {
            Retry::Backoff => Verdict::Retry {
                text,
                refresh: false,
            },
            Retry::RefreshTopology => Verdict::Retry {
                text,
                refresh: true,
            },
            Retry::Redirect | Retry::Fail => Verdict::Refused(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> Frame {
        Frame::Error(Bytes::from(s.to_string()))
    }

    fn cmd(s: &str) -> Body {
        Body::Cmd(s.split(' ').map(|w| Bytes::from(w.to_string())).collect())
    }

    fn restore() -> Body {
        Body::Restore {
            args: vec![],
            expire: None,
        }
    }

    #[test]
    fn plain_replies() {
        assert_eq!(
            judge(
                &cmd("SET k v"),
                &Frame::Simple(Bytes::from_static(b"OK")),
                None
            ),
            Verdict::Applied { exists: false }
        );
        let gate = Body::Gate {
            key: Bytes::from_static(b"k"),
        };
        assert_eq!(
            judge(&gate, &Frame::Integer(1), None),
            Verdict::Applied { exists: true }
        );
        assert_eq!(
            judge(&gate, &Frame::Integer(0), None),
            Verdict::Applied { exists: false }
        );
        let claim = Body::rebuilding(
            "XCLAIM s g c 0 1-0 FORCE JUSTID"
                .split(' ')
                .map(|w| Bytes::from(w.to_string()))
                .collect(),
        );
        assert!(matches!(claim, Body::Claim(_)));
        let claimed = Frame::Array(vec![Frame::Bulk(Bytes::from_static(b"1-0"))]);
        assert_eq!(
            judge(&claim, &claimed, None),
            Verdict::Applied { exists: true }
        );
        assert_eq!(
            judge(&claim, &Frame::Array(vec![]), None),
            Verdict::Applied { exists: false }
        );
    }

    #[test]
    fn a_marker_check_answers_with_the_markers_value() {
        let check = Body::Check { slot: 3 };
        let value = Bytes::from_static(b"0000000000000007:1500");
        assert_eq!(
            judge(&check, &Frame::Bulk(value.clone()), None),
            Verdict::Marker(Some(value))
        );
        assert_eq!(judge(&check, &Frame::Null, None), Verdict::Marker(None));
        assert!(
            matches!(
                judge(&check, &err("LOADING Redis is loading"), None),
                Verdict::Retry { .. }
            ),
            "a failed check is judged like any request"
        );
    }

    #[test]
    fn errors_by_kind() {
        assert!(matches!(
            judge(&cmd("SET k v"), &err("MOVED 12182 127.0.0.1:7001"), None),
            Verdict::Moved(ServerError::Moved { slot: 12182, .. })
        ));
        assert!(matches!(
            judge(&cmd("SET k v"), &err("ASK 12182 127.0.0.1:7001"), None),
            Verdict::Ask(_)
        ));
        assert_eq!(
            judge(
                &restore(),
                &err("BUSYKEY Target key name already exists."),
                None
            ),
            Verdict::BusyKey
        );
        assert_eq!(
            judge(&restore(), &err("ERR Bad data format"), None),
            Verdict::BadPayload
        );
        // The same text for an ordinary command is a refusal, not a payload problem.
        assert!(matches!(
            judge(&cmd("SET k v"), &err("ERR Bad data format"), None),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            judge(&cmd("SET k v"), &err("OOM command not allowed"), None),
            Verdict::Retry { refresh: false, .. }
        ));
        assert!(matches!(
            judge(
                &cmd("SET k v"),
                &err("READONLY You can't write against a read only replica."),
                None
            ),
            Verdict::Retry { refresh: true, .. }
        ));
        assert!(matches!(
            judge(
                &cmd("LPUSH k v"),
                &err("WRONGTYPE Operation against a key"),
                None
            ),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn transactions_judged_by_the_queueing_error_then_each_reply() {
        let multi = Body::Multi(vec![vec![
            Bytes::from_static(b"INCR"),
            Bytes::from_static(b"k"),
        ]]);
        let moved = Bytes::from_static(b"MOVED 1 127.0.0.1:7002");
        assert!(matches!(
            judge(&multi, &err("EXECABORT Transaction discarded"), Some(moved)),
            Verdict::Moved(_)
        ));
        let ok = Frame::Array(vec![Frame::Integer(1)]);
        assert_eq!(judge(&multi, &ok, None), Verdict::Applied { exists: false });
        let partly = Frame::Array(vec![err("WRONGTYPE x"), Frame::Integer(1)]);
        assert_eq!(
            judge(&multi, &partly, None),
            Verdict::PartlyFailed {
                failed: 1,
                name: "INCR".into(),
                key: Bytes::from_static(b"k"),
                error: "WRONGTYPE x".into()
            }
        );
        assert_eq!(multi.replies(), 3);
    }
}
