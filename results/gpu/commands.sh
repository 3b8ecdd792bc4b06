#!/usr/bin/env bash
# A record of what ran on the H200 (December 4, 2026), not a second way to run it: two remote calls from the
# repository root, the bundle (python experiments/gpu/gpu_bundle.py pack ... --out runs/gpu-bundle) and three wheels the
# machine lacks (datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19, in .whl/) carried.

# Call 1 (531 s): vocabulary, targets, crops, contextual table, calibration, schedule 1, the speed step.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site || exit 3
BUNDLE=runs/gpu-bundle OUT=$OUT WORK=/tmp/w CONTEXTUAL=1 CONTEXT_TEXTS=92000 CROPS=3 \
    CONFIG=experiments/configs/minilm-full-contextual.yaml \
    VARIANTS="ctx:model.pair_rank=128,model.phi_layers=2,model.context_layers=1,model.context_intermediate_size=512" \
    COMMON="optim.batch_size=512 optim.lr=0.003" TRAIN_SECONDS=420 CALIBRATION_STEPS=200 BUDGET=550 SPEED=1 \
    bash experiments/gpu/gpu_session.sh

# Call 2 (227 s, the machine still warm, /tmp/w kept): schedule 2 from schedule 1's student.
export PYTHONPATH=/tmp/site:$PWD BERTAPPROX_WORK=/tmp/w HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
W=/tmp/w N=all-MiniLM-L6-v2
OMP_NUM_THREADS=8 timeout 250 python3 train.py --config experiments/configs/minilm-full-contextual.yaml \
    --set "data.targets=$W/targets-$N,$W/targets-more-$N,$W/targets-rest-$N,$W/targets-crops-$N" \
    --set model.pair_rank=128 --set model.phi_layers=2 --set model.context_layers=1 \
    --set model.context_intermediate_size=512 --set optim.batch_size=512 --set optim.lr=0.001 \
    --set optim.epochs=3.4 --set model.init_from=$W/run-ctx/best --set eval.every_steps=600 \
    --set run.checkpoint_every=100000 --set data.tokenize_workers=8 --set run.output_dir=$W/run-ctx2
