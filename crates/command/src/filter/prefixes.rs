//! `--filterkey="p1|p2"`: keep only keys that start with one of the prefixes.

/// An empty set of prefixes keeps every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPrefixes(Vec<Vec<u8>>);

impl KeyPrefixes {
    /// Parse the flag's value; an empty prefix is refused because it would
    /// silently keep everything, which is never what `|a||b` meant.
    pub fn parse(s: &str) -> Result<KeyPrefixes, String> {
        let mut prefixes = Vec::new();
        for (i, part) in s.split('|').enumerate() {
            if part.is_empty() {
                return Err(format!(
                    "prefix {} is empty; expected prefixes separated by '|', as in \"user:|order:\"",
                    i + 1
                ));
            }
            prefixes.push(part.as_bytes().to_vec());
        }
        Ok(KeyPrefixes(prefixes))
    }

    pub fn new(prefixes: Vec<Vec<u8>>) -> KeyPrefixes {
        KeyPrefixes(prefixes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn prefixes(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// Does this key pass the filter?
    pub fn keeps(&self, key: &[u8]) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| key.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_matching_prefixes() {
        let f = KeyPrefixes::parse("user:|order:").unwrap();
        assert!(f.keeps(b"user:1"));
        assert!(f.keeps(b"order:"));
        assert!(!f.keeps(b"use"));
        assert!(!f.keeps(b"session:1"));
        assert!(KeyPrefixes::default().keeps(b"anything"));
    }

    #[test]
    fn refuses_empty_prefixes() {
        for bad in ["", "a||b", "a|", "|a"] {
            assert!(KeyPrefixes::parse(bad).is_err(), "{bad}");
        }
    }
}
