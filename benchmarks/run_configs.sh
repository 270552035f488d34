#!/usr/bin/env bash
# Fit each named config, then `farzi test` its best checkpoint (or last, when no best is kept); prints the wall
# time of the fit and the test metrics. The figures in docs/results.md come from this script.
#   bash benchmarks/run_configs.sh ml100k_pretrain ptb_pretrain ptb_lstm_pretrain   # full-data references
#   bash benchmarks/run_configs.sh ml100k ptb                                       # distillation (banks first)
# Needs FARZI_DATA_DIR (e.g. ../shared/data). Logs land in runs/<config>/; banks in runs/banks/.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "$@"; do
  out="runs/$name"; mkdir -p "$out"
  start=$(date +%s)
  .venv/bin/farzi fit --config "configs/$name.yaml" --trainer.default_root_dir "$out" \
    --trainer.enable_progress_bar false > "$out/fit.log" 2>&1
  fit_s=$(( $(date +%s) - start ))
  dir=$(ls -td "$out"/lightning_logs/version_* | head -1)/checkpoints
  ckpt=$(ls -t "$dir"/epoch=*.ckpt 2>/dev/null | head -1 || true)
  ckpt=${ckpt:-$dir/last.ckpt}
  start=$(date +%s)
  .venv/bin/farzi test --config "configs/$name.yaml" --trainer.default_root_dir "$out" --ckpt_path "$ckpt" \
    --trainer.enable_progress_bar false > "$out/test.log" 2>&1
  echo "$name fit_seconds=$fit_s test_seconds=$(( $(date +%s) - start )) ckpt=$ckpt"
  grep -E "test/|downstream/|\| " "$out/test.log" || true
done
