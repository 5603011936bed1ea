#!/bin/sh
# Parity of the full-size GoogLeNet (configs/googlenet.cfg, 224x224, 1000 classes) with PyTorch, layer by layer:
# the integration version of tests/test_net_parity.c (too large for CI's fixtures). tools/reference.py builds the
# network in PyTorch with a fixed seed, exports it to ONNX (auxiliary heads included, and the bvlc_googlenet
# layout without them) and saves every layer's output for a batch of 2; we import both ONNX files and compare
# each layer of `inception forward --layer`. Writes results/parity.md.
# Usage: tools/parity_full.sh [BATCH]
set -eu
cd "$(dirname "$0")/.."
BATCH=${1:-2}
PY=/usr/bin/python3
W=$(mktemp -d /tmp/inception_parity.XXXXXX)
trap 'rm -rf "$W"' EXIT
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception >/dev/null

$PY tools/reference.py fixtures configs/googlenet.cfg "$W" --batch "$BATCH" --bvlc 2>/dev/null
build/inception import "$W/model.onnx" --config configs/googlenet.cfg -o "$W/w.safetensors"
build/inception import "$W/model-bvlc.onnx" --config configs/googlenet.cfg -o "$W/wb.safetensors"
LAYERS="conv1 pool1 norm1 conv2/reduce conv2 norm2 pool2 inception_3a inception_3b pool3 inception_4a loss1
inception_4b inception_4c inception_4d loss2 inception_4e pool4 inception_5a inception_5b pool5 drop5 classifier prob"
for l in $LAYERS; do
    f=$(echo "$l" | tr / .)
    build/inception forward --config configs/googlenet.cfg --weights "$W/w.safetensors" --input "$W/input.npy" \
        --output "$W/ours.$f.npy" --layer "$l" --quiet
done
build/inception forward --config configs/googlenet.cfg --weights "$W/wb.safetensors" --input "$W/input.npy" \
    --output "$W/ours.bvlc.npy" --quiet

mkdir -p results
$PY - "$W" "$BATCH" $LAYERS > results/parity.md <<'PYEOF'
import sys
import numpy as np
w, batch, layers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
tol = 1e-5
rows, ok = [], True
for l in layers + ['classifier (bvlc layout)']:
    f = l.replace('/', '.')
    ref = np.load('%s/%s.npy' % (w, 'classifier' if 'bvlc' in l else f))
    ours = np.load('%s/ours.%s.npy' % (w, 'bvlc' if 'bvlc' in l else f))
    assert ours.shape == ref.shape, (l, ours.shape, ref.shape)
    d = float(np.abs(ours - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    if l == 'prob':  # softmax moves a probability by at most 2 x the largest logit error: scale by the logits'
        scale = 2 * max(1.0, float(np.abs(np.load('%s/classifier.npy' % w)).max()))
    good = d <= tol * scale
    ok &= good
    rows.append('| %s | %s | %.3g | %.3g | %.2g | %s |' % (l, 'x'.join(map(str, ref.shape)), d, scale, d / scale,
                                                          'ok' if good else 'FAIL'))
print('# Parity with PyTorch: full-size GoogLeNet, every layer\n')
print('Command: `tools/parity_full.sh %d`. PyTorch %s (Debian), seed 2014, random He-normal weights, input N(0, 50^2) '
      'of shape (%d, 3, 224, 224). Our forward runs on the weights imported from the PyTorch ONNX export (auxiliary '
      'heads included); the last row imports the same network rewritten into the bvlc_googlenet ONNX layout. '
      'Tolerance, as in tests/test_net_parity.c: max |ours - PyTorch| <= %g x max(1, max |PyTorch|) per layer; for '
      'the probabilities the scale is 2 x max |logit| (a softmax output moves by at most twice the largest logit '
      'error, and these random-weight logits reach several hundred).\n'
      % (batch, __import__('torch').__version__, batch, tol))
print('| layer | shape | max abs difference | scale | relative | |')
print('|---|---|---:|---:|---:|---|')
print('\n'.join(rows))
print('\nAll layers within tolerance.' if ok else '\nSOME LAYERS OUT OF TOLERANCE.')
PYEOF
cat results/parity.md
grep -q "All layers within tolerance" results/parity.md
