//! Passwords as given on the command line: `password` or `user:password`.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
