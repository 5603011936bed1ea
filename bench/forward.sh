#!/bin/sh
# Forward throughput and peak memory of full GoogLeNet (224x224, 2 threads) at batch 1 and 16: this project
# against ONNX Runtime (npm onnxruntime-node), PyTorch (Debian python3-torch) and OpenCV DNN (Debian
# python3-opencv), in one run, on the same network: tools/reference.py builds it in PyTorch (fixed seed, random
# weights), exports the ONNX model that ONNX Runtime and OpenCV read, and `inception import` turns that same file
# into our weights. Engines run interleaved, ROUNDS times each; every engine runs in its own process (its peak
# memory is its own). On CPUs with AVX512-BF16 ours also runs with --precision bf16. Writes results/forward.md.
# Usage: bench/forward.sh   (ROUNDS=5 REPS16=8 REPS1=60 THREADS=2 to change the defaults)
# The project's virtual machines change speed by up to a third for seconds at a time (the host's other work):
# five rounds give every engine its chances at an undisturbed one.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
REPS16=${REPS16:-8}
REPS1=${REPS1:-60}
THREADS=${THREADS:-2}
PY=/usr/bin/python3 # Debian's interpreter, with torch, onnx, numpy and cv2
BF16=0
grep -q -w avx512_bf16 /proc/cpuinfo && BF16=1
W=$(mktemp -d /tmp/inception_bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception bench_forward >/dev/null
if [ ! -d bench/node_modules/onnxruntime-node ]; then
    (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund >/dev/null)
fi

echo "bench: exporting GoogLeNet to ONNX and importing it" >&2
$PY tools/reference.py export configs/googlenet.cfg "$W/googlenet.onnx" --no-aux --seed 2014 2>/dev/null
build/inception import "$W/googlenet.onnx" --config configs/googlenet.cfg -o "$W/googlenet.safetensors" 2>/dev/null
$PY -c "
import numpy as np
r = np.random.RandomState(0)
for b in (1, 16):
    (r.randn(b, 3, 224, 224) * 50).astype(np.float32).tofile('$W/x%d.f32' % b)
"

: > "$W/results.jsonl"
for round in $(seq "$ROUNDS"); do
    for batch in 16 1; do
        reps=$REPS16
        [ "$batch" = 1 ] && reps=$REPS1
        echo "bench: round $round, batch $batch" >&2
        # the 1-minute load average as the round starts: how much else was running
        echo "{\"marker\": true, \"round\": $round, \"batch\": $batch, \"load\": $(cut -d' ' -f1 /proc/loadavg)}" >> "$W/results.jsonl"
        x="$W/x$batch.f32"
        OPENBLAS_NUM_THREADS=1 build/bench_forward configs/googlenet.cfg --weights "$W/googlenet.safetensors" \
            --batch "$batch" --reps "$reps" --threads "$THREADS" --input "$x" --output "$W/c$batch.f32" >> "$W/results.jsonl"
        if [ "$BF16" = 1 ]; then # the same network in bf16 products (CPUs with AVX512-BF16)
            OPENBLAS_NUM_THREADS=1 build/bench_forward configs/googlenet.cfg --weights "$W/googlenet.safetensors" \
                --batch "$batch" --reps "$reps" --threads "$THREADS" --input "$x" --output "$W/cb$batch.f32" \
                --precision bf16 >> "$W/results.jsonl"
        fi
        node bench/forward_ort.js "$W/googlenet.onnx" "$x" "$batch" "$reps" "$THREADS" "$W/ort$batch.f32" >> "$W/results.jsonl"
        $PY bench/forward_py.py torch configs/googlenet.cfg 2014 "$x" "$batch" "$reps" "$THREADS" "$W/torch$batch.f32" \
            >> "$W/results.jsonl" 2>/dev/null
        $PY bench/forward_py.py opencv "$W/googlenet.onnx" "$x" "$batch" "$reps" "$THREADS" "$W/cv$batch.f32" \
            >> "$W/results.jsonl" 2>/dev/null
    done
done
mkdir -p results
$PY bench/forward_report.py "$W" "bench/forward.sh (ROUNDS=$ROUNDS REPS16=$REPS16 REPS1=$REPS1 THREADS=$THREADS)" > results/forward.md.tmp
# keep the section bench/forward_bf16.sh wrote and earlier machines' runs, if any
if [ -f results/forward.md ]; then
    $PY -c "
import re, sys
parts = re.split(r'(?m)^(?=## )', open('results/forward.md').read())
sys.stdout.write(''.join(p for p in parts if p.startswith(('## bf16: accuracy', '## Earlier run'))))" > "$W/bf16.md"
    if [ -s "$W/bf16.md" ]; then $PY bench/results_section.py "$W/bf16.md" results/forward.md.tmp; fi
fi
mv results/forward.md.tmp results/forward.md
echo "bench: wrote results/forward.md" >&2
