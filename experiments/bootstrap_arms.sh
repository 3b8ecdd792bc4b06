#!/usr/bin/env bash
# Paired bootstrap over queries for an experiment's arms: % of the teacher's nDCG@10 per arm, and each arm's
# difference from the baseline, on SciFact and DL19, asymmetric and student-only. Each arm's report folder is the
# --out of `benchmarks.report --save-runs`; the baseline's teacher run is the reference.
#   bash experiments/bootstrap_arms.sh OUT BASELINE ARM=REPORT_DIR [ARM=REPORT_DIR ...]   → OUT/bootstrap/*/
set -euo pipefail
OUT=$1 BASELINE=$2; shift 2
SHARED=${BERTAPPROX_SHARED:-../shared}
declare -A REPORTS=()
for pair in "$@"; do REPORTS[${pair%%=*}]=${pair#*=}; done
for dataset in scifact dl19; do
  qrels=$SHARED/data/beir/scifact/qrels/test.tsv
  [ "$dataset" = dl19 ] && qrels=$SHARED/data/msmarco-passage-dl19/qrels/test.tsv
  for mode in asymmetric student; do
    runs=()
    for pair in "$@"; do
      arm=${pair%%=*} file=${REPORTS[${pair%%=*}]}/$dataset/runs/$dataset.$mode.trec
      [ -f "$file" ] && runs+=("$arm=$file")
    done
    [ ${#runs[@]} -gt 0 ] || continue
    python -m benchmarks.bootstrap --qrels "$qrels" --title "$dataset, $mode" \
      --teacher "${REPORTS[$BASELINE]}/$dataset/runs/$dataset.teacher.trec" \
      --runs "${runs[@]}" --baseline "$BASELINE" --out "$OUT/bootstrap/$dataset-$mode"
  done
done
