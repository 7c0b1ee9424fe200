#!/usr/bin/env bash
# Build the plugin components, lint the workspace (clippy, warnings are
# errors), then run every test (unit tests beside the code, and the
# integration tests that drive the real binary, the real components and
# real SQLite files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Headless Chromium renders the HTML pages in tests/pages.rs; OpenMPI (and
# libclang, through which the mpi crate's bindgen reads mpi.h) builds the
# `mpi` feature, and tests/parallel.rs runs `mpirun -np 2`.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
have_mpi() { command -v mpirun >/dev/null && command -v mpicc >/dev/null && { ! command -v dpkg >/dev/null || dpkg -s libopenmpi-dev >/dev/null 2>&1; }; }
have_mpi || missing+=(libopenmpi-dev openmpi-bin)
have_clang() { ! command -v dpkg >/dev/null || dpkg -s libclang-dev >/dev/null 2>&1; }
have_clang || missing+=(libclang-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q && timeout 900 apt-get install -y -q "${missing[@]}"
  else
    echo "test.sh: missing ${missing[*]} (page tests need chromium, the MPI tests libopenmpi-dev openmpi-bin libclang-dev): apt-get install them" >&2
  fi
fi
features=()
if have_mpi && have_clang; then
  features=(--features geohost/mpi)
else
  echo "test.sh: no MPI here: building and testing without the mpi feature (tests/parallel.rs then checks the refusal only)" >&2
fi
plugins/build.sh
plugins/build-python.sh
plugins/build-js.sh
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
cargo test --workspace --locked "${features[@]}"
# The plugins' own unit tests (e.g. ch4-rt's exp against libm), natively:
# the components themselves are tested through the host above.
cargo test --workspace --locked --manifest-path plugins/Cargo.toml
