#!/bin/sh
# Training throughput and peak memory of full GoogLeNet with its two auxiliary heads (224x224, batch 16, 2 threads):
# this project against PyTorch (Debian python3-torch), in one run, on the same network from the same weights:
# tools/reference.py builds it in PyTorch (fixed seed, random weights), exports it to ONNX with the heads, and
# `inception import` turns that file into our weights. One step: forward (dropout on, heads computed), the loss
# main + 0.3 x (loss1 + loss2), backward, SGD with momentum 0.9 and weight decay. Engines run interleaved, ROUNDS
# times each, each in its own process (its peak memory is its own). Writes the section "## Training throughput"
# of results/training.md (the file's other sections are kept).
# Usage: bench/train.sh   (ROUNDS=3 REPS=5 BATCH=16 THREADS=2 to change the defaults)
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-5}
BATCH=${BATCH:-16}
THREADS=${THREADS:-2}
PY=/usr/bin/python3 # Debian's interpreter, with torch and numpy
W=$(mktemp -d /tmp/inception_train_bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception bench_train >/dev/null

echo "bench: exporting GoogLeNet with its auxiliary heads to ONNX and importing it" >&2
$PY tools/reference.py export configs/googlenet.cfg "$W/googlenet.onnx" --seed 2014 2>/dev/null
build/inception import "$W/googlenet.onnx" --config configs/googlenet.cfg -o "$W/googlenet.safetensors" --quiet
$PY -c "
import numpy as np
r = np.random.RandomState(0)
r.randn($BATCH, 3, 224, 224).astype(np.float32).tofile('$W/x.f32')
r.randint(0, 1000, $BATCH).astype(np.int32).tofile('$W/labels.i32')
"

: > "$W/results.jsonl"
for round in $(seq "$ROUNDS"); do
    echo "bench: round $round" >&2
    # the 1-minute load average as the round starts: how much else was running
    echo "{\"marker\": true, \"round\": $round, \"load\": $(cut -d' ' -f1 /proc/loadavg)}" >> "$W/results.jsonl"
    OPENBLAS_NUM_THREADS=1 build/bench_train configs/googlenet.cfg --weights "$W/googlenet.safetensors" \
        --batch "$BATCH" --reps "$REPS" --threads "$THREADS" --input "$W/x.f32" --labels "$W/labels.i32" \
        >> "$W/results.jsonl"
    $PY bench/train_py.py configs/googlenet.cfg 2014 "$W/x.f32" "$W/labels.i32" "$BATCH" "$REPS" "$THREADS" \
        >> "$W/results.jsonl" 2>/dev/null
done
mkdir -p results
$PY bench/train_report.py "$W" "bench/train.sh (ROUNDS=$ROUNDS REPS=$REPS BATCH=$BATCH THREADS=$THREADS)" \
    results/training.md
echo "bench: wrote the training throughput section of results/training.md" >&2
