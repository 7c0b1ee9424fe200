#!/usr/bin/env bash
# Regenerate registry.db.example: run the Lorenz-96 demo (shortened to 600
# cycles) into a scratch registry, link a pretend downstream artifact to
# show `validated_against`, and save a self-contained copy of the SQLite
# database (blobs are not included). Inspect it with e.g.
#   sqlite3 registry.db.example 'SELECT kind, name, role, step FROM artifacts'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh >/dev/null 2>&1
cargo build --release --locked -p geohost
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export GEOHOST_REGISTRY="$scratch/registry"
geohost=target/release/geohost
"$geohost" run cycles/lorenz96.toml --cycles 600 -q --out "$scratch/out"
etkf=$("$geohost" registry list --role oracle --json | python3 -c 'import json,sys; print([a["id"] for a in json.load(sys.stdin) if a["name"].endswith("ETKF N=28 infl=1.02 rot")][0])')
echo "an emulator-based analysis would go here (step 4)" > "$scratch/step4.txt"
step4=$("$geohost" registry add "$scratch/step4.txt" --kind run-output --name example/step4 --step 4 --transition L3_L4 --tag example --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$geohost" registry link "$step4" validated_against "$etkf" >/dev/null
python3 - "$GEOHOST_REGISTRY/registry.db" registry.db.example <<'PY'
import sqlite3, sys, os
src = sqlite3.connect(sys.argv[1])
if os.path.exists(sys.argv[2]):
    os.remove(sys.argv[2])
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.execute("PRAGMA journal_mode = DELETE")
dst.close()
PY
echo "wrote registry.db.example"
