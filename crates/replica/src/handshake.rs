//! Becoming a replica of one source node: authenticate, announce ourselves,
//! ask for a partial or full sync, and read the snapshot's transfer header.
//!
//! Observed on every server from Redis 5.0 to Valkey 9.1 (reference §D1–D2).
//! Bare `\n` keep-alives can arrive before any reply line while the source
//! forks for BGSAVE; they are skipped here and do not count in offsets.

use std::time::Duration;

use rsm_client::{
    ClientError, ConnectOptions, Connection, Endpoint, ServerError, ServerVersion, Side,
};
use rsm_resp::{decode, skip_newlines, Frame};

use super::ReplicaError;

/// The newest Valkey version whose snapshot format (`VALKEY080`) we decode.
/// Valkey 9.1 sends RDB 11 to replicas that do not announce ≥ 9.0, and then
/// drops the sync for keys RDB 11 cannot hold, so we announce this one.
pub const VALKEY_VERSION_ANNOUNCED: &str = "9.1.2";

/// Announced to the source as `REPLCONF listening-port`. The source shows it as the
/// replica's port in `INFO replication` and `ROLE`, and Sentinel and operators dial it
/// as a Redis server. We serve none (the HTTP port is no Redis, and the connection's
/// own local port is no listening one): 0 says so, is what every source from Redis 5.0
/// to Valkey 9.1 accepts, and our connection is still found through `CLIENT LIST`
/// (`flags=S`).
pub const LISTENING_PORT_ANNOUNCED: u16 = 0;

/// Where the replication continues from, when the target records one (the shard's floor
/// and the replid it counts in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The history the offset counts in. A source continues only within its own, or one
    /// its `replid2` continues (a replica promoted since).
    pub replid: String,
    /// The last stream offset already applied to the target.
    pub applied: u64,
}

/// What the source agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStart {
    /// A snapshot follows; the stream continues from `offset` (the source's offset when
    /// the snapshot was taken: its first byte is `offset + 1`).
    Full { replid: String, offset: u64 },
    /// No snapshot; the stream continues right after `offset`, our resume point: the
    /// source sends only what the target lacks.
    Continue { replid: String, offset: u64 },
}

/// How the snapshot is framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbFraming {
    /// `$<len>`: a disk-based transfer of exactly `len` bytes.
    Sized(u64),
    /// `$EOF:<mark>`: a diskless transfer that ends with the 40-byte mark.
    EofMark([u8; 40]),
}

/// Facts about the source learnt during the handshake.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    /// `None` when `INFO server` names no version.
    pub version: Option<ServerVersion>,
}

impl SourceInfo {
    /// For the log: the server and version, or that none was named.
    pub fn describe(&self) -> String {
        match &self.version {
            Some(v) => v.to_string(),
            None => "unknown server".into(),
        }
    }
}

/// Connect, authenticate and send the replica handshake up to PSYNC's reply.
pub async fn handshake(
    endpoint: &Endpoint,
    source: &ConnectOptions,
    resume: Option<&ResumePoint>,
) -> Result<(Connection, SourceInfo, SyncStart), ReplicaError> {
    handshake_with(endpoint, source, resume, || {}).await
}

/// As [`handshake`], calling `psync_sent` once PSYNC is on its way: a diskless
/// source only answers after `repl-diskless-sync-delay` and its fork, and the
/// caller's status should say it is waiting for the source, not handshaking.
pub async fn handshake_with(
    endpoint: &Endpoint,
    source: &ConnectOptions,
    resume: Option<&ResumePoint>,
    psync_sent: impl FnOnce(),
) -> Result<(Connection, SourceInfo, SyncStart), ReplicaError> {
    // The source side's options (credentials, TLS), with a longer limit per reply.
    let mut opts = source.clone();
    opts.io_timeout = Duration::from_secs(60);
    let mut conn = Connection::connect(endpoint, &opts).await?;

    // The server first: it decides what to announce (the version, to Valkey only), and
    // the log names it.
    let info = conn.info("server").await?;
    let source = SourceInfo {
        version: ServerVersion::from_info(&info),
    };

    let port = LISTENING_PORT_ANNOUNCED.to_string();
    conn.request_ok(&["REPLCONF", "listening-port", &port])
        .await?;
    // `eof`: we read a diskless transfer (`$EOF:<mark>`), so a diskless source need not
    // write its snapshot to disk for us. `psync2`: `+CONTINUE` names the source's id now
    // (a promoted node's new one), which the next resume must use.
    conn.request_ok(&["REPLCONF", "capa", "eof", "capa", "psync2"])
        .await?;
    if source
        .version
        .as_ref()
        .is_some_and(ServerVersion::is_valkey)
    {
        // Redis rejects this option; only Valkey negotiates the snapshot format.
        conn.request_ok(&["REPLCONF", "version", VALKEY_VERSION_ANNOUNCED])
            .await?;
    }

    // From the first byte not yet applied; `? -1` asks for a full sync.
    let (replid, offset) = match resume {
        Some(r) => (r.replid.clone(), (r.applied + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    // Sent, not requested: the reply may take minutes (the fork, the diskless delay) and
    // is read with a limit of its own.
    conn.send(&["PSYNC", &replid, &offset]);
    conn.flush().await?;
    psync_sent();
    let line = read_reply_line(&mut conn).await?;
    let start = parse_psync_reply(&line, endpoint, resume)?;
    Ok((conn, source, start))
}

/// Read one simple-string/error reply, skipping keep-alive newlines.
async fn read_reply_line(conn: &mut Connection) -> Result<Frame, ReplicaError> {
    let endpoint = conn.endpoint().clone();
    let reader = conn.reader_mut();
    let wait = async {
        loop {
            // Newlines come only while the source prepares: never part of a reply, never
            // counted in an offset.
            skip_newlines(reader.buffer_mut());
            if let Some((frame, _)) =
                decode(reader.buffer_mut()).map_err(|source| ClientError::Protocol {
                    side: Side::Source,
                    endpoint: endpoint.clone(),
                    source,
                })?
            {
                return Ok::<Frame, ReplicaError>(frame);
            }
            reader.fill().await?;
        }
    };
    // The source may wait for `repl-diskless-sync-delay` or a running BGSAVE
    // before answering; it sends newlines meanwhile, so a long limit is right.
    tokio::time::timeout(Duration::from_secs(300), wait)
        .await
        .map_err(|_| {
            ReplicaError::Stalled(format!("{endpoint} did not answer PSYNC within 300s"))
        })?
}

/// `+FULLRESYNC <replid> <offset>`, `+CONTINUE [<replid>]`, or a refusal classified
/// once, with a hint the operator can act on.
fn parse_psync_reply(
    reply: &Frame,
    endpoint: &Endpoint,
    resume: Option<&ResumePoint>,
) -> Result<SyncStart, ReplicaError> {
    if let Some(err) = reply.as_error() {
        let text = rsm_resp::escape_controls(err);
        let kind = ServerError::classify(err);
        return Err(ReplicaError::Refused {
            endpoint: endpoint.clone(),
            hint: refusal_hint(&kind),
            kind,
            message: text,
        });
    }
    let Some(text) = reply.as_bytes() else {
        return Err(ReplicaError::Protocol(format!(
            "unexpected PSYNC reply {}",
            reply.describe()
        )));
    };
    let text = String::from_utf8_lossy(text);
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some("FULLRESYNC") => {
            let replid = words.next().unwrap_or_default().to_string();
            let offset = words.next().and_then(|o| o.parse().ok()).ok_or_else(|| {
                ReplicaError::Protocol(format!("malformed FULLRESYNC reply {text:?}"))
            })?;
            Ok(SyncStart::Full { replid, offset })
        }
        Some("CONTINUE") => {
            let Some(resume) = resume else {
                return Err(ReplicaError::Protocol(
                    "CONTINUE without a resume point".into(),
                ));
            };
            // Without psync2 the id is omitted; with it, a failover may have
            // given the source a new id that continues the old history.
            let replid = words
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| resume.replid.clone());
            // The source sends from `applied + 1`: the stream continues right after what is
            // already in the target.
            Ok(SyncStart::Continue {
                replid,
                offset: resume.applied,
            })
        }
        _ => Err(ReplicaError::Protocol(format!(
            "unexpected PSYNC reply {text:?}"
        ))),
    }
}

/// What the operator can do about a refusal, by its kind.
fn refusal_hint(kind: &ServerError) -> &'static str {
    match kind {
        ServerError::NoPerm => "the source user needs the ACL permissions +psync +replconf +ping",
        ServerError::NoMasterLink => {
            "the chosen node is a replica whose own master link is down; try --sync-role=master"
        }
        ServerError::Loading => "the source is loading its dataset; it will be retried",
        ServerError::Auth => "check --password (or --password-file)",
        // Managed services rename or disable PSYNC and SYNC: no replica can attach there.
        ServerError::UnknownCommand => {
            "replication is disabled on this source (PSYNC and SYNC renamed or turned off, as managed services do): enable it there, or copy a backup with `redis-port restore`"
        }
        _ => "see the source's log",
    }
}

/// Read the snapshot header (`$<len>` or `$EOF:<mark>`) that follows FULLRESYNC.
pub async fn read_rdb_framing(conn: &mut Connection) -> Result<RdbFraming, ReplicaError> {
    let reader = conn.reader_mut();
    loop {
        // Keep-alives: a disk-based source sends newlines while it saves, between
        // `+FULLRESYNC` and `$<len>`.
        skip_newlines(reader.buffer_mut());
        let buf = reader.buffer_mut();
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            // Only the header leaves the buffer: snapshot bytes read with it stay there for
            // the link to read first.
            let line = buf.split_to(nl + 1);
            let line = line.strip_suffix(b"\r\n").unwrap_or(&line[..]);
            let Some(rest) = line.strip_prefix(b"$") else {
                return Err(ReplicaError::Protocol(format!(
                    "expected the snapshot header, got '{}'",
                    rsm_resp::escape_controls(line.get(..80).unwrap_or(line))
                )));
            };
            // Diskless: the size is unknown, and these 40 bytes will end the transfer.
            if let Some(mark) = rest.strip_prefix(b"EOF:") {
                let mark: [u8; 40] = mark.try_into().map_err(|_| {
                    ReplicaError::Protocol(format!("EOF mark of {} bytes, expected 40", mark.len()))
                })?;
                return Ok(RdbFraming::EofMark(mark));
            }
            let len = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    ReplicaError::Protocol(format!(
                        "bad snapshot length '{}'",
                        rsm_resp::escape_controls(rest)
                    ))
                })?;
            // Disk-based: exactly this many bytes follow.
            return Ok(RdbFraming::Sized(len));
        }
        // The header is one short line: 1 KiB without a newline is not one, and waiting
        // for more would only grow the buffer.
        if buf.len() > 1024 {
            return Err(ReplicaError::Protocol(
                "snapshot header line longer than 1 KiB".into(),
            ));
        }
        reader.fill().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn simple(s: &str) -> Frame {
        Frame::Simple(Bytes::from(s.to_string()))
    }

    #[test]
    fn psync_replies() {
        let ep = Endpoint::new("127.0.0.1", 7000);
        // A full sync: the stream will start right after the snapshot's offset.
        let full = parse_psync_reply(&simple("FULLRESYNC 8f1c 1234"), &ep, None).unwrap();
        assert_eq!(
            full,
            SyncStart::Full {
                replid: "8f1c".into(),
                offset: 1234
            }
        );
        let resume = ResumePoint {
            replid: "old".into(),
            applied: 99,
        };
        // With psync2, a failover's new id; the offset is ours, not the reply's.
        assert_eq!(
            parse_psync_reply(&simple("CONTINUE new"), &ep, Some(&resume)).unwrap(),
            SyncStart::Continue {
                replid: "new".into(),
                offset: 99
            }
        );
        // Without psync2 the id is left out: the one we asked with holds.
        assert_eq!(
            parse_psync_reply(&simple("CONTINUE"), &ep, Some(&resume)).unwrap(),
            SyncStart::Continue {
                replid: "old".into(),
                offset: 99
            }
        );
        // Refusals carry a hint the operator can act on.
        let err = parse_psync_reply(&Frame::Error(Bytes::from_static(b"NOPERM no")), &ep, None)
            .unwrap_err();
        assert!(err.to_string().contains("+psync"), "{err}");
        let unknown = b"ERR unknown command 'PSYNC', with args beginning with: '?' '-1' ";
        let err =
            parse_psync_reply(&Frame::Error(Bytes::from_static(unknown)), &ep, None).unwrap_err();
        assert!(err.to_string().contains("replication is disabled"), "{err}");
        // No offset: every offset after it would be a guess.
        assert!(parse_psync_reply(&simple("FULLRESYNC x"), &ep, None).is_err());
    }
}
