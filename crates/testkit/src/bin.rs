//! Finding server binaries and their versions.
//!
//! Lookup order for the default server: `$REDIS_SERVER`, then `redis-server` on `PATH`. For the
//! version matrix, [`test_server_bin`] resolves labels such as `redis-6.2.14` or `valkey-9.1.2`
//! under `$RSM_TEST_SERVERS/bin` or `<workspace>/.test-servers/bin` (made by
//! `shared/tools/install-test-servers.sh`). A missing binary always panics with the way to install
//! it: a test that silently skips hides a broken CI machine.

use std::collections::HashMap;
use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

// Names the quick-start command first: it installs the Debian packages (and the version
// matrix when its script is there) and then runs the tests, so one command fixes the failure.
pub(crate) const INSTALL_HINT: &str = "run `scripts/test.sh` in the workspace to install it \
     and run the tests (or `apt-get install -y redis-server redis-tools`; or point \
     $REDIS_SERVER / $REDIS_CLI at a binary)";

/// The `redis-server` to use when a test does not name one: `$REDIS_SERVER` or `PATH`.
///
/// # Panics
/// If neither gives an executable file; the message says how to install one.
pub fn redis_server_bin() -> PathBuf {
    find_tool("REDIS_SERVER", "redis-server")
}

/// The `redis-cli` to use: `$REDIS_CLI` or `PATH`. The kit itself never needs it.
///
/// # Panics
/// If neither gives an executable file.
pub fn redis_cli_bin() -> PathBuf {
    find_tool("REDIS_CLI", "redis-cli")
}

fn find_tool(var: &str, name: &str) -> PathBuf {
    if let Some(v) = env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if is_executable(&p) {
            return p;
        }
        panic!(
            "${var} = {} is not an executable file; {INSTALL_HINT}",
            p.display()
        );
    }
    if let Some(p) = search_path(name) {
        return p;
    }
    panic!("`{name}` not found (${var} unset and not on PATH); {INSTALL_HINT}");
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Directory holding the version-matrix binaries: `$RSM_TEST_SERVERS/bin` or
/// `<workspace>/.test-servers/bin`.
fn test_servers_dir() -> PathBuf {
    match env::var_os("RSM_TEST_SERVERS").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("bin"),
        // crates/testkit → workspace root.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.test-servers/bin"),
    }
}

/// The binary for a version-matrix label such as `redis-6.2.14` or `valkey-9.1.2`.
///
/// # Panics
/// If it is not installed; the message names the install script.
pub fn test_server_bin(label: &str) -> PathBuf {
    let dir = test_servers_dir();
    let p = dir.join(label);
    if is_executable(&p) {
        return p;
    }
    panic!(
        "test server `{label}` not found at {}; run `scripts/test.sh` in the workspace (it runs \
         ../shared/tools/install-test-servers.sh into .test-servers when that script is there), or \
         set $RSM_TEST_SERVERS",
        p.display()
    );
}

/// Labels installed in the version-matrix directory, sorted (empty if none are installed).
pub fn test_server_labels() -> Vec<String> {
    let mut labels: Vec<String> = std::fs::read_dir(test_servers_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_executable(&e.path()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    labels.sort();
    labels
}

/// Which server family a binary belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    Redis,
    Valkey,
}

/// `redis-server --version`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerVersion {
    pub flavor: Flavor,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// True if this is at least `major.minor` of its own flavour's numbering.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// True if the server understands commands introduced in Redis `major.minor`.
    /// Every Valkey release descends from Redis 7.2.
    pub fn redis_compatible_at_least(&self, major: u32, minor: u32) -> bool {
        match self.flavor {
            Flavor::Redis => self.at_least(major, minor),
            Flavor::Valkey => (7, 2) >= (major, minor),
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.flavor {
            Flavor::Redis => "redis",
            Flavor::Valkey => "valkey",
        };
        write!(f, "{name}-{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Runs `bin --version` once per path and parses `... v=X.Y.Z ...`.
///
/// # Panics
/// If the binary cannot run or prints something unexpected.
pub fn server_version(bin: &Path) -> ServerVersion {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, ServerVersion>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(bin) {
        return *v;
    }
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{} --version`: {e}; {INSTALL_HINT}",
                bin.display()
            )
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = parse_version(&text).unwrap_or_else(|| {
        panic!(
            "unexpected `{} --version` output: {text:?} (stderr {:?})",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(bin.to_path_buf(), v);
    v
}

fn parse_version(text: &str) -> Option<ServerVersion> {
    let flavor = if text.to_ascii_lowercase().starts_with("valkey") {
        Flavor::Valkey
    } else {
        Flavor::Redis
    };
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
    Some(ServerVersion {
        flavor,
        major: it.next()??,
        minor: it.next()??,
        patch: it.next().flatten().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let r = parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64")
            .unwrap();
        assert_eq!(
            (r.flavor, r.major, r.minor, r.patch),
            (Flavor::Redis, 7, 0, 15)
        );
        let v =
            parse_version("Valkey server v=9.1.2 sha=00000000:0 malloc=jemalloc-5.3.0").unwrap();
        assert_eq!(v.flavor, Flavor::Valkey);
        assert!(v.redis_compatible_at_least(7, 0));
        assert!(!v.redis_compatible_at_least(7, 4));
        assert_eq!(v.to_string(), "valkey-9.1.2");
        assert!(parse_version("garbage").is_none());
    }
}
