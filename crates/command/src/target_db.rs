//! `--targetdb`: which target db each source db's keys go into, and whether the target
//! can have it. Decided here once; discovery, the writer and `verify` ask this type
//! instead of each reading the flag their own way.

use crate::DbIndex;

/// Where source dbs land in the target: each into the db of the same number (no
/// `--targetdb`), or all of them merged into one (`--targetdb=N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetDb(Option<DbIndex>);

/// `--targetdb=N` with N other than 0 on a cluster target (see [`TargetDb::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("--targetdb={0} needs a standalone target: on a cluster only --targetdb=0 is taken")]
pub struct NeedsStandalone(pub DbIndex);

impl TargetDb {
    /// The flag as given (`None`: not given).
    pub fn new(flag: Option<DbIndex>) -> TargetDb {
        TargetDb(flag)
    }

    /// The flag as given.
    pub fn flag(self) -> Option<DbIndex> {
        self.0
    }

    /// The target db that keys of `source_db` go into.
    pub fn of(self, source_db: DbIndex) -> DbIndex {
        self.0.unwrap_or(source_db)
    }

    /// The target db that keys of `source_db` go into, or `None` when the target cannot
    /// hold it. `databases`: how many the target has: a standalone server's `databases`, a
    /// cluster's `cluster-databases` (Valkey 9+). Unknown, a cluster has only db 0 (every
    /// Redis and older Valkey cluster), and a standalone server is assumed to have it, a
    /// refused `SELECT` saying otherwise. A write for a db the target lacks must fail and
    /// be counted, never follow a refused `SELECT` into the db the connection is in.
    pub fn place(
        self,
        source_db: DbIndex,
        cluster: bool,
        databases: Option<u32>,
    ) -> Option<DbIndex> {
        let db = self.of(source_db);
        let fits = match (cluster, databases) {
            (_, Some(n)) => db < n,
            (true, None) => db == 0,
            (false, None) => true,
        };
        fits.then_some(db)
    }

    /// Whether every db of a source that has `source_databases` of them has a place in
    /// the target, used or not: a source cluster's `cluster-databases` bounds the dbs its
    /// stream may write to later, and a write to a db the target lacks would stop the
    /// shard mid-stream. The highest decides: if it fits, every lower one does.
    pub fn fits_all(self, source_databases: u32, cluster: bool, databases: Option<u32>) -> bool {
        match source_databases.checked_sub(1) {
            Some(highest) => self.place(highest, cluster, databases).is_some(),
            None => true,
        }
    }

    /// The db of the target that holds the tool's own keys: the one `--targetdb` names on
    /// a standalone target (its other dbs may belong to other applications), else db 0
    /// (always on a cluster, which has it whatever its `cluster-databases`).
    pub fn home(self, cluster: bool) -> DbIndex {
        match cluster {
            true => 0,
            false => self.0.unwrap_or(0),
        }
    }

    /// Whether several source dbs may meet in one target db (then a key name found in
    /// two of them is a conflict, not two keys).
    pub fn merges(self) -> bool {
        self.0.is_some()
    }

    /// Whether a target of this kind can take the flag. `--targetdb=0` is allowed on a
    /// cluster: it merges every source db into db 0, which every cluster has, which is
    /// what an operator moving a standalone source's dbs into a cluster asks for. Another
    /// db stays refused even on a cluster with `cluster-databases`: the tool's own keys
    /// live in db 0 there, and nothing asked for more yet.
    pub fn check(self, target_is_cluster: bool) -> Result<(), NeedsStandalone> {
        match self.0 {
            Some(db) if db != 0 && target_is_cluster => Err(NeedsStandalone(db)),
            _ => Ok(()),
        }
    }
}

impl From<Option<DbIndex>> for TargetDb {
    fn from(flag: Option<DbIndex>) -> TargetDb {
        TargetDb(flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_flag_each_db_keeps_its_number() {
        let t = TargetDb::new(None);
        assert_eq!((t.of(0), t.of(5)), (0, 5));
        assert!(!t.merges());
        assert_eq!(t.check(true), Ok(()));
    }

    #[test]
    fn with_the_flag_every_db_goes_into_one() {
        let t = TargetDb::new(Some(3));
        assert_eq!((t.of(0), t.of(5)), (3, 3));
        assert!(t.merges());
        assert_eq!(t.check(false), Ok(()));
        assert_eq!(t.check(true), Err(NeedsStandalone(3)));
    }

    #[test]
    fn a_db_the_target_lacks_has_no_place() {
        let each = TargetDb::new(None);
        assert_eq!(each.place(3, false, Some(16)), Some(3));
        assert_eq!(each.place(16, false, Some(16)), None);
        assert_eq!(each.place(3, false, None), Some(3));
        assert_eq!(each.place(3, true, None), None);
        assert_eq!(each.place(0, true, None), Some(0));
        let merged = TargetDb::new(Some(0));
        assert_eq!(merged.place(3, true, None), Some(0));
    }

    /// A Valkey 9 cluster with `cluster-databases 16` has dbs 0 to 15; a Redis cluster
    /// (which has no such setting) or one set to 1 has db 0 only.
    #[test]
    fn a_cluster_has_the_dbs_its_cluster_databases_says() {
        let each = TargetDb::new(None);
        assert_eq!(each.place(5, true, Some(16)), Some(5));
        assert_eq!(each.place(15, true, Some(16)), Some(15));
        assert_eq!(each.place(16, true, Some(16)), None);
        assert_eq!(each.place(1, true, Some(1)), None);
        assert_eq!(each.place(0, true, Some(1)), Some(0));
        assert_eq!(TargetDb::new(Some(0)).place(9, true, Some(1)), Some(0));
    }

    /// A source that can write to 16 dbs needs a target with 16, or `--targetdb`.
    #[test]
    fn every_db_a_source_can_write_to_must_have_a_place() {
        let each = TargetDb::new(None);
        assert!(each.fits_all(16, true, Some(16)));
        assert!(!each.fits_all(16, true, Some(8)));
        assert!(
            !each.fits_all(16, true, None),
            "a Redis cluster has db 0 only"
        );
        assert!(each.fits_all(1, true, None));
        assert!(each.fits_all(0, true, None));
        assert!(!each.fits_all(16, false, Some(4)));
        assert!(each.fits_all(16, false, None), "unknown: assumed");
        assert!(
            TargetDb::new(Some(0)).fits_all(16, true, None),
            "merged into db 0"
        );
    }

    #[test]
    fn the_tools_keys_live_in_the_targetdb_db_of_a_standalone_target() {
        assert_eq!(TargetDb::new(Some(4)).home(false), 4);
        assert_eq!(TargetDb::new(Some(4)).home(true), 0);
        assert_eq!(TargetDb::new(None).home(false), 0);
    }

    #[test]
    fn db_zero_is_the_one_db_a_cluster_has() {
        assert_eq!(TargetDb::new(Some(0)).check(true), Ok(()));
    }
}
