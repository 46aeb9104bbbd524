//! One line for a usage error, shared by both binaries.

/// Fold a multi-line usage message (as clap renders it: a first line, maybe
/// indented continuation lines, a blank line, then a hint) into one line.
pub fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.is_empty() {
            if parts.is_empty() {
                continue;
            }
            break;
        }
        parts.push(line);
    }
    let mut text = parts.join(" ");
    if text.is_empty() {
        text = "error: invalid arguments".into();
    }
    format!("{text} (see --help)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_continuation_lines() {
        let clap = "error: the following required arguments were not provided:\n  --from <SRC_HOST:SRC_PORT>\n\nUsage: x\n";
        assert_eq!(
            super::one_line(clap),
            "error: the following required arguments were not provided: --from <SRC_HOST:SRC_PORT> (see --help)"
        );
    }
}
