//! Issue 14: secrets from files. A 3-master source and a target with `requirepass`,
//! synced with `--password-file`, `--auth-file` and `--http-token-file`: the data
//! arrives, and no output — console, logs, the state folder, every HTTP endpoint, the
//! error of a wrong password — contains a secret. A secret file others may read is
//! refused before anything starts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{
    fill_mixed, Cluster, ClusterOptions, FillOptions, PortLease, Server, ServerOptions, Snapshot,
};
use serde_json::Value;

const SRC_PW: &str = "srcPW-5c1e9a0d";
const DST_PW: &str = "dstPW-83d2b7e4";
const TOKEN: &str = "httpTOK-41f0c6aa";
const WRONG_PW: &str = "wrongPW-77aa31f9";

fn manager() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"));
    c.env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .env_remove("RSM_HTTP_TOKEN");
    c
}

/// A secret file with `mode`.
fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Status code and body of `GET path`, with `Authorization: Bearer token` when given.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response))
}

/// Poll `/status` (with the token) until `done`; panic after 120 s or if the manager exits.
fn wait_for(child: &mut Child, port: u16, logs: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(code)) = child.try_wait() {
            panic!(
                "manager exited early with {code}: {}",
                std::fs::read_to_string(logs.join("stderr")).unwrap_or_default()
            );
        }
        let v = get(port, "/status", Some(TOKEN)).and_then(|(code, r)| {
            assert!(code == 200, "/status with the token: {r}");
            serde_json::from_str::<Value>(r.split_once("\r\n\r\n")?.1).ok()
        });
        if let Some(v) = v {
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "not within 120 s: {v:#}\n{}",
                std::fs::read_to_string(logs.join("redis-sync-manager.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    for secret in [SRC_PW, DST_PW, TOKEN, WRONG_PW] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} contains the secret {secret}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_no_secret(&format!("{what} stdout"), &out.stdout);
    assert_no_secret(&format!("{what} stderr"), &out.stderr);
}

#[test]
fn secrets_from_files_reach_no_output() {
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        password: Some(SRC_PW.into()),
        ..Default::default()
    });
    let target = Server::start(ServerOptions {
        password: Some(DST_PW.into()),
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 50,
            ..Default::default()
        },
    );
    let secrets = tempfile::tempdir().unwrap();
    let src_file = secret_file(secrets.path(), "src.pw", &format!("{SRC_PW}\n"), 0o600);
    // A CRLF line end and a second line: only the first line counts.
    let dst_file = secret_file(
        secrets.path(),
        "dst.pw",
        &format!("{DST_PW}\r\nnot this\n"),
        0o400,
    );
    let token_file = secret_file(secrets.path(), "token", TOKEN, 0o600);
    let wrong_file = secret_file(secrets.path(), "wrong.pw", WRONG_PW, 0o600);

    let out = tempfile::tempdir().unwrap();
    let logs = out.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let http = PortLease::acquire();
    let mut child = manager()
        // The file flag must win over the environment, without a clap conflict.
        .env("RSM_SOURCE_PASSWORD", "decoy-from-env")
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.addr()))
        .arg(format!("--password-file={}", src_file.display()))
        .arg(format!("--auth-file={}", dst_file.display()))
        .arg(format!("--http-token-file={}", token_file.display()))
        .arg(format!(
            "--logfile={}",
            logs.join("redis-sync-manager.log").display()
        ))
        .arg(format!("--httpport={}", http.port()))
        .arg("--verify-on-ready")
        .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
        .stderr(std::fs::File::create(logs.join("stderr")).unwrap())
        .spawn()
        .unwrap();

    let v = wait_for(&mut child, http.port(), &logs, |v| {
        common::ready(v) && v["last_verify"]["equal"] == Value::Bool(true)
    });
    assert_eq!(v["shards"].as_array().unwrap().len(), 3);
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    for path in ["/", "/status", "/metrics", "/verify"] {
        let (code, response) = get(http.port(), path, Some(TOKEN)).unwrap();
        assert_eq!(code, 200, "{path}: {response}");
        assert_no_secret(&format!("GET {path}"), response.as_bytes());
        let (code, response) = get(http.port(), path, None).unwrap();
        assert_eq!(code, 401, "{path} without the token: {response}");
        assert_no_secret(&format!("GET {path} (401)"), response.as_bytes());
    }
    common::sigterm(&mut child);

    // verify with the same file flags: equal, exit 0.
    let verify = manager()
        .args(["verify", &format!("--from={}", source.seed_addr())])
        .arg(format!("--target={}", target.addr()))
        .arg(format!("--password-file={}", src_file.display()))
        .arg(format!("--auth-file={}", dst_file.display()))
        .arg(format!(
            "--report={}",
            out.path().join("verify.json").display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_output_clean("verify", &verify);
    // The environment still works on its own (read by the tool, no longer by clap).
    let verify = manager()
        .env("RSM_SOURCE_PASSWORD", SRC_PW)
        .env("RSM_TARGET_PASSWORD", DST_PW)
        .args(["verify", &format!("--from={}", source.seed_addr())])
        .arg(format!("--target={}", target.addr()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify with the environment: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_output_clean("verify (environment)", &verify);

    // A wrong password: a clear error, without the password (wrong or right).
    for (flag, file) in [
        ("--password-file", &wrong_file),
        ("--auth-file", &wrong_file),
    ] {
        let mut c = manager();
        c.arg(format!("--from={}", source.seed_addr()))
            .arg(format!("--target={}", target.addr()))
            .arg("--dry-run");
        if flag == "--password-file" {
            c.arg(format!("--password-file={}", file.display()))
                .arg(format!("--auth-file={}", dst_file.display()));
        } else {
            c.arg(format!("--password-file={}", src_file.display()))
                .arg(format!("--auth-file={}", file.display()));
        }
        let wrong = c.stdin(Stdio::null()).output().unwrap();
        assert!(
            !wrong.status.success(),
            "{flag} with a wrong password succeeded"
        );
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert!(err.contains("authentication failed"), "{flag}: {err}");
        assert_output_clean(&format!("{flag} wrong password"), &wrong);
    }

    // Every file the run wrote: console output, the manager's and the shards' logs,
    // the state folder (checkpoints), the verify report.
    let files = files_under(out.path());
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    for want in [
        "redis-sync-manager.0.log",
        "redis-sync-manager.2.log",
        "/state/",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "no {want} among {names:?}"
        );
    }
    for f in &files {
        assert_no_secret(&f.display().to_string(), &std::fs::read(f).unwrap());
    }
}

#[test]
fn secret_files_others_can_read_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--from=127.0.0.1:1", "--target=127.0.0.1:2", "--dry-run"];
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let file = secret_file(dir.path(), "open.pw", &format!("{SRC_PW}\n"), mode);
        for flag in ["--password-file", "--auth-file", "--http-token-file"] {
            let out = manager()
                .args(args)
                .arg(format!("{flag}={}", file.display()))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{flag} mode {mode:o}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(flag) && err.contains(&format!("chmod 600 {}", file.display())),
                "{flag} mode {mode:o}: {err}"
            );
            assert_output_clean(flag, &out);
        }
        // verify shares the flags.
        let out = manager()
            .args(["verify", "--from=127.0.0.1:1", "--target=127.0.0.1:2"])
            .arg(format!("--auth-file={}", file.display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    }

    // An empty first line, a missing file: refused, exit 2.
    let empty = secret_file(dir.path(), "empty.pw", "\nsecond line\n", 0o600);
    let out = manager()
        .args(args)
        .arg(format!("--password-file={}", empty.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = manager()
        .args(args)
        .arg(format!(
            "--auth-file={}",
            dir.path().join("missing").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-file"));

    // The flag and its file flag conflict; the environment and the file do not.
    let ok = secret_file(dir.path(), "ok.pw", "pw\n", 0o600);
    let out = manager()
        .args(args)
        .arg(format!("--password-file={}", ok.display()))
        .arg("--password=x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = manager()
        .env("RSM_SOURCE_PASSWORD", "from-env")
        .env("RSM_TARGET_PASSWORD", "from-env")
        .env("RSM_HTTP_TOKEN", "from-env")
        .args(args)
        .arg(format!("--password-file={}", ok.display()))
        .arg(format!("--auth-file={}", ok.display()))
        .arg(format!("--http-token-file={}", ok.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Past the flags: it fails connecting to the (absent) source, exit 1.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}
