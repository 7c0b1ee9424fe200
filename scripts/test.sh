#!/usr/bin/env bash
# Build the plugin components, lint the workspace (clippy, warnings are
# errors), then run every test (unit tests beside the code, and the
# integration tests that drive the real binary, the real components and
# real SQLite files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Headless Chromium renders the HTML pages in tests/pages.rs.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q && timeout 900 apt-get install -y -q chromium
  else
    echo "test.sh: the page tests need headless Chromium: apt-get install chromium" >&2
  fi
fi
plugins/build.sh
plugins/build-python.sh
plugins/build-js.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
