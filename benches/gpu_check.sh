#!/usr/bin/env bash
# The prepared GPU check of the CUDA path (issue 15): one call, <= 8 minutes on one GPU, results as
# JSON + Markdown under $OUT (default ./gpu-check-out). `--dry-run` runs the same code on the CPU
# at tiny sizes (CI does, so it cannot rot).
#
# Needs dycl importable. If it is not (a machine without Rust, where the source tree's extension is
# not built), the wheel carried in dist/ is installed into a venv that sees the system's packages
# (torch stays the machine's own), with dependency wheels from wheelhouse/ if carried, offline.
# docs/benchmarks.md ("GPU path") says how to carry both.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
export OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"

# Importable without importing them all (torch alone takes seconds): the extension, then the rest's specs.
needs='import dycl._core, importlib.util as u, sys
mods = ["numpy", "scipy", "torch", "torchvision", "PIL", "tqdm", "pytorch_metric_learning", "tensorboard"]
missing = [m for m in mods if u.find_spec(m) is None]
print(" ".join(missing)); sys.exit(1 if missing else 0)'
if ! (cd / && "$python" -c "$needs") >/dev/null 2>&1; then
    wheel=$(ls "$root"/dist/dycl-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$wheel" ]; then
        echo "gpu_check: error: dycl is not importable by $python and no wheel is in $root/dist" \
             "(build one with 'make wheel-check'; see docs/benchmarks.md, GPU path)" >&2
        exit 2
    fi
    venv=${GPU_CHECK_VENV:-/tmp/dycl-gpu-check-venv}
    [ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
    find_links=()
    [ -d "$root/wheelhouse" ] && find_links=(--find-links "$root/wheelhouse")
    install() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index "$@"; }
    # Offline: the carried wheels first (no dependency resolution: torch & co. are the machine's own).
    if [ -d "$root/wheelhouse" ]; then
        install --no-deps "$root"/wheelhouse/*.whl
    fi
    install --no-deps "${find_links[@]}" "$wheel"
    python="$venv/bin/python"
    if ! missing=$(cd / && "$python" -c "$needs" 2>&1); then
        echo "gpu_check: error: installed $wheel, but these modules are missing: $missing" \
             "(carry their wheels in wheelhouse/, see docs/benchmarks.md)" >&2
        exit 2
    fi
    echo "gpu_check: using $wheel in $venv" >&2
fi
cd "$root/benches"
exec "$python" gpu_check.py --out "$OUT" "$@"
