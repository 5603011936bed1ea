#!/bin/sh
# Learning for real: the tiny-width GoogLeNet (configs/googlenet-tiny.cfg: 1/16 of the width, 96x96 input)
# trained from scratch, R-CNN style, to tell raccoon regions from background on the raccoon set's upstream
# split (data/raccoon: 160 training photos, 40 held out), on the CPU. Writes results/training-raccoon.png and the
# section "## Learning for real" of results/training.md (its other sections are kept).
# Usage: bench/train_raccoon.sh [epochs]
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-8}"
out=out/train-raccoon
BIN=build/inception
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
rm -rf "$out"
start=$(date +%s)
$BIN train --config configs/googlenet-tiny.cfg --classes 2 --epochs "$epochs" --seed 1 --out "$out" \
    --data data/raccoon/ImageSets/Main/train.txt --val data/raccoon/ImageSets/Main/test.txt \
    --recipe paper --lr 0.01 --log-every 10
end=$(date +%s)
cp "$out/curves.png" results/training-raccoon.png
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
first=$(awk -F, 'NR == 2 { print $4 }' "$out/log.csv")
{
    echo "## Learning for real: raccoon regions (tiny network, CPU)"
    echo
    echo "Command: \`bench/train_raccoon.sh $epochs\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), $(nproc) cores:"
    echo "$cpu; $((end - start)) s wall in all, proposals and validation included)."
    echo
    echo "\`inception train --config configs/googlenet-tiny.cfg --classes 2 --epochs $epochs --seed 1 --data"
    echo "data/raccoon/ImageSets/Main/train.txt --val data/raccoon/ImageSets/Main/test.txt --recipe paper --lr 0.01\`: GoogLeNet at"
    echo "1/16 width and 96x96 input, random initialisation, the 160 training photos' Selective Search proposals"
    echo "(the detector's setting) labelled R-CNN style (IoU >= 0.5 with a raccoon: positive; else background),"
    echo "batches of 32 positive and 96 background regions warped with 16 px of context, flips, SGD with momentum"
    echo "0.9, aux heads at 0.3, Polyak averaging; validation at each epoch on the 40 held-out photos with the"
    echo "averaged weights. Region accuracy is measured on a balanced set (all held-out positive regions and as"
    echo "many background ones), so chance is 0.5; mAP is the detector's (all proposals scored, NMS 0.3, VOC"
    echo "protocol at IoU 0.5) on the held-out photos."
    echo
    echo "First logged training loss (mean of the first 10 steps): $first."
    echo
    echo "| epoch | step | lr | training loss (last steps) | held-out region accuracy | held-out mAP |"
    echo "|---:|---:|---:|---:|---:|---:|"
    awk -F, 'NR > 1 && $5 != "" { printf "| %.0f | %d | %s | %.4f | %.3f | %.3f |\n", $1, $2, $3, $4, $5, $7 }' "$out/log.csv"
    echo
    echo "![training curves](training-raccoon.png)"
} > "$out/section.md"
# replace this section of results/training.md, keep the others
touch results/training.md
awk -v f="$out/section.md" '
    /^## / { skip = ($0 ~ /^## Learning for real/) }
    !skip { print }
    END { print ""; while ((getline line < f) > 0) print line }' results/training.md | cat -s > "$out/training.md"
mv "$out/training.md" results/training.md
cat "$out/section.md"
