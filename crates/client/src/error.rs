//! Connection errors, worded for the operator: what failed, where, and which flag to check.

use std::fmt;
use std::io;

use crate::endpoint::Endpoint;
use crate::reply::{Retry, ServerError};
use crate::tls::TlsProblem;

/// Which side of the migration a connection belongs to; it decides the wording
/// of errors ("check --password" for the source, "check --auth" for the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn password_flag(self) -> &'static str {
        match self {
            Side::Source => "--password (or --password-file)",
            Side::Target => "--auth (or --auth-file)",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection refused by {side} {endpoint}: is the server running there, and is the port right?")]
    Refused { side: Side, endpoint: Endpoint },
    #[error("cannot reach {side} {endpoint}: {source}")]
    Unreachable {
        side: Side,
        endpoint: Endpoint,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {secs}s connecting to {side} {endpoint}: check the address and any firewall")]
    ConnectTimeout {
        side: Side,
        endpoint: Endpoint,
        secs: u64,
    },
    #[error("authentication failed for {side} {endpoint}: check {flag} ({detail})", flag = side.password_flag())]
    AuthFailed {
        side: Side,
        endpoint: Endpoint,
        detail: String,
    },
    #[error("TLS with {side} {endpoint} failed: {advice}", advice = problem.advice(*side))]
    Tls {
        side: Side,
        endpoint: Endpoint,
        problem: TlsProblem,
    },
    #[error("{side} {endpoint} closed the connection at the first command without a reply: it is probably a TLS port; connect with --{side}-tls (or a rediss:// address)")]
    PlainToTls { side: Side, endpoint: Endpoint },
    #[error("{side} {endpoint} requires a password: give it with {flag}", flag = side.password_flag())]
    AuthRequired { side: Side, endpoint: Endpoint },
    #[error("timed out after {secs}s waiting for {side} {endpoint} to answer")]
    Timeout {
        side: Side,
        endpoint: Endpoint,
        secs: u64,
    },
    #[error("{side} {endpoint} closed the connection")]
    Closed { side: Side, endpoint: Endpoint },
    #[error("lost the connection to {side} {endpoint}: {source}")]
    Io {
        side: Side,
        endpoint: Endpoint,
        #[source]
        source: io::Error,
    },
    #[error("{side} {endpoint} sent something that is not RESP: {source}")]
    Protocol {
        side: Side,
        endpoint: Endpoint,
        #[source]
        source: rsm_resp::RespError,
    },
    #[error("{side} {endpoint} answered {command} with {reply}, which that command never returns")]
    Unexpected {
        side: Side,
        endpoint: Endpoint,
        command: &'static str,
        reply: String,
    },
    #[error("{side} {endpoint} refused {command}: {message}")]
    Server {
        side: Side,
        endpoint: Endpoint,
        command: String,
        /// The refusal, classified once: callers decide by this, never by `message`.
        kind: ServerError,
        message: String,
    },
}

impl ClientError {
    /// True when retrying the same thing later could succeed (the network or a
    /// restarting server), false when the operator must change something.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Refused { .. }
            | ClientError::Unreachable { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::Timeout { .. }
            | ClientError::Closed { .. }
            | ClientError::Io { .. } => true,
            // Most likely a TLS port (the message says so, and startup checks stop on
            // it), but a server going down can also close at the first command: a
            // long-running sync keeps retrying rather than giving up on one reconnect.
            ClientError::PlainToTls { .. } => true,
            // A server that is loading, busy or out of memory may answer later.
            ClientError::Server { kind, .. } => kind.retry() == Retry::Backoff,
            // A handshake cut by the network may work next time; a certificate
            // or a port of the wrong kind will not.
            ClientError::Tls { problem, .. } => {
                matches!(problem, TlsProblem::Other(_) | TlsProblem::NoAnswer { .. })
            }
            _ => false,
        }
    }
}
