#!/usr/bin/env bash
# A fixed demo run whose outputs must not change when code is only restructured.
#
#   benches/fixed_demo_run.sh OUT            # writes OUT/{demo,eval,eval_kr,smoke} and OUT/*_stdout.txt
#   (run it before and after a change, with the same OUT path, then compare with sha256sum)
#
# What it runs: dycl-train --demo; dycl-eval of the checkpoint with MSRerank (ks from Eq. 6); dycl-eval
# of the saved embeddings with k-reciprocal; dycl-experiment run --suite smoke; dycl-experiment report.
# Compare metrics.json files, the *_stdout.txt tables and smoke/report/results.md (regenerate the report
# of the *same* suite folder to compare it: its timing lines are measured, the rest is computed).
set -euo pipefail
OUT=${1:?usage: benches/fixed_demo_run.sh OUT}
BIN=${BIN:-.venv/bin}
export DYCL_CACHE=${DYCL_CACHE:-$OUT/cache} OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
CAMPUS=$("$BIN/python" -c "from dycl.train import demo_data_dir; print(demo_data_dir())")
"$BIN/dycl-train" --demo --output "$OUT/demo" --no-progress > "$OUT/train_stdout.txt"
"$BIN/dycl-eval" --checkpoint "$OUT/demo/last.pt" --data-dir "$CAMPUS" --rerank msrerank --ks auto \
    --output "$OUT/eval/metrics.json" --no-progress > "$OUT/eval_stdout.txt"
"$BIN/dycl-eval" --embeddings "$OUT/demo/embeddings" --rerank k-reciprocal \
    --output "$OUT/eval_kr/metrics.json" --no-progress > "$OUT/evalkr_stdout.txt"
"$BIN/dycl-experiment" run --suite smoke --output "$OUT/smoke" > "$OUT/smoke_stdout.txt"
"$BIN/dycl-experiment" report --suite smoke --output "$OUT/smoke" > "$OUT/report_stdout.txt"
sha256sum "$OUT"/*_stdout.txt "$OUT"/demo/metrics.json "$OUT"/eval/metrics.json "$OUT"/eval_kr/metrics.json \
    "$OUT"/smoke/report/results.md
