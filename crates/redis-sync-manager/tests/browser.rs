//! The status page in a real headless browser: one row per shard with the
//! right source addresses, and the "ready for cutover" state once synced.
//! A screenshot is kept in `target/test-artifacts/status-page.png`.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`), or a browser
//! named by `$CHROMIUM`; `scripts/test.sh` installs it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rsm_testkit::{fill_mixed, Cluster, ClusterOptions, FillOptions, PortLease};

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
    }
    panic!(
        "headless Chromium not found (chromium, chromium-browser or google-chrome on PATH, or \
         $CHROMIUM); run `scripts/test.sh` in the workspace to install it and run the tests \
         (or `apt-get install -y chromium`)"
    );
}

/// Run the page in Chromium long enough for its scripts to fetch /status, and
/// return the resulting DOM.
fn render(browser: &PathBuf, url: &str, screenshot: Option<&PathBuf>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,500",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_page_shows_every_shard_and_reaches_ready() {
    let browser = chromium();
    let source = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    });
    let target = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    });
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 50,
            ..Default::default()
        },
    );
    let logs = tempfile::tempdir().unwrap();
    let port = PortLease::acquire();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.seed_addr()))
        .arg(format!("--logfile={}", logs.path().join("m.log").display()))
        .arg(format!("--httpport={}", port.port()))
        .arg("--sync-parallel=3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/", port.port());

    let deadline = Instant::now() + Duration::from_secs(90);
    let dom = loop {
        let dom = render(&browser, &url, None);
        // The script's own text mentions the words too: look for the badge's state.
        if dom.contains("id=\"state\" class=\"ready\"") {
            break dom;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the page never showed 'ready for cutover'; last DOM:\n{dom}");
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // One row per shard, each naming its source master.
    let rows = dom.matches("<tr data-source=").count();
    assert_eq!(rows, 3, "{dom}");
    for m in source.masters() {
        assert!(
            dom.contains(&format!("data-source=\"{}\"", m.addr())),
            "no row for {}: {dom}",
            m.addr()
        );
    }

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    render(&browser, &url, Some(&shot));
    assert!(
        shot.metadata().map(|m| m.len() > 1000).unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// Issue 14: with `--http-token` the page opened as `/?token=TOKEN` works (its script
/// sends the token with its /status requests); without the token the browser gets 401.
#[test]
fn status_page_with_http_token() {
    use std::os::unix::fs::PermissionsExt;
    const TOKEN: &str = "page-token-3e8d1c";
    let browser = chromium();
    let source = Cluster::start(ClusterOptions::default());
    let target = rsm_testkit::Server::start(Default::default());
    fill_mixed(
        &source,
        &FillOptions {
            keys_per_type: 20,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = PortLease::acquire();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .env_remove("RSM_HTTP_TOKEN")
        .arg(format!("--from={}", source.seed_addr()))
        .arg(format!("--target={}", target.addr()))
        .arg(format!("--logfile={}", dir.path().join("m.log").display()))
        .arg(format!("--httpport={}", port.port()))
        .arg(format!("--http-token-file={}", token_file.display()))
        .arg("--sync-parallel=3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let with_token = format!("http://127.0.0.1:{}/?token={TOKEN}", port.port());
    let deadline = Instant::now() + Duration::from_secs(90);
    let dom = loop {
        let dom = render(&browser, &with_token, None);
        if dom.contains("id=\"state\" class=\"ready\"") {
            break dom;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the page with ?token= never showed 'ready for cutover'; last DOM:\n{dom}");
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(dom.matches("<tr data-source=").count(), 3, "{dom}");

    let without = render(
        &browser,
        &format!("http://127.0.0.1:{}/", port.port()),
        None,
    );
    assert!(without.contains("401"), "{without}");
    assert!(!without.contains("<tr data-source="), "{without}");
    let wrong = render(
        &browser,
        &format!("http://127.0.0.1:{}/?token=nope", port.port()),
        None,
    );
    assert!(wrong.contains("401"), "{wrong}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
