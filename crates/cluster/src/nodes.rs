//! Parsing `CLUSTER NODES` text into typed [`Node`]s.
//!
//! The first step of planning a migration: the manager asks each source master for
//! `CLUSTER NODES`, parses it here, and hands the nodes to [`crate::topology`]. Every field of a
//! line is parsed and checked (format in redis-internals.md §E1), and a malformed line is a
//! [`NodesError`] naming its line number, never a panic: the text comes from the network.
//!
//! ```text
//! <id> <ip>:<port>@<cport>[,<hostname>] <flags> <master-id|-> <ping-sent> <pong-recv> <epoch> <link> <slot>… [<marker>…]
//! ```

use std::fmt;

use thiserror::Error;

use crate::slot::{Slot, SlotRange};

/// Length of a cluster node id (`CLUSTER_NAMELEN`): 40 hex characters.
pub const CLUSTER_NAMELEN: usize = 40;

/// A cluster node id: 40 lowercase-or-uppercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// `Some` if `s` is 40 hex characters.
    pub fn new(s: &str) -> Option<NodeId> {
        (s.len() == CLUSTER_NAMELEN && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| NodeId(s.to_string()))
    }

    /// The id given to a non-cluster source's one node: 40 hex zeros.
    pub fn standalone() -> NodeId {
        NodeId(crate::topology::STANDALONE_NODE_ID.to_string())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a node listens: `ip:port@cport[,hostname]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// IP as printed (IPv6 without brackets). Empty on a fresh node that has not learnt its own
    /// address yet, and possibly on `noaddr` nodes.
    pub host: String,
    /// Client port (the TLS port for TLS clients).
    pub port: u16,
    /// Cluster bus port; `None` on pre-4.0 output, which had no `@cport`.
    pub cport: Option<u16>,
    /// `cluster-announce-hostname` (7.0+), if set.
    pub hostname: Option<String>,
}

impl NodeAddr {
    /// `host:port` for connecting, with IPv6 hosts in brackets (`[::1]:7000`). An empty host is
    /// replaced by `empty_host` (use the host the `CLUSTER NODES` reply came from).
    pub fn endpoint(&self, empty_host: &str) -> String {
        let host = if self.host.is_empty() {
            empty_host
        } else {
            &self.host
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.endpoint(""))
    }
}

/// The flags field. Unknown flags (from a newer server) are kept in `other`, not rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeFlags {
    /// `myself`: the line of the node that answered.
    pub myself: bool,
    pub master: bool,
    /// `slave`.
    pub replica: bool,
    /// `fail?`: this node suspects it is down (PFAIL).
    pub pfail: bool,
    /// `fail`: a majority of masters agreed it is down.
    pub fail: bool,
    /// `handshake`: not yet trusted.
    pub handshake: bool,
    /// `noaddr`: address unknown.
    pub noaddr: bool,
    /// `nofailover`: a replica that will not fail over.
    pub nofailover: bool,
    /// Flags this parser does not know.
    pub other: Vec<String>,
}

impl NodeFlags {
    fn parse(field: &str) -> NodeFlags {
        let mut f = NodeFlags::default();
        for flag in field.split(',') {
            match flag {
                "myself" => f.myself = true,
                "master" => f.master = true,
                "slave" => f.replica = true,
                "fail?" => f.pfail = true,
                "fail" => f.fail = true,
                "handshake" => f.handshake = true,
                "noaddr" => f.noaddr = true,
                "nofailover" => f.nofailover = true,
                "noflags" | "" => {}
                other => f.other.push(other.to_string()),
            }
        }
        f
    }

    /// `fail` or `fail?`.
    pub fn failing(&self) -> bool {
        self.fail || self.pfail
    }
}

impl fmt::Display for NodeFlags {
    /// In the server's order, `noflags` if none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = [
            (self.myself, "myself"),
            (self.master, "master"),
            (self.replica, "slave"),
            (self.pfail, "fail?"),
            (self.fail, "fail"),
            (self.handshake, "handshake"),
            (self.noaddr, "noaddr"),
            (self.nofailover, "nofailover"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        names.extend(self.other.iter().map(String::as_str));
        if names.is_empty() {
            f.write_str("noflags")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// The state of the cluster-bus link to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    Connected,
    Disconnected,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub addr: NodeAddr,
    pub flags: NodeFlags,
    /// The master of a replica; `None` for `-`.
    pub master_id: Option<NodeId>,
    /// Milliseconds (unix time) of the pending ping, 0 if none.
    pub ping_sent: u64,
    /// Milliseconds (unix time) of the last pong received.
    pub pong_recv: u64,
    pub config_epoch: u64,
    pub link: LinkState,
    /// Served slots, in the order printed.
    pub slots: Vec<SlotRange>,
    /// `[slot->-target]`: slots this node is migrating away, with the target id. Only on the
    /// `myself` line.
    pub migrating: Vec<(Slot, NodeId)>,
    /// `[slot-<-source]`: slots this node is importing, with the source id. Only on `myself`.
    pub importing: Vec<(Slot, NodeId)>,
}

impl Node {
    /// A master (by flag).
    pub fn is_master(&self) -> bool {
        self.flags.master
    }

    /// A replica (by flag).
    pub fn is_replica(&self) -> bool {
        self.flags.replica
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(SlotRange::len).sum()
    }
}

/// What is wrong with one `CLUSTER NODES` line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeLineError {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("bad node id {0:?} (expected 40 hex characters)")]
    BadId(String),
    #[error("bad address {0:?} (expected ip:port@cport[,hostname])")]
    BadAddress(String),
    #[error("bad master id {0:?} (expected 40 hex characters or `-`)")]
    BadMasterId(String),
    #[error("bad number {value:?} in field `{field}`")]
    BadNumber { field: &'static str, value: String },
    #[error("bad link state {0:?} (expected connected or disconnected)")]
    BadLinkState(String),
    #[error("bad slot or slot range {0:?}")]
    BadSlot(String),
    #[error("bad migration marker {0:?} (expected [slot->-id] or [slot-<-id])")]
    BadMarker(String),
}

/// A `CLUSTER NODES` line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("CLUSTER NODES line {line}: {kind}")]
pub struct NodesError {
    /// 1-based line number.
    pub line: usize,
    pub kind: NodeLineError,
}

/// Parses a whole `CLUSTER NODES` reply; blank lines are skipped.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<Node>, NodesError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_node_line(l).map_err(|kind| NodesError { line: i + 1, kind }))
        .collect()
}

/// Parses one line.
pub fn parse_node_line(line: &str) -> Result<Node, NodeLineError> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = |name: &'static str| fields.next().ok_or(NodeLineError::MissingField(name));
    let id = next("id")?;
    let id = NodeId::new(id).ok_or_else(|| NodeLineError::BadId(id.to_string()))?;
    let addr = parse_addr(next("address")?)?;
    let flags = NodeFlags::parse(next("flags")?);
    let master = next("master")?;
    let master_id = match master {
        "-" => None,
        m => Some(NodeId::new(m).ok_or_else(|| NodeLineError::BadMasterId(m.to_string()))?),
    };
    let ping_sent = parse_num("ping-sent", next("ping-sent")?)?;
    let pong_recv = parse_num("pong-recv", next("pong-recv")?)?;
    let config_epoch = parse_num("config-epoch", next("config-epoch")?)?;
    let link = match next("link-state")? {
        "connected" => LinkState::Connected,
        "disconnected" => LinkState::Disconnected,
        other => return Err(NodeLineError::BadLinkState(other.to_string())),
    };
    let mut node = Node {
        id,
        addr,
        flags,
        master_id,
        ping_sent,
        pong_recv,
        config_epoch,
        link,
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for f in fields {
        if f.starts_with('[') {
            parse_marker(f, &mut node)?;
        } else {
            node.slots.push(parse_range(f)?);
        }
    }
    Ok(node)
}

fn parse_num(field: &'static str, s: &str) -> Result<u64, NodeLineError> {
    s.parse().map_err(|_| NodeLineError::BadNumber {
        field,
        value: s.to_string(),
    })
}

/// `ip:port@cport[,hostname[,key=value…]]`. The port is after the *last* colon before `@`, so
/// IPv6 hosts (`::1:7000@17000`) work; the extra `,key=value` fields are what `nodes.conf`
/// adds on 7.2+, accepted so the same parser reads that file.
fn parse_addr(field: &str) -> Result<NodeAddr, NodeLineError> {
    let bad = || NodeLineError::BadAddress(field.to_string());
    let mut parts = field.split(',');
    let main = parts.next().unwrap_or_default();
    let hostname = parts
        .next()
        .filter(|h| !h.is_empty() && !h.contains('='))
        .map(str::to_string);
    let (hostport, cport) = match main.split_once('@') {
        Some((hp, c)) => (hp, Some(c.parse::<u16>().map_err(|_| bad())?)),
        None => (main, None),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(NodeAddr {
        host: host.to_string(),
        port,
        cport,
        hostname,
    })
}

fn parse_slot(s: &str) -> Option<Slot> {
    Slot::new(s.parse().ok()?)
}

fn parse_range(f: &str) -> Result<SlotRange, NodeLineError> {
    let bad = || NodeLineError::BadSlot(f.to_string());
    let (a, b) = f.split_once('-').unwrap_or((f, f));
    let (a, b) = (
        parse_slot(a).ok_or_else(bad)?,
        parse_slot(b).ok_or_else(bad)?,
    );
    SlotRange::new(a, b).ok_or_else(bad)
}

/// `[slot->-target]` (migrating) or `[slot-<-source]` (importing).
fn parse_marker(f: &str, node: &mut Node) -> Result<(), NodeLineError> {
    let bad = || NodeLineError::BadMarker(f.to_string());
    let inner = f
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(bad)?;
    if let Some((slot, id)) = inner.split_once("->-") {
        let slot = parse_slot(slot).ok_or_else(bad)?;
        node.migrating
            .push((slot, NodeId::new(id).ok_or_else(bad)?));
    } else if let Some((slot, id)) = inner.split_once("-<-") {
        let slot = parse_slot(slot).ok_or_else(bad)?;
        node.importing
            .push((slot, NodeId::new(id).ok_or_else(bad)?));
    } else {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids from §E1, with the elided middles filled in to 40 hex characters.
    const A: &str = "1757fc84aaaaaaaaaaaaaaaaaaaaaaaaaaaa47b2";
    const B: &str = "5357897dbbbbbbbbbbbbbbbbbbbbbbbbbbbb426b";
    const C: &str = "182244f6cccccccccccccccccccccccccccccf19";
    const D: &str = "4f90dddddddddddddddddddddddddddddddd8978";

    fn line(s: &str) -> Node {
        parse_node_line(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn slot(n: u16) -> Slot {
        Slot::new(n).unwrap()
    }

    #[test]
    fn myself_master_with_hostname() {
        let n = line(&format!(
            "{A} 127.0.0.1:21510@21560,node-a.test myself,master - 0 0 1 connected 0-5460"
        ));
        assert_eq!(n.id.as_str(), A);
        assert_eq!(n.addr.host, "127.0.0.1");
        assert_eq!(n.addr.port, 21510);
        assert_eq!(n.addr.cport, Some(21560));
        assert_eq!(n.addr.hostname.as_deref(), Some("node-a.test"));
        assert!(n.flags.myself && n.flags.master && !n.flags.replica);
        assert_eq!(n.master_id, None);
        assert_eq!((n.ping_sent, n.pong_recv, n.config_epoch), (0, 0, 1));
        assert_eq!(n.link, LinkState::Connected);
        assert_eq!(n.slots, vec![SlotRange::new(slot(0), slot(5460)).unwrap()]);
        assert_eq!(n.slot_count(), 5461);
        assert_eq!(n.flags.to_string(), "myself,master");
    }

    #[test]
    fn replica_line() {
        let n = line(&format!(
            "{B} 127.0.0.1:21513@21563 slave {A} 0 1795638089625 1 connected"
        ));
        assert!(n.is_replica() && !n.is_master());
        assert_eq!(n.master_id.as_ref().map(NodeId::as_str), Some(A));
        assert_eq!(n.pong_recv, 1_795_638_089_625);
        assert!(n.slots.is_empty());
        assert_eq!(n.addr.hostname, None);
    }

    #[test]
    fn nofailover_replica() {
        let n = line(&format!(
            "{C} 127.0.0.1:21703@21753 slave,nofailover {D} 0 1795638479021 2 connected"
        ));
        assert!(n.flags.replica && n.flags.nofailover);
        assert_eq!(n.config_epoch, 2);
    }

    #[test]
    fn handshake_node() {
        let n = line(&format!(
            "{D} 127.0.0.1:21998@21999 handshake - 0 0 0 disconnected"
        ));
        assert!(n.flags.handshake && !n.flags.master);
        assert_eq!(n.link, LinkState::Disconnected);
    }

    #[test]
    fn failed_master() {
        let n = line(&format!(
            "{C} 127.0.0.1:21702@21752 master,fail - 1795638480136 1795638479122 3 disconnected 10923-16383"
        ));
        assert!(n.flags.fail && n.flags.failing() && !n.flags.pfail);
        assert_eq!(n.ping_sent, 1_795_638_480_136);
        let p = line(&format!(
            "{C} 127.0.0.1:21702@21752 master,fail? - 1 2 3 connected 10923-16383"
        ));
        assert!(p.flags.pfail && p.flags.failing() && !p.flags.fail);
        assert_eq!(p.flags.to_string(), "master,fail?");
    }

    #[test]
    fn fresh_node_with_empty_ip() {
        let n = line(&format!("{A} :21700@21750 myself,master - 0 0 0 connected"));
        assert_eq!(n.addr.host, "");
        assert_eq!(n.addr.port, 21700);
        assert_eq!(n.addr.endpoint("10.0.0.5"), "10.0.0.5:21700");
    }

    #[test]
    fn ipv6_address() {
        let n = line(&format!(
            "{A} ::1:7000@17000 master - 0 0 1 connected 1 3-4"
        ));
        assert_eq!(n.addr.host, "::1");
        assert_eq!(n.addr.port, 7000);
        assert_eq!(n.addr.cport, Some(17000));
        assert_eq!(n.addr.endpoint(""), "[::1]:7000");
        assert_eq!(n.slots.len(), 2);
        assert_eq!(n.slots[0], SlotRange::single(slot(1)));
        let full = line(&format!(
            "{A} 2001:db8::17:7000@17000,h.example master - 0 0 1 connected"
        ));
        assert_eq!(full.addr.host, "2001:db8::17");
        assert_eq!(full.addr.hostname.as_deref(), Some("h.example"));
    }

    #[test]
    fn migration_markers() {
        let n = line(&format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5460->-{B}] [6000-<-{C}]"
        ));
        assert_eq!(n.slots.len(), 1);
        assert_eq!(n.migrating, vec![(slot(5460), NodeId::new(B).unwrap())]);
        assert_eq!(n.importing, vec![(slot(6000), NodeId::new(C).unwrap())]);
    }

    #[test]
    fn noflags_noaddr_and_unknown_flags() {
        let n = line(&format!("{A} :0@0 noflags - 0 0 0 disconnected"));
        assert_eq!(n.flags, NodeFlags::default());
        assert_eq!(n.flags.to_string(), "noflags");
        let n = line(&format!(
            "{A} :0@0 master,noaddr,future-flag - 0 0 0 disconnected"
        ));
        assert!(n.flags.noaddr);
        assert_eq!(n.flags.other, vec!["future-flag".to_string()]);
    }

    #[test]
    fn nodes_conf_extras_and_old_format() {
        // 7.2+ nodes.conf writes key=value fields after the hostname slot.
        let n = line(&format!(
            "{A} 127.0.0.1:30001@40001,,tls-port=0,shard-id=abc master - 0 0 1 connected 0"
        ));
        assert_eq!(n.addr.hostname, None);
        // Pre-4.0: no @cport.
        let n = line(&format!("{A} 127.0.0.1:30001 master - 0 0 1 connected 0"));
        assert_eq!(n.addr.cport, None);
    }

    #[test]
    fn whole_reply() {
        let text = format!(
            "{A} 127.0.0.1:21510@21560 myself,master - 0 0 1 connected 0-5460\n\
             {B} 127.0.0.1:21513@21563 slave {A} 0 1795638089625 1 connected\n\n"
        );
        let nodes = parse_cluster_nodes(&text).unwrap();
        assert_eq!(nodes.len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let good = format!("{A} 127.0.0.1:1@2 master - 0 0 1 connected 0-5460");
        let cases: Vec<(String, NodeLineError)> = vec![
            (
                "abc 127.0.0.1:1@2 master - 0 0 1 connected".into(),
                NodeLineError::BadId("abc".into()),
            ),
            (
                format!("{A} 127.0.0.1@2 master - 0 0 1 connected"),
                NodeLineError::BadAddress("127.0.0.1@2".into()),
            ),
            (
                format!("{A} 127.0.0.1:x@2 master - 0 0 1 connected"),
                NodeLineError::BadAddress("127.0.0.1:x@2".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master zz 0 0 1 connected"),
                NodeLineError::BadMasterId("zz".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - x 0 1 connected"),
                NodeLineError::BadNumber {
                    field: "ping-sent",
                    value: "x".into(),
                },
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 -1 connected"),
                NodeLineError::BadNumber {
                    field: "config-epoch",
                    value: "-1".into(),
                },
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1 linked"),
                NodeLineError::BadLinkState("linked".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1"),
                NodeLineError::MissingField("link-state"),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1 connected 16384"),
                NodeLineError::BadSlot("16384".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1 connected 9-3"),
                NodeLineError::BadSlot("9-3".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1 connected [5->x]"),
                NodeLineError::BadMarker("[5->x]".into()),
            ),
            (
                format!("{A} 127.0.0.1:1@2 master - 0 0 1 connected [5=>-{B}]"),
                NodeLineError::BadMarker(format!("[5=>-{B}]")),
            ),
        ];
        for (bad, kind) in cases {
            let text = format!("{good}\n{bad}\n");
            let err = parse_cluster_nodes(&text).unwrap_err();
            assert_eq!(err, NodesError { line: 2, kind }, "{bad}");
            assert!(err.to_string().starts_with("CLUSTER NODES line 2: "));
        }
    }
}
