#!/bin/sh
# R-CNN's class-specific bounding-box regression on the shipped detector (results/bbox.md): for each of the six
# members of models/raccoon, a box regressor is fitted on the raccoon set's 160 training photos as `inception train`
# fits it at the end of a region run (here a one-step run at learning rate 0 without averaging, so that the weights
# stay the shipped ones bit for bit), once per penalty; then the six-member detector (models/raccoon/ensemble.cfg
# with those weight files) runs on the 40 test photos, and eval gives mAP at IoU 0.5 and 0.7 (VOC protocol). The
# shipped ensemble itself, whose files carry no regressor, is the baseline.
# Usage: bench/bbox.sh [lambda ...]   (default 0.1 1 10; about 2 minutes a penalty on 2 cores)
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-build/inception}
O=out/bbox
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p $O
lambdas="${*:-0.1 1 10}"
test_list=data/raccoon/ImageSets/Main/test.txt
props=""
[ -f out/ensemble/proposals-train.json ] && props="--proposals out/ensemble/proposals-train.json"

# detect ENSEMBLE NAME: the test photos, then mAP at IoU 0.5 and 0.7
detect() {
    $BIN detect --list $test_list --root data/raccoon/JPEGImages --ext .jpg --ensemble "$1" -o $O/$2.json --quiet
    for iou in 0.5 0.7; do
        map=$($BIN eval --pred $O/$2.json --gt data/raccoon/Annotations --list $test_list --iou $iou 2>/dev/null |
              sed -n 's/^Mean AP: *//p')
        echo "$2: mAP@$iou $map" | tee -a $O/results.txt
    done
}

: > $O/results.txt
detect models/raccoon/ensemble.cfg shipped
for l in $lambdas; do
    for k in 1 2 3 4 5 6; do
        d=$O/member-$k-lambda-$l
        [ -f $d/model.safetensors ] ||
            $BIN train --config configs/googlenet-tiny.cfg --classes 2 --steps 1 --batch 8 --lr 0 --polyak 0 \
                --seed 1 --init models/raccoon/member-$k.safetensors --data data/raccoon/ImageSets/Main/train.txt \
                --bbox-lambda "$l" --out $d $props 2>&1 |
                sed -n "s/^box regression/member $k, lambda $l: box regression/p" | tee -a $O/results.txt
        [ -n "$props" ] || props="--proposals $d/proposals-train.json" # computed once
    done
    sed -e "s|weights = member-\([0-9]\).safetensors|weights = member-\1-lambda-$l/model.safetensors|" \
        -e "s|= multibox.safetensors|= ../../models/raccoon/multibox.safetensors|" models/raccoon/ensemble.cfg \
        > $O/ensemble-lambda-$l.cfg
    detect $O/ensemble-lambda-$l.cfg "bbox-lambda-$l"
done
