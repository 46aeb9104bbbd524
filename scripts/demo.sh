#!/usr/bin/env bash
# The quick-start demo: two throwaway local clusters, data in, a live migration
# with writes going on, verified key by key, everything stopped at the end.
# First installs redis-server and redis-cli when they are missing (Debian/Ubuntu;
# elsewhere it says what to install), so it works on a fresh machine with only Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
prereqs_require demo redis-server redis-cli
echo "demo: building redis-sync-manager (release)…"
cargo build --release -q -p redis-sync-manager
RSM_MANAGER_BIN="$PWD/target/release/redis-sync-manager" \
  cargo run --release -q -p redis-sync-manager --example demo
