#!/usr/bin/env bash
# The GPU session's checks in one script, under 8 minutes on one H200 (docs/diffusion.md,
# "GPU session"). Each step has its own time limit (together 470 s, plus ~30 s of wheel
# installs); a failed or skipped step is recorded and the next one runs. Results go to $OUT (the device tool's folder) or ./gpu_check_out:
#   ours.json      our diffusion backend: SD1.5-size random weights, 512x800 pages (1024x1600
#                  canvas), 10 UniPC steps, CFG 7.5, GSRP to 768x1200, bf16: pages/s, peak GPU
#                  memory, UNet TFLOP/s and its fraction of the H200's measured bf16 peak
#   ours_compile.json  the same with torch.compile of UNet + guider
#   official.json  ColorFlow's official pipeline, same settings (fp16, as its app.py)
#   training.json  training throughput (slot: bench/bench_training.py, once it exists)
#   faiss.json     FAISS search on the GPU vs the CPU (needs a faiss build with GPU support)
#   summary.json   every step's status, seconds and result; gpu_check.log the whole log
#
# Prepare on a networked machine: bash bench/device_prepare.sh /path/to/ColorFlow-checkout
# (writes .whl/ .whl-official/ .cache/ColorFlow, all git-ignored), then one device run with
# carry [".whl", ".whl-official", ".cache"] and the command `bash bench/gpu_check.sh`.
#
#   bash bench/gpu_check.sh            # GPU (refuses to run without CUDA unless --tiny)
#   bash bench/gpu_check.sh --tiny     # CPU dry run: tiny models, 64x64 pages, every step
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
START=$(date +%s)

# -- environment: carried wheels in their own --target folders, chromaflow by path -----------
SITE=/tmp/gpu_check_site
SITE_OFFICIAL=/tmp/gpu_check_site_official
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl
fi
if [ -d .whl-official ] && ls .whl-official/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE_OFFICIAL \
        .whl-official/*.whl
fi
# pyproject maps top-level folders into `chromaflow.*`; a link farm does the same without a
# build (the device image's setuptools may be older than the one pyproject asks for)
PKG=/tmp/gpu_check_pkg
rm -rf $PKG && mkdir -p $PKG/chromaflow
for entry in chromaflow/*; do ln -s "$REPO/$entry" "$PKG/chromaflow/"; done
for folder in models flows tasks retrieval storage; do ln -s "$REPO/$folder" "$PKG/chromaflow/$folder"; done
ln -s "$REPO/conf" "$PKG/conf"
OURS_PATH=$PKG:$SITE
OFFICIAL_PATH=$SITE_OFFICIAL

$PY - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
EOF
if [ $TINY = 0 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device (use --tiny for the CPU dry run)"; exit 2
fi

STEPS_JSON=$OUT/steps.jsonl
: > "$STEPS_JSON"
# step NAME LIMIT_S RESULT_JSON command...: runs with a time limit, records status + seconds
# (limits are for the H200; the CPU dry run, on a shared machine, gets $LIMIT_SCALE times them)
step() {
    local name=$1 limit=$(( $2 * LIMIT_SCALE )) result=$3; shift 3
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s) rc
    timeout --kill-after=10 "$limit" "$@"; rc=$?
    local status=ok
    [ $rc = 124 ] || [ $rc = 137 ] && status=timeout
    [ $rc = 3 ] && status=skipped
    [ $rc != 0 ] && [ $status = ok ] && status="failed (exit $rc)"
    $PY - "$name" "$status" "$(( $(date +%s) - t0 ))" "$result" >> "$STEPS_JSON" <<'EOF'
import json, sys
from pathlib import Path
name, status, seconds, result = sys.argv[1:]
path = Path(result)
data = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None
print(json.dumps({"step": name, "status": status, "seconds": int(seconds), "result": data}))
EOF
    echo "== $name: $status"
}

LIMIT_SCALE=${GPU_CHECK_LIMIT_SCALE:-1}
if [ $TINY = 1 ]; then
    LIMIT_SCALE=${GPU_CHECK_LIMIT_SCALE:-4}
    OURS_ARGS=(--device cpu --pages 2 --batch-pages 2 --steps 2)
    OFFICIAL_ARGS=(--tiny --pages 1 --steps 2)
    FAISS_N=20000
else
    OURS_ARGS=(--pages 8 --batch-pages 2 --peak-tflops 790)  # H200 bf16 matmul measured here: ~790 TFLOP/s
    OFFICIAL_ARGS=(--pages 4)
    FAISS_N=1000000
fi

# 1. our diffusion backend (SD1.5 size on GPU; tiny on CPU)
step ours 100 "$OUT/ours.json" env PYTHONPATH=$OURS_PATH $PY bench/bench_diffusion.py "${OURS_ARGS[@]}" \
    --json "$OUT/ours.json"
# 1b. the same with torch.compile (compiling takes most of the limit; GPU only)
if [ $TINY = 0 ]; then
    step ours_compile 110 "$OUT/ours_compile.json" env PYTHONPATH=$OURS_PATH $PY bench/bench_diffusion.py \
        "${OURS_ARGS[@]}" --compile --json "$OUT/ours_compile.json"
fi

# 2. the official ColorFlow code, same settings, in its own overlay (its diffusers fork)
if [ -d .cache/ColorFlow/diffusers/src ]; then
    step official 110 "$OUT/official.json" env PYTHONPATH=$OFFICIAL_PATH $PY bench/bench_colorflow_official.py \
        --official .cache/ColorFlow "${OFFICIAL_ARGS[@]}" --json "$OUT/official.json"
else
    step official 5 "$OUT/official.json" bash -c 'echo "no .cache/ColorFlow checkout (bench/device_prepare.sh)"; exit 3'
fi

# 3. training throughput: the training engineer's bench, when it exists (contract: writes
#    its result as JSON to --json, sized to finish within the limit)
if [ -f bench/bench_training.py ]; then
    TRAIN_ARGS=(--json "$OUT/training.json")
    # Full size: one kind, 30 timed steps (the random SD1.5 base it writes first takes ~20 s).
    if [ $TINY = 1 ]; then TRAIN_ARGS+=(--tiny); else TRAIN_ARGS+=(--steps 30 --kinds colorizer); fi
    step training 90 "$OUT/training.json" env PYTHONPATH=$OURS_PATH $PY bench/bench_training.py "${TRAIN_ARGS[@]}"
else
    step training 5 "$OUT/training.json" bash -c 'echo "bench/bench_training.py not written yet"; exit 3'
fi

# 4. FAISS on the GPU: an IVF index built by retrieval/index.py, searched on CPU and GPU
step faiss 60 "$OUT/faiss.json" env PYTHONPATH=$OURS_PATH $PY - "$FAISS_N" "$OUT/faiss.json" "$TINY" <<'EOF'
import json, sys, time
import numpy as np
try:
    import faiss
except ImportError:
    print("faiss is not installed here (the faiss-gpu wheel, 135 MB, is over the device's 64 MiB carry)")
    sys.exit(3)
from chromaflow.retrieval import index as cf_index
n, out, tiny = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
gpu = cf_index.gpu_available()
if not gpu and not tiny:
    print(f"faiss {faiss.__version__}: no GPU support or no GPU visible"); sys.exit(3)
from chromaflow.config import load_config
rng = np.random.default_rng(0)
data = rng.standard_normal((n, 512), dtype=np.float32)
data /= np.linalg.norm(data, axis=1, keepdims=True)
queries = data[rng.choice(n, 1000, replace=False)] + 0.01 * rng.standard_normal((1000, 512), dtype=np.float32)
cfg = load_config(overrides=["retrieval.index=ivf"]).retrieval
t0 = time.perf_counter(); index = cf_index.build_index(data, cfg); build = time.perf_counter() - t0
result = {"n": n, "dim": 512, "queries": len(queries), "build_s": round(build, 2)}
searchers = [("cpu", index)] + ([("gpu", cf_index.to_search_device(index, True))] if gpu else [])
for label, searcher in searchers:  # --tiny without a GPU build: the CPU row only
    searcher.search(queries[:10], 10)
    t0 = time.perf_counter(); _, ids = searcher.search(queries, 10); seconds = time.perf_counter() - t0
    result[f"{label}_ms_per_query"] = round(1000 * seconds / len(queries), 4)
print(json.dumps(result, indent=2)); open(out, "w").write(json.dumps(result, indent=2))
EOF

$PY - "$STEPS_JSON" "$OUT/summary.json" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
summary = {"total_seconds": int(sys.argv[3]), "steps": steps}
ours = next((s["result"] for s in steps if s["step"] == "ours" and s["result"]), None)
official = next((s["result"] for s in steps if s["step"] == "official" and s["result"]), None)
if ours and official:
    summary["speedup_vs_official"] = round(ours["pages_per_s"] / official["pages_per_s"], 2)
open(sys.argv[2], "w").write(json.dumps(summary, indent=2))
for s in steps:
    print(f"{s['step']:>13}: {s['status']:<10} {s['seconds']:>4}s")
print(f"total {summary['total_seconds']}s" + (f", speedup {summary['speedup_vs_official']}x" if "speedup_vs_official" in summary else ""))
EOF
