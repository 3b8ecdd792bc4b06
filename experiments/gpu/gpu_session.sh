#!/usr/bin/env bash
# One GPU session, end to end, inside a fixed time budget (a GPU machine rented for a fixed time):
#   1. the vocabulary and the teacher targets of the whole demo corpus, on the GPU (all at once);
#      with CONTEXTUAL=1, the vocabulary's contextual table too (bertapprox vocab contextualize --keep-isolated
#      over the training texts of all three sets, or a seeded sample of CONTEXT_TEXTS of them), in
#      $BERTAPPROX_WORK/vocab-contextual-full-NAME, the folder experiments/configs/minilm-full-contextual.yaml reads;
#   2. optionally (SPEED_SETUPS), the training speed of experiments/configs/minilm-full.yaml per device and precision;
#   3. recipes (VARIANTS) trained side by side on the GPU: a short calibration run of each, side by side,
#      measures the steps/s they get while sharing the GPU, then each trains for as many epochs as fit
#      TRAIN_SECONDS (a full warm-up + cosine schedule, not a run cut short);
#   4. the encoders' speed on the GPU (teacher vs student), if time is left (SPEED=1);
#   5. results packed into OUT: each student's trainable weights (bertapprox model strip; restore with
#      bertapprox model restore from the same vocabulary) and one archive of reports, logs and plots.
#
#   DATA=../shared/data TEACHER=/path/to/all-MiniLM-L6-v2 OUT=results/gpu bash experiments/gpu/gpu_session.sh
#   BUNDLE=runs/gpu-bundle OUT=$OUT bash experiments/gpu/gpu_session.sh   # on a machine without ../shared (see below)
#
# DATA: the shared data layout (train/*.jsonl, msmarco-passage-dl19/, beir/scifact/); TEACHER: a local
# teacher folder; or BUNDLE: a folder written here by `python experiments/gpu/gpu_bundle.py pack --teacher TEACHER
# --data ../shared/data --out runs/gpu-bundle` (53 MiB: carry it; it sets DATA and TEACHER there);
# OUT: results; WORK: scratch (default /tmp/bertapprox-gpu).
# CROPS: N > 0 also builds crops 0..N-1 of every long text (targets build --crops N, the texts of make
# targets-crops targets-crops-rest targets-crops-more for N = 3) and trains every variant on them too.
# Every variant trains on the sets built here (data.targets), unless its own overrides say otherwise.
# VARIANTS: "name:key=value,key=value name2:..." (--set overrides of CONFIG, default experiments/configs/minilm-full.yaml);
# COMMON: overrides for every variant; TRAIN_SECONDS: the side-by-side training (default 300; less when the
# steps before it leave less of BUDGET: the speed step, the final evaluations and the packing keep their time);
# CALIBRATION_STEPS: steps of the calibration run (default 300); SPEED_SETUPS: setups of step 2 (default
# none); SPEED: 1 to run step 4; BUDGET: the whole script, step 4 is skipped past it (default 540).
# Step 5 runs whatever happened before it (trap), so a failed step still returns what was done.
set -uo pipefail
: "${OUT:?set OUT}"
WORK=${WORK:-/tmp/bertapprox-gpu}
PY=${PYTHON:-python3}
CROPS=${CROPS:-0}
CONFIG=${CONFIG:-experiments/configs/minilm-full.yaml}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
CALIBRATION_STEPS=${CALIBRATION_STEPS:-300}
BUDGET=${BUDGET:-540}
SPEED_SECONDS=70  # what step 4 needs: it runs only if this much of BUDGET is left
OVERRUN_SECONDS=30  # how long a real run may go past TRAIN_SECONDS before its hard stop
PER_SOURCE=${PER_SOURCE:-15000}  # texts of each source in the demo set (make targets)
MORE_PER_SOURCE=${MORE_PER_SOURCE:-25000}  # the next ones (make targets-more)
read -r -a SPEED_SETUPS <<<"${SPEED_SETUPS:-}"
read -r -a VARIANTS <<<"${VARIANTS:-base: deep:model.phi_layers=3 pairwise:loss.relational=1,loss.relational_kind=pairwise}"
read -r -a COMMON <<<"${COMMON:-optim.batch_size=1024 optim.lr=0.004}"
mkdir -p "$OUT" "$WORK"
export BERTAPPROX_WORK=$WORK HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${BUNDLE:-}" ]; then
    unpacked=$($PY experiments/gpu/gpu_bundle.py unpack --bundle "$BUNDLE" --out "$WORK/bundle") || exit 1
    eval "$unpacked"  # DATA=... TEACHER=...
fi
: "${DATA:?set DATA (or BUNDLE)}" "${TEACHER:?set TEACHER (or BUNDLE)}"
NAME=$(basename "$TEACHER")
T0=$(date +%s)
log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" | tee -a "$OUT/timeline.txt"; }
mapfile -t CORPUS < <($PY experiments/gpu/gpu_bundle.py corpus --data "$DATA")  # the files of make vocab / make targets
names=()
for spec in "${VARIANTS[@]}"; do names+=("${spec%%:*}"); done

pack() {
    log "packing"
    mkdir -p "$WORK/pack"
    for variant in "${names[@]}"; do
        best="$WORK/run-$variant/best"
        [ -f "$best/model.safetensors" ] && $PY -m bertapprox_hf.cli model strip "$best" --out "$OUT/$variant" \
            >/dev/null
    done
    cp "$OUT/timeline.txt" "$WORK/" 2>/dev/null
    (cd "$WORK" && tar czf "$OUT/session.tar.gz" --ignore-failed-read ./*.log ./timeline.txt \
        ./training-speed/training_speed.json ./speed/speed.json ./speed/speed.md "vocab-$NAME/vocabulary.json" \
        ./*/manifest.json run-*/report.json run-*/metrics.jsonl run-*/*.png run-*/best/training.json \
        run-*/best/config.json run-*/train.log calibrate-*/metrics.jsonl calibrate-*/train.log \
        2>/dev/null)
    log "done"
}
trap pack EXIT

log "start on $(hostname): $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
cli() { $PY -m bertapprox_hf.cli "$@"; }
cli vocab build --teacher "$TEACHER" --out "$WORK/vocab-$NAME" --max-per-source 30000 --corpus "${CORPUS[@]}" \
    >"$WORK/vocab.log" 2>&1 &
pids=($!)
# The demo's set, the next MORE_PER_SOURCE of each source, and the rest (the layout of make targets targets-more targets-rest).
build_targets() {  # OUT_NAME, then options
    local name=$1
    shift
    cli targets build --teacher "$TEACHER" --out "$WORK/$name-$NAME" --batch-size 512 --corpus "${CORPUS[@]}" "$@" \
        >"$WORK/$name.log" 2>&1
}
build_targets targets --max-per-source "$PER_SOURCE" &
pids+=($!)
build_targets targets-more --skip-per-source "$PER_SOURCE" --max-per-source "$MORE_PER_SOURCE" &
pids+=($!)
build_targets targets-rest --skip-per-source $((PER_SOURCE + MORE_PER_SOURCE)) &
pids+=($!)
SETS=(targets targets-more targets-rest)  # the target folders every variant trains on
if [ "$CROPS" -gt 0 ]; then
    build_targets targets-crops --crops "$CROPS" &
    pids+=($!)
    SETS+=(targets-crops)
fi
for pid in "${pids[@]}"; do wait "$pid" || { log "vocabulary/targets failed"; tail -n 5 "$WORK"/*.log; exit 1; }; done
records() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['num_records'])" "$WORK/$1-$NAME/manifest.json"; }
counts=()
for set in "${SETS[@]}"; do counts+=("$set $(records "$set")"); done
log "vocabulary and targets done: $(IFS=,; echo "${counts[*]}") texts"
SET_PATHS=$(printf "$WORK/%s-$NAME," "${SETS[@]}")
SET_PATHS=${SET_PATHS%,}
if [ "${CONTEXTUAL:-0}" = 1 ]; then
    cli vocab contextualize --vocab "$WORK/vocab-$NAME" --targets "$WORK"/targets{,-more,-rest}-"$NAME" \
        --val-fraction 0.03 --keep-isolated --batch-size 256 --out "$WORK/vocab-contextual-full-$NAME" \
        ${CONTEXT_TEXTS:+--max-texts "$CONTEXT_TEXTS"} \
        >"$WORK/contextual.log" 2>&1 || { log "contextual table failed"; tail -n 5 "$WORK/contextual.log"; exit 1; }
    log "contextual table: $(tail -n 12 "$WORK/contextual.log" | tr -d '\n ')"
fi

if [ ${#SPEED_SETUPS[@]} -gt 0 ]; then
    $PY -m benchmarks.training_speed --config "$CONFIG" --setups "${SPEED_SETUPS[@]}" \
        --steps 150 --set data.max_train=60000 --out "$WORK/training-speed" \
        >"$WORK/training-speed.log" 2>&1 || { log "training speed failed"; tail -20 "$WORK/training-speed.log"; }
    log "training speed: $(tail -8 "$WORK/training-speed.log" | tr '\n' ' ')"
fi

# Every variant's --set options: COMMON, then its own; then the caller's ($@ of train_variants).
train_variants() {  # PREFIX TIMEOUT, then overrides for all
    local prefix=$1 limit=$2 spec name own item
    shift 2
    pids=()
    for spec in "${VARIANTS[@]}"; do
        name=${spec%%:*}
        own=${spec#*:}
        overrides=(--set "run.output_dir=$WORK/$prefix-$name" --set "data.tokenize_workers=4")
        for item in "data.targets=$SET_PATHS" "${COMMON[@]}" ${own//,/ } "$@"; do overrides+=(--set "$item"); done
        mkdir -p "$WORK/$prefix-$name"
        OMP_NUM_THREADS=4 timeout "$limit" $PY train.py --config "$CONFIG" "${overrides[@]}" \
            >"$WORK/$prefix-$name/train.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || log "a $prefix run ended with status $?"; done
}

# Calibration: the variants side by side for CALIBRATION_STEPS steps; their slowest steps/s (after the first
# logged interval) and start-up time set the epochs of the real runs.
every=$((CALIBRATION_STEPS / 3))
train_variants calibrate 150 "optim.max_steps=$CALIBRATION_STEPS" "run.log_every=$every" \
    "eval.every_steps=100000" "run.checkpoint_every=100000" "run.tensorboard=false"
# The real runs take what BUDGET leaves after their overrun, 20 s for the summaries and the packing, and the
# speed step when it runs.
reserve=$((OVERRUN_SECONDS + 20))
[ "${SPEED:-0}" = 1 ] && reserve=$((reserve + SPEED_SECONDS))
left=$((BUDGET - ($(date +%s) - T0) - reserve))
if [ "$left" -lt "$TRAIN_SECONDS" ]; then
    [ "$left" -ge 60 ] || { log "no time left to train within BUDGET=$BUDGET"; exit 1; }
    log "training shortened to $left s of the $TRAIN_SECONDS asked, to end within BUDGET=$BUDGET"
    TRAIN_SECONDS=$left
fi
read -r EPOCHS EVERY RATE < <($PY - "$SET_PATHS" "$WORK" "$TRAIN_SECONDS" "$CONFIG" "${COMMON[*]}" "${names[@]}" <<'PYEOF'
import json, sys
from bertapprox_hf.training.config import load_config
sets, work, seconds, config, common, names = *sys.argv[1:3], float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:]
batch = load_config(config, common.split()).optim.batch_size
rates = []
for variant in names:
    try:
        rows = [json.loads(line) for line in open(f"{work}/calibrate-{variant}/metrics.jsonl")]
    except (OSError, ValueError):
        continue
    train = [r for r in rows if r.get("event") == "train"]
    if len(train) >= 2:
        rates.append((train[-1]["step"] - train[0]["step"]) / (train[-1]["seconds"] - train[0]["seconds"]))
rate = min(rates) if rates else 20.0
train_records = sum(json.load(open(f"{folder}/manifest.json"))["num_records"] for folder in sets.split(",")) * 0.97
steps = rate * (seconds - 45)  # start-up, evaluations and the final save
epochs = max(0.2, min(100.0, steps * batch / train_records))
print(f"{epochs:.2f}", max(100, int(steps / 6)), f"{rate:.1f}")
PYEOF
)
log "calibration: ${RATE:-?} steps/s each with ${#VARIANTS[@]} side by side"
log "training ${names[*]} side by side, $EPOCHS epochs each, evaluated every $EVERY steps"
train_variants run $((TRAIN_SECONDS + OVERRUN_SECONDS)) "optim.epochs=$EPOCHS" "eval.every_steps=$EVERY" "run.checkpoint_every=$EVERY"

summary() {  # a run's best evaluation: report.json, or best/training.json when the hard stop came first
    $PY - "$1" <<'PYEOF'
import json, os, sys
run = sys.argv[1]
if os.path.isfile(f"{run}/report.json"):
    report = json.load(open(f"{run}/report.json"))
    head, best = f"{report['steps']} steps in {report['train_seconds']} s, best at {report['best_step']}", report["best"]
else:
    best = json.load(open(f"{run}/best/training.json"))
    head, best = f"stopped; best at step {best['step']}", best["metrics"]
print(head, {k: round(v, 4) for k, v in best.items() if k.startswith(("cosine_", "spearman_"))})
PYEOF
}
for variant in "${names[@]}"; do log "$variant: $(summary "$WORK/run-$variant" 2>&1 | tail -1)"; done

if [ "${SPEED:-0}" = 1 ] && [ $(($(date +%s) - T0)) -lt $((BUDGET - SPEED_SECONDS)) ]; then
    $PY -m benchmarks.speed --model "$WORK/run-${names[0]}/best" --teacher "$TEACHER" \
        --systems teacher,student,student-bfloat16 --queries "$DATA/train/msmarco_queries.jsonl" \
        --corpus "$DATA/msmarco-passage-dl19/corpus.jsonl" --threads all --no-memory --repeats 2 --no-plot \
        --out "$WORK/speed" >"$WORK/speed.log" 2>&1 || log "speed failed"
    log "speed: $(grep -A10 '^## cuda' "$WORK/speed/speed.md" 2>/dev/null | tr '\n' ' ')"
fi
