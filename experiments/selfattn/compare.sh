#!/usr/bin/env bash
# Self-attention between entries against the context block and the plain student, at one training budget.
# Each arm is the demo recipe (configs/demo.yaml) with only its architecture keys changed, trained for EPOCHS
# epochs (the same warmup and decay, scaled), then reported on fidelity, SciFact, DL19 and STS-B (asymmetric and
# student-only); paired bootstrap intervals against the plain arm; the table and plot by arms_table.py.
# Resumable: a finished arm is kept.
#   EPOCHS=2 bash experiments/selfattn/compare.sh      → experiments/results/selfattn/arms.md, arms.png
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BERTAPPROX_WORK:=$HOME/.cache/bertapprox/work}"; export BERTAPPROX_WORK
SHARED=${BERTAPPROX_SHARED:-../shared}
EPOCHS=${EPOCHS:-2}
TEACHER=${TEACHER:-$(bash "$SHARED/teachers/fetch" all-MiniLM-L6-v2)}
OUT=${OUT:-experiments/results/selfattn}
ARMS=(plain context selfattn)
declare -A CONFIGS=([plain]=configs/demo.yaml [context]=experiments/configs/context.yaml
                    [selfattn]=experiments/configs/selfattn.yaml)
run_of() { echo "$BERTAPPROX_WORK/run-cmp-$1-e$EPOCHS"; }
for arm in "${ARMS[@]}"; do
  run=$(run_of "$arm")
  if [ ! -f "$run/report.json" ]; then
    resume=(); [ -d "$run/checkpoints" ] && resume=(--resume)
    python train.py --config "${CONFIGS[$arm]}" "${resume[@]}" --set optim.epochs="$EPOCHS" run.output_dir="$run"
  fi
  if [ ! -f "$run/report/results.json" ]; then
    python -m benchmarks.report --suite full --model "$run/best" --teacher "$TEACHER" --skip speed \
      --systems teacher student asymmetric --save-runs --no-progress --out "$run/report"
  fi
  mkdir -p "$OUT/$arm"
  cp "$run/report/results.json" "$run/report/results.md" "$run/report.json" "$OUT/$arm/"
  cp "$run/validation.png" "$OUT/$arm/" 2>/dev/null || true
done
reports=(); for arm in "${ARMS[@]}"; do reports+=("$arm=$(run_of "$arm")/report"); done
bash experiments/bootstrap_arms.sh "$OUT" plain "${reports[@]}"
python experiments/arms_table.py "$OUT" "${ARMS[@]}"
