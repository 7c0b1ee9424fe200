#!/usr/bin/env bash
# The demo cycle: build the plugins and the host, run the Lorenz-96
# sakov2008 twin experiment with every method (results in out/lorenz96/),
# then the step-2 benchmark: pre-register the Lorenz-96 cycle benchmark
# (and its step-2 contract), score the ETKF oracle into a cycle report,
# score ETKF N=20 against the same contract and diff the two reports
# (reports in out/reports/). Everything is recorded in the registry
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
"$geohost" bench cycle contracts/lorenz96-cycle.toml 2=out/lorenz96/ETKF_N28_infl1.02_rot.nc --out out/reports/lorenz96-cycle.json
echo
"$geohost" bench score contracts/lorenz96-step2.toml out/lorenz96/ETKF_N20_infl1.04.nc --out out/reports/lorenz96-step2-etkf20.json >/dev/null
"$geohost" bench diff out/reports/lorenz96-step2-etkf20.json out/reports/lorenz96-cycle.json
