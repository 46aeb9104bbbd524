//! Connecting to real servers: the operator gets one clear line per failure.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use rsm_client::{ClientError, ConnectOptions, Connection, Credentials, Endpoint, Side};
use rsm_testkit::{redis, PortLease, Server, ServerOptions};

fn endpoint(addr: &str) -> Endpoint {
    addr.parse().unwrap()
}

#[tokio::test]
async fn password_and_acl_user_authenticate() {
    let server = Server::start(ServerOptions {
        password: Some("s3cret".into()),
        ..Default::default()
    });
    let ep = endpoint(&server.addr());
    let mut conn = Connection::connect(
        &ep,
        &ConnectOptions::new(Side::Source, Some(Credentials::parse("s3cret"))),
    )
    .await
    .expect("plain password");
    conn.request_ok(&["SET", "k", "v"]).await.unwrap();
    // requirepass is the `default` user's password, so the ACL form works too (6.0+).
    let mut conn = Connection::connect(
        &ep,
        &ConnectOptions::new(Side::Source, Some(Credentials::parse("default:s3cret"))),
    )
    .await
    .expect("user:password");
    let got = conn.request_text(&["GET", "k"]).await.unwrap();
    assert_eq!(got, "v");
}

#[tokio::test]
async fn wrong_password_fails_fast_naming_the_flag() {
    let server = Server::start(ServerOptions {
        password: Some("right".into()),
        ..Default::default()
    });
    let ep = endpoint(&server.addr());
    let started = Instant::now();
    let err = Connection::connect(
        &ep,
        &ConnectOptions::new(Side::Source, Some(Credentials::parse("wrong"))),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication failed for source {ep}: check --password"
        )),
        "{msg}"
    );

    let err = Connection::connect(&ep, &ConnectOptions::new(Side::Target, None))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("target {ep} requires a password: give it with --auth (or --auth-file)")
    );
}

#[tokio::test]
async fn refused_port_is_reported_as_such() {
    // A leased port nobody listens on.
    let lease = PortLease::acquire();
    let ep = Endpoint::new("127.0.0.1", lease.port());
    let err = Connection::connect(&ep, &ConnectOptions::new(Side::Target, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("connection refused by target"),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn unresolvable_host_is_reported() {
    // `.invalid` never resolves (RFC 2606), so this stays on this machine.
    let ep = Endpoint::new("no-such-host.invalid", 6379);
    let err = Connection::connect(&ep, &ConnectOptions::new(Side::Source, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot reach source no-such-host.invalid:6379"),
        "{err}"
    );
}

#[tokio::test]
async fn pipelined_replies_come_back_in_order() {
    let server = Server::start(ServerOptions::default());
    let mut conn = Connection::connect(
        &endpoint(&server.addr()),
        &ConnectOptions::new(Side::Target, None),
    )
    .await
    .unwrap();
    for i in 0..1000 {
        conn.send(&["INCRBY", "counter", &i.to_string()]);
    }
    conn.flush().await.unwrap();
    let mut total = 0i64;
    for i in 0..1000i64 {
        total += i;
        let reply = conn.read_frame().await.unwrap();
        assert_eq!(reply.as_int(), Some(total));
    }
    // Checked with the server's own answer through an independent client.
    let v: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(v, total);
}
