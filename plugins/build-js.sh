#!/usr/bin/env bash
# Build JavaScript plugins into WebAssembly components with componentize-js
# (from npm, installed into plugins/js/node_modules on first use):
#
#   plugins/build-js.sh              # every plugin under plugins/js/ → plugins/dist/NAME.wasm
#   plugins/build-js.sh DIR          # one plugin folder, anywhere → DIR/dist/NAME.wasm
#
# A plugin folder holds `app.js` (an ES module exporting the world's
# interface, e.g. `export const forward = { init, advance }`) and
# `plugin.toml` with its `name` and `world`. Every WASI feature is disabled
# (-d stdio random clocks http fetch-event): the component imports nothing
# outside its world. A component newer than its sources and the WIT is not
# rebuilt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$here/../wit"
version=0.23.0
prefix="$here/js"
cjs="$prefix/node_modules/.bin/componentize-js"

if ! command -v npm >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "build-js.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "build-js.sh: installing nodejs and npm" >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -q && timeout 900 apt-get install -y -q nodejs npm
fi
if ! [ -x "$cjs" ] || ! grep -q "\"version\": \"$version\"" "$prefix/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
  echo "build-js.sh: installing componentize-js $version into $prefix/node_modules" >&2
  timeout 900 npm install --silent --no-save --no-audit --no-fund --prefix "$prefix" "@bytecodealliance/componentize-js@$version"
fi

field() { sed -n "s/^$2 *= *\"\\(.*\\)\"/\\1/p" "$1" | head -1; }

build_one() {
  local dir="$1" outdir="$2" name world out
  [ -f "$dir/app.js" ] && [ -f "$dir/plugin.toml" ] || { echo "build-js.sh: $dir needs app.js and plugin.toml" >&2; return 1; }
  name="$(field "$dir/plugin.toml" name)"
  world="$(field "$dir/plugin.toml" world)"
  [ -n "$name" ] && [ -n "$world" ] || { echo "build-js.sh: $dir/plugin.toml needs name = \"...\" and world = \"...\"" >&2; return 1; }
  out="$outdir/$name.wasm"
  if [ -f "$out" ] && [ -z "$(find "$dir" "$wit" \( -name '*.js' -o -name '*.wit' -o -name plugin.toml \) -newer "$out" | head -1)" ]; then
    echo "build-js.sh: $out is up to date" >&2
    return 0
  fi
  mkdir -p "$outdir"
  "$cjs" "$dir/app.js" -w "$wit" -n "$world" -d stdio random clocks http fetch-event -o "$out.tmp" >/dev/null
  mv "$out.tmp" "$out"
  echo "build-js.sh: $out ($world)" >&2
}

if [ $# -gt 0 ]; then
  dir="$(cd "$1" && pwd)"
  build_one "$dir" "$dir/dist"
else
  for toml in "$here"/js/*/plugin.toml; do
    build_one "$(dirname "$toml")" "$here/dist"
  done
fi
