//! The password and write flags shared by `redis-sync-manager` and `redis-port`
//! (`sync`, `restore`, `dump`), defined once so that both binaries accept the same
//! spellings, refuse the same mistakes (an empty `--auth`, two conflicting policies)
//! and mean the same thing by them.

use std::path::PathBuf;

use clap::Args;
use rsm_client::Credentials;

use rsm_client::throttle::Limits;
use rsm_command::filter::KeyPrefixes;
use rsm_writer::{ConflictPolicy, EngineOptions};

use crate::parse::{parse_db, parse_ops, parse_size, secret, SOURCE_PASSWORD, TARGET_PASSWORD};

/// `--password` / `--password-file`: the source's credentials.
#[derive(Debug, Clone, Default, Args)]
pub struct SourcePasswordArgs {
    /// Password of the source database; `user:password` selects an ACL user.
    /// Also from the environment: RSM_SOURCE_PASSWORD.
    // The environment variable is read by `secret`, not clap (see there).
    #[arg(long, value_name = "SRC_PASSWORD")]
    pub password: Option<String>,

    /// Read the source password (its first line) from FILE, which must be mode 0600 or stricter.
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
}

impl SourcePasswordArgs {
    /// The credentials; an empty password is a mistake, not "none".
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        secret(
            SOURCE_PASSWORD,
            self.password.as_deref(),
            self.password_file.as_deref(),
        )
        .map(|s| s.as_deref().map(Credentials::parse))
    }
}

/// `--auth` / `--auth-file`: the target's credentials.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetPasswordArgs {
    /// Password of the target database; `user:password` selects an ACL user.
    /// Also from the environment: RSM_TARGET_PASSWORD.
    // The environment variable is read by `secret`, not clap (see there).
    #[arg(long, value_name = "DST_PASSWORD")]
    pub auth: Option<String>,

    /// Read the target password (its first line) from FILE, which must be mode 0600 or stricter.
    #[arg(long, value_name = "FILE", conflicts_with = "auth")]
    pub auth_file: Option<PathBuf>,
}

impl TargetPasswordArgs {
    /// The credentials; an empty password is a mistake, not "none".
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        secret(
            TARGET_PASSWORD,
            self.auth.as_deref(),
            self.auth_file.as_deref(),
        )
        .map(|s| s.as_deref().map(Credentials::parse))
    }
}

/// The flags that shape what is written into the target.
#[derive(Debug, Clone, Default, Args)]
pub struct WriteArgs {
    /// Only keys starting with one of these prefixes, e.g. "str1|str2|str3".
    #[arg(long, value_name = "str1|str2|str3", value_parser = KeyPrefixes::parse)]
    pub filterkey: Option<KeyPrefixes>,

    /// The database of the target that every key is written into (standalone targets).
    #[arg(long, value_name = "DB", value_parser = parse_db, allow_hyphen_values = true)]
    pub targetdb: Option<u32>,

    /// Overwrite a key that already exists in the target (default: stop with an error).
    #[arg(long, conflicts_with = "skip_existing")]
    pub rewrite: bool,

    /// Keep the target's value of a key that already exists there, count it, and go on.
    #[arg(long)]
    pub skip_existing: bool,

    /// When a value is larger than SIZE, write it in chunks of ordinary commands
    /// (big key write mode). Bytes, or with a unit: 64mb, 1gb, 512kb (k/m/g = 1000s, kb/mb/gb = 1024s, as in redis.conf).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub bigkeysize: Option<u64>,

    /// Send at most this many commands per second to the target, summed over everything
    /// this process writes (every shard, snapshot and stream). Off by default.
    #[arg(long, value_name = "N", value_parser = parse_ops)]
    pub max_ops: Option<u64>,
}

impl WriteArgs {
    /// `--rewrite`, `--skip-existing` or neither (clap refuses both).
    pub fn conflict(&self) -> ConflictPolicy {
        if self.rewrite {
            ConflictPolicy::Rewrite
        } else if self.skip_existing {
            ConflictPolicy::Skip
        } else {
            ConflictPolicy::Fail
        }
    }

    /// The engine's options; `max_bandwidth` is the snapshot read limit of the commands
    /// that read a source (`--max-bandwidth`), `None` for a file restore.
    pub fn options(&self, max_bandwidth: Option<u64>) -> EngineOptions {
        EngineOptions {
            filter: self.filterkey.clone().unwrap_or_default(),
            target_db: self.targetdb,
            conflict: self.conflict(),
            big_key_size: self.bigkeysize,
            limits: Limits::new(max_bandwidth, self.max_ops),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        source: SourcePasswordArgs,
        #[command(flatten)]
        target: TargetPasswordArgs,
        #[command(flatten)]
        write: WriteArgs,
    }

    fn parse(args: &[&str]) -> Result<Probe, clap::Error> {
        Probe::try_parse_from(std::iter::once("probe").chain(args.iter().copied()))
    }

    #[test]
    fn policies_and_limits_become_engine_options() {
        let p = parse(&["--skip-existing", "--targetdb=3", "--max-ops=500"]).unwrap();
        let o = p.write.options(Some(1_000_000));
        assert_eq!(o.conflict, ConflictPolicy::Skip);
        assert_eq!(o.target_db, Some(3));
        let limits = o.limits.report();
        assert_eq!(limits.target_ops.map(|l| l.per_second), Some(500));
        assert_eq!(limits.snapshot_bytes.map(|l| l.per_second), Some(1_000_000));
        assert_eq!(
            parse(&["--rewrite"]).unwrap().write.conflict(),
            ConflictPolicy::Rewrite
        );
        assert_eq!(parse(&[]).unwrap().write.conflict(), ConflictPolicy::Fail);
        assert!(parse(&["--rewrite", "--skip-existing"]).is_err());
        assert!(parse(&["--targetdb=-1"]).is_err());
    }

    #[test]
    fn an_empty_password_is_refused_on_both_sides() {
        let p = parse(&["--password=", "--auth="]).unwrap();
        assert!(p.source.credentials().unwrap_err().contains("--password"));
        assert!(p.target.credentials().unwrap_err().contains("--auth"));
        assert!(parse(&["--auth=x", "--auth-file=/f"]).is_err());
    }
}
