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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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
    // Held only for its lock; closing it releases the lease.
    _file: File,
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
        let lease = PortLease {
            port,
            path,
            _file: file.try_clone().ok()?,
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
    fn released_port_can_be_leased_again() {
        let l = PortLease::acquire();
        let port = l.port();
        drop(l);
        let again = PortLease::try_port(port).expect("released port is leasable");
        assert_eq!(again.port(), port);
    }
}
