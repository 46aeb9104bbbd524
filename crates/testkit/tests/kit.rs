//! Tests of the test kit itself, against the default `redis-server`.

use std::collections::HashSet;
use std::time::Duration;

use rsm_testkit::redis::Value;
use rsm_testkit::{
    fill_mixed, fill_strings, Cluster, ClusterOptions, FillOptions, Server, ServerOptions,
    Snapshot, Target,
};

#[test]
fn standalone_server_with_password() {
    let s = Server::start(ServerOptions {
        password: Some("s3cret \"quoted\"".into()),
        ..Default::default()
    });
    assert!(s.addr().starts_with("127.0.0.1:"));
    assert!((21000..=29999).contains(&s.port()));
    assert!(s.dir().join("redis.conf").exists());
    assert_eq!(s.cmd(&[b"PING"]), Value::SimpleString("PONG".into()));
    s.cmd(&[b"SET", b"k\x00", b"v\xff"]);
    assert_eq!(
        s.cmd(&[b"GET", b"k\x00"]),
        Value::BulkString(b"v\xff".to_vec())
    );

    // Without the password the server refuses.
    let mut anon = rsm_testkit::redis::Client::open(format!("redis://{}/", s.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let err = rsm_testkit::redis::cmd("GET")
        .arg("k")
        .query::<Value>(&mut anon)
        .unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    // Stop releases the process; the log says it shut down.
    let pid = s.pid();
    s.stop();
    assert!(!s.is_running());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || !s.is_running());
}

#[test]
fn kill_and_drop_stop_the_process() {
    let s = Server::start(ServerOptions::default());
    let pid = s.pid();
    assert!(s.is_running());
    s.kill();
    assert!(!s.is_running());
    assert!(s.try_cmd(&[b"PING"]).is_err());
    drop(s);
    let s2 = Server::start(ServerOptions::default());
    let pid2 = s2.pid();
    drop(s2);
    // Reaped children do not show up in /proc any more.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid2}")).exists());
}

#[test]
fn restart_keeps_port_and_persisted_data() {
    let s = Server::start(ServerOptions {
        extra_config: vec![("appendonly".into(), "yes".into())],
        ..Default::default()
    });
    let (port, pid) = (s.port(), s.pid());
    s.cmd(&[b"SET", b"k", b"v"]);
    s.restart();
    assert_eq!(s.port(), port);
    assert_ne!(s.pid(), pid);
    assert_eq!(s.cmd(&[b"GET", b"k"]), Value::BulkString(b"v".to_vec()));
    // Also after a SIGKILL.
    s.kill();
    s.restart();
    assert_eq!(s.cmd(&[b"GET", b"k"]), Value::BulkString(b"v".to_vec()));
}

#[test]
fn parallel_starts_do_not_collide() {
    let servers: Vec<Server> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| Server::start(ServerOptions::default())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ports: HashSet<u16> = servers.iter().map(Server::port).collect();
    assert_eq!(ports.len(), servers.len());
    for (i, s) in servers.iter().enumerate() {
        // Each one is its own server: a key written to one is not in another.
        s.cmd(&[b"SET", b"who", i.to_string().as_bytes()]);
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(
            s.cmd(&[b"GET", b"who"]),
            Value::BulkString(i.to_string().into_bytes())
        );
    }
}

#[test]
fn extra_config_is_applied() {
    let s = Server::start(ServerOptions {
        extra_config: vec![("maxmemory".into(), "12mb".into())],
        ..Default::default()
    });
    let v = s.cmd(&[b"CONFIG", b"GET", b"maxmemory"]);
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"maxmemory".to_vec()),
            Value::BulkString(b"12582912".to_vec())
        ])
    );
}

#[test]
fn snapshot_round_trips_through_dump_restore() {
    let src = Server::start(ServerOptions::default());
    let dst = Server::start(ServerOptions::default());
    let report = fill_mixed(
        &src,
        &FillOptions {
            keys_per_type: 60,
            ..Default::default()
        },
    );
    assert_eq!(report.keys, 360);
    let a = Snapshot::of(&src);
    assert_eq!(a.len(), 360, "{a}");
    assert_eq!(a.with_ttl(), report.with_ttl);
    assert_eq!(a.type_counts().len(), 6, "{a}");
    // Deterministic: the same options write the same data.
    let again = Server::start(ServerOptions::default());
    fill_mixed(
        &again,
        &FillOptions {
            keys_per_type: 60,
            ..Default::default()
        },
    );
    a.assert_same(&Snapshot::of(&again), Duration::from_secs(5));

    // Copy with the server's own DUMP/RESTORE and compare.
    let mut sc = src.conn();
    for key in a.keys.keys() {
        let payload: Vec<u8> = rsm_testkit::redis::cmd("DUMP")
            .arg(key)
            .query(&mut sc)
            .unwrap();
        let pttl: i64 = rsm_testkit::redis::cmd("PTTL")
            .arg(key)
            .query(&mut sc)
            .unwrap();
        let cmd = vec![
            b"RESTORE".to_vec(),
            key.clone(),
            pttl.max(0).to_string().into_bytes(),
            payload,
        ];
        dst.run_on_key(key, &[cmd]).unwrap();
    }
    let b = Snapshot::of(&dst);
    a.assert_same(&b, Duration::from_secs(5));

    // A changed value (SET also drops the TTL of str:0), a lost TTL and a missing key are all
    // reported.
    dst.cmd(&[b"SET", b"str:0", b"changed"]);
    dst.cmd(&[b"PERSIST", b"list:0"]);
    dst.cmd(&[b"DEL", b"hash:3"]);
    let d = a.diff(&Snapshot::of(&dst), Duration::from_secs(5));
    assert_eq!(d.len(), 4, "{d:#?}");
}

#[test]
fn cluster_3x1_reaches_ok_and_holds_a_dataset() {
    let c = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 1,
        password: Some("pw".into()),
        ..Default::default()
    });
    assert_eq!(c.nodes().len(), 6);
    assert_eq!(c.masters().len(), 3);
    assert_eq!(c.replicas_of(2).len(), 1);
    assert_eq!(c.master_slot_range(0), (0, 5460));
    assert_eq!(c.master_slot_range(2), (10923, 16383));
    for m in c.masters() {
        assert_eq!(
            m.info_field("replication", "role").as_deref(),
            Some("master")
        );
    }
    let r = &c.replicas_of(1)[0];
    assert_eq!(
        r.info_field("replication", "master_link_status").as_deref(),
        Some("up")
    );

    let report = fill_mixed(
        &c,
        &FillOptions {
            keys_per_type: 30,
            ..Default::default()
        },
    );
    fill_strings(&c, 100, "plain:");
    let snap = Snapshot::of(&c);
    assert_eq!(snap.len(), report.keys + 100, "{snap}");
    // Keys really are spread over the masters.
    for m in c.masters() {
        let Value::Int(n) = m.cmd(&[b"DBSIZE"]) else {
            panic!()
        };
        assert!(n > 0);
    }
    // conn_for_key reaches the owner.
    let mut conn = c.conn_for_key(b"plain:7");
    let v: String = rsm_testkit::redis::cmd("GET")
        .arg("plain:7")
        .query(&mut conn)
        .unwrap();
    assert_eq!(v, "v7");
}

#[test]
fn cluster_without_replicas_and_one_master() {
    let c = Cluster::start(ClusterOptions {
        masters: 1,
        ..Default::default()
    });
    assert_eq!(c.master_slot_range(0), (0, 16383));
    assert_eq!(c.cmd_on_key(b"x", &[b"SET", b"x", b"1"]), Value::Okay);
}

/// The load through a `redis-cli --cluster reshard` there and back: every round's INCR and
/// HINCRBY land exactly once (a pipeline half applied, then re-sent whole after an ASK,
/// would count one twice), and the reshard is never refused for a key the load created on
/// the importing node (BUSYKEY).
#[test]
fn mixed_load_runs_each_command_once_through_a_reshard() {
    let c = Cluster::start(ClusterOptions::default());
    fill_strings(&c, 3000, "pad:");
    let load = rsm_testkit::MixedLoad::on_cluster(&c, 100);
    std::thread::sleep(Duration::from_millis(500));
    let (a, b) = (c.node_id(0).to_string(), c.node_id(1).to_string());
    let before = load.rounds();
    rsm_testkit::reshard(&c.seed_addr(), &a, &b, 2000, None);
    rsm_testkit::reshard(&c.seed_addr(), &b, &a, 2000, None);
    let during = load.rounds() - before;
    load.stop();
    assert!(during > 0, "the load stalled during the reshards");
    let mut client = c.client();
    for g in 0..100 {
        let ctr = format!("{{g{g}}}:ctr");
        let hash = format!("{{g{g}}}:hash");
        let n = client.cmd_on_key(ctr.as_bytes(), &[b"GET", ctr.as_bytes()]);
        let f = client.cmd_on_key(hash.as_bytes(), &[b"HGET", hash.as_bytes(), b"f"]);
        assert_eq!(
            n.unwrap(),
            f.unwrap(),
            "group {g}: INCR and HINCRBY of the same rounds disagree"
        );
    }
}
