#!/usr/bin/env bash
# Build Python plugins into WebAssembly components with componentize-py
# (from PyPI, installed into a project-local venv on first use):
#
#   plugins/build-python.sh              # every plugin under plugins/python/ → plugins/dist/NAME.wasm
#   plugins/build-python.sh DIR          # one plugin folder, anywhere → DIR/dist/NAME.wasm
#
# A plugin folder holds `app.py` (the plugin; sdk/python's geohost_plugin
# turns its class into the world's export) and `plugin.toml` with its
# `name` and `world`. Components are built with --stub-wasi: they import
# nothing outside their world, and a WASI call (print, time, random, files)
# traps. A component newer than its sources, the SDK and the WIT is not
# rebuilt. GEOHOST_PYTHON_VENV overrides where the venv lives.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$here/../wit"
sdk="$here/../sdk/python"
version=0.25.1
venv="${GEOHOST_PYTHON_VENV:-$here/python/.venv}"
cpy="$venv/bin/componentize-py"

if ! "$cpy" --version 2>/dev/null | grep -qx "componentize-py $version"; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "build-python.sh: python3 with venv is needed (Debian: apt-get install python3-venv)" >&2
      exit 1
    fi
    echo "build-python.sh: installing python3-venv" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q && timeout 600 apt-get install -y -q python3-venv
  fi
  echo "build-python.sh: installing componentize-py $version into $venv" >&2
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$version"
fi

# field FILE KEY: a `key = "value"` line of a plugin.toml.
field() { sed -n "s/^$2 *= *\"\\(.*\\)\"/\\1/p" "$1" | head -1; }

# build_one DIR OUTDIR
build_one() {
  local dir="$1" outdir="$2" name world out
  [ -f "$dir/app.py" ] && [ -f "$dir/plugin.toml" ] || {
    echo "build-python.sh: $dir needs app.py and plugin.toml (make one with: geohost new plugin NAME --world WORLD --lang python)" >&2
    return 1
  }
  name="$(field "$dir/plugin.toml" name)"
  world="$(field "$dir/plugin.toml" world)"
  [ -n "$name" ] && [ -n "$world" ] || { echo "build-python.sh: $dir/plugin.toml needs name = \"...\" and world = \"...\"" >&2; return 1; }
  out="$outdir/$name.wasm"
  if [ -f "$out" ] && [ -z "$(find "$dir" "$sdk" "$wit" -name '*.py' -newer "$out" -o -name '*.wit' -newer "$out" -o -name plugin.toml -newer "$out" | head -1)" ]; then
    echo "build-python.sh: $out is up to date" >&2
    return 0
  fi
  mkdir -p "$outdir"
  (cd "$dir" && PYTHONDONTWRITEBYTECODE=1 "$cpy" -d "$wit" -w "$world" componentize app -p "$dir" -p "$sdk" --stub-wasi -o "$out.tmp" >/dev/null)
  mv "$out.tmp" "$out"
  echo "build-python.sh: $out ($world)" >&2
}

if [ $# -gt 0 ]; then
  dir="$(cd "$1" && pwd)"
  build_one "$dir" "$dir/dist"
else
  for toml in "$here"/python/*/plugin.toml; do
    build_one "$(dirname "$toml")" "$here/dist"
  done
fi
