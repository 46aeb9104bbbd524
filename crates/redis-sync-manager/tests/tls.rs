//! Issue 14, item 1: TLS on each side. Real servers with a `tls-port` (certificates made by
//! `openssl` in a temp dir); the kit reads and compares data through each server's plain
//! port, the manager talks only to the TLS ports.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{sigterm, wait_ready};
use rsm_testkit::{
    fill_mixed, fill_strings, Cluster, ClusterOptions, FillOptions, PortLease, Server,
    ServerOptions, ServerTls, Snapshot, TestCerts,
};

fn tls_server(certs: &TestCerts, auth_clients: bool) -> Server {
    Server::start(ServerOptions {
        tls: Some(ServerTls {
            auth_clients,
            ..ServerTls::new(certs)
        }),
        ..Default::default()
    })
}

fn manager() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"));
    c.env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .env_remove("RSM_HTTP_TOKEN");
    c
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The TLS flags of a run where the source checks client certificates.
fn tls_flags(certs: &TestCerts, source: &Server, target: &Server) -> Vec<String> {
    vec![
        // The scheme on one side, the flag on the other: both must work.
        format!("--from=rediss://{}", source.tls_addr()),
        format!("--target={}", target.tls_addr()),
        "--target-tls".into(),
        format!("--cacert={}", path(&certs.ca())),
        format!("--source-cert={}", path(&certs.client_cert())),
        format!("--source-key={}", path(&certs.client_key())),
    ]
}

fn start(flags: &[String], logs: &Path, port: u16) -> Child {
    manager()
        .args(flags)
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(args: &[String]) -> Output {
    manager().args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sync_and_verify_over_tls_on_both_sides_with_a_client_certificate() {
    let certs = TestCerts::generate();
    let source = tls_server(&certs, true);
    let target = tls_server(&certs, false);
    fill_mixed(&source, &FillOptions::default());
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let flags = tls_flags(&certs, &source, &target);
    let mut child = start(&flags, logs.path(), port.port());
    wait_ready(&mut child, port.port(), logs.path());
    // The command stream crosses TLS too. Strings only: Redis 7.0 does not replicate a
    // consumer group's entries-read, which verify would report (see e2e.rs).
    fill_strings(&source, 200, "after:");
    std::thread::sleep(Duration::from_millis(500));
    wait_ready(&mut child, port.port(), logs.path());
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    sigterm(&mut child);

    let mut verify = vec!["verify".to_string(), "--mode=full".into()];
    verify.extend(flags);
    let out = run(&verify);
    assert!(
        out.status.success(),
        "verify over TLS: {}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );

    // cleanup reaches the TLS target too, and refuses the source's flags.
    let out = run(&[
        "cleanup".into(),
        format!("--target=rediss://{}", target.tls_addr()),
        format!("--cacert={}", path(&certs.ca())),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cleanup: {}", stderr(&out));
    assert!(said.contains("removed"), "{said}");
    let out = run(&[
        "cleanup".into(),
        format!("--target={}", target.addr()),
        "--source-tls".into(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_wrong_ca_a_missing_client_certificate_and_a_plain_client_each_get_one_line() {
    let certs = TestCerts::generate();
    let source = tls_server(&certs, true);
    let target = tls_server(&certs, false);
    let plan = |extra: &[String]| {
        let mut args = vec!["--dry-run".to_string()];
        args.extend_from_slice(extra);
        run(&args)
    };

    // The target's CA is not the one given for it.
    let mut flags = tls_flags(&certs, &source, &target);
    flags.push(format!("--target-cacert={}", path(&certs.other_ca())));
    let out = plan(&flags);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("target")
            && err.contains("not signed by a trusted CA")
            && err.contains("--target-cacert"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // The source wants a client certificate.
    let flags = vec![
        format!("--from=rediss://{}", source.tls_addr()),
        format!("--target=rediss://{}", target.tls_addr()),
        format!("--cacert={}", path(&certs.ca())),
    ];
    let err = stderr(&plan(&flags));
    assert!(
        err.contains("--source-cert") && err.contains("--source-key"),
        "{err}"
    );

    // A plain connection to the TLS port.
    let flags = vec![
        format!("--from={}", source.tls_addr()),
        format!("--target={}", target.addr()),
    ];
    let out = plan(&flags);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS port") && err.contains("--source-tls"),
        "{err}"
    );

    // TLS flags for a side without TLS are a usage error, before any connection.
    let flags = vec![
        format!("--from={}", source.addr()),
        format!("--target={}", target.addr()),
        format!("--source-cacert={}", path(&certs.ca())),
    ];
    let out = plan(&flags);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--source-tls"), "{}", stderr(&out));
}

#[test]
fn tls_insecure_is_loud() {
    let certs = TestCerts::generate();
    let source = tls_server(&certs, false);
    let target = Server::start(ServerOptions::default());
    let out = run(&[
        "--dry-run".into(),
        format!("--from=rediss://{}", source.tls_addr()),
        format!("--target={}", target.addr()),
        "--tls-insecure".into(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING") && err.contains("NOT checked"),
        "{err}"
    );
}

/// Cluster to cluster over TLS: every node the manager learns from `CLUSTER NODES` (source
/// shards, replicas, target masters) and every redirect is reached with its side's TLS; the
/// target checks client certificates.
#[test]
fn tls_cluster_to_tls_cluster() {
    let certs = TestCerts::generate();
    let source = Cluster::start(ClusterOptions {
        replicas_per_master: 1,
        tls: Some(ServerTls::new(&certs)),
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        tls: Some(ServerTls {
            auth_clients: true,
            ..ServerTls::new(&certs)
        }),
        ..Default::default()
    });
    fill_mixed(&source, &FillOptions::default());
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let flags = vec![
        format!("--from=rediss://{}", source.tls_seed_addr()),
        format!("--target=rediss://{}", target.tls_seed_addr()),
        format!("--cacert={}", path(&certs.ca())),
        format!("--target-cert={}", path(&certs.client_cert())),
        format!("--target-key={}", path(&certs.client_key())),
        "--sync-parallel=3".into(),
        "--sync-role=slave".into(),
    ];
    let mut child = start(&flags, logs.path(), port.port());
    let v = wait_ready(&mut child, port.port(), logs.path());
    // The shards were found through TLS, so their nodes are the TLS ports.
    let tls_ports: Vec<String> = (0..3)
        .flat_map(|m| source.replicas_of(m))
        .map(|r| r.tls_addr())
        .collect();
    for shard in v["shards"].as_array().unwrap() {
        let node = shard["source"].as_str().unwrap();
        assert!(
            tls_ports.iter().any(|p| p == node),
            "{node} not a replica's TLS port: {tls_ports:?}"
        );
    }
    fill_strings(&source, 300, "after:");
    std::thread::sleep(Duration::from_millis(500));
    wait_ready(&mut child, port.port(), logs.path());
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));
    sigterm(&mut child);

    // verify walks both clusters' nodes through TLS too.
    let mut verify = vec!["verify".to_string()];
    verify.extend(flags.into_iter().filter(|f| !f.starts_with("--sync-")));
    let out = run(&verify);
    assert!(
        out.status.success(),
        "verify over TLS: {}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
}
