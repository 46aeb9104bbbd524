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
/// Read from the target's version once, at start (see `Admitter::new`): a target that
/// changes version under a running sync is not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lacks {
    /// `SET … PXAT/EXAT` (before 6.2).
    pub set_at: bool,
    /// Hash field TTLs (before Redis 7.4 / Valkey 9).
    pub field_ttls: bool,
}

impl Lacks {
    /// Anything to rewrite at all: when not, the writer skips even the name check, which
    /// would otherwise run on every replicated command.
    pub fn anything(&self) -> bool {
        self.set_at || self.field_ttls
    }
}

/// The commands to send instead of `args` (none: nothing the target can hold), and what
/// that loses. `lost` gains whatever a rewrite drops: the writer counts it (in
/// `/status`) and names a few such keys in its log, so nothing is lost silently.
pub(super) fn for_target(args: Vec<Bytes>, lacks: Lacks, lost: &mut Losses) -> Vec<Vec<Bytes>> {
    let Some(name) = args.first() else {
        return vec![args];
    };
    // Replicated command names come in any case (a script's effects keep its spelling).
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    // SET + PEXPIREAT (2.6+): every target has both, and the expiry travels whole.
    if lacks.set_at && is("SET") {
        return set_then_expire(args);
    }
    // Every other rewrite is about field TTLs.
    if !lacks.field_ttls {
        return vec![args];
    }
    // The fields as HSET, which every target has: a reader sees the same values, only
    // without their TTLs.
    if is("HSETEX") {
        return hsetex_as_hset(args, lost);
    }
    // A source propagates the absolute `HPEXPIREAT`; the other forms are matched too, so
    // that none reaches a target that would refuse it and fail the write.
    if is("HPEXPIREAT") || is("HEXPIREAT") || is("HPEXPIRE") || is("HEXPIRE") {
        // The fields stay, without the TTL the target cannot hold. One per field named;
        // at least one when the FIELDS block cannot be read.
        lost.field_ttls += fields_after(&args, 2, 1).map_or(1, |f| f.len() as u64);
        return Vec::new();
    }
    if is("HPERSIST") {
        // Fields on such a target never have a TTL: there is nothing to remove, and
        // nothing is lost.
        return Vec::new();
    }
    // Any other command: the target knows it as it is.
    vec![args]
}

/// `SET k v … PXAT ms` → `SET k v …` and `PEXPIREAT k ms` (one transaction where the
/// target has them, so no reader sees the key without its expiry).
fn set_then_expire(args: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut set = Vec::with_capacity(args.len());
    let mut at = None;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        // Options start at 3: the key (1) and the value (2) may read "PXAT" themselves.
        // `unit` turns the option's time into milliseconds.
        let unit = if i >= 3 && a.eq_ignore_ascii_case(b"PXAT") {
            Some(1)
        } else if i >= 3 && a.eq_ignore_ascii_case(b"EXAT") {
            Some(1000)
        } else {
            None
        };
        // An option without its time falls through as an ordinary argument; with no time
        // read, the SET is then left as it was.
        match (unit, args.get(i + 1)) {
            (Some(unit), Some(t)) => {
                at = parse_i64(t).and_then(|t| t.checked_mul(unit));
                if at.is_none() {
                    // Not a time we can rewrite: let the target judge the original.
                    return vec![args];
                }
                // The option and its time leave the SET; PEXPIREAT carries them.
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
    // No absolute expiry in it: a SET the target knows as it is.
    let Some(at) = at else {
        return vec![args];
    };
    // The absolute form, as the source gave it: a write re-sent after a lost connection,
    // or applied late, still expires at the source's time.
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
/// Never split per field: one HSET keeps the write as atomic as the source's.
fn hsetex_as_hset(args: Vec<Bytes>, lost: &mut Losses) -> Vec<Vec<Bytes>> {
    // Malformed: left for the target to refuse (and the writer to count), not guessed at.
    let Some(fields) = fields_after(&args, 2, 2) else {
        return vec![args];
    };
    // Only a TTL option before FIELDS sets TTLs; KEEPTTL loses nothing, since no field
    // has a TTL to keep on such a target. FNX/FXX have no HSET form and are dropped: a
    // replicated HSETEX is one the source applied, so on a target in step with it the
    // condition held too.
    let has_ttl = args
        .iter()
        .skip(2)
        .take_while(|a| !a.eq_ignore_ascii_case(b"FIELDS"))
        .any(|a| {
            ["EX", "PX", "EXAT", "PXAT"]
                .iter()
                .any(|w| a.eq_ignore_ascii_case(w.as_bytes()))
        });
    // One TTL per field set (they come as field/value pairs).
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
/// `None` for anything else (no FIELDS, a bad count, arguments left over or missing):
/// the callers do not guess which fields are meant.
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

/// A decimal integer argument; `None` when it is not one.
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
