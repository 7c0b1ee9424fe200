#!/usr/bin/env bash
# The demo cycle, every step, on the embedded SQLite registry
# ($GEOHOST_REGISTRY, default ~/.local/share/geohost/registry).
#
#   bash scripts/demo.sh          quick: about 5 minutes after the build
#   bash scripts/demo.sh --full   the published-quality plume figures (about 20 minutes)
#
# 1. Lorenz-96 (DAPPER's sakov2008, 6000 cycles, results in out/lorenz96/):
#    steps 1-2 (every DA method through the wasm model, against the
#    published table), step 3 (a simulation dataset and a neural emulator;
#    cached in the registry after the first run) and step 4 (ETKF N=28
#    through the emulator).
# 2. Benchmarks: pre-register the Lorenz-96 cycle benchmark (stage
#    contracts for steps 2, 3 and 4), score the oracle, the emulator and
#    the ETKF through it into one cycle report, score ETKF N=20 against the
#    step-2 contract and diff the two reports (out/reports/).
# 3. The static plume cycle: ES-MDA and MCMC over the source parameters
#    (step 2), an emulator and MCMC through it (steps 3-4), an amortized
#    posterior checked against MCMC (step 5) and the cycle report checked
#    against contracts/plume-cycle.toml (step 6). Quick: cycles/plume-quick.toml
#    (fewer simulations, smaller networks, no held-out MCMC sweep: its
#    figures are the quick ones); --full: cycles/plume.toml.
# 4. The methane L1->L2 row (cycles/methane.toml): radiative transfer of
#    mag1c's table (step 1), the matched filter and IME on synthetic
#    scenes with known plumes (step 2), an emulator of the radiance
#    (step 3), retrievals through it and through the physics (step 4), the
#    direct retrieval (step 5) and the cycle report against
#    contracts/methane-cycle.toml (step 6); then the row's retrieval
#    benchmarks (contracts/methane-step{3,4,5}-hidden.toml): its emulator
#    and direct retrieval exported as components and scored on hidden
#    pixels (out/methane-bench/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plume=cycles/plume-quick.toml
case "${1:-}" in
  "") ;;
  --full) plume=cycles/plume.toml ;;
  *) echo "usage: scripts/demo.sh [--full]" >&2; exit 2 ;;
esac
plugins/build.sh
cargo build --release --locked -p geohost
geohost=target/release/geohost

start=$SECONDS
part() { # name, start time
  echo "[demo] $1 took $((SECONDS - $2)) s"
  echo
}

t=$SECONDS
"$geohost" run cycles/lorenz96.toml
part "Lorenz-96 steps 1-4" $t

t=$SECONDS
"$geohost" bench register contracts/lorenz96-cycle.toml -q
echo
"$geohost" bench cycle contracts/lorenz96-cycle.toml \
  2=out/lorenz96/ETKF_N28_infl1.02_rot.nc 3=lorenz96-emulator 4=out/lorenz96/ETKF_N28_infl1.02_rot_via_emulator.nc \
  --out out/reports/lorenz96-cycle.json
echo
"$geohost" bench score contracts/lorenz96-step2.toml out/lorenz96/ETKF_N20_infl1.04.nc --out out/reports/lorenz96-step2-etkf20.json >/dev/null
"$geohost" bench diff out/reports/lorenz96-step2-etkf20.json out/reports/lorenz96-cycle.json
part "benchmarks" $t

t=$SECONDS
if [ "$plume" = cycles/plume-quick.toml ]; then
  echo "[demo] the plume cycle at the quick setting: its figures are the quick ones (bash scripts/demo.sh --full for the published ones)"
fi
"$geohost" run "$plume"
part "plume cycle ($plume)" $t

t=$SECONDS
"$geohost" run cycles/methane.toml
part "methane row (cycles/methane.toml)" $t

t=$SECONDS
mkdir -p out/methane-bench
for step in 3 4 5; do
  "$geohost" bench register "contracts/methane-step$step-hidden.toml"
done
"$geohost" export emulator ch4-rt-emulator -o out/methane-bench/ch4-rt-emulator.wasm
"$geohost" export posterior ch4-direct-retrieval -o out/methane-bench/ch4-direct-retrieval.wasm
"$geohost" bench submit contracts/methane-step3-hidden.toml out/methane-bench/ch4-rt-emulator.wasm
"$geohost" bench submit contracts/methane-step4-hidden.toml out/methane-bench/ch4-rt-emulator.wasm
"$geohost" bench submit contracts/methane-step5-hidden.toml out/methane-bench/ch4-direct-retrieval.wasm
part "methane retrieval benchmarks (contracts/methane-step{3,4,5}-hidden.toml)" $t
echo "[demo] all parts: $((SECONDS - start)) s after the build"
