#!/usr/bin/env bash
# Regenerate registry.db.example: run the Lorenz-96 demo (steps 1-4) into a
# scratch registry, pre-register the Lorenz-96 cycle benchmark and score
# steps 2-4 and ETKF N=20 (contracts, reports, scored_by and
# validated_against edges), and save a self-contained copy of the SQLite
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
"$geohost" run cycles/lorenz96.toml -q --out "$scratch/out" >/dev/null
"$geohost" bench register contracts/lorenz96-cycle.toml -q
"$geohost" bench cycle contracts/lorenz96-cycle.toml 2="$scratch/out/ETKF_N28_infl1.02_rot.nc" 3=lorenz96-emulator \
  4="$scratch/out/ETKF_N28_infl1.02_rot_via_emulator.nc" --out "$scratch/cycle.json" >/dev/null
"$geohost" bench score contracts/lorenz96-step2.toml "$scratch/out/ETKF_N20_infl1.04.nc" --out "$scratch/etkf20.json" >/dev/null
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
