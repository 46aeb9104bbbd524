//! Parsers and secret lookups shared by the flags of both binaries: each returns the
//! one-line message clap shows after the flag's name, so a mistake is named where it was
//! made, before anything connects.

/// Where a secret may come from: `--password=PW`, `--password-file=FILE` (see
/// [`rsm_client::read_secret_file`]) or an environment variable.
#[derive(Debug, Clone, Copy)]
pub struct SecretFlags<'a> {
    /// The inline flag, e.g. `--password`.
    pub flag: &'a str,
    /// The file flag, e.g. `--password-file`.
    pub file_flag: &'a str,
    /// The environment variable, e.g. `RSM_SOURCE_PASSWORD`.
    pub env: &'a str,
}

/// The secret, from the file, else the inline value, else the environment.
///
/// The environment is read here, not by clap: clap counts a value from `env` as
/// given, so `--password-file` with `RSM_SOURCE_PASSWORD` set would be refused as a
/// conflict. The binaries make only the two flags conflict; a file on the command
/// line wins over the environment. An empty inline value is a mistake, not "none";
/// an empty environment variable counts as unset.
pub fn secret(
    names: SecretFlags<'_>,
    value: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    if let Some(path) = file {
        return rsm_client::read_secret_file(path)
            .map(Some)
            .map_err(|e| format!("{}: {e}", names.file_flag));
    }
    match value {
        Some("") => Err(format!(
            "{} is empty: leave it out when the server has no password",
            names.flag
        )),
        Some(v) => Ok(Some(v.to_string())),
        None => Ok(std::env::var(names.env).ok().filter(|v| !v.is_empty())),
    }
}

/// `--password`, `--password-file`, `RSM_SOURCE_PASSWORD`.
pub const SOURCE_PASSWORD: SecretFlags<'static> = SecretFlags {
    flag: "--password",
    file_flag: "--password-file",
    env: "RSM_SOURCE_PASSWORD",
};

/// `--auth`, `--auth-file`, `RSM_TARGET_PASSWORD`.
pub const TARGET_PASSWORD: SecretFlags<'static> = SecretFlags {
    flag: "--auth",
    file_flag: "--auth-file",
    env: "RSM_TARGET_PASSWORD",
};

/// `--http-token`, `--http-token-file`, `RSM_HTTP_TOKEN`.
pub const HTTP_TOKEN: SecretFlags<'static> = SecretFlags {
    flag: "--http-token",
    file_flag: "--http-token-file",
    env: "RSM_HTTP_TOKEN",
};

/// `--targetdb`: a database number, 0 or more.
pub fn parse_db(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| "expected a database number, 0 or more".to_string())
}

/// `--max-bandwidth=MB/s`: megabytes (10^6 bytes, as network rates are counted) per
/// second, decimals allowed; returns bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let expected = || {
        "expected megabytes per second (10^6 bytes), e.g. 50 or 12.5 (a number above 0)".to_string()
    };
    let mb: f64 = s
        .trim()
        .trim_end_matches("MB/s")
        .trim_end_matches("mb/s")
        .parse()
        .map_err(|_| expected())?;
    if !mb.is_finite() || mb <= 0.0 {
        return Err(expected());
    }
    let bytes = (mb * 1e6).round();
    if bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(expected());
    }
    Ok(bytes as u64)
}

/// `--max-ops=N`: commands per second, at least 1.
pub fn parse_ops(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "expected commands per second, a whole number above 0".to_string())
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
    fn rates_are_parsed_in_their_units() {
        assert_eq!(parse_bandwidth("50"), Ok(50_000_000));
        assert_eq!(parse_bandwidth("12.5"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("0.5MB/s"), Ok(500_000));
        for bad in ["0", "-1", "fast", "", "inf", "NaN"] {
            assert!(parse_bandwidth(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ops("20000"), Ok(20_000));
        for bad in ["0", "-5", "1.5", "lots"] {
            assert!(parse_ops(bad).is_err(), "{bad}");
        }
    }

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
