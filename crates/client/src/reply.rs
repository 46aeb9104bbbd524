//! Classify a server's error reply once, into what the caller should do about it.
//!
//! Call sites match on `ServerError`, never on error strings.

use crate::endpoint::Endpoint;

/// An error reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// `MOVED slot host:port`: the slot lives elsewhere for good; refresh the map.
    /// `endpoint` is `None` when the server sent an empty host, meaning "the host you are on".
    Moved {
        slot: u16,
        host: Option<String>,
        port: u16,
    },
    /// `ASK slot host:port`: send `ASKING` and this one command to that node.
    Ask {
        slot: u16,
        host: Option<String>,
        port: u16,
    },
    /// `TRYAGAIN`: a multi-key command during a slot move; back off and retry.
    TryAgain,
    /// `CLUSTERDOWN`: the slot is unserved or the cluster failed; retry later.
    ClusterDown,
    /// `LOADING`: the server is loading its dataset; retry later.
    Loading,
    /// `BUSY`: a script is running; retry later.
    Busy,
    /// `-OOM`: the target is out of memory; retry later, loudly.
    OutOfMemory,
    /// `MASTERDOWN` / `READONLY`: we reached a replica; refresh the topology.
    NotMaster,
    /// `CROSSSLOT`: split the command per slot.
    CrossSlot,
    /// `BUSYKEY`: RESTORE found the key already there (no REPLACE).
    BusyKey,
    /// `NOAUTH` / `WRONGPASS`.
    Auth,
    /// `NOPERM`: the user's ACL does not allow the command.
    NoPerm,
    /// `NOMASTERLINK`: a replica whose own master link is down refuses to be synced from.
    NoMasterLink,
    /// `WRONGTYPE`: the key holds another type.
    WrongType,
    /// `ERR Bad data format` / `ERR DUMP payload version or checksum are wrong`: a RESTORE
    /// payload this server cannot read (a newer or foreign RDB version, a type it lacks).
    BadPayload,
    /// `ERR unknown command …`: the server does not know the command, or it was renamed
    /// or disabled (`rename-command PSYNC ""`, as managed services do).
    UnknownCommand,
    /// Anything else: the command itself was refused.
    Other(String),
}

/// What to do about a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Re-send to another node (MOVED/ASK).
    Redirect,
    /// The same node, after a pause.
    Backoff,
    /// Re-read the slot map, then re-send.
    RefreshTopology,
    /// Retrying will not help: count it and report it.
    Fail,
}

impl ServerError {
    pub fn classify(text: &[u8]) -> ServerError {
        // Escaped once here, so `Other`'s text is safe wherever it is printed.
        let text = rsm_resp::escape_controls(text);
        let mut words = text.split_ascii_whitespace();
        let code = words.next().unwrap_or("");
        let redirect = |mut words: std::str::SplitAsciiWhitespace<'_>| {
            let slot: u16 = words.next()?.parse().ok()?;
            let addr = words.next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = (!host.is_empty() && host != "?").then(|| host.to_string());
            Some((slot, host, port.parse().ok()?))
        };
        match code {
            "MOVED" => match redirect(words) {
                Some((slot, host, port)) => ServerError::Moved { slot, host, port },
                None => ServerError::Other(text),
            },
            "ASK" => match redirect(words) {
                Some((slot, host, port)) => ServerError::Ask { slot, host, port },
                None => ServerError::Other(text),
            },
            "TRYAGAIN" => ServerError::TryAgain,
            "CLUSTERDOWN" => ServerError::ClusterDown,
            "LOADING" => ServerError::Loading,
            "BUSY" => ServerError::Busy,
            "OOM" => ServerError::OutOfMemory,
            "MASTERDOWN" | "READONLY" => ServerError::NotMaster,
            "CROSSSLOT" => ServerError::CrossSlot,
            "BUSYKEY" => ServerError::BusyKey,
            "NOAUTH" | "WRONGPASS" => ServerError::Auth,
            "NOPERM" => ServerError::NoPerm,
            "NOMASTERLINK" => ServerError::NoMasterLink,
            "WRONGTYPE" => ServerError::WrongType,
            // Generic errors; these two texts are the only way RESTORE says "not this payload".
            "ERR" if text.contains("Bad data format") || text.contains("payload version") => {
                ServerError::BadPayload
            }
            // Redis 5.0 to Valkey 9.1 all start so ("'PSYNC'" or "`PSYNC`" after it).
            "ERR" if text.starts_with("ERR unknown command") => ServerError::UnknownCommand,
            _ => ServerError::Other(text),
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            ServerError::Moved { .. } | ServerError::Ask { .. } => Retry::Redirect,
            ServerError::TryAgain
            | ServerError::ClusterDown
            | ServerError::Loading
            | ServerError::Busy
            | ServerError::OutOfMemory => Retry::Backoff,
            ServerError::NotMaster => Retry::RefreshTopology,
            // A replica whose master link is down may be fine again later.
            ServerError::NoMasterLink => Retry::Backoff,
            ServerError::CrossSlot
            | ServerError::BusyKey
            | ServerError::Auth
            | ServerError::NoPerm
            | ServerError::WrongType
            | ServerError::BadPayload
            | ServerError::UnknownCommand
            | ServerError::Other(_) => Retry::Fail,
        }
    }

    /// Where a redirect points, given the node that sent it (an empty host in
    /// the reply means "the same host as the node you asked").
    pub fn redirect_target(&self, asked: &Endpoint) -> Option<Endpoint> {
        match self {
            ServerError::Moved { host, port, .. } | ServerError::Ask { host, port, .. } => Some(
                Endpoint::new(host.clone().unwrap_or_else(|| asked.host.clone()), *port),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert_eq!(
            ServerError::classify(b"MOVED 3999 127.0.0.1:6381"),
            ServerError::Moved {
                slot: 3999,
                host: Some("127.0.0.1".into()),
                port: 6381
            }
        );
        let ask = ServerError::classify(b"ASK 12182 :21512");
        assert_eq!(
            ask,
            ServerError::Ask {
                slot: 12182,
                host: None,
                port: 21512
            }
        );
        assert_eq!(
            ask.redirect_target(&Endpoint::new("10.0.0.1", 1)),
            Some(Endpoint::new("10.0.0.1", 21512))
        );
        assert_eq!(
            ServerError::classify(b"MOVED 1 [::1]:7000").redirect_target(&Endpoint::new("x", 1)),
            Some(Endpoint::new("::1", 7000))
        );
        assert_eq!(ServerError::classify(b"MOVED x").retry(), Retry::Fail);
    }

    #[test]
    fn refusals_by_kind() {
        assert_eq!(
            ServerError::classify(b"ERR Bad data format"),
            ServerError::BadPayload
        );
        assert_eq!(
            ServerError::classify(b"ERR DUMP payload version or checksum are wrong"),
            ServerError::BadPayload
        );
        assert_eq!(
            ServerError::classify(b"NOPERM User x has no permissions to run the 'psync' command"),
            ServerError::NoPerm
        );
        assert_eq!(
            ServerError::classify(b"NOMASTERLINK Can't SYNC while not connected with my master"),
            ServerError::NoMasterLink
        );
        assert_eq!(
            ServerError::classify(
                b"WRONGTYPE Operation against a key holding the wrong kind of value"
            )
            .retry(),
            Retry::Fail
        );
        for text in [
            &b"ERR unknown command 'HSETEX'"[..],
            b"ERR unknown command 'PSYNC', with args beginning with: '?' '-1' ",
            b"ERR unknown command `PSYNC`, with args beginning with: `?`, `-1`, ",
        ] {
            let kind = ServerError::classify(text);
            assert_eq!(kind, ServerError::UnknownCommand);
            assert_eq!(kind.retry(), Retry::Fail);
        }
        assert!(matches!(
            ServerError::classify(b"ERR unknown subcommand 'x'"),
            ServerError::Other(_)
        ));
    }

    #[test]
    fn retry_classes() {
        assert_eq!(
            ServerError::classify(b"TRYAGAIN Multiple keys request during rehashing of slot")
                .retry(),
            Retry::Backoff
        );
        assert_eq!(
            ServerError::classify(b"CLUSTERDOWN Hash slot not served").retry(),
            Retry::Backoff
        );
        assert_eq!(
            ServerError::classify(b"OOM command not allowed").retry(),
            Retry::Backoff
        );
        assert_eq!(
            ServerError::classify(b"READONLY You can't write against a read only replica.").retry(),
            Retry::RefreshTopology
        );
        assert_eq!(
            ServerError::classify(b"BUSYKEY Target key name already exists.").retry(),
            Retry::Fail
        );
        assert_eq!(
            ServerError::classify(b"ERR Bad data format").retry(),
            Retry::Fail
        );
    }
}
