#!/usr/bin/env bash
# Self-attention between entries against the context block and the plain student, at one training budget.
# Each arm is the demo recipe (configs/demo.yaml) with only its architecture keys changed, trained for EPOCHS
# epochs (the same warmup and decay, scaled), then reported on fidelity, SciFact, DL19 and STS-B (asymmetric and
# student-only) with the TREC runs saved for paired bootstrap intervals. Resumable: a finished arm is kept.
#   EPOCHS=2 bash experiments/selfattn/compare.sh        # then: python experiments/selfattn/table.py
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BERTAPPROX_WORK:=$HOME/.cache/bertapprox/work}"; export BERTAPPROX_WORK
EPOCHS=${EPOCHS:-2}
TEACHER=${TEACHER:-$(bash "${BERTAPPROX_SHARED:-../shared}/teachers/fetch" all-MiniLM-L6-v2)}
OUT=${OUT:-experiments/results/selfattn}
declare -A CONFIGS=([plain]=configs/demo.yaml [context]=experiments/configs/context.yaml
                    [selfattn]=experiments/configs/selfattn.yaml)
for arm in ${ARMS:-plain context selfattn}; do
  run="$BERTAPPROX_WORK/run-cmp-$arm-e$EPOCHS"
  if [ ! -f "$run/best/model.safetensors" ]; then
    resume=(); [ -d "$run/checkpoints" ] && resume=(--resume)
    python train.py --config "${CONFIGS[$arm]}" "${resume[@]}" \
      --set optim.epochs="$EPOCHS" run.output_dir="$run"
  fi
  if [ ! -f "$OUT/$arm/results.json" ]; then
    python -m benchmarks.report --suite full --model "$run/best" --teacher "$TEACHER" --skip speed \
      --systems teacher student asymmetric --save-runs --out "$OUT/$arm" --no-progress
  fi
  cp "$run/best/training.json" "$OUT/$arm/training.json"
done
