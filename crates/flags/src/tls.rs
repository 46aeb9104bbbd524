//! The TLS flags shared by `redis-sync-manager` (sync, verify, cleanup) and
//! `redis-port`: parsed by clap, then turned into one `TlsSettings` per side
//! before any socket opens, so a missing file or a contradiction is a usage
//! error that names the flag.
//!
//! A side uses TLS when `--source-tls` / `--target-tls` is given or its address
//! is written `rediss://HOST:PORT`. `--cacert` and `--tls-insecure` apply to
//! every side that uses TLS; the `--source-…` / `--target-…` forms override
//! them for one side.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rsm_client::{Endpoint, Side, TlsFiles, TlsSettings};

/// An address as the operator writes it: `HOST:PORT`, `redis://HOST:PORT` or
/// `rediss://HOST:PORT` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub endpoint: Endpoint,
    /// Written with the `rediss://` scheme.
    pub tls: bool,
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, String> {
        let s = s.trim();
        let (rest, tls) = if let Some(rest) = s.strip_prefix("rediss://") {
            (rest, true)
        } else if let Some(rest) = s.strip_prefix("redis://") {
            (rest, false)
        } else if s.contains("://") {
            return Err(format!(
                "expected HOST:PORT, redis://HOST:PORT or rediss://HOST:PORT, got {s:?}"
            ));
        } else {
            (s, false)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            // A password in a URL ends up in `ps` and in shell history.
            return Err("no user or password in the address: give them with the password flags (or their -file forms)".into());
        }
        if rest.contains('/') {
            return Err(format!(
                "no database path in the address {s:?}: the database is chosen with --targetdb"
            ));
        }
        let endpoint = rest.parse::<Endpoint>().map_err(|e| e.to_string())?;
        Ok(Address { endpoint, tls })
    }
}

/// `--target=HOST:PORT[,HOST:PORT…]`: the node the operator names first, and more nodes of
/// the same deployment to reach it through when that one is down for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedAddresses {
    pub first: Address,
    pub more: Vec<Endpoint>,
}

impl SeedAddresses {
    pub fn parse(s: &str) -> Result<SeedAddresses, String> {
        let mut parts = s.split(',').map(str::trim);
        let first = Address::parse(parts.next().unwrap_or_default())?;
        let mut more = Vec::new();
        for part in parts {
            if part.is_empty() {
                return Err(format!(
                    "an empty address in {s:?}: separate the nodes with commas, as in a:7000,b:7000"
                ));
            }
            let a = Address::parse(part)?;
            if a.tls != first.tls {
                return Err(format!(
                    "every node in {s:?} must be written the same way (all rediss:// or none)"
                ));
            }
            if a.endpoint != first.endpoint && !more.contains(&a.endpoint) {
                more.push(a.endpoint);
            }
        }
        Ok(SeedAddresses { first, more })
    }

    /// Every node named, the first first.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        std::iter::once(self.first.endpoint.clone())
            .chain(self.more.iter().cloned())
            .collect()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            write!(f, "rediss://{}", self.endpoint)
        } else {
            write!(f, "{}", self.endpoint)
        }
    }
}

/// The TLS flags of both sides.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Connect to the source with TLS (as does an address written rediss://HOST:PORT).
    #[arg(long)]
    pub source_tls: bool,
    /// Connect to the target with TLS (as does an address written rediss://HOST:PORT).
    #[arg(long)]
    pub target_tls: bool,
    /// PEM file of the CA certificates that sign the servers' certificates, for both sides
    /// (default: the system's CA certificates).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The source's CA certificates (overrides --cacert for the source).
    #[arg(long, value_name = "FILE")]
    pub source_cacert: Option<PathBuf>,
    /// The target's CA certificates (overrides --cacert for the target).
    #[arg(long, value_name = "FILE")]
    pub target_cacert: Option<PathBuf>,
    /// PEM client certificate (chain) shown to the source; needs --source-key.
    #[arg(long, value_name = "FILE", requires = "source_key")]
    pub source_cert: Option<PathBuf>,
    /// PEM private key of --source-cert.
    #[arg(long, value_name = "FILE", requires = "source_cert")]
    pub source_key: Option<PathBuf>,
    /// PEM client certificate (chain) shown to the target; needs --target-key.
    #[arg(long, value_name = "FILE", requires = "target_key")]
    pub target_cert: Option<PathBuf>,
    /// PEM private key of --target-cert.
    #[arg(long, value_name = "FILE", requires = "target_cert")]
    pub target_key: Option<PathBuf>,
    /// Server name sent to the source (SNI) and checked in its certificate, instead of the host.
    #[arg(long, value_name = "NAME")]
    pub source_sni: Option<String>,
    /// Server name sent to the target (SNI) and checked in its certificate, instead of the host.
    #[arg(long, value_name = "NAME")]
    pub target_sni: Option<String>,
    /// Do not check the servers' certificates, on both sides (testing only: anyone on the
    /// network path can read and change the data).
    #[arg(long)]
    pub tls_insecure: bool,
    /// Do not check the source's certificate.
    #[arg(long)]
    pub source_tls_insecure: bool,
    /// Do not check the target's certificate.
    #[arg(long)]
    pub target_tls_insecure: bool,
}

/// One side's resolved TLS and the warning to show for it, if any.
#[derive(Debug, Clone, Default)]
pub struct SideTls {
    pub settings: Option<Arc<TlsSettings>>,
    /// Set when certificates are not checked: show it loudly at start.
    pub warning: Option<String>,
}

impl TlsArgs {
    /// The flags given only for `side` (not the shared ones).
    fn side_flags(&self, side: Side) -> (bool, TlsFiles) {
        let files = match side {
            Side::Source => TlsFiles {
                ca: self.source_cacert.clone(),
                cert: self.source_cert.clone(),
                key: self.source_key.clone(),
                sni: self.source_sni.clone(),
                insecure: self.source_tls_insecure,
            },
            Side::Target => TlsFiles {
                ca: self.target_cacert.clone(),
                cert: self.target_cert.clone(),
                key: self.target_key.clone(),
                sni: self.target_sni.clone(),
                insecure: self.target_tls_insecure,
            },
        };
        let enabled = match side {
            Side::Source => self.source_tls,
            Side::Target => self.target_tls,
        };
        (enabled, files)
    }

    /// True when any flag for `side` was given (to refuse them where a command has no such side).
    pub fn given_for(&self, side: Side) -> bool {
        let (enabled, files) = self.side_flags(side);
        enabled || files != TlsFiles::default()
    }

    /// The TLS of `side`, whose address was written with `rediss://` when `scheme_tls`.
    /// Reads the files now: every problem is a usage error naming its flag.
    pub fn resolve(&self, side: Side, scheme_tls: bool) -> Result<SideTls, String> {
        let (flag, mut files) = self.side_flags(side);
        if !(flag || scheme_tls) {
            if files != TlsFiles::default() {
                return Err(format!(
                    "--{side}-cacert, --{side}-cert, --{side}-key, --{side}-sni and --{side}-tls-insecure need TLS on the {side}: add --{side}-tls (or write the address rediss://HOST:PORT)"
                ));
            }
            return Ok(SideTls::default());
        }
        files.ca = files.ca.or_else(|| self.cacert.clone());
        files.insecure |= self.tls_insecure;
        let settings = TlsSettings::build(side, &files).map_err(|e| e.0)?;
        let warning = files.insecure.then(|| {
            format!(
                "WARNING: TLS certificates of the {side} are NOT checked (--tls-insecure / --{side}-tls-insecure): anyone on the network path can read and change the data; use it for tests only"
            )
        });
        Ok(SideTls {
            settings: Some(Arc::new(settings)),
            warning,
        })
    }

    /// Shared flags given while no side uses TLS are a mistake, not a no-op.
    pub fn check_shared(&self, any_side_tls: bool) -> Result<(), String> {
        if !any_side_tls && (self.cacert.is_some() || self.tls_insecure) {
            return Err("--cacert and --tls-insecure need TLS on a side: add --source-tls / --target-tls (or write an address rediss://HOST:PORT)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_scheme() {
        let a = Address::parse("rediss://db.example:6380").unwrap();
        assert!(a.tls);
        assert_eq!(a.endpoint, Endpoint::new("db.example", 6380));
        assert_eq!(a.to_string(), "rediss://db.example:6380");
        let a = Address::parse("127.0.0.1:7000").unwrap();
        assert!(!a.tls);
        assert!(!Address::parse("redis://[::1]:7000/").unwrap().tls);
        assert!(Address::parse("http://h:1").is_err());
        assert!(Address::parse("rediss://u:p@h:1").is_err());
        assert!(Address::parse("rediss://h:1/2").is_err());
    }

    #[test]
    fn side_flags_without_tls_are_refused() {
        let args = TlsArgs {
            source_cacert: Some("/x".into()),
            ..TlsArgs::default()
        };
        let err = args.resolve(Side::Source, false).unwrap_err();
        assert!(err.contains("add --source-tls"), "{err}");
        assert!(args
            .resolve(Side::Target, false)
            .unwrap()
            .settings
            .is_none());
        let shared = TlsArgs {
            cacert: Some("/x".into()),
            ..TlsArgs::default()
        };
        assert!(shared.check_shared(false).is_err());
    }

    #[test]
    fn insecure_warns() {
        let args = TlsArgs {
            tls_insecure: true,
            ..TlsArgs::default()
        };
        let side = args.resolve(Side::Target, true).unwrap();
        assert!(side.settings.unwrap().insecure());
        assert!(side.warning.unwrap().contains("NOT checked"));
    }

    #[test]
    fn several_target_nodes_are_one_flag() {
        let seeds = SeedAddresses::parse("127.0.0.1:7000, 127.0.0.1:7001,127.0.0.1:7000").unwrap();
        assert_eq!(seeds.first.endpoint, Endpoint::new("127.0.0.1", 7000));
        assert_eq!(seeds.more, vec![Endpoint::new("127.0.0.1", 7001)]);
        assert_eq!(seeds.endpoints().len(), 2);
        assert!(SeedAddresses::parse("a:1,,b:2")
            .unwrap_err()
            .contains("empty address"));
        assert!(SeedAddresses::parse("rediss://a:1,b:2")
            .unwrap_err()
            .contains("same way"));
        assert!(SeedAddresses::parse("a:1,b").is_err());
    }
}
