#!/bin/sh
# The default ensemble the repository ships (models/raccoon/): six GoogLeNets of the CPU family (CONFIG, default
# configs/googlenet-quarter-bn.cfg: 1/4 width, 96x96, batch normalisation) trained from scratch, R-CNN style, on
# the raccoon set's 160 training photos (data/raccoon, ImageSets/Main/train.txt) with the scratch recipe
# (`inception train --recipe scratch`: warm-up and cosine, Polyak averaging, bounding-box regression fitted at
# the end). As the paper's six members, they "only differ in sampling methodologies and the random order in
# which they see input images": each has its own seed (initial weights, region order, flips, dropout) and its own
# sampling (share of positives, share of hard background, jitter). The recipe and the epochs were chosen on the
# training photos split 128/32 (bench/train_ablation.sh, results/training.md); the 40 test photos are only
# touched by bench/detect.sh and scripts/demo.sh.
# Usage: bench/train_ensemble.sh [epochs]      (CONFIG=... another member config; MEMBERS="1 2" some members only)
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-16}"
CONFIG=${CONFIG:-configs/googlenet-quarter-bn.cfg}
BIN=${BIN:-build/inception}
M=models/raccoon
O=out/ensemble
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p $M/logs $O
[ -n "${MEMBERS:-}" ] || : > $M/logs/train.txt
# The training photos' proposals, computed once (the detector's Selective Search setting).
P=$O/proposals-train.json
[ -f $P ] || $BIN proposals --list data/raccoon/ImageSets/Main/train.txt --root data/raccoon/JPEGImages --ext .jpg \
    -o $P --quiet
# member  seed  positives  hard background  jitter
for row in "1 1 0.25 0 0" "2 2 0.25 0.5 0" "3 3 0.30 0 0.1" "4 4 0.20 0 0.1" "5 5 0.30 0 0" "6 6 0.20 0 0.1"; do
    set -- $row
    k=$1 seed=$2 pos=$3 hard=$4 jit=$5
    case " ${MEMBERS:-1 2 3 4 5 6} " in *" $k "*) ;; *) continue ;; esac
    out=$O/member-$k
    rm -rf "$out"
    start=$(date +%s)
    $BIN train --config "$CONFIG" --classes 2 --epochs "$epochs" --seed "$seed" --out "$out" \
        --data data/raccoon/ImageSets/Main/train.txt --proposals $P --recipe scratch --pos-fraction "$pos" \
        --hard-fraction "$hard" --jitter "$jit" --log-every 10 --quiet
    end=$(date +%s)
    cp "$out/model.safetensors" $M/member-$k.safetensors
    cp "$out/log.csv" $M/logs/member-$k.csv
    cp "$out/curves.png" $M/logs/member-$k.png
    echo "member $k: $CONFIG, seed $seed, positives $pos, hard background $hard, jitter $jit, $epochs epochs," \
        "$((end - start)) s" | tee -a $M/logs/train.txt
done
