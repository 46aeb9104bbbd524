//! The command line: every bad input is refused before any connection, with
//! exit code 2 and one line naming the flag.

use std::process::{Command, Output};

fn manager(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redis-sync-manager"))
        .args(args)
        .env_remove("RSM_SOURCE_PASSWORD")
        .env_remove("RSM_TARGET_PASSWORD")
        .output()
        .unwrap()
}

/// The address nothing listens on would be tried if validation ran late; a
/// usage error must come first, so these never touch the network.
const OK_FROM: &str = "--from=127.0.0.1:1";
const OK_TARGET: &str = "--target=127.0.0.1:2";

fn assert_usage_error(args: &[&str], must_mention: &[&str]) {
    let out = manager(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} → {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected for {args:?}: {stderr}"
    );
    for word in must_mention {
        assert!(
            stderr.contains(word),
            "{args:?}: {stderr:?} should mention {word:?}"
        );
    }
}

#[test]
fn bad_host_port() {
    assert_usage_error(&["--from=localhost", OK_TARGET], &["--from", "HOST:PORT"]);
    assert_usage_error(&[OK_FROM, "--target=host:99999"], &["--target", "port"]);
    assert_usage_error(&[OK_FROM, "--target", ":7000"], &["--target", "empty host"]);
}

#[test]
fn ipv6_needs_brackets() {
    assert_usage_error(&["--from=::1:7000", OK_TARGET], &["--from", "brackets"]);
}

#[test]
fn bad_sync_role() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--sync-role=foo"],
        &["--sync-role", "master or slave"],
    );
}

#[test]
fn zero_parallelism() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--sync-parallel=0"],
        &["--sync-parallel", "1 or more"],
    );
}

#[test]
fn empty_filter_prefix() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--filterkey=a||b"],
        &["--filterkey", "empty"],
    );
}

#[test]
fn negative_targetdb() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--targetdb=-1"],
        &["--targetdb", "0 or more"],
    );
    assert_usage_error(&[OK_FROM, OK_TARGET, "--targetdb", "-3"], &["--targetdb"]);
}

#[test]
fn bad_bigkeysize() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--bigkeysize=lots"],
        &["--bigkeysize", "64mb"],
    );
}

#[test]
fn bad_rate_limits() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--max-bandwidth=0"],
        &["--max-bandwidth", "megabytes per second"],
    );
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--max-ops=1.5"],
        &["--max-ops", "commands per second"],
    );
}

#[test]
fn unknown_flag() {
    assert_usage_error(&[OK_FROM, OK_TARGET, "--no-such-flag"], &["--no-such-flag"]);
}

/// Issue 27 item 10: a misspelled flag gets clap's suggestion, still on one line.
#[test]
fn misspelled_flag_suggests_the_right_one() {
    assert_usage_error(
        &["--form=127.0.0.1:1", OK_TARGET],
        &["--form", "did you mean", "--from"],
    );
    assert_usage_error(&[OK_FROM, "--taget=127.0.0.1:2"], &["--taget", "--target"]);
}

#[test]
fn missing_required_flags() {
    assert_usage_error(&[OK_TARGET], &["--from"]);
    assert_usage_error(&[OK_FROM], &["--target"]);
}

#[test]
fn rewrite_and_skip_are_exclusive() {
    assert_usage_error(
        &[OK_FROM, OK_TARGET, "--rewrite", "--skip-existing"],
        &["--rewrite", "--skip-existing"],
    );
}

#[test]
fn help_explains_every_seed_flag() {
    let out = manager(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--from",
        "--target",
        "--password",
        "--auth",
        "--filterkey",
        "--targetdb",
        "--rewrite",
        "--bigkeysize",
        "--logfile",
        "--httpport",
        "--sync-parallel",
        "--sync-role",
        "--dry-run",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
    assert!(
        help.contains("logs/redis-sync-manager.log"),
        "default log file not shown"
    );
    let out = manager(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn both_flag_forms_are_accepted() {
    // Valid flags with an unreachable source: it gets past validation (exit 1, not 2).
    let out = manager(&[
        "--from",
        "127.0.0.1:1",
        "--target",
        "127.0.0.1:2",
        "--sync-parallel",
        "2",
        "--dry-run",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("source 127.0.0.1:1"), "{stderr}");
}

/// Issue 27 item 10: an unresolvable `--from` host printed the resolver's error twice in
/// one line (once in the message, once as its cause).
#[test]
fn unresolvable_source_host_says_the_resolver_error_once() {
    use std::net::ToSocketAddrs;
    let host = "no-such-host.invalid:6379";
    // What the resolver says here, found the same way the tool looks the name up.
    let resolver = match host.to_socket_addrs() {
        Err(e) => e.to_string(),
        Ok(_) => return eprintln!("{host} resolves on this machine: nothing to test"),
    };
    let out = manager(&[&format!("--from={host}"), OK_TARGET, "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-host.invalid"), "{stderr}");
    assert_eq!(
        stderr.matches(resolver.as_str()).count(),
        1,
        "the resolver's {resolver:?} once: {stderr}"
    );
}
