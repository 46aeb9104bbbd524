//! One real server process on loopback, in its own temporary directory, stopped on drop.
//!
//! `Server::start` writes a config file (loopback bind, no persistence, log file in the dir),
//! spawns the binary, and waits until it answers `PING`. If the port turns out to be taken by
//! something outside the kit (the bind probe races with the world), it retries on another port.
//! Stopping is always by PID of the child we spawned: SIGTERM, a grace period, then SIGKILL.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::bin::{redis_server_bin, server_version, ServerVersion, INSTALL_HINT};
use crate::certs::TestCerts;
use crate::client::{connect, run_cmd, run_pipeline, Target};
use crate::ports::PortLease;

/// How a [`Server`] is started. `ServerOptions::default()` is a plain standalone server using
/// [`redis_server_bin`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Server binary; `None` = `$REDIS_SERVER` or `redis-server` on `PATH`.
    pub bin: Option<PathBuf>,
    /// Sets `requirepass` and `masterauth` (so replicas of a protected master work too).
    pub password: Option<String>,
    /// `cluster-enabled yes` (with `cluster-node-timeout 5000` unless overridden).
    pub cluster: bool,
    /// Extra `directive value` lines. A directive given here replaces the kit's default for it.
    /// Values are written verbatim, so quote them as redis.conf expects if needed.
    pub extra_config: Vec<(String, String)>,
    /// How long to wait for the first `PONG`.
    pub start_timeout: Duration,
    /// Also listen for TLS on a second leased port ([`Server::tls_port`]); the plain port
    /// stays open, so the kit's own client and [`crate::Snapshot`] keep working.
    pub tls: Option<ServerTls>,
}

/// TLS for a test server: its certificate, and whether it checks clients' certificates.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub certs: TestCerts,
    /// `tls-auth-clients yes`: a client must show a certificate signed by the CA.
    pub auth_clients: bool,
    /// Serve the expired certificate instead of the good one.
    pub expired: bool,
}

impl ServerTls {
    pub fn new(certs: &TestCerts) -> ServerTls {
        ServerTls {
            certs: certs.clone(),
            auth_clients: false,
            expired: false,
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bin: None,
            password: None,
            cluster: false,
            extra_config: Vec::new(),
            start_timeout: Duration::from_secs(15),
            tls: None,
        }
    }
}

/// A running server. Dropping it stops the process and releases its port.
pub struct Server {
    // Declared first so the process is stopped before the lease and the directory go away.
    child: Mutex<Option<Child>>,
    pid: AtomicU32,
    port: u16,
    bin: PathBuf,
    version: ServerVersion,
    password: Option<String>,
    cluster: bool,
    // Cached connection for `cmd`.
    conn: Mutex<Option<Connection>>,
    lease: PortLease,
    tls_lease: Option<PortLease>,
    dir: tempfile::TempDir,
}

/// Why one start attempt failed.
enum StartError {
    /// The port was taken after all: try another one.
    PortInUse,
    Fatal(String),
}

impl StartError {
    fn text(&self) -> String {
        match self {
            StartError::PortInUse => "port in use".into(),
            StartError::Fatal(m) => m.clone(),
        }
    }
}

impl Server {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// # Panics
    /// If the binary is missing, or the server does not come up (the message has its log tail).
    pub fn start(opts: ServerOptions) -> Server {
        let bin = opts.bin.clone().unwrap_or_else(redis_server_bin);
        let version = server_version(&bin);
        let mut last = String::new();
        for _attempt in 0..5 {
            match Self::try_start(&opts, &bin, version) {
                Ok(s) => return s,
                Err(StartError::PortInUse) => last = "port in use".into(),
                Err(StartError::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "could not start {} ({version}): {last} on 5 ports",
            bin.display()
        );
    }

    fn try_start(
        opts: &ServerOptions,
        bin: &Path,
        version: ServerVersion,
    ) -> Result<Server, StartError> {
        let lease = PortLease::acquire();
        let port = lease.port();
        let dir = tempfile::Builder::new()
            .prefix(&format!("rsm-testkit-{port}-"))
            .tempdir()
            .map_err(|e| StartError::Fatal(format!("cannot create temp dir: {e}")))?;
        let conf_path = dir.path().join("redis.conf");
        let tls_lease = opts.tls.as_ref().map(|_| PortLease::acquire());
        let mut text = config_text(opts, port, dir.path());
        if let (Some(tls), Some(l)) = (&opts.tls, &tls_lease) {
            text.push_str(&tls_config_text(tls, l.port()));
            if opts.cluster {
                // With tls-cluster the bus port would follow the TLS port (+10000), outside
                // this server's lease: keep it at the plain port's.
                text.push_str(&format!(
                    "tls-cluster yes\ntls-replication yes\ncluster-port {}\n",
                    lease.bus_port()
                ));
            }
        }
        fs::write(&conf_path, text)
            .map_err(|e| StartError::Fatal(format!("cannot write {}: {e}", conf_path.display())))?;
        let child = spawn(bin, dir.path())?;
        lease.record_server(child.id(), dir.path());
        let server = Server {
            pid: AtomicU32::new(child.id()),
            child: Mutex::new(Some(child)),
            port,
            bin: bin.to_path_buf(),
            version,
            password: opts.password.clone(),
            cluster: opts.cluster,
            conn: Mutex::new(None),
            lease,
            tls_lease,
            dir,
        };
        server.wait_ready(opts.start_timeout)?;
        Ok(server)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                let tail = self.log_tail(30);
                if tail.contains("Address already in use") {
                    return Err(StartError::PortInUse);
                }
                return Err(StartError::Fatal(format!(
                    "{} ({}) on port {} exited during start-up ({status}); log tail:\n{tail}",
                    self.bin.display(),
                    self.version,
                    self.port
                )));
            }
            if let Ok(mut c) = self.try_conn() {
                match redis::cmd("PING").query::<Value>(&mut c) {
                    Ok(_) => return Ok(()),
                    // LOADING and friends: not ready yet.
                    Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                        return Err(StartError::Fatal(format!(
                            "AUTH failed on a fresh server: {e}"
                        )))
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "{} ({}) on port {} did not answer PING within {timeout:?}; log tail:\n{}",
                    self.bin.display(),
                    self.version,
                    self.port,
                    self.log_tail(30)
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// `"127.0.0.1:<port>"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when started with [`ServerOptions::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_lease.as_ref().map(PortLease::port)
    }

    /// `"127.0.0.1:<tls port>"`.
    ///
    /// # Panics
    /// If the server was started without TLS.
    pub fn tls_addr(&self) -> String {
        let port = self
            .tls_port()
            .expect("server started without ServerOptions::tls");
        format!("127.0.0.1:{port}")
    }

    /// The server's PID (the process we spawned).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The server's working directory (config, log, RDB, `nodes.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binary it runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Its version, from `--version`.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The password it was started with.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Whether it runs in cluster mode.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last `lines` lines of the server log and of its stdout/stderr, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["redis.log", "stdout.log"] {
            let text = fs::read(self.dir().join(name))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            if all.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "--- {name} of {} (port {}) ---",
                self.version, self.port
            );
            for l in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    /// A new connection (authenticated if the server has a password).
    ///
    /// # Panics
    /// If the server cannot be reached.
    pub fn conn(&self) -> Connection {
        self.try_conn().unwrap_or_else(|e| {
            panic!(
                "cannot connect to {}: {e}\n{}",
                self.addr(),
                self.log_tail(20)
            )
        })
    }

    /// A new connection, or the error.
    pub fn try_conn(&self) -> redis::RedisResult<Connection> {
        connect(&self.addr(), self.password.as_deref())
    }

    /// Runs one command on a cached connection and returns the reply.
    ///
    /// # Panics
    /// On an error reply or a connection failure; use [`Server::try_cmd`] to see errors.
    pub fn cmd(&self, args: &[&[u8]]) -> Value {
        self.try_cmd(args).unwrap_or_else(|e| {
            panic!(
                "{} on {} failed: {e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or(b"")),
                self.addr()
            )
        })
    }

    /// Runs one command on a cached connection; server errors come back as `Err`.
    pub fn try_cmd(&self, args: &[&[u8]]) -> redis::RedisResult<Value> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.try_conn()?);
        }
        // Just filled above.
        let conn = guard.as_mut().expect("connection cached above");
        let res = run_cmd(conn, args);
        if let Err(e) = &res {
            if e.is_io_error() || e.is_connection_dropped() {
                *guard = None; // reconnect next time
            }
        }
        res
    }

    /// Runs a command given as text words (`s.cmd_str("CONFIG GET maxmemory")`); for readability
    /// in tests where no argument contains spaces.
    pub fn cmd_str(&self, line: &str) -> Value {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        self.cmd(&words)
    }

    /// One `INFO <section>` field, e.g. `info_field("replication", "master_link_status")`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.try_cmd(&[b"INFO", section.as_bytes()]).ok()?;
        let text = match info {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => return None,
        };
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }

    /// Stops the server (if running) and starts it again on the same port, directory and
    /// config, then waits for `PING`. Data survives only if the test enabled persistence
    /// (`extra_config`), e.g. `appendonly yes`.
    ///
    /// # Panics
    /// If it does not come back.
    pub fn restart(&self) {
        self.stop();
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let child =
            spawn(&self.bin, self.dir()).unwrap_or_else(|e| panic!("restart: {}", e.text()));
        self.pid.store(child.id(), Ordering::Relaxed);
        self.lease.record_server(child.id(), self.dir());
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        if let Err(e) = self.wait_ready(Duration::from_secs(15)) {
            panic!("restart of {}: {}", self.addr(), e.text());
        }
    }

    /// SIGKILL, for failure tests. The port stays leased until the `Server` is dropped.
    pub fn kill(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut c) = guard.take() {
            let _ = c.kill(); // SIGKILL to this PID
            let _ = c.wait();
        }
    }

    /// Graceful stop: SIGTERM, up to 5 s for the process to exit, then SIGKILL.
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut c) = guard.take() else { return };
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        // Only the PID of the child we spawned and have not yet reaped, so it cannot have
        // been recycled for another process.
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("RSM_TESTKIT_KEEP_DIRS").is_some() {
            // For post-mortems: leave config, logs and nodes.conf behind.
            self.dir.disable_cleanup(true);
            eprintln!("rsm-testkit: kept {}", self.dir.path().display());
        }
    }
}

/// Spawns `bin <dir>/redis.conf` in `dir`, output to `<dir>/stdout.log`.
fn spawn(bin: &Path, dir: &Path) -> Result<Child, StartError> {
    let conf_path = dir.join("redis.conf");
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .map_err(|e| StartError::Fatal(format!("cannot create stdout.log: {e}")))?;
    let err = out
        .try_clone()
        .map_err(|e| StartError::Fatal(format!("cannot dup stdout.log: {e}")))?;
    Command::new(bin)
        .arg(&conf_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            StartError::Fatal(format!(
                "cannot spawn {}: {e}; {INSTALL_HINT}",
                bin.display()
            ))
        })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .field("version", &self.version)
            .field("cluster", &self.cluster)
            .field("dir", &self.dir())
            .finish()
    }
}

impl Target for Server {
    fn run_on_key(&self, _key: &[u8], cmds: &[Vec<Vec<u8>>]) -> redis::RedisResult<Vec<Value>> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.try_conn()?);
        }
        let conn = guard.as_mut().expect("connection cached above");
        run_pipeline(conn, cmds)
    }

    fn data_conns(&self) -> Vec<Connection> {
        vec![self.conn()]
    }
}

/// Quotes a value for redis.conf (`sdssplitargs` syntax).
fn quote(v: &str) -> String {
    let mut s = String::from("\"");
    for b in v.bytes() {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

fn config_text(opts: &ServerOptions, port: u16, dir: &Path) -> String {
    let d = dir.display().to_string();
    let mut lines: Vec<(String, String)> = vec![
        ("port".into(), port.to_string()),
        ("bind".into(), "127.0.0.1".into()),
        ("protected-mode".into(), "no".into()),
        ("daemonize".into(), "no".into()),
        ("dir".into(), quote(&d)),
        ("logfile".into(), quote(&format!("{d}/redis.log"))),
        ("loglevel".into(), "notice".into()),
        ("appendonly".into(), "no".into()),
        ("save".into(), "\"\"".into()),
        ("dbfilename".into(), "dump.rdb".into()),
    ];
    if let Some(p) = &opts.password {
        lines.push(("requirepass".into(), quote(p)));
        lines.push(("masterauth".into(), quote(p)));
    }
    if opts.cluster {
        lines.push(("cluster-enabled".into(), "yes".into()));
        lines.push((
            "cluster-config-file".into(),
            quote(&format!("{d}/nodes.conf")),
        ));
        lines.push(("cluster-node-timeout".into(), "5000".into()));
    }
    for (k, _) in &opts.extra_config {
        lines.retain(|(d, _)| !d.eq_ignore_ascii_case(k));
    }
    lines.extend(opts.extra_config.iter().cloned());
    let mut text = String::new();
    for (k, v) in lines {
        let _ = writeln!(text, "{k} {v}");
    }
    text
}

/// The `tls-*` directives for a TLS port beside the plain one.
fn tls_config_text(tls: &ServerTls, port: u16) -> String {
    let c = &tls.certs;
    let cert = if tls.expired {
        c.expired_cert()
    } else {
        c.server_cert()
    };
    let mut text = String::new();
    for (k, v) in [
        ("tls-port", port.to_string()),
        ("tls-cert-file", quote(&cert.display().to_string())),
        ("tls-key-file", quote(&c.server_key().display().to_string())),
        ("tls-ca-cert-file", quote(&c.ca().display().to_string())),
        (
            "tls-auth-clients",
            if tls.auth_clients { "yes" } else { "no" }.into(),
        ),
    ] {
        let _ = writeln!(text, "{k} {v}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_config_replaces_defaults() {
        let opts = ServerOptions {
            cluster: true,
            password: Some("p\"w x".into()),
            extra_config: vec![("cluster-node-timeout".into(), "1500".into())],
            ..Default::default()
        };
        let t = config_text(&opts, 21001, Path::new("/tmp/x"));
        assert!(t.contains("cluster-node-timeout 1500\n"));
        assert!(!t.contains("cluster-node-timeout 5000"));
        assert!(t.contains("requirepass \"p\\\"w x\"\n"));
        assert!(t.contains("save \"\"\n"));
    }
}
