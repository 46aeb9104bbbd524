//! Port leases that hold across threads and across concurrently running test processes.
//!
//! A lease is an exclusive `flock` on `/tmp/rsm-testkit-ports/<port>.lock`, held for the lifetime
//! of the server that uses the port. `flock` locks belong to an open file description, so two
//! leases in the same process conflict just as two processes do, and the kernel drops the lock
//! when its owner dies: a crashed test never leaves a stale lease behind (the PID written into the
//! file is only there for a human looking at the directory).
//!
//! The lock file is unlinked on release. To stay correct with that, a lease is only taken once the
//! locked inode is still the one at the path (otherwise someone unlinked it under us and we retry).
//! After locking, both the client port and the cluster bus port (port + 10000) are probed with a
//! bind, so ports used by anything outside the kit are skipped too.
//!
//! A test process killed outright (CI timeout, SIGKILL) runs no destructors, so its servers live
//! on. Each lease therefore records its server's PID and directory in the lock file; whoever next
//! leases that port finds the record, checks that the PID still runs *in that directory*
//! (`/proc/<pid>/cwd`, so a recycled PID is never touched) and kills that orphan.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Lowest client port the kit hands out.
pub const PORT_MIN: u16 = 21000;
/// Highest client port the kit hands out (its bus port, 39999, is still below 40000; the
/// 30000-30999 range used elsewhere is never a client port and never a bus port).
pub const PORT_MAX: u16 = 29999;
/// Redis always puts the cluster bus at port + 10000 unless `cluster-port` says otherwise, and
/// Redis < 7.0 has no `cluster-port`.
pub const BUS_PORT_OFFSET: u16 = 10000;

const LOCK_DIR: &str = "/tmp/rsm-testkit-ports";

/// An exclusively held client port (and its bus port). Released on drop.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    path: PathBuf,
    // Holds the lock; closing it releases the lease.
    file: File,
}

impl PortLease {
    /// Leases a free port from `PORT_MIN..=PORT_MAX`, starting the scan at a random point so
    /// concurrent processes rarely contend for the same lock file.
    ///
    /// # Panics
    /// If the lock directory cannot be created or every port is taken.
    pub fn acquire() -> PortLease {
        fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("cannot create {LOCK_DIR}: {e}"));
        // Make the directory usable by other users' test runs too; failure is harmless.
        let _ = fs::set_permissions(
            LOCK_DIR,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        );
        let span = u32::from(PORT_MAX - PORT_MIN) + 1;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            // Cannot overflow: (start + i) % span < span <= u16 range above PORT_MIN.
            let port = PORT_MIN + ((start + i) % span) as u16;
            if let Some(lease) = Self::try_port(port) {
                return lease;
            }
        }
        panic!("no free port in {PORT_MIN}..={PORT_MAX} (all leased or bound; see {LOCK_DIR})");
    }

    fn try_port(port: u16) -> Option<PortLease> {
        let path = PathBuf::from(format!("{LOCK_DIR}/{port}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ok()?;
        file.try_lock().ok()?;
        // The previous owner may have unlinked the path between our open and our lock.
        let same_inode = match (file.metadata(), fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same_inode {
            return None;
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        reap_orphans(&previous);
        let lease = PortLease {
            port,
            path,
            file: file.try_clone().ok()?,
        };
        if !port_is_free(port) || !port_is_free(port + BUS_PORT_OFFSET) {
            return None; // drop(lease) unlinks and releases
        }
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Some(lease)
    }

    /// The leased client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Records the server running on this port, so an orphan can be found if this process dies
    /// without cleaning up.
    pub fn record_server(&self, pid: u32, dir: &Path) {
        let mut f = &self.file;
        let _ = writeln!(f, "server {pid} {}", dir.display());
    }

    /// The cluster bus port that goes with it.
    pub fn bus_port(&self) -> u16 {
        self.port + BUS_PORT_OFFSET
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        // Unlink while still holding the lock; see the module comment for why this is safe.
        let _ = fs::remove_file(&self.path);
    }
}

/// Kills servers recorded in a lock file whose owner died (see the module comment).
fn reap_orphans(record: &str) {
    for line in record.lines() {
        let mut w = line.splitn(3, ' ');
        let (Some("server"), Some(pid), Some(dir)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<libc::pid_t>() else {
            continue;
        };
        let runs_in_dir = |pid: libc::pid_t| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == Path::new(dir))
        };
        // Only kit directories, and only a process still working in one.
        if !dir.contains("rsm-testkit-") || !runs_in_dir(pid) {
            continue;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the PID was just checked to be the
        // orphaned server (its cwd is the kit directory recorded for it).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while runs_in_dir(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_dir_all(dir);
    }
}

fn port_is_free(port: u16) -> bool {
    // Probe the loopback address the servers bind to, and the wildcard address, since a
    // wildcard listener elsewhere would also make the server's bind fail.
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn leases_are_exclusive_within_a_process() {
        let leases: Vec<PortLease> = (0..50).map(|_| PortLease::acquire()).collect();
        let ports: HashSet<u16> = leases.iter().map(PortLease::port).collect();
        assert_eq!(ports.len(), leases.len());
        for l in &leases {
            assert!((PORT_MIN..=PORT_MAX).contains(&l.port()));
            assert_eq!(l.bus_port(), l.port() + 10000);
            // A second lease of a held port must fail.
            assert!(PortLease::try_port(l.port()).is_none());
        }
    }

    #[test]
    fn orphaned_server_of_a_dead_owner_is_killed() {
        use std::os::unix::process::ExitStatusExt;
        // Stand-in for a server left behind by a killed test process: a child working in a kit
        // directory, recorded in an unlocked lock file.
        let dir = tempfile::Builder::new()
            .prefix("rsm-testkit-orphan-")
            .tempdir()
            .unwrap();
        let mut orphan = std::process::Command::new("sleep")
            .arg("60")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        // What `try_port` finds in the file of a lease whose owner died.
        reap_orphans(&format!(
            "999999\nserver {} {}\n",
            orphan.id(),
            dir.path().display()
        ));
        let status = orphan.try_wait().unwrap();
        if status.is_none() {
            let _ = orphan.kill();
        }
        let status = orphan.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!dir.path().exists());
    }

    #[test]
    fn records_of_other_processes_are_left_alone() {
        // A PID whose cwd is not the recorded directory is never signalled.
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        reap_orphans(&format!("server {} /tmp/rsm-testkit-nowhere\n", other.id()));
        assert!(other.try_wait().unwrap().is_none());
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn released_port_can_be_leased_again() {
        let l = PortLease::acquire();
        let port = l.port();
        drop(l);
        let again = PortLease::try_port(port).expect("released port is leasable");
        assert_eq!(again.port(), port);
    }
}
