#!/usr/bin/env bash
# Regenerate registry.db.example: run the Lorenz-96 demo into a scratch
# registry, pre-register the Lorenz-96 cycle benchmark and score the ETKF
# oracle and ETKF N=20 against it (contract, reports, scored_by and
# validated_against edges), link a pretend step-4 artifact, and save a
# self-contained copy of the SQLite database (blobs are not included). Inspect it with e.g.
#   sqlite3 registry.db.example 'SELECT kind, name, role, step FROM artifacts'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh >/dev/null 2>&1
cargo build --release --locked -p geohost
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export GEOHOST_REGISTRY="$scratch/registry"
geohost=target/release/geohost
"$geohost" run cycles/lorenz96.toml -q --out "$scratch/out" >/dev/null
"$geohost" bench register contracts/lorenz96-cycle.toml -q
"$geohost" bench cycle contracts/lorenz96-cycle.toml 2="$scratch/out/ETKF_N28_infl1.02_rot.nc" --out "$scratch/cycle.json" >/dev/null
"$geohost" bench score contracts/lorenz96-step2.toml "$scratch/out/ETKF_N20_infl1.04.nc" --out "$scratch/etkf20.json" >/dev/null
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
