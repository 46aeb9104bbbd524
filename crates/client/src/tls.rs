//! TLS for one side of the migration: the rustls client configuration built once
//! from the operator's files, and the reading of a failed handshake into one line
//! that says what to change.
//!
//! A side's `TlsSettings` sit in its `ConnectOptions` behind an `Arc`, so every
//! connection of that side — the first address given, and every node learnt later
//! from CLUSTER NODES or a MOVED reply — is made with the same roots, client
//! certificate and SNI override.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use crate::endpoint::Endpoint;
use crate::error::Side;

/// What the operator gave for one side, before any file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of CA certificates to trust; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and its private key (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to send as SNI and to verify the certificate against, instead of the host.
    pub sni: Option<String>,
    /// Accept any certificate (no chain, name or date check).
    pub insecure: bool,
}

/// A side's TLS, ready to use: built once, shared by every connection of the side.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
    insecure: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds key material: show only what was chosen.
        f.debug_struct("TlsSettings")
            .field("sni", &self.sni)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// A TLS setting that cannot be used; the text names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TlsSetupError(pub String);

impl TlsSettings {
    /// Read the files and build the client configuration for `side`.
    pub fn build(side: Side, files: &TlsFiles) -> Result<TlsSettings, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(format!("{side} TLS: {e}")))?;
        let builder = if files.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        } else {
            builder.with_root_certificates(roots(side, files.ca.as_deref())?)
        };
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(side, "cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    TlsSetupError(format!(
                        "--{side}-key {}: no usable PEM private key ({e})",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsSetupError(format!(
                        "--{side}-cert / --{side}-key: the key does not fit the certificate ({e})"
                    ))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(TlsSetupError(format!(
                    "--{side}-cert needs --{side}-key (the client certificate's private key)"
                )))
            }
            (None, Some(_)) => {
                return Err(TlsSetupError(format!(
                    "--{side}-key needs --{side}-cert (the client certificate)"
                )))
            }
        };
        let sni =
            match &files.sni {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    TlsSetupError(format!("--{side}-sni {name:?} is not a DNS name"))
                })?),
                None => None,
            };
        Ok(TlsSettings {
            config: Arc::new(config),
            sni,
            insecure: files.insecure,
        })
    }

    /// True when certificates are not checked (`--tls-insecure`).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The SNI override, else the endpoint's host (an IP address is checked
    /// against the certificate's IP SANs).
    pub(crate) fn server_name(&self, endpoint: &Endpoint) -> Option<ServerName<'static>> {
        match &self.sni {
            Some(name) => Some(name.clone()),
            None => ServerName::try_from(endpoint.host.clone()).ok(),
        }
    }
}

fn roots(side: Side, ca: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(side, "cacert", path)? {
                store.add(cert).map_err(|e| {
                    TlsSetupError(format!(
                        "--{side}-cacert {}: not a CA certificate ({e})",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            // Unreadable entries among the system's certificates are skipped; only
            // having none at all is an error.
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError(format!(
                    "{side} TLS: no system CA certificates found; give the CA with --{side}-cacert (or --cacert)"
                )));
            }
        }
    }
    Ok(store)
}

fn read_certs(
    side: Side,
    flag: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bad =
        |e: &dyn fmt::Display| TlsSetupError(format!("--{side}-{flag} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// `--tls-insecure`: any certificate is accepted, but the handshake's signatures
/// are still checked, so the session is at least with the holder of that certificate.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS handshake failed, read once from rustls's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// The server answered with something that is not TLS: a plain port.
    NotTls,
    /// The server closed the connection during the handshake.
    ClosedInHandshake,
    /// No answer to the ClientHello: a plain Redis port waits for a newline that never comes.
    NoAnswer { secs: u64 },
    /// The server's certificate is not signed by a trusted CA.
    UnknownCa,
    /// The certificate is not for the name connected to.
    NameMismatch { name: String },
    /// The certificate has expired (or is not yet valid).
    Expired,
    /// The server refused our client certificate, or wanted one.
    ClientCertRefused,
    /// The endpoint's host cannot be used as a TLS server name.
    BadServerName,
    /// Anything else, as rustls or the socket said it.
    Other(String),
}

impl TlsProblem {
    /// The problem inside an I/O error of a TLS connection, if rustls raised it: with
    /// TLS 1.3 the server's verdict on our certificate comes after the handshake, at
    /// the first read.
    pub(crate) fn after_handshake(e: &io::Error) -> Option<TlsProblem> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|_| TlsProblem::from_handshake(e, ""))
    }

    /// Classify a handshake error from tokio-rustls.
    pub(crate) fn from_handshake(e: &io::Error, name: &str) -> TlsProblem {
        let inner = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsProblem::UnknownCa
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsProblem::NameMismatch {
                    name: name.to_string(),
                },
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsProblem::Expired,
                other => TlsProblem::Other(format!("invalid certificate: {other:?}")),
            },
            Some(rustls::Error::InvalidMessage(_))
            | Some(rustls::Error::InappropriateMessage { .. })
            | Some(rustls::Error::InappropriateHandshakeMessage { .. }) => TlsProblem::NotTls,
            Some(rustls::Error::AlertReceived(alert)) => {
                use rustls::AlertDescription as A;
                match alert {
                    A::CertificateRequired
                    | A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::HandshakeFailure => TlsProblem::ClientCertRefused,
                    other => TlsProblem::Other(format!("the server sent the alert {other:?}")),
                }
            }
            Some(other) => TlsProblem::Other(other.to_string()),
            None if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) =>
            {
                TlsProblem::ClosedInHandshake
            }
            None => TlsProblem::Other(e.to_string()),
        }
    }

    /// What went wrong and what to do, with the flags of `side`.
    pub fn advice(&self, side: Side) -> String {
        match self {
            TlsProblem::NotTls => format!(
                "the server did not answer in TLS: is this a plain (non-TLS) port? Drop --{side}-tls / rediss:// or use the server's tls-port"
            ),
            TlsProblem::NoAnswer { secs } => format!(
                "no TLS answer within {secs}s: this is probably a plain (non-TLS) port; drop --{side}-tls / rediss:// or use the server's tls-port"
            ),
            TlsProblem::ClosedInHandshake => format!(
                "the server closed the connection during the handshake: if it checks client certificates (tls-auth-clients), give --{side}-cert and --{side}-key; else check that the port speaks TLS"
            ),
            TlsProblem::UnknownCa => format!(
                "the server's certificate is not signed by a trusted CA: give its CA with --{side}-cacert (or --cacert)"
            ),
            TlsProblem::NameMismatch { name } => format!(
                "the server's certificate is not valid for {name:?}: connect by a name the certificate lists, or give that name with --{side}-sni"
            ),
            TlsProblem::Expired => {
                "the server's certificate has expired or is not yet valid: renew it on the server (or check this machine's clock)".to_string()
            }
            TlsProblem::ClientCertRefused => format!(
                "the server refused the client certificate or wants one: give --{side}-cert and --{side}-key signed by a CA the server trusts"
            ),
            TlsProblem::BadServerName => format!(
                "the host cannot be checked against a certificate: give the certificate's name with --{side}-sni"
            ),
            TlsProblem::Other(text) => format!("{text} (check the --{side}-tls flags)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_without_key_names_the_flag() {
        let files = TlsFiles {
            cert: Some("/nonexistent.pem".into()),
            insecure: true,
            ..TlsFiles::default()
        };
        let err = TlsSettings::build(Side::Target, &files).unwrap_err();
        assert!(err.0.contains("--target-cert needs --target-key"), "{err}");
    }

    #[test]
    fn missing_ca_file_names_the_flag() {
        let files = TlsFiles {
            ca: Some("/nonexistent-ca.pem".into()),
            ..TlsFiles::default()
        };
        let err = TlsSettings::build(Side::Source, &files).unwrap_err();
        assert!(
            err.0.starts_with("--source-cacert /nonexistent-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn handshake_errors_are_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            TlsProblem::from_handshake(
                &wrap(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                )),
                "h"
            ),
            TlsProblem::UnknownCa
        );
        assert_eq!(
            TlsProblem::from_handshake(
                &wrap(rustls::Error::InvalidCertificate(CertificateError::Expired)),
                "h"
            ),
            TlsProblem::Expired
        );
        assert_eq!(
            TlsProblem::from_handshake(
                &wrap(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                )),
                "h"
            ),
            TlsProblem::NameMismatch { name: "h".into() }
        );
        assert_eq!(
            TlsProblem::from_handshake(&io::Error::from(io::ErrorKind::UnexpectedEof), "h"),
            TlsProblem::ClosedInHandshake
        );
    }
}
