#!/bin/sh
# Learning from small data, lever by lever: each row of ROWS trains one member of the family from scratch on the
# raccoon set's tuning split (data/raccoon/ImageSets/Main/train-fit.txt, 128 training photos) and measures it on
# the other 32 training photos (train-val.txt) through the detector's own chain: every Selective Search proposal
# scored, NMS 0.3, VOC mAP at IoU 0.5. The 40 test photos are not touched here. Each row runs with several
# seeds, because 32 photos make a noisy figure; the table gives the mean and every seed.
# Writes out/ablation/ablation.csv (one line per run; finished runs are not redone) and prints the table.
# Usage: bench/train_ablation.sh [epochs] [seeds] [row names...]   (ROWS below; default: all rows)
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-8}"
seeds="${2:-1 2}"
[ $# -ge 2 ] && shift 2 || shift $#
BIN=${BIN:-build/inception}
D=data/raccoon/ImageSets/Main
O=out/ablation
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p $O

# name | config | flags (each row is measured against the rows above it)
ROWS='
paper      | googlenet-tiny.cfg       | --recipe paper
cosine     | googlenet-tiny.cfg       | --recipe paper --schedule cosine
scratch    | googlenet-tiny.cfg       | --recipe scratch
bn         | googlenet-tiny-bn.cfg    | --recipe scratch
quarter-bn | googlenet-quarter-bn.cfg | --recipe scratch
hard0.5    | googlenet-tiny-bn.cfg    | --recipe scratch --hard-fraction 0.5
jitter0.1  | googlenet-tiny-bn.cfg    | --recipe scratch --jitter 0.1
pos0.5     | googlenet-tiny-bn.cfg    | --recipe scratch --pos-fraction 0.5
nopolyak   | googlenet-tiny-bn.cfg    | --recipe scratch --polyak 0
lr0.03     | googlenet-tiny-bn.cfg    | --recipe scratch --lr 0.03
paper-bn   | googlenet-tiny-bn.cfg    | --recipe paper --lr 0.1
epochs16   | googlenet-tiny-bn.cfg    | --recipe scratch --epochs 16
'

# The proposals of all 160 training photos, computed once (the detector's Selective Search setting).
P=$O/proposals-train.json
[ -f $P ] || $BIN proposals --list $D/train.txt --root data/raccoon/JPEGImages --ext .jpg -o $P --quiet

# detect_map RUN [flags]: the run's model as a detector of one member, through `inception detect` and `inception
# eval` on the 32 tuning photos (the same proposals), with its box regression unless flags say --no-bbox-reg.
detect_map() {
    cfg=$(sed -n 's/^config = //p' "$1/ensemble.cfg")
    # shellcheck disable=SC2086
    $BIN detect --list $D/train-val.txt --root data/raccoon/JPEGImages --ext .jpg --ensemble "$1/ensemble.cfg" \
        --proposals $P --score-min 0.001 -o "$1/detect.json" --quiet $2
    $BIN eval --pred "$1/detect.json" --gt data/raccoon/Annotations --list $D/train-val.txt --iou 0.5 2>/dev/null |
        sed -n 's/^Mean AP: *//p'
}

run_row() { # name config flags seed
    out=$O/$1-s$4
    [ -f $out/done ] && return 0
    rm -rf "$out"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    $BIN train --config configs/$2 --classes 2 --epochs "$epochs" --seed "$4" --out "$out" --data $D/train-fit.txt \
        --val $D/train-val.txt --proposals $P --val-proposals $P --quiet $3
    end=$(date +%s.%N)
    last=$(tail -1 "$out/log.csv")
    map=$(echo "$last" | cut -d, -f7) acc=$(echo "$last" | cut -d, -f5)
    secs=$(echo "$start $end" | awk '{ printf "%.0f", $2 - $1 }')
    printf '[detector]\nclasses = raccoon\nbackground = true\ncontext = 16\nproposals = ../../../configs/proposals-detector.cfg\n[member]\nconfig = ../../../configs/%s\nweights = model.safetensors\n' \
        "$2" > "$out/ensemble.cfg"
    plain=$(detect_map "$out" --no-bbox-reg) boxed=$(detect_map "$out" "")
    ep=$(echo "$3" | sed -n 's/.*--epochs \([0-9]*\).*/\1/p')
    echo "$1,$2,$3,$4,${ep:-$epochs},$map,$acc,$secs,$plain,$boxed" >> $O/ablation.csv
    touch $out/done
}

[ -f $O/ablation.csv ] || echo "row,config,flags,seed,epochs,map,region_acc,seconds,detect_map,detect_map_bbox" > $O/ablation.csv
echo "$ROWS" | while IFS='|' read -r name config flags; do
    name=$(echo $name) config=$(echo $config) flags=$(echo $flags)
    [ -n "$name" ] || continue
    if [ $# -gt 0 ]; then
        case " $* " in *" $name "*) ;; *) continue ;; esac
    fi
    for s in $seeds; do run_row "$name" "$config" "$flags" "$s"; done
done

# The table: mean mAP, mean region accuracy and mean seconds per row, each seed's mAP.
table() {
    echo "| row | config | flags | epochs | mAP (mean) | each seed | region accuracy | detect: mAP | + box regression | seconds |"
    echo "|---|---|---|---:|---:|---|---:|---:|---:|---:|"
    awk -F, 'NR > 1 { k = $1 SUBSEP $5; if (!(k in n)) order[++m] = k; n[k]++; cfg[k] = $2; fl[k] = $3; ep[k] = $5;
        map[k] += $6; acc[k] += $7; sec[k] += $8; each[k] = each[k] (each[k] == "" ? "" : ", ") sprintf("%.3f", $6);
        if ($9 != "") { nd[k]++; dm[k] += $9; if ($10 != "") { nb[k]++; bm[k] += $10 } } }
        END { for (i = 1; i <= m; i++) { k = order[i]; split(k, a, SUBSEP);
            d = nd[k] ? sprintf("%.3f", dm[k] / nd[k]) : "-"; b = nb[k] ? sprintf("%.3f", bm[k] / nb[k]) : "-";
            printf "| %s | %s | `%s` | %d | %.3f | %s | %.3f | %s | %s | %.0f |\n", a[1], cfg[k], fl[k], ep[k],
                map[k] / n[k], each[k], acc[k] / n[k], d, b, sec[k] / n[k] } }' $O/ablation.csv
}
table | tee $O/table.md
# ... and the section "## Learning from small data: ablation" of results/training.md (the others are kept).
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
{
    echo "## Learning from small data: ablation"
    echo
    echo "Command: \`bench/train_ablation.sh $epochs \"$seeds\"\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), $(nproc) cores:"
    echo "$cpu). Each row trains from scratch on the raccoon set's 128 tuning photos (\`train-fit.txt\`) and is"
    echo "measured on the other 32 training photos (\`train-val.txt\`): detection mAP at IoU 0.5 (VOC protocol; every"
    echo "Selective Search proposal scored, NMS 0.3, no box regression) and accuracy on a balanced set of positive and"
    echo "background regions, after the last epoch, with the averaged weights. Seconds: wall time of a run (training and"
    echo "a validation pass per epoch) on the shared 2-core machine, with other work running, so only a rough guide."
    echo "The two detect columns measure the same model through \`inception detect\` + \`inception eval\` on the same 32"
    echo "photos and proposals, without and with the box regressor fitted at the end of the run (rows trained before"
    echo "the regressor existed have no second figure)."
    echo
    cat $O/table.md
} > $O/section.md
/usr/bin/python3 bench/results_section.py $O/section.md results/training.md
