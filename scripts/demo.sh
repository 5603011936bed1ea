#!/bin/sh
# The main job on bundled data: the shipped six-model ensemble (models/raccoon/) detects raccoons in the raccoon
# set's 40 held-out test photos, writing out/detections.json, the ILSVRC-style submission, overlays and a viewer
# page, then evaluates mAP at IoU 0.5 against the photos' XML (VOC protocol).
# The devkit example of earlier versions (the ILSVRC demo submission against the full DET validation ground truth,
# Mean AP 0.590): scripts/demo.sh --devkit
set -eu
cd "$(dirname "$0")/.."
BIN=build/inception
mkdir -p out
if [ "${1:-}" = "--devkit" ]; then
    D=data/ilsvrc-devkit
    $BIN eval --pred $D/demo.val.pred.det.txt --gt $D/ILSVRC2015_det_validation_ground_truth.mat \
        --map $D/meta_det.mat --blacklist $D/ILSVRC2015_det_validation_blacklist.txt \
        --json out/demo_eval.json --plot out/demo_pr.png
    echo "wrote out/demo_eval.json and out/demo_pr.png" >&2
    exit 0
fi
R=data/raccoon
$BIN detect --list $R/ImageSets/Main/test.txt --root $R/JPEGImages --ext .jpg --ensemble models/raccoon/ensemble.cfg \
    -o out/detections.json --submission out/detections.txt --overlays out/overlays --viewer out/viewer \
    --gt $R/Annotations
$BIN eval --pred out/detections.json --gt $R/Annotations --list $R/ImageSets/Main/test.txt --iou 0.5 \
    --json out/eval.json --plot out/pr.png
echo "wrote out/detections.json, out/detections.txt, out/overlays/, out/viewer/index.html, out/eval.json, out/pr.png" >&2
