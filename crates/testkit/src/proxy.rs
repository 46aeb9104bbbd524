//! A small TCP proxy on loopback, for fault tests: it forwards every connection to one
//! upstream address and can cut them all on demand, or hold new data (pause) for a while.
//!
//! Threads, not async: the tests that use it run their own runtimes, and the proxy must
//! keep forwarding while a test thread blocks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::ports::PortLease;

struct Shared {
    upstream: String,
    /// Both sockets of every live connection, so they can be cut from outside.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
    paused: AtomicBool,
    stopped: AtomicBool,
    accepted: AtomicU64,
}

/// A running proxy. Dropping it closes the listener and every connection.
pub struct Proxy {
    lease: PortLease,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listen on a leased loopback port and forward to `upstream` ("host:port").
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub fn start(upstream: &str) -> Proxy {
        let lease = PortLease::acquire();
        let listener = TcpListener::bind(("127.0.0.1", lease.port()))
            .unwrap_or_else(|e| panic!("proxy: cannot bind {}: {e}", lease.port()));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("proxy: {e}"));
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            live: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, s));
        Proxy { lease, shared }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.lease.port())
    }

    /// Cut every connection open now (both directions); new ones are accepted as before.
    /// Returns how many were cut.
    pub fn reset_all(&self) -> usize {
        let mut live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
        let n = live.len();
        for (a, b) in live.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        n
    }

    /// Hold every byte in both directions until [`Proxy::resume`] (connections stay open).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.reset_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&shared.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut live) = shared.live.lock() {
                    live.push((c2, s2));
                }
                let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let up = shared.clone();
                thread::spawn(move || copy(client, server, &up));
                let down = shared.clone();
                thread::spawn(move || copy(s3, c3, &down));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Forward `from` → `to` until either side closes; then close both.
fn copy(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while shared.paused.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while shared.paused.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
