#!/usr/bin/env bash
# A lent GPU machine's checks, as one script (docs/performance.md, "On a GPU"): the paper
# preset's step speed (make bench-gpu, eager), where a step's time goes (gpu_profile.py), the
# CUDA tests (tests/test_cuda.py), the operator count on CUDA, then compiled and CUDA-graph
# steps. About 5 minutes on an H200. Everything lands in $OUT (default
# /tmp/dainv-gpu) as it is made, so a time-out still returns what was done.
set -u
OUT=${OUT:-/tmp/dainv-gpu}
mkdir -p "$OUT/bench"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
B="$PY benchmarks/run.py --device cuda --out $OUT/bench"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
  nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step() { local t=$1; shift; echo "== $* (limit ${t}s)"; local s=$SECONDS; timeout "$t" "$@"; echo "== rc=$? in $((SECONDS - s))s"; }
step 100 $B --only gpu --gpu-modes eager 2>&1 | tee "$OUT/bench_eager.log" | grep -v "^{"
step 60 $PY benchmarks/gpu_profile.py 2>&1 | tee "$OUT/profile.log" | grep "###"
step 200 $PY -m pytest -q --tb=short -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -40
step 45 $B --only ops 2>&1 | tee "$OUT/bench_ops.log" | grep -v "^{"
step 90 $B --only gpu --gpu-numerics bf16,tf32 --gpu-modes cuda_graphs 2>&1 \
  | tee "$OUT/bench_graphs.log" | grep -v "^{"
step 150 $B --only gpu --gpu-numerics bf16 --gpu-modes compiled,compiled_graphs --gpu-arms baseline,dai 2>&1 \
  | tee "$OUT/bench_compiled.log" | grep -v "^{"
python3 - "$OUT/bench" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    for line in f.read_text().splitlines():
        r = json.loads(line)
        if r.get("bench") == "gpu" and "samples_per_s" in r:
            sps = {k: round(v) for k, v in r["samples_per_s"].items()}
            print(r["numeric"], r["mode"], sps, "overhead", r.get("dai_overhead"), "paper h/arm",
                  {k: round(v, 2) for k, v in r["paper_hours_per_arm"].items()}, "first", r["first_steps_s"])
        elif r.get("error"):
            print("ERROR", r)
PY
