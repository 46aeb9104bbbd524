#!/usr/bin/env bash
# The quick-start demo: two throwaway local clusters, data in, a live migration
# with writes going on, verified key by key, everything stopped at the end.
# Installs nothing: it checks that redis-server and redis-cli are there.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in redis-server redis-cli; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "demo: $bin is missing; install it first: apt-get install -y redis-server redis-tools" >&2
    exit 1
  fi
done
echo "demo: building redis-sync-manager (release)…"
cargo build --release -q -p redis-sync-manager
RSM_MANAGER_BIN="$PWD/target/release/redis-sync-manager" \
  cargo run --release -q -p redis-sync-manager --example demo
