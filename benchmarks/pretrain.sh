#!/usr/bin/env bash
# Full-data reference runs (docs/results.md): train, then test the best checkpoint; wall time of each.
#   bash benchmarks/pretrain.sh ml100k_pretrain ptb_pretrain ptb_lstm_pretrain
# Needs FARZI_DATA_DIR (e.g. ../shared/data). Logs land in runs/<config>/.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "$@"; do
  out="runs/$name"; mkdir -p "$out"
  start=$(date +%s)
  .venv/bin/farzi fit --config "configs/$name.yaml" --trainer.default_root_dir "$out" --trainer.enable_progress_bar false \
    > "$out/fit.log" 2>&1
  fit_s=$(( $(date +%s) - start ))
  best=$(ls -t "$out"/lightning_logs/version_*/checkpoints/epoch=*.ckpt | head -1)
  .venv/bin/farzi test --config "configs/$name.yaml" --trainer.default_root_dir "$out" --ckpt_path "$best" \
    --trainer.enable_progress_bar false > "$out/test.log" 2>&1
  echo "$name fit_seconds=$fit_s best=$best"
  grep -E "test/" "$out/test.log" || true
done
