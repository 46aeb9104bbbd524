//! TLS against real servers (`tls-port` beside the plain port): a working
//! handshake with and without client certificates, and one clear line for each
//! way it goes wrong.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use rsm_client::{
    ClientError, ConnectOptions, Connection, Endpoint, Side, TlsFiles, TlsProblem, TlsSettings,
};
use rsm_testkit::{Server, ServerOptions, ServerTls, TestCerts};

fn endpoint(addr: &str) -> Endpoint {
    addr.parse().unwrap()
}

fn tls_server(certs: &TestCerts, auth_clients: bool, expired: bool) -> Server {
    Server::start(ServerOptions {
        tls: Some(ServerTls {
            auth_clients,
            expired,
            ..ServerTls::new(certs)
        }),
        ..Default::default()
    })
}

fn opts(side: Side, files: TlsFiles) -> ConnectOptions {
    let tls = TlsSettings::build(side, &files).expect("tls settings");
    ConnectOptions::new(side, None).with_tls(Some(Arc::new(tls)))
}

fn with_ca(certs: &TestCerts) -> TlsFiles {
    TlsFiles {
        ca: Some(certs.ca()),
        ..TlsFiles::default()
    }
}

async fn connect_err(addr: &str, o: &ConnectOptions) -> ClientError {
    match Connection::connect(&endpoint(addr), o).await {
        Ok(_) => panic!("connected to {addr}, expected a failure"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_works_by_ip_and_by_name() {
    let certs = TestCerts::generate();
    let server = tls_server(&certs, false, false);
    let o = opts(Side::Source, with_ca(&certs));
    let mut conn = Connection::connect(&endpoint(&server.tls_addr()), &o)
        .await
        .expect("TLS by IP");
    conn.request_ok(&["SET", "k", "v"]).await.unwrap();
    // The kit's plain port sees the write: the same server.
    assert_eq!(
        server.cmd_str("GET k"),
        rsm_testkit::redis::Value::BulkString(b"v".to_vec())
    );
    let port = server.tls_port().unwrap();
    let mut conn = Connection::connect(&Endpoint::new("localhost", port), &o)
        .await
        .expect("TLS by name");
    conn.request_ok(&["PING"]).await.unwrap();
}

#[tokio::test]
async fn client_certificates_are_sent_when_given_and_missing_ones_are_named() {
    let certs = TestCerts::generate();
    let server = tls_server(&certs, true, false);
    let files = TlsFiles {
        cert: Some(certs.client_cert()),
        key: Some(certs.client_key()),
        ..with_ca(&certs)
    };
    let mut conn = Connection::connect(&endpoint(&server.tls_addr()), &opts(Side::Target, files))
        .await
        .expect("TLS with a client certificate");
    conn.request_ok(&["PING"]).await.unwrap();

    let err = connect_err(&server.tls_addr(), &opts(Side::Target, with_ca(&certs))).await;
    let text = err.to_string();
    assert!(
        text.contains("--target-cert") && text.contains("--target-key"),
        "{text}"
    );
    assert!(!err.is_transient(), "{text}");
}

#[tokio::test]
async fn an_unknown_ca_is_refused_naming_the_cacert_flag() {
    let certs = TestCerts::generate();
    let server = tls_server(&certs, false, false);
    let files = TlsFiles {
        ca: Some(certs.other_ca()),
        ..TlsFiles::default()
    };
    let err = connect_err(&server.tls_addr(), &opts(Side::Source, files)).await;
    assert!(
        matches!(
            err,
            ClientError::Tls {
                problem: TlsProblem::UnknownCa,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("not signed by a trusted CA") && text.contains("--source-cacert"),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_name_mismatch_and_an_expired_certificate_say_so() {
    let certs = TestCerts::generate();
    let server = tls_server(&certs, false, false);
    let files = TlsFiles {
        sni: Some("wrong.example".into()),
        ..with_ca(&certs)
    };
    let err = connect_err(&server.tls_addr(), &opts(Side::Target, files)).await;
    assert!(
        matches!(
            err,
            ClientError::Tls {
                problem: TlsProblem::NameMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--target-sni"), "{err}");

    let expired = tls_server(&certs, false, true);
    let err = connect_err(&expired.tls_addr(), &opts(Side::Target, with_ca(&certs))).await;
    assert!(
        matches!(
            err,
            ClientError::Tls {
                problem: TlsProblem::Expired,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
    // --tls-insecure accepts it anyway.
    let files = TlsFiles {
        insecure: true,
        ..TlsFiles::default()
    };
    let mut conn = Connection::connect(&endpoint(&expired.tls_addr()), &opts(Side::Target, files))
        .await
        .expect("insecure accepts an expired certificate");
    conn.request_ok(&["PING"]).await.unwrap();
}

#[tokio::test]
async fn plain_to_a_tls_port_and_tls_to_a_plain_port_say_which() {
    let certs = TestCerts::generate();
    let server = tls_server(&certs, false, false);
    let err = connect_err(&server.tls_addr(), &ConnectOptions::new(Side::Source, None)).await;
    assert!(matches!(err, ClientError::PlainToTls { .. }), "{err:?}");
    assert!(err.to_string().contains("--source-tls"), "{err}");
    // Retried by a running sync (a server going down looks the same), refused at start.
    assert!(err.is_transient());

    let mut o = opts(Side::Target, with_ca(&certs));
    o.connect_timeout = std::time::Duration::from_secs(1);
    let err = connect_err(&server.addr(), &o).await;
    assert!(
        matches!(
            err,
            ClientError::Tls {
                problem: TlsProblem::NotTls
                    | TlsProblem::ClosedInHandshake
                    | TlsProblem::NoAnswer { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--target-tls"), "{err}");
}
