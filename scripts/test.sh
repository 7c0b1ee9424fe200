#!/usr/bin/env bash
# Build the plugin components, lint the workspace (clippy, warnings are
# errors), then run every test (unit tests beside the code, and the
# integration tests that drive the real binary, the real components and
# real SQLite files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh
plugins/build-python.sh
plugins/build-js.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
