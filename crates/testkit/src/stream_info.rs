//! Everything a server says about one stream (`XINFO STREAM … FULL`, `XPENDING`), for
//! tests that must show a stream arrived whole: delivery counts and times of pending
//! entries, consumers' seen and active times, the counters added in 7.0.
//!
//! Fields a server version does not report are `None`; a test compares a field only where
//! both servers report it and says which ones those are.

use std::collections::BTreeMap;

use redis::Value;

use crate::snapshot::{array, bytes, int, pairs, text};
use crate::Server;

/// One entry of a group's pending entries list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingDetail {
    pub id: String,
    pub consumer: Vec<u8>,
    pub delivery_count: i64,
    /// Unix ms of the last delivery (6.0+: `XINFO STREAM FULL`).
    pub delivery_time: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerDetail {
    pub name: Vec<u8>,
    pub pel_count: i64,
    /// Unix ms (6.0+).
    pub seen_time: Option<i64>,
    /// Unix ms of the last successful read (7.2+).
    pub active_time: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupDetail {
    pub name: Vec<u8>,
    pub last_delivered_id: String,
    /// 7.0+.
    pub entries_read: Option<i64>,
    pub pending: Vec<PendingDetail>,
    pub consumers: Vec<ConsumerDetail>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDetail {
    pub length: i64,
    pub ids: Vec<String>,
    pub last_generated_id: String,
    /// 7.0+.
    pub max_deleted_entry_id: Option<String>,
    /// 7.0+.
    pub entries_added: Option<i64>,
    pub groups: Vec<GroupDetail>,
}

impl StreamDetail {
    /// Read `key` (a stream) from `server` with its own commands.
    ///
    /// # Panics
    /// If a read fails or `key` is not a stream.
    pub fn of(server: &Server, key: &[u8]) -> StreamDetail {
        let full = server.version().redis_compatible_at_least(6, 0);
        let ids = array(server.cmd(&[b"XRANGE", key, b"-", b"+"]))
            .into_iter()
            .map(|e| text(array(e).into_iter().next().unwrap_or(Value::Nil)))
            .collect();
        let info = if full {
            // COUNT 0: every pending entry, not the first 10.
            pairs(server.cmd(&[b"XINFO", b"STREAM", key, b"FULL", b"COUNT", b"0"]))
        } else {
            pairs(server.cmd(&[b"XINFO", b"STREAM", key]))
        };
        let mut groups = if full {
            full_groups(&info)
        } else {
            brief_groups(server, key)
        };
        // Counts always come from XPENDING, which every version has.
        for g in &mut groups {
            let counts = pending_counts(server, key, &g.name);
            for p in &mut g.pending {
                p.delivery_count = counts.get(&p.id).copied().unwrap_or(-1);
            }
        }
        groups.sort();
        StreamDetail {
            length: info.get("length").cloned().map_or(-1, int),
            ids,
            last_generated_id: info
                .get("last-generated-id")
                .cloned()
                .map(text)
                .unwrap_or_default(),
            max_deleted_entry_id: info.get("max-deleted-entry-id").cloned().map(text),
            entries_added: info.get("entries-added").cloned().map(int),
            groups,
        }
    }

    /// Every consumer of every group.
    pub fn consumers(&self) -> usize {
        self.groups.iter().map(|g| g.consumers.len()).sum()
    }
}

fn full_groups(info: &BTreeMap<String, Value>) -> Vec<GroupDetail> {
    let mut out = Vec::new();
    for g in array(info.get("groups").cloned().unwrap_or(Value::Nil)) {
        let g = pairs(g);
        let pending = array(g.get("pending").cloned().unwrap_or(Value::Nil))
            .into_iter()
            .map(|p| {
                let mut it = array(p).into_iter();
                let id = text(it.next().unwrap_or(Value::Nil));
                let consumer = bytes(it.next().unwrap_or(Value::Nil));
                let delivery_time = Some(int(it.next().unwrap_or(Value::Int(-1))));
                let delivery_count = int(it.next().unwrap_or(Value::Int(-1)));
                PendingDetail {
                    id,
                    consumer,
                    delivery_count,
                    delivery_time,
                }
            })
            .collect();
        let mut consumers: Vec<ConsumerDetail> =
            array(g.get("consumers").cloned().unwrap_or(Value::Nil))
                .into_iter()
                .map(|c| {
                    let c = pairs(c);
                    ConsumerDetail {
                        name: c.get("name").cloned().map(bytes).unwrap_or_default(),
                        pel_count: c.get("pel-count").cloned().map_or(-1, int),
                        seen_time: c.get("seen-time").cloned().map(int),
                        active_time: c.get("active-time").cloned().map(int),
                    }
                })
                .collect();
        consumers.sort();
        out.push(GroupDetail {
            name: g.get("name").cloned().map(bytes).unwrap_or_default(),
            last_delivered_id: g
                .get("last-delivered-id")
                .cloned()
                .map(text)
                .unwrap_or_default(),
            entries_read: g.get("entries-read").and_then(|v| match v {
                Value::Nil => None,
                v => Some(int(v.clone())),
            }),
            pending,
            consumers,
        });
    }
    out
}

/// Before 6.0 there is no FULL form: groups, consumers and pending entries one by one,
/// without times.
fn brief_groups(server: &Server, key: &[u8]) -> Vec<GroupDetail> {
    let mut out = Vec::new();
    for g in array(server.cmd(&[b"XINFO", b"GROUPS", key])) {
        let g = pairs(g);
        let name = g.get("name").cloned().map(bytes).unwrap_or_default();
        let pending = array(server.cmd(&[b"XPENDING", key, &name, b"-", b"+", b"1000000"]))
            .into_iter()
            .map(|p| {
                let mut it = array(p).into_iter();
                PendingDetail {
                    id: text(it.next().unwrap_or(Value::Nil)),
                    consumer: bytes(it.next().unwrap_or(Value::Nil)),
                    delivery_count: -1,
                    delivery_time: None,
                }
            })
            .collect();
        let mut consumers: Vec<ConsumerDetail> =
            array(server.cmd(&[b"XINFO", b"CONSUMERS", key, &name]))
                .into_iter()
                .map(|c| {
                    let c = pairs(c);
                    ConsumerDetail {
                        name: c.get("name").cloned().map(bytes).unwrap_or_default(),
                        pel_count: c.get("pending").cloned().map_or(-1, int),
                        seen_time: None,
                        active_time: None,
                    }
                })
                .collect();
        consumers.sort();
        out.push(GroupDetail {
            name,
            last_delivered_id: g
                .get("last-delivered-id")
                .cloned()
                .map(text)
                .unwrap_or_default(),
            entries_read: None,
            pending,
            consumers,
        });
    }
    out
}

fn pending_counts(server: &Server, key: &[u8], group: &[u8]) -> BTreeMap<String, i64> {
    array(server.cmd(&[b"XPENDING", key, group, b"-", b"+", b"1000000"]))
        .into_iter()
        .map(|p| {
            let v = array(p);
            let id = text(v.first().cloned().unwrap_or(Value::Nil));
            let count = v.get(3).cloned().map_or(-1, int);
            (id, count)
        })
        .collect()
}
