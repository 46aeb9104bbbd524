//! The plan against real clusters (`--dry-run`): which node is picked per
//! shard, and the pre-flight checks that refuse to start.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rsm_testkit::{Cluster, ClusterOptions, PortLease, Server, ServerOptions};

fn dry_run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args(args)
        .arg("--dry-run")
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn masters_by_default_and_replicas_with_slave_role() {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let base = vec![
        format!("--from={}", source.seed_addr()),
        format!("--target={}", target.addr()),
    ];

    let out = dry_run(&base);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for (i, m) in source.masters().iter().enumerate() {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("shard {i} ")))
            .unwrap_or_else(|| panic!("no shard {i}: {stdout}"));
        assert!(
            line.contains(&m.addr()) && line.contains("master"),
            "{line}"
        );
    }
    assert!(
        stdout.contains("memory estimate with --sync-parallel=1"),
        "{stdout}"
    );

    let mut args = base.clone();
    args.push("--sync-role=slave".into());
    let out = dry_run(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for i in 0..3 {
        let replica = source.replicas_of(i)[0].addr();
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("shard {i} ")))
            .unwrap();
        assert!(
            line.contains(&replica) && line.contains("slave"),
            "shard {i} should use replica {replica}: {line}"
        );
    }
}

#[test]
fn slave_role_falls_back_to_master_with_a_warning() {
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let out = dry_run(&[
        format!("--from={}", source.seed_addr()),
        format!("--target={}", target.addr()),
        "--sync-role=slave".into(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("has no replica; syncing from the master"),
        "{stdout}"
    );
    assert!(stdout.contains(&source.masters()[0].addr()), "{stdout}");
}

#[test]
fn migrating_slot_is_refused_with_the_slot_number() {
    let source = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let (from, to) = (source.node_id(0).to_string(), source.node_id(1).to_string());
    source.masters()[0].cmd(&[b"CLUSTER", b"SETSLOT", b"77", b"MIGRATING", to.as_bytes()]);
    source.masters()[1].cmd(&[b"CLUSTER", b"SETSLOT", b"77", b"IMPORTING", from.as_bytes()]);
    let out = dry_run(&[
        format!("--from={}", source.seed_addr()),
        format!("--target={}", target.addr()),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("slot 77") && stderr.contains(&from) && stderr.contains(&to),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn wrong_source_password_fails_fast() {
    let source = Cluster::start(ClusterOptions {
        masters: 1,
        replicas_per_master: 0,
        password: Some("right".into()),
        ..Default::default()
    });
    let target = Server::start(ServerOptions::default());
    let started = Instant::now();
    let out = dry_run(&[
        format!("--from={}", source.seed_addr()),
        format!("--target={}", target.addr()),
        "--password=wrong".into(),
    ]);
    let (_, stderr) = text(&out);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication failed for source") && stderr.contains("check --password"),
        "{stderr}"
    );
}

#[test]
fn unreachable_target_is_a_clear_error() {
    let source = Server::start(ServerOptions::default());
    let nobody = PortLease::acquire();
    let out = dry_run(&[
        format!("--from={}", source.addr()),
        format!("--target=127.0.0.1:{}", nobody.port()),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "connection refused by target 127.0.0.1:{}",
            nobody.port()
        )),
        "{stderr}"
    );
}

#[test]
fn targetdb_on_a_cluster_target_is_refused() {
    let source = Server::start(ServerOptions::default());
    let target = Cluster::start(ClusterOptions {
        masters: 1,
        replicas_per_master: 0,
        ..Default::default()
    });
    let out = dry_run(&[
        format!("--from={}", source.addr()),
        format!("--target={}", target.seed_addr()),
        "--targetdb=2".into(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--targetdb=2"), "{stderr}");
}
