//! Replicated commands an older target does not know, rewritten into ones it does.
//!
//! Pure: no I/O. A 7.0+ source replicates every expiry as `SET … PXAT`, which a target
//! before 6.2 refuses; a 7.4+ source replicates hash field TTLs (`HSETEX … PXAT`,
//! `HPEXPIREAT`, `HPERSIST`), which a target without field TTLs refuses. Refused, each
//! would fail the write and the key would diverge; rewritten, the value arrives and only
//! what the target cannot hold (a field's TTL) is lost, and counted.
//!
//! Forms come from what servers propagate (seen in their AOF): `SET k v PXAT ms` (flags
//! such as NX and GET are dropped by the source), `HSETEX k [FNX|FXX] [PXAT ms|KEEPTTL]
//! FIELDS n f v …`, `HPEXPIREAT k ms FIELDS n f …`, `HPERSIST k FIELDS n f …`.

use bytes::Bytes;

use rsm_counters::Losses;

/// What the target lacks; both false on a current target, where nothing is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lacks {
    /// `SET … PXAT/EXAT` (before 6.2).
    pub set_at: bool,
    /// Hash field TTLs (before Redis 7.4 / Valkey 9).
    pub field_ttls: bool,
}

impl Lacks {
    pub fn anything(&self) -> bool {
        self.set_at || self.field_ttls
    }
}

/// The commands to send instead of `args` (none: nothing the target can hold), and what
/// that loses.
pub(super) fn for_target(args: Vec<Bytes>, lacks: Lacks, lost: &mut Losses) -> Vec<Vec<Bytes>> {
    let Some(name) = args.first() else {
        return vec![args];
    };
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if lacks.set_at && is("SET") {
        return set_then_expire(args);
    }
    if !lacks.field_ttls {
        return vec![args];
    }
    if is("HSETEX") {
        return hsetex_as_hset(args, lost);
    }
    if is("HPEXPIREAT") || is("HEXPIREAT") || is("HPEXPIRE") || is("HEXPIRE") {
        // The fields stay, without the TTL the target cannot hold.
        lost.field_ttls += fields_after(&args, 2, 1).map_or(1, |f| f.len() as u64);
        return Vec::new();
    }
    if is("HPERSIST") {
        // Fields on such a target never have a TTL: there is nothing to remove.
        return Vec::new();
    }
    vec![args]
}

/// `SET k v … PXAT ms` → `SET k v …` and `PEXPIREAT k ms` (one transaction where the
/// target has them, so no reader sees the key without its expiry).
fn set_then_expire(args: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut set = Vec::with_capacity(args.len());
    let mut at = None;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let unit = if i >= 3 && a.eq_ignore_ascii_case(b"PXAT") {
            Some(1)
        } else if i >= 3 && a.eq_ignore_ascii_case(b"EXAT") {
            Some(1000)
        } else {
            None
        };
        match (unit, args.get(i + 1)) {
            (Some(unit), Some(t)) => {
                at = parse_i64(t).and_then(|t| t.checked_mul(unit));
                if at.is_none() {
                    // Not a time we can rewrite: let the target judge the original.
                    return vec![args];
                }
                i += 2;
            }
            _ => {
                // GET is 6.2+ too, and its reply means nothing to a replica.
                if !(i >= 3 && a.eq_ignore_ascii_case(b"GET")) {
                    set.push(a.clone());
                }
                i += 1;
            }
        }
    }
    let Some(at) = at else {
        return vec![args];
    };
    let key = args.get(1).cloned().unwrap_or_default();
    vec![
        set,
        vec![
            Bytes::from_static(b"PEXPIREAT"),
            key,
            Bytes::from(at.to_string()),
        ],
    ]
}

/// `HSETEX k [FNX|FXX] [ttl] FIELDS n f v …` → `HSET k f v …` (the TTL counted lost).
fn hsetex_as_hset(args: Vec<Bytes>, lost: &mut Losses) -> Vec<Vec<Bytes>> {
    let Some(fields) = fields_after(&args, 2, 2) else {
        return vec![args];
    };
    let has_ttl = args
        .iter()
        .skip(2)
        .take_while(|a| !a.eq_ignore_ascii_case(b"FIELDS"))
        .any(|a| {
            ["EX", "PX", "EXAT", "PXAT"]
                .iter()
                .any(|w| a.eq_ignore_ascii_case(w.as_bytes()))
        });
    if has_ttl {
        lost.field_ttls += (fields.len() / 2) as u64;
    }
    let mut hset = Vec::with_capacity(fields.len() + 2);
    hset.push(Bytes::from_static(b"HSET"));
    hset.extend(args.get(1).cloned());
    hset.extend_from_slice(fields);
    vec![hset]
}

/// The arguments after `FIELDS n` (searched from `from`), when exactly `n × per_field`
/// of them follow (2 for HSETEX's field/value pairs).
fn fields_after(args: &[Bytes], from: usize, per_field: usize) -> Option<&[Bytes]> {
    let at = args
        .iter()
        .skip(from)
        .position(|a| a.eq_ignore_ascii_case(b"FIELDS"))?
        + from;
    let n = usize::try_from(parse_i64(args.get(at + 1)?)?).ok()?;
    let rest = args.get(at + 2..)?;
    (n > 0 && rest.len() == n.checked_mul(per_field)?).then_some(rest)
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|x| Bytes::from(x.to_string())).collect()
    }

    fn words(cmds: &[Vec<Bytes>]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    const OLD: Lacks = Lacks {
        set_at: true,
        field_ttls: true,
    };

    #[test]
    fn nothing_changes_on_a_current_target() {
        let none = Lacks {
            set_at: false,
            field_ttls: false,
        };
        assert!(!none.anything());
        let mut lost = Losses::default();
        for c in [
            "SET k v PXAT 5",
            "HSETEX h PXAT 5 FIELDS 1 f v",
            "HPEXPIREAT h 5 FIELDS 1 f",
        ] {
            assert_eq!(
                words(&for_target(w(c), none, &mut lost)),
                vec![c.to_string()]
            );
        }
        assert!(lost.is_empty());
    }

    #[test]
    fn set_with_an_absolute_expiry_becomes_set_then_pexpireat() {
        let mut lost = Losses::default();
        assert_eq!(
            words(&for_target(w("SET k v PXAT 1700000000000"), OLD, &mut lost)),
            ["SET k v", "PEXPIREAT k 1700000000000"]
        );
        assert_eq!(
            words(&for_target(
                w("set k v nx get exat 1700000000"),
                OLD,
                &mut lost
            )),
            ["set k v nx", "PEXPIREAT k 1700000000000"]
        );
        // A key or value that reads "PXAT" is not an option.
        assert_eq!(
            words(&for_target(w("SET PXAT PXAT"), OLD, &mut lost)),
            ["SET PXAT PXAT"]
        );
        assert_eq!(
            words(&for_target(w("SET k v PX 100"), OLD, &mut lost)),
            ["SET k v PX 100"]
        );
        assert!(lost.is_empty(), "nothing lost: the expiry travels");
    }

    #[test]
    fn field_ttls_are_dropped_and_counted() {
        let mut lost = Losses::default();
        assert_eq!(
            words(&for_target(
                w("HSETEX h FNX PXAT 5 FIELDS 2 a 1 b 2"),
                OLD,
                &mut lost
            )),
            ["HSET h a 1 b 2"]
        );
        assert_eq!(lost.field_ttls, 2);
        assert_eq!(
            words(&for_target(
                w("HSETEX h KEEPTTL FIELDS 1 a 1"),
                OLD,
                &mut lost
            )),
            ["HSET h a 1"]
        );
        assert_eq!(lost.field_ttls, 2, "KEEPTTL sets no TTL");
        assert!(for_target(w("HPEXPIREAT h 5 FIELDS 3 a b c"), OLD, &mut lost).is_empty());
        assert_eq!(lost.field_ttls, 5);
        assert!(for_target(w("HPERSIST h FIELDS 1 a"), OLD, &mut lost).is_empty());
        assert_eq!(lost.field_ttls, 5);
        // Malformed: left for the target to refuse (and the writer to count).
        assert_eq!(
            words(&for_target(w("HSETEX h FIELDS 2 a 1"), OLD, &mut lost)),
            ["HSETEX h FIELDS 2 a 1"]
        );
    }
}
