#!/usr/bin/env bash
# One command for a GPU machine: install the cuda extra, print the devices, run the quickstart, the
# benchmark's large row and a large-n case on the GPU, and write one JSON with the load, versions and
# figures (issue 18 §5).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default OUT_DIR: results/gpu-check-<date>)
#
# Needs: an NVIDIA GPU with a CUDA 13 driver (jax[cuda13] brings the CUDA libraries from PyPI), Python
# >= 3.11, and the package registry (PyPI) reachable for the install. It measures; it does not judge:
# every stage's exit code and wall time go into gpu-check.json, and a stage that fails does not stop the
# next (its log is kept beside the JSON). The large-n case is n = 32,768 sphere points, the paper model
# at width 1024, GD / HB / NAG-C for 200 steps, diffrax off: the configuration issue 18 targets; on a
# build that does not yet predict without a full eigendecomposition it shows where the time and memory
# go (an n x n float64 kernel is 8.6 GB).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
pip install -q --upgrade pip
pip install -q -e ".[cuda]" || { echo "gpu_check: installing the cuda extra failed" >&2; exit 1; }
python - <<'PY' | tee "$OUT/devices.txt"
import jax
print("jax", jax.__version__, "backend", jax.default_backend())
for d in jax.devices():
    print(d, getattr(d, "device_kind", ""))
PY
stage() {  # stage NAME COMMAND...: run, time, keep the log, record rc and seconds
  local name="$1"; shift
  local t0; t0=$(date +%s.%N)
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local t1; t1=$(date +%s.%N)
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))"), \"load_before\": \"$(cut -d' ' -f1 /proc/loadavg)\"}" >>"$OUT/stages.jsonl"
  echo "gpu_check: $name rc=$rc"
}
stage quickstart python -m ntkdyn.run configs/quickstart.yaml --out "$OUT/quickstart"
stage bench_large python benchmarks/run.py --only gemm_gflops train_large --peers plain_scan --json "$OUT/bench.json"
stage n32768 python -m ntkdyn.run configs/quickstart.yaml --out "$OUT/n32768" \
  --set data.n=32768 --set data.d=64 --set model.width=1024 --set train.steps=200 \
  --set theory.diffrax=false --set train.error_at=[0,200] --set train.kernel_at=[0]
python - "$OUT" <<'PY'
import json, os, platform, subprocess, sys
out = sys.argv[1]
stages = [json.loads(line) for line in open(os.path.join(out, "stages.jsonl"))]
import jax
info = {
    "machine": platform.node(),
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "nvidia_smi": subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True).stdout.strip(),
    "stages": stages,
}
bench = os.path.join(out, "bench.json")
if os.path.exists(bench):
    info["bench"] = json.load(open(bench))
tmp = os.path.join(out, "gpu-check.json.tmp")
json.dump(info, open(tmp, "w"), indent=2)
os.replace(tmp, os.path.join(out, "gpu-check.json"))
print("gpu_check: wrote", os.path.join(out, "gpu-check.json"))
PY
