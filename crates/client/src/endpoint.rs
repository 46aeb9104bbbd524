//! `HOST:PORT` as the operator writes it, validated before any socket opens.

use std::fmt;
use std::str::FromStr;

/// A node address. IPv6 literals must be bracketed (`[::1]:7000`), because an
/// unbracketed `::1:7000` cannot be told apart from the address `::1:7000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("expected HOST:PORT, got {0:?}")]
    MissingPort(String),
    #[error("expected a port number from 1 to 65535 in {0:?}")]
    BadPort(String),
    #[error("empty host in {0:?}")]
    EmptyHost(String),
    #[error("IPv6 addresses need brackets, as in [::1]:7000; got {0:?}")]
    UnbracketedIpv6(String),
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// The form `TcpStream::connect` accepts.
    pub fn socket_addr_string(&self) -> String {
        self.to_string()
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| EndpointError::MissingPort(s.into()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| EndpointError::MissingPort(s.into()))?;
            (host, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| EndpointError::MissingPort(s.into()))?;
            if host.contains(':') {
                return Err(EndpointError::UnbracketedIpv6(s.into()));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(EndpointError::EmptyHost(s.into()));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| EndpointError::BadPort(s.into()))?;
        Ok(Endpoint::new(host, port))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_ports() {
        assert_eq!(
            "127.0.0.1:7000".parse(),
            Ok(Endpoint::new("127.0.0.1", 7000))
        );
        assert_eq!(
            "redis.local:6379".parse(),
            Ok(Endpoint::new("redis.local", 6379))
        );
        assert_eq!("[::1]:7000".parse(), Ok(Endpoint::new("::1", 7000)));
        assert_eq!(Endpoint::new("::1", 7000).to_string(), "[::1]:7000");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:70000",
            ":7000",
            "::1:7000",
            "[::1]7000",
            "[::1]",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        assert!(matches!(
            "::1:7000".parse::<Endpoint>(),
            Err(EndpointError::UnbracketedIpv6(_))
        ));
    }
}
