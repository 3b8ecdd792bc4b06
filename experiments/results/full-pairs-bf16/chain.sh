#!/bin/bash
# make full-pairs in bf16 (teacher passes and training), reordered so each schedule starts as soon as its sets exist.
cd "$(dirname "$0")/../.." || exit 1  # the repository root
export BERTAPPROX_WORK=${BERTAPPROX_WORK:-$HOME/.cache/bertapprox/work} BERTAPPROX_SHARED=${BERTAPPROX_SHARED:-$(realpath ../shared)} HF_HUB_OFFLINE=1
P="TEACHER_PRECISION=bf16"
T="--set run.mixed_precision=bf16"
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
set -o pipefail
stamp start
[ -f $BERTAPPROX_WORK/vocab-contextual-demotexts-all-MiniLM-L6-v2/vocabulary.json ] || { stamp targets-rest; make targets-rest $P || exit 1; }
stamp table; make vocab-contextual-demo-all $P || exit 1
stamp schedule1; python train.py --config experiments/configs/minilm-full-pairs.yaml --resume $T || exit 1
stamp targets-more; make targets-more $P || exit 1
stamp schedule2; python train.py --config experiments/configs/minilm-full-pairs-second.yaml --resume $T || exit 1
stamp targets-crops; make targets-crops targets-crops-rest $P || exit 1
stamp schedule3; python train.py --config experiments/configs/minilm-full-pairs-crops.yaml --resume $T || exit 1
stamp targets-crops-more; make targets-crops-more $P || exit 1
stamp schedule4; python train.py --config experiments/configs/minilm-full-pairs-crops-more.yaml --resume $T || exit 1
stamp done
