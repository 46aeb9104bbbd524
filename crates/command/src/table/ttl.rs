//! Rewrites the stream reader applies before a command is queued, so that a
//! replay is faithful however late it runs.
//!
//! Sources ≤ 6.2 replicate expiries as given by the client, relative to "now"
//! (`SET k v EX 100`, `EXPIRE k 100`, `SETEX`, 6.2's `SET … PX`; see
//! redis-internals §D4). Replayed seconds or minutes later (a full sync in
//! between, a slow target), a relative TTL would make the key live longer on
//! the target than on the source. So each is turned into an absolute unix-ms
//! time computed from when the command was *received* (STYLE habit 8):
//! `SET … PXAT`, `PEXPIREAT`, `RESTORE … ABSTTL`. 7.0+ sources already send
//! absolute forms, which pass through untouched.
//!
//! Note: `SET … PXAT` and `GETEX … PXAT` need a 6.2+ target; `PEXPIREAT` and
//! `RESTORE … ABSTTL` work on every supported one.

use bytes::Bytes;

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// A strictly positive integer argument (a TTL the source accepted).
fn positive(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
}

/// `received + n * unit` in ms, or `None` on overflow (then the command is left as is).
fn absolute(received_at_ms: i64, n: i64, unit_ms: i64) -> Option<Bytes> {
    let at = n.checked_mul(unit_ms)?.checked_add(received_at_ms)?;
    Some(Bytes::from(at.to_string()))
}

/// Turn relative expiries into absolute ones (see the module doc). Anything
/// that is not a relative-TTL form is returned unchanged.
pub fn absolutize_ttl(args: &[Bytes], received_at_unix_ms: i64) -> Vec<Bytes> {
    let mut out = args.to_vec();
    let Some(name) = args.first() else {
        return out;
    };
    let now = received_at_unix_ms;
    if eq(name, "set") || eq(name, "getex") {
        // SET k v [opts], GETEX k [opts]: options start after the value / key.
        let mut i = if eq(name, "set") { 3 } else { 2 };
        while let (Some(opt), Some(value)) = (out.get(i), out.get(i + 1)) {
            let unit = if eq(opt, "ex") {
                Some(1000)
            } else if eq(opt, "px") {
                Some(1)
            } else {
                None
            };
            if let Some(unit) = unit {
                let at = positive(value).and_then(|n| absolute(now, n, unit));
                if let (Some(at), Some([opt, value])) = (at, out.get_mut(i..i + 2)) {
                    *opt = Bytes::from_static(b"PXAT");
                    *value = at;
                }
                i += 2;
            } else if ["exat", "pxat", "ifeq", "ifne", "ifdeq", "ifdne"]
                .iter()
                .any(|w| eq(opt, w))
            {
                // Options with a value: skip it, so a value spelled "EX" is not an option.
                i += 2;
            } else {
                i += 1;
            }
        }
        return out;
    }
    if eq(name, "setex") || eq(name, "psetex") {
        let unit = if eq(name, "setex") { 1000 } else { 1 };
        if let [_, key, ttl, value] = args {
            if let Some(at) = positive(ttl).and_then(|n| absolute(now, n, unit)) {
                return vec![
                    Bytes::from_static(b"SET"),
                    key.clone(),
                    value.clone(),
                    Bytes::from_static(b"PXAT"),
                    at,
                ];
            }
        }
        return out;
    }
    if eq(name, "expire") || eq(name, "pexpire") {
        let unit = if eq(name, "expire") { 1000 } else { 1 };
        let at = match args {
            [_, _, ttl, ..] => positive(ttl).and_then(|n| absolute(now, n, unit)),
            _ => None,
        };
        if let (Some(at), [name, _, ttl, ..]) = (at, out.as_mut_slice()) {
            *name = Bytes::from_static(b"PEXPIREAT");
            *ttl = at;
        }
        return out;
    }
    if eq(name, "restore") || eq(name, "restore-asking") {
        let at = match args {
            [_, _, ttl, _, options @ ..] if !options.iter().any(|a| eq(a, "absttl")) => {
                positive(ttl).and_then(|n| absolute(now, n, 1))
            }
            _ => None,
        };
        if let (Some(at), [_, _, ttl, ..]) = (at, out.as_mut_slice()) {
            *ttl = at;
            out.push(Bytes::from_static(b"ABSTTL"));
        }
        return out;
    }
    out
}

/// `RESTORE-ASKING` (what legacy `MIGRATE` sends; it appears in a source's
/// stream while a slot moves into it) is a plain `RESTORE` for the target,
/// which is not importing that slot.
pub fn restore_asking_to_restore(mut args: Vec<Bytes>) -> Vec<Bytes> {
    if let Some(name) = args.first_mut().filter(|n| eq(n, "restore-asking")) {
        *name = Bytes::from_static(b"RESTORE");
    }
    args
}

/// `FUNCTION LOAD` from the stream gets `REPLACE`: applied twice (a restart that continues
/// from before it, since a keyless command carries no slot marker) it would fail with
/// "Library already exists" and stop the shard. The source ran it, so the library as it
/// loads it is the source's now, whatever the target held under that name.
pub fn function_load_replaces(mut args: Vec<Bytes>) -> Vec<Bytes> {
    let load = matches!(args.as_slice(), [f, l, ..] if eq(f, "function") && eq(l, "load"));
    if load && !args.iter().skip(2).any(|a| eq(a, "replace")) {
        args.insert(2, Bytes::from_static(b"REPLACE"));
    }
    args
}

/// The rewrites, in the order the stream reader needs them.
pub fn rewrite_for_replay(args: Vec<Bytes>, received_at_unix_ms: i64) -> Vec<Bytes> {
    function_load_replaces(restore_asking_to_restore(absolutize_ttl(
        &args,
        received_at_unix_ms,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn set_ex_and_px_become_pxat() {
        assert_eq!(
            absolutize_ttl(&a(&["SET", "k", "v", "EX", "100"]), NOW),
            a(&["SET", "k", "v", "PXAT", "1700000100000"])
        );
        assert_eq!(
            absolutize_ttl(&a(&["set", "k", "v", "nx", "px", "1500", "GET"]), NOW),
            a(&["set", "k", "v", "nx", "PXAT", "1700000001500", "GET"])
        );
    }

    #[test]
    fn function_load_from_the_stream_replaces() {
        assert_eq!(
            function_load_replaces(a(&["FUNCTION", "LOAD", "#!lua name=x\n"])),
            a(&["FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n"])
        );
        let already = a(&["function", "load", "replace", "#!lua name=x\n"]);
        assert_eq!(function_load_replaces(already.clone()), already);
        let other = a(&["FUNCTION", "DELETE", "x"]);
        assert_eq!(function_load_replaces(other.clone()), other);
    }

    #[test]
    fn set_value_spelled_ex_is_not_an_option() {
        // The value is "EX", and no option follows.
        let cmd = a(&["SET", "k", "EX", "100"]);
        assert_eq!(absolutize_ttl(&cmd, NOW), cmd);
        // An IFEQ comparison value spelled "EX" is skipped too.
        let cmd = a(&["SET", "k", "v", "IFEQ", "EX", "5"]);
        assert_eq!(absolutize_ttl(&cmd, NOW), cmd);
    }

    #[test]
    fn absolute_and_keepttl_forms_pass_through() {
        for cmd in [
            a(&["SET", "k", "v", "PXAT", "1700000100000"]),
            a(&["SET", "k", "v", "EXAT", "1700000100"]),
            a(&["SET", "k", "v", "KEEPTTL"]),
            a(&["PEXPIREAT", "k", "1700000100000"]),
            a(&["RESTORE", "k", "1700000100000", "payload", "ABSTTL"]),
            a(&["RESTORE", "k", "0", "payload", "REPLACE"]),
            a(&["GETEX", "k", "PERSIST"]),
            a(&["HSET", "h", "EX", "100"]),
        ] {
            assert_eq!(absolutize_ttl(&cmd, NOW), cmd);
        }
    }

    #[test]
    fn setex_and_psetex_become_set_pxat() {
        assert_eq!(
            absolutize_ttl(&a(&["SETEX", "k", "100", "v"]), NOW),
            a(&["SET", "k", "v", "PXAT", "1700000100000"])
        );
        assert_eq!(
            absolutize_ttl(&a(&["psetex", "k", "250", "v"]), NOW),
            a(&["SET", "k", "v", "PXAT", "1700000000250"])
        );
    }

    #[test]
    fn expire_and_pexpire_become_pexpireat_keeping_options() {
        assert_eq!(
            absolutize_ttl(&a(&["EXPIRE", "k", "100"]), NOW),
            a(&["PEXPIREAT", "k", "1700000100000"])
        );
        assert_eq!(
            absolutize_ttl(&a(&["pexpire", "k", "7", "GT"]), NOW),
            a(&["PEXPIREAT", "k", "1700000000007", "GT"])
        );
    }

    #[test]
    fn getex_relative_becomes_pxat() {
        assert_eq!(
            absolutize_ttl(&a(&["GETEX", "k", "EX", "2"]), NOW),
            a(&["GETEX", "k", "PXAT", "1700000002000"])
        );
    }

    #[test]
    fn restore_gets_absttl() {
        assert_eq!(
            absolutize_ttl(&a(&["RESTORE", "k", "5000", "p", "REPLACE"]), NOW),
            a(&["RESTORE", "k", "1700000005000", "p", "REPLACE", "ABSTTL"])
        );
        assert_eq!(
            rewrite_for_replay(a(&["RESTORE-ASKING", "k", "5000", "p"]), NOW),
            a(&["RESTORE", "k", "1700000005000", "p", "ABSTTL"])
        );
        assert_eq!(
            restore_asking_to_restore(a(&["restore-asking", "k", "0", "p"])),
            a(&["RESTORE", "k", "0", "p"])
        );
    }

    #[test]
    fn garbage_and_overflow_are_left_alone() {
        for cmd in [
            a(&["EXPIRE", "k", "abc"]),
            a(&["EXPIRE", "k", "-5"]),
            a(&["SET", "k", "v", "EX"]),
            a(&["SETEX", "k", "0", "v"]),
            a(&["EXPIRE", "k", "9223372036854775807"]),
            a(&[]),
        ] {
            assert_eq!(absolutize_ttl(&cmd, NOW), cmd);
        }
    }
}
