#!/usr/bin/env bash
# Fetch the sbibm benchmark's observations and reference posteriors (PyPI
# package sbibm 1.1.0, MIT licence, Lueckmann et al. 2021) for the tasks
# plugins/sbibm implements, into DIR (default target/sbibm):
#
#   DIR/LICENSE                                   sbibm's licence, kept with its data
#   DIR/TASK/num_observation_K/observation.csv    K = 1..10
#   DIR/TASK/num_observation_K/reference_posterior_samples.csv   (10,000 draws, decompressed)
#   DIR/TASK/num_observation_K/true_parameters.csv
#   DIR/bernoulli_glm/design.json                 the design matrix (100 × 10) and stimulus (100),
#                                                 read from sbibm's torch files, as the plugin's config
#
# Nothing of it is vendored in this repository. The wheel's sha256 is checked.
# Used by `geohost perf posterior --task NAME` and cycles/sbibm/*.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/target/sbibm}"
version=1.1.0
sha=12ecc6b4d327b92f9225f08faa6405e4274fb8e75943d86a53157d1b1bcfaf74
wheel="sbibm-$version-py2.py3-none-any.whl"
mkdir -p "$out"
if [ -f "$out/.fetched-$version" ]; then
  echo "fetch-sbibm.sh: $out is up to date" >&2
  exit 0
fi
dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
"$here/scripts/pip-download.sh" "sbibm==$version" "$wheel" "$sha" "$dl"
python3 - "$dl/$wheel" "$out" <<'PY'
import bz2, json, os, struct, sys, zipfile

wheel, out = sys.argv[1], sys.argv[2]
tasks = ["gaussian_linear_uniform", "gaussian_mixture", "bernoulli_glm"]

def torch_floats(raw, expected):
    # A legacy torch.save file ends with its one storage: a little-endian
    # u64 element count, then the float32 values.
    off = len(raw) - 4 * expected - 8
    if off < 0 or struct.unpack("<Q", raw[off:off + 8])[0] != expected:
        sys.exit(f"fetch-sbibm.sh: a torch file does not end with {expected} float32 values")
    return list(struct.unpack(f"<{expected}f", raw[off + 8:]))

with zipfile.ZipFile(wheel) as z:
    with open(os.path.join(out, "LICENSE"), "wb") as f:
        f.write(z.read(f"sbibm-1.1.0.dist-info/LICENSE"))
    for task in tasks:
        base = f"sbibm/tasks/{task}/files"
        for k in range(1, 11):
            d = os.path.join(out, task, f"num_observation_{k}")
            os.makedirs(d, exist_ok=True)
            for name in ["observation.csv", "true_parameters.csv"]:
                with open(os.path.join(d, name), "wb") as f:
                    f.write(z.read(f"{base}/num_observation_{k}/{name}"))
            with open(os.path.join(d, "reference_posterior_samples.csv"), "wb") as f:
                f.write(bz2.decompress(z.read(f"{base}/num_observation_{k}/reference_posterior_samples.csv.bz2")))
    design = torch_floats(z.read("sbibm/tasks/bernoulli_glm/files/design_matrix.pt"), 1000)
    stimulus = torch_floats(z.read("sbibm/tasks/bernoulli_glm/files/stimulus_I.pt"), 100)
    with open(os.path.join(out, "bernoulli_glm", "design.json"), "w") as f:
        json.dump({"design": design, "stimulus": stimulus}, f)
PY
touch "$out/.fetched-$version"
echo "fetch-sbibm.sh: sbibm $version's observations and reference posteriors in $out" >&2
