//! Which server a node is, read once from `INFO server`: every side that needs the
//! version (the replica handshake, the writer's target probe, the plan, `verify`) asks
//! this type instead of reading the fields itself.

use std::fmt;

use crate::connection::info_field;

/// The server family: Valkey forked from Redis 7.2.4 and numbers its releases anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Redis,
    Valkey,
}

/// A server's family and version, as `INFO server` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub family: Family,
    /// (major, minor, patch); a part the server does not give is 0.
    pub number: (u32, u32, u32),
    /// The version text as given (`7.0.15`, `255.255.255` for an unstable build).
    pub text: String,
}

impl ServerVersion {
    /// From `INFO server`: `valkey_version` when present (Valkey also reports a
    /// `redis_version` of 7.2.4 for clients that check it), else `redis_version`.
    /// `None` when neither is there (a proxy that hides it).
    pub fn from_info(info: &[(String, String)]) -> Option<ServerVersion> {
        if let Some(v) = info_field(info, "valkey_version") {
            return Some(ServerVersion::parse(Family::Valkey, v));
        }
        info_field(info, "redis_version").map(|v| ServerVersion::parse(Family::Redis, v))
    }

    /// `major.minor.patch`, leniently: each part is its leading digits (`2-rc1` is 2),
    /// and a part without any counts as 0.
    pub fn parse(family: Family, text: &str) -> ServerVersion {
        let mut parts = text.split('.').map(|p| {
            let p = p.trim();
            let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            p.get(..digits)
                .and_then(|d| d.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let mut next = || parts.next().unwrap_or(0);
        let number = (next(), next(), next());
        ServerVersion {
            family,
            number,
            text: text.to_string(),
        }
    }

    pub fn is_valkey(&self) -> bool {
        self.family == Family::Valkey
    }

    /// (major, minor).
    pub fn major_minor(&self) -> (u32, u32) {
        (self.number.0, self.number.1)
    }

    /// True if the server understands what Redis `major.minor` introduced: every Valkey
    /// counts as Redis 7.2, the release it forked from.
    pub fn redis_at_least(&self, major: u32, minor: u32) -> bool {
        match self.family {
            Family::Valkey => (7, 2) >= (major, minor),
            Family::Redis => self.major_minor() >= (major, minor),
        }
    }

    /// Hash-field expiry (`HPEXPIREAT` and friends): Redis 7.4+, Valkey 9+.
    pub fn hash_field_ttl(&self) -> bool {
        match self.family {
            Family::Valkey => self.major_minor() >= (9, 0),
            Family::Redis => self.major_minor() >= (7, 4),
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.family {
            Family::Redis => "Redis",
            Family::Valkey => "Valkey",
        };
        write!(f, "{name} {}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valkey_wins_over_the_redis_field_it_also_reports() {
        let v = ServerVersion::from_info(&info(&[
            ("redis_version", "7.2.4"),
            ("valkey_version", "9.1.2"),
        ]))
        .unwrap();
        assert_eq!(v.family, Family::Valkey);
        assert_eq!(v.number, (9, 1, 2));
        assert_eq!(v.to_string(), "Valkey 9.1.2");
        assert!(v.redis_at_least(7, 2));
        assert!(!v.redis_at_least(7, 4));
        assert!(v.hash_field_ttl());
    }

    #[test]
    fn redis_versions_compare_by_major_and_minor() {
        let v = ServerVersion::from_info(&info(&[("redis_version", "7.0.15")])).unwrap();
        assert_eq!(v.to_string(), "Redis 7.0.15");
        assert!(v.redis_at_least(6, 2) && v.redis_at_least(7, 0));
        assert!(!v.redis_at_least(7, 2));
        assert!(!v.hash_field_ttl());
        let v74 = ServerVersion::parse(Family::Redis, "7.4.1");
        assert!(v74.hash_field_ttl());
        let old_valkey = ServerVersion::parse(Family::Valkey, "8.1.8");
        assert!(!old_valkey.hash_field_ttl());
    }

    #[test]
    fn odd_texts_do_not_fail() {
        assert_eq!(ServerVersion::parse(Family::Redis, "8").number, (8, 0, 0));
        assert_eq!(
            ServerVersion::parse(Family::Redis, "7.2-rc1").number,
            (7, 2, 0)
        );
        assert_eq!(ServerVersion::from_info(&info(&[("os", "Linux")])), None);
    }
}
