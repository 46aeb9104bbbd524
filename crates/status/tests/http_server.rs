//! The status server over real sockets (issue 14): with `--http-token` every endpoint
//! answers 401 without the token and 200 with it; a client that sends half a request
//! line is dropped after the header timeout while other requests are served.

// A test (or bench) may unwrap, panic and index; the workspace denies it in library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rsm_status::http::{self, HttpOptions, HttpToken, ShardList, Shared, HEADER_READ_TIMEOUT};
use rsm_status::{now_ms, ShardStatus};

const TOKEN: &str = "tok-9f1c2e77";

fn shared() -> Shared {
    let shared = Shared {
        shards: ShardList::new(vec![ShardStatus::new(
            0,
            "127.0.0.1:7000".into(),
            "master".into(),
            "0-16383".into(),
        )]),
        source: "127.0.0.1:7000".into(),
        target: "127.0.0.1:7100".into(),
        started_ms: now_ms(),
        verify: Default::default(),
        limits: Default::default(),
    };
    // So that /verify has something to serve (200, not 404).
    shared.verify.set(true, 0, "{\"equal\":true}".into());
    shared
}

/// Start the server on a free loopback port in its own runtime (kept alive by the thread).
fn start(options: HttpOptions) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addr = http::serve_with(
                "127.0.0.1:0".parse().unwrap(),
                shared(),
                Default::default(),
                options,
            )
            .await
            .unwrap();
            tx.send(addr).unwrap();
            std::future::pending::<()>().await
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// Status code and whole response of one HTTP/1.0 GET with extra header lines.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

const ENDPOINTS: [&str; 4] = ["/", "/status", "/metrics", "/verify"];

#[test]
fn http_token_required_on_every_endpoint() {
    let addr = start(HttpOptions {
        token: Some(HttpToken::new(TOKEN.into())),
    });
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    for path in ENDPOINTS {
        let (code, response) = get(addr, path, "");
        assert_eq!(code, 401, "{path} without a token: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{path}: {response}"
        );
        assert!(
            !response.contains(TOKEN),
            "{path} leaks the token: {response}"
        );
        let (code, response) = get(addr, path, "Authorization: Bearer wrong-token\r\n");
        assert_eq!(code, 401, "{path} with a wrong token: {response}");
        let (code, response) = get(addr, path, &format!("Authorization: Basic {TOKEN}\r\n"));
        assert_eq!(code, 401, "{path} with a non-bearer header: {response}");
        let (code, response) = get(addr, path, &bearer);
        assert_eq!(code, 200, "{path} with the token: {response}");
        let (code, response) = get(addr, &format!("{path}?token={TOKEN}"), "");
        assert_eq!(code, 200, "{path}?token=: {response}");
        let (code, _) = get(addr, &format!("{path}?token={TOKEN}x"), "");
        assert_eq!(code, 401, "{path}?token= with a wrong token");
    }
    let (_, status) = get(addr, "/status", &bearer);
    assert!(status.contains("\"ready_for_cutover\""), "{status}");
    // The page passes its ?token= on to its /status requests.
    let (_, page) = get(addr, "/", &bearer);
    assert!(page.contains("Authorization"), "{page}");
}

/// Issue 27 item 10: `Authorization: bearer TOKEN` got 401. The scheme is
/// case-insensitive (RFC 7235 §2.1), and one or more spaces may follow it.
#[test]
fn http_token_scheme_is_case_insensitive() {
    let addr = start(HttpOptions {
        token: Some(HttpToken::new(TOKEN.into())),
    });
    for scheme in ["bearer", "BEARER", "BeArEr", "Bearer "] {
        let header = format!("Authorization: {scheme} {TOKEN}\r\n");
        let (code, response) = get(addr, "/status", &header);
        assert_eq!(code, 200, "{header:?}: {response}");
    }
    for header in [
        format!("Authorization: bearer{TOKEN}\r\n"),
        "Authorization: bearer wrong-token\r\n".to_string(),
        format!("Authorization: basic {TOKEN}\r\n"),
    ] {
        let (code, response) = get(addr, "/status", &header);
        assert_eq!(code, 401, "{header:?}: {response}");
    }
}

#[test]
fn http_without_token_is_open() {
    let addr = start(HttpOptions::default());
    for path in ENDPOINTS {
        let (code, response) = get(addr, path, "");
        assert_eq!(code, 200, "{path}: {response}");
    }
}

#[test]
fn http_half_sent_or_idle_request_is_dropped_after_the_header_timeout() {
    let addr = start(HttpOptions::default());
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /sta").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // One that sends nothing at all is dropped the same way.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    // Meanwhile the server answers others.
    for _ in 0..3 {
        let (code, response) = get(addr, "/status", "");
        assert_eq!(code, 200, "{response}");
    }

    // The server closes the slow connection (EOF, maybe after a 408), within a
    // generous bound, and not before the timeout.
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        read.is_ok(),
        "still open after {took:?}: {read:?} (the read timed out)"
    );
    assert!(took < Duration::from_secs(30), "closed only after {took:?}");
    assert!(
        took + Duration::from_millis(500) >= HEADER_READ_TIMEOUT,
        "closed after {took:?}, before the {HEADER_READ_TIMEOUT:?} timeout"
    );
    let read = idle.read_to_end(&mut rest);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(30),
        "an idle connection still open after {:?}: {read:?}",
        started.elapsed()
    );
}
