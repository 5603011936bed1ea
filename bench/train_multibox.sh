#!/bin/sh
# The default MultiBox network the repository ships (models/raccoon/multibox.safetensors, its priors.json and
# log): configs/multibox-tiny.cfg (the tiny trunk, a head of K = 100 boxes) trained from scratch with
# `inception train --task multibox` on the raccoon set's 160 training photos, class-agnostic. Priors: k-means of
# the training boxes (seed 1). The learning rate (1e-3) and the epochs were chosen on the training photos split
# 128/32 (ImageSets/Main/train-fit.txt, train-val.txt): rates 3e-5 to 1e-3 all reach recall@0.5 0.97 of the best
# 5 boxes on the 32, 1e-3 the lowest training loss. The test photos are only touched by bench/proposals.sh and
# bench/detect.sh.
# Usage: bench/train_multibox.sh [epochs]   (about 30 s on 2 cores)
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-100}"
BIN=${BIN:-build/inception}
M=models/raccoon
out=out/multibox
rm -rf $out
mkdir -p $M/logs
$BIN train --task multibox --config configs/multibox-tiny.cfg --data data/raccoon/ImageSets/Main/train.txt \
    --epochs "$epochs" --seed 1 --lr 1e-3 --out $out --quiet
cp $out/model.safetensors $M/multibox.safetensors
cp $out/priors.json $M/multibox-priors.json
cp $out/log.csv $M/logs/multibox.csv
cp $out/curves.png $M/logs/multibox.png
echo "multibox: configs/multibox-tiny.cfg, $epochs epochs, lr 1e-3, seed 1" >&2
