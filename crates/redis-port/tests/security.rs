//! Issue 14 for `redis-port`: passwords from files reach no output, a secret file others
//! may read is refused, and a server's error text reaches the console, the log and
//! `/status` with its control bytes escaped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{fill_strings, PortLease, Server, ServerOptions, Snapshot};
use serde_json::Value;

const SRC_PW: &str = "srcPW-rp-19c7d3e2";
const DST_PW: &str = "dstPW-rp-a04b66f1";

fn redis_port() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-port"));
    c.env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD");
    c
}

fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

fn status(port: u16) -> Option<Value> {
    serde_json::from_str(http_get(port, "/status")?.split_once("\r\n\r\n")?.1).ok()
}

/// Poll `/status` until `done`; panic after 60 s or if the process exits.
fn wait_for(child: &mut Child, port: u16, dir: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(code)) = child.try_wait() {
            panic!(
                "redis-port exited early with {code}: {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        if let Some(v) = status(port) {
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "not within 60 s: {v:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(pid: u32) {
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    for secret in [SRC_PW, DST_PW] {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{what} contains {secret}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn sync_with_password_files_leaks_no_secret() {
    let source = Server::start(ServerOptions {
        password: Some(SRC_PW.into()),
        ..Default::default()
    });
    let target = Server::start(ServerOptions {
        password: Some(DST_PW.into()),
        ..Default::default()
    });
    fill_strings(&source, 300, "k:");
    let secrets = tempfile::tempdir().unwrap();
    let src_file = secret_file(secrets.path(), "src", &format!("{SRC_PW}\n"), 0o600);
    let dst_file = secret_file(secrets.path(), "dst", &format!("{DST_PW}\r\n"), 0o600);
    let out = tempfile::tempdir().unwrap();
    let http = PortLease::acquire();
    let mut child = redis_port()
        .env("RSM_SOURCE_PASSWORD", "decoy-from-env")
        .args([
            "sync",
            &format!("--from={}", source.addr()),
            &format!("--target={}", target.addr()),
            &format!("--password-file={}", src_file.display()),
            &format!("--auth-file={}", dst_file.display()),
            &format!(
                "--logfile={}",
                out.path().join("logs/redis-port.log").display()
            ),
            &format!("--httpport={}", http.port()),
        ])
        .stdout(std::fs::File::create(out.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(out.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_for(&mut child, http.port(), out.path(), |v| {
        v["ready_for_cutover"] == Value::Bool(true)
    });
    source.cmd(&[b"SET", b"streamed", b"1"]);
    wait_for(&mut child, http.port(), out.path(), |v| {
        v["shards"][0]["lag_bytes"] == 0 && v["ready_for_cutover"] == Value::Bool(true)
    });
    for path in ["/", "/status", "/metrics"] {
        let response = http_get(http.port(), path).unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{path}: {response}");
        assert_no_secret(path, response.as_bytes());
    }
    sigterm(child.id());
    let code = child.wait().unwrap();
    assert!(code.success(), "exit {code}");
    Snapshot::of(&source).assert_same(&Snapshot::of(&target), Duration::from_secs(5));

    // dump with the file flag; restore with the auth file; wrong passwords.
    let rdb = out.path().join("dump.rdb");
    let dump = redis_port()
        .args(["dump", &format!("--from={}", source.addr())])
        .arg(format!("--password-file={}", src_file.display()))
        .arg(format!("--output={}", rdb.display()))
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let wrong = secret_file(secrets.path(), "wrong", "wrongPW-rp\n", 0o600);
    let restore = redis_port()
        .args(["restore", &format!("--input={}", rdb.display())])
        .arg(format!("--target={}", target.addr()))
        .arg(format!("--auth-file={}", wrong.display()))
        .arg("--retry-timeout=1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!restore.status.success());
    let err = String::from_utf8_lossy(&restore.stderr);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrongPW-rp"), "{err}");
    for o in [&dump, &restore] {
        assert_no_secret("dump/restore stdout", &o.stdout);
        assert_no_secret("dump/restore stderr", &o.stderr);
    }

    let files = files_under(out.path());
    assert!(
        files
            .iter()
            .any(|f| f.display().to_string().contains("/state/")),
        "no state folder: {files:?}"
    );
    for f in files.iter().filter(|f| **f != rdb) {
        assert_no_secret(&f.display().to_string(), &std::fs::read(f).unwrap());
    }

    // A file others can read is refused, naming the fix.
    let open = secret_file(secrets.path(), "open", &format!("{SRC_PW}\n"), 0o644);
    for args in [
        vec!["dump", "--from=127.0.0.1:1", "--output=/dev/null"],
        vec!["restore", "--input=/dev/null", "--target=127.0.0.1:1"],
    ] {
        let flag = if args[0] == "dump" {
            "--password-file"
        } else {
            "--auth-file"
        };
        let o = redis_port()
            .args(&args)
            .arg(format!("{flag}={}", open.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", open.display())),
            "{err}"
        );
        assert_no_secret(flag, &o.stderr);
    }
}

/// A target that echoes our bytes in its error reply (`ERR unknown command 'SADD', with
/// args beginning with: '\x1b[2J…'`): the console, the log file and `/status` show the
/// error with its control bytes escaped, never a raw ESC.
#[test]
fn server_error_text_is_escaped() {
    let source = Server::start(ServerOptions::default());
    let target = Server::start(ServerOptions {
        extra_config: vec![("rename-command".into(), "SADD \"\"".into())],
        ..Default::default()
    });
    fill_strings(&source, 50, "k:");
    let out = tempfile::tempdir().unwrap();
    let logfile = out.path().join("logs/redis-port.log");
    let http = PortLease::acquire();
    let mut child = redis_port()
        .args([
            "sync",
            &format!("--from={}", source.addr()),
            &format!("--target={}", target.addr()),
            &format!("--logfile={}", logfile.display()),
            &format!("--httpport={}", http.port()),
        ])
        .stdout(std::fs::File::create(out.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(out.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_for(&mut child, http.port(), out.path(), |v| {
        v["ready_for_cutover"] == Value::Bool(true)
    });
    // Clear the screen, ring the bell, forge a log line.
    source.cmd(&[
        b"SADD",
        b"\x1b[2J\x07evil\r\n2026-01-01 INFO forged",
        b"\x1b]0;title\x07",
    ]);

    // The target refuses it for good: the shard stops with its error.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if let Some(e) = status(http.port())
            .and_then(|v| v["shards"][0]["last_error"].as_str().map(str::to_string))
        {
            last_error = Some(e);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after 60 s; last_error {last_error:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.code(), Some(1), "exit {code}");

    let stderr = std::fs::read(out.path().join("stderr")).unwrap();
    let log = std::fs::read(&logfile).unwrap();
    let text = String::from_utf8_lossy(&stderr);
    assert!(
        text.contains("unknown command") && text.contains("\\x1b[2J\\x07evil\\r\\n"),
        "the target's error, escaped, on the console: {text}"
    );
    assert!(
        String::from_utf8_lossy(&log).contains("\\x1b[2J"),
        "the error in the log: {}",
        String::from_utf8_lossy(&log)
    );
    for (what, bytes) in [
        ("stderr", &stderr[..]),
        (
            "stdout",
            &std::fs::read(out.path().join("stdout")).unwrap()[..],
        ),
        ("log", &log[..]),
        ("last_error", last_error.as_deref().unwrap_or("").as_bytes()),
    ] {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
            "{what} has a raw control byte: {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            !String::from_utf8_lossy(bytes)
                .lines()
                .any(|l| l.starts_with("2026-01-01 INFO forged")),
            "{what} has a forged line"
        );
    }
}
