//! The pieces the pipeline builds when it carries out a reply's action
//! ([`super::decide::Action`]): the record of a failed marked write, the commands that
//! replace a refused RESTORE, the error for a key conflict, the words for a give-up.
//!
//! Plain functions of their inputs: they know requests and the writer's error type,
//! never the pipeline, so the choice of what to do stays in [`super::decide`] and the
//! doing in the pipeline.

use bytes::Bytes;

use super::decide::Cause;
use super::progress::{failed_key, marker_value};
use super::request::{restore_parts, Body, Req};
use super::{show_key, WriteError};
use rsm_command::entry::DbIndex;

/// The key a gate asked about, or a RESTORE met: the key a conflict names.
pub(super) fn conflict_key(body: &Body) -> &[u8] {
    match body {
        Body::Gate { key } => key,
        Body::Restore { args, .. } => restore_parts(args).map_or(&[][..], |(k, _)| k),
        _ => &[],
    }
}

/// The error for an existing key that the policy does not let us replace or keep.
/// `merged`: the source dbs merged into one target db (`--targetdb`), when more than one:
/// then the conflict may be between two source dbs, not with the target's own data, and
/// the operator is told so.
pub(super) fn key_conflict(merged: Option<&[DbIndex]>, key: &[u8], db: DbIndex) -> WriteError {
    match merged {
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

/// The record of a marked transaction that ran but whose command failed: `SADD` of the
/// write's marker value to the slot's failed set, pinned to `node`. EXEC does not roll
/// back, so the slot's marker now covers a write that is not in the target; sent on the
/// same connection (so after the marker), the record lets a resume apply that write once
/// the operator has removed the cause.
pub(super) fn failed_record(req: &Req, node: usize, sync_id: u64) -> Req {
    let cmd = vec![
        Bytes::from_static(b"SADD"),
        failed_key(req.slot),
        marker_value(sync_id, req.offset),
    ];
    let mut record = Req::new(req.order, req.track, req.slot, req.db, Body::Cmd(cmd), None);
    record.pin = Some(node);
    record
}

/// The commands that rebuild a refused RESTORE's value, as requests at the RESTORE's place
/// in the order (sub-positions after it), so the slot's later writes stay behind them.
pub(super) fn rebuilt_pieces(req: &Req, cmds: Vec<Vec<Bytes>>) -> impl Iterator<Item = Req> + '_ {
    cmds.into_iter().enumerate().map(move |(i, c)| {
        let order = (req.order.0, req.order.1 + 1 + i as u32);
        let body = Body::rebuilding(c);
        Req::new(order, req.track, req.slot, req.db, body, req.group)
    })
}

/// Why a write that failed for `cause` was given up, in words (a lost node is not given
/// up write by write: it stops the writer, see [`super::decide::Again::GiveUp`]).
pub(super) fn gave_up_why(cause: Cause, slot: usize) -> String {
    match cause {
        Cause::Server(m) | Cause::Connection(m) => m,
        Cause::Unassigned => format!("slot {slot} has no owner"),
        Cause::Redirect => "redirected too often".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore() -> Req {
        let args = ["RESTORE", "k", "0", "payload"]
            .map(|w| Bytes::from_static(w.as_bytes()))
            .to_vec();
        let body = Body::Restore { args, expire: None };
        Req::new((5, 0), 9, 12, 0, body, Some(3))
    }

    #[test]
    fn a_conflict_names_the_gates_or_the_restores_key() {
        let gate = Body::Gate {
            key: Bytes::from_static(b"g"),
        };
        assert_eq!(conflict_key(&gate), b"g");
        assert_eq!(conflict_key(&restore().body), b"k");
    }

    #[test]
    fn a_conflict_between_merged_dbs_says_so() {
        assert!(matches!(
            key_conflict(None, b"k", 0),
            WriteError::KeyExists { db: 0, .. }
        ));
        match key_conflict(Some(&[0, 3]), b"k", 0) {
            WriteError::KeyMerged { sources, .. } => assert_eq!(sources, "0, 3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rebuilt_pieces_keep_the_restores_place_and_key_group() {
        let req = restore();
        let cmds = vec![
            vec![Bytes::from_static(b"DEL"), Bytes::from_static(b"k")],
            vec![Bytes::from_static(b"RPUSH"), Bytes::from_static(b"k")],
        ];
        let pieces: Vec<Req> = rebuilt_pieces(&req, cmds).collect();
        let orders: Vec<_> = pieces.iter().map(|r| r.order).collect();
        assert_eq!(orders, vec![(5, 1), (5, 2)]);
        assert!(pieces
            .iter()
            .all(|r| r.track == 9 && r.slot == 12 && r.group == Some(3)));
    }

    #[test]
    fn a_failed_marked_write_is_recorded_on_the_node_that_ran_it() {
        let mut req = restore();
        req.offset = 1500;
        let record = failed_record(&req, 2, 7);
        assert_eq!(record.pin, Some(2));
        assert_eq!(record.order, req.order);
        match record.body {
            Body::Cmd(args) => {
                assert_eq!(args.first().map(|a| &a[..]), Some(&b"SADD"[..]));
                assert_eq!(args.get(2), Some(&marker_value(7, 1500)));
            }
            other => panic!("{other:?}"),
        }
    }
}
