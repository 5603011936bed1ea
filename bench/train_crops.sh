#!/bin/sh
# Small classification sets: does `inception train` with its default settings learn a two-class crop task
# within 8 epochs? Crops of the raccoon set's tuning split (tools/make_crops.py: every raccoon of train-fit.txt's
# 128 photos, label 1, and 1.5 background windows a photo, label 0; validation from train-val.txt's 32 photos),
# trained from scratch with `path label` lists, several seeds per config. Prints one line per run (the validation
# top-1 after each epoch, and the majority class's share of the validation crops) and writes them as the section
# "## Small classification sets" of results/training.md.
# Usage: bench/train_crops.sh [epochs] [seeds] [configs...]
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-8}"
seeds="${2:-1 2 3}"
[ $# -ge 2 ] && shift 2 || shift $#
configs="${*:-configs/googlenet-tiny.cfg configs/googlenet-tiny-bn.cfg}"
BIN=${BIN:-build/inception}
O=out/crops
[ -f $O/train.txt ] || /usr/bin/python3 tools/make_crops.py --root data/raccoon --list train-fit.txt --out $O --name train
[ -f $O/val.txt ] || /usr/bin/python3 tools/make_crops.py --root data/raccoon --list train-val.txt --out $O --name val --seed 2
: > $O/runs.txt
majority=$(awk '{ n[$2]++ } END { m = 0; for (k in n) if (n[k] > m) m = n[k]; printf "%.3f", m / NR }' $O/val.txt)
echo "validation: $(wc -l < $O/val.txt) crops, majority class $majority"
for c in $configs; do
    for s in $seeds; do
        out=$O/run-$(basename "$c" .cfg)-s$s
        rm -rf "$out"
        start=$(date +%s)
        $BIN train --config "$c" --classes 2 --epochs "$epochs" --seed "$s" --data $O/train.txt --val $O/val.txt \
            --out "$out" --quiet
        end=$(date +%s)
        echo "| $(basename "$c") | $s | $(awk -F, 'NR > 1 && $5 != "" { printf "%s ", $5 }' "$out/log.csv")| $((end - start)) |" |
            tee -a $O/runs.txt
    done
done
{
    echo "## Small classification sets"
    echo
    echo "Command: \`bench/train_crops.sh $epochs \"$seeds\"\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), $(nproc) cores:"
    echo "$(lscpu | sed -n 's/^Model name: *//p' | head -1); shared with other work). \`inception train\` with its default settings"
    echo "(the scratch recipe; only --config, --classes 2, --epochs, --seed given) on a two-class crop set made by"
    echo "\`tools/make_crops.py\` from the raccoon tuning photos: $(wc -l < $O/train.txt) training crops (raccoons, label 1, and background windows"
    echo "overlapping no raccoon by IoU 0.3 or more, label 0), $(wc -l < $O/val.txt) validation crops from the other 32 photos (majority"
    echo "class $majority). Top-1 of the validation crops (centre crop) after each epoch."
    echo
    echo "| config | seed | top-1 after epochs 1..$epochs | seconds |"
    echo "|---|---:|---|---:|"
    cat $O/runs.txt
} > $O/section.md
/usr/bin/python3 bench/results_section.py $O/section.md results/training.md
