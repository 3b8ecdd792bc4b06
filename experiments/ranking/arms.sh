#!/usr/bin/env bash
# The arms of docs/experiments.md ("Ranking distillation"): the demo recipe trained with each ranking term, each
# student's report (SciFact, DL19, STS-B, fidelity), and paired bootstrap intervals across arms.
# Needs make demo and make candidates first. Resumable: rerun it and finished steps are skipped.
#   bash experiments/ranking/arms.sh [ARM ...]       (default: every arm below)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${BERTAPPROX_WORK:-$HOME/.cache/bertapprox/work}
SHARED=${BERTAPPROX_SHARED:-$(cd .. && pwd)/shared}
TEACHER=$(bash "$SHARED/teachers/fetch" all-MiniLM-L6-v2 | tail -n 1)
CANDIDATES=$WORK/candidates-all-MiniLM-L6-v2
CONFIG=experiments/configs/minilm-contextual.yaml
OUT=experiments/ranking
export BERTAPPROX_WORK=$WORK BERTAPPROX_SHARED=$SHARED HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE

declare -A ARGS=(
  [embedding]=""
  [listwise-query]="--set ranking.listwise=0.1"
  [listwise-both]="--set ranking.listwise=0.1 --set ranking.sides=both"
  [margin-query]="--set ranking.margin_mse=0.01"
)
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(embedding listwise-query listwise-both margin-query)

for arm in "${arms[@]}"; do
  run=$WORK/arms/$arm
  if [ ! -f "$run/report.json" ]; then
    # shellcheck disable=SC2086
    python train.py --config "$CONFIG" --resume --set ranking.candidates="$CANDIDATES" \
      --set run.output_dir="$run" ${ARGS[$arm]} 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" > "$run.log"
  fi
  if [ ! -f "$run/report/results.json" ]; then
    python -m benchmarks.report --suite full --model "$run/best" --teacher "$TEACHER" --skip speed \
      --systems teacher student asymmetric --save-runs --no-progress --out "$run/report" > "$run.report.log" 2>&1
  fi
  mkdir -p "$OUT/$arm"
  cp "$run/report/results.json" "$run/report/results.md" "$run/report/quality_vs_speed.png" "$run/report.json" "$OUT/$arm/"
  cp "$run/validation.png" "$OUT/$arm/" 2>/dev/null || true
done

# Paired bootstrap over queries: % of the teacher's nDCG@10 for each arm and mode, against the embedding arm.
bash experiments/bootstrap_arms.sh "$OUT" embedding \
  $(for arm in embedding listwise-query listwise-both margin-query; do echo "$arm=$WORK/arms/$arm/report"; done)
