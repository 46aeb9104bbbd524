//! `redis-port` over TLS: `dump` from a TLS source that checks client certificates, then
//! `restore` of that file into a TLS target written `rediss://`; the data is compared through
//! the servers' plain ports. Flags of a side the command does not have are refused.

use std::process::Command;
use std::time::Duration;

use rsm_testkit::{fill_mixed, FillOptions, Server, ServerOptions, ServerTls, Snapshot, TestCerts};

fn redis_port() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-port"));
    c.env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD");
    c
}

fn tls_server(certs: &TestCerts, auth_clients: bool) -> Server {
    Server::start(ServerOptions {
        tls: Some(ServerTls {
            auth_clients,
            ..ServerTls::new(certs)
        }),
        ..Default::default()
    })
}

#[test]
fn dump_from_and_restore_into_tls_servers() {
    let certs = TestCerts::generate();
    let source = tls_server(&certs, true);
    let target = tls_server(&certs, false);
    fill_mixed(&source, &FillOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.rdb");
    let out = redis_port()
        .arg("dump")
        .arg(format!("--from={}", source.tls_addr()))
        .arg("--source-tls")
        .arg(format!("--source-cacert={}", certs.ca().display()))
        .arg(format!("--source-cert={}", certs.client_cert().display()))
        .arg(format!("--source-key={}", certs.client_key().display()))
        .arg(format!("--output={}", file.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = redis_port()
        .arg("restore")
        .arg(format!("--input={}", file.display()))
        .arg(format!("--target=rediss://{}", target.tls_addr()))
        .arg(format!("--cacert={}", certs.ca().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    // restore has no source: its TLS flags are a usage error.
    let out = redis_port()
        .arg("restore")
        .arg(format!("--input={}", file.display()))
        .arg(format!("--target={}", target.addr()))
        .arg("--source-tls")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no source"), "{err}");
}
