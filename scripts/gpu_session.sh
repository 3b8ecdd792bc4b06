#!/usr/bin/env bash
# One GPU session, end to end, inside a fixed time budget (a lent GPU machine is held for minutes):
#   1. the vocabulary and the teacher targets of the whole demo corpus, on the GPU (all at once);
#   2. the training speed of configs/minilm-full.yaml on the CPU and on the GPU (fp32, bf16);
#   3. three recipes trained side by side on the GPU for TRAIN_SECONDS (base, deeper φ, wider blocks);
#   4. the encoders' speed on the GPU (teacher vs student), if time is left;
#   5. results packed into OUT: each student's trainable weights (scripts/trainable_weights.py split;
#      the entry table is rebuilt from the same vocabulary) and one archive of reports, logs and plots.
#
#   DATA=../shared/data TEACHER=/path/to/all-MiniLM-L6-v2 OUT=results/gpu bash scripts/gpu_session.sh
#
# DATA: the shared data layout (train/*.jsonl, msmarco-passage-dl19/, beir/scifact/); TEACHER: a local
# teacher folder; OUT: results; WORK: scratch (default /tmp/bertapprox-gpu); TRAIN_SECONDS: the side-by-side
# training (default 180); BUDGET: the whole script, step 4 is skipped past it (default 480); SPEED_SETUPS:
# the setups of step 2 (default "cpu:no cuda:no cuda:bf16").
# Step 5 runs whatever happened before it (trap), so a failed step still returns what was done.
set -uo pipefail
: "${DATA:?set DATA}" "${TEACHER:?set TEACHER}" "${OUT:?set OUT}"
WORK=${WORK:-/tmp/bertapprox-gpu}
TRAIN_SECONDS=${TRAIN_SECONDS:-180}
BUDGET=${BUDGET:-480}
SPEED_STEPS=${SPEED_STEPS:-150}
PER_SOURCE=${PER_SOURCE:-15000}  # texts of each source in the demo set (make targets)
read -r -a SPEED_SETUPS <<<"${SPEED_SETUPS:-cpu:no cuda:no cuda:bf16}"
PY=${PYTHON:-python3}
NAME=$(basename "$TEACHER")
mkdir -p "$OUT" "$WORK"
export BERTAPPROX_WORK=$WORK HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" | tee -a "$OUT/timeline.txt"; }
CORPUS=("$DATA"/train/{msmarco_queries,msmarco_v2_passages,reuters21578_sentences,wordnet30_glosses,senteval_sentences}.jsonl
        "$DATA/msmarco-passage-dl19/corpus.jsonl" "$DATA/beir/scifact/corpus.jsonl")
VARIANTS=(base deep wide)
declare -A SETTINGS=(
    [base]=""
    [deep]="model.phi_layers=3"
    [wide]="model.intermediate_size=1280"
)

pack() {
    log "packing"
    mkdir -p "$WORK/pack"
    for variant in "${VARIANTS[@]}"; do
        best="$WORK/run-$variant/best"
        [ -f "$best/model.safetensors" ] && $PY scripts/trainable_weights.py split "$best" "$WORK/pack/$variant" \
            --max-mb 16.5 >/dev/null && mv "$WORK/pack/$variant".part*.safetensors "$OUT/"
    done
    (cd "$WORK" && tar czf "$OUT/session.tar.gz" --ignore-failed-read \
        ./*.log ./training-speed/training_speed.json ./speed/speed.json ./speed/speed.md \
        "vocab-$NAME/vocabulary.json" run-*/report.json run-*/metrics.jsonl run-*/*.png run-*/best/training.json \
        run-*/best/config.json run-*/train.log pack/*.config.json 2>/dev/null)
    cp "$OUT/timeline.txt" "$WORK/" 2>/dev/null
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >>"$OUT/timeline.txt" 2>/dev/null
    log "done"
}
trap pack EXIT

log "start on $(hostname): $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
cli() { $PY -m bertapprox_hf.cli "$@"; }
cli vocab build --teacher "$TEACHER" --out "$WORK/vocab-$NAME" --max-per-source 30000 --corpus "${CORPUS[@]}" \
    >"$WORK/vocab.log" 2>&1 &
pids=($!)
# The demo's set, the next 25,000 of each source, and the rest (the layout of make targets targets-more targets-rest).
build_targets() {  # OUT_NAME, then options
    local name=$1
    shift
    cli targets build --teacher "$TEACHER" --out "$WORK/$name-$NAME" --batch-size 512 --corpus "${CORPUS[@]}" "$@" \
        >"$WORK/$name.log" 2>&1
}
build_targets targets --max-per-source "$PER_SOURCE" &
pids+=($!)
build_targets targets-more --skip-per-source "$PER_SOURCE" --max-per-source 25000 &
pids+=($!)
build_targets targets-rest --skip-per-source $((PER_SOURCE + 25000)) &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || { log "vocabulary/targets failed"; tail -5 "$WORK"/*.log; exit 1; }; done
log "vocabulary and targets done: $(cli targets info "$WORK/targets-rest-$NAME" | grep -o '"num_records": [0-9]*') (rest)"

$PY -m benchmarks.training_speed --config configs/minilm-full.yaml --setups "${SPEED_SETUPS[@]}" \
    --steps "$SPEED_STEPS" --set data.max_train=60000 --out "$WORK/training-speed" \
    >"$WORK/training-speed.log" 2>&1 || { log "training speed failed"; tail -20 "$WORK/training-speed.log"; }
log "training speed: $(tail -8 "$WORK/training-speed.log" | tr '\n' ' ')"

# Epochs that fit TRAIN_SECONDS with the variants sharing the GPU (a third of the fastest measured speed each),
# and evaluations every sixth of the run (the best model so far is kept if the hard stop comes first).
read -r EPOCHS EVERY < <($PY - "$WORK" "$NAME" "$TRAIN_SECONDS" "${#VARIANTS[@]}" <<'EOF'
import json, sys
work, name, seconds, variants = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
try:
    rows = json.load(open(f"{work}/training-speed/training_speed.json"))["setups"]
    texts_per_second = max(r["texts_per_second"] for r in rows)
except (OSError, KeyError, ValueError):
    texts_per_second = 5000.0
records = sum(json.load(open(f"{work}/{folder}-{name}/manifest.json"))["num_records"] for folder in ("targets", "targets-more", "targets-rest"))
epochs = max(0.2, min(60.0, texts_per_second / variants * seconds / (0.97 * records)))
print(f"{epochs:.2f}", max(50, int(epochs * 0.97 * records / 256 / 6)))
EOF
)
log "training ${VARIANTS[*]} side by side, $EPOCHS epochs each, evaluated every $EVERY steps"
pids=()
for variant in "${VARIANTS[@]}"; do
    mkdir -p "$WORK/run-$variant"
    overrides=(--set "run.output_dir=$WORK/run-$variant" --set "optim.epochs=$EPOCHS" --set "data.tokenize_workers=4"
               --set "eval.every_steps=$EVERY" --set "run.checkpoint_every=$EVERY")
    for item in ${SETTINGS[$variant]}; do overrides+=(--set "$item"); done
    timeout $((TRAIN_SECONDS + 60)) $PY train.py --config configs/minilm-full.yaml "${overrides[@]}" \
        >"$WORK/run-$variant/train.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || log "a run ended with status $?"; done
summary() {  # a run's best evaluation: report.json, or best/training.json when the hard stop came first
    $PY - "$1" <<'EOF'
import json, os, sys
run = sys.argv[1]
if os.path.isfile(f"{run}/report.json"):
    report = json.load(open(f"{run}/report.json"))
    head, best = f"{report['steps']} steps in {report['train_seconds']} s, best at {report['best_step']}", report["best"]
else:
    best = json.load(open(f"{run}/best/training.json"))
    head, best = f"stopped; best at step {best['step']}", best["metrics"]
print(head, {k: round(v, 4) for k, v in best.items() if k.startswith(("cosine_", "spearman_"))})
EOF
}
for variant in "${VARIANTS[@]}"; do log "$variant: $(summary "$WORK/run-$variant" 2>&1 | tail -1)"; done

if [ $(($(date +%s) - T0)) -lt $((BUDGET - 70)) ]; then
    $PY -m benchmarks.speed --model "$WORK/run-base/best" --teacher "$TEACHER" --systems teacher,student,student-bfloat16 \
        --queries "$DATA/train/msmarco_queries.jsonl" --corpus "$DATA/msmarco-passage-dl19/corpus.jsonl" \
        --threads all --no-memory --repeats 2 --no-plot --out "$WORK/speed" >"$WORK/speed.log" 2>&1 \
        || log "speed failed"
    log "speed: $(grep -A10 '^## cuda' "$WORK/speed/speed.md" 2>/dev/null | tr '\n' ' ')"
fi
