#!/usr/bin/env bash
# The demo cycle: build the plugins and the host, run the Lorenz-96
# sakov2008 twin experiment (results in out/lorenz96/): steps 1-2 (every
# DA method through the wasm model), step 3 (simulation dataset and neural
# emulator; cached after the first run) and step 4 (ETKF N=28 through the
# emulator, printed beside the same ETKF through the model). Then the
# benchmarks: pre-register the Lorenz-96 cycle benchmark (its step-2, -3
# and -4 contracts), score the ETKF oracle (step 2), the emulator against
# the model (step 3) and the ETKF through the emulator (step 4) into one
# cycle report, score ETKF N=20 against the
# step-2 contract and diff it with the oracle's report (out/reports/).
# Last, the static plume cycle (cycles/plume.toml): ES-MDA and MCMC over
# the source parameters (step 2), an emulator of the plume and MCMC
# through it (steps 3-4), the amortized posterior checked against MCMC on
# 10 held-out observations (step 5), and the cycle report checked against
# contracts/plume-cycle.toml (step 6; out/plume/cycle-report.json). Everything is recorded in the registry
# ($GEOHOST_REGISTRY, default ~/.local/share/geohost/registry).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
plugins/build.sh
cargo build --release --locked -p geohost
geohost=target/release/geohost
"$geohost" run cycles/lorenz96.toml
echo
"$geohost" bench register contracts/lorenz96-cycle.toml -q
echo
"$geohost" bench cycle contracts/lorenz96-cycle.toml \
  2=out/lorenz96/ETKF_N28_infl1.02_rot.nc 3=lorenz96-emulator 4=out/lorenz96/ETKF_N28_infl1.02_rot_via_emulator.nc \
  --out out/reports/lorenz96-cycle.json
echo
"$geohost" bench score contracts/lorenz96-step2.toml out/lorenz96/ETKF_N20_infl1.04.nc --out out/reports/lorenz96-step2-etkf20.json >/dev/null
"$geohost" bench diff out/reports/lorenz96-step2-etkf20.json out/reports/lorenz96-cycle.json
echo
"$geohost" run cycles/plume.toml
