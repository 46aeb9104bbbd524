//! The independent assertion client: thin helpers over the `redis` crate's sync API.
//!
//! [`Target`] is what the dataset helpers write to and read from: a standalone [`crate::Server`]
//! or a [`crate::Cluster`]. [`ClusterConn`] routes by key with its own small CRC16 and follows
//! `MOVED` / `ASK`, so it shares no code with the crates under test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crc::{Crc, CRC_16_XMODEM};
use redis::{
    Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, RedisConnectionInfo, Value,
};

/// Read/write timeout of kit connections: long enough for any test, short enough that a hung
/// server fails the test instead of hanging CI.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call follows redirections: a slot being resharded answers `TRYAGAIN` until
/// its last keys have moved, which takes milliseconds per slot.
const REDIRECT_PATIENCE: Duration = Duration::from_secs(5);

/// Something the dataset helpers can write to and read from.
pub trait Target {
    /// Runs `cmds` pipelined on the node that owns `key` (all commands must be about `key`).
    fn run_on_key(&self, key: &[u8], cmds: &[Vec<Vec<u8>>]) -> redis::RedisResult<Vec<Value>>;
    /// One connection to every node holding data: the server itself, or every live master.
    fn data_conns(&self) -> Vec<Connection>;
}

/// Connects to `addr` ("host:port"), authenticating if `password` is set.
pub(crate) fn connect(addr: &str, password: Option<&str>) -> redis::RedisResult<Connection> {
    let (host, port) = split_addr(addr).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad address",
            addr.to_string(),
        ))
    })?;
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp(host, port),
        redis: RedisConnectionInfo {
            password: password.map(str::to_string),
            ..Default::default()
        },
    };
    let client = redis::Client::open(info)?;
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    let h = if h.is_empty() { "127.0.0.1" } else { h };
    Some((h.to_string(), p.parse().ok()?))
}

pub(crate) fn make_cmd<A: AsRef<[u8]>>(args: &[A]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(a.as_ref());
    }
    c
}

pub(crate) fn run_cmd(conn: &mut Connection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    make_cmd(args).query(conn)
}

pub(crate) fn run_pipeline(
    conn: &mut Connection,
    cmds: &[Vec<Vec<u8>>],
) -> redis::RedisResult<Vec<Value>> {
    let mut p = redis::pipe();
    for c in cmds {
        p.add_command(make_cmd(c));
    }
    p.query(conn)
}

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The cluster slot of `key` (hash tags honoured). The kit's own copy, independent of
/// `rsm-cluster`, which it is used to test.
pub fn key_slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                k = &key[open + 1..open + 1 + len];
            }
        }
    }
    CRC16.checksum(k) % 16384
}

/// A minimal cluster client for tests: slot map from `CLUSTER SLOTS`, one connection per node,
/// follows `MOVED` (refreshing the map) and `ASK` (with `ASKING`).
pub struct ClusterConn {
    seeds: Vec<String>,
    password: Option<String>,
    slots: Vec<Option<String>>,
    conns: HashMap<String, Connection>,
}

impl ClusterConn {
    /// Connects through any of `seeds` and loads the slot map.
    pub fn new(seeds: Vec<String>, password: Option<String>) -> redis::RedisResult<ClusterConn> {
        let mut c = ClusterConn {
            seeds,
            password,
            slots: vec![None; 16384],
            conns: HashMap::new(),
        };
        c.refresh()?;
        Ok(c)
    }

    /// Reloads the slot map from the first seed that answers.
    pub fn refresh(&mut self) -> redis::RedisResult<()> {
        let mut last_err = None;
        for seed in self.seeds.clone() {
            match self.load_slots(&seed) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| (redis::ErrorKind::ClientError, "no seed addresses").into()))
    }

    fn load_slots(&mut self, seed: &str) -> redis::RedisResult<()> {
        let reply = run_cmd(self.conn(seed)?, &[b"CLUSTER", b"SLOTS"])?;
        let Value::Array(ranges) = reply else {
            return Err((redis::ErrorKind::TypeError, "CLUSTER SLOTS: not an array").into());
        };
        let mut slots = vec![None; 16384];
        for r in ranges {
            let Value::Array(parts) = r else { continue };
            let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                _ => String::new(),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            let host = if host.is_empty() || host == "?" {
                // Empty endpoint = "the host you asked", always loopback here.
                "127.0.0.1".to_string()
            } else {
                host
            };
            let addr = format!("{host}:{port}");
            for s in (*a).max(0)..=(*b).min(16383) {
                slots[s as usize] = Some(addr.clone());
            }
        }
        self.slots = slots;
        Ok(())
    }

    fn conn(&mut self, addr: &str) -> redis::RedisResult<&mut Connection> {
        if !self.conns.contains_key(addr) {
            let c = connect(addr, self.password.as_deref())?;
            self.conns.insert(addr.to_string(), c);
        }
        // Inserted just above if it was missing.
        Ok(self.conns.get_mut(addr).expect("connection inserted above"))
    }

    /// The address of the master that owns `key`'s slot, per the current map.
    pub fn addr_for_key(&self, key: &[u8]) -> Option<&str> {
        self.slots[key_slot(key) as usize].as_deref()
    }

    /// Runs `cmds` pipelined on the owner of `key`, following redirections.
    ///
    /// Redirections are per command: while a slot moves, a pipeline can be half applied on
    /// the old owner and half answered `ASK` or `TRYAGAIN`. Only the redirected commands are
    /// sent again, in their order (to an `ASK` node each behind its own `ASKING`, which lasts
    /// one command), so no command runs twice, and a key is never created on the importing
    /// node while the old owner still holds it (the reshard's `MIGRATE` would then fail with
    /// BUSYKEY). A non-redirect error reply comes back as `Err` once every command has run.
    pub fn run_on_key(
        &mut self,
        key: &[u8],
        cmds: &[Vec<Vec<u8>>],
    ) -> redis::RedisResult<Vec<Value>> {
        let mut addr = self.owner_of(key)?;
        let mut asking = false;
        let mut replies: Vec<Option<Value>> = vec![None; cmds.len()];
        let mut pending: Vec<usize> = (0..cmds.len()).collect();
        let deadline = Instant::now() + REDIRECT_PATIENCE;
        while !pending.is_empty() {
            let batch: Vec<&Vec<Vec<u8>>> = pending.iter().map(|&i| &cmds[i]).collect();
            let got = self.send(&addr, &batch, asking)?;
            let mut next: Option<Redirect> = None;
            let mut redirected = Vec::new();
            for (&i, v) in pending.iter().zip(got) {
                match Redirect::of(&v) {
                    Some(r) => {
                        redirected.push(i);
                        next = Some(match next {
                            Some(n) => n.stronger(r),
                            None => r,
                        });
                    }
                    None => replies[i] = Some(v),
                }
            }
            pending = redirected;
            let Some(next) = next else { break };
            if Instant::now() > deadline {
                return Err((redis::ErrorKind::ClientError, "too many redirections").into());
            }
            match next {
                Redirect::Moved(to) => {
                    addr = to;
                    asking = false;
                    let _ = self.refresh();
                }
                Redirect::Ask(to) => {
                    addr = to;
                    asking = true;
                }
                Redirect::TryAgain => {
                    // The slot's keys are split between two nodes for a moment.
                    std::thread::sleep(Duration::from_millis(50));
                    addr = self.owner_of(key)?;
                    asking = false;
                }
            }
        }
        let mut out = Vec::with_capacity(cmds.len());
        for v in replies {
            match v {
                Some(Value::ServerError(e)) => return Err(e.into()),
                Some(v) => out.push(v),
                // Every index leaves `pending` only with its reply stored.
                None => return Err((redis::ErrorKind::ClientError, "reply missing").into()),
            }
        }
        Ok(out)
    }

    /// The owner of `key`'s slot per the map, reloading the map once if it has none.
    fn owner_of(&mut self, key: &[u8]) -> redis::RedisResult<String> {
        if let Some(a) = self.addr_for_key(key) {
            return Ok(a.to_string());
        }
        self.refresh()?;
        self.addr_for_key(key).map(str::to_string).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::ClusterDown, "slot not served"))
        })
    }

    /// Sends `batch` pipelined to `addr` (each command behind `ASKING` if `asking`) and
    /// returns one reply per command, error replies included as `Value::ServerError`.
    fn send(
        &mut self,
        addr: &str,
        batch: &[&Vec<Vec<u8>>],
        asking: bool,
    ) -> redis::RedisResult<Vec<Value>> {
        let mut p = redis::pipe();
        for c in batch {
            if asking {
                p.cmd("ASKING");
            }
            p.add_command(make_cmd(c));
        }
        let conn = match self.conn(addr) {
            Ok(c) => c,
            Err(e) => {
                self.conns.remove(addr);
                return Err(e);
            }
        };
        match conn.req_packed_commands(&p.get_packed_pipeline(), 0, p.len()) {
            Ok(v) if asking => Ok(v.into_iter().skip(1).step_by(2).collect()),
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    self.conns.remove(addr);
                }
                Err(e)
            }
        }
    }

    /// Runs one command whose key is `key` on its owner.
    pub fn cmd_on_key(&mut self, key: &[u8], args: &[&[u8]]) -> redis::RedisResult<Value> {
        let cmd: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        let mut out = self.run_on_key(key, &[cmd])?;
        Ok(out.pop().unwrap_or(Value::Nil))
    }
}

/// What a redirect reply asks of the client; the address is the `host:port` it names.
#[derive(Clone, Debug, PartialEq)]
enum Redirect {
    Moved(String),
    Ask(String),
    TryAgain,
}

impl Redirect {
    fn of(v: &Value) -> Option<Redirect> {
        let Value::ServerError(e) = v else {
            return None;
        };
        // "MOVED 3999 127.0.0.1:6381": the address is the second word of the detail.
        let to = || {
            e.details()
                .and_then(|d| d.split_ascii_whitespace().nth(1))
                .map(str::to_string)
        };
        match e.code() {
            "MOVED" => to().map(Redirect::Moved),
            "ASK" => to().map(Redirect::Ask),
            "TRYAGAIN" => Some(Redirect::TryAgain),
            _ => None,
        }
    }

    /// Of two redirects in one pipeline's replies, the one to follow: MOVED (the map is
    /// stale, the others may be too), then ASK, then TRYAGAIN.
    fn stronger(self, other: Redirect) -> Redirect {
        let rank = |r: &Redirect| match r {
            Redirect::Moved(_) => 2,
            Redirect::Ask(_) => 1,
            Redirect::TryAgain => 0,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_vectors() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"foo{bar}{zap}"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            split_addr("127.0.0.1:7000"),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(split_addr(":7000"), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(split_addr("[::1]:7000"), Some(("::1".into(), 7000)));
    }
}
