#!/usr/bin/env bash
# Pilot for paper-mini's learning rate: the suite's settings (lr 1e-4) with a higher backbone rate, for
# InfoNCE and the full loss, seed 0 (the 1e-4 runs are the suite's own, seeds 0-2).
# Usage: experiments/pilot/run.sh (from the repository root; resumable: finished runs are skipped).
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE
DATA=experiments/paper-mini/data/campus-240-200-16v-96px-seed0
for lr in 4e-4 2e-4; do
  for seed in 0; do
    for loss in infonce "dycl:0.2,cluster:0.1,happier:0.9"; do
      key=$([ "$loss" = infonce ] && echo infonce || echo dycl-happier)
      out=experiments/pilot/lr$lr/$key/seed$seed
      [ -f "$out/metrics.json" ] && continue
      mkdir -p "$(dirname "$out")"
      resume=$([ -f "$out/last.pt" ] && echo --resume || echo --overwrite)
      .venv/bin/dycl-train --data-dir "$DATA" --backbone resnet18 --no-pretrained --embedding-dim 128 \
        --image-size 48 --epochs 5 --batch-size 32 --lr "$lr" --thresholds 200 500 --workers 1 \
        --loss "$loss" --seed "$seed" --output "$out" --no-progress $resume > "$out.log" 2>&1 || true
      echo "$(date +%T) done $out"
    done
  done
done
