#!/usr/bin/env bash
# As much of the paper's full-scale run as a lent GPU's time allows: `dainv reproduce --preset
# paper` truncated to EPOCHS epochs (the paper's constant-lr first phase), all three arms at
# once on one GPU, evaluated at the kept epochs, then the report. Reads CIFAR-10 from
# $DATA_ROOT (default .gpudata); writes report + figures + metrics (no checkpoints) to
# $OUT/fullscale.tar.gz and the final weights of each arm to $OUT.
#     [LIMIT=SECONDS] benchmarks/gpu_fullscale.sh EPOCHS "KEPT" [extra reproduce options ...]
set -u
EPOCHS=$1 KEEP=$2; shift 2
OUT=${OUT:-/tmp/dainv-gpu}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
R=/tmp/repro-paper-$EPOCHS
s=$SECONDS
timeout "${LIMIT:-1000000}" "${PY:-python3}" -m dainv reproduce --preset paper --data-root "${DATA_ROOT:-.gpudata}" --out "$R" --parallel 3 --quiet \
  --set train.epochs="$EPOCHS" --set "train.keep_epochs=$KEEP" --set train.eval_every=5 \
  --set train.monitor_every=1 --set train.checkpoint_every=5 "$@" 2>&1 | tee "$OUT/reproduce.log" | tail -60
echo "== reproduce rc=${PIPESTATUS[0]} in $((SECONDS - s))s"
for a in baseline dai control; do
  f="$R/$a-s0/checkpoints/final.pt"
  [ -f "$f" ] && cp "$f" "$OUT/final-$a.pt"
done
tar czf "$OUT/fullscale.tar.gz" -C "$R" --exclude='*.pt' . && ls -la "$OUT"
