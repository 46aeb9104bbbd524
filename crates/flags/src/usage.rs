//! One line for a usage error, shared by both binaries.

/// clap's verdict on the command line as one line: [`one_line`] of its rendering, with
/// its suggestion for a misspelled flag, subcommand or value (`--form` → `--from`), which
/// the rendering puts in a paragraph of its own that [`one_line`] leaves out.
pub fn clap_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let line = one_line(&e.render().to_string());
    let suggestion = [
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedValue,
    ]
    .into_iter()
    .find_map(|kind| match e.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    });
    match (suggestion, line.strip_suffix(SEE_HELP)) {
        (Some(s), Some(text)) => format!("{text}; did you mean '{s}'?{SEE_HELP}"),
        _ => line,
    }
}

const SEE_HELP: &str = " (see --help)";

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
    format!("{text}{SEE_HELP}")
}

/// An error and its causes on one line (`a: b: c`), leaving out a cause whose text the
/// line already holds: many of our messages quote their cause (`{source}`) and name it as
/// the source too, which `{:#}` would print twice.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_quotes_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        enum E {
            #[error("cannot reach source h:1: {source}")]
            Quoting {
                #[source]
                source: std::io::Error,
            },
            #[error("cannot reach source h:1")]
            Silent(#[source] std::io::Error),
        }
        let io = || std::io::Error::other("Name or service not known");
        let quoting = E::Quoting { source: io() };
        assert_eq!(
            super::error_line(&quoting),
            "cannot reach source h:1: Name or service not known"
        );
        assert_eq!(
            super::error_line(&E::Silent(io())),
            "cannot reach source h:1: Name or service not known"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("sync failed: {0}")]
        struct Outer(#[from] E);
        assert_eq!(
            super::error_line(&Outer(quoting)),
            "sync failed: cannot reach source h:1: Name or service not known"
        );
    }

    #[test]
    fn folds_continuation_lines() {
        let clap = "error: the following required arguments were not provided:\n  --from <SRC_HOST:SRC_PORT>\n\nUsage: x\n";
        assert_eq!(
            super::one_line(clap),
            "error: the following required arguments were not provided: --from <SRC_HOST:SRC_PORT> (see --help)"
        );
    }
}
