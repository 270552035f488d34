#!/usr/bin/env bash
# The GPU check of the performance notes, as one script: the meta-gradient benchmark on CUDA, then a fixed number
# of outer steps of configs/ml100k.yaml on CUDA and on CPU (seconds per step, peak memory). Results (JSON) go to
# $OUT when set, else benchmarks/results/; the Markdown rows are printed for docs/performance.md.
#   FARZI_DATA_DIR=/path/to/data PYTHON=python3 bash benchmarks/gpu_check.sh
# Needs a Python with CUDA torch and this package importable, and the ml100k teacher bank (made first when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
if [ ! -f runs/banks/ml100k_sasrec/manifest.json ]; then
  "$py" -m farzi_lightning.cli fit --config configs/ml100k_pretrain.yaml --trainer.enable_progress_bar false \
    > "$out/pretrain.log" 2>&1
fi
"$py" benchmarks/meta_grad.py --device cuda --steps 10 50 200 --unrolled-steps 10 50 --out "$out/meta_grad_cuda.json"
for device in cuda cpu; do
  "$py" benchmarks/outer_steps.py --device "$device" --steps 10 --out "$out/outer_steps_$device.json" 2>/dev/null
done
