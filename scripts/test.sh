#!/usr/bin/env bash
# Build the plugin components, then run every test (unit, numerics, sandbox,
# CLI) against the real binary and the real components.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh
cargo test --workspace --locked
