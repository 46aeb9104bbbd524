//! A write load on the source while a test breaks things: commands that are not safe to
//! apply twice (INCR, RPUSH/LPOP, XADD, HINCRBY, APPEND, RENAME) beside plain SETs and
//! DELs, so that a command applied twice or lost shows in a compare of every key.
//!
//! Each round picks one hash tag and sends its commands pipelined to the key's owner,
//! so a cluster source is loaded on every master.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Value;

use crate::client::run_pipeline;
use crate::{Cluster, Server};

type Runner = Box<dyn FnMut(&[u8], &[Vec<Vec<u8>>]) -> redis::RedisResult<Vec<Value>> + Send>;

/// A running load; [`MixedLoad::stop`] ends it and says how many rounds ran.
pub struct MixedLoad {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl MixedLoad {
    pub fn on_cluster(cluster: &Cluster, groups: u32) -> MixedLoad {
        let mut conn = cluster.client();
        MixedLoad::start(
            Box::new(move |key, cmds| conn.run_on_key(key, cmds)),
            groups,
        )
    }

    pub fn on_server(server: &Server, groups: u32) -> MixedLoad {
        let mut conn = server.conn();
        MixedLoad::start(
            Box::new(move |_, cmds| run_pipeline(&mut conn, cmds)),
            groups,
        )
    }

    fn start(mut run: Runner, groups: u32) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut n: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                let g = (n.wrapping_mul(2_654_435_761) % u64::from(groups.max(1))) as u32;
                let cmds = round(g, n);
                let key = format!("{{g{g}}}:ctr");
                if run(key.as_bytes(), &cmds).is_err() {
                    // The source is being restarted or failed over by the test: try again.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                n += 1;
                r.store(n, Ordering::Relaxed);
            }
        });
        MixedLoad {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Rounds sent so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.rounds()
    }
}

impl Drop for MixedLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// One round of commands on group `g` (all keys share the tag `{g<g>}`).
fn round(g: u32, n: u64) -> Vec<Vec<Vec<u8>>> {
    let k = |name: &str| format!("{{g{g}}}:{name}");
    let seq = n.to_string();
    let mut cmds = vec![
        args(&["INCR", &k("ctr")]),
        args(&["RPUSH", &k("list"), &seq]),
        args(&["XADD", &k("stream"), "*", "n", &seq]),
        args(&["HINCRBY", &k("hash"), "f", "1"]),
        args(&["APPEND", &k("text"), "x"]),
        args(&["SET", &k("plain"), &seq]),
        args(&["SET", &k("tmp"), &seq]),
        args(&["RENAME", &k("tmp"), &k("renamed")]),
    ];
    if n.is_multiple_of(3) {
        cmds.push(args(&["LPOP", &k("list")]));
    }
    if n.is_multiple_of(50) {
        cmds.push(args(&["DEL", &k("text")]));
    }
    cmds
}
