#!/bin/sh
# The default ensemble the repository ships (models/raccoon/): six tiny-width GoogLeNets (configs/googlenet-tiny.cfg)
# trained from scratch, R-CNN style, on the raccoon set's 160 training photos (data/raccoon, ImageSets/Main/
# train.txt). As the paper's six members, they "only differ in sampling methodologies and the random order in which
# they see input images": each has its own seed (initial weights, region order, flips, dropout) and its own share of
# positive regions per batch. No validation split is used: the recipe is fixed beforehand (8 epochs, the paper's
# schedule and Polyak averaging at the rates of results/training.md), nothing is selected on held-out data, and the
# 40 test photos are only touched by bench/detect.sh.
# Usage: bench/train_ensemble.sh [epochs]   (about 4 minutes a member on 2 cores)
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-8}"
BIN=${BIN:-build/inception}
M=models/raccoon
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p $M out/ensemble
# member  seed  positive fraction
for row in "1 1 0.25" "2 2 0.25" "3 3 0.30" "4 4 0.20" "5 5 0.30" "6 6 0.20"; do
    set -- $row
    k=$1 seed=$2 pos=$3
    out=out/ensemble/member-$k
    rm -rf "$out"
    props=""
    [ -f out/ensemble/proposals-train.json ] && props="--proposals out/ensemble/proposals-train.json"
    start=$(date +%s)
    $BIN train --config configs/googlenet-tiny.cfg --classes 2 --epochs "$epochs" --seed "$seed" --out "$out" \
        --data data/raccoon/ImageSets/Main/train.txt --pos-fraction "$pos" --lr 0.01 --log-every 10 --quiet $props
    end=$(date +%s)
    [ -f out/ensemble/proposals-train.json ] || cp "$out/proposals-train.json" out/ensemble/proposals-train.json
    cp "$out/model.safetensors" $M/member-$k.safetensors
    mkdir -p $M/logs
    cp "$out/log.csv" $M/logs/member-$k.csv
    cp "$out/curves.png" $M/logs/member-$k.png
    echo "member $k: seed $seed, positives $pos, $epochs epochs, $((end - start)) s" | tee -a $M/logs/train.txt
done
