//! How one engine (one shard's sync) behaves: what the flags shared by
//! `redis-port` and `redis-sync-manager` mean to the data path.

use crate::filter::KeyPrefixes;

/// What to do when a key from the source already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Stop the shard with an error naming the key and `--rewrite` (default).
    #[default]
    Fail,
    /// Replace it (`--rewrite`).
    Rewrite,
    /// Keep the target's value and count the key (`--skip-existing`).
    Skip,
}

/// Data-path options of one engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub filter: KeyPrefixes,
    /// `--targetdb`: every key goes into this db of a standalone target.
    pub target_db: Option<u32>,
    pub conflict: ConflictPolicy,
    /// `--bigkeysize`: values larger than this are written as chunks of commands.
    pub big_key_size: Option<u64>,
}

/// `--targetdb`: a database number, 0 or more.
pub fn parse_db(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| "expected a database number, 0 or more".to_string())
}

/// Sizes as redis.conf writes them: `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let expected =
        || "expected a size in bytes, optionally with a unit: 512kb, 64mb, 1gb".to_string();
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| expected())?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(expected()),
    };
    let size = n.checked_mul(mult).ok_or_else(expected)?;
    if size == 0 {
        return Err("expected a size above 0".into());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        for bad in ["", "mb", "-1", "1.5gb", "12xb", "0", "99999999999999999gb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_db("-1").is_err());
        assert_eq!(parse_db("3"), Ok(3));
    }
}
