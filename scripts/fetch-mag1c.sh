#!/usr/bin/env bash
# Fetch the methane radiance look-up table that PyPI's mag1c 1.2.0 ships
# (Foote et al. 2020, BSD-3-Clause) into DIR (default target/mag1c):
#
#   DIR/ch4.lut    ENVI float64, band-sequential: 31,800 wavelengths (1399.59–
#                  2522.04 nm) × 7 radiance spectra at 0, 500, 1000, 2000,
#                  4000, 8000 and 16,000 ppm·m of methane enhancement
#   DIR/ch4.hdr    its ENVI header (the wavelengths)
#   DIR/LICENSE    mag1c's licence, kept with its data
#
# Nothing of it is vendored in this repository; the wheel's sha256 is
# checked. plugins/ch4-rt embeds the part it needs when it is built
# (plugins/build.sh runs this script first).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/target/mag1c}"
version=1.2.0
sha=52efb85d9f7391a451337a38ce7834fa5d3685c632eeaf85ce85797628f21bdf
wheel="mag1c-$version-py3-none-any.whl"
mkdir -p "$out"
if [ -f "$out/.fetched-$version" ]; then
  echo "fetch-mag1c.sh: $out is up to date" >&2
  exit 0
fi
dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
"$here/scripts/pip-download.sh" "mag1c==$version" "$wheel" "$sha" "$dl"
python3 - "$dl/$wheel" "$out" "$version" <<'PY'
import os, sys, zipfile
wheel, out, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for src, dst in [("mag1c/ch4.lut", "ch4.lut"), ("mag1c/ch4.hdr", "ch4.hdr"),
                     (f"mag1c-{version}.dist-info/LICENSE", "LICENSE")]:
        with open(os.path.join(out, dst), "wb") as f:
            f.write(z.read(src))
if os.path.getsize(os.path.join(out, "ch4.lut")) != 31800 * 7 * 8:
    sys.exit("fetch-mag1c.sh: ch4.lut is not 31,800 × 7 float64 values")
PY
touch "$out/.fetched-$version"
echo "fetch-mag1c.sh: mag1c $version's methane look-up table in $out" >&2
