#!/bin/sh
# The main job on bundled data: evaluate the ILSVRC devkit's demo submission against the full 20,121-image DET
# validation ground truth, as the devkit's demo_eval_det.m does (expected: Mean AP 0.590, Median AP 0.601).
set -eu
cd "$(dirname "$0")/.."
D=data/ilsvrc-devkit
mkdir -p out
build/inception eval --pred $D/demo.val.pred.det.txt --gt $D/ILSVRC2015_det_validation_ground_truth.mat \
    --map $D/meta_det.mat --blacklist $D/ILSVRC2015_det_validation_blacklist.txt \
    --json out/demo_eval.json --plot out/demo_pr.png
echo "wrote out/demo_eval.json and out/demo_pr.png" >&2
