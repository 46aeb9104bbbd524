//! Reading a command table: from a server's `COMMAND` reply (RESP2 flat
//! arrays or RESP3 maps, with or without 7.0+ key specs and subcommands) and
//! from the generated `builtin.txt` (format documented in the generator).

use bytes::Bytes;
use rsm_resp::Frame;

use super::{BeginSearch, CommandFlags, CommandSpec, CommandTable, FindKeys, KeySpec, LegacyKeys};

/// A `COMMAND` reply or a table line we cannot read. Names the command and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTableError {
    #[error("COMMAND reply: {0}")]
    Reply(String),
    #[error("built-in command table line {line}: {what}")]
    Builtin { line: usize, what: String },
}

fn bad(what: impl Into<String>) -> CommandTableError {
    CommandTableError::Reply(what.into())
}

pub(super) fn parse_command_reply(reply: &Frame) -> Result<CommandTable, CommandTableError> {
    if let Some(e) = reply.as_error() {
        return Err(bad(format!(
            "the server answered an error: {}",
            String::from_utf8_lossy(e)
        )));
    }
    let entries = reply
        .as_array()
        .ok_or_else(|| bad(format!("expected an array, got {}", reply.describe())))?;
    let mut table = CommandTable::default();
    for entry in entries {
        // Unknown commands in a `COMMAND INFO` reply come back as nulls.
        if *entry == Frame::Null {
            continue;
        }
        parse_entry(entry, &mut table)?;
    }
    Ok(table)
}

fn text(f: &Frame) -> Option<String> {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int(f: &Frame, name: &str, field: &str) -> Result<i32, CommandTableError> {
    f.as_int()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            bad(format!(
                "{name}: {field} is {}, not an integer",
                f.describe()
            ))
        })
}

fn parse_entry(entry: &Frame, table: &mut CommandTable) -> Result<(), CommandTableError> {
    let items = entry.as_array().ok_or_else(|| {
        bad(format!(
            "command entry is {}, not an array",
            entry.describe()
        ))
    })?;
    let [name, arity, flag_list, first, last, step, rest @ ..] = items else {
        return Err(bad(format!(
            "command entry has {} fields, expected at least 6",
            items.len()
        )));
    };
    let name = text(name)
        .ok_or_else(|| bad(format!("command name is {}", name.describe())))?
        .to_ascii_lowercase();
    let arity = int(arity, &name, "arity")?;
    let mut flags = CommandFlags::default();
    for f in flag_list.as_array().unwrap_or(&[]) {
        if let Some(flag) = f.as_bytes().and_then(|b| CommandFlags::from_name(b)) {
            flags.insert(flag);
        }
    }
    let legacy = LegacyKeys {
        first: int(first, &name, "first key")?,
        last: int(last, &name, "last key")?,
        step: int(step, &name, "step")?,
    };
    // Then ACL categories (6.0+), tips, key specs and subcommands (7.0+).
    let mut key_specs = Vec::new();
    if let Some(specs) = rest.get(2).and_then(Frame::as_array) {
        for s in specs {
            key_specs.push(parse_key_spec(s, &name)?);
        }
    }
    if let Some(subs) = rest.get(3).and_then(Frame::as_array) {
        for sub in subs {
            parse_entry(sub, table)?;
        }
    }
    table.insert(CommandSpec {
        name,
        arity,
        flags,
        legacy,
        key_specs,
    });
    Ok(())
}

/// Key/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(f: &Frame) -> Vec<(String, &Frame)> {
    match f {
        Frame::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((text(k)?.to_ascii_lowercase(), v)))
            .collect(),
        _ => f
            .as_array()
            .unwrap_or(&[])
            .chunks_exact(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((text(k)?.to_ascii_lowercase(), v)),
                _ => None,
            })
            .collect(),
    }
}

fn field<'a>(p: &[(String, &'a Frame)], key: &str) -> Option<&'a Frame> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn parse_key_spec(spec: &Frame, name: &str) -> Result<KeySpec, CommandTableError> {
    let p = pairs(spec);
    let flags = field(&p, "flags")
        .and_then(Frame::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(text)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let missing = |what: &str| bad(format!("{name}: key spec without {what}"));
    let bs = pairs(field(&p, "begin_search").ok_or_else(|| missing("begin_search"))?);
    let bs_type = field(&bs, "type").and_then(text).unwrap_or_default();
    let bs_spec = field(&bs, "spec").map(pairs).unwrap_or_default();
    let num = |p: &[(String, &Frame)], k: &str| -> Result<i32, CommandTableError> {
        let f = field(p, k).ok_or_else(|| missing(k))?;
        int(f, name, k)
    };
    let begin = match bs_type.as_str() {
        "index" => BeginSearch::Index(num(&bs_spec, "index")?),
        "keyword" => BeginSearch::Keyword {
            keyword: field(&bs_spec, "keyword")
                .and_then(Frame::as_bytes)
                .cloned()
                .ok_or_else(|| missing("keyword"))?,
            startfrom: num(&bs_spec, "startfrom")?,
        },
        _ => BeginSearch::Unknown,
    };
    let fk = pairs(field(&p, "find_keys").ok_or_else(|| missing("find_keys"))?);
    let fk_type = field(&fk, "type").and_then(text).unwrap_or_default();
    let fk_spec = field(&fk, "spec").map(pairs).unwrap_or_default();
    let find = match fk_type.as_str() {
        "range" => FindKeys::Range {
            lastkey: num(&fk_spec, "lastkey")?,
            keystep: num(&fk_spec, "keystep")?,
            limit: num(&fk_spec, "limit")?,
        },
        "keynum" => FindKeys::Keynum {
            keynumidx: num(&fk_spec, "keynumidx")?,
            firstkey: num(&fk_spec, "firstkey")?,
            keystep: num(&fk_spec, "keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Ok(KeySpec { begin, find, flags })
}

/// Parse `builtin.txt`: `name arity flags first last step spec…`, tab-separated.
pub(super) fn parse_builtin(text: &str) -> Result<CommandTable, CommandTableError> {
    let mut table = CommandTable::default();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: &str| CommandTableError::Builtin {
            line: n + 1,
            what: what.to_string(),
        };
        let cols: Vec<&str> = line.split('\t').collect();
        let [name, arity, flag_list, first, last, step, specs @ ..] = cols.as_slice() else {
            return Err(err("fewer than 6 columns"));
        };
        let num = |s: &str| {
            s.parse::<i32>()
                .map_err(|_| err(&format!("{s:?} is not a number")))
        };
        let mut flags = CommandFlags::default();
        for f in flag_list.split(',') {
            if let Some(flag) = CommandFlags::from_name(f.as_bytes()) {
                flags.insert(flag);
            }
        }
        let mut key_specs = Vec::new();
        for s in specs {
            key_specs
                .push(parse_builtin_spec(s).ok_or_else(|| err(&format!("bad key spec {s:?}")))?);
        }
        table.insert(CommandSpec {
            name: name.to_string(),
            arity: num(arity)?,
            flags,
            legacy: LegacyKeys {
                first: num(first)?,
                last: num(last)?,
                step: num(step)?,
            },
            key_specs,
        });
    }
    Ok(table)
}

/// `BEGIN/FIND/FLAGS`, e.g. `k1:STREAMS/r-1:1:2/RO,access`.
fn parse_builtin_spec(s: &str) -> Option<KeySpec> {
    let mut parts = s.splitn(3, '/');
    let (b, f, fl) = (parts.next()?, parts.next()?, parts.next()?);
    let nums = |s: &str| -> Option<Vec<i32>> { s.split(':').map(|x| x.parse().ok()).collect() };
    let begin = match b.split_at_checked(1)? {
        ("i", rest) => BeginSearch::Index(rest.parse().ok()?),
        ("k", rest) => {
            let (from, kw) = rest.split_once(':')?;
            BeginSearch::Keyword {
                keyword: Bytes::copy_from_slice(kw.as_bytes()),
                startfrom: from.parse().ok()?,
            }
        }
        ("u", "") => BeginSearch::Unknown,
        _ => return None,
    };
    let find = match f.split_at_checked(1)? {
        ("r", rest) => match nums(rest)?.as_slice() {
            [l, s, m] => FindKeys::Range {
                lastkey: *l,
                keystep: *s,
                limit: *m,
            },
            _ => return None,
        },
        ("n", rest) => match nums(rest)?.as_slice() {
            [i, fk, s] => FindKeys::Keynum {
                keynumidx: *i,
                firstkey: *fk,
                keystep: *s,
            },
            _ => return None,
        },
        ("u", "") => FindKeys::Unknown,
        _ => return None,
    };
    let flags = if fl == "-" {
        Vec::new()
    } else {
        fl.split(',').map(|x| x.to_ascii_lowercase()).collect()
    };
    Some(KeySpec { begin, find, flags })
}
