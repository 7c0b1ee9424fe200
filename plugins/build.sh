#!/usr/bin/env bash
# Build every plugin in this workspace into a WebAssembly component and copy
# them to plugins/dist/NAME.wasm; or, given a folder (a plugin crate made by
# `geohost new plugin`, anywhere), build that one into FOLDER/dist/NAME.wasm:
#
#   plugins/build.sh                 # this workspace
#   plugins/build.sh ~/my-plugin     # one plugin, outside the repository
#
# CARGO_TARGET_DIR, when set, is used as usual (sharing one keeps the
# from-source standard library built once).
#
# Route 1: a rustup toolchain with the wasm32-unknown-unknown target installed.
# Route 2 (these machines): Debian's rustc-web + rust-web-src with -Zbuild-std;
#          installed here with apt-get if missing (see shared TOOLCHAIN.md).
# It never runs `rustup target add` (that hangs without internet) and puts a
# time limit on every install step.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -gt 0 ]; then
  [ -f "$1/Cargo.toml" ] || { echo "build.sh: $1 has no Cargo.toml (make a plugin with: geohost new plugin NAME --world WORLD)" >&2; exit 1; }
  cd "$1"
else
  cd "$here"
fi
target=wasm32-unknown-unknown
# plugins/ch4-rt embeds mag1c's methane table, fetched (not vendored) here.
if [ $# -eq 0 ]; then
  bash "$here/../scripts/fetch-mag1c.sh"
fi

have_rustup_wasm() {
  command -v rustup >/dev/null 2>&1 &&
    timeout 20 rustup target list --installed 2>/dev/null | grep -qx "$target"
}

debian_ready() {
  [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] &&
    [ -x /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld ]
}

if have_rustup_wasm; then
  echo "build.sh: using rustup's $target target" >&2
  linker="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
  [ -x "$linker" ] || linker="$(command -v wasm-component-ld || true)"
  [ -n "$linker" ] || { echo "build.sh: no wasm-component-ld found (cargo install wasm-component-ld)" >&2; exit 1; }
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" cargo build --release --target "$target"
else
  if ! debian_ready; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "build.sh: no wasm toolchain. Install rustup's $target target, or on Debian run as root:" >&2
      echo "  apt-get install rustc-web cargo-web rust-web-src lld" >&2
      exit 1
    fi
    echo "build.sh: installing Debian's rustc-web toolchain (wasm std from source)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q
    timeout 900 apt-get install -y -q rustc-web cargo-web rust-web-src lld
    debian_ready || { echo "build.sh: the Debian toolchain did not install completely" >&2; exit 1; }
  fi
  echo "build.sh: using Debian's $(/usr/bin/rustc --version) with -Zbuild-std" >&2
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld \
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo build --release --target "$target" -Zbuild-std=std,panic_abort
fi

out="${CARGO_TARGET_DIR:-target}/$target/release"
mkdir -p dist
if [ $# -gt 0 ]; then
  crate="$(sed -n 's/^name *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
  built="$out/${crate//-/_}.wasm"
  [ -f "$built" ] || { echo "build.sh: $built was not produced (is it a cdylib? crate-type = [\"cdylib\"])" >&2; exit 1; }
  cp "$built" "dist/$crate.wasm.tmp" && mv "dist/$crate.wasm.tmp" "dist/$crate.wasm"
  echo "build.sh: $(pwd)/dist/$crate.wasm" >&2
  exit 0
fi
for manifest in */Cargo.toml; do
  crate="$(dirname "$manifest")"
  built="$out/${crate//-/_}.wasm"
  [ -f "$built" ] || { echo "build.sh: $built was not produced" >&2; exit 1; }
  cp "$built" "dist/$crate.wasm.tmp" && mv "dist/$crate.wasm.tmp" "dist/$crate.wasm"
done
ls -l dist >&2
