#!/bin/bash
# make full-pairs-context in bf16 (teacher passes and training), reordered so each schedule starts as soon as its
# sets exist; a schedule whose run folder holds report.json (finished) is skipped.
cd "$(dirname "$0")/../.." || exit 1  # the repository root
export BERTAPPROX_WORK=${BERTAPPROX_WORK:-$HOME/.cache/bertapprox/work} BERTAPPROX_SHARED=${BERTAPPROX_SHARED:-$(realpath ../shared)} HF_HUB_OFFLINE=1
P="TEACHER_PRECISION=bf16"
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
schedule() {  # schedule CONFIG RUN_FOLDER
	if [ -f "$BERTAPPROX_WORK/$2/report.json" ]; then stamp "$1 finished before"; return 0; fi
	stamp "$1"; python train.py --config "configs/$1.yaml" --resume --set run.mixed_precision=bf16
}
set -o pipefail
stamp start
[ -f $BERTAPPROX_WORK/vocab-contextual-demotexts-all-MiniLM-L6-v2/vocabulary.json ] || { stamp targets-rest; make targets-rest $P || exit 1; }
stamp table; make vocab-contextual-demo-all $P || exit 1
schedule minilm-full-pairs-context run-full-pairs-context-all-MiniLM-L6-v2 || exit 1
stamp targets-more; make targets-more $P || exit 1
schedule minilm-full-pairs-context-second run-full-pairs-context-second-all-MiniLM-L6-v2 || exit 1
stamp targets-crops; make targets-crops targets-crops-rest $P || exit 1
schedule minilm-full-pairs-context-crops run-full-pairs-context-crops-all-MiniLM-L6-v2 || exit 1
stamp targets-crops-more; make targets-crops-more $P || exit 1
schedule minilm-full-pairs-context-crops-more run-full-pairs-context-crops-more-all-MiniLM-L6-v2 || exit 1
stamp done
