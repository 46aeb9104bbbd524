//! Passwords as given on the command line (`password` or `user:password`), or read
//! from a file (`--password-file`, `--auth-file`, `--http-token-file`).
//!
//! A secret in argv is visible to every local user through `ps`; a file with mode
//! 0600 is not. [`read_secret_file`] is the one place such files are read, so every
//! flag refuses the same things with the same words.

use std::fmt;
use std::path::{Path, PathBuf};

/// What to send with `AUTH`. The `Debug` form never shows the password, so a
/// config dumped into a log cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: String,
}

impl Credentials {
    /// `user:password` selects an ACL user (Redis 6+); anything without a colon
    /// is a plain `requirepass` password. A password that itself contains a
    /// colon is written as `default:the:password`.
    pub fn parse(text: &str) -> Credentials {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Credentials {
                user: Some(user.to_string()),
                password: password.to_string(),
            },
            _ => Credentials {
                user: None,
                password: text.to_string(),
            },
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a secret file cannot be used. The messages name the file and what to do,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is readable by other users (mode {mode:03o}): run `chmod 600 {}` and start again",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{} holds an empty secret on its first line", path.display())]
    Empty { path: PathBuf },
    #[error("the first line of {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

/// The secret in `path`: its first line, without the line end (`\n` or `\r\n`).
///
/// Refused: a file that group or others may read or write (mode & 0o077 != 0, on
/// Unix), an empty first line, and a first line that is not UTF-8.
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    let read_err = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(read_err)?;
    first_line(&bytes)
        .map_err(|()| SecretFileError::NotText {
            path: path.to_path_buf(),
        })
        .and_then(|line| {
            if line.is_empty() {
                Err(SecretFileError::Empty {
                    path: path.to_path_buf(),
                })
            } else {
                Ok(line.to_string())
            }
        })
}

/// The text before the first `\n`, without a `\r` just before it.
fn first_line(bytes: &[u8]) -> Result<&str, ()> {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines() {
        assert_eq!(first_line(b"pw\n"), Ok("pw"));
        assert_eq!(first_line(b"pw\r\nsecond\n"), Ok("pw"));
        assert_eq!(first_line(b"pw"), Ok("pw"));
        assert_eq!(first_line(b"\nsecond"), Ok(""));
        assert_eq!(first_line(b" p w \n"), Ok(" p w "));
        assert!(first_line(b"\xff\n").is_err());
    }

    #[test]
    fn user_and_password() {
        let c = Credentials::parse("alice:s3cret:x");
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.password, "s3cret:x");
        let c = Credentials::parse("plain");
        assert_eq!((c.user, c.password.as_str()), (None, "plain"));
        assert!(!format!("{:?}", Credentials::parse("u:topsecret")).contains("topsecret"));
    }
}
