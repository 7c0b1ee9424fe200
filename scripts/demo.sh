#!/usr/bin/env bash
# The demo cycle: build the plugins and the host, then run the Lorenz-96
# sakov2008 twin experiment with every method (results in out/lorenz96/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh
cargo run --release --locked -p geohost -- run cycles/lorenz96.toml "$@"
